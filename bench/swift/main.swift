// GEMM and conv2d throughput of the Swift core (not a test; not part of the package).
// Build and run with ./build.sh (see there). Usage: bench [gemm|conv|all] [threads]
//
// Single-threaded runs are timed in thread CPU time, so other processes on a shared machine do not
// distort them; multi-threaded runs are wall-clock and only meaningful on an idle machine.
#if canImport(Glibc)
import Glibc
#endif
import SwiftCNN

func seconds(_ body: () throws -> Void) rethrows -> Double {
    if Threading.numThreads == 1 {
        var t0 = timespec(), t1 = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0)
        try body()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1)
        return Double(t1.tv_sec - t0.tv_sec) + Double(t1.tv_nsec - t0.tv_nsec) * 1e-9
    }
    let t = try ContinuousClock().measure(body)
    return Double(t.components.seconds) + Double(t.components.attoseconds) * 1e-18
}

/// The best of `reps` timings (after one warm-up run).
func best(_ reps: Int, _ body: () throws -> Void) rethrows -> Double {
    try body()
    var b = Double.infinity
    for _ in 0..<reps { b = min(b, try seconds(body)) }
    return b
}

func random<T: CNNScalar>(_ n: Int, _ seed: UInt64) -> [T] {
    var s = seed
    return (0..<n).map { _ in
        s = s &* 6364136223846793005 &+ 1442695040888963407
        return T(Double(s >> 11) * 0x1p-53 - 0.5)
    }
}

func fmt(_ v: Double) -> String { String(Double(Int(v * 10)) / 10) }

func benchGemm<T: CNNScalar>(_: T.Type, m: Int, n: Int, k: Int, transA: Bool = false, transB: Bool = false) {
    let a: [T] = random(m * k, 1), b: [T] = random(k * n, 2)
    var c = [T](repeating: 0, count: m * n)
    let t = best(10) {
        gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 1, a: a, lda: transA ? m : k, b: b,
             ldb: transB ? k : n, beta: 0, c: &c, ldc: n)
    }
    print("gemm \(T.self) \(m)x\(n)x\(k) transA=\(transA) transB=\(transB) threads=\(Threading.numThreads): "
          + "\(fmt(2 * Double(m * n * k) / t / 1e9)) GFLOP/s")
}

func benchConv<T: CNNScalar>(_: T.Type, n: Int, c: Int, h: Int, w: Int, k: Int, r: Int, pad: Int) throws {
    let x = try Tensor<T>(shape: [n, c, h, w], scalars: random(n * c * h * w, 3))
    let wt = try Tensor<T>(shape: [k, c, r, r], scalars: random(k * c * r * r, 4))
    let g = try Conv2DGeometry(op: "conv2d", xShape: x.shape, weightShape: wt.shape, biasShape: nil,
                               stride: (1, 1), padding: (pad, pad), dilation: (1, 1))
    let y = try Tensor<T>(zeros: g.outputShape)
    let gy = try Tensor<T>(shape: g.outputShape, scalars: random(y.count, 5))
    let dx = try Tensor<T>(zeros: x.shape), dw = try Tensor<T>(zeros: wt.shape)
    let ws = Workspace<T>()
    let flops = 2 * Double(n * k * g.outH * g.outW * c * r * r)
    let tf = try best(5) { try conv2dForward(g, x: x.pointer, weight: wt.pointer, bias: nil, y: y.pointer, workspace: ws) }
    let tx = try best(5) {
        try conv2dBackward(g, gradOut: gy.pointer, x: x.pointer, weight: wt.pointer, gradX: dx.pointer,
                           gradWeight: nil, gradBias: nil, accumulate: false, workspace: ws)
    }
    let tw = try best(5) {
        try conv2dBackward(g, gradOut: gy.pointer, x: x.pointer, weight: wt.pointer, gradX: nil,
                           gradWeight: dw.pointer, gradBias: nil, accumulate: false, workspace: ws)
    }
    print("conv2d \(T.self) \(n)x\(c)x\(h)x\(w) -> \(k), \(r)x\(r) pad \(pad), threads=\(Threading.numThreads): "
          + "forward \(fmt(flops / tf / 1e9)) (\(fmt(tf * 1e3)) ms), dX \(fmt(flops / tx / 1e9)) (\(fmt(tx * 1e3)) ms), "
          + "dW \(fmt(flops / tw / 1e9)) (\(fmt(tw * 1e3)) ms) GFLOP/s")
}

let args = CommandLine.arguments
let which = args.count > 1 ? args[1] : "all"
for threads in args.count > 2 ? [Int(args[2]) ?? 1] : [1, 2] {
    Threading.numThreads = threads
    if which == "all" || which == "gemm" {
        benchGemm(Float.self, m: 512, n: 512, k: 512)
        benchGemm(Float.self, m: 512, n: 512, k: 512, transA: true, transB: true)
        benchGemm(Double.self, m: 512, n: 512, k: 512)
    }
    if which == "all" || which == "conv" {
        try benchConv(Float.self, n: 32, c: 64, h: 32, w: 32, k: 64, r: 3, pad: 1)
        try benchConv(Double.self, n: 32, c: 64, h: 32, w: 32, k: 64, r: 3, pad: 1)
    }
}

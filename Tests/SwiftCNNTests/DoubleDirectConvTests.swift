import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport

/// The Double direct convolution (Kernels/DirectConvDouble.swift): when it is chosen, forward and
/// both gradients against the naive loops, gradients against finite differences, determinism.
final class DoubleDirectConvTests: XCTestCase {
    private struct Case: CustomStringConvertible {
        var n, c, h, w, k, kh, kw: Int
        var padding = (0, 0)
        var description: String { "n \(n) c \(c) \(h)x\(w) k \(k) kernel \(kh)x\(kw) padding \(padding)" }
        func geometry() throws -> Conv2DGeometry {
            try Conv2DGeometry(op: "conv2d", xShape: [n, c, h, w], weightShape: [k, c, kh, kw], biasShape: [k],
                               stride: (1, 1), padding: padding, dilation: (1, 1))
        }
    }

    /// LeNet's layers (both variants of the first), then odd sizes: output widths not multiples of
    /// the 4 lanes, channel counts not multiples of the 4- and 2-channel blocks (K = 1, 3, 5, 7),
    /// kernel widths not multiples of the weight gradient's 3-tap blocks, non-square kernels and
    /// padding, batches that split into uneven image chunks.
    private let cases: [Case] = [
        Case(n: 3, c: 1, h: 28, w: 28, k: 6, kh: 5, kw: 5),
        Case(n: 2, c: 1, h: 28, w: 28, k: 6, kh: 5, kw: 5, padding: (2, 2)),
        Case(n: 5, c: 6, h: 12, w: 12, k: 16, kh: 5, kw: 5),
        Case(n: 3, c: 6, h: 14, w: 14, k: 16, kh: 5, kw: 5),
        Case(n: 3, c: 5, h: 9, w: 11, k: 7, kh: 3, kw: 4, padding: (2, 1)),
        Case(n: 2, c: 3, h: 7, w: 6, k: 1, kh: 2, kw: 2),
        Case(n: 3, c: 2, h: 10, w: 13, k: 3, kh: 3, kw: 3, padding: (1, 1)),
        Case(n: 1, c: 4, h: 6, w: 5, k: 5, kh: 1, kw: 3, padding: (0, 2)),
        Case(n: 4, c: 7, h: 5, w: 17, k: 9, kh: 2, kw: 7, padding: (1, 3)),
        Case(n: 2, c: 2, h: 4, w: 5, k: 3, kh: 3, kw: 2, padding: (3, 2)),   // padding >= kernel: zero rows
    ]

    /// When the Double kernels run: stride 1, no dilation, not 1x1, and at
    /// most 400 taps per output both ways; otherwise the im2col + GEMM path.
    func testWhenDoubleDirectIsChosen() throws {
        for cs in cases { XCTAssertTrue(conv2dUsesDoubleDirect(try cs.geometry()), "\(cs)") }
        func geometry(c: Int, k: Int, kernel: Int, stride: Int = 1, padding: Int = 0, dilation: Int = 1) throws -> Conv2DGeometry {
            try Conv2DGeometry(op: "conv2d", xShape: [2, c, 16, 16], weightShape: [k, c, kernel, kernel], biasShape: nil,
                               stride: (stride, stride), padding: (padding, padding), dilation: (dilation, dilation))
        }
        XCTAssertTrue(conv2dUsesDoubleDirect(try geometry(c: 16, k: 16, kernel: 5)))       // 400 taps
        XCTAssertFalse(conv2dUsesDoubleDirect(try geometry(c: 17, k: 16, kernel: 5)))      // 425 taps in
        XCTAssertFalse(conv2dUsesDoubleDirect(try geometry(c: 16, k: 17, kernel: 5)))      // 425 taps in dx
        XCTAssertFalse(conv2dUsesDoubleDirect(try geometry(c: 64, k: 64, kernel: 3, padding: 1)))
        XCTAssertFalse(conv2dUsesDoubleDirect(try geometry(c: 4, k: 4, kernel: 3, stride: 2)))
        XCTAssertFalse(conv2dUsesDoubleDirect(try geometry(c: 4, k: 4, kernel: 3, dilation: 2)))
        XCTAssertTrue(conv2dUsesDoubleDirect(try geometry(c: 4, k: 4, kernel: 3, padding: 2)))
        XCTAssertFalse(conv2dUsesDoubleDirect(try geometry(c: 4, k: 4, kernel: 1)))
    }

    /// The layout's invariants: whole vectors per output row, the padded vector count a multiple of
    /// 6 covered by the output rows, and every tap of every padded vector inside the input scratch.
    func testLayout() throws {
        for cs in cases {
            let g = try cs.geometry()
            for l in [doubleDirectForwardLayout(g), doubleDirectGradInputLayout(g)] {
                XCTAssertGreaterThanOrEqual(l.paddedOutW, l.outW)
                XCTAssertEqual(l.paddedVectors % 6, 0)
                XCTAssertGreaterThanOrEqual(l.rowsOut * l.vectorsPerRow, l.paddedVectors)
                let lastTap = l.inputOffset(l.paddedVectors - 1) + (l.kernelH - 1) * l.paddedInW + l.kernelW - 1 + 3
                XCTAssertLessThan(lastTap, l.planeIn, "\(cs)")
            }
        }
    }

    /// Forward, dx, dw (accumulated onto random values and overwritten) and db against the naive
    /// loops to 1e-13, at 1 and 2 threads, each result bit-identical when run twice.
    func testMatchesNaive() throws {
        let saved = Threading.numThreads
        defer { Threading.numThreads = saved }
        for (index, cs) in cases.enumerated() {
            let g = try cs.geometry()
            let seed = UInt64(7100 + 10 * index)
            let x: Tensor<Double> = randomTensor(g.inputShape, seed: seed)
            let w: Tensor<Double> = randomTensor(g.weightShape, seed: seed + 1)
            let b: Tensor<Double> = randomTensor([cs.k], seed: seed + 2)
            let gy: Tensor<Double> = randomTensor(g.outputShape, seed: seed + 3)
            let dw0: Tensor<Double> = randomTensor(g.weightShape, seed: seed + 4)
            let yRef = try Tensor<Double>(zeros: g.outputShape)
            conv2dForwardNaive(g, x: x.pointer, weight: w.pointer, bias: UnsafePointer(b.pointer), y: yRef.pointer)
            let dxRef = try Tensor<Double>(zeros: g.inputShape), dwRef = try Tensor<Double>(zeros: g.weightShape)
            let dbRef = try Tensor<Double>(zeros: [cs.k])
            conv2dBackwardNaive(g, gradOut: gy.pointer, x: x.pointer, weight: w.pointer, gradX: dxRef.pointer,
                                gradWeight: dwRef.pointer, gradBias: dbRef.pointer, accumulate: false)
            let dwAccRef = zip(dw0.scalars, dwRef.scalars).map { $0 + $1 }
            for threads in [1, 2] {
                Threading.numThreads = threads
                var runs: [[Double]] = []
                for _ in 0..<2 {
                    let y = try Tensor<Double>(zeros: g.outputShape)
                    try conv2dForward(g, x: x.pointer, weight: w.pointer, bias: b.pointer, y: y.pointer,
                                      workspace: ScratchSlots<Double>())
                    assertRelativeError(y.scalars, yRef.scalars, 1e-13, "forward \(cs) threads \(threads)")
                    let dx = try Tensor<Double>(zeros: g.inputShape), db = try Tensor<Double>(zeros: [cs.k])
                    let dw = try Tensor<Double>(shape: g.weightShape, scalars: dw0.scalars)
                    try conv2dBackward(g, gradOut: gy.pointer, x: x.pointer, weight: w.pointer, gradX: dx.pointer,
                                       gradWeight: dw.pointer, gradBias: db.pointer, accumulate: true,
                                       workspace: ScratchSlots<Double>())
                    assertRelativeError(dx.scalars, dxRef.scalars, 1e-13, "grad_x \(cs) threads \(threads)")
                    assertRelativeError(dw.scalars, dwAccRef, 1e-13, "grad_weight accumulated \(cs) threads \(threads)")
                    // Overwriting, and each gradient alone (the others nil).
                    let dwOnly = try Tensor<Double>(shape: g.weightShape, scalars: dw0.scalars)
                    try conv2dBackward(g, gradOut: gy.pointer, x: x.pointer, weight: w.pointer, gradX: nil,
                                       gradWeight: dwOnly.pointer, gradBias: nil, accumulate: false,
                                       workspace: ScratchSlots<Double>())
                    assertRelativeError(dwOnly.scalars, dwRef.scalars, 1e-13, "grad_weight alone \(cs) threads \(threads)")
                    let dxOnly = try Tensor<Double>(zeros: g.inputShape)
                    try conv2dBackward(g, gradOut: gy.pointer, x: x.pointer, weight: w.pointer, gradX: dxOnly.pointer,
                                       gradWeight: nil, gradBias: nil, accumulate: false,
                                       workspace: ScratchSlots<Double>())
                    XCTAssertEqual(dxOnly.scalars, dx.scalars, "grad_x alone \(cs) threads \(threads)")
                    runs.append(y.scalars + dx.scalars + dw.scalars + db.scalars)
                }
                XCTAssertEqual(runs[0], runs[1], "deterministic \(cs) threads \(threads)")
            }
        }
    }

    /// loss = sum(conv2d(x, w, b) * R): the gradients conv2dBackward(R) against central finite
    /// differences, on the small cases.
    func testGradientsMatchFiniteDifferences() throws {
        for (index, cs) in cases.enumerated() where cs.n * cs.c * cs.h * cs.w <= 600 {
            let g = try cs.geometry()
            XCTAssertTrue(conv2dUsesDoubleDirect(g))
            let seed = UInt64(7300 + 10 * index)
            let x: Tensor<Double> = randomTensor(g.inputShape, seed: seed)
            let w: Tensor<Double> = randomTensor(g.weightShape, seed: seed + 1)
            let b: Tensor<Double> = randomTensor([cs.k], seed: seed + 2)
            let r: [Double] = randomArray(g.outputShape.reduce(1, *), seed: seed + 3)
            let rT = try Tensor(shape: g.outputShape, scalars: r)
            func loss(_ x: Tensor<Double>, _ w: Tensor<Double>, _ b: Tensor<Double>) throws -> Double {
                weightedSum(try conv2d(x, weight: w, bias: b, padding: cs.padding), r)
            }
            let grads = try conv2dBackward(gradOut: rT, x: x, weight: w, padding: cs.padding)
            let nx = try numericalGradient(of: { try loss($0, w, b) }, at: x)
            let nw = try numericalGradient(of: { try loss(x, $0, b) }, at: w)
            let nb = try numericalGradient(of: { try loss(x, w, $0) }, at: b)
            assertRelativeError(grads.gradX.scalars, nx, 1e-7, "grad_x vs FD \(cs)")
            assertRelativeError(grads.gradWeight.scalars, nw, 1e-7, "grad_weight vs FD \(cs)")
            assertRelativeError(grads.gradBias.scalars, nb, 1e-7, "grad_bias vs FD \(cs)")
        }
    }
}

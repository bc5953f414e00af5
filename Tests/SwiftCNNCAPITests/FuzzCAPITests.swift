import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport
@testable import SwiftCNNCAPI

/// Random, mostly hostile arguments for every export, with data buffers big enough for whatever the
/// shapes claim (a call is made only if each claimed input fits the buffer, or is invalid on its own:
/// negative or overflowing). Nothing may trap; every status must be one of the header's.
final class FuzzCAPITests: XCTestCase {
    static let capacity = 4096
    let bufA = UnsafeMutableRawPointer.allocate(byteCount: capacity * 8, alignment: 64)
    let bufB = UnsafeMutableRawPointer.allocate(byteCount: capacity * 8, alignment: 64)
    let bufC = UnsafeMutableRawPointer.allocate(byteCount: capacity * 8, alignment: 64)
    let bufY = UnsafeMutableRawPointer.allocate(byteCount: capacity * 8, alignment: 64)
    let bufG = UnsafeMutableRawPointer.allocate(byteCount: capacity * 8, alignment: 64)
    let bufH = UnsafeMutableRawPointer.allocate(byteCount: capacity * 8, alignment: 64)
    var rng = SeededRNG(2024)

    override func setUp() {
        for b in [bufA, bufB, bufC, bufY, bufG, bufH] {
            let d = b.bindMemory(to: Double.self, capacity: Self.capacity)
            for i in 0..<Self.capacity { d[i] = rng.uniform(-3, 3) }
        }
    }

    override func tearDown() {
        for b in [bufA, bufB, bufC, bufY, bufG, bufH] { b.deallocate() }
    }

    func pick<T>(_ xs: [T]) -> T { xs[Int(rng.next() % UInt64(xs.count))] }

    func dim() -> Int64 {
        pick([0, 1, 1, 2, 2, 3, 3, 4, 5, 7, 1, 2, 3, -1, 1 << 31, 1 << 40, Int64.max, Int64.min])
    }
    func geo() -> Int64 { pick([-1, 0, 1, 1, 1, 2, 2, 3, 5, 1 << 30, 1 << 31, 1 << 62, Int64.max, Int64.min]) }
    func shape(_ rank: Int) -> [Int64] {
        // Mostly the expected rank, sometimes another.
        let r = rng.next() % 8 == 0 ? Int(rng.next() % 6) : rank
        return (0..<r).map { _ in dim() }
    }

    /// Whether the data behind `shape` fits the buffers, or the shape is invalid regardless.
    func fits(_ shape: [Int64]) -> Bool {
        if shape.contains(where: { $0 < 0 }) { return true }
        var p: Int64 = 1
        for d in shape {
            let (q, o) = p.multipliedReportingOverflow(by: d)
            if o { return !shape.contains(0) }
            p = q
        }
        return p <= Int64(Self.capacity)
    }

    func count(_ shape: [Int64]) -> Int64? {
        var p: Int64 = 1
        for d in shape {
            guard d >= 0 else { return nil }
            let (q, o) = p.multipliedReportingOverflow(by: d)
            if o { return nil }
            p = q
        }
        return p
    }

    func ptr(_ b: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer? { rng.next() % 16 == 0 ? nil : b }

    var statuses: [Int32: Int] = [:]
    func record(_ o: Outcome, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue((0...5).contains(o.status), "bad status \(o.status)", file: file, line: line)
        if o.status != OK { XCTAssertFalse(o.message.isEmpty, file: file, line: line) }
        statuses[o.status, default: 0] += 1
    }

    func testFuzzFunctional() {
        for _ in 0..<3000 {
            let dt: Int32 = pick([0, 1, 1, 0, 2, -1])
            // conv2d
            do {
                let xs = shape(4), ws = shape(4)
                let g = (0..<6).map { _ in geo() }
                let biasLen: Int64 = pick([-1, -1, 0, 1, 2, 3, -2, Int64.max])
                guard fits(xs), fits(ws), biasLen < 4096 else { continue }
                var ys = [Int64](repeating: 0, count: 4)
                let bias: UnsafeMutableRawPointer? = biasLen == -1 ? nil : ptr(bufC)
                let o = call { scnn_conv2d_forward(dt, ptr(bufA), xs, Int64(xs.count), ptr(bufB), ws, Int64(ws.count), bias, biasLen,
                                                   g, nil, &ys, $0, $1) }
                record(o)
                if o.status == OK, let n = count(ys), n <= Int64(Self.capacity) {
                    record(call { scnn_conv2d_forward(dt, bufA, xs, 4, bufB, ws, 4, bias, biasLen, g, bufY, nil, $0, $1) })
                    record(call { scnn_conv2d_backward(dt, bufY, ys, 4, bufA, xs, 4, bufB, ws, 4, g, ptr(bufG), ptr(bufH), ptr(bufC), $0, $1) })
                }
            }
            // pooling
            do {
                let xs = shape(4)
                let g = (0..<6).map { _ in geo() }
                guard fits(xs) else { continue }
                let kind: Int32 = pick([0, 1, 0, 1, 2, -1])
                var ys = [Int64](repeating: 0, count: 4)
                let o = call { scnn_pool2d_forward(dt, kind, ptr(bufA), xs, Int64(xs.count), g, nil, &ys, $0, $1) }
                record(o)
                if o.status == OK, let n = count(ys), n <= Int64(Self.capacity) {
                    record(call { scnn_pool2d_forward(dt, kind, bufA, xs, 4, g, bufY, nil, $0, $1) })
                    record(call { scnn_pool2d_backward(dt, kind, bufY, ys, 4, bufA, xs, 4, g, ptr(bufG), $0, $1) })
                }
            }
            // linear
            do {
                let xs = shape(2), ws = shape(2)
                let biasLen: Int64 = pick([-1, 0, 1, 2, 3, 5, 7])
                guard fits(xs), fits(ws) else { continue }
                var ys = [Int64](repeating: 0, count: 2)
                let bias: UnsafeMutableRawPointer? = biasLen == -1 ? nil : ptr(bufC)
                let o = call { scnn_linear_forward(dt, ptr(bufA), xs, Int64(xs.count), ptr(bufB), ws, Int64(ws.count), bias, biasLen, nil, &ys, $0, $1) }
                record(o)
                if o.status == OK, let n = count(ys), n <= Int64(Self.capacity) {
                    record(call { scnn_linear_forward(dt, bufA, xs, 2, bufB, ws, 2, bias, biasLen, bufY, nil, $0, $1) })
                    record(call { scnn_linear_backward(dt, bufY, ys, 2, bufA, xs, 2, bufB, ws, 2, ptr(bufG), ptr(bufH), ptr(bufC), $0, $1) })
                }
            }
            // elementwise, softmax, losses
            do {
                let n: Int64 = pick([0, 1, 5, 4096, -1, 1 << 40, Int64.max])
                guard n <= 4096 else {
                    record(call { scnn_activation_forward(dt, 0, bufA, n, bufY, $0, $1) })
                    continue
                }
                record(call { scnn_activation_forward(dt, pick([0, 1, 2]), ptr(bufA), n, ptr(bufY), $0, $1) })
                record(call { scnn_activation_backward(dt, pick([0, 1, 2]), ptr(bufA), ptr(bufB), n, ptr(bufY), $0, $1) })
                record(call { scnn_bce_with_logits(dt, ptr(bufA), ptr(bufB), n, nil, ptr(bufY), $0, $1) })
                let ls = shape(2)
                guard fits(ls) else { continue }
                record(call { scnn_softmax(dt, ptr(bufA), ls, Int64(ls.count), ptr(bufY), $0, $1) })
                var labels = (0..<8).map { _ in pick([0, 1, 2, 3, -1, 9, Int64.max]) as Int64 }
                let labelsLen: Int64 = pick([0, 1, 2, 3, 8, -1])
                var loss = 0.0
                if rng.next() % 2 == 0 {
                    record(call { scnn_softmax_cross_entropy(dt, ptr(bufA), ls, Int64(ls.count), &labels, labelsLen, nil, nil, 0, &loss, ptr(bufY), $0, $1) })
                } else {
                    let ts = shape(2)
                    guard fits(ts) else { continue }
                    record(call { scnn_softmax_cross_entropy(dt, ptr(bufA), ls, Int64(ls.count), nil, -1, ptr(bufB), ts, Int64(ts.count), &loss, ptr(bufY), $0, $1) })
                }
            }
            // correlate2d
            do {
                let ims = shape(2), ks = shape(2)
                guard fits(ims), fits(ks) else { continue }
                var os = [Int64](repeating: 0, count: 2)
                let mode: Int32 = pick([0, 1, 2, 3]), flip: Int32 = pick([0, 1, 2])
                let o = call { scnn_correlate2d(dt, mode, flip, ptr(bufA), ims, Int64(ims.count), ptr(bufB), ks, Int64(ks.count), nil, &os, $0, $1) }
                record(o)
                if o.status == OK, let n = count(os), n <= Int64(Self.capacity) {
                    record(call { scnn_correlate2d(dt, mode, flip, bufA, ims, 2, bufB, ks, 2, bufY, nil, $0, $1) })
                }
            }
        }
        print("fuzz functional statuses:", statuses)
        XCTAssertGreaterThan(statuses[OK, default: 0], 100)
    }

    func testFuzzLayers() {
        for _ in 0..<400 {
            let dt: Int32 = pick([0, 1, 1, 0, 3])
            var out: OpaquePointer? = nil
            let kind = rng.next() % 5
            let o: Outcome
            switch kind {
            case 0:
                let g = (0..<8).map { _ in pick([-1, 0, 1, 1, 2, 3, 1 << 31, Int64.max]) as Int64 }
                let (i, j) = (dim(), dim())
                // Keep accepted weights small enough to allocate (bigger ones are rejected or overflow).
                if let c = count([i, j, g[0], g[1]]), c > 1 << 16 { continue }
                o = call { scnn_conv2d_layer_create(dt, i, j, g, rng.next() % 2 == 0, rng.next(), &out, $0, $1) }
            case 1:
                let (i, j) = (dim(), dim())
                // Keep accepted weights small enough to allocate.
                if let c = count([i, j]), c > 1 << 16 { continue }
                o = call { scnn_linear_layer_create(dt, i, j, rng.next() % 2 == 0, rng.next(), &out, $0, $1) }
            case 2:
                let g = (0..<6).map { _ in geo() }
                o = call { scnn_pool2d_layer_create(dt, pick([0, 1, 2]), g, &out, $0, $1) }
            default:
                o = call { scnn_simple_layer_create(dt, pick([0, 1, 2, 3]), &out, $0, $1) }
            }
            record(o)
            guard o.status == OK, let raw = out else { continue }
            let layer = LayerRef(raw)
            let model: LayerRef
            if rng.next() % 2 == 0 {
                var seqOut: OpaquePointer? = nil
                let raws: [OpaquePointer?] = [layer.raw]
                let so = call { scnn_sequential_create(dt, raws, 1, &seqOut, $0, $1) }
                record(so)
                guard let s = seqOut else { continue }
                model = LayerRef(s)
            } else {
                model = layer
            }
            for _ in 0..<6 {
                let xs = shape(4)
                guard fits(xs) else { continue }
                var ys = [Int64](repeating: 0, count: 8)
                var ndim: Int64 = 0
                let so = call { scnn_layer_output_shape(model.raw, xs, Int64(xs.count), &ys, &ndim, $0, $1) }
                record(so)
                if rng.next() % 3 == 0 {
                    record(call { scnn_layer_backward(model.raw, bufY, ys, ndim, ptr(bufG), xs, Int64(xs.count), $0, $1) })
                }
                guard so.status == OK, let n = count(Array(ys.prefix(Int(ndim)))), n <= Int64(Self.capacity) else { continue }
                record(call { scnn_layer_forward(model.raw, ptr(bufA), xs, Int64(xs.count), ptr(bufY), $0, $1) })
                var inShape = [Int64](repeating: 0, count: 8)
                var inNdim: Int64 = 0
                record(call { scnn_layer_input_shape(model.raw, &inShape, &inNdim, $0, $1) })
                let gs = rng.next() % 4 == 0 ? shape(4) : Array(ys.prefix(Int(ndim)))
                guard fits(gs) else { continue }
                record(call { scnn_layer_backward(model.raw, ptr(bufG), gs, Int64(gs.count), ptr(bufH), inShape, inNdim, $0, $1) })
                var labels = [Int64](repeating: 0, count: 64)
                var loss = 0.0
                var correct: Int64 = 0
                record(call { scnn_train_step_cross_entropy(model.raw, nil, ptr(bufA), xs, Int64(xs.count), &labels,
                                                            pick([0, 1, 2, 3, -1]), &loss, &correct, $0, $1) })
                record(call { scnn_layer_zero_grad(model.raw, $0, $1) })
            }
            let np = scnn_layer_parameter_count(model.raw)
            for i in [-1, 0, 1, 2, np, Int64.max] {
                var name = [CChar](repeating: 0, count: 4)
                record(call { scnn_layer_parameter(model.raw, i, nil, nil, nil, nil, &name, 4, $0, $1) })
            }
        }
        print("fuzz layer statuses:", statuses)
    }
}

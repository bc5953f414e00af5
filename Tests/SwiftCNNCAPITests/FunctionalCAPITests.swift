import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport
@testable import SwiftCNNCAPI

/// The functional exports: valid calls against the core's naive oracles, and every kind of bad argument.
final class FunctionalCAPITests: XCTestCase {

    func dtypeCode<T: CNNScalar>(_: T.Type) -> Int32 { T.self == Float.self ? F32 : F64 }

    // MARK: - conv2d

    func checkConv2dForward<T: CNNScalar>(_: T.Type) throws {
        let dt = dtypeCode(T.self)
        for (xs, ws, geo, withBias) in [
            ([2, 3, 9, 8], [4, 3, 3, 2], [1, 1, 0, 0, 1, 1], true),
            ([1, 2, 7, 7], [3, 2, 3, 3], [2, 1, 1, 2, 2, 1], false),
            ([3, 1, 5, 6], [2, 1, 1, 1], [1, 1, 0, 0, 1, 1], true),
        ] as [([Int], [Int], [Int64], Bool)] {
            let x: Tensor<T> = randomTensor(xs, seed: 1)
            let w: Tensor<T> = randomTensor(ws, seed: 2)
            let b: Tensor<T> = randomTensor([ws[0]], seed: 3)
            let g = try Conv2DGeometry(op: "t", xShape: xs, weightShape: ws, biasShape: withBias ? [ws[0]] : nil,
                                       stride: (Int(geo[0]), Int(geo[1])), padding: (Int(geo[2]), Int(geo[3])),
                                       dilation: (Int(geo[4]), Int(geo[5])))
            let expected = try Tensor<T>(zeros: g.outputShape)
            conv2dForwardNaive(g, x: x.pointer, weight: w.pointer, bias: withBias ? UnsafePointer(b.pointer) : nil, y: expected.pointer)

            // First call: shape only.
            var shape = [Int64](repeating: -1, count: 4)
            var o = call { scnn_conv2d_forward(dt, x.pointer, s64(xs), 4, w.pointer, s64(ws), 4,
                                               withBias ? UnsafeRawPointer(b.pointer) : nil, withBias ? Int64(ws[0]) : -1,
                                               geo, nil, &shape, $0, $1) }
            assertStatus(o, OK)
            XCTAssertEqual(shape, s64(g.outputShape))
            let y = try Tensor<T>(zeros: g.outputShape)
            o = call { scnn_conv2d_forward(dt, x.pointer, s64(xs), 4, w.pointer, s64(ws), 4,
                                           withBias ? UnsafeRawPointer(b.pointer) : nil, withBias ? Int64(ws[0]) : -1,
                                           geo, y.pointer, nil, $0, $1) }
            assertStatus(o, OK)
            XCTAssertLessThan(relErr(y.scalars, expected.scalars), tol(T.self) * 10)
        }
    }

    func testConv2dForward() throws {
        try checkConv2dForward(Float.self)
        try checkConv2dForward(Double.self)
    }

    func checkConv2dBackward<T: CNNScalar>(_: T.Type) throws {
        let dt = dtypeCode(T.self)
        let xs = [2, 3, 8, 7], ws = [4, 3, 3, 3]
        let geo: [Int64] = [2, 1, 1, 0, 1, 2]
        let g = try Conv2DGeometry(op: "t", xShape: xs, weightShape: ws, biasShape: nil, stride: (2, 1), padding: (1, 0), dilation: (1, 2))
        let x: Tensor<T> = randomTensor(xs, seed: 4)
        let w: Tensor<T> = randomTensor(ws, seed: 5)
        let go: Tensor<T> = randomTensor(g.outputShape, seed: 6)
        let (ex, ew, eb) = (try Tensor<T>(zeros: xs), try Tensor<T>(zeros: ws), try Tensor<T>(zeros: [4]))
        conv2dBackwardNaive(g, gradOut: go.pointer, x: x.pointer, weight: w.pointer, gradX: ex.pointer,
                            gradWeight: ew.pointer, gradBias: eb.pointer, accumulate: false)
        // Outputs are overwritten, not accumulated into: start them with garbage.
        let gx: Tensor<T> = randomTensor(xs, seed: 99), gw: Tensor<T> = randomTensor(ws, seed: 98)
        let gb: Tensor<T> = randomTensor([4], seed: 97)
        let o = call { scnn_conv2d_backward(dt, go.pointer, s64(g.outputShape), 4, x.pointer, s64(xs), 4, w.pointer, s64(ws), 4,
                                            geo, gx.pointer, gw.pointer, gb.pointer, $0, $1) }
        assertStatus(o, OK)
        XCTAssertLessThan(relErr(gx.scalars, ex.scalars), tol(T.self) * 10)
        XCTAssertLessThan(relErr(gw.scalars, ew.scalars), tol(T.self) * 10)
        XCTAssertLessThan(relErr(gb.scalars, eb.scalars), tol(T.self) * 10)

        // Each output may be skipped.
        let gw2 = try Tensor<T>(zeros: ws)
        let o2 = call { scnn_conv2d_backward(dt, go.pointer, s64(g.outputShape), 4, x.pointer, s64(xs), 4, w.pointer, s64(ws), 4,
                                             geo, nil, gw2.pointer, nil, $0, $1) }
        assertStatus(o2, OK)
        XCTAssertEqual(gw2.scalars, gw.scalars)
    }

    func testConv2dBackward() throws {
        try checkConv2dBackward(Float.self)
        try checkConv2dBackward(Double.self)
    }

    func testConv2dEmptyBatch() throws {
        // N = 0: empty output, zero weight/bias gradients; data pointers may be NULL. Big spatial
        // sizes must not matter (nothing is computed).
        let w: Tensor<Float> = randomTensor([2, 1, 1, 1], seed: 1)
        for (h, wd) in [(5, 5), (1 << 31, 1 << 31)] {
            let xs: [Int64] = [0, 1, Int64(h), Int64(wd)]
            var shape = [Int64](repeating: -1, count: 4)
            var o = call { scnn_conv2d_forward(F32, nil, xs, 4, w.pointer, [2, 1, 1, 1], 4, nil, -1, [1, 1, 0, 0, 1, 1], nil, &shape, $0, $1) }
            assertStatus(o, OK)
            XCTAssertEqual(shape, [0, 2, Int64(h), Int64(wd)])
            var y: [Float] = [42]
            o = call { scnn_conv2d_forward(F32, nil, xs, 4, w.pointer, [2, 1, 1, 1], 4, nil, -1, [1, 1, 0, 0, 1, 1], &y, nil, $0, $1) }
            assertStatus(o, OK)
            XCTAssertEqual(y, [42])
            var gw: [Float] = [5, 5], gb: [Float] = [5, 5]
            o = call { scnn_conv2d_backward(F32, nil, shape, 4, nil, xs, 4, w.pointer, [2, 1, 1, 1], 4, [1, 1, 0, 0, 1, 1],
                                            nil, &gw, &gb, $0, $1) }
            assertStatus(o, OK)
            XCTAssertEqual(gw, [0, 0])
            XCTAssertEqual(gb, [0, 0])
        }
    }

    func testConv2dRejections() {
        var x = [Float](repeating: 1, count: 2 * 3 * 5 * 5), w = [Float](repeating: 1, count: 4 * 3 * 3 * 3)
        var b = [Float](repeating: 1, count: 4)
        let sentinel = [Float](repeating: -7, count: 2 * 4 * 3 * 3)
        var y = sentinel
        var shapeOut: [Int64] = [-5, -5, -5, -5]
        let xs: [Int64] = [2, 3, 5, 5], ws: [Int64] = [4, 3, 3, 3]
        let geo: [Int64] = [1, 1, 0, 0, 1, 1]
        func run(dtype: Int32 = F32, x xp: UnsafeRawPointer?, xs: [Int64]? , xNdim: Int64 = 4,
                 w wp: UnsafeRawPointer?, ws: [Int64], wNdim: Int64 = 4, bias: UnsafeRawPointer? = nil, biasLen: Int64 = -1,
                 geo: [Int64]?, cap: Int = 1024) -> Outcome {
            call(cap: cap) { m, c in
                scnn_conv2d_forward(dtype, xp, xs, xNdim, wp, ws, wNdim, bias, biasLen, geo, &y, &shapeOut, m, c)
            }
        }
        x.withUnsafeMutableBytes { xb in w.withUnsafeMutableBytes { wb in b.withUnsafeMutableBytes { bb in
            let xp = UnsafeRawPointer(xb.baseAddress!), wp = UnsafeRawPointer(wb.baseAddress!), bp = UnsafeRawPointer(bb.baseAddress!)
            assertStatus(run(dtype: 7, x: xp, xs: xs, w: wp, ws: ws, geo: geo), TYPE, "dtype", "7")
            assertStatus(run(dtype: -1, x: xp, xs: xs, w: wp, ws: ws, geo: geo), TYPE, "dtype")
            assertStatus(run(x: nil, xs: xs, w: wp, ws: ws, geo: geo), VALUE, "conv2d", "x", "NULL")
            assertStatus(run(x: xp, xs: xs, w: nil, ws: ws, geo: geo), VALUE, "weight", "NULL")
            assertStatus(run(x: xp, xs: [2, 3, 5], xNdim: 3, w: wp, ws: ws, geo: geo), VALUE, "x must be 4-D", "(2, 3, 5)")
            assertStatus(run(x: xp, xs: xs, xNdim: -3, w: wp, ws: ws, geo: geo), VALUE, "x")
            assertStatus(run(x: xp, xs: nil, xNdim: 4, w: wp, ws: ws, geo: geo), VALUE, "x", "NULL")
            assertStatus(run(x: xp, xs: xs, w: wp, ws: [4, 3, 3], wNdim: 3, geo: geo), VALUE, "weight must be 4-D")
            assertStatus(run(x: xp, xs: xs, w: wp, ws: [4, 2, 3, 3], geo: geo), VALUE, "weight", "3 input channels", "(4, 2, 3, 3)")
            assertStatus(run(x: xp, xs: [2, -3, 5, 5], w: wp, ws: ws, geo: geo), VALUE, "x", "non-negative")
            assertStatus(run(x: xp, xs: xs, w: wp, ws: ws, geo: [0, 1, 0, 0, 1, 1]), VALUE, "stride", ">= 1")
            assertStatus(run(x: xp, xs: xs, w: wp, ws: ws, geo: [1, -2, 0, 0, 1, 1]), VALUE, "stride")
            assertStatus(run(x: xp, xs: xs, w: wp, ws: ws, geo: [1, 1, -1, 0, 1, 1]), VALUE, "padding", ">= 0")
            assertStatus(run(x: xp, xs: xs, w: wp, ws: ws, geo: [1, 1, 0, 0, 0, 1]), VALUE, "dilation", ">= 1")
            assertStatus(run(x: xp, xs: xs, w: wp, ws: ws, geo: [1, 1, 0, 0, 3, 3]), VALUE, "kernel", "larger")
            assertStatus(run(x: xp, xs: [2, 3, 2, 2], w: wp, ws: ws, geo: geo), VALUE, "kernel", "larger")
            assertStatus(run(x: xp, xs: xs, w: wp, ws: ws, geo: nil), VALUE, "conv_geometry", "NULL")
            assertStatus(run(x: xp, xs: xs, w: wp, ws: ws, bias: bp, biasLen: 3, geo: geo), VALUE, "bias", "(4,)")
            assertStatus(run(x: xp, xs: xs, w: wp, ws: ws, bias: bp, biasLen: -1, geo: geo), VALUE, "bias")
            assertStatus(run(x: xp, xs: xs, w: wp, ws: ws, bias: nil, biasLen: 4, geo: geo), VALUE, "bias", "NULL")
            assertStatus(run(x: xp, xs: xs, w: wp, ws: ws, bias: bp, biasLen: -2, geo: geo), VALUE, "bias_len")
            assertStatus(run(x: xp, xs: [1 << 40, 1 << 40, 5, 5], w: wp, ws: ws, geo: geo), OVERFLOW, "x")
            assertStatus(run(x: xp, xs: [1, 3, 1 << 40, 1 << 40], w: wp, ws: ws, geo: geo), OVERFLOW)
            assertStatus(run(x: xp, xs: [1, 3, Int64.max, 5], w: wp, ws: ws, geo: [1, 1, Int64.max / 2, 0, 1, 1]), OVERFLOW)
            assertStatus(run(x: xp, xs: xs, w: wp, ws: ws, geo: [1, 1, 0, 0, Int64.max, 1]), OVERFLOW)
            assertStatus(run(x: UnsafeRawPointer(xp + 1), xs: xs, w: wp, ws: ws, geo: geo), VALUE, "x", "aligned")
            // Messages: none at all, cap 1, a tiny buffer.
            XCTAssertEqual(call(cap: 0) { _, _ in scnn_conv2d_forward(7, xp, xs, 4, wp, ws, 4, nil, -1, geo, &y, &shapeOut, nil, 0) }.status, TYPE)
            let one = run(dtype: 7, x: xp, xs: xs, w: wp, ws: ws, geo: geo, cap: 1)
            XCTAssertEqual(one.status, TYPE)
            XCTAssertEqual(one.message, "")
            let tiny = run(dtype: 7, x: xp, xs: xs, w: wp, ws: ws, geo: geo, cap: 7)
            XCTAssertEqual(tiny.status, TYPE)
            XCTAssertEqual(tiny.message, "conv2d")
        }}}
        // No rejected call wrote an output.
        XCTAssertEqual(y, sentinel)
        XCTAssertEqual(shapeOut, [-5, -5, -5, -5])
        // Overlap: out over x.
        let o = x.withUnsafeMutableBytes { xb in
            call { scnn_conv2d_forward(F32, xb.baseAddress, [2, 3, 5, 5], 4, w, ws, 4, nil, -1, geo, xb.baseAddress, nil, $0, $1) }
        }
        assertStatus(o, VALUE, "out", "overlap", "x")
    }

    func testConv2dBackwardRejections() {
        let x = [Float](repeating: 1, count: 2 * 3 * 5 * 5), w = [Float](repeating: 1, count: 4 * 3 * 3 * 3)
        let go = [Float](repeating: 1, count: 2 * 4 * 3 * 3)
        var gx = [Float](repeating: 9, count: x.count), gw = [Float](repeating: 9, count: w.count), gb = [Float](repeating: 9, count: 4)
        let geo: [Int64] = [1, 1, 0, 0, 1, 1]
        var o = call { scnn_conv2d_backward(F32, go, [2, 4, 3, 4], 4, x, [2, 3, 5, 5], 4, w, [4, 3, 3, 3], 4, geo, &gx, &gw, &gb, $0, $1) }
        assertStatus(o, VALUE, "grad_out", "(2, 4, 3, 3)", "(2, 4, 3, 4)")
        o = call { scnn_conv2d_backward(F32, nil, [2, 4, 3, 3], 4, x, [2, 3, 5, 5], 4, w, [4, 3, 3, 3], 4, geo, &gx, &gw, &gb, $0, $1) }
        assertStatus(o, VALUE, "grad_out", "NULL")
        o = call { scnn_conv2d_backward(F32, go, [2, 4, 3], 3, x, [2, 3, 5, 5], 4, w, [4, 3, 3, 3], 4, geo, &gx, &gw, &gb, $0, $1) }
        assertStatus(o, VALUE, "grad_out", "4-D")
        o = call { scnn_conv2d_backward(F32, go, [2, 4, 3, 3], 4, x, [2, 3, 5, 5], 4, w, [4, 3, 3, 3], 4, [1, 1, 0, 0, 1, 0], &gx, &gw, &gb, $0, $1) }
        assertStatus(o, VALUE, "dilation")
        o = call { scnn_conv2d_backward(9, go, [2, 4, 3, 3], 4, x, [2, 3, 5, 5], 4, w, [4, 3, 3, 3], 4, geo, &gx, &gw, &gb, $0, $1) }
        assertStatus(o, TYPE, "dtype")
        XCTAssertEqual(gx, [Float](repeating: 9, count: x.count))
        XCTAssertEqual(gw, [Float](repeating: 9, count: w.count))
        XCTAssertEqual(gb, [Float](repeating: 9, count: 4))
    }

    // MARK: - pooling

    func checkPool<T: CNNScalar>(_: T.Type) throws {
        let dt = dtypeCode(T.self)
        let xs = [2, 3, 7, 6]
        let x: Tensor<T> = randomTensor(xs, seed: 11)
        for (kind, geo) in [(Int32(0), [3, 2, 2, 2, 1, 1]), (0, [2, 2, 2, 2, 0, 0]), (1, [3, 3, 2, 1, 1, 0]), (1, [2, 3, 1, 2, 0, 1])] as [(Int32, [Int64])] {
            let k = (Int(geo[0]), Int(geo[1])), s = (Int(geo[2]), Int(geo[3])), p = (Int(geo[4]), Int(geo[5]))
            let expected = kind == 0 ? try maxPool2d(x, kernelSize: k, stride: s, padding: p)
                                     : try avgPool2d(x, kernelSize: k, stride: s, padding: p)
            var shape = [Int64](repeating: 0, count: 4)
            var o = call { scnn_pool2d_forward(dt, kind, x.pointer, s64(xs), 4, geo, nil, &shape, $0, $1) }
            assertStatus(o, OK)
            XCTAssertEqual(shape, s64(expected.shape))
            let y = try Tensor<T>(zeros: expected.shape)
            o = call { scnn_pool2d_forward(dt, kind, x.pointer, s64(xs), 4, geo, y.pointer, nil, $0, $1) }
            assertStatus(o, OK)
            XCTAssertEqual(y.scalars, expected.scalars)

            let go: Tensor<T> = randomTensor(expected.shape, seed: 12)
            let eg = kind == 0 ? try maxPool2dBackward(gradOut: go, x: x, kernelSize: k, stride: s, padding: p)
                               : try avgPool2dBackward(gradOut: go, x: x, kernelSize: k, stride: s, padding: p)
            let gx: Tensor<T> = randomTensor(xs, seed: 13)
            o = call { scnn_pool2d_backward(dt, kind, go.pointer, s64(expected.shape), 4, x.pointer, s64(xs), 4, geo, gx.pointer, $0, $1) }
            assertStatus(o, OK)
            XCTAssertEqual(gx.scalars, eg.scalars)
        }
    }

    func testPool() throws {
        try checkPool(Float.self)
        try checkPool(Double.self)
    }

    func testPoolRejections() {
        let x = [Double](repeating: 1, count: 1 * 2 * 4 * 4)
        var y = [Double](repeating: 3, count: 8)
        let xs: [Int64] = [1, 2, 4, 4]
        assertStatus(call { scnn_pool2d_forward(F64, 2, x, xs, 4, [2, 2, 2, 2, 0, 0], &y, nil, $0, $1) }, VALUE, "pool_kind", "2")
        assertStatus(call { scnn_pool2d_forward(F64, -1, x, xs, 4, [2, 2, 2, 2, 0, 0], &y, nil, $0, $1) }, VALUE, "pool_kind")
        assertStatus(call { scnn_pool2d_forward(5, 0, x, xs, 4, [2, 2, 2, 2, 0, 0], &y, nil, $0, $1) }, TYPE, "dtype")
        assertStatus(call { scnn_pool2d_forward(F64, 0, x, xs, 4, [0, 2, 2, 2, 0, 0], &y, nil, $0, $1) }, VALUE, "max_pool2d", "kernel_size")
        assertStatus(call { scnn_pool2d_forward(F64, 1, x, xs, 4, [2, 2, 0, 2, 0, 0], &y, nil, $0, $1) }, VALUE, "avg_pool2d", "stride")
        assertStatus(call { scnn_pool2d_forward(F64, 0, x, xs, 4, [2, 2, 2, 2, 2, 0], &y, nil, $0, $1) }, VALUE, "padding", "half")
        assertStatus(call { scnn_pool2d_forward(F64, 0, x, xs, 4, [2, 2, 2, 2, -1, 0], &y, nil, $0, $1) }, VALUE, "padding")
        assertStatus(call { scnn_pool2d_forward(F64, 0, x, xs, 4, [5, 5, 1, 1, 0, 0], &y, nil, $0, $1) }, VALUE, "kernel", "larger")
        assertStatus(call { scnn_pool2d_forward(F64, 0, x, xs, 4, nil, &y, nil, $0, $1) }, VALUE, "pool_geometry")
        assertStatus(call { scnn_pool2d_forward(F64, 0, x, [2, 4, 4], 3, [2, 2, 2, 2, 0, 0], &y, nil, $0, $1) }, VALUE, "x must be 4-D")
        assertStatus(call { scnn_pool2d_forward(F64, 0, nil, xs, 4, [2, 2, 2, 2, 0, 0], &y, nil, $0, $1) }, VALUE, "x", "NULL")
        assertStatus(call { scnn_pool2d_forward(F64, 0, x, [1 << 40, 1 << 40, 4, 4], 4, [2, 2, 2, 2, 0, 0], &y, nil, $0, $1) }, OVERFLOW)
        XCTAssertEqual(y, [Double](repeating: 3, count: 8))
        var gx = [Double](repeating: 3, count: 32)
        assertStatus(call { scnn_pool2d_backward(F64, 0, y, [1, 2, 2, 3], 4, x, xs, 4, [2, 2, 2, 2, 0, 0], &gx, $0, $1) }, VALUE, "grad_out", "(1, 2, 2, 2)")
        assertStatus(call { scnn_pool2d_backward(F64, 0, y, [1, 2, 2, 2], 4, x, xs, 4, [2, 2, 2, 2, 0, 0], nil, $0, $1) }, VALUE, "grad_x", "NULL")
        assertStatus(call { scnn_pool2d_backward(F64, 3, y, [1, 2, 2, 2], 4, x, xs, 4, [2, 2, 2, 2, 0, 0], &gx, $0, $1) }, VALUE, "pool_kind")
        XCTAssertEqual(gx, [Double](repeating: 3, count: 32))
        // N = 0 is valid.
        var shape = [Int64](repeating: -1, count: 4)
        assertStatus(call { scnn_pool2d_forward(F64, 0, nil, [0, 2, 4, 4], 4, [2, 2, 2, 2, 0, 0], nil, &shape, $0, $1) }, OK)
        XCTAssertEqual(shape, [0, 2, 2, 2])
    }

    // MARK: - linear

    func checkLinear<T: CNNScalar>(_: T.Type) throws {
        let dt = dtypeCode(T.self)
        let (n, i, o) = (5, 7, 3)
        let x: Tensor<T> = randomTensor([n, i], seed: 21), w: Tensor<T> = randomTensor([o, i], seed: 22)
        let b: Tensor<T> = randomTensor([o], seed: 23)
        let expected = try Tensor<T>(zeros: [n, o])
        linearForwardNaive(batch: n, inFeatures: i, outFeatures: o, x: x.pointer, weight: w.pointer, bias: b.pointer, y: expected.pointer)
        var shape: [Int64] = [0, 0]
        assertStatus(call { scnn_linear_forward(dt, x.pointer, [5, 7], 2, w.pointer, [3, 7], 2, b.pointer, 3, nil, &shape, $0, $1) }, OK)
        XCTAssertEqual(shape, [5, 3])
        let y = try Tensor<T>(zeros: [n, o])
        assertStatus(call { scnn_linear_forward(dt, x.pointer, [5, 7], 2, w.pointer, [3, 7], 2, b.pointer, 3, y.pointer, nil, $0, $1) }, OK)
        XCTAssertLessThan(relErr(y.scalars, expected.scalars), tol(T.self) * 10)

        let go: Tensor<T> = randomTensor([n, o], seed: 24)
        let (ex, ew, eb) = (try Tensor<T>(zeros: [n, i]), try Tensor<T>(zeros: [o, i]), try Tensor<T>(zeros: [o]))
        linearBackwardNaive(batch: n, inFeatures: i, outFeatures: o, gradOut: go.pointer, x: x.pointer, weight: w.pointer,
                            gradX: ex.pointer, gradWeight: ew.pointer, gradBias: eb.pointer, accumulate: false)
        let gx: Tensor<T> = randomTensor([n, i], seed: 90), gw: Tensor<T> = randomTensor([o, i], seed: 91)
        let gb: Tensor<T> = randomTensor([o], seed: 92)
        assertStatus(call { scnn_linear_backward(dt, go.pointer, [5, 3], 2, x.pointer, [5, 7], 2, w.pointer, [3, 7], 2,
                                                 gx.pointer, gw.pointer, gb.pointer, $0, $1) }, OK)
        XCTAssertLessThan(relErr(gx.scalars, ex.scalars), tol(T.self) * 10)
        XCTAssertLessThan(relErr(gw.scalars, ew.scalars), tol(T.self) * 10)
        XCTAssertLessThan(relErr(gb.scalars, eb.scalars), tol(T.self) * 10)
    }

    func testLinear() throws {
        try checkLinear(Float.self)
        try checkLinear(Double.self)
    }

    func testLinearRejections() {
        let x = [Float](repeating: 1, count: 10), w = [Float](repeating: 1, count: 15), b = [Float](repeating: 0, count: 3)
        var y = [Float](repeating: 4, count: 6)
        assertStatus(call { scnn_linear_forward(F32, x, [2, 5], 2, w, [3, 4], 2, nil, -1, &y, nil, $0, $1) }, VALUE, "weight", "5 input features")
        assertStatus(call { scnn_linear_forward(F32, x, [10], 1, w, [3, 5], 2, nil, -1, &y, nil, $0, $1) }, VALUE, "x must be 2-D")
        assertStatus(call { scnn_linear_forward(F32, x, [2, 5], 2, w, [3, 5], 2, b, 2, &y, nil, $0, $1) }, VALUE, "bias", "(3,)")
        assertStatus(call { scnn_linear_forward(F32, x, [2, 0], 2, w, [3, 0], 2, nil, -1, &y, nil, $0, $1) }, VALUE, "x", "feature")
        assertStatus(call { scnn_linear_forward(F32, x, [2, 5], 2, nil, [3, 5], 2, nil, -1, &y, nil, $0, $1) }, VALUE, "weight", "NULL")
        assertStatus(call { scnn_linear_forward(2, x, [2, 5], 2, w, [3, 5], 2, nil, -1, &y, nil, $0, $1) }, TYPE, "dtype")
        assertStatus(call { scnn_linear_forward(F32, x, [1 << 40, 1 << 40], 2, w, [3, 1 << 40], 2, nil, -1, &y, nil, $0, $1) }, OVERFLOW)
        XCTAssertEqual(y, [Float](repeating: 4, count: 6))
        var gx = [Float](repeating: 4, count: 10)
        assertStatus(call { scnn_linear_backward(F32, y, [2, 2], 2, x, [2, 5], 2, w, [3, 5], 2, &gx, nil, nil, $0, $1) }, VALUE, "grad_out", "(2, 3)")
        XCTAssertEqual(gx, [Float](repeating: 4, count: 10))
        // Overlapping outputs.
        var both = [Float](repeating: 0, count: 30)
        let o = both.withUnsafeMutableBytes { p in
            call { scnn_linear_backward(F32, y, [2, 3], 2, x, [2, 5], 2, w, [3, 5], 2, p.baseAddress, p.baseAddress! + 8, nil, $0, $1) }
        }
        assertStatus(o, VALUE, "overlap")
    }

    // MARK: - activations

    func checkActivations<T: CNNScalar>(_: T.Type) throws {
        let dt = dtypeCode(T.self)
        let x: Tensor<T> = randomTensor([17], seed: 31, -4, 4)
        let go: Tensor<T> = randomTensor([17], seed: 32)
        for kind: Int32 in [0, 1] {
            let expected = kind == 0 ? try sigmoid(x) : try relu(x)
            let y = try Tensor<T>(zeros: [17])
            assertStatus(call { scnn_activation_forward(dt, kind, x.pointer, 17, y.pointer, $0, $1) }, OK)
            XCTAssertEqual(y.scalars, expected.scalars)
            // In place.
            let inPlace = try x.copy()
            assertStatus(call { scnn_activation_forward(dt, kind, inPlace.pointer, 17, inPlace.pointer, $0, $1) }, OK)
            XCTAssertEqual(inPlace.scalars, expected.scalars)
            // Backward: saved is y for sigmoid, x for relu; grad_x may be grad_out.
            let saved = kind == 0 ? expected : x
            let eg = kind == 0 ? try sigmoidBackward(gradOut: go, y: expected) : try reluBackward(gradOut: go, x: x)
            let gx = try Tensor<T>(zeros: [17])
            assertStatus(call { scnn_activation_backward(dt, kind, go.pointer, saved.pointer, 17, gx.pointer, $0, $1) }, OK)
            XCTAssertEqual(gx.scalars, eg.scalars)
            let g2 = try go.copy()
            assertStatus(call { scnn_activation_backward(dt, kind, g2.pointer, saved.pointer, 17, g2.pointer, $0, $1) }, OK)
            XCTAssertEqual(g2.scalars, eg.scalars)
        }
        // count 0 with NULL pointers.
        assertStatus(call { scnn_activation_forward(dt, 0, nil, 0, nil, $0, $1) }, OK)
        assertStatus(call { scnn_activation_backward(dt, 1, nil, nil, 0, nil, $0, $1) }, OK)
    }

    func testActivations() throws {
        try checkActivations(Float.self)
        try checkActivations(Double.self)
    }

    func testActivationRejections() {
        var x = [Float](repeating: 1, count: 8)
        var y = [Float](repeating: 5, count: 8)
        assertStatus(call { scnn_activation_forward(F32, 2, x, 8, &y, $0, $1) }, VALUE, "act_kind")
        assertStatus(call { scnn_activation_forward(F32, 0, x, -1, &y, $0, $1) }, VALUE, "count")
        assertStatus(call { scnn_activation_forward(F32, 0, nil, 8, &y, $0, $1) }, VALUE, "x", "NULL")
        assertStatus(call { scnn_activation_forward(F32, 1, x, 8, nil, $0, $1) }, VALUE, "out", "NULL")
        assertStatus(call { scnn_activation_forward(3, 1, x, 8, &y, $0, $1) }, TYPE, "dtype")
        assertStatus(call { scnn_activation_forward(F32, 1, x, Int64.max, &y, $0, $1) }, OVERFLOW)
        XCTAssertEqual(y, [Float](repeating: 5, count: 8))
        // Partial overlap is refused (identity is fine).
        let o = x.withUnsafeMutableBytes { p in call { scnn_activation_forward(F32, 0, p.baseAddress, 4, p.baseAddress! + 4, $0, $1) } }
        assertStatus(o, VALUE, "overlap")
        assertStatus(call { scnn_activation_backward(F32, 0, x, nil, 8, &y, $0, $1) }, VALUE, "sigmoid_backward", "y", "NULL")
        assertStatus(call { scnn_activation_backward(F32, 1, x, nil, 8, &y, $0, $1) }, VALUE, "relu_backward", "x", "NULL")
        assertStatus(call { scnn_activation_backward(F32, 1, nil, x, 8, &y, $0, $1) }, VALUE, "grad_out", "NULL")
        assertStatus(call { scnn_activation_backward(F32, 7, x, x, 8, &y, $0, $1) }, VALUE, "act_kind")
        XCTAssertEqual(y, [Float](repeating: 5, count: 8))
    }

    // MARK: - softmax and losses

    func checkLosses<T: CNNScalar>(_: T.Type) throws {
        let dt = dtypeCode(T.self)
        let (n, k) = (4, 5)
        let z: Tensor<T> = randomTensor([n, k], seed: 41, -3, 3)
        let p = try Tensor<T>(zeros: [n, k])
        assertStatus(call { scnn_softmax(dt, z.pointer, [4, 5], 2, p.pointer, $0, $1) }, OK)
        XCTAssertEqual(p.scalars, try softmax(z).scalars)

        let labels: [Int64] = [0, 4, 2, 2]
        let (el, eg) = try softmaxCrossEntropy(logits: z, labels: labels)
        var loss = 0.0
        let g = try Tensor<T>(zeros: [n, k])
        assertStatus(call { scnn_softmax_cross_entropy(dt, z.pointer, [4, 5], 2, labels, 4, nil, nil, 0, &loss, g.pointer, $0, $1) }, OK)
        XCTAssertEqual(loss, el)
        XCTAssertEqual(g.scalars, eg.scalars)

        let t: Tensor<T> = randomTensor([n, k], seed: 42, 0, 1)
        let (pl, pg) = try softmaxCrossEntropy(logits: z, targetProbabilities: t)
        assertStatus(call { scnn_softmax_cross_entropy(dt, z.pointer, [4, 5], 2, nil, -1, t.pointer, [4, 5], 2, &loss, g.pointer, $0, $1) }, OK)
        XCTAssertEqual(loss, pl)
        XCTAssertEqual(g.scalars, pg.scalars)

        // N = 0: NaN with NULL data, both target forms.
        loss = 0
        assertStatus(call { scnn_softmax_cross_entropy(dt, nil, [0, 5], 2, nil, 0, nil, nil, 0, &loss, nil, $0, $1) }, OK)
        XCTAssertTrue(loss.isNaN)
        loss = 0
        assertStatus(call { scnn_softmax_cross_entropy(dt, nil, [0, 5], 2, nil, -1, nil, [0, 5], 2, &loss, nil, $0, $1) }, OK)
        XCTAssertTrue(loss.isNaN)

        let bz: Tensor<T> = randomTensor([9], seed: 43, -30, 30), bt: Tensor<T> = randomTensor([9], seed: 44, 0, 1)
        let (bl, bg) = try binaryCrossEntropyWithLogits(logits: bz, target: bt)
        let bgo = try Tensor<T>(zeros: [9])
        assertStatus(call { scnn_bce_with_logits(dt, bz.pointer, bt.pointer, 9, &loss, bgo.pointer, $0, $1) }, OK)
        XCTAssertEqual(loss, bl)
        XCTAssertEqual(bgo.scalars, bg.scalars)
        assertStatus(call { scnn_bce_with_logits(dt, nil, nil, 0, &loss, nil, $0, $1) }, OK)
        XCTAssertTrue(loss.isNaN)
    }

    func testLosses() throws {
        try checkLosses(Float.self)
        try checkLosses(Double.self)
    }

    func testLossRejections() {
        let z = [Double](repeating: 0.5, count: 6)
        var g = [Double](repeating: 8, count: 6)
        var loss = 123.0
        assertStatus(call { scnn_softmax_cross_entropy(F64, z, [2, 3], 2, [0, 3], 2, nil, nil, 0, &loss, &g, $0, $1) },
                     VALUE, "target", "[0, 3)", "3", "index 1")
        assertStatus(call { scnn_softmax_cross_entropy(F64, z, [2, 3], 2, [-1, 0], 2, nil, nil, 0, &loss, &g, $0, $1) }, VALUE, "target", "-1")
        assertStatus(call { scnn_softmax_cross_entropy(F64, z, [2, 3], 2, [0, 1, 2], 3, nil, nil, 0, &loss, &g, $0, $1) },
                     VALUE, "target", "(2,)", "(3,)")
        assertStatus(call { scnn_softmax_cross_entropy(F64, z, [2, 3], 2, [0, 1], 2, z, [2, 3], 2, &loss, &g, $0, $1) }, VALUE, "exactly one")
        assertStatus(call { scnn_softmax_cross_entropy(F64, z, [2, 3], 2, nil, 2, nil, nil, 0, &loss, &g, $0, $1) }, VALUE, "target", "NULL")
        assertStatus(call { scnn_softmax_cross_entropy(F64, z, [2, 3], 2, nil, -1, z, [3, 2], 2, &loss, &g, $0, $1) }, VALUE, "target", "(2, 3)", "(3, 2)")
        assertStatus(call { scnn_softmax_cross_entropy(F64, z, [6], 1, [0], 1, nil, nil, 0, &loss, &g, $0, $1) }, VALUE, "logits", "2-D")
        assertStatus(call { scnn_softmax_cross_entropy(F64, z, [6, 0], 2, [0], 1, nil, nil, 0, &loss, &g, $0, $1) }, VALUE, "logits", "K >= 1")
        assertStatus(call { scnn_softmax_cross_entropy(F64, nil, [2, 3], 2, [0, 1], 2, nil, nil, 0, &loss, &g, $0, $1) }, VALUE, "logits", "NULL")
        assertStatus(call { scnn_softmax_cross_entropy(4, z, [2, 3], 2, [0, 1], 2, nil, nil, 0, &loss, &g, $0, $1) }, TYPE)
        XCTAssertEqual(loss, 123)
        XCTAssertEqual(g, [Double](repeating: 8, count: 6))
        let o = g.withUnsafeMutableBytes { p in
            call { scnn_softmax_cross_entropy(F64, p.baseAddress, [2, 3], 2, [0, 1], 2, nil, nil, 0, &loss, p.baseAddress, $0, $1) }
        }
        assertStatus(o, VALUE, "grad_logits", "overlap", "logits")
        var p = [Double](repeating: 8, count: 6)
        assertStatus(call { scnn_softmax(F64, z, [2, 3, 1], 3, &p, $0, $1) }, VALUE, "logits", "2-D")
        assertStatus(call { scnn_softmax(F64, z, [2, 3], 2, nil, $0, $1) }, VALUE, "out", "NULL")
        XCTAssertEqual(p, [Double](repeating: 8, count: 6))
        assertStatus(call { scnn_bce_with_logits(F64, z, nil, 6, &loss, &g, $0, $1) }, VALUE, "target", "NULL")
        assertStatus(call { scnn_bce_with_logits(F64, z, z, -6, &loss, &g, $0, $1) }, VALUE, "count")
        XCTAssertEqual(loss, 123)
    }

    // MARK: - correlate2d

    func checkCorrelate<T: CNNScalar>(_: T.Type) throws {
        let dt = dtypeCode(T.self)
        for (ims, ks) in [([6, 7], [3, 2]), ([4, 4], [4, 4]), ([3, 5], [2, 4]), ([2, 2], [3, 5])] {
            let image: Tensor<T> = randomTensor(ims, seed: 51), kernel: Tensor<T> = randomTensor(ks, seed: 52)
            for mode: Int32 in [0, 1, 2] {
                if mode == 0 && (ks[0] > ims[0] || ks[1] > ims[1]) { continue }
                for flip: Int32 in [0, 1] {
                    let m: CorrelationMode = [.valid, .same, .full][Int(mode)]
                    let g = try Correlation2DGeometry(op: "t", imageShape: ims, kernelShape: ks, mode: m, flipKernel: flip == 1)
                    let expected = try Tensor<T>(zeros: g.outputShape)
                    correlate2dForwardNaive(g, image: image.pointer, kernel: kernel.pointer, out: expected.pointer)
                    var shape: [Int64] = [0, 0]
                    assertStatus(call { scnn_correlate2d(dt, mode, flip, image.pointer, s64(ims), 2, kernel.pointer, s64(ks), 2, nil, &shape, $0, $1) }, OK)
                    XCTAssertEqual(shape, s64(g.outputShape))
                    let out = try Tensor<T>(zeros: g.outputShape)
                    assertStatus(call { scnn_correlate2d(dt, mode, flip, image.pointer, s64(ims), 2, kernel.pointer, s64(ks), 2, out.pointer, nil, $0, $1) }, OK)
                    XCTAssertLessThan(relErr(out.scalars, expected.scalars), tol(T.self) * 10)
                }
            }
        }
    }

    func testCorrelate() throws {
        try checkCorrelate(Float.self)
        try checkCorrelate(Double.self)
    }

    func testCorrelateRejections() {
        let im = [Float](repeating: 1, count: 16), k = [Float](repeating: 1, count: 25)
        var out = [Float](repeating: 6, count: 64)
        assertStatus(call { scnn_correlate2d(F32, 0, 0, im, [4, 4], 2, k, [5, 5], 2, &out, nil, $0, $1) }, VALUE, "kernel", "larger", "valid")
        assertStatus(call { scnn_correlate2d(F32, 3, 0, im, [4, 4], 2, k, [2, 2], 2, &out, nil, $0, $1) }, VALUE, "mode")
        assertStatus(call { scnn_correlate2d(F32, 0, 2, im, [4, 4], 2, k, [2, 2], 2, &out, nil, $0, $1) }, VALUE, "flip_kernel")
        assertStatus(call { scnn_correlate2d(F32, 0, 1, im, [16], 1, k, [2, 2], 2, &out, nil, $0, $1) }, VALUE, "convolve2d", "image", "2-D")
        assertStatus(call { scnn_correlate2d(F32, 2, 0, im, [4, 4], 2, k, [0, 2], 2, &out, nil, $0, $1) }, VALUE, "kernel")
        assertStatus(call { scnn_correlate2d(F32, 2, 0, im, [4, 4], 2, nil, [2, 2], 2, &out, nil, $0, $1) }, VALUE, "kernel", "NULL")
        assertStatus(call { scnn_correlate2d(F32, 2, 0, im, [4, 4], 2, k, [Int64.max, 1], 2, &out, nil, $0, $1) }, OVERFLOW)
        assertStatus(call { scnn_correlate2d(F32, 2, 0, im, [1 << 40, 1 << 40], 2, k, [1, 1], 2, &out, nil, $0, $1) }, OVERFLOW)
        assertStatus(call { scnn_correlate2d(8, 2, 0, im, [4, 4], 2, k, [2, 2], 2, &out, nil, $0, $1) }, TYPE)
        XCTAssertEqual(out, [Float](repeating: 6, count: 64))
    }

    // MARK: - messages

    func testMessageTruncationOnCharacterBoundary() {
        var buf = [CChar](repeating: 1, count: 8)
        // "abcdé" is 6 bytes; "é" must not be cut in half.
        writeCString("abcdéf", to: &buf, capacity: 6)
        XCTAssertEqual(Array(buf.prefix(5)), [97, 98, 99, 100, 0].map { CChar($0) })
        writeCString("abcdéf", to: &buf, capacity: 7)
        XCTAssertEqual(String(cString: buf), "abcdé")
        writeCString("日本", to: &buf, capacity: 3)
        XCTAssertEqual(buf[0], 0)
        writeCString("xyz", to: &buf, capacity: 0)
        XCTAssertEqual(buf[0], 0)  // untouched
        writeCString("xyz", to: nil, capacity: 100)  // no crash
        writeCString("xyz", to: &buf, capacity: -5)
        XCTAssertEqual(buf[0], 0)
        writeCString("xyz", to: &buf, capacity: 1)
        XCTAssertEqual(buf[0], 0)
        writeCString("xyz", to: &buf, capacity: Int64.max)
        XCTAssertEqual(String(cString: buf), "xyz")
    }

    func testLibrary() {
        XCTAssertEqual(String(cString: scnn_version()), "0.1.0")
        XCTAssertEqual(scnn_version(), scnn_version())  // static storage
        let before = scnn_get_num_threads()
        XCTAssertGreaterThanOrEqual(before, 1)
        assertStatus(call { scnn_set_num_threads(0, $0, $1) }, VALUE, "n", ">= 1")
        assertStatus(call { scnn_set_num_threads(-3, $0, $1) }, VALUE)
        XCTAssertEqual(scnn_get_num_threads(), before)
        assertStatus(call { scnn_set_num_threads(3, $0, $1) }, OK)
        XCTAssertEqual(scnn_get_num_threads(), 3)
        assertStatus(call { scnn_set_num_threads(before, $0, $1) }, OK)
        XCTAssertEqual(scnn_set_num_threads(0, nil, 0), VALUE)
    }
}

import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport
@testable import SwiftCNNCAPI

/// The functional ops (`scnn_op_fn`): the shape query, results against the core's Tensor-level ops
/// and naive oracles, and every kind of bad argument with its exact status and message.
final class FunctionalCAPITests: XCTestCase {

    override func tearDown() { Owned.drain() }

    // MARK: - helpers

    /// Asserts that a call with these operands is rejected with `status` and a message containing
    /// `parts`, in both modes: the query leaves the (garbage) output descriptors byte for byte as
    /// they were, and the computing call (with `outputs`, correctly allocated if given) leaves their
    /// memory unchanged.
    func reject(_ fn: OpFn, _ inputs: [TensorDesc], ints: [Int64] = [], reals: [Double] = [], outputs: [Owned], _ status: Int32,
                _ parts: String..., file: StaticString = #filePath, line: UInt = #line) {
        var garbage = [TensorDesc](repeating: .garbage, count: outputs.count)
        let before = garbage.map(\.bytes)
        let q = callOp(fn, inputs: inputs, ints: ints, reals: reals, outputs: &garbage, compute: false)
        XCTAssertEqual(q.status, status, "query: \(q.message)", file: file, line: line)
        for part in parts {
            XCTAssertTrue(q.message.contains(part), "query message \"\(q.message)\" lacks \"\(part)\"", file: file, line: line)
        }
        XCTAssertEqual(garbage.map(\.bytes), before, "a rejected query wrote an output descriptor", file: file, line: line)
        for o in outputs { o.raw.initializeMemory(as: UInt8.self, repeating: 0xA5, count: o.bytes) }
        let memory = outputs.map { $0.bytesSnapshot() }
        var descs = outputs.map(\.desc)
        let c = callOp(fn, inputs: inputs, ints: ints, reals: reals, outputs: &descs, compute: true)
        XCTAssertEqual(c.status, status, "compute: \(c.message)", file: file, line: line)
        XCTAssertEqual(c.message, q.message, "both modes run the same validation", file: file, line: line)
        XCTAssertEqual(outputs.map { $0.bytesSnapshot() }, memory, "a rejected call wrote output memory", file: file, line: line)
    }

    /// Asserts the query declares exactly `shapes`/`dtypes` and writes nothing else: data pointers
    /// stay NULL and the unused shape slots keep their garbage.
    func assertDeclares(_ fn: OpFn, _ inputs: [TensorDesc], ints: [Int64] = [], _ shapes: [[Int]], _ dtypes: [Int32],
                        file: StaticString = #filePath, line: UInt = #line) {
        let (o, outs) = query(fn, inputs: inputs, ints: ints, outputs: shapes.count)
        XCTAssertEqual(o.status, OK, o.message, file: file, line: line)
        XCTAssertEqual(o.message, "", file: file, line: line)
        for (i, d) in outs.enumerated() {
            XCTAssertEqual(d.dims, shapes[i].map(Int64.init), "output \(i)", file: file, line: line)
            XCTAssertEqual(d.ndim, Int32(shapes[i].count), file: file, line: line)
            XCTAssertEqual(d.dtype, dtypes[i], file: file, line: line)
            XCTAssertNil(d.data, "the query must not touch data", file: file, line: line)
            XCTAssertEqual(Array(d.allDims[shapes[i].count...]), [Int64](repeating: -77, count: 8 - shapes[i].count),
                           "the query wrote past ndim", file: file, line: line)
        }
    }

    // MARK: - layout and the op table

    func testDescriptorLayout() throws {
        XCTAssertEqual(MemoryLayout<TensorDesc>.size, 80)
        XCTAssertEqual(MemoryLayout<TensorDesc>.stride, 80)
        XCTAssertEqual(MemoryLayout<TensorDesc>.offset(of: \TensorDesc.data), 0)
        XCTAssertEqual(MemoryLayout<TensorDesc>.offset(of: \TensorDesc.shape), 8)
        XCTAssertEqual(MemoryLayout<TensorDesc>.offset(of: \TensorDesc.ndim), 72)
        XCTAssertEqual(MemoryLayout<TensorDesc>.offset(of: \TensorDesc.dtype), 76)
        // The Swift side reads what the helper wrote.
        let x = Owned(shape: [2, 3, 4, 5, 1, 1, 1, 7], dtype: F64)
        withUnsafeBytes(of: x.desc) { raw in
            let op = Operand(base: raw.baseAddress!, name: "x", op: "t")
            XCTAssertEqual(op.data, x.raw)
            XCTAssertEqual(op.rawNdim, 8)
            XCTAssertEqual(op.rawDType, F64)
            XCTAssertEqual(op.shape, [2, 3, 4, 5, 1, 1, 1, 7])
        }
        // The header's numbers are the ones the helper uses.
        let header = try String(contentsOfFile: headerPath, encoding: .utf8)
        for needle in ["sizeof(scnn_tensor) == 80", "offsetof(scnn_tensor, shape) == 8", "offsetof(scnn_tensor, ndim) == 72",
                       "offsetof(scnn_tensor, dtype) == 76", "SCNN_ABSENT (-1)", "SCNN_INT64 = 2", "SCNN_MAX_NDIM 8"] {
            XCTAssertTrue(header.contains(needle), needle)
        }
    }

    /// `scnn_op_call`: the test's struct, Swift's reader (OpCallLayout) and the header agree on
    /// every offset; a NULL call is refused (there is no message buffer to write to).
    func testOpCallLayout() throws {
        typealias S = OpCallStruct
        XCTAssertEqual(MemoryLayout<S>.size, 72)
        let offsets: [(PartialKeyPath<S>, Int)] = [
            (\S.inputs, OpCallLayout.inputs), (\S.ints, OpCallLayout.ints), (\S.reals, OpCallLayout.reals),
            (\S.outputs, OpCallLayout.outputs), (\S.msg, OpCallLayout.msg), (\S.msgCap, OpCallLayout.msgCap),
            (\S.nInputs, OpCallLayout.nInputs), (\S.nInts, OpCallLayout.nInts), (\S.nReals, OpCallLayout.nReals),
            (\S.nOutputs, OpCallLayout.nOutputs), (\S.compute, OpCallLayout.compute)]
        for (path, offset) in offsets {
            XCTAssertEqual(MemoryLayout<S>.offset(of: path), offset, "\(path)")
        }
        let header = try String(contentsOfFile: headerPath, encoding: .utf8)
        for needle in ["sizeof(scnn_op_call) == 72", "offsetof(scnn_op_call, msg) == 32", "offsetof(scnn_op_call, msg_cap) == 40",
                       "offsetof(scnn_op_call, n_inputs) == 48", "offsetof(scnn_op_call, n_outputs) == 60",
                       "offsetof(scnn_op_call, compute) == 64"] {
            XCTAssertTrue(header.contains(needle), needle)
        }
        for (name, fn, _) in opTable {
            XCTAssertEqual(fn(nil), VALUE, "\(name) with a NULL call")
        }
    }

    /// The op table of FuzzCAPITests names every op the CPython extension's table calls (its
    /// `OP_ROW(name, ...)` rows, which declare the `scnn_<name>` symbols), once: a new op is fuzzed.
    func testOpTableCoversTheExtensionsRows() throws {
        let core = URL(fileURLWithPath: headerPath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("python/swiftcnn/_core.c")
        let source = try String(contentsOf: core, encoding: .utf8)
        let rows = source.split(separator: "\n").compactMap { line -> String? in
            guard line.hasPrefix("OP_ROW("), let comma = line.firstIndex(of: ",") else { return nil }
            return String(line[line.index(line.startIndex, offsetBy: 7)..<comma])
        }
        XCTAssertEqual(rows.count, 25)
        XCTAssertEqual(opTable.map(\.name).sorted(), rows.sorted())
        XCTAssertEqual(Set(opTable.map(\.name)).count, opTable.count)
    }

    /// Every op: wrong counts and NULL arrays, with the exact message.
    func testCountAndNullRejectionsForEveryOp() {
        for entry in opTable {
            let a = entry.arity
            let ins = [TensorDesc](repeating: .absent, count: a.inputs)
            let ints = [Int64](repeating: 1, count: a.ints), reals = [Double](repeating: 1, count: a.reals)
            var outs = [TensorDesc](repeating: .garbage, count: a.outputs)
            let counts = "\(entry.name): takes \(a.inputs) inputs, \(a.ints) ints, \(a.reals) reals and \(a.outputs) outputs; got "
            for compute in [false, true] {
                var o = callOp(entry.fn, inputs: ins + [.absent], ints: ints, reals: reals, outputs: &outs, compute: compute)
                assertStatus(o, VALUE)
                XCTAssertEqual(o.message, counts + "\(a.inputs + 1), \(a.ints), \(a.reals) and \(a.outputs)")
                if a.inputs > 0 {
                    o = callOp(entry.fn, inputs: Array(ins.dropLast()), ints: ints, reals: reals, outputs: &outs, compute: compute)
                    XCTAssertEqual(o.message, counts + "\(a.inputs - 1), \(a.ints), \(a.reals) and \(a.outputs)")
                }
                o = callOp(entry.fn, inputs: ins, ints: ints + [1], reals: reals, outputs: &outs, compute: compute)
                XCTAssertEqual(o.message, counts + "\(a.inputs), \(a.ints + 1), \(a.reals) and \(a.outputs)")
                o = callOp(entry.fn, inputs: ins, ints: ints, reals: reals + [1], outputs: &outs, compute: compute)
                XCTAssertEqual(o.message, counts + "\(a.inputs), \(a.ints), \(a.reals + 1) and \(a.outputs)")
                var fewer = Array(outs.dropLast())
                o = callOp(entry.fn, inputs: ins, ints: ints, reals: reals, outputs: &fewer, compute: compute)
                XCTAssertEqual(o.message, counts + "\(a.inputs), \(a.ints), \(a.reals) and \(a.outputs - 1)")
                o = callOp(entry.fn, inputs: ins, ints: ints, reals: reals, outputs: &outs, compute: compute, nInputs: -1)
                assertStatus(o, VALUE, "got -1")
                // NULL arrays with matching counts.
                let null = "\(entry.name): an operand or settings array is NULL"
                o = callOp(entry.fn, inputs: nil, ints: ints, reals: reals, outputs: &outs, compute: compute, nInputs: Int32(a.inputs))
                assertStatus(o, VALUE); XCTAssertEqual(o.message, null)
                if a.ints > 0 {
                    o = callOp(entry.fn, inputs: ins, ints: nil, reals: reals, outputs: &outs, compute: compute, nInts: Int32(a.ints))
                    assertStatus(o, VALUE); XCTAssertEqual(o.message, null)
                }
                var none: [TensorDesc] = []
                o = callOp(entry.fn, inputs: ins, ints: ints, reals: reals, outputs: &none, compute: compute, nOutputs: Int32(a.outputs))
                assertStatus(o, VALUE); XCTAssertEqual(o.message, null)
                // The first operand absent: a type error naming it.
                o = callOp(entry.fn, inputs: ins, ints: ints, reals: reals, outputs: &outs, compute: compute)
                assertStatus(o, TYPE, "\(entry.name): ", "must be an array, not None")
            }
            XCTAssertEqual(outs.map(\.bytes), [TensorDesc](repeating: .garbage, count: a.outputs).map(\.bytes))
        }
    }

    // MARK: - conv2d

    func checkConv2d<T: CNNScalar>(_: T.Type) throws {
        let dt = dtypeCode(T.self)
        for (xs, ws, geo, withBias) in [
            ([2, 3, 9, 8], [4, 3, 3, 2], [1, 1, 0, 0, 1, 1], true),
            ([1, 2, 7, 7], [3, 2, 3, 3], [2, 1, 1, 2, 2, 1], false),
            ([3, 1, 5, 6], [2, 1, 1, 1], [1, 1, 0, 0, 1, 1], true),
        ] as [([Int], [Int], [Int], Bool)] {
            let xt: Tensor<T> = randomTensor(xs, seed: 1), wt: Tensor<T> = randomTensor(ws, seed: 2)
            let bt: Tensor<T> = randomTensor([ws[0]], seed: 3)
            let (s, p, d) = ((geo[0], geo[1]), (geo[2], geo[3]), (geo[4], geo[5]))
            let expected = try conv2d(xt, weight: wt, bias: withBias ? bt : nil, stride: s, padding: p, dilation: d)
            let g = try Conv2DGeometry(op: "t", xShape: xs, weightShape: ws, biasShape: withBias ? [ws[0]] : nil,
                                       stride: s, padding: p, dilation: d)
            let naive = try Tensor<T>(zeros: g.outputShape)
            conv2dForwardNaive(g, x: xt.pointer, weight: wt.pointer, bias: withBias ? UnsafePointer(bt.pointer) : nil, y: naive.pointer)
            let x = Owned(xt), w = Owned(wt), b = Owned(bt)
            let inputs = [x.desc, w.desc, withBias ? b.desc : .absent]
            let ints = convInts(geo.map(Int64.init))
            assertDeclares(scnn_conv2d, inputs, ints: ints, [expected.shape], [dt])
            let y = runOp(scnn_conv2d, inputs: inputs, ints: ints, outputs: 1)[0]
            XCTAssertLessThan(relErr(y.values(T.self), expected.scalars), tol(T.self))
            XCTAssertLessThan(relErr(y.values(T.self), naive.scalars), tol(T.self) * 10)

            // Backward against the core, outputs overwritten (start them with garbage).
            let gyt: Tensor<T> = randomTensor(expected.shape, seed: 6)
            let (ex, ew, eb) = try conv2dBackward(gradOut: gyt, x: xt, weight: wt, stride: s, padding: p, dilation: d)
            let bin = [Owned(gyt).desc, x.desc, w.desc]
            assertDeclares(scnn_conv2d_backward, bin, ints: ints, [xs, ws, [ws[0]]], [dt, dt, dt])
            let gy = Owned(gyt)
            let (q, decl) = query(scnn_conv2d_backward, inputs: [gy.desc, x.desc, w.desc], ints: ints, outputs: 3)
            assertStatus(q, OK)
            let outs = decl.map { Owned(declared: $0) }
            for o in outs { o.fill(T(7)) }
            var descs = outs.map(\.desc)
            assertStatus(callOp(scnn_conv2d_backward, inputs: [gy.desc, x.desc, w.desc], ints: ints, outputs: &descs, compute: true), OK)
            XCTAssertLessThan(relErr(outs[0].values(T.self), ex.scalars), tol(T.self))
            XCTAssertLessThan(relErr(outs[1].values(T.self), ew.scalars), tol(T.self))
            XCTAssertLessThan(relErr(outs[2].values(T.self), eb.scalars), tol(T.self))
        }
    }

    func testConv2d() throws {
        try checkConv2d(Float.self)
        try checkConv2d(Double.self)
    }

    func testConv2dEmptyBatch() throws {
        // N = 0: empty output, zero weight/bias gradients; data pointers of empty operands may be NULL.
        let w = Owned([Float](repeating: 1, count: 2), shape: [2, 1, 1, 1])
        let x = TensorDesc(nil, [0, 1, 5, 5], dtype: F32)
        let ints: [Int64] = convInts([1, 1, 0, 0, 1, 1])
        assertDeclares(scnn_conv2d, [x, w.desc, .absent], ints: ints, [[0, 2, 5, 5]], [F32])
        var outs = [TensorDesc(nil, [0, 2, 5, 5], dtype: F32)]
        assertStatus(callOp(scnn_conv2d, inputs: [x, w.desc, .absent], ints: ints, outputs: &outs, compute: true), OK)
        let gw = Owned(shape: [2, 1, 1, 1], dtype: F32), gb = Owned(shape: [2], dtype: F32)
        gw.fill(Float(5)); gb.fill(Float(5))
        var bouts = [TensorDesc(nil, [0, 1, 5, 5], dtype: F32), gw.desc, gb.desc]
        assertStatus(callOp(scnn_conv2d_backward, inputs: [TensorDesc(nil, [0, 2, 5, 5], dtype: F32), x, w.desc], ints: ints,
                            outputs: &bouts, compute: true), OK)
        XCTAssertEqual(gw.values(Float.self), [0, 0])
        XCTAssertEqual(gb.values(Float.self), [0, 0])
    }

    /// Regression: a stride so large that `(o + 3) * stride` overflowed trapped in the kernels. A
    /// window that slides once must work with any stride.
    func testConv2dHugeStrideRegression() throws {
        for dt in [F32, F64] {
            for stride in [Int64(1) << 62, Int64.max] {
                let xv = (0..<25).map { Double($0) + 1.5 }
                let x = dt == F32 ? Owned(xv.map(Float.init), shape: [1, 1, 5, 5]) : Owned(xv, shape: [1, 1, 5, 5])
                let w = dt == F32 ? Owned([Float(-2)], shape: [1, 1, 1, 1]) : Owned([Double(-2)], shape: [1, 1, 1, 1])
                let ints: [Int64] = convInts([stride, stride, 0, 0, 1, 1])
                assertDeclares(scnn_conv2d, [x.desc, w.desc, .absent], ints: ints, [[1, 1, 1, 1]], [dt])
                let y = runOp(scnn_conv2d, inputs: [x.desc, w.desc, .absent], ints: ints, outputs: 1)
                XCTAssertEqual(y.first.map { dt == F32 ? Double($0.values(Float.self)[0]) : $0.values(Double.self)[0] }, -3)
                // Its backward must not trap either (its values: disabled_testStridedPointwiseConvBackward).
                let gy = dt == F32 ? Owned([Float(1)], shape: [1, 1, 1, 1]) : Owned([Double(1)], shape: [1, 1, 1, 1])
                let g = runOp(scnn_conv2d_backward, inputs: [gy.desc, x.desc, w.desc], ints: ints, outputs: 3)
                XCTAssertEqual(g.map(\.shape), [[1, 1, 5, 5], [1, 1, 1, 1], [1]])
                // Max/avg pooling with the same huge stride (given explicitly).
                for fn in [scnn_max_pool2d, scnn_avg_pool2d] as [OpFn] {
                    let p = runOp(fn, inputs: [x.desc], ints: [1, 1, 1, stride, stride, 0, 0], outputs: 1)
                    XCTAssertEqual(p.first?.shape, [1, 1, 1, 1])
                }
            }
            // Padding 2^61: 2 * padding + 5 and the index arithmetic overflow: an error, never a trap.
            let x = Owned(shape: [1, 1, 5, 5], dtype: dt), w = Owned(shape: [1, 1, 1, 1], dtype: dt)
            for pad in [Int64(1) << 61, Int64(1) << 62, Int64.max] {
                let (o, _) = query(scnn_conv2d, inputs: [x.desc, w.desc, .absent], ints: convInts([1, 1, pad, pad, 1, 1]), outputs: 1)
                XCTAssertTrue(o.status == OVERFLOW || o.status == VALUE, o.description)
                XCTAssertTrue(o.message.hasPrefix("conv2d: "), o.message)
            }
        }
    }

    /// KNOWN CORE BUG (not run: rename to `test...` once fixed). A 1x1 kernel with stride > 1 whose
    /// output is 1x1 gets its stride stored as 1 (`effectiveStride`), so `conv2dIsPointwise`
    /// (Sources/SwiftCNN/Ops/Conv2D.swift:31) takes it for a pointwise conv although H*W != Ho*Wo:
    /// the backward then writes grad_x at the wrong places (x (1,2,5,5): indices 0 and 1 instead of
    /// 0 and 25) and grad_weight reads past x's last element (garbage such as 3.9e29 when x's buffer is
    /// not padded). The forward happens to be right. Fix: also require outH == height && outW == width.
    func testStridedPointwiseConvBackward() throws {
        for dt in [F32, F64] {
            let xv = (0..<50).map { Double($0) + 1.5 }
            let x = dt == F32 ? Owned(xv.map(Float.init), shape: [1, 2, 5, 5]) : Owned(xv, shape: [1, 2, 5, 5])
            let w = dt == F32 ? Owned([Float(-2), 3], shape: [1, 2, 1, 1]) : Owned([-2.0, 3], shape: [1, 2, 1, 1])
            let gy = dt == F32 ? Owned([Float(1)], shape: [1, 1, 1, 1]) : Owned([1.0], shape: [1, 1, 1, 1])
            for stride: Int64 in [5, 1 << 62] {
                let g = runOp(scnn_conv2d_backward, inputs: [gy.desc, x.desc, w.desc], ints: convInts([stride, stride, 0, 0, 1, 1]), outputs: 3)
                guard g.count == 3 else { continue }
                var gx = [Double](repeating: 0, count: 50)
                gx[0] = -2; gx[25] = 3
                XCTAssertEqual(dt == F32 ? g[0].values(Float.self).map(Double.init) : g[0].values(Double.self), gx)
                XCTAssertEqual(dt == F32 ? g[1].values(Float.self).map(Double.init) : g[1].values(Double.self), [1.5, 26.5])
            }
        }
    }

    func testConv2dRejections() {
        let x = Owned(shape: [2, 3, 5, 5], dtype: F32), w = Owned(shape: [4, 3, 3, 3], dtype: F32)
        let b = Owned(shape: [4], dtype: F32), y = Owned(shape: [2, 4, 3, 3], dtype: F32)
        let w64 = Owned(shape: [4, 3, 3, 3], dtype: F64)
        let geo: [Int64] = convInts([1, 1, 0, 0, 1, 1])
        func r(_ inputs: [TensorDesc], ints: [Int64] = geo, _ status: Int32, _ msg: String, file: StaticString = #filePath, line: UInt = #line) {
            reject(scnn_conv2d, inputs, ints: ints, outputs: [y], status, msg, file: file, line: line)
        }
        let xs = x.desc, ws = w.desc
        func with(_ d: TensorDesc, shape: [Int64]? = nil, ndim: Int32? = nil, dtype: Int32? = nil,
                  data: UnsafeMutableRawPointer?? = .none) -> TensorDesc {
            var e = TensorDesc(d.data, shape ?? d.dims, dtype: dtype ?? d.dtype, ndim: ndim)
            if case .some(let p) = data { e.data = p }
            return e
        }
        r([.absent, ws, .absent], TYPE, "conv2d: x must be an array, not None")
        r([xs, .absent, .absent], TYPE, "conv2d: weight must be an array, not None")
        r([with(xs, dtype: 7), ws, .absent], TYPE, "conv2d: x has an unknown dtype code 7")
        r([with(xs, dtype: I64), ws, .absent], TYPE, "conv2d: x has dtype int64; expected float32 or float64")
        r([xs, w64.desc, .absent], TYPE, "conv2d: x has dtype float32 but weight has dtype float64")
        r([xs, ws, with(b.desc, dtype: F64)], TYPE, "conv2d: x has dtype float32 but bias has dtype float64")
        r([with(xs, ndim: 9), ws, .absent], VALUE, "conv2d: x must have at most 8 dimensions, got ndim 9")
        r([with(xs, ndim: -2), ws, .absent], VALUE, "conv2d: x must have at most 8 dimensions, got ndim -2")
        r([with(xs, shape: [2, 3, 5]), ws, .absent], VALUE, "conv2d: x must be 4-D (N, C, H, W), got shape (2, 3, 5)")
        r([xs, with(ws, shape: [4, 3, 3]), .absent], VALUE, "conv2d: weight must be 4-D")
        r([xs, with(ws, shape: [4, 2, 3, 3]), .absent], VALUE, "weight must have 3 input channels to match x (2, 3, 5, 5), got shape (4, 2, 3, 3)")
        r([with(xs, shape: [2, -3, 5, 5]), ws, .absent], VALUE, "conv2d: x must have non-negative sizes")
        r([xs, ws, .absent], ints: convInts([0, 1, 0, 0, 1, 1]), VALUE, "conv2d: stride must be >= 1, got (0, 1)")
        r([xs, ws, .absent], ints: convInts([1, -2, 0, 0, 1, 1]), VALUE, "stride must be >= 1, got (1, -2)")
        r([xs, ws, .absent], ints: convInts([1, 1, -1, 0, 1, 1]), VALUE, "conv2d: padding must be >= 0")
        r([xs, ws, .absent], ints: convInts([1, 1, 0, 0, 0, 1]), VALUE, "conv2d: dilation must be >= 1")
        r([xs, ws, .absent], ints: convInts([1, 1, 0, 0, 3, 3]), VALUE, "is larger than the padded input")
        r([with(xs, shape: [2, 3, 2, 2]), ws, .absent], VALUE, "conv2d: kernel height 3 is larger than the padded input height 2")
        r([xs, ws, with(b.desc, shape: [3])], VALUE, "conv2d: bias must have shape (4,) to match weight (4, 3, 3, 3), got shape (3,)")
        r([xs, ws, with(b.desc, shape: [4, 1])], VALUE, "conv2d: bias must be 1-D (out_channels,)")
        r([with(xs, shape: [1 << 40, 1 << 40, 5, 5]), ws, .absent], OVERFLOW, "conv2d: x")
        r([with(xs, shape: [1, 3, 1 << 40, 1 << 40]), ws, .absent], OVERFLOW, "conv2d")
        r([xs, ws, .absent], ints: convInts([1, 1, 0, 0, Int64.max, 1]), OVERFLOW, "conv2d")
        // Data: NULL with a non-zero count, misaligned (compute only: the query reads no data).
        for (bad, msg) in [(with(xs, data: .some(nil)), "conv2d: x is NULL but has shape (2, 3, 5, 5) (150 elements)"),
                           (with(xs, data: .some(x.raw + 2)), "conv2d: x is not aligned for its dtype")] {
            var outs = [y.desc]
            assertStatus(callOp(scnn_conv2d, inputs: [bad, ws, .absent], ints: geo, outputs: &outs, compute: false), OK)
            let o = callOp(scnn_conv2d, inputs: [bad, ws, .absent], ints: geo, outputs: &outs, compute: true)
            assertStatus(o, VALUE, msg)
        }
        var outs = [with(y.desc, data: .some(y.raw + 1))]
        assertStatus(callOp(scnn_conv2d, inputs: [xs, ws, .absent], ints: geo, outputs: &outs, compute: true), VALUE, "conv2d: out is not aligned")
        outs = [with(y.desc, data: .some(nil))]
        assertStatus(callOp(scnn_conv2d, inputs: [xs, ws, .absent], ints: geo, outputs: &outs, compute: true), VALUE, "conv2d: out is NULL")
        // Outputs of the wrong declared shape or dtype in compute mode.
        outs = [with(y.desc, shape: [2, 4, 3, 4])]
        var o = callOp(scnn_conv2d, inputs: [xs, ws, .absent], ints: geo, outputs: &outs, compute: true)
        assertStatus(o, VALUE)
        XCTAssertEqual(o.message, "conv2d: out must be a float32 array of shape (2, 4, 3, 3), got float32 of shape (2, 4, 3, 4)")
        outs = [with(y.desc, dtype: F64)]
        o = callOp(scnn_conv2d, inputs: [xs, ws, .absent], ints: geo, outputs: &outs, compute: true)
        assertStatus(o, VALUE, "conv2d: out must be a float32 array of shape (2, 4, 3, 3), got float64 of shape (2, 4, 3, 3)")
        outs = [with(y.desc, shape: [2, 4, 3, 3, 1])]
        assertStatus(callOp(scnn_conv2d, inputs: [xs, ws, .absent], ints: geo, outputs: &outs, compute: true), VALUE, "out must be a float32 array")
        // Overlap: out over x.
        let big = Owned(shape: [2 * 3 * 5 * 5], dtype: F32)
        outs = [TensorDesc(big.raw + 4 * 8, [2, 4, 3, 3], dtype: F32)]
        o = callOp(scnn_conv2d, inputs: [with(xs, data: .some(big.raw)), ws, .absent], ints: geo, outputs: &outs, compute: true)
        assertStatus(o, VALUE)
        XCTAssertEqual(o.message, "conv2d: out must not share memory with x")
        outs = [with(y.desc, data: .some(w.raw))]
        assertStatus(callOp(scnn_conv2d, inputs: [xs, ws, .absent], ints: geo, outputs: &outs, compute: true), VALUE,
                     "conv2d: out must not share memory with weight")
        // Messages: none at all, cap 1, a tiny buffer.
        var g = [TensorDesc.garbage]
        XCTAssertEqual(callOp(scnn_conv2d, inputs: [.absent, ws, .absent], ints: geo, outputs: &g, compute: false, cap: 0).status, TYPE)
        let one = callOp(scnn_conv2d, inputs: [.absent, ws, .absent], ints: geo, outputs: &g, compute: false, cap: 1)
        XCTAssertEqual(one.status, TYPE); XCTAssertEqual(one.message, "")
        let tiny = callOp(scnn_conv2d, inputs: [.absent, ws, .absent], ints: geo, outputs: &g, compute: false, cap: 7)
        XCTAssertEqual(tiny.status, TYPE); XCTAssertEqual(tiny.message, "conv2d")
    }

    func testConv2dBackwardRejections() {
        let x = Owned(shape: [2, 3, 5, 5], dtype: F32), w = Owned(shape: [4, 3, 3, 3], dtype: F32)
        let gy = Owned(shape: [2, 4, 3, 3], dtype: F32)
        let gx = Owned(shape: [2, 3, 5, 5], dtype: F32), gw = Owned(shape: [4, 3, 3, 3], dtype: F32), gb = Owned(shape: [4], dtype: F32)
        let geo: [Int64] = convInts([1, 1, 0, 0, 1, 1])
        let outs = [gx, gw, gb]
        reject(scnn_conv2d_backward, [TensorDesc(gy.raw, [2, 4, 3, 4], dtype: F32), x.desc, w.desc], ints: geo, outputs: outs, VALUE,
               "conv2d_backward: grad_out", "(2, 4, 3, 3)", "(2, 4, 3, 4)")
        reject(scnn_conv2d_backward, [TensorDesc(gy.raw, [2, 4, 3], dtype: F32), x.desc, w.desc], ints: geo, outputs: outs, VALUE,
               "conv2d_backward: grad_out must be 4-D (N, K, Ho, Wo)")
        reject(scnn_conv2d_backward, [gy.desc, x.desc, w.desc], ints: convInts([1, 1, 0, 0, 1, 0]), outputs: outs, VALUE,
               "conv2d_backward: dilation must be >= 1")
        reject(scnn_conv2d_backward, [gy.desc, TensorDesc(x.raw, [2, 3, 5, 5], dtype: F64), w.desc], ints: geo, outputs: outs, TYPE,
               "conv2d_backward: grad_out has dtype float32 but x has dtype float64")
        reject(scnn_conv2d_backward, [gy.desc, x.desc, .absent], ints: geo, outputs: outs, TYPE,
               "conv2d_backward: weight must be an array, not None")
        // Overlapping outputs: grad_weight over grad_x, grad_bias over grad_weight, grad_x over an input.
        var descs = [gx.desc, TensorDesc(gx.raw, [4, 3, 3, 3], dtype: F32), gb.desc]
        var o = callOp(scnn_conv2d_backward, inputs: [gy.desc, x.desc, w.desc], ints: geo, outputs: &descs, compute: true)
        assertStatus(o, VALUE); XCTAssertEqual(o.message, "conv2d_backward: grad_x must not share memory with grad_weight")
        descs = [gx.desc, gw.desc, TensorDesc(gw.raw + 8, [4], dtype: F32)]
        o = callOp(scnn_conv2d_backward, inputs: [gy.desc, x.desc, w.desc], ints: geo, outputs: &descs, compute: true)
        assertStatus(o, VALUE); XCTAssertEqual(o.message, "conv2d_backward: grad_weight must not share memory with grad_bias")
        descs = [TensorDesc(x.raw, [2, 3, 5, 5], dtype: F32), gw.desc, gb.desc]
        o = callOp(scnn_conv2d_backward, inputs: [gy.desc, x.desc, w.desc], ints: geo, outputs: &descs, compute: true)
        assertStatus(o, VALUE); XCTAssertEqual(o.message, "conv2d_backward: grad_x must not share memory with x")
        descs = [gx.desc, gw.desc, TensorDesc(gb.raw, [5], dtype: F32)]
        o = callOp(scnn_conv2d_backward, inputs: [gy.desc, x.desc, w.desc], ints: geo, outputs: &descs, compute: true)
        assertStatus(o, VALUE, "conv2d_backward: grad_bias must be a float32 array of shape (4,), got float32 of shape (5,)")
    }

    // MARK: - pooling

    func checkPool<T: CNNScalar>(_: T.Type) throws {
        let dt = dtypeCode(T.self)
        let xs = [2, 3, 7, 6]
        let xt: Tensor<T> = randomTensor(xs, seed: 11)
        let x = Owned(xt)
        for (isMax, k, s, p) in [(true, (3, 2), (2, 2), (1, 1)), (true, (2, 2), nil, (0, 0)), (false, (3, 3), (2, 1), (1, 0)),
                                 (false, (2, 3), nil, (0, 1))] as [(Bool, (Int, Int), (Int, Int)?, (Int, Int))] {
            let ints = [k.0, k.1, s == nil ? 0 : 1, s?.0 ?? 99, s?.1 ?? 99, p.0, p.1].map(Int64.init)
            let expected = isMax ? try maxPool2d(xt, kernelSize: k, stride: s, padding: p)
                                 : try avgPool2d(xt, kernelSize: k, stride: s, padding: p)
            let fn: OpFn = isMax ? scnn_max_pool2d : scnn_avg_pool2d
            assertDeclares(fn, [x.desc], ints: ints, [expected.shape], [dt])
            let y = runOp(fn, inputs: [x.desc], ints: ints, outputs: 1)[0]
            XCTAssertEqual(y.values(T.self), expected.scalars)
            let gyt: Tensor<T> = randomTensor(expected.shape, seed: 12)
            let ex = isMax ? try maxPool2dBackward(gradOut: gyt, x: xt, kernelSize: k, stride: s, padding: p)
                           : try avgPool2dBackward(gradOut: gyt, x: xt, kernelSize: k, stride: s, padding: p)
            let bfn: OpFn = isMax ? scnn_max_pool2d_backward : scnn_avg_pool2d_backward
            let gy = Owned(gyt)
            assertDeclares(bfn, [gy.desc, x.desc], ints: ints, [xs], [dt])
            let gx = runOp(bfn, inputs: [gy.desc, x.desc], ints: ints, outputs: 1)[0]
            XCTAssertLessThan(relErr(gx.values(T.self), ex.scalars), tol(T.self))
        }
    }

    func testPool() throws {
        try checkPool(Float.self)
        try checkPool(Double.self)
    }

    func testPoolRejections() {
        let x = Owned(shape: [1, 2, 4, 4], dtype: F64), y = Owned(shape: [1, 2, 2, 2], dtype: F64)
        let good: [Int64] = [2, 2, 0, 0, 0, 0, 0]
        reject(scnn_max_pool2d, [x.desc], ints: [0, 2, 0, 0, 0, 0, 0], outputs: [y], VALUE, "max_pool2d: kernel_size")
        reject(scnn_avg_pool2d, [x.desc], ints: [2, 2, 1, 0, 2, 0, 0], outputs: [y], VALUE, "avg_pool2d: stride")
        reject(scnn_max_pool2d, [x.desc], ints: [2, 2, 0, 0, 0, 2, 0], outputs: [y], VALUE, "max_pool2d: padding", "half")
        reject(scnn_max_pool2d, [x.desc], ints: [2, 2, 0, 0, 0, -1, 0], outputs: [y], VALUE, "max_pool2d: padding")
        reject(scnn_max_pool2d, [x.desc], ints: [5, 5, 1, 1, 1, 0, 0], outputs: [y], VALUE, "max_pool2d: kernel", "larger")
        reject(scnn_max_pool2d, [TensorDesc(x.raw, [2, 4, 4], dtype: F64)], ints: good, outputs: [y], VALUE,
               "max_pool2d: x must be 4-D (N, C, H, W), got shape (2, 4, 4)")
        reject(scnn_avg_pool2d, [TensorDesc(x.raw, [1 << 40, 1 << 40, 4, 4], dtype: F64)], ints: good, outputs: [y], OVERFLOW, "avg_pool2d: x")
        reject(scnn_avg_pool2d, [TensorDesc(x.raw, [1, 2, 4, 4], dtype: I64)], ints: good, outputs: [y], TYPE,
               "avg_pool2d: x has dtype int64; expected float32 or float64")
        reject(scnn_max_pool2d_backward, [TensorDesc(y.raw, [1, 2, 2, 3], dtype: F64), x.desc], ints: good, outputs: [x], VALUE,
               "max_pool2d_backward: grad_out", "(1, 2, 2, 2)", "(1, 2, 2, 3)")
        reject(scnn_avg_pool2d_backward, [y.desc, TensorDesc(x.raw, [1, 2, 4, 4], dtype: F32)], ints: good, outputs: [x], TYPE,
               "avg_pool2d_backward: grad_out has dtype float64 but x has dtype float32")
        // Zero batch with NULL data.
        assertDeclares(scnn_max_pool2d, [TensorDesc(nil, [0, 2, 4, 4], dtype: F64)], ints: good, [[0, 2, 2, 2]], [F64])
        var outs = [TensorDesc(nil, [0, 2, 2, 2], dtype: F64)]
        assertStatus(callOp(scnn_max_pool2d, inputs: [TensorDesc(nil, [0, 2, 4, 4], dtype: F64)], ints: good, outputs: &outs, compute: true), OK)
        // grad_x over grad_out.
        let gx = Owned(shape: [1, 2, 4, 4], dtype: F64)
        outs = [gx.desc]
        let o = callOp(scnn_max_pool2d_backward, inputs: [TensorDesc(gx.raw + 8, [1, 2, 2, 2], dtype: F64), x.desc], ints: good,
                       outputs: &outs, compute: true)
        assertStatus(o, VALUE); XCTAssertEqual(o.message, "max_pool2d_backward: grad_x must not share memory with grad_out")
    }

    // MARK: - linear

    func checkLinear<T: CNNScalar>(_: T.Type) throws {
        let dt = dtypeCode(T.self)
        let xt: Tensor<T> = randomTensor([5, 7], seed: 21), wt: Tensor<T> = randomTensor([3, 7], seed: 22)
        let bt: Tensor<T> = randomTensor([3], seed: 23)
        let x = Owned(xt), w = Owned(wt), b = Owned(bt)
        for withBias in [true, false] {
            let expected = try linear(xt, weight: wt, bias: withBias ? bt : nil)
            let inputs = [x.desc, w.desc, withBias ? b.desc : .absent]
            assertDeclares(scnn_linear, inputs, [[5, 3]], [dt])
            let y = runOp(scnn_linear, inputs: inputs, outputs: 1)[0]
            XCTAssertLessThan(relErr(y.values(T.self), expected.scalars), tol(T.self))
            let naive = try Tensor<T>(zeros: [5, 3])
            linearForwardNaive(batch: 5, inFeatures: 7, outFeatures: 3, x: xt.pointer, weight: wt.pointer,
                               bias: withBias ? UnsafePointer(bt.pointer) : nil, y: naive.pointer)
            XCTAssertLessThan(relErr(y.values(T.self), naive.scalars), tol(T.self) * 10)
        }
        let gyt: Tensor<T> = randomTensor([5, 3], seed: 24)
        let (ex, ew, eb) = try linearBackward(gradOut: gyt, x: xt, weight: wt)
        let gy = Owned(gyt)
        assertDeclares(scnn_linear_backward, [gy.desc, x.desc, w.desc], [[5, 7], [3, 7], [3]], [dt, dt, dt])
        let g = runOp(scnn_linear_backward, inputs: [gy.desc, x.desc, w.desc], outputs: 3)
        XCTAssertLessThan(relErr(g[0].values(T.self), ex.scalars), tol(T.self))
        XCTAssertLessThan(relErr(g[1].values(T.self), ew.scalars), tol(T.self))
        XCTAssertLessThan(relErr(g[2].values(T.self), eb.scalars), tol(T.self))
        // N = 0: zero weight/bias gradients.
        let empty = TensorDesc(nil, [0, 7], dtype: dt)
        let g0 = runOp(scnn_linear_backward, inputs: [TensorDesc(nil, [0, 3], dtype: dt), empty, w.desc], outputs: 3)
        XCTAssertEqual(g0[1].values(T.self), [T](repeating: 0, count: 21))
        XCTAssertEqual(g0[2].values(T.self), [T](repeating: 0, count: 3))
    }

    func testLinear() throws {
        try checkLinear(Float.self)
        try checkLinear(Double.self)
    }

    func testLinearRejections() {
        let x = Owned(shape: [2, 5], dtype: F32), w = Owned(shape: [3, 5], dtype: F32), b = Owned(shape: [3], dtype: F32)
        let y = Owned(shape: [2, 3], dtype: F32)
        reject(scnn_linear, [x.desc, TensorDesc(w.raw, [3, 4], dtype: F32), .absent], outputs: [y], VALUE, "linear: weight", "5 input features")
        reject(scnn_linear, [TensorDesc(x.raw, [10], dtype: F32), w.desc, .absent], outputs: [y], VALUE, "linear: x must be 2-D")
        reject(scnn_linear, [x.desc, w.desc, TensorDesc(b.raw, [2], dtype: F32)], outputs: [y], VALUE, "linear: bias", "(3,)")
        reject(scnn_linear, [x.desc, w.desc, TensorDesc(b.raw, [3], dtype: F64)], outputs: [y], TYPE,
               "linear: x has dtype float32 but bias has dtype float64")
        reject(scnn_linear, [x.desc, .absent, .absent], outputs: [y], TYPE, "linear: weight must be an array, not None")
        reject(scnn_linear, [TensorDesc(x.raw, [1 << 40, 1 << 40], dtype: F32), w.desc, .absent], outputs: [y], OVERFLOW, "linear: x")
        reject(scnn_linear, [TensorDesc(x.raw, [2, 5], dtype: F32, ndim: 12), w.desc, .absent], outputs: [y], VALUE,
               "linear: x must have at most 8 dimensions, got ndim 12")
        let gx = Owned(shape: [2, 5], dtype: F32), gw = Owned(shape: [3, 5], dtype: F32), gb = Owned(shape: [3], dtype: F32)
        reject(scnn_linear_backward, [TensorDesc(y.raw, [2, 2], dtype: F32), x.desc, w.desc], outputs: [gx, gw, gb], VALUE,
               "linear_backward: grad_out", "(2, 3)")
        // Overlapping outputs and NULL data.
        var descs = [gx.desc, TensorDesc(gx.raw + 4, [3, 5], dtype: F32), gb.desc]
        var o = callOp(scnn_linear_backward, inputs: [y.desc, x.desc, w.desc], outputs: &descs, compute: true)
        assertStatus(o, VALUE); XCTAssertEqual(o.message, "linear_backward: grad_x must not share memory with grad_weight")
        descs = [gx.desc, gw.desc, TensorDesc(nil, [3], dtype: F32)]
        o = callOp(scnn_linear_backward, inputs: [y.desc, x.desc, w.desc], outputs: &descs, compute: true)
        assertStatus(o, VALUE, "linear_backward: grad_bias is NULL but has shape (3,) (3 elements)")
        var one = [TensorDesc(x.raw, [2, 3], dtype: F32)]
        o = callOp(scnn_linear, inputs: [x.desc, w.desc, b.desc], outputs: &one, compute: true)
        assertStatus(o, VALUE); XCTAssertEqual(o.message, "linear: out must not share memory with x")
    }

    // MARK: - activations

    func checkActivations<T: CNNScalar>(_: T.Type) throws {
        let dt = dtypeCode(T.self)
        let xt: Tensor<T> = randomTensor([3, 1, 2, 1, 1, 2, 1, 2], seed: 31, -4, 4)   // 8-D
        let x = Owned(xt)
        for isSigmoid in [true, false] {
            let fn: OpFn = isSigmoid ? scnn_sigmoid : scnn_relu
            let expected = isSigmoid ? try sigmoid(xt) : try relu(xt)
            assertDeclares(fn, [x.desc], [xt.shape], [dt])
            let y = runOp(fn, inputs: [x.desc], outputs: 1)[0]
            XCTAssertEqual(y.values(T.self), expected.scalars)
            // In place: out IS x.
            let inPlace = Owned(xt)
            var outs = [inPlace.desc]
            assertStatus(callOp(fn, inputs: [inPlace.desc], outputs: &outs, compute: true), OK)
            XCTAssertEqual(inPlace.values(T.self), expected.scalars)
            // Backward: saved is y for sigmoid, x for relu.
            let gyt: Tensor<T> = randomTensor(xt.shape, seed: 32)
            let ex = isSigmoid ? try sigmoidBackward(gradOut: gyt, y: expected) : try reluBackward(gradOut: gyt, x: xt)
            let bfn: OpFn = isSigmoid ? scnn_sigmoid_backward : scnn_relu_backward
            let gy = Owned(gyt), saved = isSigmoid ? y : x
            assertDeclares(bfn, [gy.desc, saved.desc], [xt.shape], [dt])
            let gx = runOp(bfn, inputs: [gy.desc, saved.desc], outputs: 1)[0]
            XCTAssertEqual(gx.values(T.self), ex.scalars)
            outs = [gy.desc]
            assertStatus(callOp(bfn, inputs: [gy.desc, saved.desc], outputs: &outs, compute: true), OK)
            XCTAssertEqual(gy.values(T.self), ex.scalars)
        }
        // 0-d and empty, NULL data.
        XCTAssertEqual(runOp(scnn_relu, inputs: [Owned([T(-2)], shape: []).desc], outputs: 1).first?.values(T.self), [0])
        var outs = [TensorDesc(nil, [0, 3], dtype: dt)]
        assertStatus(callOp(scnn_sigmoid, inputs: [TensorDesc(nil, [0, 3], dtype: dt)], outputs: &outs, compute: true), OK)
    }

    func testActivations() throws {
        try checkActivations(Float.self)
        try checkActivations(Double.self)
    }

    func testActivationRejections() {
        let x = Owned(shape: [8], dtype: F32), y = Owned(shape: [8], dtype: F32)
        reject(scnn_relu, [TensorDesc(x.raw, [Int64.max, 2], dtype: F32)], outputs: [y], OVERFLOW, "relu: x")
        reject(scnn_sigmoid, [TensorDesc(x.raw, [-1], dtype: F32)], outputs: [y], VALUE, "sigmoid: x must have non-negative sizes")
        reject(scnn_sigmoid, [TensorDesc(x.raw, [8], dtype: 3)], outputs: [y], TYPE, "sigmoid: x has an unknown dtype code 3")
        reject(scnn_sigmoid_backward, [x.desc, TensorDesc(y.raw, [4, 2], dtype: F32)], outputs: [y], VALUE,
               "sigmoid_backward: y must have the shape of grad_out (8,), got shape (4, 2)")
        reject(scnn_relu_backward, [x.desc, .absent], outputs: [y], TYPE, "relu_backward: x must be an array, not None")
        reject(scnn_relu_backward, [x.desc, TensorDesc(y.raw, [8], dtype: F64)], outputs: [y], TYPE,
               "relu_backward: grad_out has dtype float32 but x has dtype float64")
        // Partial overlap is refused; exact aliasing is allowed (tested above).
        let big = Owned(shape: [16], dtype: F32)
        var outs = [TensorDesc(big.raw + 4, [8], dtype: F32)]
        var o = callOp(scnn_relu, inputs: [TensorDesc(big.raw, [8], dtype: F32)], outputs: &outs, compute: true)
        assertStatus(o, VALUE); XCTAssertEqual(o.message, "relu: out must be x itself or not share memory with it; it partially overlaps")
        outs = [TensorDesc(big.raw, [4, 2], dtype: F32)]
        o = callOp(scnn_relu, inputs: [TensorDesc(big.raw, [8], dtype: F32)], outputs: &outs, compute: true)
        assertStatus(o, VALUE, "relu: out must be a float32 array of shape (8,), got float32 of shape (4, 2)")
        outs = [TensorDesc(nil, [8], dtype: F32)]
        assertStatus(callOp(scnn_relu, inputs: [x.desc], outputs: &outs, compute: true), VALUE, "relu: out is NULL but has shape (8,)")
    }

    // MARK: - softmax and losses

    func checkLosses<T: CNNScalar>(_: T.Type) throws {
        let dt = dtypeCode(T.self)
        let zt: Tensor<T> = randomTensor([4, 5], seed: 41, -3, 3)
        let z = Owned(zt)
        assertDeclares(scnn_softmax, [z.desc], [[4, 5]], [dt])
        XCTAssertLessThan(relErr(runOp(scnn_softmax, inputs: [z.desc], outputs: 1)[0].values(T.self), try softmax(zt).scalars), tol(T.self))

        let labels: [Int64] = [0, 4, 2, 2]
        let l = Owned(labels: labels)
        let (eLoss, eGrad) = try softmaxCrossEntropy(logits: zt, labels: labels)
        assertDeclares(scnn_softmax_cross_entropy, [z.desc, l.desc], [[], [4, 5]], [F64, dt])
        var r = runOp(scnn_softmax_cross_entropy, inputs: [z.desc, l.desc], outputs: 2)
        XCTAssertEqual(T(r[0].scalar), eLoss)  // the C ABI's Double loss, rounded once to T
        XCTAssertEqual(r[1].values(T.self), eGrad.scalars)
        let naive = labels.withUnsafeBufferPointer {
            softmaxCrossEntropyNaive(batch: 4, classes: 5, logits: zt.pointer, labels: $0.baseAddress!)
        }
        XCTAssertEqual(r[0].scalar, naive.loss, accuracy: T.self == Float.self ? 1e-5 : 1e-12)
        XCTAssertLessThan(relErr(r[1].values(T.self).map(Double.init), naive.grad), T.self == Float.self ? 1e-5 : 1e-12)

        let tt: Tensor<T> = try softmax(randomTensor([4, 5], seed: 42))
        let (pLoss, pGrad) = try softmaxCrossEntropy(logits: zt, targetProbabilities: tt)
        r = runOp(scnn_softmax_cross_entropy, inputs: [z.desc, Owned(tt).desc], outputs: 2)
        XCTAssertEqual(T(r[0].scalar), pLoss)  // the C ABI's Double loss, rounded once to T
        XCTAssertEqual(r[1].values(T.self), pGrad.scalars)

        let bz: Tensor<T> = randomTensor([3, 3], seed: 43, -3, 3), bt: Tensor<T> = randomTensor([3, 3], seed: 44, 0, 1)
        let (bLoss, bGrad) = try binaryCrossEntropyWithLogits(logits: bz, target: bt)
        assertDeclares(scnn_binary_cross_entropy_with_logits, [Owned(bz).desc, Owned(bt).desc], [[], [3, 3]], [F64, dt])
        r = runOp(scnn_binary_cross_entropy_with_logits, inputs: [Owned(bz).desc, Owned(bt).desc], outputs: 2)
        XCTAssertEqual(T(r[0].scalar), bLoss)  // the C ABI's Double loss, rounded once to T
        XCTAssertEqual(r[1].values(T.self), bGrad.scalars)

        // N = 0: NaN loss (PyTorch's mean over nothing), NULL data allowed.
        r = runOp(scnn_softmax_cross_entropy, inputs: [TensorDesc(nil, [0, 5], dtype: dt), TensorDesc(nil, [0], dtype: I64)], outputs: 2)
        XCTAssertTrue(r[0].scalar.isNaN)
    }

    func testLosses() throws {
        try checkLosses(Float.self)
        try checkLosses(Double.self)
    }

    func testLossRejections() {
        let z = Owned(shape: [2, 3], dtype: F64), loss = Owned(shape: [], dtype: F64), g = Owned(shape: [2, 3], dtype: F64)
        let ce: OpFn = scnn_softmax_cross_entropy
        reject(ce, [z.desc, Owned(labels: [0, 3]).desc], outputs: [loss, g], VALUE,
               "softmax_cross_entropy: target (class indices) must be in [0, 3), got 3 at index 1")
        reject(ce, [z.desc, Owned(labels: [-1, 0]).desc], outputs: [loss, g], VALUE, "target (class indices) must be in [0, 3), got -1 at index 0")
        reject(ce, [z.desc, Owned(labels: [0, Int64.max]).desc], outputs: [loss, g], VALUE, "got \(Int64.max) at index 1")
        reject(ce, [z.desc, Owned(labels: [0, 1, 2]).desc], outputs: [loss, g], VALUE,
               "softmax_cross_entropy: target (class indices) must have shape (2,) to match logits (2, 3), got shape (3,)")
        reject(ce, [z.desc, TensorDesc(nil, [2], dtype: I64)], outputs: [loss, g], VALUE,
               "softmax_cross_entropy: target is NULL but has shape (2,) (2 elements)")
        reject(ce, [z.desc, TensorDesc(z.raw, [3, 2], dtype: F64)], outputs: [loss, g], VALUE,
               "softmax_cross_entropy: target must have the shape of logits (2, 3), got shape (3, 2)")
        reject(ce, [z.desc, TensorDesc(z.raw, [2, 3], dtype: F32)], outputs: [loss, g], TYPE,
               "softmax_cross_entropy: logits has dtype float64 but target has dtype float32")
        reject(ce, [TensorDesc(z.raw, [6], dtype: F64), Owned(labels: [0]).desc], outputs: [loss, g], VALUE,
               "softmax_cross_entropy: logits must be 2-D (N, K)")
        reject(ce, [TensorDesc(z.raw, [6, 0], dtype: F64), Owned(labels: [0]).desc], outputs: [loss, g], VALUE,
               "softmax_cross_entropy: logits must have at least one class (K >= 1)")
        reject(ce, [TensorDesc(z.raw, [2, 3], dtype: I64), Owned(labels: [0, 1]).desc], outputs: [loss, g], TYPE,
               "softmax_cross_entropy: logits has dtype int64; expected float32 or float64")
        reject(ce, [z.desc, .absent], outputs: [loss, g], TYPE, "softmax_cross_entropy: target must be an array, not None")
        // The loss must be a 0-d float64 output; grad_logits must not overlap logits.
        let l = Owned(labels: [0, 1])
        var outs = [TensorDesc(loss.raw, [1], dtype: F64), g.desc]
        var o = callOp(ce, inputs: [z.desc, l.desc], outputs: &outs, compute: true)
        assertStatus(o, VALUE); XCTAssertEqual(o.message, "softmax_cross_entropy: loss must be a float64 array of shape (), got float64 of shape (1,)")
        outs = [TensorDesc(loss.raw, [], dtype: F32), g.desc]
        assertStatus(callOp(ce, inputs: [z.desc, l.desc], outputs: &outs, compute: true), VALUE, "loss must be a float64 array of shape (), got float32")
        outs = [loss.desc, TensorDesc(z.raw, [2, 3], dtype: F64)]
        o = callOp(ce, inputs: [z.desc, l.desc], outputs: &outs, compute: true)
        assertStatus(o, VALUE); XCTAssertEqual(o.message, "softmax_cross_entropy: grad_logits must not share memory with logits")
        // The loss output is checked like the others, before anything is written (this wrote the
        // loss over logits, and grad_logits before refusing a NULL loss, until the "ABI fix" commit).
        let zBefore = z.bytesSnapshot()
        g.fill(Double(-5))
        for (fn, target) in [(ce, l.desc), (scnn_binary_cross_entropy_with_logits, Owned(shape: [2, 3], dtype: F64).desc)] as [(OpFn, TensorDesc)] {
            outs = [TensorDesc(z.raw + 8, [], dtype: F64), g.desc]
            o = callOp(fn, inputs: [z.desc, target], outputs: &outs, compute: true)
            assertStatus(o, VALUE, "loss must not share memory with logits")
            outs = [TensorDesc(g.raw + 16, [], dtype: F64), g.desc]
            assertStatus(callOp(fn, inputs: [z.desc, target], outputs: &outs, compute: true), VALUE, "loss must not share memory with grad_logits")
            outs = [TensorDesc(nil, [], dtype: F64), g.desc]
            assertStatus(callOp(fn, inputs: [z.desc, target], outputs: &outs, compute: true), VALUE, "loss is NULL but has shape () (1 elements)")
            outs = [TensorDesc(loss.raw + 4, [], dtype: F64), g.desc]
            assertStatus(callOp(fn, inputs: [z.desc, target], outputs: &outs, compute: true), VALUE, "loss is not aligned")
            XCTAssertEqual(z.bytesSnapshot(), zBefore)
            XCTAssertEqual(g.values(Double.self), [Double](repeating: -5, count: 6), "grad_logits written by a rejected call")
        }
        reject(scnn_softmax, [TensorDesc(z.raw, [2, 3, 1], dtype: F64)], outputs: [g], VALUE, "softmax: logits must be 2-D")
        reject(scnn_binary_cross_entropy_with_logits, [z.desc, TensorDesc(g.raw, [6], dtype: F64)], outputs: [loss, g], VALUE,
               "binary_cross_entropy_with_logits: target must have the shape of logits (2, 3), got shape (6,)")
        reject(scnn_binary_cross_entropy_with_logits, [z.desc, Owned(labels: [0, 1]).desc], outputs: [loss, g], TYPE,
               "binary_cross_entropy_with_logits: logits has dtype float64 but target has dtype int64")
    }

    // MARK: - correlate2d

    func checkCorrelate<T: CNNScalar>(_: T.Type) throws {
        let dt = dtypeCode(T.self)
        for (ims, ks) in [([6, 7], [3, 2]), ([4, 4], [4, 4]), ([3, 5], [2, 4]), ([2, 2], [3, 5])] {
            let it: Tensor<T> = randomTensor(ims, seed: 51), kt: Tensor<T> = randomTensor(ks, seed: 52)
            for mode in 0..<3 {
                if mode == 0 && (ks[0] > ims[0] || ks[1] > ims[1]) { continue }
                let m: CorrelationMode = [.valid, .same, .full][mode]
                for flip in [false, true] {
                    let expected = flip ? try convolve2d(it, kt, mode: m) : try correlate2d(it, kt, mode: m)
                    let g = try Correlation2DGeometry(op: "t", imageShape: ims, kernelShape: ks, mode: m, flipKernel: flip)
                    let naive = try Tensor<T>(zeros: g.outputShape)
                    correlate2dForwardNaive(g, image: it.pointer, kernel: kt.pointer, out: naive.pointer)
                    let fn: OpFn = flip ? scnn_convolve2d : scnn_correlate2d
                    assertDeclares(fn, [Owned(it).desc, Owned(kt).desc], ints: [Int64(mode)], [expected.shape], [dt])
                    let out = runOp(fn, inputs: [Owned(it).desc, Owned(kt).desc], ints: [Int64(mode)], outputs: 1)[0]
                    XCTAssertEqual(out.values(T.self), expected.scalars)
                    XCTAssertLessThan(relErr(out.values(T.self), naive.scalars), tol(T.self) * 10)
                }
            }
        }
    }

    func testCorrelate() throws {
        try checkCorrelate(Float.self)
        try checkCorrelate(Double.self)
    }

    func testCorrelateRejections() {
        let im = Owned(shape: [4, 4], dtype: F32), k = Owned(shape: [5, 5], dtype: F32), out = Owned(shape: [4, 4], dtype: F32)
        reject(scnn_correlate2d, [im.desc, k.desc], ints: [0], outputs: [out], VALUE, "correlate2d: kernel", "larger")
        reject(scnn_correlate2d, [im.desc, k.desc], ints: [3], outputs: [out], VALUE,
               "correlate2d: mode must be 'valid', 'same' or 'full' (0, 1, 2), got 3")
        reject(scnn_convolve2d, [im.desc, k.desc], ints: [-1], outputs: [out], VALUE, "convolve2d: mode")
        reject(scnn_convolve2d, [TensorDesc(im.raw, [16], dtype: F32), k.desc], ints: [1], outputs: [out], VALUE, "convolve2d: image", "2-D")
        reject(scnn_correlate2d, [im.desc, TensorDesc(k.raw, [0, 2], dtype: F32)], ints: [2], outputs: [out], VALUE, "correlate2d: kernel")
        reject(scnn_correlate2d, [im.desc, TensorDesc(k.raw, [Int64.max, 1], dtype: F32)], ints: [2], outputs: [out], OVERFLOW, "correlate2d")
        reject(scnn_correlate2d, [TensorDesc(im.raw, [1 << 40, 1 << 40], dtype: F32), TensorDesc(k.raw, [1, 1], dtype: F32)], ints: [2],
               outputs: [out], OVERFLOW, "correlate2d")
        reject(scnn_correlate2d, [im.desc, TensorDesc(k.raw, [2, 2], dtype: F64)], ints: [0], outputs: [out], TYPE,
               "correlate2d: image has dtype float32 but kernel has dtype float64")
        var outs = [TensorDesc(im.raw, [3, 3], dtype: F32)]
        let o = callOp(scnn_correlate2d, inputs: [im.desc, TensorDesc(k.raw, [2, 2], dtype: F32)], ints: [0], outputs: &outs, compute: true)
        assertStatus(o, VALUE); XCTAssertEqual(o.message, "correlate2d: out must not share memory with image")
    }

    // MARK: - messages and library

    func testMessageTruncationOnCharacterBoundary() {
        var buf = [CChar](repeating: 1, count: 8)
        // "abcdé" is 6 bytes; "é" must not be cut in half.
        writeCString("abcdéf", to: &buf, capacity: 6)
        XCTAssertEqual(Array(buf.prefix(5)), [97, 98, 99, 100, 0].map { CChar($0) })
        writeCString("abcdéf", to: &buf, capacity: 7)
        XCTAssertEqual(buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }, "abcdé")
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
        XCTAssertEqual(buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }, "xyz")
    }

    func testLibrary() {
        XCTAssertEqual(String(cString: scnn_version()), swiftCNNVersion.description)
        XCTAssertEqual(scnn_version(), scnn_version())  // static storage
        let before = scnn_get_num_threads()
        XCTAssertGreaterThanOrEqual(before, 1)
        assertStatus(call { scnn_set_num_threads(0, $0, $1) }, VALUE, "set_num_threads: n must be >= 1, got 0")
        assertStatus(call { scnn_set_num_threads(-3, $0, $1) }, VALUE)
        XCTAssertEqual(scnn_get_num_threads(), before)
        assertStatus(call { scnn_set_num_threads(3, $0, $1) }, OK)
        XCTAssertEqual(scnn_get_num_threads(), 3)
        assertStatus(call { scnn_set_num_threads(before, $0, $1) }, OK)
        XCTAssertEqual(scnn_set_num_threads(0, nil, 0), VALUE)
    }
}

/// swiftcnn.h, found from this file's path.
let headerPath: String = {
    var parts = "\(#filePath)".split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)   // Tests/SwiftCNNCAPITests/FunctionalCAPITests.swift
    return (parts + ["Sources", "SwiftCNNCAPI", "include", "swiftcnn.h"]).joined(separator: "/")
}()

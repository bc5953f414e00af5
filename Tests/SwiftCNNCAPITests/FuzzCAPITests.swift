import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport
@testable import SwiftCNNCAPI

/// Every `scnn_op_fn` of swiftcnn.h with its operand and setting counts: the one table the fuzzer
/// and the count tests run over (`testOpTableCoversTheHeader` checks it against the header).
let opTable: [(name: String, fn: OpFn, arity: (inputs: Int, ints: Int, reals: Int, outputs: Int))] = [
    ("conv2d", scnn_conv2d, (3, 8, 0, 1)),
    ("conv2d_backward", scnn_conv2d_backward, (3, 8, 0, 3)),
    ("max_pool2d", scnn_max_pool2d, (1, 7, 0, 1)),
    ("avg_pool2d", scnn_avg_pool2d, (1, 7, 0, 1)),
    ("max_pool2d_backward", scnn_max_pool2d_backward, (2, 7, 0, 1)),
    ("avg_pool2d_backward", scnn_avg_pool2d_backward, (2, 7, 0, 1)),
    ("linear", scnn_linear, (3, 0, 0, 1)),
    ("linear_backward", scnn_linear_backward, (3, 0, 0, 3)),
    ("sigmoid", scnn_sigmoid, (1, 0, 0, 1)),
    ("relu", scnn_relu, (1, 0, 0, 1)),
    ("sigmoid_backward", scnn_sigmoid_backward, (2, 0, 0, 1)),
    ("relu_backward", scnn_relu_backward, (2, 0, 0, 1)),
    ("softmax", scnn_softmax, (1, 0, 0, 1)),
    ("softmax_cross_entropy", scnn_softmax_cross_entropy, (2, 0, 0, 2)),
    ("binary_cross_entropy_with_logits", scnn_binary_cross_entropy_with_logits, (2, 0, 0, 2)),
    ("correlate2d", scnn_correlate2d, (2, 1, 0, 1)),
    ("convolve2d", scnn_convolve2d, (2, 1, 0, 1)),
    ("tanh", scnn_tanh, (1, 0, 0, 1)),
    ("tanh_backward", scnn_tanh_backward, (2, 0, 0, 1)),
    ("leaky_relu", scnn_leaky_relu, (1, 0, 1, 1)),
    ("leaky_relu_backward", scnn_leaky_relu_backward, (2, 0, 1, 1)),
    ("batch_norm", scnn_batch_norm, (5, 1, 2, 1)),
    ("batch_norm_backward", scnn_batch_norm_backward, (3, 0, 1, 3)),
    ("adaptive_avg_pool2d", scnn_adaptive_avg_pool2d, (1, 2, 0, 1)),
    ("adaptive_avg_pool2d_backward", scnn_adaptive_avg_pool2d_backward, (2, 2, 0, 1)),
]

/// Random, mostly plausible and often hostile arguments for every op and layer call. Each call
/// starts from a valid template of the op and is then (about half the time) mutated: a hostile size,
/// ndim, dtype, NULL or misaligned data, hostile settings, wrong counts, NULL arrays, outputs of the
/// wrong shape or dtype or overlapping an input. Operand memory is large enough for any shape that
/// the call would read (a shape claiming more is only passed if it is invalid on its own). Nothing
/// may trap; every status must be one of the header's with a message naming the op; and a floor on
/// successful calls keeps the fuzzer from only ever exercising the first rejection.
final class FuzzCAPITests: XCTestCase {
    static let capacity = 4096   // elements of 8 bytes per buffer
    var inBufs: [UnsafeMutableRawPointer] = []
    var outBufs: [UnsafeMutableRawPointer] = []
    var labelBuf = UnsafeMutableRawPointer.allocate(byteCount: capacity * 8, alignment: 64)
    var rng = SeededRNG(2024)

    override func setUp() {
        inBufs = (0..<5).map { _ in UnsafeMutableRawPointer.allocate(byteCount: Self.capacity * 8, alignment: 64) }
        outBufs = (0..<3).map { _ in UnsafeMutableRawPointer.allocate(byteCount: Self.capacity * 8, alignment: 64) }
        for b in inBufs + outBufs {
            let d = b.bindMemory(to: Double.self, capacity: Self.capacity)
            for i in 0..<Self.capacity { d[i] = rng.uniform(-3, 3) }
        }
        let l = labelBuf.bindMemory(to: Int64.self, capacity: Self.capacity)
        for i in 0..<Self.capacity { l[i] = Int64(rng.next() % 2) }
    }

    override func tearDown() {
        for b in inBufs + outBufs + [labelBuf] { b.deallocate() }
        Owned.drain()
    }

    func pick<T>(_ xs: [T]) -> T { xs[Int(rng.next() % UInt64(xs.count))] }
    func int(_ r: ClosedRange<Int>) -> Int64 { Int64(r.lowerBound + Int(rng.next() % UInt64(r.count))) }
    func chance(_ n: UInt64) -> Bool { rng.next() % n == 0 }
    func hostile() -> Int64 { pick([-1, 0, 1, 2, 3, 1 << 31, 1 << 40, 1 << 61, 1 << 62, Int64.max, Int64.min, -7]) }

    /// The element count a descriptor claims, if it is a valid shape (nil: invalid on its own).
    func claimed(_ d: TensorDesc) -> Int64? {
        guard d.ndim >= 0, d.ndim <= 8, (0...2).contains(d.dtype) else { return nil }
        var p: Int64 = 1
        for s in d.dims {
            guard s >= 0 else { return nil }
            let (q, o) = p.multipliedReportingOverflow(by: s)
            if o { return nil }
            p = q
        }
        // checkSizes also refuses counts whose bytes (x8) overflow.
        return p.multipliedReportingOverflow(by: 8).overflow ? nil : p
    }

    func fits(_ d: TensorDesc) -> Bool {
        guard d.ndim != ABSENT else { return true }
        guard let n = claimed(d) else { return true }   // rejected before any read
        return n <= Int64(Self.capacity)
    }

    func desc(_ i: Int, _ shape: [Int64], _ dtype: Int32) -> TensorDesc {
        TensorDesc(dtype == I64 ? labelBuf : inBufs[i], shape, dtype: dtype)
    }

    /// A valid (or nearly valid) call of op `name`: inputs and ints.
    func template(_ name: String, _ dt: Int32) -> ([TensorDesc], [Int64]) {
        let n = int(0...3), c = int(1...3), h = int(1...7), w = int(1...7)
        switch name {
        case "conv2d", "conv2d_backward":
            // ints: stride pair, padding (mode, h, w), dilation pair, groups (1 or c: depthwise);
            // "same" (mode 1) needs stride 1.
            let k = int(1...3), kh = int(1...3), kw = int(1...3), same = chance(4), groups = chance(3) ? c : 1
            let ints = [same ? 1 : int(1...3), same ? 1 : int(1...3), same ? 1 : 0, int(0...1), int(0...1),
                        int(1...2), int(1...2), groups]
            let x = desc(1, [n, c, h, w], dt), wt = desc(2, [k * groups, c / groups, kh, kw], dt)
            if name == "conv2d" { return ([x, wt, chance(2) ? .absent : desc(0, [k * groups], dt)], ints) }
            var outs = [TensorDesc.garbage]
            _ = callOp(scnn_conv2d, inputs: [x, wt, .absent], ints: ints, outputs: &outs, compute: false)
            return ([desc(0, outs[0].ndim == -9 ? [n, k * groups, 1, 1] : outs[0].dims, dt), x, wt], ints)
        case "max_pool2d", "avg_pool2d", "max_pool2d_backward", "avg_pool2d_backward":
            let kh = int(1...3), kw = int(1...3)
            let ints = [kh, kw, int(0...1), int(1...3), int(1...3), int(0...Int(kh) / 2), int(0...Int(kw) / 2)]
            let x = desc(1, [n, c, h, w], dt)
            if !name.hasSuffix("backward") { return ([x], ints) }
            var outs = [TensorDesc.garbage]
            _ = callOp(name.hasPrefix("max") ? scnn_max_pool2d : scnn_avg_pool2d, inputs: [x], ints: ints, outputs: &outs, compute: false)
            return ([desc(0, outs[0].ndim == -9 ? [n, c, 1, 1] : outs[0].dims, dt), x], ints)
        case "linear":
            let i = int(1...6), o = int(1...6)
            return ([desc(0, [n, i], dt), desc(1, [o, i], dt), chance(2) ? .absent : desc(2, [o], dt)], [])
        case "linear_backward":
            let i = int(1...6), o = int(1...6)
            return ([desc(0, [n, o], dt), desc(1, [n, i], dt), desc(2, [o, i], dt)], [])
        case "sigmoid", "relu", "sigmoid_backward", "relu_backward":
            let shape = (0..<int(0...8)).map { _ in int(0...3) }
            return (name.hasSuffix("backward") ? [desc(0, shape, dt), desc(1, shape, dt)] : [desc(0, shape, dt)], [])
        case "softmax":
            return ([desc(0, [n, int(1...5)], dt)], [])
        case "softmax_cross_entropy":
            let k = int(2...5)
            return ([desc(0, [n, k], dt), chance(2) ? desc(1, [n], I64) : desc(1, [n, k], dt)], [])
        case "binary_cross_entropy_with_logits":
            let shape = (0..<int(0...4)).map { _ in int(0...3) }
            return ([desc(0, shape, dt), desc(1, shape, dt)], [])
        case "tanh", "leaky_relu", "tanh_backward", "leaky_relu_backward":
            let shape = (0..<int(0...8)).map { _ in int(0...3) }
            return (name.hasSuffix("backward") ? [desc(0, shape, dt), desc(1, shape, dt)] : [desc(0, shape, dt)], [])
        case "batch_norm":
            // x, running_mean?, running_var?, weight?, bias?; ints (training)
            let stats = chance(2)
            return ([desc(0, [n + 1, c, h], dt), stats ? desc(1, [c], dt) : .absent, stats ? desc(2, [c], dt) : .absent,
                     chance(2) ? desc(3, [c], dt) : .absent, chance(2) ? .absent : desc(4, [c], dt)],
                    [stats && chance(2) ? 0 : 1])
        case "batch_norm_backward":
            return ([desc(0, [n + 1, c, h], dt), desc(1, [n + 1, c, h], dt), chance(2) ? .absent : desc(2, [c], dt)], [])
        case "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward":
            let ints = [int(1...4), int(1...4)]
            let x = desc(1, [n, c, h, w], dt)
            if !name.hasSuffix("backward") { return ([x], ints) }
            return ([desc(0, [n, c, ints[0], ints[1]], dt), x], ints)
        default:   // correlate2d, convolve2d
            return ([desc(0, [h, w], dt), desc(1, [int(1...4), int(1...4)], dt)], [int(0...2)])
        }
    }

    /// The reals of op `name`: leaky_relu's slope, batch_norm's (momentum, eps), its backward's eps;
    /// hostile values included (they must be rejected or handled, never trap).
    func templateReals(_ name: String) -> [Double] {
        switch name {
        case "leaky_relu", "leaky_relu_backward": return [pick([0.01, -2, .nan, .infinity])]
        case "batch_norm": return [pick([0.1, 1, -1, .nan]), pick([1e-5, 0, -1])]
        case "batch_norm_backward": return [pick([1e-5, 0, .nan])]
        default: return []
        }
    }

    /// One hostile change to an input descriptor.
    func mutate(_ d: inout TensorDesc, index i: Int) {
        switch rng.next() % 9 {
        case 0:
            var dims = d.dims
            if !dims.isEmpty { dims[Int(rng.next() % UInt64(dims.count))] = hostile() }
            d = TensorDesc(d.data, dims, dtype: d.dtype)
        case 1: d.ndim = pick([-1, -2, 0, 1, 2, 3, 4, 8, 9, 1000, Int32.min])
        case 2: d.dtype = pick([0, 1, 2, 3, -1, 77])
        case 3: d.data = nil
        case 4: d.data = d.data.map { $0 + pick([1, 2, 4]) }
        case 5: d = .absent
        case 6: d = TensorDesc(d.data, d.dims + [1], dtype: d.dtype)
        case 7: d = TensorDesc(d.data, Array(d.dims.dropLast()), dtype: d.dtype)
        default: d = TensorDesc(d.data, d.dims.map { $0 == 0 ? 1 : $0 }, dtype: d.dtype)
        }
    }

    var statuses: [Int32: Int] = [:]
    var calls = 0, computed = 0

    func record(_ o: Outcome, _ name: String, file: StaticString = #filePath, line: UInt = #line) {
        calls += 1
        XCTAssertTrue((0...5).contains(o.status), "\(name): bad status \(o.status)", file: file, line: line)
        if o.status != OK {
            XCTAssertFalse(o.message.isEmpty, "\(name): a failure must write a message", file: file, line: line)
        }
        statuses[o.status, default: 0] += 1
    }

    func testFuzzEveryOp() {
        var perOp: [String: (calls: Int, ok: Int, computed: Int)] = [:]
        for round in 0..<6000 {
            let entry = opTable[round % opTable.count]
            let a = entry.arity
            let dt: Int32 = chance(8) ? pick([2, 3, -1]) : pick([F32, F64])
            var (inputs, ints) = template(entry.name, dt)
            var reals = templateReals(entry.name)
            var nInputs: Int32? = nil, nInts: Int32? = nil, nOutputs: Int32? = nil
            var nullInputs = false, nullInts = false
            if chance(2) {
                switch rng.next() % 6 {
                case 0, 1, 2:
                    let i = Int(rng.next() % UInt64(inputs.count))
                    mutate(&inputs[i], index: i)
                case 3:
                    if !ints.isEmpty { ints[Int(rng.next() % UInt64(ints.count))] = hostile() }
                case 4:
                    switch rng.next() % 6 {
                    case 0: nInputs = Int32(a.inputs) + pick([-1, 1, -100])
                    case 1: nInts = Int32(a.ints) + pick([-1, 1])
                    case 2: reals = reals + [1]
                    case 3: nOutputs = Int32(a.outputs) + pick([-1, 1, Int32.min])
                    case 4: nullInputs = true
                    default: nullInts = a.ints > 0
                    }
                default:
                    for i in inputs.indices where chance(3) { mutate(&inputs[i], index: i) }
                }
            }
            // Wrong-count calls never read the arrays; other calls read exactly the arity, so never
            // claim more than the arrays hold.
            if let n = nInputs, n > Int32(inputs.count) { nInputs = Int32(inputs.count) + 1 }
            guard inputs.allSatisfy(fits) else { continue }
            var outs = [TensorDesc](repeating: .garbage, count: a.outputs)
            let before = outs.map(\.bytes)
            let q = callOp(entry.fn, inputs: nullInputs ? nil : inputs, ints: nullInts ? nil : ints, reals: reals, outputs: &outs,
                           compute: false, nInputs: nInputs ?? (nullInputs ? Int32(a.inputs) : nil),
                           nInts: nInts ?? (nullInts ? Int32(a.ints) : nil), nOutputs: nOutputs)
            record(q, entry.name)
            perOp[entry.name, default: (0, 0, 0)].calls += 1
            if q.status != OK {
                XCTAssertTrue(q.message.hasPrefix(entry.name + ": "), "message must name the op: \(q.message)")
                XCTAssertEqual(outs.map(\.bytes), before, "\(entry.name): a rejected query wrote an output descriptor")
                continue
            }
            perOp[entry.name, default: (0, 0, 0)].ok += 1
            // Compute into the declared outputs (each in its own buffer), sometimes mutated.
            guard outs.allSatisfy({ (claimed($0) ?? Int64.max) <= Int64(Self.capacity) }) else { continue }
            for i in outs.indices { outs[i].data = outBufs[i] }
            var expectFailure = false
            if chance(5) {
                let i = Int(rng.next() % UInt64(outs.count))
                expectFailure = true
                switch rng.next() % 5 {
                case 0: outs[i] = TensorDesc(outs[i].data, outs[i].dims + [1], dtype: outs[i].dtype)
                case 1: outs[i].dtype = outs[i].dtype == F32 ? F64 : F32
                case 2: outs[i].data = inputs.first { $0.ndim > 0 && claimed($0).map { $0 > 0 } == true }?.data
                        expectFailure = outs[i].data != nil && (claimed(outs[i]) ?? 0) > 0
                        if !expectFailure { outs[i].data = outBufs[i] }
                        // An elementwise output may BE its first input.
                        if ["sigmoid", "relu", "sigmoid_backward", "relu_backward", "tanh", "leaky_relu", "tanh_backward",
                             "leaky_relu_backward"].contains(entry.name)
                            && outs[i].data == inputs[0].data { expectFailure = false }
                case 3: outs[i].data = (claimed(outs[i]) ?? 0) > 0 ? nil : outs[i].data
                        expectFailure = outs[i].data == nil
                default: outs[i].data = outs[i].data! + 2
                         expectFailure = (claimed(outs[i]) ?? 0) > 0
                }
            }
            let c = callOp(entry.fn, inputs: inputs, ints: ints, reals: reals, outputs: &outs, compute: true,
                           nInputs: nInputs, nInts: nInts, nOutputs: nOutputs)
            record(c, entry.name)
            if expectFailure {
                XCTAssertEqual(c.status, VALUE, "\(entry.name): a bad output must be refused: \(c.message)")
            }
            if c.status == OK {
                computed += 1
                perOp[entry.name, default: (0, 0, 0)].computed += 1
            } else {
                XCTAssertTrue(c.message.hasPrefix(entry.name + ": "), "message must name the op: \(c.message)")
            }
        }
        print("fuzz ops statuses:", statuses, "calls", calls, "computed", computed)
        // The floor: a fuzzer that only hits the first rejection fails here.
        XCTAssertGreaterThan(Double(statuses[OK, default: 0]) / Double(max(calls, 1)), 0.3, "too few successful calls")
        for entry in opTable {
            let s = perOp[entry.name, default: (0, 0, 0)]
            XCTAssertGreaterThan(s.calls, 100, entry.name)
            XCTAssertGreaterThan(Double(s.ok) / Double(max(s.calls, 1)), 0.15, "\(entry.name): too few successful queries \(s)")
            XCTAssertGreaterThan(Double(s.computed) / Double(max(s.calls, 1)), 0.1, "\(entry.name): too few computations \(s)")
        }
        // And a fair share of rejections of each kind.
        XCTAssertGreaterThan(statuses[VALUE, default: 0], 300)
        XCTAssertGreaterThan(statuses[TYPE, default: 0], 100)
        XCTAssertGreaterThan(statuses[OVERFLOW, default: 0], 20)
    }

    func testFuzzLayers() {
        var forwards = 0, backwards = 0, creates = 0, attempts = 0
        for _ in 0..<500 {
            let dt: Int32 = chance(10) ? pick([2, -1, 5]) : pick([F32, F64])
            let kinds = ["conv2d", "linear", "max_pool2d", "avg_pool2d", "sigmoid", "relu", "flatten", "sequential", "bogus"]
            let kind = pick(kinds)
            var ints: [Int64]
            switch kind {
            case "conv2d": ints = [int(1...3), int(1...3), int(1...3), int(1...3), int(1...2), int(1...2), int(0...1), int(0...1),
                                   int(1...2), int(1...2), int(0...1)]
            case "linear": ints = [int(1...8), int(1...8), int(0...1)]
            case "max_pool2d", "avg_pool2d": ints = [int(2...3), int(2...3), int(0...1), int(1...3), int(1...3), int(0...1), int(0...1)]
            default: ints = []
            }
            if chance(3) && !ints.isEmpty { ints[Int(rng.next() % UInt64(ints.count))] = hostile() }
            if chance(20) { ints.append(1) }
            // Keep accepted weights small enough to allocate.
            if kind == "conv2d", let n = claimed(TensorDesc(nil, [ints[0], ints[1], ints[2], ints[3]], dtype: F64)), n > 1 << 16 { continue }
            if kind == "linear", let n = claimed(TensorDesc(nil, [ints[0], ints[1]], dtype: F64)), n > 1 << 16 { continue }
            var children: [LayerRef] = []
            if kind == "sequential" {
                children = [layer(pick(["relu", "sigmoid", "flatten"]), F64), layer("linear", F64, [int(1...4), int(1...4), 1])]
            }
            var out: OpaquePointer? = nil
            attempts += 1
            let o = createLayer(kind, dt, ints: ints, children: children.map { $0.raw }, seed: rng.next(), out: &out)
            record(o, kind)
            guard o.status == OK, let raw = out else {
                XCTAssertNil(out, "a rejected create writes no handle")
                continue
            }
            creates += 1
            let base = LayerRef(raw)
            let model = chance(2) ? layer("sequential", dt, children: [base]) : base
            for _ in 0..<6 {
                let rank = chance(6) ? Int(rng.next() % 10) : pick([2, 4])
                var x = TensorDesc(inBufs[0], (0..<rank).map { _ in int(0...8) }, dtype: chance(10) ? pick([2, 1 - dt, 9]) : dt)
                if chance(8) { x.data = chance(2) ? nil : inBufs[0] + 4 }
                if chance(8) { var dims = x.dims; if !dims.isEmpty { dims[0] = hostile() }; x = TensorDesc(x.data, dims, dtype: x.dtype) }
                guard fits(x) else { continue }
                var y = TensorDesc.garbage
                let q = layerForward(model, &x, &y, compute: false)
                record(q, "forward query")
                if chance(4) {
                    // Backward with whatever state the layer has (before forward: a runtime error).
                    var g = TensorDesc(inBufs[1], y.ndim >= 0 && y.ndim <= 8 ? y.dims : [2], dtype: dt), gx = TensorDesc.garbage
                    if fits(g) { record(layerBackward(model, &g, &gx, compute: false), "backward query") }
                }
                guard q.status == OK, (claimed(y) ?? Int64.max) <= Int64(Self.capacity) else { continue }
                y.data = outBufs[0]
                if chance(6) { y = TensorDesc(y.data, y.dims.map { $0 + 1 }, dtype: y.dtype) }
                let f = layerForward(model, &x, &y, compute: true)
                record(f, "forward")
                guard f.status == OK else { continue }
                forwards += 1
                var g = TensorDesc(inBufs[1], y.dims, dtype: dt), gx = TensorDesc.garbage
                if chance(6) { g = TensorDesc(g.data, g.dims + [1], dtype: dt) }
                guard fits(g) else { continue }
                let bq = layerBackward(model, &g, &gx, compute: false)
                record(bq, "backward query")
                guard bq.status == OK, (claimed(gx) ?? Int64.max) <= Int64(Self.capacity) else { continue }
                gx.data = outBufs[1]
                if chance(6) { gx = TensorDesc(gx.data, gx.dims.reversed() + [], dtype: gx.dtype) }
                let b = layerBackward(model, &g, &gx, compute: true)
                record(b, "backward")
                if b.status == OK { backwards += 1 }
                if chance(3) {
                    var l = TensorDesc(labelBuf, [pick([x.dims.first ?? 0, 0, 1, 3])], dtype: pick([I64, I64, F64]))
                    var loss = 0.0
                    var correct: Int64 = 0
                    record(call { scnn_train_step_cross_entropy(model.raw, nil, &x, &l, &loss, &correct, $0, $1) }, "train step")
                }
                record(call { scnn_layer_zero_grad(model.raw, $0, $1) }, "zero_grad")
            }
            let np = scnn_layer_parameter_count(model.raw)
            for i in [-1, 0, 1, 2, np, Int64.max] {
                var d = TensorDesc.garbage, g = TensorDesc.garbage
                var name = [CChar](repeating: 0, count: 4)
                record(call { scnn_layer_parameter(model.raw, i, &d, &g, &name, 4, $0, $1) }, "parameter")
            }
        }
        print("fuzz layer statuses:", statuses, "creates", creates, "/", attempts, "forwards", forwards, "backwards", backwards)
        XCTAssertGreaterThan(Double(creates) / Double(max(attempts, 1)), 0.4, "too few successful creates")
        XCTAssertGreaterThan(forwards, 300, "too few successful forwards")
        XCTAssertGreaterThan(backwards, 150, "too few successful backwards")
    }
}

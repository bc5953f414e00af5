import XCTest
@_spi(Engine) @testable import SwiftCNN
@testable import SwiftCNNCAPI

// Helpers for the descriptor ABI of swiftcnn.h: `scnn_tensor` built from Swift arrays, owned operand
// memory, one `callOp` wrapper for every `scnn_op_fn`, and layer / optimizer handle wrappers.

let I64: Int32 = 2
let ABSENT: Int32 = -1

/// `scnn_tensor` as the header lays it out: data at 0, shape int64[8] at 8, ndim int32 at 72,
/// dtype int32 at 76, 80 bytes (`testDescriptorLayout` checks these offsets against the header's).
struct TensorDesc {
    var data: UnsafeMutableRawPointer?
    var shape: (Int64, Int64, Int64, Int64, Int64, Int64, Int64, Int64) = (0, 0, 0, 0, 0, 0, 0, 0)
    var ndim: Int32
    var dtype: Int32

    /// A descriptor of `shape` (at most 8 sizes are stored; `ndim` may claim anything).
    init(_ data: UnsafeMutableRawPointer?, _ shape: [Int64], dtype: Int32, ndim: Int32? = nil) {
        self.data = data
        self.ndim = ndim ?? Int32(shape.count)
        self.dtype = dtype
        withUnsafeMutableBytes(of: &self.shape) { raw in
            for (i, d) in shape.prefix(8).enumerated() { raw.storeBytes(of: d, toByteOffset: 8 * i, as: Int64.self) }
        }
    }

    /// An absent optional operand (a bias of None).
    static var absent: TensorDesc { TensorDesc(nil, [], dtype: F32, ndim: ABSENT) }

    /// An output descriptor full of garbage, to see what the callee writes.
    static var garbage: TensorDesc { TensorDesc(nil, [Int64](repeating: -77, count: 8), dtype: -9, ndim: -9) }

    /// The sizes 0..<ndim (clamped to 0...8).
    var dims: [Int64] {
        withUnsafeBytes(of: shape) { raw in
            (0..<max(0, min(Int(ndim), 8))).map { raw.load(fromByteOffset: 8 * $0, as: Int64.self) }
        }
    }

    /// The 80 bytes, for "unchanged" checks.
    var bytes: [UInt8] { withUnsafeBytes(of: self) { Array($0) } }

    /// All eight stored sizes, for "nothing else was written" checks.
    var allDims: [Int64] { withUnsafeBytes(of: shape) { raw in (0..<8).map { raw.load(fromByteOffset: 8 * $0, as: Int64.self) } } }
}

/// Element size of a dtype code (8 for anything but float32).
func elementSize(_ dtype: Int32) -> Int { dtype == F32 ? 4 : 8 }

func dtypeCode<T: CNNScalar>(_: T.Type) -> Int32 { T.self == Float.self ? F32 : F64 }

/// Memory for one operand, 64-byte aligned, owned by this object (freed at deinit).
///
/// A descriptor holds a raw pointer and keeps nothing alive, and Swift may release an object right
/// after its last use (`Owned(t).desc` frees at once, and -O shortens lifetimes further), so every
/// Owned is also kept in a pool until the test's tearDown calls `Owned.drain()`.
/// `@unchecked Sendable`: the concurrency tests share read-only operands between threads (the pool
/// is under `poolLock`).
final class Owned: @unchecked Sendable {
    nonisolated(unsafe) private static var pool: [Owned] = []
    private static let poolLock = NSLock()
    static func drain() {
        poolLock.lock(); let old = pool; pool = []; poolLock.unlock()
        _ = old
    }

    let raw: UnsafeMutableRawPointer
    let bytes: Int
    var desc: TensorDesc

    init(shape: [Int], dtype: Int32) {
        let count = shape.reduce(1, *)
        bytes = count * elementSize(dtype)
        raw = UnsafeMutableRawPointer.allocate(byteCount: max(bytes, 64), alignment: 64)
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: max(bytes, 64))
        desc = TensorDesc(raw, shape.map(Int64.init), dtype: dtype)
        Owned.poolLock.lock(); Owned.pool.append(self); Owned.poolLock.unlock()
    }

    convenience init<T: CNNScalar>(_ values: [T], shape: [Int]) {
        precondition(values.count == shape.reduce(1, *))
        self.init(shape: shape, dtype: dtypeCode(T.self))
        values.withUnsafeBytes { raw.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }

    convenience init<T: CNNScalar>(_ t: Tensor<T>) { self.init(t.scalars, shape: t.shape) }

    /// int64 class labels (N,).
    convenience init(labels: [Int64]) {
        self.init(shape: [labels.count], dtype: I64)
        labels.withUnsafeBytes { raw.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }

    /// An output allocated for the shape and dtype a query declared.
    convenience init(declared d: TensorDesc) {
        self.init(shape: d.dims.map(Int.init), dtype: d.dtype)
    }

    deinit { raw.deallocate() }

    var shape: [Int] { desc.dims.map(Int.init) }
    var count: Int { shape.reduce(1, *) }
    func values<T>(_: T.Type) -> [T] {
        Array(UnsafeBufferPointer(start: raw.assumingMemoryBound(to: T.self), count: count))
    }
    func tensor<T: CNNScalar>(_: T.Type) -> Tensor<T> { try! Tensor(shape: shape, scalars: values(T.self)) }
    /// The 0-d float64 loss.
    var scalar: Double { raw.load(as: Double.self) }
    func fill<T>(_ value: T, as _: T.Type = T.self) {
        raw.bindMemory(to: T.self, capacity: count).update(repeating: value, count: count)
    }
    func bytesSnapshot() -> [UInt8] { Array(UnsafeRawBufferPointer(start: raw, count: bytes)) }
}

/// The Swift type of every `scnn_op_fn` export: it takes one `scnn_op_call` (@Sendable: the exports
/// are global functions, and the fuzzer's global table of them must be Sendable in Swift 6).
typealias OpFn = @Sendable (UnsafeRawPointer?) -> Int32

/// `scnn_op_call` (swiftcnn.h), laid out as the header's `_Static_assert`s pin it (72 bytes).
struct OpCallStruct {
    var inputs: UnsafeRawPointer?
    var ints: UnsafePointer<Int64>?
    var reals: UnsafePointer<Double>?
    var outputs: UnsafeMutableRawPointer?
    var msg: UnsafeMutablePointer<CChar>?
    var msgCap: Int64
    var nInputs: Int32, nInts: Int32, nReals: Int32, nOutputs: Int32
    var compute: Int32
    var reserved: Int32 = 0
}

/// Calls `fn` with the given arrays; a nil array is passed as NULL, and the counts default to the
/// arrays' lengths (override them to claim other counts).
func callOp(_ fn: OpFn, inputs: [TensorDesc]?, ints: [Int64]? = [], reals: [Double]? = [],
            outputs: inout [TensorDesc], compute: Bool, nInputs: Int32? = nil, nInts: Int32? = nil,
            nReals: Int32? = nil, nOutputs: Int32? = nil, cap: Int = 1024) -> Outcome {
    let ni = nInputs ?? Int32(inputs?.count ?? 0), nn = nInts ?? Int32(ints?.count ?? 0)
    let nr = nReals ?? Int32(reals?.count ?? 0)
    let no = nOutputs ?? Int32(outputs.count)
    let noOutputs = outputs.isEmpty
    // A non-NULL pointer even for empty arrays (withUnsafeBufferPointer may give NULL for those).
    let inputsCopy = (inputs ?? []) + [TensorDesc.absent]
    let intsCopy = (ints ?? []) + [0], realsCopy = (reals ?? []) + [0]
    return inputsCopy.withUnsafeBytes { ib in
        intsCopy.withUnsafeBufferPointer { nb in
            realsCopy.withUnsafeBufferPointer { rb in
                outputs.withUnsafeMutableBytes { ob in
                    // No outputs: NULL (pass [] with nOutputs to test a NULL outputs array).
                    call(cap: cap) { msg, msgCap in
                        var c = OpCallStruct(
                            inputs: inputs == nil ? nil : ib.baseAddress, ints: ints == nil ? nil : nb.baseAddress,
                            reals: reals == nil ? nil : rb.baseAddress, outputs: noOutputs ? nil : ob.baseAddress,
                            msg: msg, msgCap: msgCap, nInputs: ni, nInts: nn, nReals: nr, nOutputs: no,
                            compute: compute ? 1 : 0)
                        return withUnsafePointer(to: &c) { fn(UnsafeRawPointer($0)) }
                    }
                }
            }
        }
    }
}

/// The shape query: `n` garbage outputs, returned as the op declared them.
func query(_ fn: OpFn, inputs: [TensorDesc], ints: [Int64] = [], reals: [Double] = [], outputs n: Int,
           file: StaticString = #filePath, line: UInt = #line) -> (Outcome, [TensorDesc]) {
    var outs = [TensorDesc](repeating: .garbage, count: n)
    let o = callOp(fn, inputs: inputs, ints: ints, reals: reals, outputs: &outs, compute: false)
    return (o, outs)
}

/// Query, allocate what was declared, compute; the results (nil and a failed assertion on failure).
func runOp(_ fn: OpFn, inputs: [TensorDesc], ints: [Int64] = [], reals: [Double] = [], outputs n: Int,
           file: StaticString = #filePath, line: UInt = #line) -> [Owned] {
    let (q, declared) = query(fn, inputs: inputs, ints: ints, reals: reals, outputs: n)
    XCTAssertEqual(q.status, OK, q.message, file: file, line: line)
    guard q.status == OK else { return [] }
    let owned = declared.map { Owned(declared: $0) }
    var outs = owned.map(\.desc)
    let o = callOp(fn, inputs: inputs, ints: ints, reals: reals, outputs: &outs, compute: true)
    XCTAssertEqual(o.status, OK, o.message, file: file, line: line)
    return owned
}

// MARK: - layers

/// `scnn_layer_create` with a Swift string kind.
func createLayer(_ kind: String?, _ dtype: Int32, ints: [Int64]? = [], reals: [Double]? = [], children: [OpaquePointer?]? = [],
                 nInts: Int32? = nil, nChildren: Int64? = nil, seed: UInt64 = 1, out: UnsafeMutablePointer<OpaquePointer?>?) -> Outcome {
    let n = nInts ?? Int32(ints?.count ?? 0), nr = Int32(reals?.count ?? 0), nc = nChildren ?? Int64(children?.count ?? 0)
    let intsCopy = (ints ?? []) + [0], realsCopy = (reals ?? []) + [0], childrenCopy = (children ?? []) + [nil]
    return intsCopy.withUnsafeBufferPointer { ib in realsCopy.withUnsafeBufferPointer { rb in
        childrenCopy.withUnsafeBufferPointer { cb in
            call { m, c in
                if let kind {
                    return kind.withCString { scnn_layer_create($0, dtype, ints == nil ? nil : ib.baseAddress, n,
                                                                reals == nil ? nil : rb.baseAddress, nr,
                                                                children == nil ? nil : cb.baseAddress, nc, seed, out, m, c) }
                }
                return scnn_layer_create(nil, dtype, ints == nil ? nil : ib.baseAddress, n, reals == nil ? nil : rb.baseAddress, nr,
                                         children == nil ? nil : cb.baseAddress, nc, seed, out, m, c)
            }
        }
    }}
}

func layer(_ kind: String, _ dtype: Int32, _ ints: [Int64] = [], children: [LayerRef] = [], seed: UInt64 = 1,
           file: StaticString = #filePath, line: UInt = #line) -> LayerRef {
    var out: OpaquePointer? = nil
    let o = createLayer(kind, dtype, ints: ints, children: children.map { $0.raw }, seed: seed, out: &out)
    XCTAssertEqual(o.status, OK, o.message, file: file, line: line)
    return LayerRef(out!)
}

func conv(_ dtype: Int32, _ cin: Int, _ cout: Int, k: Int, stride: Int = 1, pad: Int = 0, dil: Int = 1,
          bias: Bool = true, seed: UInt64 = 1) -> LayerRef {
    let i = [cin, cout, k, k, stride, stride, pad, pad, dil, dil, bias ? 1 : 0].map(Int64.init)
    return layer("conv2d", dtype, i, seed: seed)
}

func linearLayer(_ dtype: Int32, _ i: Int, _ o: Int, bias: Bool = true, seed: UInt64 = 2) -> LayerRef {
    layer("linear", dtype, [Int64(i), Int64(o), bias ? 1 : 0], seed: seed)
}

func pool(_ dtype: Int32, max isMax: Bool = true, k: Int = 2, stride: Int? = nil, pad: Int = 0) -> LayerRef {
    let s: [Int64] = stride.map { [1, Int64($0), Int64($0)] } ?? [0, 0, 0]
    return layer(isMax ? "max_pool2d" : "avg_pool2d", dtype, [Int64(k), Int64(k)] + s + [Int64(pad), Int64(pad)])
}

func sequential(_ dtype: Int32, _ layers: [LayerRef]) -> LayerRef { layer("sequential", dtype, children: layers) }

/// The lecture's network (Sigmoid, or ReLU with `relu`).
func lectureNetwork(_ dtype: Int32, relu: Bool = false, seed: UInt64 = 7) -> LayerRef {
    let act = relu ? "relu" : "sigmoid"
    return sequential(dtype, [
        conv(dtype, 1, 6, k: 5, pad: 2, seed: seed), layer(act, dtype), pool(dtype),
        conv(dtype, 6, 16, k: 5, seed: seed + 1), layer(act, dtype), pool(dtype),
        layer("flatten", dtype),
        linearLayer(dtype, 400, 120, seed: seed + 2), layer(act, dtype),
        linearLayer(dtype, 120, 84, seed: seed + 3), layer(act, dtype),
        linearLayer(dtype, 84, 10, seed: seed + 4),
    ])
}

func layerForward(_ l: LayerRef, _ x: inout TensorDesc, _ y: inout TensorDesc, compute: Bool) -> Outcome {
    call { scnn_layer_forward(l.raw, &x, &y, compute, $0, $1) }
}

func layerBackward(_ l: LayerRef, _ g: inout TensorDesc, _ gx: inout TensorDesc, compute: Bool) -> Outcome {
    call { scnn_layer_backward(l.raw, &g, &gx, compute, $0, $1) }
}

/// Forward through a handle (query, allocate, compute). `x` must stay alive until backward.
func forward(_ l: LayerRef, _ x: Owned, file: StaticString = #filePath, line: UInt = #line) -> Owned {
    var xd = x.desc, yd = TensorDesc.garbage
    var o = layerForward(l, &xd, &yd, compute: false)
    XCTAssertEqual(o.status, OK, o.message, file: file, line: line)
    let y = Owned(declared: yd)
    o = layerForward(l, &xd, &y.desc, compute: true)
    XCTAssertEqual(o.status, OK, o.message, file: file, line: line)
    return y
}

/// Backward through a handle, returning grad_x.
func backward(_ l: LayerRef, _ g: Owned, file: StaticString = #filePath, line: UInt = #line) -> Owned {
    var gd = g.desc, gxd = TensorDesc.garbage
    var o = layerBackward(l, &gd, &gxd, compute: false)
    XCTAssertEqual(o.status, OK, o.message, file: file, line: line)
    let gx = Owned(declared: gxd)
    o = layerBackward(l, &gd, &gx.desc, compute: true)
    XCTAssertEqual(o.status, OK, o.message, file: file, line: line)
    return gx
}

/// One parameter as the ABI describes it: descriptors of memory the layer owns.
struct ParamView {
    let name: String
    let data: TensorDesc
    let grad: TensorDesc
    var shape: [Int] { data.dims.map(Int.init) }
    var count: Int { shape.reduce(1, *) }
    func values<T: CNNScalar>(_: T.Type) -> [T] {
        Array(UnsafeBufferPointer(start: data.data!.assumingMemoryBound(to: T.self), count: count))
    }
    func grads<T: CNNScalar>(_: T.Type) -> [T] {
        Array(UnsafeBufferPointer(start: grad.data!.assumingMemoryBound(to: T.self), count: count))
    }
}

func parameters(_ l: LayerRef, file: StaticString = #filePath, line: UInt = #line) -> [ParamView] {
    let n = scnn_layer_parameter_count(l.raw)
    var result: [ParamView] = []
    for i in 0..<max(n, 0) {
        var d = TensorDesc.garbage, g = TensorDesc.garbage
        var name = [CChar](repeating: 0, count: 64)
        let o = call { scnn_layer_parameter(l.raw, i, &d, &g, &name, 64, $0, $1) }
        XCTAssertEqual(o.status, OK, o.message, file: file, line: line)
        let bytes = name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        result.append(ParamView(name: String(decoding: bytes, as: UTF8.self), data: d, grad: g))
    }
    return result
}

/// Every parameter's data and grad values (for "unchanged" checks).
func snapshot<T: CNNScalar>(_ l: LayerRef, _: T.Type) -> [[T]] {
    parameters(l).flatMap { [$0.values(T.self), $0.grads(T.self)] }
}

// MARK: - optimizers

/// A retained optimizer handle released at deinit. Sendable: the handle is immutable and the C ABI
/// guards the optimizer behind it (a concurrent call gets SCNN_RUNTIME_ERROR).
final class OptRef: @unchecked Sendable {
    let raw: OpaquePointer
    init(_ raw: OpaquePointer) { self.raw = raw }
    deinit { scnn_optimizer_release(raw) }
}

/// `scnn_optimizer_create` with Swift arrays (nil = NULL).
func createOptimizer(_ kind: String?, data: [TensorDesc]?, grads: [TensorDesc]?, n: Int64? = nil, reals: [Double]?,
                     nReals: Int32? = nil, out: UnsafeMutablePointer<OpaquePointer?>?) -> Outcome {
    let count = n ?? Int64(data?.count ?? 0), nr = nReals ?? Int32(reals?.count ?? 0)
    let dc = (data ?? []) + [.absent], gc = (grads ?? []) + [.absent], rc = (reals ?? []) + [0]
    return dc.withUnsafeBytes { db in gc.withUnsafeBytes { gb in rc.withUnsafeBufferPointer { rb in
        call { m, c in
            let k = kind ?? ""
            return k.withCString { kp in
                scnn_optimizer_create(kind == nil ? nil : kp, data == nil ? nil : db.baseAddress, grads == nil ? nil : gb.baseAddress,
                                      count, reals == nil ? nil : rb.baseAddress, nr, out, m, c)
            }
        }
    }}}
}

func sgdReals(lr: Double, momentum: Double = 0, dampening: Double = 0, weightDecay: Double = 0, nesterov: Bool = false) -> [Double] {
    [lr, momentum, dampening, weightDecay, nesterov ? 1 : 0]
}

func adamReals(lr: Double, beta1: Double = 0.9, beta2: Double = 0.999, eps: Double = 1e-8, weightDecay: Double = 0) -> [Double] {
    [lr, beta1, beta2, eps, weightDecay]
}

func makeOptimizer(_ kind: String, data: [TensorDesc], grads: [TensorDesc], reals: [Double],
                   file: StaticString = #filePath, line: UInt = #line) -> OptRef {
    var out: OpaquePointer? = nil
    let o = createOptimizer(kind, data: data, grads: grads, reals: reals, out: &out)
    XCTAssertEqual(o.status, OK, o.message, file: file, line: line)
    return OptRef(out!)
}

/// An optimizer over a layer's parameters (the descriptors the layer handed out).
func optimizer(for model: LayerRef, lr: Double, adam: Bool = false) -> OptRef {
    let ps = parameters(model)
    return makeOptimizer(adam ? "adam" : "sgd", data: ps.map(\.data), grads: ps.map(\.grad),
                         reals: adam ? adamReals(lr: lr) : sgdReals(lr: lr))
}

/// The fused train step; loss and correct start at -1 so "untouched" is visible.
func trainStep(_ model: LayerRef, _ opt: OptRef?, _ x: TensorDesc, _ labels: TensorDesc) -> (Outcome, Double, Int64) {
    var loss = -1.0
    var correct: Int64 = -1
    var xd = x, ld = labels
    let o = call { scnn_train_step_cross_entropy(model.raw, opt?.raw, &xd, &ld, &loss, &correct, $0, $1) }
    return (o, loss, correct)
}

/// conv2d's ints from the six of a plain convolution (stride pair, padding pair, dilation pair):
/// the ABI's eight, (stride pair, padding (mode 0 = explicit, h, w), dilation pair, groups 1).
func convInts(_ six: [Int64]) -> [Int64] {
    precondition(six.count == 6, "convInts takes (sh, sw, ph, pw, dh, dw)")
    return [six[0], six[1], 0, six[2], six[3], six[4], six[5], 1]
}

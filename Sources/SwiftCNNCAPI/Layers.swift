// Layer handles: `scnn_layer *` is a retained `LayerHandle`, a Swift object holding one core layer
// (`any Layer<Float>` or `any Layer<Double>`).
//
// Reference counting is Unmanaged's: a create function returns passRetained(handle), retain/release
// add and drop references. A Sequential holds its children's layer objects (not the handles), so
// parameters are shared with the children's handles and the children outlive their handles as long
// as the Sequential lives.
//
// Threads: each core layer refuses a second concurrent caller (`.runtime`). A handle also has its own
// non-blocking guard so that multi-step operations through one handle (reading the last input's
// shape, then backward; the fused train step) are not interleaved with another thread's calls on the
// same handle. The guard is the handle's only mutable state.

@_spi(Engine) import SwiftCNN

/// The core layer behind a `scnn_layer *`.
final class LayerHandle {
    enum Model {
        case float32(any Layer<Float>)
        case float64(any Layer<Double>)
    }

    let model: Model
    /// One caller at a time through this handle ("Conv2d is in use by another thread").
    let access: ExclusiveAccess

    init(_ model: Model) {
        self.model = model
        let object: AnyObject
        switch model {
        case .float32(let l): object = l
        case .float64(let l): object = l
        }
        // "Conv2d<Float>" -> "Conv2d", the name the core's own messages use.
        let full = String(describing: type(of: object))
        self.access = ExclusiveAccess(name: full.split(separator: "<").first.map(String.init) ?? full)
    }

    var dtype: DType {
        switch model {
        case .float32: return .float32
        case .float64: return .float64
        }
    }

    var name: String { access.name }

    /// Runs `body` with this handle's guard held.
    func exclusive<R>(_ body: () throws -> R) throws -> R {
        try access.run(body)
    }
}

/// The `LayerHandle` of a non-NULL `scnn_layer *` (a value error naming the function otherwise).
func layerHandle(_ p: OpaquePointer?, op: String, name: String = "layer") throws -> LayerHandle {
    guard let p else { throw SwiftCNNError.value("\(op): \(name) is NULL") }
    return Unmanaged<LayerHandle>.fromOpaque(UnsafeRawPointer(p)).takeUnretainedValue()
}

/// A new `scnn_layer *` holding one reference, written into `out`.
func returnLayer(_ model: LayerHandle.Model, to out: UnsafeMutablePointer<OpaquePointer?>) {
    out.pointee = OpaquePointer(Unmanaged.passRetained(LayerHandle(model)).toOpaque())
}

/// Checks `layer_out` before anything is built.
func requireOut<P>(_ out: UnsafeMutablePointer<P>?, name: String, op: String) throws -> UnsafeMutablePointer<P> {
    guard let out else { throw SwiftCNNError.value("\(op): \(name) is NULL") }
    return out
}

// MARK: - create

/// The settings of one `scnn_layer_create` call.
struct LayerSettings {
    let kind: String
    let ints: UnsafePointer<Int64>?
    let intCount: Int
    let reals: UnsafePointer<Double>?
    let realCount: Int
    let children: [LayerHandle]
    let seed: UInt64

    /// Value error unless exactly `ints` ints, `reals` reals and no children (or any, with
    /// `children: true`) were given.
    func expect(ints: Int = 0, reals: Int = 0, children allowed: Bool = false, op: String) throws {
        guard intCount == ints, realCount == reals else {
            throw SwiftCNNError.value("\(op): takes \(ints) ints and \(reals) reals, got \(intCount) and \(realCount)")
        }
        guard allowed || children.isEmpty else {
            throw SwiftCNNError.value("\(op): takes no child layers, got \(children.count)")
        }
    }

    func int(_ i: Int) -> Int { Int(truncatingIfNeeded: ints![i]) }
    func pair(_ i: Int) -> (Int, Int) { (int(i), int(i + 1)) }
    func optionalPair(_ i: Int) -> (Int, Int)? { int(i) == 0 ? nil : (int(i + 1), int(i + 2)) }
    func bool(_ i: Int) -> Bool { ints![i] != 0 }
    func real(_ i: Int) -> Double { reals![i] }
}

/// The layer of `settings.kind` in `T`: the one table of layer kinds behind `scnn_layer_create`.
/// A new layer = one case here (plus its row in _core.c and its Python class).
func makeLayer<T: CNNScalar>(_: T.Type, _ s: LayerSettings) throws -> any Layer<T> {
    switch s.kind {
    case "conv2d":
        try s.expect(ints: 11, op: "Conv2d")
        return try Conv2d<T>(inChannels: s.int(0), outChannels: s.int(1), kernelSize: s.pair(2), stride: s.pair(4),
                             padding: s.pair(6), dilation: s.pair(8), bias: s.bool(10), seed: s.seed)
    case "grouped_conv2d":
        // ints (in, out, kernel pair, stride pair, padding (mode, h, w), dilation pair, groups, bias)
        try s.expect(ints: 13, op: "Conv2d")
        let padding: ConvPadding = s.int(6) == 1 ? .same : .explicit(s.int(7), s.int(8))
        return try GroupedConv2d<T>(inChannels: s.int(0), outChannels: s.int(1), kernelSize: s.pair(2), stride: s.pair(4),
                                    padding: padding, dilation: s.pair(9), groups: s.int(11), bias: s.bool(12),
                                    seed: s.seed)
    case "linear":
        try s.expect(ints: 3, op: "Linear")
        return try Linear<T>(inFeatures: s.int(0), outFeatures: s.int(1), bias: s.bool(2), seed: s.seed)
    case "max_pool2d":
        try s.expect(ints: 7, op: "MaxPool2d")
        return try MaxPool2d<T>(kernelSize: s.pair(0), stride: s.optionalPair(2), padding: s.pair(5))
    case "avg_pool2d":
        try s.expect(ints: 7, op: "AvgPool2d")
        return try AvgPool2d<T>(kernelSize: s.pair(0), stride: s.optionalPair(2), padding: s.pair(5))
    case "sigmoid":
        try s.expect(op: "Sigmoid")
        return Sigmoid<T>()
    case "relu":
        try s.expect(op: "ReLU")
        return ReLU<T>()
    case "flatten":
        try s.expect(op: "Flatten")
        return Flatten<T>()
    case "sequential":
        try s.expect(children: true, op: "Sequential")
        return try Sequential<T>(try childLayers(T.self, s.children, op: "Sequential"))
    case "tanh":
        try s.expect(op: "Tanh")
        return Tanh<T>()
    case "leaky_relu":
        try s.expect(reals: 1, op: "LeakyReLU")
        return LeakyReLU<T>(negativeSlope: s.real(0))
    case "dropout":
        try s.expect(reals: 1, op: "Dropout")
        return try Dropout<T>(p: s.real(0), seed: s.seed)
    case "batch_norm1d", "batch_norm2d":
        // ints (num_features, affine, track_running_stats), reals (eps, momentum; NaN = None:
        // the cumulative average)
        try s.expect(ints: 3, reals: 2, op: s.kind == "batch_norm1d" ? "BatchNorm1d" : "BatchNorm2d")
        return try BatchNorm<T>(s.kind == "batch_norm1d" ? .batchNorm1d : .batchNorm2d, numFeatures: s.int(0),
                                eps: s.real(0), momentum: s.real(1).isNaN ? nil : s.real(1), affine: s.bool(1),
                                trackRunningStats: s.bool(2))
    case "adaptive_avg_pool2d":
        try s.expect(ints: 2, op: "AdaptiveAvgPool2d")
        return try AdaptiveAvgPool2d<T>(outputSize: s.pair(0))
    case "residual":
        try s.expect(children: true, op: "Residual")
        return try Residual<T>(try childLayers(T.self, s.children, op: "Residual"))
    default:
        throw SwiftCNNError.value("layer_create: unknown layer kind '\(s.kind)'")
    }
}

/// The children's layers, each checked to have the dtype `T`.
func childLayers<T: CNNScalar>(_: T.Type, _ children: [LayerHandle], op: String) throws -> [any Layer<T>] {
    try children.enumerated().map { i, h in
        switch h.model {
        case .float32(let l as any Layer<T>): return l
        case .float64(let l as any Layer<T>): return l
        default:
            throw SwiftCNNError.type("\(op): layer \(i) (\(h.name)) has dtype \(h.dtype), but the model's dtype is \(T.dtype)")
        }
    }
}

/// `scnn_layer_create`: one constructor for every layer kind (see makeLayer).
@_cdecl("scnn_layer_create")
public func scnn_layer_create(_ kind: UnsafePointer<CChar>?, _ dtype: Int32,
                              _ ints: UnsafePointer<Int64>?, _ nInts: Int32, _ reals: UnsafePointer<Double>?, _ nReals: Int32,
                              _ children: UnsafePointer<OpaquePointer?>?, _ nChildren: Int64, _ seed: UInt64,
                              _ layerOut: UnsafeMutablePointer<OpaquePointer?>?,
                              _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let op = "layer_create"
        guard let kind else { throw SwiftCNNError.value("\(op): kind is NULL") }
        let dt = try parseDType(dtype, op: op)
        let out = try requireOut(layerOut, name: "layer_out", op: op)
        guard nInts >= 0, nReals >= 0, nChildren >= 0, nInts == 0 || ints != nil, nReals == 0 || reals != nil,
              nChildren == 0 || children != nil else {
            throw SwiftCNNError.value("\(op): a settings array is NULL or a count is negative")
        }
        var handles: [LayerHandle] = []
        for i in 0..<Int(nChildren) {
            handles.append(try layerHandle(children![i], op: op, name: "children[\(i)]"))
        }
        let settings = LayerSettings(kind: String(cString: kind), ints: ints, intCount: Int(nInts), reals: reals,
                                     realCount: Int(nReals), children: handles, seed: seed)
        switch dt {
        // The initializers' messages name the Swift labels (inChannels); Python's name its arguments.
        case .float32: returnLayer(.float32(try pythonNames { try makeLayer(Float.self, settings) }), to: out)
        case .float64: returnLayer(.float64(try pythonNames { try makeLayer(Double.self, settings) }), to: out)
        }
    }
}

// MARK: - reference counting and queries

/// `scnn_layer_retain`: one more reference (NULL is ignored).
@_cdecl("scnn_layer_retain")
public func scnn_layer_retain(_ layer: OpaquePointer?) {
    guard let layer else { return }
    _ = Unmanaged<LayerHandle>.fromOpaque(UnsafeRawPointer(layer)).retain()
}

/// `scnn_layer_release`: drops one reference (NULL is ignored).
@_cdecl("scnn_layer_release")
public func scnn_layer_release(_ layer: OpaquePointer?) {
    guard let layer else { return }
    Unmanaged<LayerHandle>.fromOpaque(UnsafeRawPointer(layer)).release()
}

/// `scnn_layer_dtype`: SCNN_FLOAT32 / SCNN_FLOAT64, or -1 for a NULL handle.
@_cdecl("scnn_layer_dtype")
public func scnn_layer_dtype(_ layer: OpaquePointer?) -> Int32 {
    guard let h = try? layerHandle(layer, op: "layer_dtype") else { return -1 }
    return h.dtype.rawValue
}

// MARK: - forward / backward

/// `scnn_layer_forward`: y = layer(x), or only y's shape (compute false); keeps a view of x.
@_cdecl("scnn_layer_forward")
public func scnn_layer_forward(_ layer: OpaquePointer?, _ x: UnsafeRawPointer?, _ y: UnsafeMutableRawPointer?,
                               _ compute: Bool, _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let h = try layerHandle(layer, op: "layer_forward")
        guard let x, let y else { throw SwiftCNNError.value("\(h.name): x or y is NULL") }
        let xo = Operand(base: x, name: "x", op: "layer_forward")
        let yo = ResultOperand(base: y, name: "out", op: "layer_forward", compute: compute)
        try xo.requireDType(h.dtype, like: "the layer")
        try xo.checkSizes()
        try h.exclusive {
            switch h.model {
            case .float32(let l): try layerForwardC(l, h.name, xo, yo)
            case .float64(let l): try layerForwardC(l, h.name, xo, yo)
            }
        }
    }
}

func layerForwardC<T: CNNScalar>(_ layer: any Layer<T>, _ op: String, _ x: Operand, _ y: ResultOperand) throws {
    let ys = try layer.outputShape(forInput: x.shape)
    try y.declare(shape: ys, dtype: OperandType(T.dtype))
    guard y.compute else { return }
    let xt = try x.tensor(T.self), yt = try y.tensor(T.self)
    // The layer keeps a view of x for backward: writing y over it would corrupt the gradients.
    if y.operand.region().overlaps(x.region()) {
        throw SwiftCNNError.value("\(op): out must not share memory with x")
    }
    let result = try layer.forwardView(xt)
    guard result.shape == ys else {
        throw SwiftCNNError.runtime(
            "\(op): forward returned shape \(describeShape(result.shape)), expected \(describeShape(ys)); was the layer used by another thread?")
    }
    copyElements(from: result, to: yt)
}

/// Copies `src` into `dst` (same count); memmove semantics (a Flatten output is a view of its input).
@inline(__always)
func copyElements<T: CNNScalar>(from src: Tensor<T>, to dst: Tensor<T>) {
    guard src.count > 0, src.pointer != dst.pointer else { return }
    UnsafeMutableRawPointer(dst.pointer).copyMemory(from: UnsafeRawPointer(src.pointer),
                                                    byteCount: src.count * MemoryLayout<T>.stride)
}

/// The last forward's input shape, or the runtime error backward would give.
func lastInputShape(_ h: LayerHandle) throws -> [Int] {
    let shape: [Int]?
    switch h.model {
    case .float32(let l): shape = l.lastInputShape
    case .float64(let l): shape = l.lastInputShape
    }
    guard let shape else {
        throw SwiftCNNError.runtime("\(h.name): backward called before forward (no forward input recorded)")
    }
    return shape
}

/// `scnn_layer_backward`: grad_x for the last forward's input (adds into the parameter grads), or
/// only grad_x's shape (compute false).
///
/// grad_x's shape is compared with the layer's last input while the layer is held: the input shape
/// can change between the caller's shape query and this call if another thread runs forward
/// (directly, or through a Sequential that contains this layer), and writing the new shape into the
/// old buffer would overrun it.
@_cdecl("scnn_layer_backward")
public func scnn_layer_backward(_ layer: OpaquePointer?, _ gradOut: UnsafeRawPointer?, _ gradX: UnsafeMutableRawPointer?,
                                _ compute: Bool, _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let h = try layerHandle(layer, op: "layer_backward")
        guard let gradOut, let gradX else { throw SwiftCNNError.value("\(h.name): grad_out or grad_x is NULL") }
        let go = Operand(base: gradOut, name: "grad_out", op: "layer_backward")
        let gx = ResultOperand(base: gradX, name: "grad_x", op: "layer_backward", compute: compute)
        try go.requireDType(h.dtype, like: "the layer")
        try go.checkSizes()
        try h.exclusive {
            let inShape = try lastInputShape(h)
            if compute {
                // A forward by another thread since the query: refuse rather than overrun.
                guard gx.operand.rawNdim == Int32(inShape.count), gx.operand.shape == inShape else {
                    throw SwiftCNNError.runtime(
                        "\(h.name): grad_x has shape \(describeShape(gx.operand.shape)) but the last forward's input has shape "
                            + "\(describeShape(inShape)); was the layer run again (by another thread) since the shape was read?")
                }
            }
            try gx.declare(shape: inShape, dtype: OperandType(h.dtype))
            guard compute else { return }
            switch h.model {
            case .float32(let l): try layerBackwardC(l, h.name, go, gx)
            case .float64(let l): try layerBackwardC(l, h.name, go, gx)
            }
        }
    }
}

func layerBackwardC<T: CNNScalar>(_ layer: any Layer<T>, _ op: String, _ gradOut: Operand, _ gradX: ResultOperand) throws {
    let got = try gradOut.tensor(T.self), gxt = try gradX.tensor(T.self)
    if gradX.operand.region().overlaps(gradOut.region()) {
        throw SwiftCNNError.value("\(op): grad_x must not share memory with grad_out")
    }
    let result = try layer.backward(got)
    // Another thread may have run forward on this layer (through a parent Sequential) since the
    // shape check above: copy only a gradient that fits the caller's buffer exactly.
    guard result.shape == gxt.shape else {
        throw SwiftCNNError.runtime(
            "\(op): backward returned shape \(describeShape(result.shape)), expected \(describeShape(gxt.shape)); was the layer used by another thread?")
    }
    copyElements(from: result, to: gxt)
}

// MARK: - parameters

/// `scnn_layer_parameter_count`: the number of parameters, or -1 for a NULL handle.
@_cdecl("scnn_layer_parameter_count")
public func scnn_layer_parameter_count(_ layer: OpaquePointer?) -> Int64 {
    guard let h = try? layerHandle(layer, op: "layer_parameter_count") else { return -1 }
    switch h.model {
    case .float32(let l): return Int64(l.parameters.count)
    case .float64(let l): return Int64(l.parameters.count)
    }
}

/// Describes a tensor the layer owns into a caller `scnn_tensor`.
func describe<T: CNNScalar>(_ t: Tensor<T>, into out: UnsafeMutableRawPointer) {
    out.storeBytes(of: UnsafeMutableRawPointer(t.pointer), as: UnsafeMutableRawPointer?.self)
    out.storeBytes(of: Int32(t.shape.count), toByteOffset: 72, as: Int32.self)
    out.storeBytes(of: OperandType(T.dtype).rawValue, toByteOffset: 76, as: Int32.self)
    for (i, d) in t.shape.enumerated() { out.storeBytes(of: Int64(d), toByteOffset: 8 + 8 * i, as: Int64.self) }
}

/// `scnn_layer_parameter`: name, data and grad of parameter `index`.
@_cdecl("scnn_layer_parameter")
public func scnn_layer_parameter(_ layer: OpaquePointer?, _ index: Int64,
                                 _ dataOut: UnsafeMutableRawPointer?, _ gradOut: UnsafeMutableRawPointer?,
                                 _ nameOut: UnsafeMutablePointer<CChar>?, _ nameCap: Int64,
                                 _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let h = try layerHandle(layer, op: "layer_parameter")
        guard let dataOut, let gradOut else { throw SwiftCNNError.value("\(h.name): data or grad is NULL") }
        switch h.model {
        case .float32(let l): try parameterInfo(l.parameters, index, h.name, dataOut, gradOut, nameOut, nameCap)
        case .float64(let l): try parameterInfo(l.parameters, index, h.name, dataOut, gradOut, nameOut, nameCap)
        }
    }
}

func parameterInfo<T: CNNScalar>(_ parameters: [Parameter<T>], _ index: Int64, _ op: String,
                                 _ dataOut: UnsafeMutableRawPointer, _ gradOut: UnsafeMutableRawPointer,
                                 _ nameOut: UnsafeMutablePointer<CChar>?, _ nameCap: Int64) throws {
    guard index >= 0 && index < Int64(parameters.count) else {
        throw SwiftCNNError.value("\(op): parameter index \(index) is out of range for \(parameters.count) parameters")
    }
    let p = parameters[Int(index)]
    guard p.data.shape.count <= maxNdim else {
        throw SwiftCNNError.runtime("\(op): parameter \(p.name) has \(p.data.shape.count) dimensions; at most \(maxNdim) fit")
    }
    describe(p.data, into: dataOut)
    describe(p.grad, into: gradOut)
    writeCString(p.name, to: nameOut, capacity: nameCap)
}

/// `scnn_layer_set_training`: the layer's mode (containers pass it to every child). Only
/// BatchNorm and Dropout act differently in the two modes.
@_cdecl("scnn_layer_set_training")
public func scnn_layer_set_training(_ layer: OpaquePointer?, _ on: Bool, _ msg: UnsafeMutablePointer<CChar>?,
                                    _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let h = try layerHandle(layer, op: "layer_set_training")
        switch h.model {
        case .float32(let l): l.setTraining(on)
        case .float64(let l): l.setTraining(on)
        }
    }
}

/// `scnn_layer_buffer_count`: the number of buffers (BatchNorm's running statistics), -1 for NULL.
@_cdecl("scnn_layer_buffer_count")
public func scnn_layer_buffer_count(_ layer: OpaquePointer?) -> Int64 {
    guard let h = try? layerHandle(layer, op: "layer_buffer_count") else { return -1 }
    switch h.model {
    case .float32(let l): return Int64(l.buffers.count)
    case .float64(let l): return Int64(l.buffers.count)
    }
}

/// `scnn_layer_buffer`: name and data of buffer `index` (float of the layer's dtype, or int64).
@_cdecl("scnn_layer_buffer")
public func scnn_layer_buffer(_ layer: OpaquePointer?, _ index: Int64, _ dataOut: UnsafeMutableRawPointer?,
                              _ nameOut: UnsafeMutablePointer<CChar>?, _ nameCap: Int64,
                              _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let h = try layerHandle(layer, op: "layer_buffer")
        guard let dataOut else { throw SwiftCNNError.value("\(h.name): data is NULL") }
        switch h.model {
        case .float32(let l): try bufferInfo(l.buffers, index, h.name, dataOut, nameOut, nameCap)
        case .float64(let l): try bufferInfo(l.buffers, index, h.name, dataOut, nameOut, nameCap)
        }
    }
}

func bufferInfo<T: CNNScalar>(_ buffers: [Buffer<T>], _ index: Int64, _ op: String, _ dataOut: UnsafeMutableRawPointer,
                              _ nameOut: UnsafeMutablePointer<CChar>?, _ nameCap: Int64) throws {
    guard index >= 0 && index < Int64(buffers.count) else {
        throw SwiftCNNError.value("\(op): buffer index \(index) is out of range for \(buffers.count) buffers")
    }
    let b = buffers[Int(index)]
    switch b.storage {
    case .floating(let t):
        describe(t, into: dataOut)
    case .int64(let t):
        dataOut.storeBytes(of: UnsafeMutableRawPointer(t.pointer), as: UnsafeMutableRawPointer?.self)
        dataOut.storeBytes(of: Int32(t.shape.count), toByteOffset: 72, as: Int32.self)
        dataOut.storeBytes(of: OperandType.int64.rawValue, toByteOffset: 76, as: Int32.self)
        for (i, d) in t.shape.enumerated() { dataOut.storeBytes(of: Int64(d), toByteOffset: 8 + 8 * i, as: Int64.self) }
    }
    writeCString(b.name, to: nameOut, capacity: nameCap)
}

/// `scnn_layer_zero_grad`: every parameter's grad set to zero.
@_cdecl("scnn_layer_zero_grad")
public func scnn_layer_zero_grad(_ layer: OpaquePointer?, _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let h = try layerHandle(layer, op: "layer_zero_grad")
        try h.exclusive {
            switch h.model {
            case .float32(let l): try l.zeroGrad()
            case .float64(let l): try l.zeroGrad()
            }
        }
    }
}

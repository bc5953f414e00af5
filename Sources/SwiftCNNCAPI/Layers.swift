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

/// `scnn_conv2d_layer_create`: conv_layer_geometry {kh, kw, sh, sw, ph, pw, dh, dw}.
@_cdecl("scnn_conv2d_layer_create")
public func scnn_conv2d_layer_create(_ dtype: Int32, _ inChannels: Int64, _ outChannels: Int64,
                                     _ geometry: UnsafePointer<Int64>?, _ hasBias: Bool, _ seed: UInt64,
                                     _ layerOut: UnsafeMutablePointer<OpaquePointer?>?,
                                     _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let op = "Conv2d"
        let dt = try parseDType(dtype, op: op)
        let out = try requireOut(layerOut, name: "layer_out", op: op)
        guard let g = geometry else { throw SwiftCNNError.value("\(op): conv_layer_geometry is NULL") }
        let kernel = (int(g[0]), int(g[1])), stride = (int(g[2]), int(g[3]))
        let padding = (int(g[4]), int(g[5])), dilation = (int(g[6]), int(g[7]))
        let (i, o) = (int(inChannels), int(outChannels))
        switch dt {
        case .float32:
            returnLayer(.float32(try Conv2d<Float>(inChannels: i, outChannels: o, kernelSize: kernel, stride: stride,
                                                    padding: padding, dilation: dilation, bias: hasBias, seed: seed)), to: out)
        case .float64:
            returnLayer(.float64(try Conv2d<Double>(inChannels: i, outChannels: o, kernelSize: kernel, stride: stride,
                                                     padding: padding, dilation: dilation, bias: hasBias, seed: seed)), to: out)
        }
    }
}

/// `scnn_linear_layer_create`.
@_cdecl("scnn_linear_layer_create")
public func scnn_linear_layer_create(_ dtype: Int32, _ inFeatures: Int64, _ outFeatures: Int64,
                                     _ hasBias: Bool, _ seed: UInt64,
                                     _ layerOut: UnsafeMutablePointer<OpaquePointer?>?,
                                     _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let op = "Linear"
        let dt = try parseDType(dtype, op: op)
        let out = try requireOut(layerOut, name: "layer_out", op: op)
        let (i, o) = (int(inFeatures), int(outFeatures))
        switch dt {
        case .float32:
            returnLayer(.float32(try Linear<Float>(inFeatures: i, outFeatures: o, bias: hasBias, seed: seed)), to: out)
        case .float64:
            returnLayer(.float64(try Linear<Double>(inFeatures: i, outFeatures: o, bias: hasBias, seed: seed)), to: out)
        }
    }
}

/// `scnn_pool2d_layer_create`: MaxPool2d or AvgPool2d with pool_geometry {kh, kw, sh, sw, ph, pw}.
@_cdecl("scnn_pool2d_layer_create")
public func scnn_pool2d_layer_create(_ dtype: Int32, _ poolKind: Int32, _ geometry: UnsafePointer<Int64>?,
                                     _ layerOut: UnsafeMutablePointer<OpaquePointer?>?,
                                     _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let dt = try parseDType(dtype, op: "Pool2d")
        let kind = try parsePoolKind(poolKind, op: "Pool2d")
        let op = kind == .max ? "MaxPool2d" : "AvgPool2d"
        let out = try requireOut(layerOut, name: "layer_out", op: op)
        let g = try readPoolGeometry(geometry, op: op)
        switch (dt, kind) {
        case (.float32, .max):
            returnLayer(.float32(try MaxPool2d<Float>(kernelSize: g.kernel, stride: g.stride, padding: g.padding)), to: out)
        case (.float64, .max):
            returnLayer(.float64(try MaxPool2d<Double>(kernelSize: g.kernel, stride: g.stride, padding: g.padding)), to: out)
        case (.float32, .average):
            returnLayer(.float32(try AvgPool2d<Float>(kernelSize: g.kernel, stride: g.stride, padding: g.padding)), to: out)
        case (.float64, .average):
            returnLayer(.float64(try AvgPool2d<Double>(kernelSize: g.kernel, stride: g.stride, padding: g.padding)), to: out)
        }
    }
}

/// `scnn_simple_layer_create`: Sigmoid (0), ReLU (1) or Flatten (2).
@_cdecl("scnn_simple_layer_create")
public func scnn_simple_layer_create(_ dtype: Int32, _ layerKind: Int32,
                                     _ layerOut: UnsafeMutablePointer<OpaquePointer?>?,
                                     _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let op = "simple_layer"
        let dt = try parseDType(dtype, op: op)
        guard (0...2).contains(layerKind) else {
            throw SwiftCNNError.value(
                "\(op): layer_kind must be SCNN_LAYER_SIGMOID (0), SCNN_LAYER_RELU (1) or SCNN_LAYER_FLATTEN (2), got \(layerKind)")
        }
        let out = try requireOut(layerOut, name: "layer_out", op: op)
        switch dt {
        case .float32: returnLayer(.float32(simpleLayer(Float.self, layerKind)), to: out)
        case .float64: returnLayer(.float64(simpleLayer(Double.self, layerKind)), to: out)
        }
    }
}

func simpleLayer<T: CNNScalar>(_: T.Type, _ kind: Int32) -> any Layer<T> {
    switch kind {
    case 0: return Sigmoid<T>()
    case 1: return ReLU<T>()
    default: return Flatten<T>()
    }
}

/// `scnn_sequential_create`: a Sequential of the given handles' layers (shared, not copied).
@_cdecl("scnn_sequential_create")
public func scnn_sequential_create(_ dtype: Int32, _ layers: UnsafePointer<OpaquePointer?>?, _ count: Int64,
                                   _ layerOut: UnsafeMutablePointer<OpaquePointer?>?,
                                   _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let op = "Sequential"
        let dt = try parseDType(dtype, op: op)
        let out = try requireOut(layerOut, name: "layer_out", op: op)
        guard count >= 0 else { throw SwiftCNNError.value("\(op): count must be >= 0, got \(count)") }
        var floats: [any Layer<Float>] = [], doubles: [any Layer<Double>] = []
        if count > 0 {
            guard let layers else { throw SwiftCNNError.value("\(op): layers is NULL but count is \(count)") }
            for i in 0..<int(count) {
                let h = try layerHandle(layers[i], op: op, name: "layers[\(i)]")
                switch h.model {
                case .float32(let l) where dt == .float32: floats.append(l)
                case .float64(let l) where dt == .float64: doubles.append(l)
                default:
                    throw SwiftCNNError.type(
                        "\(op): layer \(i) (\(h.name)) has dtype \(h.dtype), but the model's dtype is \(dt)")
                }
            }
        }
        switch dt {
        case .float32: returnLayer(.float32(try Sequential<Float>(floats)), to: out)
        case .float64: returnLayer(.float64(try Sequential<Double>(doubles)), to: out)
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

/// `scnn_layer_output_shape`: the output shape forward would give for in_shape (room for 8 dims).
@_cdecl("scnn_layer_output_shape")
public func scnn_layer_output_shape(_ layer: OpaquePointer?, _ inShape: UnsafePointer<Int64>?, _ inNdim: Int64,
                                    _ outShapeOut: UnsafeMutablePointer<Int64>?, _ outNdimOut: UnsafeMutablePointer<Int64>?,
                                    _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let h = try layerHandle(layer, op: "layer_output_shape")
        let xs = try readShape(inShape, ndim: inNdim, name: "x", op: h.name, maxNdim: maxLayerNdim)
        let ys = try outputShape(h, xs)
        writeShape(ys, to: outShapeOut)
        outNdimOut?.pointee = Int64(ys.count)
    }
}

/// The layer's output shape for `xs`, checked to fit the 8-entry shape arrays of the header.
func outputShape(_ h: LayerHandle, _ xs: [Int]) throws -> [Int] {
    let ys: [Int]
    switch h.model {
    case .float32(let l): ys = try l.outputShape(forInput: xs)
    case .float64(let l): ys = try l.outputShape(forInput: xs)
    }
    guard ys.count <= maxLayerNdim else {
        throw SwiftCNNError.value("\(h.name): the output for x \(describeShape(xs)) would have \(ys.count) dimensions; at most \(maxLayerNdim) are supported")
    }
    try checkSizes(ys, name: "output", op: h.name)
    return ys
}

// MARK: - forward / backward

/// `scnn_layer_forward`: y = layer(x); keeps a view of x for backward.
@_cdecl("scnn_layer_forward")
public func scnn_layer_forward(_ layer: OpaquePointer?, _ x: UnsafeRawPointer?, _ xShape: UnsafePointer<Int64>?,
                               _ xNdim: Int64, _ y: UnsafeMutableRawPointer?,
                               _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let h = try layerHandle(layer, op: "layer_forward")
        let xs = try readShape(xShape, ndim: xNdim, name: "x", op: h.name, maxNdim: maxLayerNdim)
        try h.exclusive {
            switch h.model {
            case .float32(let l): try layerForwardC(l, h.name, x, xs, y)
            case .float64(let l): try layerForwardC(l, h.name, x, xs, y)
            }
        }
    }
}

func layerForwardC<T: CNNScalar>(_ layer: any Layer<T>, _ op: String, _ x: UnsafeRawPointer?, _ xs: [Int],
                                 _ y: UnsafeMutableRawPointer?) throws {
    let ys = try layer.outputShape(forInput: xs)
    guard ys.count <= maxLayerNdim else {
        throw SwiftCNNError.value("\(op): the output for x \(describeShape(xs)) would have \(ys.count) dimensions; at most \(maxLayerNdim) are supported")
    }
    let xt: Tensor<T> = try borrow(x, shape: xs, name: "x", op: op)
    let yt: Tensor<T> = try borrowOut(y, shape: ys, name: "out", op: op)
    // The layer keeps a view of x for backward: writing y over it would corrupt the gradients.
    try checkNoOverlapTensors(op: op, yt, [("x", xt)])
    let result = try layer.forward(xt)
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

/// `scnn_layer_input_shape`: the last forward's input shape; runtime error before any forward.
@_cdecl("scnn_layer_input_shape")
public func scnn_layer_input_shape(_ layer: OpaquePointer?, _ shapeOut: UnsafeMutablePointer<Int64>?,
                                   _ ndimOut: UnsafeMutablePointer<Int64>?,
                                   _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let h = try layerHandle(layer, op: "layer_input_shape")
        let shape = try h.exclusive { try lastInputShape(h) }
        writeShape(shape, to: shapeOut)
        ndimOut?.pointee = Int64(shape.count)
    }
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
    guard shape.count <= maxLayerNdim else {  // forward only accepts <= 8 dims through this ABI
        throw SwiftCNNError.runtime("\(h.name): the last input has \(shape.count) dimensions; at most \(maxLayerNdim) are supported")
    }
    return shape
}

/// `scnn_layer_backward`: grad_x for the last forward's input; adds into the parameter grads.
///
/// The caller's grad_x buffer is described by `gradXShape`, and that shape is compared with the
/// layer's last input while the layer is held: the input shape can change between the caller's
/// `scnn_layer_input_shape` and this call if another thread runs forward (directly, or through a
/// Sequential that contains this layer), and writing the new shape into the old buffer would
/// overrun it. The copy into grad_x happens only when the gradient has exactly the buffer's shape.
@_cdecl("scnn_layer_backward")
public func scnn_layer_backward(_ layer: OpaquePointer?,
                                _ gradOut: UnsafeRawPointer?, _ gradOutShape: UnsafePointer<Int64>?, _ gradOutNdim: Int64,
                                _ gradX: UnsafeMutableRawPointer?, _ gradXShape: UnsafePointer<Int64>?, _ gradXNdim: Int64,
                                _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let h = try layerHandle(layer, op: "layer_backward")
        try h.exclusive {
            let inShape = try lastInputShape(h)
            let gs = try readShape(gradOutShape, ndim: gradOutNdim, name: "grad_out", op: h.name, maxNdim: maxLayerNdim)
            let gxs = try readShape(gradXShape, ndim: gradXNdim, name: "grad_x", op: h.name, maxNdim: maxLayerNdim)
            guard gxs == inShape else {
                throw SwiftCNNError.runtime(
                    "\(h.name): grad_x has shape \(describeShape(gxs)) but the last forward's input has shape "
                        + "\(describeShape(inShape)); was the layer run again (by another thread) since the shape was read?")
            }
            switch h.model {
            case .float32(let l): try layerBackwardC(l, h.name, gradOut, gs, gxs, gradX)
            case .float64(let l): try layerBackwardC(l, h.name, gradOut, gs, gxs, gradX)
            }
        }
    }
}

func layerBackwardC<T: CNNScalar>(_ layer: any Layer<T>, _ op: String, _ gradOut: UnsafeRawPointer?, _ gs: [Int],
                                  _ gradXShape: [Int], _ gradX: UnsafeMutableRawPointer?) throws {
    let got: Tensor<T> = try borrow(gradOut, shape: gs, name: "grad_out", op: op)
    let gxt: Tensor<T> = try borrowOut(gradX, shape: gradXShape, name: "grad_x", op: op)
    try checkNoOverlapOutputs(op: op, [("grad_x", gxt)], [("grad_out", got)])
    let result = try layer.backward(got)
    // Another thread may have run forward on this layer (through a parent Sequential) since the
    // shape check above: copy only a gradient that fits the caller's buffer exactly.
    guard result.shape == gradXShape else {
        throw SwiftCNNError.runtime(
            "\(op): backward returned shape \(describeShape(result.shape)), expected \(describeShape(gradXShape)); was the layer used by another thread?")
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

/// `scnn_layer_parameter`: name, data and grad pointers and shape of parameter `index`.
@_cdecl("scnn_layer_parameter")
public func scnn_layer_parameter(_ layer: OpaquePointer?, _ index: Int64,
                                 _ dataOut: UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                                 _ gradOut: UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                                 _ shapeOut: UnsafeMutablePointer<Int64>?, _ ndimOut: UnsafeMutablePointer<Int64>?,
                                 _ nameOut: UnsafeMutablePointer<CChar>?, _ nameCap: Int64,
                                 _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let h = try layerHandle(layer, op: "layer_parameter")
        let info: (name: String, data: UnsafeMutableRawPointer, grad: UnsafeMutableRawPointer, shape: [Int])
        switch h.model {
        case .float32(let l): info = try parameterInfo(l.parameters, index, h.name)
        case .float64(let l): info = try parameterInfo(l.parameters, index, h.name)
        }
        guard info.shape.count <= 4 else {
            throw SwiftCNNError.runtime("\(h.name): parameter \(info.name) has \(info.shape.count) dimensions; at most 4 fit shape_out")
        }
        dataOut?.pointee = info.data
        gradOut?.pointee = info.grad
        writeShape(info.shape, to: shapeOut)
        ndimOut?.pointee = Int64(info.shape.count)
        writeCString(info.name, to: nameOut, capacity: nameCap)
    }
}

func parameterInfo<T: CNNScalar>(_ parameters: [Parameter<T>], _ index: Int64, _ op: String)
    throws -> (name: String, data: UnsafeMutableRawPointer, grad: UnsafeMutableRawPointer, shape: [Int]) {
    guard index >= 0 && index < Int64(parameters.count) else {
        throw SwiftCNNError.value("\(op): parameter index \(index) is out of range for \(parameters.count) parameters")
    }
    let p = parameters[int(index)]
    return (p.name, UnsafeMutableRawPointer(p.data.pointer), UnsafeMutableRawPointer(p.grad.pointer), p.data.shape)
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

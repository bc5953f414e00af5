// The functional ops of swiftcnn.h: conv2d, pool2d, linear, activations, softmax, the losses and
// correlate2d, forward and backward.
//
// Each export validates its scalar arguments and shapes, builds the core's geometry value (which
// checks every shape rule and names the argument in its message), checks the data pointers (NULL
// only for empty tensors, aligned) and that outputs do not overlap inputs, and only then calls the
// core, generic over the dtype and specialized for Float and Double.

@_spi(Engine) import SwiftCNN

// MARK: - argument helpers

/// The (stride, padding, dilation) pairs of `conv_geometry[6]`.
func readConvGeometry(_ p: UnsafePointer<Int64>?, op: String)
    throws -> (stride: (Int, Int), padding: (Int, Int), dilation: (Int, Int)) {
    guard let p else { throw SwiftCNNError.value("\(op): conv_geometry is NULL") }
    return ((int(p[0]), int(p[1])), (int(p[2]), int(p[3])), (int(p[4]), int(p[5])))
}

/// The (kernel_size, stride, padding) pairs of `pool_geometry[6]`.
func readPoolGeometry(_ p: UnsafePointer<Int64>?, op: String)
    throws -> (kernel: (Int, Int), stride: (Int, Int), padding: (Int, Int)) {
    guard let p else { throw SwiftCNNError.value("\(op): pool_geometry is NULL") }
    return ((int(p[0]), int(p[1])), (int(p[2]), int(p[3])), (int(p[4]), int(p[5])))
}

/// `SCNN_POOL_MAX` / `SCNN_POOL_AVG`.
func parsePoolKind(_ raw: Int32, op: String) throws -> PoolKind {
    switch raw {
    case 0: return .max
    case 1: return .average
    default: throw SwiftCNNError.value("\(op): pool_kind must be SCNN_POOL_MAX (0) or SCNN_POOL_AVG (1), got \(raw)")
    }
}

/// The shape of an optional bias given as (pointer, length): nil for "no bias" (length -1, pointer
/// NULL), else (length,).
func readBias(_ bias: UnsafeRawPointer?, _ biasLen: Int64, op: String) throws -> [Int]? {
    if biasLen == -1 {
        guard bias == nil else {
            throw SwiftCNNError.value("\(op): bias_len is -1 (no bias) but bias is not NULL")
        }
        return nil
    }
    guard biasLen >= 0 else {
        throw SwiftCNNError.value("\(op): bias_len must be >= 0, or -1 for no bias, got \(biasLen)")
    }
    let shape = [int(biasLen)]
    try checkSizes(shape, name: "bias", op: op)
    return shape
}

// MARK: - conv2d

/// `scnn_conv2d_forward`: y = conv2d(x, weight, bias) with conv_geometry {sh, sw, ph, pw, dh, dw}.
@_cdecl("scnn_conv2d_forward")
public func scnn_conv2d_forward(_ dtype: Int32,
                                _ x: UnsafeRawPointer?, _ xShape: UnsafePointer<Int64>?, _ xNdim: Int64,
                                _ weight: UnsafeRawPointer?, _ weightShape: UnsafePointer<Int64>?, _ weightNdim: Int64,
                                _ bias: UnsafeRawPointer?, _ biasLen: Int64,
                                _ convGeometry: UnsafePointer<Int64>?,
                                _ y: UnsafeMutableRawPointer?, _ yShapeOut: UnsafeMutablePointer<Int64>?,
                                _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let op = "conv2d"
        let dt = try parseDType(dtype, op: op)
        let g: Conv2DGeometry
        let hasBias: Bool
        // Common case first, from scalars: no shape arrays (a malloc and free each, several per
        // call, were most of the cost of a call on a small input). Anything unusual (wrong rank,
        // NULL shape, a bad bias length, ...) takes the array path below, which throws the message.
        if let xs = readShape4IfValid(xShape, xNdim), let ws = readShape4IfValid(weightShape, weightNdim),
           let convGeometry, (biasLen == -1 && bias == nil) || (biasLen >= 0 && biasLen <= Int64(Int.max / 8)) {
            let p = convGeometry
            g = try Conv2DGeometry(op: op, x: xs, weight: ws, biasLength: biasLen == -1 ? nil : int(biasLen),
                                   stride: (int(p[0]), int(p[1])), padding: (int(p[2]), int(p[3])),
                                   dilation: (int(p[4]), int(p[5])))
            hasBias = biasLen != -1
        } else {
            let xs = try readShape(xShape, ndim: xNdim, name: "x", op: op, rank: 4, layout: "(N, C, H, W)")
            let ws = try readShape(weightShape, ndim: weightNdim, name: "weight", op: op, rank: 4,
                                   layout: "(out_channels, in_channels, kH, kW)")
            let bs = try readBias(bias, biasLen, op: op)
            let geo = try readConvGeometry(convGeometry, op: op)
            g = try Conv2DGeometry(op: op, xShape: xs, weightShape: ws, biasShape: bs,
                                   stride: geo.stride, padding: geo.padding, dilation: geo.dilation)
            hasBias = bs != nil
        }
        switch dt {
        case .float32: try conv2dForwardC(Float.self, g, x, weight, hasBias, bias, y)
        case .float64: try conv2dForwardC(Double.self, g, x, weight, hasBias, bias, y)
        }
        writeShape4(g.batch, g.outChannels, g.outH, g.outW, to: yShapeOut)
    }
}

func conv2dForwardC<T: CNNScalar>(_: T.Type, _ g: Conv2DGeometry, _ x: UnsafeRawPointer?, _ weight: UnsafeRawPointer?,
                                  _ hasBias: Bool, _ bias: UnsafeRawPointer?, _ y: UnsafeMutableRawPointer?) throws {
    // Pointer-level checks and kernel, not borrowed Tensors and the Tensor-level conv2d: those cost
    // an object and a shape array per argument and re-derived the geometry validated above, which
    // was most of the cost of a call on a small input. The counts below were checked by the geometry.
    let op = "conv2d"
    let xCount = g.batch * g.inChannels * g.height * g.width
    let wCount = g.outChannels * g.colRows
    let yCount = g.batch * g.outChannels * g.colCols
    let xp = try checkData(x, count: xCount, shape: g.inputShape, name: "x", op: op, as: T.self)
    let wp = try checkData(weight, count: wCount, shape: g.weightShape, name: "weight", op: op, as: T.self)
    let bp = hasBias ? try checkData(bias, count: g.outChannels, shape: g.biasShape, name: "bias", op: op, as: T.self) : nil
    guard let y else { return }  // validation only: the caller learns the shape
    let yp = try checkData(UnsafeRawPointer(y), count: yCount, shape: g.outputShape, name: "out", op: op, as: T.self)
    let size = MemoryLayout<T>.stride
    let out = Region("out", yp, count: yCount, elementSize: size)
    try checkDisjoint(op: op, out, Region("x", xp, count: xCount, elementSize: size))
    try checkDisjoint(op: op, out, Region("weight", wp, count: wCount, elementSize: size))
    if hasBias { try checkDisjoint(op: op, out, Region("bias", bp, count: g.outChannels, elementSize: size)) }
    // N = 0: nothing to compute (and no scratch to size from the spatial dimensions). Otherwise
    // every pointer is non-NULL: x, weight, bias and y are non-empty (the geometry has C, H, W, K,
    // kH, kW, Ho, Wo >= 1).
    guard g.batch > 0, let xp, let wp, let yp else { return }
    try conv2dForward(g, x: xp, weight: wp, bias: bp, y: UnsafeMutablePointer(mutating: yp), workspace: Workspace<T>())
}

/// `scnn_conv2d_backward`: grad_x, grad_weight, grad_bias (each optional) from grad_out.
@_cdecl("scnn_conv2d_backward")
public func scnn_conv2d_backward(_ dtype: Int32,
                                 _ gradOut: UnsafeRawPointer?, _ gradOutShape: UnsafePointer<Int64>?, _ gradOutNdim: Int64,
                                 _ x: UnsafeRawPointer?, _ xShape: UnsafePointer<Int64>?, _ xNdim: Int64,
                                 _ weight: UnsafeRawPointer?, _ weightShape: UnsafePointer<Int64>?, _ weightNdim: Int64,
                                 _ convGeometry: UnsafePointer<Int64>?,
                                 _ gradX: UnsafeMutableRawPointer?, _ gradWeight: UnsafeMutableRawPointer?,
                                 _ gradBias: UnsafeMutableRawPointer?,
                                 _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let op = "conv2d_backward"
        let dt = try parseDType(dtype, op: op)
        let gs = try readShape(gradOutShape, ndim: gradOutNdim, name: "grad_out", op: op, rank: 4, layout: "(N, K, Ho, Wo)")
        let xs = try readShape(xShape, ndim: xNdim, name: "x", op: op, rank: 4, layout: "(N, C, H, W)")
        let ws = try readShape(weightShape, ndim: weightNdim, name: "weight", op: op, rank: 4,
                               layout: "(out_channels, in_channels, kH, kW)")
        let geo = try readConvGeometry(convGeometry, op: op)
        let g = try Conv2DGeometry(op: op, xShape: xs, weightShape: ws, biasShape: nil,
                                   stride: geo.stride, padding: geo.padding, dilation: geo.dilation)
        try g.checkGradOut(op: op, gs)
        switch dt {
        case .float32: try conv2dBackwardC(Float.self, g, gradOut, x, weight, gradX, gradWeight, gradBias)
        case .float64: try conv2dBackwardC(Double.self, g, gradOut, x, weight, gradX, gradWeight, gradBias)
        }
    }
}

func conv2dBackwardC<T: CNNScalar>(_: T.Type, _ g: Conv2DGeometry, _ gradOut: UnsafeRawPointer?,
                                   _ x: UnsafeRawPointer?, _ weight: UnsafeRawPointer?,
                                   _ gradX: UnsafeMutableRawPointer?, _ gradWeight: UnsafeMutableRawPointer?,
                                   _ gradBias: UnsafeMutableRawPointer?) throws {
    let o = try borrowBackwardOperands(T.self, op: "conv2d_backward", outputShape: g.outputShape,
                                       inputShape: g.inputShape, weightShape: g.weightShape, biasShape: g.biasShape,
                                       gradOut, x, weight, gradX, gradWeight, gradBias)
    let (gx, gw, gb) = (o.gradX, o.gradWeight, o.gradBias)
    if g.batch == 0 {
        // Empty batch: the sums are empty (zeros); grad_x is empty. Done here rather than in the
        // kernel, which would size scratch from the spatial dimensions alone.
        gw?.update(repeating: 0, count: g.outChannels * g.inChannels * g.kernelH * g.kernelW)
        gb?.update(repeating: 0, count: g.outChannels)
        return
    }
    try conv2dBackward(g, gradOut: o.gradOut, x: o.x, weight: o.weight,
                       gradX: gx, gradWeight: gw, gradBias: gb, accumulate: false, workspace: Workspace<T>())
}

/// The typed operands of a backward op that maps (grad_out, x, weight) to (grad_x, grad_weight,
/// grad_bias), any of the outputs optional: conv2d's and linear's.
struct BackwardOperands<T: CNNScalar> {
    let gradOut, x, weight: UnsafeMutablePointer<T>
    let gradX, gradWeight, gradBias: UnsafeMutablePointer<T>?
}

/// Checks the operands of a backward op (NULL, alignment, each output overlapping no input and no
/// other output: the kernels read the inputs while they write) and types them.
func borrowBackwardOperands<T: CNNScalar>(_: T.Type, op: String, outputShape: [Int], inputShape: [Int],
                                          weightShape: [Int], biasShape: [Int],
                                          _ gradOut: UnsafeRawPointer?, _ x: UnsafeRawPointer?, _ weight: UnsafeRawPointer?,
                                          _ gradX: UnsafeMutableRawPointer?, _ gradWeight: UnsafeMutableRawPointer?,
                                          _ gradBias: UnsafeMutableRawPointer?) throws -> BackwardOperands<T> {
    let inputs: [(String, Tensor<T>)] = [
        ("grad_out", try borrow(gradOut, shape: outputShape, name: "grad_out", op: op)),
        ("x", try borrow(x, shape: inputShape, name: "x", op: op)),
        ("weight", try borrow(weight, shape: weightShape, name: "weight", op: op)),
    ]
    var outputs: [(String, Tensor<T>)] = []
    if let gradX { outputs.append(("grad_x", try borrowOut(gradX, shape: inputShape, name: "grad_x", op: op))) }
    if let gradWeight { outputs.append(("grad_weight", try borrowOut(gradWeight, shape: weightShape, name: "grad_weight", op: op))) }
    if let gradBias { outputs.append(("grad_bias", try borrowOut(gradBias, shape: biasShape, name: "grad_bias", op: op))) }
    try checkNoOverlapOutputs(op: op, outputs, inputs)
    return BackwardOperands(gradOut: inputs[0].1.pointer, x: inputs[1].1.pointer, weight: inputs[2].1.pointer,
                            gradX: gradX.map { $0.assumingMemoryBound(to: T.self) },
                            gradWeight: gradWeight.map { $0.assumingMemoryBound(to: T.self) },
                            gradBias: gradBias.map { $0.assumingMemoryBound(to: T.self) })
}

// MARK: - pooling

/// `scnn_pool2d_forward`: max or average pooling with pool_geometry {kh, kw, sh, sw, ph, pw}.
@_cdecl("scnn_pool2d_forward")
public func scnn_pool2d_forward(_ dtype: Int32, _ poolKind: Int32,
                                _ x: UnsafeRawPointer?, _ xShape: UnsafePointer<Int64>?, _ xNdim: Int64,
                                _ poolGeometry: UnsafePointer<Int64>?,
                                _ y: UnsafeMutableRawPointer?, _ yShapeOut: UnsafeMutablePointer<Int64>?,
                                _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let dt = try parseDType(dtype, op: "pool2d")
        let kind = try parsePoolKind(poolKind, op: "pool2d")
        let op = kind == .max ? "max_pool2d" : "avg_pool2d"
        let g: Pool2DGeometry
        // Scalar fast path as in scnn_conv2d_forward; the array path throws the messages.
        if let xs = readShape4IfValid(xShape, xNdim), let p = poolGeometry {
            g = try Pool2DGeometry(op: op, kind: kind, x: xs, kernelSize: (int(p[0]), int(p[1])),
                                   stride: (int(p[2]), int(p[3])), padding: (int(p[4]), int(p[5])))
        } else {
            let xs = try readShape(xShape, ndim: xNdim, name: "x", op: op, rank: 4, layout: "(N, C, H, W)")
            let geo = try readPoolGeometry(poolGeometry, op: op)
            g = try Pool2DGeometry(op: op, kind: kind, xShape: xs, kernelSize: geo.kernel, stride: geo.stride,
                                   padding: geo.padding)
        }
        switch dt {
        case .float32: try pool2dForwardC(Float.self, g, kind, op, x, y)
        case .float64: try pool2dForwardC(Double.self, g, kind, op, x, y)
        }
        writeShape4(g.batch, g.channels, g.outH, g.outW, to: yShapeOut)
    }
}

func pool2dForwardC<T: CNNScalar>(_: T.Type, _ g: Pool2DGeometry, _ kind: PoolKind, _ op: String,
                                  _ x: UnsafeRawPointer?, _ y: UnsafeMutableRawPointer?) throws {
    // Pointer level, as conv2dForwardC: no borrowed Tensors (an object and a shape array each).
    // The geometry checked both counts; N = 0 leaves nothing to compute (and NULL pointers).
    let xCount = g.batch * g.channels * g.height * g.width
    let yCount = g.batch * g.channels * g.outH * g.outW
    let xp = try checkData(x, count: xCount, shape: g.inputShape, name: "x", op: op, as: T.self)
    guard let y else { return }
    let yp = try checkData(UnsafeRawPointer(y), count: yCount, shape: g.outputShape, name: "out", op: op, as: T.self)
    let size = MemoryLayout<T>.stride
    try checkDisjoint(op: op, Region("out", yp, count: yCount, elementSize: size),
                      Region("x", xp, count: xCount, elementSize: size))
    guard g.batch > 0, let xp, let yp else { return }
    pool2dForward(g, kind: kind, x: xp, y: UnsafeMutablePointer(mutating: yp), argmax: nil)
}


/// `scnn_pool2d_backward`: grad_x (x's shape) from grad_out.
@_cdecl("scnn_pool2d_backward")
public func scnn_pool2d_backward(_ dtype: Int32, _ poolKind: Int32,
                                 _ gradOut: UnsafeRawPointer?, _ gradOutShape: UnsafePointer<Int64>?, _ gradOutNdim: Int64,
                                 _ x: UnsafeRawPointer?, _ xShape: UnsafePointer<Int64>?, _ xNdim: Int64,
                                 _ poolGeometry: UnsafePointer<Int64>?,
                                 _ gradX: UnsafeMutableRawPointer?,
                                 _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let dt = try parseDType(dtype, op: "pool2d_backward")
        let kind = try parsePoolKind(poolKind, op: "pool2d_backward")
        let op = kind == .max ? "max_pool2d_backward" : "avg_pool2d_backward"
        let gs = try readShape(gradOutShape, ndim: gradOutNdim, name: "grad_out", op: op, rank: 4, layout: "(N, C, Ho, Wo)")
        let xs = try readShape(xShape, ndim: xNdim, name: "x", op: op, rank: 4, layout: "(N, C, H, W)")
        let geo = try readPoolGeometry(poolGeometry, op: op)
        let g = try Pool2DGeometry(op: op, kind: kind, xShape: xs, kernelSize: geo.kernel, stride: geo.stride,
                                   padding: geo.padding)
        try g.checkGradOut(op: op, gs)
        switch dt {
        case .float32: try pool2dBackwardC(Float.self, g, kind, op, gradOut, x, gradX)
        case .float64: try pool2dBackwardC(Double.self, g, kind, op, gradOut, x, gradX)
        }
    }
}

func pool2dBackwardC<T: CNNScalar>(_: T.Type, _ g: Pool2DGeometry, _ kind: PoolKind, _ op: String,
                                   _ gradOut: UnsafeRawPointer?, _ x: UnsafeRawPointer?,
                                   _ gradX: UnsafeMutableRawPointer?) throws {
    let got: Tensor<T> = try borrow(gradOut, shape: g.outputShape, name: "grad_out", op: op)
    let xt: Tensor<T> = try borrow(x, shape: g.inputShape, name: "x", op: op)
    let gxt: Tensor<T> = try borrowOut(gradX, shape: g.inputShape, name: "grad_x", op: op)
    try checkNoOverlapOutputs(op: op, [("grad_x", gxt)], [("grad_out", got), ("x", xt)])
    pool2dBackward(g, kind: kind, gradOut: got.pointer, x: xt.pointer, gradX: gxt.pointer)
}

// MARK: - linear

/// `scnn_linear_forward`: y = x @ weight.T + bias.
@_cdecl("scnn_linear_forward")
public func scnn_linear_forward(_ dtype: Int32,
                                _ x: UnsafeRawPointer?, _ xShape: UnsafePointer<Int64>?, _ xNdim: Int64,
                                _ weight: UnsafeRawPointer?, _ weightShape: UnsafePointer<Int64>?, _ weightNdim: Int64,
                                _ bias: UnsafeRawPointer?, _ biasLen: Int64,
                                _ y: UnsafeMutableRawPointer?, _ yShapeOut: UnsafeMutablePointer<Int64>?,
                                _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let op = "linear"
        let dt = try parseDType(dtype, op: op)
        let xs = try readShape(xShape, ndim: xNdim, name: "x", op: op, rank: 2, layout: "(N, in_features)")
        let ws = try readShape(weightShape, ndim: weightNdim, name: "weight", op: op, rank: 2,
                               layout: "(out_features, in_features)")
        let bs = try readBias(bias, biasLen, op: op)
        let g = try LinearGeometry(op: op, xShape: xs, weightShape: ws, biasShape: bs)
        switch dt {
        case .float32: try linearForwardC(Float.self, g, x, weight, bs != nil, bias, y)
        case .float64: try linearForwardC(Double.self, g, x, weight, bs != nil, bias, y)
        }
        if let yShapeOut {  // element by element: g.outputShape would build an array per call
            yShapeOut[0] = Int64(g.batch); yShapeOut[1] = Int64(g.outFeatures)
        }
    }
}

func linearForwardC<T: CNNScalar>(_: T.Type, _ g: LinearGeometry, _ x: UnsafeRawPointer?, _ weight: UnsafeRawPointer?,
                                  _ hasBias: Bool, _ bias: UnsafeRawPointer?, _ y: UnsafeMutableRawPointer?) throws {
    let op = "linear"
    // Pointer level, as conv2dForwardC: the Tensor-level linear re-derived the geometry and took a
    // borrowed Tensor (an object and a shape array) per argument. Same checks, same messages; the
    // geometry checked the counts.
    let xCount = g.batch * g.inFeatures, wCount = g.outFeatures * g.inFeatures, yCount = g.batch * g.outFeatures
    let xp = try checkData(x, count: xCount, shape: g.inputShape, name: "x", op: op, as: T.self)
    let wp = try checkData(weight, count: wCount, shape: g.weightShape, name: "weight", op: op, as: T.self)
    let bp = hasBias ? try checkData(bias, count: g.outFeatures, shape: g.biasShape, name: "bias", op: op, as: T.self) : nil
    guard let y else { return }
    let yp = try checkData(UnsafeRawPointer(y), count: yCount, shape: g.outputShape, name: "out", op: op, as: T.self)
    let size = MemoryLayout<T>.stride
    let out = Region("out", yp, count: yCount, elementSize: size)
    try checkDisjoint(op: op, out, Region("x", xp, count: xCount, elementSize: size))
    try checkDisjoint(op: op, out, Region("weight", wp, count: wCount, elementSize: size))
    if hasBias { try checkDisjoint(op: op, out, Region("bias", bp, count: g.outFeatures, elementSize: size)) }
    // N = 0: nothing to compute. Otherwise x, weight, bias and y are non-empty (in, out >= 1).
    guard g.batch > 0, let xp, let wp, let yp else { return }
    linearForward(batch: g.batch, inFeatures: g.inFeatures, outFeatures: g.outFeatures,
                  x: xp, weight: wp, bias: bp, y: UnsafeMutablePointer(mutating: yp))
}

/// `scnn_linear_backward`: grad_x, grad_weight, grad_bias (each optional).
@_cdecl("scnn_linear_backward")
public func scnn_linear_backward(_ dtype: Int32,
                                 _ gradOut: UnsafeRawPointer?, _ gradOutShape: UnsafePointer<Int64>?, _ gradOutNdim: Int64,
                                 _ x: UnsafeRawPointer?, _ xShape: UnsafePointer<Int64>?, _ xNdim: Int64,
                                 _ weight: UnsafeRawPointer?, _ weightShape: UnsafePointer<Int64>?, _ weightNdim: Int64,
                                 _ gradX: UnsafeMutableRawPointer?, _ gradWeight: UnsafeMutableRawPointer?,
                                 _ gradBias: UnsafeMutableRawPointer?,
                                 _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let op = "linear_backward"
        let dt = try parseDType(dtype, op: op)
        let gs = try readShape(gradOutShape, ndim: gradOutNdim, name: "grad_out", op: op, rank: 2, layout: "(N, out_features)")
        let xs = try readShape(xShape, ndim: xNdim, name: "x", op: op, rank: 2, layout: "(N, in_features)")
        let ws = try readShape(weightShape, ndim: weightNdim, name: "weight", op: op, rank: 2,
                               layout: "(out_features, in_features)")
        let g = try LinearGeometry(op: op, xShape: xs, weightShape: ws, biasShape: nil)
        try g.checkGradOut(op: op, gs)
        switch dt {
        case .float32: try linearBackwardC(Float.self, g, gradOut, x, weight, gradX, gradWeight, gradBias)
        case .float64: try linearBackwardC(Double.self, g, gradOut, x, weight, gradX, gradWeight, gradBias)
        }
    }
}

func linearBackwardC<T: CNNScalar>(_: T.Type, _ g: LinearGeometry, _ gradOut: UnsafeRawPointer?,
                                   _ x: UnsafeRawPointer?, _ weight: UnsafeRawPointer?,
                                   _ gradX: UnsafeMutableRawPointer?, _ gradWeight: UnsafeMutableRawPointer?,
                                   _ gradBias: UnsafeMutableRawPointer?) throws {
    let o = try borrowBackwardOperands(T.self, op: "linear_backward", outputShape: g.outputShape,
                                       inputShape: g.inputShape, weightShape: g.weightShape, biasShape: g.biasShape,
                                       gradOut, x, weight, gradX, gradWeight, gradBias)
    linearBackward(batch: g.batch, inFeatures: g.inFeatures, outFeatures: g.outFeatures,
                   gradOut: o.gradOut, x: o.x, weight: o.weight,
                   gradX: o.gradX, gradWeight: o.gradWeight, gradBias: o.gradBias, accumulate: false)
}

// MARK: - activations

/// Which activation `act_kind` names, with its Python name.
func parseActivation(_ raw: Int32, op: String) throws -> (isSigmoid: Bool, name: String) {
    switch raw {
    case 0: return (true, "sigmoid")
    case 1: return (false, "relu")
    default: throw SwiftCNNError.value("\(op): act_kind must be SCNN_ACT_SIGMOID (0) or SCNN_ACT_RELU (1), got \(raw)")
    }
}

/// `scnn_activation_forward`: y = sigmoid(x) or relu(x) over `count` elements; y may equal x.
@_cdecl("scnn_activation_forward")
public func scnn_activation_forward(_ dtype: Int32, _ actKind: Int32,
                                    _ x: UnsafeRawPointer?, _ count: Int64, _ y: UnsafeMutableRawPointer?,
                                    _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let dt = try parseDType(dtype, op: "activation")
        let act = try parseActivation(actKind, op: "activation")
        let n = try checkCount(count, op: act.name)
        switch dt {
        case .float32: try activationForwardC(Float.self, act.isSigmoid, act.name, x, n, y)
        case .float64: try activationForwardC(Double.self, act.isSigmoid, act.name, x, n, y)
        }
    }
}

func activationForwardC<T: CNNScalar>(_: T.Type, _ isSigmoid: Bool, _ op: String, _ x: UnsafeRawPointer?, _ n: Int,
                                      _ y: UnsafeMutableRawPointer?) throws {
    // Pointer level: the Tensor-level sigmoid/relu cost two borrowed Tensors (an object and a
    // shape array each) per call. Same checks and messages: NULL only when empty, aligned, and out
    // either x itself (in place) or not overlapping it.
    let xp = try checkData(x, count: n, shape: [n], name: "x", op: op, as: T.self)
    let yp = try checkData(UnsafeRawPointer(y), count: n, shape: [n], name: "out", op: op, as: T.self)
    guard n > 0, let xp, let yp else { return }
    if xp != yp {
        let size = MemoryLayout<T>.stride
        try checkDisjoint(op: op, Region("out", yp, count: n, elementSize: size), Region("x", xp, count: n, elementSize: size))
    }
    let y = UnsafeMutablePointer(mutating: yp)
    if isSigmoid { sigmoidForward(count: n, x: xp, y: y) } else { reluForward(count: n, x: xp, y: y) }
}

/// `scnn_activation_backward`: sigmoid (saved = y) or relu (saved = x) gradient; grad_x may equal grad_out.
@_cdecl("scnn_activation_backward")
public func scnn_activation_backward(_ dtype: Int32, _ actKind: Int32,
                                     _ gradOut: UnsafeRawPointer?, _ saved: UnsafeRawPointer?, _ count: Int64,
                                     _ gradX: UnsafeMutableRawPointer?,
                                     _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let dt = try parseDType(dtype, op: "activation_backward")
        let act = try parseActivation(actKind, op: "activation_backward")
        let op = act.name + "_backward"
        let n = try checkCount(count, op: op)
        switch dt {
        case .float32: try activationBackwardC(Float.self, act.isSigmoid, op, gradOut, saved, n, gradX)
        case .float64: try activationBackwardC(Double.self, act.isSigmoid, op, gradOut, saved, n, gradX)
        }
    }
}

func activationBackwardC<T: CNNScalar>(_: T.Type, _ isSigmoid: Bool, _ op: String, _ gradOut: UnsafeRawPointer?,
                                       _ saved: UnsafeRawPointer?, _ n: Int, _ gradX: UnsafeMutableRawPointer?) throws {
    let savedName = isSigmoid ? "y" : "x"
    // Pointer level, as activationForwardC, with the Tensor-level ops' checks and messages.
    let gp = try checkData(gradOut, count: n, shape: [n], name: "grad_out", op: op, as: T.self)
    let sp = try checkData(saved, count: n, shape: [n], name: savedName, op: op, as: T.self)
    let gxp = try checkData(UnsafeRawPointer(gradX), count: n, shape: [n], name: "grad_x", op: op, as: T.self)
    guard n > 0, let gp, let sp, let gxp else { return }
    // The core accepts grad_x identical to either input; only grad_out is documented, and grad_x
    // over the saved tensor is harmless too (each element reads its inputs before writing).
    let size = MemoryLayout<T>.stride
    let out = Region("out", gxp, count: n, elementSize: size)
    if gxp != gp { try checkDisjoint(op: op, out, Region("grad_out", gp, count: n, elementSize: size)) }
    if gxp != sp { try checkDisjoint(op: op, out, Region(savedName, sp, count: n, elementSize: size)) }
    let gx = UnsafeMutablePointer(mutating: gxp)
    if isSigmoid {
        sigmoidBackward(count: n, gradOut: gp, y: sp, gradX: gx)
    } else {
        reluBackward(count: n, gradOut: gp, x: sp, gradX: gx)
    }
}

// MARK: - softmax and losses

/// `scnn_softmax`: probs = softmax(logits) over axis 1.
@_cdecl("scnn_softmax")
public func scnn_softmax(_ dtype: Int32,
                         _ logits: UnsafeRawPointer?, _ logitsShape: UnsafePointer<Int64>?, _ logitsNdim: Int64,
                         _ probs: UnsafeMutableRawPointer?,
                         _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let op = "softmax"
        let dt = try parseDType(dtype, op: op)
        let (n, k) = try readLogitsShape2(logitsShape, logitsNdim, op: op)
        switch dt {
        case .float32: try softmaxC(Float.self, n, k, logits, probs)
        case .float64: try softmaxC(Double.self, n, k, logits, probs)
        }
    }
}

/// (N, K) logits with K >= 1.
func readLogitsShape(_ shape: UnsafePointer<Int64>?, _ ndim: Int64, op: String) throws -> [Int] {
    let (n, k) = try readLogitsShape2(shape, ndim, op: op)
    return [n, k]
}

/// readLogitsShape as a pair, with no array in the common case (a valid shape).
@inline(__always)
func readLogitsShape2(_ shape: UnsafePointer<Int64>?, _ ndim: Int64, op: String) throws -> (Int, Int) {
    if let s = readShape2IfValid(shape, ndim), s.1 >= 1 { return s }
    let ls = try readShape(shape, ndim: ndim, name: "logits", op: op, rank: 2, layout: "(N, K)")
    guard ls[1] >= 1 else {
        throw SwiftCNNError.value("\(op): logits must have at least one class (K >= 1), got shape \(describeShape(ls))")
    }
    return (ls[0], ls[1])
}

func softmaxC<T: CNNScalar>(_: T.Type, _ n: Int, _ k: Int, _ logits: UnsafeRawPointer?,
                            _ probs: UnsafeMutableRawPointer?) throws {
    // Pointer level (no borrowed Tensors), with the Tensor-level softmax's checks and messages.
    let op = "softmax"
    let count = n * k  // checked by readShape
    let lp = try checkData(logits, count: count, shape: [n, k], name: "logits", op: op, as: T.self)
    let pp = try checkData(UnsafeRawPointer(probs), count: count, shape: [n, k], name: "out", op: op, as: T.self)
    guard count > 0, let lp, let pp else { return }
    let size = MemoryLayout<T>.stride
    try checkDisjoint(op: op, Region("out", pp, count: count, elementSize: size),
                      Region("logits", lp, count: count, elementSize: size))
    softmaxForward(batch: n, classes: k, logits: lp, probs: UnsafeMutablePointer(mutating: pp))
}

/// `scnn_softmax_cross_entropy`: batch-mean loss and grad_logits, with class labels or probabilities.
@_cdecl("scnn_softmax_cross_entropy")
public func scnn_softmax_cross_entropy(_ dtype: Int32,
                                       _ logits: UnsafeRawPointer?, _ logitsShape: UnsafePointer<Int64>?, _ logitsNdim: Int64,
                                       _ labels: UnsafePointer<Int64>?, _ labelsLen: Int64,
                                       _ targetProbs: UnsafeRawPointer?, _ targetShape: UnsafePointer<Int64>?,
                                       _ targetNdim: Int64,
                                       _ lossOut: UnsafeMutablePointer<Double>?, _ gradLogits: UnsafeMutableRawPointer?,
                                       _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let op = "softmax_cross_entropy"
        let dt = try parseDType(dtype, op: op)
        let (n, k) = try readLogitsShape2(logitsShape, logitsNdim, op: op)
        var ls: [Int] { [n, k] }  // for messages and the general path only: no array on the fast path
        // Which target form: labels when given; probabilities when given; with both NULL (an empty
        // batch) the one whose shape is described (target_ndim > 0 means probabilities).
        guard labels == nil || targetProbs == nil else {
            throw SwiftCNNError.value("\(op): pass exactly one of labels and target_probs, got both")
        }
        let useLabels = labels != nil || (targetProbs == nil && targetNdim == 0)
        if useLabels {
            guard labelsLen >= 0 else {
                throw SwiftCNNError.value("\(op): target (class indices) length must be >= 0, got \(labelsLen)")
            }
            guard labelsLen == Int64(n) else {
                throw SwiftCNNError.value(
                    "\(op): target must have shape (\(n),) to match logits \(describeShape(ls)), got (\(labelsLen),)")
            }
            try checkPointer(labels.map(UnsafeRawPointer.init), count: n, alignment: MemoryLayout<Int64>.alignment,
                             name: "target", op: op)
            if let labels {
                for i in 0..<n where labels[i] < 0 || labels[i] >= Int64(k) {
                    throw SwiftCNNError.value(
                        "\(op): target (class indices) must be in [0, \(k)), got \(labels[i]) at index \(i)")
                }
            }
        } else {
            let targetShapeRead = try readShape(targetShape, ndim: targetNdim, name: "target", op: op)
            guard targetShapeRead == ls else {
                throw SwiftCNNError.value(
                    "\(op): target must have the shape of logits \(describeShape(ls)), got \(describeShape(targetShapeRead))")
            }
        }
        try checkPointer(lossOut.map(UnsafeRawPointer.init), count: 0, alignment: MemoryLayout<Double>.alignment,
                         name: "loss_out", op: op)
        let loss: Double
        switch dt {
        case .float32: loss = try softmaxCrossEntropyC(Float.self, n, k, logits, useLabels, labels, targetProbs, gradLogits)
        case .float64: loss = try softmaxCrossEntropyC(Double.self, n, k, logits, useLabels, labels, targetProbs, gradLogits)
        }
        lossOut?.pointee = loss
    }
}

func softmaxCrossEntropyC<T: CNNScalar>(_: T.Type, _ n: Int, _ k: Int, _ logits: UnsafeRawPointer?, _ useLabels: Bool,
                                        _ labels: UnsafePointer<Int64>?, _ target: UnsafeRawPointer?,
                                        _ gradLogits: UnsafeMutableRawPointer?) throws -> Double {
    let op = "softmax_cross_entropy"
    var shape: [Int] { [n, k] }  // built only for messages and the general path
    if useLabels, n > 0, let labels {
        // The common case at pointer level: no borrowed Tensors or argument arrays (an object and an
        // array each). Same checks in the same order and the same messages as the general path below.
        let count = n * k  // checked by readShape
        let lp = try checkData(logits, count: count, shape: shape, name: "logits", op: op, as: T.self)
        var grad: UnsafeMutablePointer<T>? = nil
        if let gradLogits {
            let gp = try checkData(UnsafeRawPointer(gradLogits), count: count, shape: shape, name: "grad_logits", op: op,
                                   as: T.self)
            let size = MemoryLayout<T>.stride
            try checkDisjoint(op: op, Region("grad_logits", gp, count: count, elementSize: size),
                              Region("logits", lp, count: count, elementSize: size))
            grad = gp.map { UnsafeMutablePointer(mutating: $0) }
        }
        guard let lp else { return .nan }  // unreachable: non-NULL for count > 0 (checked above)
        return try softmaxCrossEntropy(batch: n, classes: k, logits: lp, labels: labels, gradLogits: grad)
    }
    let lt: Tensor<T> = try borrow(logits, shape: shape, name: "logits", op: op)
    var inputs: [(String, Tensor<T>)] = [("logits", lt)]
    var targetTensor: Tensor<T>? = nil
    if !useLabels {
        let tt: Tensor<T> = try borrow(target, shape: shape, name: "target", op: op)
        targetTensor = tt
        inputs.append(("target", tt))
    }
    var grad: UnsafeMutablePointer<T>? = nil
    if let gradLogits {
        let gt: Tensor<T> = try borrowOut(gradLogits, shape: shape, name: "grad_logits", op: op)
        try checkNoOverlapOutputs(op: op, [("grad_logits", gt)], inputs)
        grad = gt.pointer
    }
    if n == 0 { return .nan }
    if let tt = targetTensor {
        return softmaxCrossEntropy(batch: n, classes: k, logits: lt.pointer, targetProbabilities: tt.pointer,
                                   gradLogits: grad)
    }
    guard let labels else { return .nan }  // unreachable: checked non-NULL for N > 0
    return try softmaxCrossEntropy(batch: n, classes: k, logits: lt.pointer, labels: labels, gradLogits: grad)
}

/// `scnn_bce_with_logits`: mean BCE over `count` elements and its gradient.
@_cdecl("scnn_bce_with_logits")
public func scnn_bce_with_logits(_ dtype: Int32,
                                 _ logits: UnsafeRawPointer?, _ target: UnsafeRawPointer?, _ count: Int64,
                                 _ lossOut: UnsafeMutablePointer<Double>?, _ gradLogits: UnsafeMutableRawPointer?,
                                 _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let op = "binary_cross_entropy_with_logits"
        let dt = try parseDType(dtype, op: op)
        let n = try checkCount(count, op: op)
        try checkPointer(lossOut.map(UnsafeRawPointer.init), count: 0, alignment: MemoryLayout<Double>.alignment,
                         name: "loss_out", op: op)
        let loss: Double
        switch dt {
        case .float32: loss = try bceC(Float.self, n, logits, target, gradLogits)
        case .float64: loss = try bceC(Double.self, n, logits, target, gradLogits)
        }
        lossOut?.pointee = loss
    }
}

func bceC<T: CNNScalar>(_: T.Type, _ n: Int, _ logits: UnsafeRawPointer?, _ target: UnsafeRawPointer?,
                        _ gradLogits: UnsafeMutableRawPointer?) throws -> Double {
    let op = "binary_cross_entropy_with_logits"
    if n > 0 {
        // Pointer level, as softmaxCrossEntropyC: same checks, order and messages as below.
        let lp = try checkData(logits, count: n, shape: [n], name: "logits", op: op, as: T.self)
        let tp = try checkData(target, count: n, shape: [n], name: "target", op: op, as: T.self)
        var grad: UnsafeMutablePointer<T>? = nil
        if let gradLogits {
            let gp = try checkData(UnsafeRawPointer(gradLogits), count: n, shape: [n], name: "grad_logits", op: op,
                                   as: T.self)
            let size = MemoryLayout<T>.stride
            let out = Region("grad_logits", gp, count: n, elementSize: size)
            try checkDisjoint(op: op, out, Region("logits", lp, count: n, elementSize: size))
            try checkDisjoint(op: op, out, Region("target", tp, count: n, elementSize: size))
            grad = gp.map { UnsafeMutablePointer(mutating: $0) }
        }
        guard let lp, let tp else { return .nan }  // unreachable: non-NULL for n > 0 (checked above)
        return binaryCrossEntropyWithLogits(count: n, logits: lp, target: tp, gradLogits: grad)
    }
    let lt: Tensor<T> = try borrow(logits, shape: [n], name: "logits", op: op)
    let tt: Tensor<T> = try borrow(target, shape: [n], name: "target", op: op)
    var grad: UnsafeMutablePointer<T>? = nil
    if let gradLogits {
        let gt: Tensor<T> = try borrowOut(gradLogits, shape: [n], name: "grad_logits", op: op)
        try checkNoOverlapOutputs(op: op, [("grad_logits", gt)], [("logits", lt), ("target", tt)])
        grad = gt.pointer
    }
    return binaryCrossEntropyWithLogits(count: n, logits: lt.pointer, target: tt.pointer, gradLogits: grad)
}

// MARK: - correlate2d / convolve2d

/// `scnn_correlate2d`: scipy's correlate2d (flip_kernel 0) or convolve2d (flip_kernel 1).
@_cdecl("scnn_correlate2d")
public func scnn_correlate2d(_ dtype: Int32, _ mode: Int32, _ flipKernel: Int32,
                             _ image: UnsafeRawPointer?, _ imageShape: UnsafePointer<Int64>?, _ imageNdim: Int64,
                             _ kernel: UnsafeRawPointer?, _ kernelShape: UnsafePointer<Int64>?, _ kernelNdim: Int64,
                             _ out: UnsafeMutableRawPointer?, _ outShapeOut: UnsafeMutablePointer<Int64>?,
                             _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        guard flipKernel == 0 || flipKernel == 1 else {
            throw SwiftCNNError.value("correlate2d: flip_kernel must be 0 (correlate) or 1 (convolve), got \(flipKernel)")
        }
        let op = flipKernel == 1 ? "convolve2d" : "correlate2d"
        let dt = try parseDType(dtype, op: op)
        let m: CorrelationMode
        switch mode {
        case 0: m = .valid
        case 1: m = .same
        case 2: m = .full
        default:
            throw SwiftCNNError.value(
                "\(op): mode must be SCNN_MODE_VALID (0), SCNN_MODE_SAME (1) or SCNN_MODE_FULL (2), got \(mode)")
        }
        let ims = try readShape(imageShape, ndim: imageNdim, name: "image", op: op, rank: 2, layout: "(H, W)")
        let ks = try readShape(kernelShape, ndim: kernelNdim, name: "kernel", op: op, rank: 2, layout: "(kH, kW)")
        let g = try Correlation2DGeometry(op: op, imageShape: ims, kernelShape: ks, mode: m, flipKernel: flipKernel == 1)
        try checkSizes(g.outputShape, name: "out", op: op)
        switch dt {
        case .float32: try correlate2dC(Float.self, g, op, image, kernel, out)
        case .float64: try correlate2dC(Double.self, g, op, image, kernel, out)
        }
        writeShape(g.outputShape, to: outShapeOut)
    }
}

func correlate2dC<T: CNNScalar>(_: T.Type, _ g: Correlation2DGeometry, _ op: String, _ image: UnsafeRawPointer?,
                                _ kernel: UnsafeRawPointer?, _ out: UnsafeMutableRawPointer?) throws {
    let it: Tensor<T> = try borrow(image, shape: [g.height, g.width], name: "image", op: op)
    let kt: Tensor<T> = try borrow(kernel, shape: [g.kernelH, g.kernelW], name: "kernel", op: op)
    guard let out else { return }
    let ot: Tensor<T> = try borrowOut(out, shape: g.outputShape, name: "out", op: op)
    if g.flipKernel {
        _ = try convolve2d(it, kt, mode: g.mode, into: ot)
    } else {
        _ = try correlate2d(it, kt, mode: g.mode, into: ot)
    }
}

// MARK: - overlap checks on tensors

/// Value error if `out` shares memory with any of `inputs`: "op: out must not overlap x".
func checkNoOverlapTensors<T: CNNScalar>(op: String, _ out: Tensor<T>, _ inputs: [(String, Tensor<T>)]) throws {
    try checkNoOverlapOutputs(op: op, [("out", out)], inputs)
}

/// Value error if an output shares memory with an input or another output.
func checkNoOverlapOutputs<T: CNNScalar>(op: String, _ outputs: [(String, Tensor<T>)], _ inputs: [(String, Tensor<T>)]) throws {
    func region(_ e: (String, Tensor<T>)) -> Region {
        Region(e.0, UnsafeRawPointer(e.1.pointer), count: e.1.count, elementSize: MemoryLayout<T>.stride)
    }
    try checkNoOverlap(op: op, outputs: outputs.map(region), inputs: inputs.map(region))
}

// The functional ops of swiftcnn.h, one `scnn_op_fn` each: conv2d, pooling, linear, the
// activations, softmax, the losses and correlate2d, forward and backward.
//
// Each body reads its operands, builds the core's geometry value (the one validation of the op,
// which names the argument in its messages), declares its results, and when computing checks the
// data pointers (NULL only for empty tensors, aligned, results not overlapping inputs) and calls the
// core, specialized for Float and Double. Adding an op = one function here + one row in _core.c.

@_spi(Engine) import SwiftCNN

// MARK: - conv2d

/// The padding settings of conv2d at ints[2...4]: (mode, h, w), mode 0 = explicit (h, w), 1 = "same".
@inline(__always)
func convPadding(_ call: OpCall) throws -> ConvPadding {
    switch call.int(2) {
    case 0: return .explicit(call.int(3), call.int(4))
    case 1: return .same
    default: throw SwiftCNNError.value("\(call.op): padding mode must be 0 (explicit) or 1 (same), got \(call.int(2))")
    }
}

/// in (x, weight, bias?), ints (stride pair, padding (mode, h, w), dilation pair, groups), out (y).
/// groups 1 with explicit padding is the plain convolution (the common, per-call-fast case);
/// otherwise the grouped geometry (Ops/GroupedConv2D.swift).
@_cdecl("scnn_conv2d")
public func scnn_conv2d(_ c: UnsafeRawPointer?) -> Int32 {
    runOp("conv2d", expect: OpArity(inputs: 3, ints: 8, outputs: 1), c) { call in
        let x = call.input(0, "x"), w = call.input(1, "weight"), b = call.input(2, "bias")
        let dtype = try call.floatType(x)
        try w.requireDType(dtype, like: "x")
        var biasLength: Int? = nil
        if !b.isAbsent {
            try b.requireDType(dtype, like: "x")
            try b.requireRank(1, layout: "(out_channels,)")
            biasLength = b.dim(0)
        }
        let padding = try convPadding(call)
        if call.int(7) != 1 || padding == .same {
            try x.checkSizes(); try w.checkSizes()
            let g = try GroupedConv2DGeometry(op: "conv2d", xShape: x.shape, weightShape: w.shape, biasLength: biasLength,
                                              stride: call.pair(0), padding: padding, dilation: call.pair(5),
                                              groups: call.int(7))
            let y = call.output(0, "out")
            try y.declare(shape: g.outputShape, dtype: OperandType(dtype))
            guard call.compute else { return }
            switch dtype {
            case .float32: try groupedConv2dC(Float.self, call, g, x, w, b, y)
            case .float64: try groupedConv2dC(Double.self, call, g, x, w, b, y)
            }
            return
        }
        let g = try Conv2DGeometry(op: call.op.description, x: try x.shape4(layout: "(N, C, H, W)"),
                                   weight: try w.shape4(layout: "(out_channels, in_channels, kH, kW)"),
                                   biasLength: biasLength, stride: call.pair(0), padding: (call.int(3), call.int(4)),
                                   dilation: call.pair(5))
        let y = call.output(0, "out")
        try y.declare(rank: 4, g.batch, g.outChannels, g.outH, g.outW, dtype: OperandType(dtype))
        guard call.compute else { return }
        switch dtype {
        case .float32: try conv2dC(Float.self, call, g, x, w, b, y)
        case .float64: try conv2dC(Double.self, call, g, x, w, b, y)
        }
    }
}

func conv2dC<T: CNNScalar>(_: T.Type, _ call: OpCall, _ g: Conv2DGeometry, _ x: Operand, _ w: Operand, _ b: Operand,
                           _ y: ResultOperand) throws {
    let xp = try x.pointer(T.self, count: g.batch * g.inChannels * g.height * g.width)
    let wp = try w.pointer(T.self, count: g.outChannels * g.colRows)
    let bp = b.isAbsent ? nil : try b.pointer(T.self, count: g.outChannels)
    let yp = try y.operand.pointer(T.self, count: g.batch * g.outChannels * g.colCols)
    try call.checkDisjoint(y.operand, from: x, w, b)
    // N = 0: nothing to compute. Otherwise every pointer is non-NULL (the geometry has C, H, W, K,
    // kH, kW, Ho, Wo >= 1).
    guard g.batch > 0, let xp, let wp, let yp else { return }
    try conv2dForward(g, x: xp, weight: wp, bias: bp.map { UnsafePointer($0) }, y: yp)
}

func groupedConv2dC<T: CNNScalar>(_: T.Type, _ call: OpCall, _ g: GroupedConv2DGeometry, _ x: Operand, _ w: Operand,
                                  _ b: Operand, _ y: ResultOperand) throws {
    let xp = try x.pointer(T.self, count: x.count()), wp = try w.pointer(T.self, count: w.count())
    let bp = b.isAbsent ? nil : try b.pointer(T.self, count: g.outChannels)
    let yp = try y.pointer(T.self)
    try call.checkDisjoint(y.operand, from: x, w, b)
    guard g.batch > 0, let xp, let wp, let yp else { return }
    try groupedConv2dForward(g, x: xp, weight: wp, bias: bp.map { UnsafePointer($0) }, y: yp, workspace: Workspace<T>())
}

/// in (grad_out, x, weight), ints as conv2d, out (grad_x, grad_weight, grad_bias).
@_cdecl("scnn_conv2d_backward")
public func scnn_conv2d_backward(_ c: UnsafeRawPointer?) -> Int32 {
    runOp("conv2d_backward", expect: OpArity(inputs: 3, ints: 8, outputs: 3), c) { call in
        let gy = call.input(0, "grad_out"), x = call.input(1, "x"), w = call.input(2, "weight")
        let dtype = try call.floatType(gy)
        try x.requireDType(dtype, like: "grad_out")
        try w.requireDType(dtype, like: "grad_out")
        let gs = try gy.shape4(layout: "(N, K, Ho, Wo)")
        let t = OperandType(dtype)
        let gx = call.output(0, "grad_x"), gw = call.output(1, "grad_weight"), gb = call.output(2, "grad_bias")
        let padding = try convPadding(call)
        if call.int(7) != 1 || padding == .same {
            try x.checkSizes(); try w.checkSizes()
            let g = try GroupedConv2DGeometry(op: "conv2d_backward", xShape: x.shape, weightShape: w.shape, biasLength: nil,
                                              stride: call.pair(0), padding: padding, dilation: call.pair(5),
                                              groups: call.int(7))
            guard [gs.0, gs.1, gs.2, gs.3] == g.outputShape else {
                throw SwiftCNNError.value(
                    "conv2d_backward: grad_out must have shape \(describeShape(g.outputShape)), got \(describeShape(gy.shape))")
            }
            try gx.declare(shape: g.inputShape, dtype: t)
            try gw.declare(shape: g.weightShape, dtype: t)
            try gb.declare(rank: 1, g.outChannels, dtype: t)
            guard call.compute else { return }
            switch dtype {
            case .float32: try groupedConv2dBackwardC(Float.self, call, g, gy, x, w, gx, gw, gb)
            case .float64: try groupedConv2dBackwardC(Double.self, call, g, gy, x, w, gx, gw, gb)
            }
            return
        }
        let g = try Conv2DGeometry(op: call.op.description, x: try x.shape4(layout: "(N, C, H, W)"),
                                   weight: try w.shape4(layout: "(out_channels, in_channels, kH, kW)"),
                                   biasLength: nil, stride: call.pair(0), padding: (call.int(3), call.int(4)),
                                   dilation: call.pair(5))
        try g.checkGradOut(op: call.op.description, gs)
        try gx.declare(rank: 4, g.batch, g.inChannels, g.height, g.width, dtype: t)
        try gw.declare(rank: 4, g.outChannels, g.inChannels, g.kernelH, g.kernelW, dtype: t)
        try gb.declare(rank: 1, g.outChannels, dtype: t)
        guard call.compute else { return }
        switch dtype {
        case .float32: try conv2dBackwardC(Float.self, call, g, gy, x, w, gx, gw, gb)
        case .float64: try conv2dBackwardC(Double.self, call, g, gy, x, w, gx, gw, gb)
        }
    }
}

func groupedConv2dBackwardC<T: CNNScalar>(_: T.Type, _ call: OpCall, _ g: GroupedConv2DGeometry, _ gy: Operand,
                                          _ x: Operand, _ w: Operand, _ gx: ResultOperand, _ gw: ResultOperand,
                                          _ gb: ResultOperand) throws {
    let gyp = try gy.pointer(T.self, count: gy.count()), xp = try x.pointer(T.self, count: x.count())
    let wp = try w.pointer(T.self, count: w.count())
    let gxp = try gx.pointer(T.self), gwp = try gw.pointer(T.self), gbp = try gb.pointer(T.self)
    try call.checkDisjoint(results: gx.operand, gw.operand, gb.operand, from: gy, x, w)
    guard g.batch > 0, let gyp, let xp, let wp else {
        gwp?.update(repeating: 0, count: try w.count())
        gbp?.update(repeating: 0, count: g.outChannels)
        return
    }
    try groupedConv2dBackward(g, gradOut: gyp, x: xp, weight: wp, gradX: gxp, gradWeight: gwp, gradBias: gbp,
                              accumulate: false, workspace: Workspace<T>())
}

func conv2dBackwardC<T: CNNScalar>(_: T.Type, _ call: OpCall, _ g: Conv2DGeometry, _ gy: Operand, _ x: Operand,
                                   _ w: Operand, _ gx: ResultOperand, _ gw: ResultOperand, _ gb: ResultOperand) throws {
    let gyp = try gy.pointer(T.self, count: g.batch * g.outChannels * g.colCols)
    let xp = try x.pointer(T.self, count: g.batch * g.inChannels * g.height * g.width)
    let wp = try w.pointer(T.self, count: g.outChannels * g.colRows)
    let gxp = try gx.pointer(T.self), gwp = try gw.pointer(T.self), gbp = try gb.pointer(T.self)
    try call.checkDisjoint(results: gx.operand, gw.operand, gb.operand, from: gy, x, w)
    guard g.batch > 0, let gyp, let xp, let wp else {
        // Empty batch: the sums are empty (zeros); grad_x is empty.
        gwp?.update(repeating: 0, count: g.outChannels * g.colRows)
        gbp?.update(repeating: 0, count: g.outChannels)
        return
    }
    try conv2dBackward(g, gradOut: gyp, x: xp, weight: wp, gradX: gxp, gradWeight: gwp, gradBias: gbp,
                       accumulate: false, workspace: Workspace<T>())
}

// MARK: - pooling

/// in (x), ints (kernel pair, stride optional pair, padding pair), out (y).
@inline(__always)
func pool2dOp(_ op: StaticString, _ kind: PoolKind, _ c: UnsafeRawPointer?) -> Int32 {
    runOp(op, expect: OpArity(inputs: 1, ints: 7, outputs: 1), c) { call in
        let x = call.input(0, "x")
        let dtype = try call.floatType(x)
        let g = try Pool2DGeometry(op: call.op.description, kind: kind, x: try x.shape4(layout: "(N, C, H, W)"),
                                   kernelSize: call.pair(0), stride: call.optionalPair(2), padding: call.pair(5))
        let y = call.output(0, "out")
        try y.declare(rank: 4, g.batch, g.channels, g.outH, g.outW, dtype: OperandType(dtype))
        guard call.compute else { return }
        switch dtype {
        case .float32: try pool2dC(Float.self, call, g, kind, x, y)
        case .float64: try pool2dC(Double.self, call, g, kind, x, y)
        }
    }
}

func pool2dC<T: CNNScalar>(_: T.Type, _ call: OpCall, _ g: Pool2DGeometry, _ kind: PoolKind, _ x: Operand,
                           _ y: ResultOperand) throws {
    let xp = try x.pointer(T.self, count: g.batch * g.channels * g.height * g.width)
    let yp = try y.pointer(T.self)
    try call.checkDisjoint(y.operand, from: x)
    guard g.batch > 0, let xp, let yp else { return }
    pool2dForward(g, kind: kind, x: xp, y: yp, argmax: nil)
}

@_cdecl("scnn_max_pool2d")
public func scnn_max_pool2d(_ c: UnsafeRawPointer?) -> Int32 { pool2dOp("max_pool2d", .max, c) }
@_cdecl("scnn_avg_pool2d")
public func scnn_avg_pool2d(_ c: UnsafeRawPointer?) -> Int32 { pool2dOp("avg_pool2d", .average, c) }

/// in (grad_out, x), ints as the forward, out (grad_x).
@inline(__always)
func pool2dBackwardOp(_ op: StaticString, _ kind: PoolKind, _ c: UnsafeRawPointer?) -> Int32 {
    runOp(op, expect: OpArity(inputs: 2, ints: 7, outputs: 1), c) { call in
        let gy = call.input(0, "grad_out"), x = call.input(1, "x")
        let dtype = try call.floatType(gy)
        try x.requireDType(dtype, like: "grad_out")
        let gs = try gy.shape4(layout: "(N, C, Ho, Wo)")
        let g = try Pool2DGeometry(op: call.op.description, kind: kind, x: try x.shape4(layout: "(N, C, H, W)"),
                                   kernelSize: call.pair(0), stride: call.optionalPair(2), padding: call.pair(5))
        try g.checkGradOut(op: call.op.description, gs)
        let gx = call.output(0, "grad_x")
        try gx.declare(like: x, dtype: OperandType(dtype))
        guard call.compute else { return }
        switch dtype {
        case .float32: try pool2dBackwardC(Float.self, call, g, kind, gy, x, gx)
        case .float64: try pool2dBackwardC(Double.self, call, g, kind, gy, x, gx)
        }
    }
}

func pool2dBackwardC<T: CNNScalar>(_: T.Type, _ call: OpCall, _ g: Pool2DGeometry, _ kind: PoolKind, _ gy: Operand,
                                   _ x: Operand, _ gx: ResultOperand) throws {
    let gyp = try gy.pointer(T.self, count: g.batch * g.channels * g.outH * g.outW)
    let xp = try x.pointer(T.self, count: g.batch * g.channels * g.height * g.width)
    let gxp = try gx.pointer(T.self)
    try call.checkDisjoint(gx.operand, from: gy, x)
    guard g.batch > 0, let gyp, let xp, let gxp else { return }
    pool2dBackward(g, kind: kind, gradOut: gyp, x: xp, gradX: gxp)
}

@_cdecl("scnn_max_pool2d_backward")
public func scnn_max_pool2d_backward(_ c: UnsafeRawPointer?) -> Int32 { pool2dBackwardOp("max_pool2d_backward", .max, c) }
@_cdecl("scnn_avg_pool2d_backward")
public func scnn_avg_pool2d_backward(_ c: UnsafeRawPointer?) -> Int32 { pool2dBackwardOp("avg_pool2d_backward", .average, c) }

// MARK: - linear

/// in (x, weight, bias?), out (y).
@_cdecl("scnn_linear")
public func scnn_linear(_ c: UnsafeRawPointer?) -> Int32 {
    runOp("linear", expect: OpArity(inputs: 3, outputs: 1), c) { call in
        let x = call.input(0, "x"), w = call.input(1, "weight"), b = call.input(2, "bias")
        let dtype = try call.floatType(x)
        try w.requireDType(dtype, like: "x")
        if !b.isAbsent { try b.requireDType(dtype, like: "x") }
        try x.checkSizes(); try w.checkSizes(); if !b.isAbsent { try b.checkSizes() }
        let g = try LinearGeometry(op: call.op.description, xShape: x.shape, weightShape: w.shape, biasShape: b.isAbsent ? nil : b.shape)
        let y = call.output(0, "out")
        try y.declare(rank: 2, g.batch, g.outFeatures, dtype: OperandType(dtype))
        guard call.compute else { return }
        switch dtype {
        case .float32: try linearC(Float.self, call, g, x, w, b, y)
        case .float64: try linearC(Double.self, call, g, x, w, b, y)
        }
    }
}

func linearC<T: CNNScalar>(_: T.Type, _ call: OpCall, _ g: LinearGeometry, _ x: Operand, _ w: Operand, _ b: Operand,
                           _ y: ResultOperand) throws {
    let xp = try x.pointer(T.self, count: g.batch * g.inFeatures)
    let wp = try w.pointer(T.self, count: g.outFeatures * g.inFeatures)
    let bp = b.isAbsent ? nil : try b.pointer(T.self, count: g.outFeatures)
    let yp = try y.pointer(T.self)
    try call.checkDisjoint(y.operand, from: x, w, b)
    guard g.batch > 0, let xp, let wp, let yp else { return }
    linearForward(batch: g.batch, inFeatures: g.inFeatures, outFeatures: g.outFeatures,
                  x: xp, weight: wp, bias: bp.map { UnsafePointer($0) }, y: yp)
}

/// in (grad_out, x, weight), out (grad_x, grad_weight, grad_bias).
@_cdecl("scnn_linear_backward")
public func scnn_linear_backward(_ c: UnsafeRawPointer?) -> Int32 {
    runOp("linear_backward", expect: OpArity(inputs: 3, outputs: 3), c) { call in
        let gy = call.input(0, "grad_out"), x = call.input(1, "x"), w = call.input(2, "weight")
        let dtype = try call.floatType(gy)
        try x.requireDType(dtype, like: "grad_out")
        try w.requireDType(dtype, like: "grad_out")
        try gy.requireRank(2, layout: "(N, out_features)")
        try x.checkSizes(); try w.checkSizes()
        let g = try LinearGeometry(op: call.op.description, xShape: x.shape, weightShape: w.shape, biasShape: nil)
        try g.checkGradOut(op: call.op.description, gy.shape)
        let t = OperandType(dtype)
        let gx = call.output(0, "grad_x"), gw = call.output(1, "grad_weight"), gb = call.output(2, "grad_bias")
        try gx.declare(rank: 2, g.batch, g.inFeatures, dtype: t)
        try gw.declare(rank: 2, g.outFeatures, g.inFeatures, dtype: t)
        try gb.declare(rank: 1, g.outFeatures, dtype: t)
        guard call.compute else { return }
        switch dtype {
        case .float32: try linearBackwardC(Float.self, call, g, gy, x, w, gx, gw, gb)
        case .float64: try linearBackwardC(Double.self, call, g, gy, x, w, gx, gw, gb)
        }
    }
}

func linearBackwardC<T: CNNScalar>(_: T.Type, _ call: OpCall, _ g: LinearGeometry, _ gy: Operand, _ x: Operand,
                                   _ w: Operand, _ gx: ResultOperand, _ gw: ResultOperand, _ gb: ResultOperand) throws {
    let gyp = try gy.pointer(T.self, count: g.batch * g.outFeatures)
    let xp = try x.pointer(T.self, count: g.batch * g.inFeatures)
    let wp = try w.pointer(T.self, count: g.outFeatures * g.inFeatures)
    let gxp = try gx.pointer(T.self), gwp = try gw.pointer(T.self), gbp = try gb.pointer(T.self)
    try call.checkDisjoint(results: gx.operand, gw.operand, gb.operand, from: gy, x, w)
    // The core handles N = 0 (zero sums); pointers are non-NULL whenever their count is non-zero.
    let empty = UnsafeMutablePointer<T>(bitPattern: MemoryLayout<T>.alignment)!
    linearBackward(batch: g.batch, inFeatures: g.inFeatures, outFeatures: g.outFeatures,
                   gradOut: gyp ?? empty, x: xp ?? empty, weight: wp ?? empty,
                   gradX: gxp, gradWeight: gwp, gradBias: gbp, accumulate: false)
}

// MARK: - elementwise activations

/// The elementwise ops: one input, one result of its shape that may BE the input. leaky_relu
/// takes its negative_slope as its one real setting.
enum Elementwise {
    case sigmoid, relu, tanh, leakyRelu

    var reals: Int { self == .leakyRelu ? 1 : 0 }
}

@inline(__always)
func elementwiseOp(_ op: StaticString, _ kind: Elementwise, _ c: UnsafeRawPointer?) -> Int32 {
    runOp(op, expect: OpArity(inputs: 1, reals: kind.reals, outputs: 1), c) { call in
        let x = call.input(0, "x")
        let dtype = try call.floatType(x)
        try x.checkSizes()
        let y = call.output(0, "out")
        try y.declare(like: x, dtype: OperandType(dtype))
        guard call.compute else { return }
        switch dtype {
        case .float32: try elementwiseC(Float.self, call, kind, x, y)
        case .float64: try elementwiseC(Double.self, call, kind, x, y)
        }
    }
}

func elementwiseC<T: CNNScalar>(_: T.Type, _ call: OpCall, _ kind: Elementwise, _ x: Operand, _ y: ResultOperand) throws {
    let count = try x.count()
    let xp = try x.pointer(T.self, count: count), yp = try y.pointer(T.self)
    try call.checkDisjoint(y.operand, from: x, inPlace: true)
    guard count > 0, let xp, let yp else { return }
    switch kind {
    case .sigmoid: sigmoidForward(count: count, x: xp, y: yp)
    case .relu: reluForward(count: count, x: xp, y: yp)
    case .tanh: tanhForward(count: count, x: xp, y: yp)
    case .leakyRelu: leakyReluForward(count: count, x: xp, negativeSlope: T(call.real(0)), y: yp)
    }
}

@_cdecl("scnn_sigmoid")
public func scnn_sigmoid(_ c: UnsafeRawPointer?) -> Int32 { elementwiseOp("sigmoid", .sigmoid, c) }
@_cdecl("scnn_relu")
public func scnn_relu(_ c: UnsafeRawPointer?) -> Int32 { elementwiseOp("relu", .relu, c) }

/// in (grad_out, saved), out (grad_x of saved's shape; may BE grad_out). `saved` is the forward's
/// output y for sigmoid (f' = y(1 - y)) and tanh (f' = 1 - y^2), its input x for relu and leaky_relu.
@inline(__always)
func elementwiseBackwardOp(_ op: StaticString, _ kind: Elementwise, _ savedName: StaticString, _ c: UnsafeRawPointer?) -> Int32 {
    runOp(op, expect: OpArity(inputs: 2, reals: kind.reals, outputs: 1), c) { call in
        let gy = call.input(0, "grad_out"), saved = call.input(1, savedName)
        let dtype = try call.floatType(gy)
        try saved.requireDType(dtype, like: "grad_out")
        try gy.checkSizes()
        try saved.requireShape(of: gy)
        let gx = call.output(0, "grad_x")
        try gx.declare(like: gy, dtype: OperandType(dtype))
        guard call.compute else { return }
        switch dtype {
        case .float32: try elementwiseBackwardC(Float.self, call, kind, gy, saved, gx)
        case .float64: try elementwiseBackwardC(Double.self, call, kind, gy, saved, gx)
        }
    }
}

func elementwiseBackwardC<T: CNNScalar>(_: T.Type, _ call: OpCall, _ kind: Elementwise, _ gy: Operand, _ saved: Operand,
                                        _ gx: ResultOperand) throws {
    let count = try gy.count()
    let gyp = try gy.pointer(T.self, count: count), sp = try saved.pointer(T.self, count: count)
    let gxp = try gx.pointer(T.self)
    try call.checkDisjoint(gx.operand, from: gy, saved, inPlace: true)
    guard count > 0, let gyp, let sp, let gxp else { return }
    switch kind {
    case .sigmoid: sigmoidBackward(count: count, gradOut: gyp, y: sp, gradX: gxp)
    case .relu: reluBackward(count: count, gradOut: gyp, x: sp, gradX: gxp)
    case .tanh: tanhBackward(count: count, gradOut: gyp, y: sp, gradX: gxp)
    case .leakyRelu: leakyReluBackward(count: count, gradOut: gyp, x: sp, negativeSlope: T(call.real(0)), gradX: gxp)
    }
}

@_cdecl("scnn_sigmoid_backward")
public func scnn_sigmoid_backward(_ c: UnsafeRawPointer?) -> Int32 { elementwiseBackwardOp("sigmoid_backward", .sigmoid, "y", c) }
@_cdecl("scnn_relu_backward")
public func scnn_relu_backward(_ c: UnsafeRawPointer?) -> Int32 { elementwiseBackwardOp("relu_backward", .relu, "x", c) }

// MARK: - softmax and losses

/// (N, K) logits with K >= 1.
func logitsShape(_ logits: Operand) throws -> (Int, Int) {
    let (n, k) = try logits.shape2(layout: "(N, K)")
    guard k >= 1 else {
        throw SwiftCNNError.value("\(logits.op): logits must have at least one class (K >= 1), got shape \(describeShape([n, k]))")
    }
    return (n, k)
}

/// in (logits), out (probs).
@_cdecl("scnn_softmax")
public func scnn_softmax(_ c: UnsafeRawPointer?) -> Int32 {
    runOp("softmax", expect: OpArity(inputs: 1, outputs: 1), c) { call in
        let logits = call.input(0, "logits")
        let dtype = try call.floatType(logits)
        let (rows, classes) = try logitsShape(logits)
        let probs = call.output(0, "out")
        try probs.declare(rank: 2, rows, classes, dtype: OperandType(dtype))
        guard call.compute else { return }
        switch dtype {
        case .float32: try softmaxC(Float.self, call, rows, classes, logits, probs)
        case .float64: try softmaxC(Double.self, call, rows, classes, logits, probs)
        }
    }
}

func softmaxC<T: CNNScalar>(_: T.Type, _ call: OpCall, _ rows: Int, _ classes: Int, _ logits: Operand,
                            _ probs: ResultOperand) throws {
    let lp = try logits.pointer(T.self, count: rows * classes), pp = try probs.pointer(T.self)
    try call.checkDisjoint(probs.operand, from: logits)
    guard rows > 0, let lp, let pp else { return }
    softmaxForward(batch: rows, classes: classes, logits: lp, probs: pp)
}

/// Checks int64 class labels (N,) against K classes: every value in [0, K).
func checkLabels(_ target: Operand, rows: Int, classes: Int) throws -> UnsafeMutablePointer<Int64>? {
    guard target.rawNdim == 1, target.dim(0) == rows else {
        throw SwiftCNNError.value(
            "\(target.op): target (class indices) must have shape (\(rows),) to match logits (\(rows), \(classes)), got shape \(describeShape(target.shape))")
    }
    let labels = try target.pointer(Int64.self, count: rows)
    if let labels {
        for i in 0..<rows where labels[i] < 0 || labels[i] >= Int64(classes) {
            throw SwiftCNNError.value("\(target.op): target (class indices) must be in [0, \(classes)), got \(labels[i]) at index \(i)")
        }
    }
    return labels
}

/// in (logits, target: int64 (N,) class indices or probabilities (N, K)), out (loss 0-d float64, grad_logits).
@_cdecl("scnn_softmax_cross_entropy")
public func scnn_softmax_cross_entropy(_ c: UnsafeRawPointer?) -> Int32 {
    runOp("softmax_cross_entropy", expect: OpArity(inputs: 2, outputs: 2), c) { call in
        let logits = call.input(0, "logits"), target = call.input(1, "target")
        let dtype = try call.floatType(logits)
        let (rows, classes) = try logitsShape(logits)
        let useLabels = try target.dtype() == .int64
        if useLabels {
            try target.checkSizes()
            _ = try checkLabels(target, rows: rows, classes: classes)
        } else {
            try target.requireDType(dtype, like: "logits")
            try target.checkSizes()
            try target.requireShape(of: logits)
        }
        let loss = call.output(0, "loss"), grad = call.output(1, "grad_logits")
        try loss.declare(rank: 0, dtype: .float64)
        try grad.declare(rank: 2, rows, classes, dtype: OperandType(dtype))
        guard call.compute else { return }
        // The loss is an output too: valid memory, disjoint from the inputs and grad_logits, checked
        // before anything is written.
        _ = try loss.pointer(Double.self)
        try call.checkDisjoint(loss.operand, from: logits, target, grad.operand)
        let value: Double
        switch dtype {
        case .float32: value = try softmaxCrossEntropyC(Float.self, call, rows, classes, logits, target, useLabels, grad)
        case .float64: value = try softmaxCrossEntropyC(Double.self, call, rows, classes, logits, target, useLabels, grad)
        }
        try loss.pointer(Double.self)?.pointee = value
    }
}

func softmaxCrossEntropyC<T: CNNScalar>(_: T.Type, _ call: OpCall, _ rows: Int, _ classes: Int, _ logits: Operand,
                                        _ target: Operand, _ useLabels: Bool, _ grad: ResultOperand) throws -> Double {
    let lp = try logits.pointer(T.self, count: rows * classes), gp = try grad.pointer(T.self)
    try call.checkDisjoint(grad.operand, from: logits)
    if useLabels {
        let labels = try checkLabels(target, rows: rows, classes: classes)
        try call.checkDisjoint(grad.operand, from: target)
        guard rows > 0, let lp, let labels else { return .nan }
        return try softmaxCrossEntropy(batch: rows, classes: classes, logits: lp, labels: labels, gradLogits: gp)
    }
    let tp = try target.pointer(T.self, count: rows * classes)
    try call.checkDisjoint(grad.operand, from: target)
    guard rows > 0, let lp, let tp else { return .nan }
    return softmaxCrossEntropy(batch: rows, classes: classes, logits: lp, targetProbabilities: tp, gradLogits: gp)
}

/// in (logits, target of logits' shape), out (loss 0-d float64, grad_logits).
@_cdecl("scnn_binary_cross_entropy_with_logits")
public func scnn_binary_cross_entropy_with_logits(_ c: UnsafeRawPointer?) -> Int32 {
    runOp("binary_cross_entropy_with_logits", expect: OpArity(inputs: 2, outputs: 2), c) { call in
        let logits = call.input(0, "logits"), target = call.input(1, "target")
        let dtype = try call.floatType(logits)
        try target.requireDType(dtype, like: "logits")
        try logits.checkSizes()
        try target.requireShape(of: logits)
        let loss = call.output(0, "loss"), grad = call.output(1, "grad_logits")
        try loss.declare(rank: 0, dtype: .float64)
        try grad.declare(like: logits, dtype: OperandType(dtype))
        guard call.compute else { return }
        // The loss is an output too: valid memory, disjoint from the inputs and grad_logits, checked
        // before anything is written.
        _ = try loss.pointer(Double.self)
        try call.checkDisjoint(loss.operand, from: logits, target, grad.operand)
        let value: Double
        switch dtype {
        case .float32: value = try bceC(Float.self, call, logits, target, grad)
        case .float64: value = try bceC(Double.self, call, logits, target, grad)
        }
        try loss.pointer(Double.self)?.pointee = value
    }
}

func bceC<T: CNNScalar>(_: T.Type, _ call: OpCall, _ logits: Operand, _ target: Operand, _ grad: ResultOperand) throws -> Double {
    let count = try logits.count()
    let lp = try logits.pointer(T.self, count: count), tp = try target.pointer(T.self, count: count)
    let gp = try grad.pointer(T.self)
    try call.checkDisjoint(grad.operand, from: logits, target)
    guard count > 0, let lp, let tp else { return .nan }
    return binaryCrossEntropyWithLogits(count: count, logits: lp, target: tp, gradLogits: gp)
}

// MARK: - correlate2d / convolve2d

/// in (image, kernel), ints (mode), out (out): scipy's correlate2d (or convolve2d with `flip`).
@inline(__always)
func signal2dOp(_ op: StaticString, flip: Bool, _ c: UnsafeRawPointer?) -> Int32 {
    runOp(op, expect: OpArity(inputs: 2, ints: 1, outputs: 1), c) { call in
        let image = call.input(0, "image"), kernel = call.input(1, "kernel")
        let dtype = try call.floatType(image)
        try kernel.requireDType(dtype, like: "image")
        let mode: CorrelationMode
        switch call.int(0) {
        case 0: mode = .valid
        case 1: mode = .same
        case 2: mode = .full
        default: throw SwiftCNNError.value("\(op): mode must be 'valid', 'same' or 'full' (0, 1, 2), got \(call.int(0))")
        }
        try image.checkSizes(); try kernel.checkSizes()
        let g = try Correlation2DGeometry(op: op.description, imageShape: image.shape, kernelShape: kernel.shape, mode: mode, flipKernel: flip)
        _ = try checkedElementCount(g.outputShape + [8], what: "\(op): the result's byte count")
        let out = call.output(0, "out")
        try out.declare(rank: 2, g.outputShape[0], g.outputShape[1], dtype: OperandType(dtype))
        guard call.compute else { return }
        switch dtype {
        case .float32: try signal2dC(Float.self, call, g, image, kernel, out)
        case .float64: try signal2dC(Double.self, call, g, image, kernel, out)
        }
    }
}

func signal2dC<T: CNNScalar>(_: T.Type, _ call: OpCall, _ g: Correlation2DGeometry, _ image: Operand, _ kernel: Operand,
                             _ out: ResultOperand) throws {
    let it = try image.tensor(T.self), kt = try kernel.tensor(T.self), ot = try out.tensor(T.self)
    try call.checkDisjoint(out.operand, from: image, kernel)
    if g.flipKernel {
        _ = try convolve2d(it, kt, mode: g.mode, into: ot)
    } else {
        _ = try correlate2d(it, kt, mode: g.mode, into: ot)
    }
}

@_cdecl("scnn_correlate2d")
public func scnn_correlate2d(_ c: UnsafeRawPointer?) -> Int32 { signal2dOp("correlate2d", flip: false, c) }
@_cdecl("scnn_convolve2d")
public func scnn_convolve2d(_ c: UnsafeRawPointer?) -> Int32 { signal2dOp("convolve2d", flip: true, c) }

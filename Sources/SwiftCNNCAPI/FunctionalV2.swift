// The functional ops added in version 2 (API.md "New functional ops"): tanh, leaky_relu,
// batch_norm and adaptive_avg_pool2d, forward and backward. Same shape as Functional.swift: one
// `scnn_op_fn` per op. The geometry-level validation runs in both modes; the Tensor-level core
// functions, which validate everything again before writing anything, compute.

@_spi(Engine) import SwiftCNN

/// Copies a core result into the caller's declared result (same shape, checked by `declare`).
@inline(__always)
func copyResult<T: CNNScalar>(_ t: Tensor<T>, into r: ResultOperand) throws {
    try copyElements(from: t, to: r.tensor(T.self))
}

// MARK: - tanh, leaky_relu (the elementwise family of Functional.swift)

@_cdecl("scnn_tanh")
public func scnn_tanh(_ c: UnsafeRawPointer?) -> Int32 { elementwiseOp("tanh", .tanh, c) }

/// reals (negative_slope).
@_cdecl("scnn_leaky_relu")
public func scnn_leaky_relu(_ c: UnsafeRawPointer?) -> Int32 { elementwiseOp("leaky_relu", .leakyRelu, c) }
@_cdecl("scnn_tanh_backward")
public func scnn_tanh_backward(_ c: UnsafeRawPointer?) -> Int32 { elementwiseBackwardOp("tanh_backward", .tanh, "y", c) }

/// reals (negative_slope).
@_cdecl("scnn_leaky_relu_backward")
public func scnn_leaky_relu_backward(_ c: UnsafeRawPointer?) -> Int32 { elementwiseBackwardOp("leaky_relu_backward", .leakyRelu, "x", c) }

// MARK: - batch_norm

/// in (x, running_mean?, running_var?, weight?, bias?) — the running statistics are updated in
/// place in training mode —, ints (training), reals (momentum, eps), out (y).
@_cdecl("scnn_batch_norm")
public func scnn_batch_norm(_ c: UnsafeRawPointer?) -> Int32 {
    runOp("batch_norm", expect: OpArity(inputs: 5, ints: 1, reals: 2, outputs: 1), c) { call in
        let x = call.input(0, "x"), rm = call.input(1, "running_mean"), rv = call.input(2, "running_var")
        let w = call.input(3, "weight"), b = call.input(4, "bias")
        let dtype = try call.floatType(x)
        try x.checkSizes()
        _ = try BatchNormGeometry(op: "batch_norm", xShape: x.shape)
        for t in [rm, rv, w, b] where !t.isAbsent {
            try t.requireDType(dtype, like: "x")
            try t.checkSizes()
        }
        let y = call.output(0, "out")
        try y.declare(like: x, dtype: OperandType(dtype))
        guard call.compute else { return }
        try call.checkDisjoint(y.operand, from: x, rm, rv)
        try call.checkDisjoint(y.operand, from: w, b)
        switch dtype {
        case .float32: try batchNormC(Float.self, call, x, rm, rv, w, b, y)
        case .float64: try batchNormC(Double.self, call, x, rm, rv, w, b, y)
        }
    }
}

func batchNormC<T: CNNScalar>(_: T.Type, _ call: OpCall, _ x: Operand, _ rm: Operand, _ rv: Operand, _ w: Operand,
                              _ b: Operand, _ y: ResultOperand) throws {
    func optional(_ o: Operand) throws -> Tensor<T>? { o.isAbsent ? nil : try o.tensor(T.self) }
    _ = try batchNorm(try x.tensor(T.self), runningMean: try optional(rm), runningVar: try optional(rv),
                      weight: try optional(w), bias: try optional(b), training: call.int(0) != 0,
                      momentum: call.real(0), eps: call.real(1), into: try y.tensor(T.self))
}

/// in (grad_out, x, weight?), reals (eps), out (grad_x, grad_weight, grad_bias): the gradient of
/// training-mode batch norm through the batch statistics.
@_cdecl("scnn_batch_norm_backward")
public func scnn_batch_norm_backward(_ c: UnsafeRawPointer?) -> Int32 {
    runOp("batch_norm_backward", expect: OpArity(inputs: 3, reals: 1, outputs: 3), c) { call in
        let gy = call.input(0, "grad_out"), x = call.input(1, "x"), w = call.input(2, "weight")
        let dtype = try call.floatType(gy)
        try x.requireDType(dtype, like: "grad_out")
        try x.checkSizes()
        try gy.requireShape(of: x)
        let g = try BatchNormGeometry(op: "batch_norm_backward", xShape: x.shape)
        if !w.isAbsent { try w.requireDType(dtype, like: "grad_out"); try w.checkSizes() }
        let t = OperandType(dtype)
        let gx = call.output(0, "grad_x"), gw = call.output(1, "grad_weight"), gb = call.output(2, "grad_bias")
        try gx.declare(like: x, dtype: t)
        try gw.declare(rank: 1, g.channels, dtype: t)
        try gb.declare(rank: 1, g.channels, dtype: t)
        guard call.compute else { return }
        try call.checkDisjoint(results: gx.operand, gw.operand, gb.operand, from: gy, x, w)
        switch dtype {
        case .float32:
            let r = try batchNormBackward(gradOut: gy.tensor(Float.self), x: x.tensor(Float.self),
                                          weight: w.isAbsent ? nil : w.tensor(Float.self), eps: call.real(0))
            try copyResult(r.gradX, into: gx); try copyResult(r.gradWeight, into: gw); try copyResult(r.gradBias, into: gb)
        case .float64:
            let r = try batchNormBackward(gradOut: gy.tensor(Double.self), x: x.tensor(Double.self),
                                          weight: w.isAbsent ? nil : w.tensor(Double.self), eps: call.real(0))
            try copyResult(r.gradX, into: gx); try copyResult(r.gradWeight, into: gw); try copyResult(r.gradBias, into: gb)
        }
    }
}

// MARK: - adaptive_avg_pool2d

/// in (x), ints (output_size pair), out (y).
@_cdecl("scnn_adaptive_avg_pool2d")
public func scnn_adaptive_avg_pool2d(_ c: UnsafeRawPointer?) -> Int32 {
    runOp("adaptive_avg_pool2d", expect: OpArity(inputs: 1, ints: 2, outputs: 1), c) { call in
        let x = call.input(0, "x")
        let dtype = try call.floatType(x)
        try x.checkSizes()
        let g = try AdaptivePool2DGeometry(op: "adaptive_avg_pool2d", xShape: x.shape, outputSize: call.pair(0))
        let y = call.output(0, "out")
        try y.declare(shape: g.outputShape, dtype: OperandType(dtype))
        guard call.compute else { return }
        try call.checkDisjoint(y.operand, from: x)
        switch dtype {
        case .float32: _ = try adaptiveAvgPool2d(x.tensor(Float.self), outputSize: call.pair(0), into: y.tensor(Float.self))
        case .float64: _ = try adaptiveAvgPool2d(x.tensor(Double.self), outputSize: call.pair(0), into: y.tensor(Double.self))
        }
    }
}

/// in (grad_out, x), ints (output_size pair), out (grad_x).
@_cdecl("scnn_adaptive_avg_pool2d_backward")
public func scnn_adaptive_avg_pool2d_backward(_ c: UnsafeRawPointer?) -> Int32 {
    runOp("adaptive_avg_pool2d_backward", expect: OpArity(inputs: 2, ints: 2, outputs: 1), c) { call in
        let gy = call.input(0, "grad_out"), x = call.input(1, "x")
        let dtype = try call.floatType(gy)
        try x.requireDType(dtype, like: "grad_out")
        try x.checkSizes(); try gy.checkSizes()
        let g = try AdaptivePool2DGeometry(op: "adaptive_avg_pool2d_backward", xShape: x.shape, outputSize: call.pair(0))
        try g.checkGradOut(op: "adaptive_avg_pool2d_backward", gy.shape)
        let gx = call.output(0, "grad_x")
        try gx.declare(like: x, dtype: OperandType(dtype))
        guard call.compute else { return }
        try call.checkDisjoint(gx.operand, from: gy, x)
        switch dtype {
        case .float32:
            try copyResult(adaptiveAvgPool2dBackward(gradOut: gy.tensor(Float.self), x: x.tensor(Float.self),
                                                     outputSize: call.pair(0)), into: gx)
        case .float64:
            try copyResult(adaptiveAvgPool2dBackward(gradOut: gy.tensor(Double.self), x: x.tensor(Double.self),
                                                     outputSize: call.pair(0)), into: gx)
        }
    }
}

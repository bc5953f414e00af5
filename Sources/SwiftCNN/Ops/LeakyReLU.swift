// The leaky rectifier, elementwise: a forward/backward pair.
//
//     y = x            where x > 0
//     y = slope * x    elsewhere (x <= 0, and NaN: NaN * slope is NaN, so NaN propagates)
//
// Pointer level: no validation, `count` elements, `y` may be `x` and `gradX` may be `gradOut`.
// Chunked over the worker threads like the other activations (one formula per element, so results
// do not depend on the thread count). Tensor level: shapes checked, errors name the Python arguments.
//
// The slope is any Double, converted to T once (PyTorch's `negative_slope.to<scalar_t>()`). As in
// PyTorch, a NaN or infinite slope is accepted and simply enters the arithmetic: with slope = inf,
// x < 0 gives -inf and x = 0 gives 0 * inf = NaN; with slope = NaN every x <= 0 gives NaN. Nothing
// traps, and the result is what torch.nn.functional.leaky_relu returns for the same call.

/// y = x > 0 ? x : slope * x, elementwise; x (count), y (count), `y` may be `x`.
@inlinable
public func leakyReluForward<T: CNNScalar>(count: Int, x: UnsafePointer<T>, negativeSlope: T,
                                           y: UnsafeMutablePointer<T>) {
    forEachChunk(count: count, costPerElement: 1) { range in
        for i in range {
            let xi = x[i]
            y[i] = xi > 0 ? xi : xi * negativeSlope
        }
    }
}

/// gradX = gradOut * (x > 0 ? 1 : slope), elementwise; x is the forward INPUT. `gradX` may be `gradOut`.
///
/// dy/dx is 1 on x > 0 and slope on x < 0; at the kink x = 0 the slope is used (PyTorch's
/// `where(x > 0, grad, grad * slope)`), and a NaN x also takes the slope branch.
@inlinable
public func leakyReluBackward<T: CNNScalar>(count: Int, gradOut: UnsafePointer<T>, x: UnsafePointer<T>,
                                            negativeSlope: T, gradX: UnsafeMutablePointer<T>) {
    forEachChunk(count: count, costPerElement: 1) { range in
        for i in range {
            let g = gradOut[i]
            gradX[i] = x[i] > 0 ? g : g * negativeSlope
        }
    }
}

// MARK: - Tensor level

/// `leaky_relu(x, negative_slope=0.01, out=None)`: y = where(x > 0, x, negative_slope * x), into a
/// new tensor or `out` (which may be `x` itself). Any slope is accepted (see the file header).
///
///     x (any shape) -> y (same shape)
@inlinable
public func leakyRelu<T: CNNScalar>(_ x: Tensor<T>, negativeSlope: Double = 0.01,
                                    into out: Tensor<T>? = nil) throws -> Tensor<T> {
    let y = try makeOutput(out, shape: x.shape, op: "leaky_relu", inputs: [("x", x)], allowInPlace: true)
    leakyReluForward(count: x.count, x: x.pointer, negativeSlope: T(negativeSlope), y: y.pointer)
    return y
}

/// `leaky_relu_backward(grad_out, x, negative_slope=0.01)`: grad_out * where(x > 0, 1, negative_slope);
/// `x` is leaky_relu's input.
///
///     gradOut (any shape), x (same shape) -> gradX (same shape); `out` may be grad_out or x itself
@inlinable
public func leakyReluBackward<T: CNNScalar>(gradOut: Tensor<T>, x: Tensor<T>, negativeSlope: Double = 0.01,
                                            into out: Tensor<T>? = nil) throws -> Tensor<T> {
    try requireSameShape(op: "leaky_relu_backward", "grad_out", gradOut, "x", x)
    let gradX = try makeOutput(out, shape: x.shape, op: "leaky_relu_backward",
                               inputs: [("grad_out", gradOut), ("x", x)], allowInPlace: true)
    leakyReluBackward(count: x.count, gradOut: gradOut.pointer, x: x.pointer, negativeSlope: T(negativeSlope),
                      gradX: gradX.pointer)
    return gradX
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// The hyperbolic tangent, elementwise: a forward/backward pair.
//
// Pointer level: no validation, `count` elements, `y` may be `x` and `gradX` may be `gradOut` (each
// element is read before it is written). Large tensors are split into contiguous chunks over the
// worker threads; every element is computed by one thread with one formula, so results do not
// depend on the thread count. Tensor level: shapes checked, errors name the Python arguments.

/// tanh of one scalar: the C library's tanhf / tanh, chosen at compile time in each specialization.
///
/// (`CNNScalar` has no tanh requirement; libm's is accurate to an ulp or so and saturates to +-1
/// without overflow for any |x|. NaN propagates.)
@inlinable @inline(__always)
public func scalarTanh<T: CNNScalar>(_ x: T) -> T {
    if T.self == Float.self {
        return unsafeBitCast(tanhf(unsafeBitCast(x, to: Float.self)), to: T.self)
    }
    if T.self == Double.self {
        return unsafeBitCast(Glibc.tanh(unsafeBitCast(x, to: Double.self)), to: T.self)
    }
    return T(Glibc.tanh(Double(x)))
}

/// y = tanh(x) = (e^x - e^-x) / (e^x + e^-x), elementwise; x (count), y (count), `y` may be `x`.
@inlinable
public func tanhForward<T: CNNScalar>(count: Int, x: UnsafePointer<T>, y: UnsafeMutablePointer<T>) {
    forEachChunk(count: count, costPerElement: 16) { range in
        for i in range { y[i] = scalarTanh(x[i]) }
    }
}

/// gradX = gradOut * (1 - y^2), elementwise, where y = tanh(x) is the forward OUTPUT.
///
/// d/dx tanh(x) = 1 - tanh(x)^2 (differentiate the quotient: ((e^x + e^-x)^2 - (e^x - e^-x)^2) /
/// (e^x + e^-x)^2 = 1 - y^2), so, as for the sigmoid, the layer keeps y and not x. `gradX` may be `gradOut`.
@inlinable
public func tanhBackward<T: CNNScalar>(count: Int, gradOut: UnsafePointer<T>, y: UnsafePointer<T>,
                                       gradX: UnsafeMutablePointer<T>) {
    forEachChunk(count: count, costPerElement: 2) { range in
        for i in range {
            let yi = y[i]
            gradX[i] = gradOut[i] * (1 - yi * yi)
        }
    }
}

// MARK: - Tensor level

/// `tanh(x, out=None)`: y = tanh(x) elementwise, into a new tensor or `out` (which may be `x` itself).
///
///     x (any shape) -> y (same shape)
@inlinable
public func tanh<T: CNNScalar>(_ x: Tensor<T>, into out: Tensor<T>? = nil) throws -> Tensor<T> {
    let y = try makeOutput(out, shape: x.shape, op: "tanh", inputs: [("x", x)], allowInPlace: true)
    tanhForward(count: x.count, x: x.pointer, y: y.pointer)
    return y
}

/// `tanh_backward(grad_out, y)`: grad_out * (1 - y^2); `y` is tanh's output.
///
///     gradOut (any shape), y (same shape) -> gradX (same shape); `out` may be grad_out or y itself
@inlinable
public func tanhBackward<T: CNNScalar>(gradOut: Tensor<T>, y: Tensor<T>, into out: Tensor<T>? = nil) throws -> Tensor<T> {
    try requireSameShape(op: "tanh_backward", "grad_out", gradOut, "y", y)
    let gradX = try makeOutput(out, shape: y.shape, op: "tanh_backward", inputs: [("grad_out", gradOut), ("y", y)],
                               allowInPlace: true)
    tanhBackward(count: y.count, gradOut: gradOut.pointer, y: y.pointer, gradX: gradX.pointer)
    return gradX
}

/// Dropout (inverted, as PyTorch's): forward and backward through a mask.
///
///     mask[i] = 0            with probability p        (element dropped)
///             = 1 / (1 - p)  with probability 1 - p    (element kept, scaled so E[y] = x)
///     y = x * mask,   dL/dx = dL/dy * mask             (y is linear in x for a fixed mask)
///
/// The mask is drawn once per forward and kept for backward (the layer keeps it; the functional
/// form returns it). It holds the scale itself, as PyTorch's `noise` tensor does
/// (`noise.bernoulli_(1 - p).div_(1 - p)`; `input * noise`), so forward and backward are one
/// multiplication each. p = 1 gives an all-zero mask (never 1/0); p = 0 an all-ones mask.
///
/// Draws: element i, in row-major order, takes the i-th draw u = `nextUnitDouble()` (uniform in
/// [0, 1), multiples of 2^-53) of the generator and is dropped iff u < p, so P(dropped) = p exactly
/// for any p that is a multiple of 2^-53 and within 2^-53 otherwise. The same generator state gives
/// the same mask on every platform and for any thread count (the draws are sequential; the
/// multiplications are chunked over the threads, one formula per element). A NaN in x stays NaN
/// even where dropped (NaN * 0), as in PyTorch.

/// Throws `.value` unless 0 <= p <= 1 (NaN fails both): "Dropout: p must be in [0, 1], got 1.5".
@inlinable
public func checkDropoutProbability(op: String, _ p: Double) throws {
    guard p >= 0, p <= 1 else {
        throw SwiftCNNError.value("\(op): p (the dropout probability) must be in [0, 1], got \(p)")
    }
}

// MARK: - pointer level

/// Fills mask[0..<count] with 0 (probability p) or 1/(1-p), one draw per element in order.
/// Precondition (checked by callers): 0 <= p <= 1.
///
///     -> mask (count) overwritten; generator advanced by `count` draws
@inlinable
public func dropoutMask<T: CNNScalar>(count: Int, p: Double, generator: inout RandomGenerator,
                                      mask: UnsafeMutablePointer<T>) {
    // 1 - p in Double, rounded, then 1 / it in T: PyTorch's div_(1 - p) on a tensor of the input's type.
    let keep: T = p < 1 ? 1 / T(1 - p) : 0
    for i in 0..<count {
        mask[i] = generator.nextUnitDouble() < p ? 0 : keep
    }
}

/// y = x * mask, elementwise (forward); `y` may be `x`.
///
///     x (count), mask (count) -> y (count) overwritten
@inlinable
public func dropoutForward<T: CNNScalar>(count: Int, x: UnsafePointer<T>, mask: UnsafePointer<T>,
                                         y: UnsafeMutablePointer<T>) {
    forEachChunk(count: count, costPerElement: 1) { range in
        for i in range { y[i] = x[i] * mask[i] }
    }
}

/// gradX = gradOut * mask, elementwise, with the forward's mask (dy/dx = mask); `gradX` may be `gradOut`.
///
///     gradOut (count), mask (count) -> gradX (count) overwritten
@inlinable
public func dropoutBackward<T: CNNScalar>(count: Int, gradOut: UnsafePointer<T>, mask: UnsafePointer<T>,
                                          gradX: UnsafeMutablePointer<T>) {
    forEachChunk(count: count, costPerElement: 1) { range in
        for i in range { gradX[i] = gradOut[i] * mask[i] }
    }
}

// MARK: - Tensor level

/// A dropout mask of `shape`: each element 0 with probability p, else 1/(1-p), drawn from
/// `generator` in row-major order (see the file header).
///
/// Throws `.value` for p outside [0, 1] or NaN, or a bad shape; `.overflow` / `.memory` for sizes.
@inlinable
public func dropoutMask<T: CNNScalar>(shape: [Int], p: Double, generator: inout RandomGenerator,
                                      as: T.Type = T.self) throws -> Tensor<T> {
    try checkDropoutProbability(op: "dropout", p)
    let mask = try Tensor<T>(zeros: shape)
    dropoutMask(count: mask.count, p: p, generator: &generator, mask: mask.pointer)
    return mask
}

/// Training-mode dropout: draws a mask from `generator` and returns y = x * mask with the mask
/// (keep it for `dropoutBackward`). `out` may be `x` itself.
///
///     x (any shape) -> y (same shape), mask (same shape)
///
/// Throws `.value` for p outside [0, 1] or NaN, or a bad `out` (nothing is drawn then).
@inlinable
public func dropout<T: CNNScalar>(_ x: Tensor<T>, p: Double, generator: inout RandomGenerator,
                                  into out: Tensor<T>? = nil) throws -> (output: Tensor<T>, mask: Tensor<T>) {
    try checkDropoutProbability(op: "dropout", p)
    let y = try makeOutput(out, shape: x.shape, op: "dropout", inputs: [("x", x)], allowInPlace: true)
    let mask = try dropoutMask(shape: x.shape, p: p, generator: &generator, as: T.self)
    dropoutForward(count: x.count, x: x.pointer, mask: mask.pointer, y: y.pointer)
    return (y, mask)
}

/// Dropout with a given mask (the forward of a saved or hand-made mask): y = x * mask.
///
///     x (any shape), mask (same shape) -> y (same shape); `out` may be x or mask itself
@inlinable
public func dropout<T: CNNScalar>(_ x: Tensor<T>, mask: Tensor<T>, into out: Tensor<T>? = nil) throws -> Tensor<T> {
    try requireSameShape(op: "dropout", "mask", mask, "x", x)
    let y = try makeOutput(out, shape: x.shape, op: "dropout", inputs: [("x", x), ("mask", mask)], allowInPlace: true)
    dropoutForward(count: x.count, x: x.pointer, mask: mask.pointer, y: y.pointer)
    return y
}

/// dropout's backward: grad_out * mask, with the mask the forward used.
///
///     gradOut (any shape), mask (same shape) -> gradX (same shape); `out` may be grad_out or mask itself
@inlinable
public func dropoutBackward<T: CNNScalar>(gradOut: Tensor<T>, mask: Tensor<T>,
                                          into out: Tensor<T>? = nil) throws -> Tensor<T> {
    try requireSameShape(op: "dropout_backward", "grad_out", gradOut, "mask", mask)
    let gradX = try makeOutput(out, shape: mask.shape, op: "dropout_backward",
                               inputs: [("grad_out", gradOut), ("mask", mask)], allowInPlace: true)
    dropoutBackward(count: mask.count, gradOut: gradOut.pointer, mask: mask.pointer, gradX: gradX.pointer)
    return gradX
}

// Elementwise activations: sigmoid and ReLU, each a forward/backward pair.
//
// Pointer level: no validation, `count` elements, `y` may be `x` (in place) and `gradX` may be
// `gradOut`. Each element is read before it is written, so exact aliasing is safe. Large tensors
// are split into contiguous chunks over the worker threads; each element is computed by one thread
// with the same formula, so results do not depend on the thread count.
// Tensor level: shapes checked, errors name the Python arguments.

// MARK: - Sigmoid

/// y = sigmoid(x) = 1 / (1 + e^-x), elementwise; x (count), y (count), `y` may be `x`.
///
/// Evaluated as 1 / (1 + e) for x >= 0 and e / (1 + e) for x < 0, with e = e^-|x| in (0, 1]: the
/// exponent is never positive, so nothing overflows for any |x| (x = -1e4 gives 0, not 0/inf), and for
/// very negative x the result keeps full relative precision instead of underflowing through 1 - tiny.
/// NaN propagates.
@inlinable
public func sigmoidForward<T: CNNScalar>(count: Int, x: UnsafePointer<T>, y: UnsafeMutablePointer<T>) {
    forEachChunk(count: count, costPerElement: 16) { range in
        for i in range { y[i] = stableSigmoid(x[i]) }
    }
}

/// gradX = gradOut * y * (1 - y), elementwise, where y = sigmoid(x) is the forward OUTPUT.
///
/// The lecture's identity sigma'(x) = sigma(x) (1 - sigma(x)): the derivative needs only the output,
/// so the layer keeps y, not x. `gradX` may be `gradOut`.
@inlinable
public func sigmoidBackward<T: CNNScalar>(count: Int, gradOut: UnsafePointer<T>, y: UnsafePointer<T>,
                                          gradX: UnsafeMutablePointer<T>) {
    forEachChunk(count: count, costPerElement: 2) { range in
        for i in range {
            let yi = y[i]
            gradX[i] = gradOut[i] * (yi * (1 - yi))
        }
    }
}

/// One stable sigmoid (see `sigmoidForward`).
@inlinable @inline(__always)
public func stableSigmoid<T: CNNScalar>(_ x: T) -> T {
    let e = T.exp(-x.magnitude)
    return x >= 0 ? 1 / (1 + e) : e / (1 + e)
}

// MARK: - ReLU

/// y = max(x, 0), elementwise; `y` may be `x`. NaN propagates (as PyTorch's relu).
@inlinable
public func reluForward<T: CNNScalar>(count: Int, x: UnsafePointer<T>, y: UnsafeMutablePointer<T>) {
    forEachChunk(count: count, costPerElement: 1) { range in
        for i in range {
            let xi = x[i]
            y[i] = xi < 0 ? 0 : xi
        }
    }
}

/// gradX = gradOut where x > 0, else 0; x is the forward INPUT. `gradX` may be `gradOut`.
///
/// At the kink x = 0 the subgradient 0 is used, as PyTorch does.
@inlinable
public func reluBackward<T: CNNScalar>(count: Int, gradOut: UnsafePointer<T>, x: UnsafePointer<T>,
                                       gradX: UnsafeMutablePointer<T>) {
    forEachChunk(count: count, costPerElement: 1) { range in
        for i in range { gradX[i] = x[i] > 0 ? gradOut[i] : 0 }
    }
}

/// Runs `body` on contiguous chunks covering 0..<count, in parallel when count * costPerElement
/// is worth several threads (see `parallelChunks`).
@inlinable
func forEachChunk(count: Int, costPerElement: Int, _ body: (Range<Int>) -> Void) {
    let (work, overflow) = count.multipliedReportingOverflow(by: costPerElement)
    let chunks = parallelChunks(work: overflow ? Int.max : work)
    if chunks == 1 { return body(0..<count) }
    parallelFor(chunks) { chunk in body(chunkRange(chunk, of: chunks, total: count)) }
}

// MARK: - Tensor level

/// `sigmoid(x, out=None)`: a new tensor, or `out` (which may be `x` itself).
@inlinable
public func sigmoid<T: CNNScalar>(_ x: Tensor<T>, into out: Tensor<T>? = nil) throws -> Tensor<T> {
    let y = try makeOutput(out, shape: x.shape, op: "sigmoid", inputs: [("x", x)], allowInPlace: true)
    sigmoidForward(count: x.count, x: x.pointer, y: y.pointer)
    return y
}

/// `sigmoid_backward(grad_out, y)`: grad_out * y * (1 - y); `y` is sigmoid's output.
@inlinable
public func sigmoidBackward<T: CNNScalar>(gradOut: Tensor<T>, y: Tensor<T>, into out: Tensor<T>? = nil) throws -> Tensor<T> {
    try requireSameShape(op: "sigmoid_backward", "grad_out", gradOut, "y", y)
    let gradX = try makeOutput(out, shape: y.shape, op: "sigmoid_backward", inputs: [("grad_out", gradOut), ("y", y)],
                               allowInPlace: true)
    sigmoidBackward(count: y.count, gradOut: gradOut.pointer, y: y.pointer, gradX: gradX.pointer)
    return gradX
}

/// `relu(x, out=None)`: a new tensor, or `out` (which may be `x` itself).
@inlinable
public func relu<T: CNNScalar>(_ x: Tensor<T>, into out: Tensor<T>? = nil) throws -> Tensor<T> {
    let y = try makeOutput(out, shape: x.shape, op: "relu", inputs: [("x", x)], allowInPlace: true)
    reluForward(count: x.count, x: x.pointer, y: y.pointer)
    return y
}

/// `relu_backward(grad_out, x)`: grad_out * (x > 0); `x` is relu's input.
@inlinable
public func reluBackward<T: CNNScalar>(gradOut: Tensor<T>, x: Tensor<T>, into out: Tensor<T>? = nil) throws -> Tensor<T> {
    try requireSameShape(op: "relu_backward", "grad_out", gradOut, "x", x)
    let gradX = try makeOutput(out, shape: x.shape, op: "relu_backward", inputs: [("grad_out", gradOut), ("x", x)],
                               allowInPlace: true)
    reluBackward(count: x.count, gradOut: gradOut.pointer, x: x.pointer, gradX: gradX.pointer)
    return gradX
}

// MARK: - Shared argument checks of the Tensor-level ops in this file, Linear, Losses and Signal2D

/// `out` checked against the result's shape and against overlap with the inputs, or a new zero tensor.
///
/// Overlap is refused because the kernels read inputs after writing parts of the output. Only the
/// elementwise ops (`allowInPlace`) accept `out` identical to an input: same first element, same count.
@usableFromInline
func makeOutput<T: CNNScalar>(_ out: Tensor<T>?, shape: [Int], op: String, inputs: [(String, Tensor<T>)],
                              allowInPlace: Bool = false) throws -> Tensor<T> {
    guard let out else { return try Tensor<T>(zeros: shape) }
    guard out.shape == shape else {
        throw SwiftCNNError.value("\(op): out must have shape \(describeShape(shape)), got \(describeShape(out.shape))")
    }
    for (name, t) in inputs where memoryOverlaps(out, t) {
        let identical = out.pointer == t.pointer && out.count == t.count
        guard allowInPlace && identical else {
            throw SwiftCNNError.value("\(op): out must not overlap \(name)")
        }
    }
    return out
}

/// Whether two tensors share at least one element of memory.
@usableFromInline
func memoryOverlaps<T: CNNScalar>(_ a: Tensor<T>, _ b: Tensor<T>) -> Bool {
    guard a.count > 0, b.count > 0 else { return false }
    return a.pointer < b.pointer + b.count && b.pointer < a.pointer + a.count
}

/// Throws unless `a` and `b` have one shape: "op: grad_out must have the shape of y (2, 3), got (3, 2)".
@usableFromInline
func requireSameShape<T: CNNScalar>(op: String, _ aName: String, _ a: Tensor<T>, _ bName: String, _ b: Tensor<T>) throws {
    guard a.shape == b.shape else {
        throw SwiftCNNError.value(
            "\(op): \(aName) must have the shape of \(bName) \(describeShape(b.shape)), got \(describeShape(a.shape))")
    }
}

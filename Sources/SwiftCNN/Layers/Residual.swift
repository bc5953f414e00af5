/// A residual block: y = x + f(x), f being a chain of layers applied in order (a `Sequential`).
///
///     x (any shape) -> y (x's shape); f(x) must have x's shape
///
/// Backward: dL/dx = dL/dy * (I + df/dx)^T = dL/dy + f.backward(dL/dy): the skip connection passes
/// the gradient through unchanged and the branch adds its own. The branch's parameters accumulate
/// their gradients as in any Sequential.
///
/// Named like a nested Sequential: parameters and buffers "0.weight", "1.running_mean" (and
/// "2.0.weight" inside an outer Sequential at index 2). The mode is passed to every child. The
/// branch is a `Sequential`, so its fusions (Conv2d + ReLU/Sigmoid, ReLU/Sigmoid + MaxPool2d) apply.
public final class Residual<T: CNNScalar>: Layer, @unchecked Sendable, CustomStringConvertible {
    public typealias Scalar = T

    /// f: the branch.
    public let body: Sequential<T>

    let access = ExclusiveAccess(name: "Residual")
    @usableFromInline let training = TrainingFlag()
    @usableFromInline var inputShape: [Int]?
    @usableFromInline var output: Tensor<T>?
    @usableFromInline var gradInput: Tensor<T>?

    /// A block of `layers` (may be empty: the branch is then the identity and y = 2x). Throws
    /// `.value` if a layer object appears twice (as Sequential does).
    public init(_ layers: [any Layer<T>]) throws {
        body = try Sequential(layers)
    }

    /// `Residual(a, b, c)`.
    public convenience init(_ layers: any Layer<T>...) throws {
        try self.init(layers)
    }

    /// The branch's layers, in order.
    public var layers: [any Layer<T>] { body.layers }

    public var parameters: [Parameter<T>] { body.parameters }

    public var buffers: [Buffer<T>] { body.buffers }

    public var isTraining: Bool { training.isOn }

    public func setTraining(_ on: Bool) {
        training.set(on)
        body.setTraining(on)
    }

    public var lastInputShape: [Int]? { access.read { inputShape } }

    public func outputShape(forInput shape: [Int]) throws -> [Int] {
        let f = try body.outputShape(forInput: shape)
        try requireBranchShape(f, shape)
        return shape
    }

    @usableFromInline
    func requireBranchShape(_ f: [Int], _ x: [Int]) throws {
        guard f == x else {
            throw SwiftCNNError.value(
                "Residual: the layers' output f(x) must have the shape of x \(describeShape(x)), got \(describeShape(f))")
        }
    }

    @_specialize(where T == Float) @_specialize(where T == Double)
    public func forward(_ x: Tensor<T>, returning result: ForwardResult) throws -> Tensor<T> {
        try access.run {
            inputShape = nil
            let f = try body.forwardView(x)
            try requireBranchShape(f.shape, x.shape)
            // Our own buffer is never f (a child's buffer, or x itself for an identity branch); it
            // must avoid x when the caller feeds us our previous output.
            let y = try layerBuffer(&output, shape: x.shape, avoiding: x)
            addElementwise(count: x.count, x.pointer, f.pointer, into: y.pointer)
            inputShape = x.shape
            return try result.deliver(y)
        }
    }

    public func backward(_ gradOut: Tensor<T>) throws -> Tensor<T> {
        guard let gradX = try backward(gradOut, inputGradient: true) else {
            throw SwiftCNNError.runtime("Residual: backward produced no input gradient")
        }
        return gradX
    }

    /// dL/dx = gradOut + body.backward(gradOut); with `inputGradient: false` the branch still runs
    /// its backward (for its parameters) without its first layer's input gradient, and nil is returned.
    @_specialize(where T == Float) @_specialize(where T == Double)
    public func backward(_ gradOut: Tensor<T>, inputGradient: Bool) throws -> Tensor<T>? {
        try access.run {
            guard let shape = inputShape else {
                throw SwiftCNNError.runtime("Residual: backward called before forward")
            }
            try requireGradOutShape("Residual", gradOut, shape)
            guard body.lastInputShape == shape else {
                throw SwiftCNNError.runtime(
                    "Residual: its layers were run on another input since this block's forward; call forward again")
            }
            guard inputGradient else {
                _ = try body.backward(gradOut, inputGradient: false)
                return nil
            }
            let branch = try body.backward(gradOut)
            guard branch.shape == shape else {
                throw SwiftCNNError.runtime("Residual: the layers returned a gradient of the wrong shape")
            }
            // branch is a child's buffer or gradOut itself (identity branch); ours must avoid gradOut.
            let gradX = try layerBuffer(&gradInput, shape: shape, avoiding: gradOut)
            addElementwise(count: gradOut.count, gradOut.pointer, branch.pointer, into: gradX.pointer)
            return gradX
        }
    }

    public func zeroGrad() throws {
        try access.run { try body.zeroGrad() }
    }

    /// One child per line with its index, as a Sequential prints.
    public var description: String {
        let text = body.description
        return "Residual" + text.dropFirst("Sequential".count)
    }
}

/// c = a + b elementwise, chunked over the threads (one formula per element).
@inlinable
func addElementwise<T: CNNScalar>(count: Int, _ a: UnsafePointer<T>, _ b: UnsafePointer<T>,
                                  into c: UnsafeMutablePointer<T>) {
    forEachChunk(count: count, costPerElement: 1) { range in
        for i in range { c[i] = a[i] + b[i] }
    }
}

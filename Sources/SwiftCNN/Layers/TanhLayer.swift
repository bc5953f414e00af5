/// The hyperbolic tangent, elementwise, as PyTorch's `nn.Tanh`: y = tanh(x).
///
/// Keeps its OUTPUT y, not x: tanh'(x) = 1 - y^2 needs nothing else. Any shape.
public final class Tanh<T: CNNScalar>: Layer, @unchecked Sendable, CustomStringConvertible {
    public typealias Scalar = T

    let access = ExclusiveAccess(name: "Tanh")
    /// The last forward's output: returned as a view and read back by backward.
    @usableFromInline var output: Tensor<T>?
    /// Set once `output` holds a complete forward result (nil after a failed forward).
    @usableFromInline var lastOutput: Tensor<T>?
    @usableFromInline var gradInput: Tensor<T>?

    public init() {}

    public var parameters: [Parameter<T>] { [] }

    public var lastInputShape: [Int]? { access.read { lastOutput?.shape } }

    public func outputShape(forInput shape: [Int]) throws -> [Int] {
        _ = try checkedElementCount(shape, what: "Tanh: x")
        return shape
    }

    @_specialize(where T == Float) @_specialize(where T == Double)
    public func forward(_ x: Tensor<T>, returning result: ForwardResult) throws -> Tensor<T> {
        try access.run {
            lastOutput = nil
            let y = try layerBuffer(&output, shape: x.shape, avoiding: x)
            tanhForward(count: x.count, x: x.pointer, y: y.pointer)
            lastOutput = y
            return try result.deliver(y)
        }
    }

    /// dL/dx = dL/dy * (1 - y^2), y the last forward's output.
    @_specialize(where T == Float) @_specialize(where T == Double)
    public func backward(_ gradOut: Tensor<T>) throws -> Tensor<T> {
        try access.run {
            guard let y = lastOutput else {
                throw SwiftCNNError.runtime("Tanh: backward called before forward")
            }
            try requireGradOutShape("Tanh", gradOut, y.shape)
            let gradX = try layerBuffer(&gradInput, shape: y.shape, avoiding: gradOut)
            tanhBackward(count: y.count, gradOut: gradOut.pointer, y: y.pointer, gradX: gradX.pointer)
            return gradX
        }
    }

    public func zeroGrad() throws {}

    public var description: String { "Tanh()" }
}

/// The logistic sigmoid, elementwise, as PyTorch's `nn.Sigmoid`: y = 1 / (1 + e^-x).
///
/// Keeps its OUTPUT y, not x: sigma'(x) = y (1 - y) (the lecture's identity) needs nothing else.
/// Any shape.
public final class Sigmoid<T: CNNScalar>: Layer, @unchecked Sendable, CustomStringConvertible {
    public typealias Scalar = T

    let access = ExclusiveAccess(name: "Sigmoid")
    /// The last forward's output: returned to the caller as a view and read back by backward.
    /// (Nothing can fail between replacing it and filling it, so it is always a complete output.)
    @usableFromInline var output: Tensor<T>?
    /// What backward reads: `output`, or a fused convolution's activated output (`adopt`).
    @usableFromInline var lastOutput: Tensor<T>?
    @usableFromInline var gradInput: Tensor<T>?

    public init() {}

    public var parameters: [Parameter<T>] { [] }

    public var lastInputShape: [Int]? { access.read { lastOutput?.shape } }

    /// What backward would read (the last forward's output), for `Sequential`'s fused
    /// Sigmoid + MaxPool2d backward.
    @usableFromInline
    func savedForBackward() throws -> Tensor<T> {
        try access.run {
            guard let y = lastOutput else { throw SwiftCNNError.runtime("Sigmoid: backward called before forward") }
            return y
        }
    }

    /// Takes `y`, a convolution's output already passed through the sigmoid (`ConvEpilogue`), as
    /// this layer's forward output: backward then reads it. Returns y.
    @usableFromInline
    func adopt(_ y: Tensor<T>) throws -> Tensor<T> {
        try access.run {
            lastOutput = y
            return y
        }
    }

    public func outputShape(forInput shape: [Int]) throws -> [Int] {
        _ = try checkedElementCount(shape, what: "Sigmoid: x")
        return shape
    }

    @_specialize(where T == Float) @_specialize(where T == Double)
    public func forward(_ x: Tensor<T>, returning result: ForwardResult) throws -> Tensor<T> {
        try access.run {
            let y = try layerBuffer(&output, shape: x.shape, avoiding: x)
            sigmoidForward(count: x.count, x: x.pointer, y: y.pointer)
            lastOutput = y
            return try result.deliver(y)
        }
    }

    @_specialize(where T == Float) @_specialize(where T == Double)
    public func backward(_ gradOut: Tensor<T>) throws -> Tensor<T> {
        try access.run {
            guard let y = lastOutput else {
                throw SwiftCNNError.runtime("Sigmoid: backward called before forward")
            }
            try requireGradOutShape("Sigmoid", gradOut, y.shape)
            let gradX = try layerBuffer(&gradInput, shape: y.shape, avoiding: gradOut)
            sigmoidBackward(count: y.count, gradOut: gradOut.pointer, y: y.pointer, gradX: gradX.pointer)
            return gradX
        }
    }

    public func zeroGrad() throws {}

    public var description: String { "Sigmoid()" }
}

/// The rectifier, elementwise, as PyTorch's `nn.ReLU`: y = max(x, 0). Keeps a view of its input x
/// (the gradient passes where x > 0). Any shape.
public final class ReLU<T: CNNScalar>: Layer, @unchecked Sendable, CustomStringConvertible {
    public typealias Scalar = T

    let access = ExclusiveAccess(name: "ReLU")
    @usableFromInline var input: Tensor<T>?
    @usableFromInline var output: Tensor<T>?
    @usableFromInline var gradInput: Tensor<T>?

    public init() {}

    public var parameters: [Parameter<T>] { [] }

    public var lastInputShape: [Int]? { access.read { input?.shape } }

    /// What backward would read (the last forward's input), for `Sequential`'s fused
    /// ReLU + MaxPool2d backward.
    @usableFromInline
    func savedForBackward() throws -> Tensor<T> {
        try access.run {
            guard let x = input else { throw SwiftCNNError.runtime("ReLU: backward called before forward") }
            return x
        }
    }

    /// Takes `y`, a convolution's output already rectified (`ConvEpilogue`), as this layer's
    /// forward: backward masks by y > 0, which is x > 0 (NaN included: both false). Returns y.
    @usableFromInline
    func adopt(_ y: Tensor<T>) throws -> Tensor<T> {
        try access.run {
            input = y
            return y
        }
    }

    public func outputShape(forInput shape: [Int]) throws -> [Int] {
        _ = try checkedElementCount(shape, what: "ReLU: x")
        return shape
    }

    @_specialize(where T == Float) @_specialize(where T == Double)
    public func forward(_ x: Tensor<T>, returning result: ForwardResult) throws -> Tensor<T> {
        try access.run {
            let y = try layerBuffer(&output, shape: x.shape, avoiding: x)
            reluForward(count: x.count, x: x.pointer, y: y.pointer)
            input = x
            return try result.deliver(y)
        }
    }

    @_specialize(where T == Float) @_specialize(where T == Double)
    public func backward(_ gradOut: Tensor<T>) throws -> Tensor<T> {
        try access.run {
            guard let x = input else {
                throw SwiftCNNError.runtime("ReLU: backward called before forward")
            }
            try requireGradOutShape("ReLU", gradOut, x.shape)
            let gradX = try layerBuffer(&gradInput, shape: x.shape, avoiding: gradOut)
            reluBackward(count: x.count, gradOut: gradOut.pointer, x: x.pointer, gradX: gradX.pointer)
            return gradX
        }
    }

    public func zeroGrad() throws {}

    public var description: String { "ReLU()" }
}

/// Throws `.value` unless a layer's gradOut has the last output's shape.
@usableFromInline
func requireGradOutShape<T: CNNScalar>(_ layer: String, _ gradOut: Tensor<T>, _ shape: [Int]) throws {
    guard gradOut.shape == shape else {
        throw SwiftCNNError.value(
            "\(layer).backward: grad_out must have shape \(describeShape(shape)), got \(describeShape(gradOut.shape))")
    }
}

/// The elementwise activation layers: y = f(x) forward; dL/dx = dL/dy * f'(.) backward, where f'
/// needs only one saved tensor: the forward's OUTPUT y (sigmoid: f' = y (1 - y), tanh: f' = 1 - y^2)
/// or its INPUT x (relu and leaky relu: f' depends on the sign of x). Any shape.
///
/// The four layers are this one class with their kernels (Ops/Activations.swift, Ops/Tanh.swift,
/// Ops/LeakyReLU.swift); only their names, settings and descriptions differ.
///
/// `@unchecked Sendable`: every access to the mutable state goes through `access` (ExclusiveAccess),
/// which refuses a second thread at run time instead of racing.
public class ElementwiseLayer<T: CNNScalar>: Layer, @unchecked Sendable, CustomStringConvertible {
    public typealias Scalar = T
    /// f over `count` elements: (count, x, y).
    @usableFromInline typealias ForwardKernel = (Int, UnsafePointer<T>, UnsafeMutablePointer<T>) -> Void
    /// dL/dx over `count` elements: (count, grad_out, saved, grad_x), saved = y or x.
    @usableFromInline typealias BackwardKernel = (Int, UnsafePointer<T>, UnsafePointer<T>, UnsafeMutablePointer<T>) -> Void

    /// As PyTorch prints the layer: "ReLU()", "LeakyReLU(negative_slope=0.01)".
    public let description: String
    let name: String
    /// Whether backward reads the forward's output (else its input).
    let savesOutput: Bool
    @usableFromInline let forwardKernel: ForwardKernel
    @usableFromInline let backwardKernel: BackwardKernel
    let access: ExclusiveAccess
    /// What backward reads (the last complete forward's y or x, or a fused convolution's activated
    /// output: `adopt`); nil before the first forward and after a failed one.
    @usableFromInline var saved: Tensor<T>?
    /// The layer's output buffer, returned to the caller as a view (reused while the shape holds).
    @usableFromInline var output: Tensor<T>?
    @usableFromInline var gradInput: Tensor<T>?

    init(name: String, description: String, savesOutput: Bool, forward: @escaping ForwardKernel,
         backward: @escaping BackwardKernel) {
        self.name = name
        self.description = description
        self.savesOutput = savesOutput
        self.forwardKernel = forward
        self.backwardKernel = backward
        self.access = ExclusiveAccess(name: name)
    }

    public var parameters: [Parameter<T>] { [] }

    public var lastInputShape: [Int]? { access.read { saved?.shape } }

    public func outputShape(forInput shape: [Int]) throws -> [Int] {
        _ = try checkedElementCount(shape, what: "\(name): x")
        return shape
    }

    @_specialize(where T == Float) @_specialize(where T == Double)
    public func forward(_ x: Tensor<T>, returning result: ForwardResult) throws -> Tensor<T> {
        try access.run {
            saved = nil
            let y = try layerBuffer(&output, shape: x.shape, avoiding: x)
            forwardKernel(x.count, UnsafePointer(x.pointer), y.pointer)
            saved = savesOutput ? y : x
            return try result.deliver(y)
        }
    }

    @_specialize(where T == Float) @_specialize(where T == Double)
    public func backward(_ gradOut: Tensor<T>) throws -> Tensor<T> {
        try access.run {
            guard let s = saved else {
                throw SwiftCNNError.runtime("\(name): backward called before forward")
            }
            try requireGradOutShape(name, gradOut, s.shape)
            let gradX = try layerBuffer(&gradInput, shape: s.shape, avoiding: gradOut)
            backwardKernel(s.count, UnsafePointer(gradOut.pointer), UnsafePointer(s.pointer), gradX.pointer)
            return gradX
        }
    }

    public func zeroGrad() throws {}

    /// What backward would read, for `Sequential`'s fused activation + MaxPool2d backward.
    @usableFromInline
    func savedForBackward() throws -> Tensor<T> {
        try access.run {
            guard let s = saved else { throw SwiftCNNError.runtime("\(name): backward called before forward") }
            return s
        }
    }

    /// Takes `y`, a convolution's output already passed through this activation (`ConvEpilogue`),
    /// as this layer's forward. Sigmoid's backward reads y; ReLU's masks by y > 0, which is x > 0
    /// (NaN included: both false). Returns y.
    @usableFromInline
    func adopt(_ y: Tensor<T>) throws -> Tensor<T> {
        try access.run {
            saved = y
            return y
        }
    }
}

/// The logistic sigmoid, as PyTorch's `nn.Sigmoid`: y = 1 / (1 + e^-x); backward reads y:
/// sigma'(x) = y (1 - y) (the lecture's identity).
public final class Sigmoid<T: CNNScalar>: ElementwiseLayer<T>, @unchecked Sendable {
    public init() {
        super.init(name: "Sigmoid", description: "Sigmoid()", savesOutput: true,
                   forward: { sigmoidForward(count: $0, x: $1, y: $2) },
                   backward: { sigmoidBackward(count: $0, gradOut: $1, y: $2, gradX: $3) })
    }
}

/// The rectifier, as PyTorch's `nn.ReLU`: y = max(x, 0); backward reads (a view of) x: the
/// gradient passes where x > 0.
public final class ReLU<T: CNNScalar>: ElementwiseLayer<T>, @unchecked Sendable {
    public init() {
        super.init(name: "ReLU", description: "ReLU()", savesOutput: false,
                   forward: { reluForward(count: $0, x: $1, y: $2) },
                   backward: { reluBackward(count: $0, gradOut: $1, x: $2, gradX: $3) })
    }
}

/// The hyperbolic tangent, as PyTorch's `nn.Tanh`: y = tanh(x); backward reads y:
/// tanh'(x) = 1 - y^2.
public final class Tanh<T: CNNScalar>: ElementwiseLayer<T>, @unchecked Sendable {
    public init() {
        super.init(name: "Tanh", description: "Tanh()", savesOutput: true,
                   forward: { tanhForward(count: $0, x: $1, y: $2) },
                   backward: { tanhBackward(count: $0, gradOut: $1, y: $2, gradX: $3) })
    }
}

/// The leaky rectifier, as PyTorch's `nn.LeakyReLU(negative_slope=0.01)`: y = x where x > 0, else
/// negative_slope * x; backward reads (a view of) x: the gradient is 1 where x > 0, else
/// negative_slope. Any slope, as PyTorch (see Ops/LeakyReLU.swift).
public final class LeakyReLU<T: CNNScalar>: ElementwiseLayer<T>, @unchecked Sendable {
    /// The slope for x <= 0, as given (used as T(negativeSlope)).
    public let negativeSlope: Double

    public init(negativeSlope: Double = 0.01) {
        self.negativeSlope = negativeSlope
        let slope = T(negativeSlope)
        super.init(name: "LeakyReLU", description: "LeakyReLU(negative_slope=\(negativeSlope))", savesOutput: false,
                   forward: { leakyReluForward(count: $0, x: $1, negativeSlope: slope, y: $2) },
                   backward: { leakyReluBackward(count: $0, gradOut: $1, x: $2, negativeSlope: slope, gradX: $3) })
    }
}

/// Throws `.value` unless a layer's gradOut has the last output's shape.
@usableFromInline
func requireGradOutShape<T: CNNScalar>(_ layer: String, _ gradOut: Tensor<T>, _ shape: [Int]) throws {
    guard gradOut.shape == shape else {
        throw SwiftCNNError.value(
            "\(layer).backward: grad_out must have shape \(describeShape(shape)), got \(describeShape(gradOut.shape))")
    }
}

/// The leaky rectifier, elementwise, as PyTorch's `nn.LeakyReLU(negative_slope=0.01)`:
/// y = x where x > 0, else negative_slope * x. Keeps a view of its input x (the gradient is 1 where
/// x > 0, else negative_slope). Any shape; any slope, as PyTorch (see Ops/LeakyReLU.swift).
public final class LeakyReLU<T: CNNScalar>: Layer, @unchecked Sendable, CustomStringConvertible {
    public typealias Scalar = T

    /// The slope for x <= 0, as given (used as T(negativeSlope)).
    public let negativeSlope: Double

    let access = ExclusiveAccess(name: "LeakyReLU")
    @usableFromInline var input: Tensor<T>?
    @usableFromInline var output: Tensor<T>?
    @usableFromInline var gradInput: Tensor<T>?

    public init(negativeSlope: Double = 0.01) {
        self.negativeSlope = negativeSlope
    }

    public var parameters: [Parameter<T>] { [] }

    public var lastInputShape: [Int]? { access.read { input?.shape } }

    public func outputShape(forInput shape: [Int]) throws -> [Int] {
        _ = try checkedElementCount(shape, what: "LeakyReLU: x")
        return shape
    }

    @_specialize(where T == Float) @_specialize(where T == Double)
    public func forward(_ x: Tensor<T>, returning result: ForwardResult) throws -> Tensor<T> {
        try access.run {
            input = nil
            let y = try layerBuffer(&output, shape: x.shape, avoiding: x)
            leakyReluForward(count: x.count, x: x.pointer, negativeSlope: T(negativeSlope), y: y.pointer)
            input = x
            return try result.deliver(y)
        }
    }

    /// dL/dx = dL/dy * (x > 0 ? 1 : negative_slope), x the last forward's input.
    @_specialize(where T == Float) @_specialize(where T == Double)
    public func backward(_ gradOut: Tensor<T>) throws -> Tensor<T> {
        try access.run {
            guard let x = input else {
                throw SwiftCNNError.runtime("LeakyReLU: backward called before forward")
            }
            try requireGradOutShape("LeakyReLU", gradOut, x.shape)
            let gradX = try layerBuffer(&gradInput, shape: x.shape, avoiding: gradOut)
            leakyReluBackward(count: x.count, gradOut: gradOut.pointer, x: x.pointer,
                              negativeSlope: T(negativeSlope), gradX: gradX.pointer)
            return gradX
        }
    }

    public func zeroGrad() throws {}

    /// As PyTorch prints it: `LeakyReLU(negative_slope=0.01)`.
    public var description: String { "LeakyReLU(negative_slope=\(negativeSlope))" }
}

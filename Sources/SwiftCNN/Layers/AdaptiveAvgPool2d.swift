/// 2-D adaptive average pooling, as PyTorch's `nn.AdaptiveAvgPool2d(output_size)`.
///
///     x (N, C, H, W) -> y (N, C, Ho, Wo),  y[n,c,i,j] = mean of x[n,c] over bin (i, j)
///
/// Bins: rows floor(i*H/Ho) ..< ceil((i+1)*H/Ho), columns likewise (Ops/AdaptiveAvgPool.swift).
/// Backward spreads each output gradient evenly over its bin; it needs only the input's shape.
public final class AdaptiveAvgPool2d<T: CNNScalar>: Layer, @unchecked Sendable, CustomStringConvertible {
    public typealias Scalar = T

    /// (Ho, Wo).
    public let outputSize: (Int, Int)

    let access = ExclusiveAccess(name: "AdaptiveAvgPool2d")
    @usableFromInline var geometry: AdaptivePool2DGeometry?
    @usableFromInline var output: Tensor<T>?
    @usableFromInline var gradInput: Tensor<T>?

    /// PyTorch's `AdaptiveAvgPool2d(output_size)` (an int n means (n, n)). Throws `.value` for an
    /// output size < 1.
    public init(outputSize: (Int, Int)) throws {
        try requirePair("AdaptiveAvgPool2d", "outputSize", outputSize, atLeast: 1)
        self.outputSize = outputSize
    }

    public var parameters: [Parameter<T>] { [] }

    public var lastInputShape: [Int]? { access.read { geometry?.inputShape } }

    public func outputShape(forInput shape: [Int]) throws -> [Int] {
        try AdaptivePool2DGeometry(op: "AdaptiveAvgPool2d", xShape: shape, outputSize: outputSize).outputShape
    }

    @_specialize(where T == Float) @_specialize(where T == Double)
    public func forward(_ x: Tensor<T>, returning result: ForwardResult) throws -> Tensor<T> {
        try access.run {
            geometry = nil
            let g = try AdaptivePool2DGeometry(op: "AdaptiveAvgPool2d", xShape: x.shape, outputSize: outputSize)
            let y = try layerBuffer(&output, shape: g.outputShape, avoiding: x)
            adaptiveAvgPool2dForward(g, x: x.pointer, y: y.pointer)
            geometry = g
            return try result.deliver(y)
        }
    }

    @_specialize(where T == Float) @_specialize(where T == Double)
    public func backward(_ gradOut: Tensor<T>) throws -> Tensor<T> {
        try access.run {
            guard let g = geometry else {
                throw SwiftCNNError.runtime("AdaptiveAvgPool2d: backward called before forward")
            }
            try g.checkGradOut(op: "AdaptiveAvgPool2d.backward", gradOut.shape)
            let gradX = try layerBuffer(&gradInput, shape: g.inputShape, avoiding: gradOut)
            adaptiveAvgPool2dBackward(g, gradOut: gradOut.pointer, gradX: gradX.pointer)
            return gradX
        }
    }

    public func zeroGrad() throws {}

    /// As PyTorch prints it for a pair: `AdaptiveAvgPool2d(output_size=(1, 1))`.
    public var description: String { "AdaptiveAvgPool2d(output_size=\(describePair(outputSize)))" }
}

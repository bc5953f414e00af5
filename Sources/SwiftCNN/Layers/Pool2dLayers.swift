/// 2-D max pooling, as PyTorch's `nn.MaxPool2d` (padding counts as -inf).
///
///     x (N, C, H, W) -> y (N, C, Ho, Wo),  y[n,c,i,j] = max over the window of x[n,c]
///
/// Forward records, for each output, the flat index of its window's first maximum (Int32, within
/// the input plane); backward routes each output gradient to that one input (the max is locally the
/// identity on the winner and constant in the others), adding where windows overlap.
public final class MaxPool2d<T: CNNScalar>: Layer, @unchecked Sendable, CustomStringConvertible {
    public typealias Scalar = T

    public let kernelSize: (Int, Int)
    /// Defaults to kernelSize.
    public let stride: (Int, Int)
    public let padding: (Int, Int)

    let access = ExclusiveAccess(name: "MaxPool2d")
    @usableFromInline var geometry: Pool2DGeometry?
    @usableFromInline var output: Tensor<T>?
    @usableFromInline var gradInput: Tensor<T>?
    @usableFromInline var argmax: IndexBuffer?

    /// PyTorch's `MaxPool2d(kernel_size, stride=None, padding=0)`. Throws `.value` for kernel or
    /// stride < 1, padding < 0 or padding > kernel_size / 2.
    public init(kernelSize: (Int, Int), stride: (Int, Int)? = nil, padding: (Int, Int) = (0, 0)) throws {
        (self.kernelSize, self.stride, self.padding) =
            try validatedPoolSettings("MaxPool2d", kernelSize: kernelSize, stride: stride, padding: padding)
    }

    public var parameters: [Parameter<T>] { [] }

    public var lastInputShape: [Int]? { access.read { geometry?.inputShape } }

    public func outputShape(forInput shape: [Int]) throws -> [Int] {
        try Pool2DGeometry(op: "MaxPool2d", kind: .max, xShape: shape, kernelSize: kernelSize, stride: stride,
                           padding: padding).outputShape
    }

    @_specialize(where T == Float) @_specialize(where T == Double)
    public func forward(_ x: Tensor<T>, returning result: ForwardResult) throws -> Tensor<T> {
        try access.run {
            let g = try Pool2DGeometry(op: "MaxPool2d", kind: .max, xShape: x.shape, kernelSize: kernelSize,
                                       stride: stride, padding: padding)
            let y = try layerBuffer(&output, shape: g.outputShape, avoiding: x)
            let indices: IndexBuffer
            if let a = argmax, a.count == y.count { indices = a } else { indices = try IndexBuffer(count: y.count, what: "MaxPool2d: argmax") }
            argmax = indices
            pool2dForward(g, kind: .max, x: x.pointer, y: y.pointer, argmax: indices.pointer)
            geometry = g
            return try result.deliver(y)
        }
    }

    public func backward(_ gradOut: Tensor<T>) throws -> Tensor<T> {
        try backward(gradOut, then: nil)
    }

    /// backward, followed on each plane by the backward of the activation before this pool
    /// (`Sequential` fuses ReLU/Sigmoid + MaxPool2d this way): `activation` is that layer and
    /// `saved` its saved tensor (ReLU's input, Sigmoid's output), of this pool's input shape.
    @_specialize(where T == Float) @_specialize(where T == Double)
    func backward(_ gradOut: Tensor<T>, then activation: (any Layer<T>, Tensor<T>)?) throws -> Tensor<T> {
        try access.run {
            guard let g = geometry, let indices = argmax else {
                throw SwiftCNNError.runtime("MaxPool2d: backward called before forward")
            }
            try g.checkGradOut(op: "MaxPool2d.backward", gradOut.shape)
            let gradX = try layerBuffer(&gradInput, shape: g.inputShape, avoiding: gradOut)
            var fused = ActivationBackward<T>.none
            if let (layer, saved) = activation {
                guard saved.shape == g.inputShape else {
                    throw SwiftCNNError.runtime("MaxPool2d: the fused activation's tensor does not match this pool's input")
                }
                if layer is ReLU<T> { fused = .relu(x: saved.pointer) } else if layer is Sigmoid<T> { fused = .sigmoid(y: saved.pointer) }
            }
            maxPool2dBackward(g, gradOut: gradOut.pointer, argmax: indices.pointer, gradX: gradX.pointer, then: fused)
            return gradX
        }
    }

    public func zeroGrad() throws {}

    public var description: String {
        "MaxPool2d(kernel_size=\(describePair(kernelSize)), stride=\(describePair(stride)), padding=\(describePair(padding)))"
    }
}

/// 2-D average pooling, as PyTorch's `nn.AvgPool2d` with `count_include_pad=True`.
///
///     x (N, C, H, W) -> y (N, C, Ho, Wo),  y[n,c,i,j] = (1 / (kH kW)) sum over the window of x[n,c]
///
/// Backward spreads each output gradient evenly, 1/(kH kW) to every input of its window.
public final class AvgPool2d<T: CNNScalar>: Layer, @unchecked Sendable, CustomStringConvertible {
    public typealias Scalar = T

    public let kernelSize: (Int, Int)
    /// Defaults to kernelSize.
    public let stride: (Int, Int)
    public let padding: (Int, Int)

    let access = ExclusiveAccess(name: "AvgPool2d")
    @usableFromInline var geometry: Pool2DGeometry?
    @usableFromInline var input: Tensor<T>?
    @usableFromInline var output: Tensor<T>?
    @usableFromInline var gradInput: Tensor<T>?

    /// PyTorch's `AvgPool2d(kernel_size, stride=None, padding=0)`. Throws `.value` for kernel or
    /// stride < 1, padding < 0 or padding > kernel_size / 2.
    public init(kernelSize: (Int, Int), stride: (Int, Int)? = nil, padding: (Int, Int) = (0, 0)) throws {
        (self.kernelSize, self.stride, self.padding) =
            try validatedPoolSettings("AvgPool2d", kernelSize: kernelSize, stride: stride, padding: padding)
    }

    public var parameters: [Parameter<T>] { [] }

    public var lastInputShape: [Int]? { access.read { geometry?.inputShape } }

    public func outputShape(forInput shape: [Int]) throws -> [Int] {
        try Pool2DGeometry(op: "AvgPool2d", kind: .average, xShape: shape, kernelSize: kernelSize, stride: stride,
                           padding: padding).outputShape
    }

    @_specialize(where T == Float) @_specialize(where T == Double)
    public func forward(_ x: Tensor<T>, returning result: ForwardResult) throws -> Tensor<T> {
        try access.run {
            let g = try Pool2DGeometry(op: "AvgPool2d", kind: .average, xShape: x.shape, kernelSize: kernelSize,
                                       stride: stride, padding: padding)
            let y = try layerBuffer(&output, shape: g.outputShape, avoiding: x)
            pool2dForward(g, kind: .average, x: x.pointer, y: y.pointer, argmax: nil)
            geometry = g
            input = x
            return try result.deliver(y)
        }
    }

    @_specialize(where T == Float) @_specialize(where T == Double)
    public func backward(_ gradOut: Tensor<T>) throws -> Tensor<T> {
        try access.run {
            guard let g = geometry, let x = input else {
                throw SwiftCNNError.runtime("AvgPool2d: backward called before forward")
            }
            try g.checkGradOut(op: "AvgPool2d.backward", gradOut.shape)
            let gradX = try layerBuffer(&gradInput, shape: g.inputShape, avoiding: gradOut)
            pool2dBackward(g, kind: .average, gradOut: gradOut.pointer, x: x.pointer, gradX: gradX.pointer)
            return gradX
        }
    }

    public func zeroGrad() throws {}

    public var description: String {
        "AvgPool2d(kernel_size=\(describePair(kernelSize)), stride=\(describePair(stride)), padding=\(describePair(padding)))"
    }
}

/// The pooling settings with stride resolved (nil -> kernel size, as PyTorch), validated without an
/// input: kernel and stride >= 1, 0 <= padding <= kernel / 2.
@usableFromInline
func validatedPoolSettings(_ op: String, kernelSize: (Int, Int), stride: (Int, Int)?, padding: (Int, Int)) throws
    -> ((Int, Int), (Int, Int), (Int, Int)) {
    try requirePair(op, "kernel_size", kernelSize, atLeast: 1)
    let stride = stride ?? kernelSize
    try requirePair(op, "stride", stride, atLeast: 1)
    try requirePair(op, "padding", padding, atLeast: 0)
    guard padding.0 <= kernelSize.0 / 2, padding.1 <= kernelSize.1 / 2 else {
        throw SwiftCNNError.value(
            "\(op): padding must be at most half of kernel_size \(describePair(kernelSize)), got \(describePair(padding))")
    }
    return (kernelSize, stride, padding)
}

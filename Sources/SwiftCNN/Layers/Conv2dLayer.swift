/// A 2-D convolution layer (cross-correlation, as PyTorch's `nn.Conv2d`).
///
///     x (N, C, H, W) -> y (N, K, Ho, Wo),  y[n,k] = b[k] + sum_c x[n,c] (*) w[k,c]
///     weight (K, C, kH, kW), bias (K)
///
/// Forward keeps a view of x; backward computes dL/dx (overwritten into the layer's buffer) and adds
/// dL/dweight, dL/dbias into the parameter grads. The im2col scratch lives in the layer's workspace
/// and is reused across calls.
public final class Conv2d<T: CNNScalar>: Layer, @unchecked Sendable, CustomStringConvertible {
    public typealias Scalar = T

    public let inChannels: Int
    public let outChannels: Int
    public let kernelSize: (Int, Int)
    public let stride: (Int, Int)
    public let padding: (Int, Int)
    public let dilation: (Int, Int)
    /// (K, C, kH, kW), initialized from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = C*kH*kW.
    public let weight: Parameter<T>
    /// (K), same distribution; nil when created with `bias: false`.
    public let bias: Parameter<T>?

    let access = ExclusiveAccess(name: "Conv2d")
    let workspace = ScratchSlots<T>()
    /// Geometry and input of the last successful forward.
    @usableFromInline var geometry: Conv2DGeometry?
    @usableFromInline var input: Tensor<T>?
    @usableFromInline var output: Tensor<T>?
    @usableFromInline var gradInput: Tensor<T>?

    /// PyTorch's `Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias)`;
    /// `seed` determines the initial weights. Throws `.value` for sizes < 1, padding < 0, dilation < 1.
    public init(inChannels: Int, outChannels: Int, kernelSize: (Int, Int), stride: (Int, Int) = (1, 1),
                padding: (Int, Int) = (0, 0), dilation: (Int, Int) = (1, 1), bias: Bool = true, seed: UInt64) throws {
        (self.weight, self.bias) = try convolutionParameters(
            inChannels: inChannels, outChannels: outChannels, kernelSize: kernelSize, stride: stride,
            padding: .explicit(padding.0, padding.1), dilation: dilation, groups: 1, bias: bias, seed: seed)
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
    }

    public var parameters: [Parameter<T>] { bias.map { [weight, $0] } ?? [weight] }

    public var lastInputShape: [Int]? { access.read { geometry?.inputShape } }

    @usableFromInline
    func makeGeometry(_ xShape: [Int]) throws -> Conv2DGeometry {
        try Conv2DGeometry(op: "Conv2d", xShape: xShape, weightShape: weight.data.shape, biasShape: bias?.data.shape,
                           stride: stride, padding: padding, dilation: dilation)
    }

    public func outputShape(forInput shape: [Int]) throws -> [Int] {
        try makeGeometry(shape).outputShape
    }

    public func forward(_ x: Tensor<T>, returning result: ForwardResult) throws -> Tensor<T> {
        try forward(x, epilogue: .none, returning: result)
    }

    /// forward, with an activation applied to each image's output as it is computed (`Sequential`
    /// fuses a following ReLU or Sigmoid this way; the activation layer then adopts the result).
    @_specialize(where T == Float) @_specialize(where T == Double)
    func forward(_ x: Tensor<T>, epilogue: ConvEpilogue, returning result: ForwardResult) throws -> Tensor<T> {
        try access.run {
            let g = try makeGeometry(x.shape)
            let y = try layerBuffer(&output, shape: g.outputShape, avoiding: x)
            try conv2dForward(g, x: x.pointer, weight: weight.data.pointer, bias: bias.map { UnsafePointer($0.data.pointer) },
                              y: y.pointer, epilogue: epilogue, workspace: workspace)
            geometry = g
            input = x
            return try result.deliver(y)
        }
    }

    public func backward(_ gradOut: Tensor<T>) throws -> Tensor<T> {
        // Always returns a gradient when asked for one.
        guard let gradX = try backward(gradOut, inputGradient: true) else {
            throw SwiftCNNError.runtime("Conv2d: backward produced no input gradient")
        }
        return gradX
    }

    @_specialize(where T == Float) @_specialize(where T == Double)
    public func backward(_ gradOut: Tensor<T>, inputGradient: Bool) throws -> Tensor<T>? {
        try access.run {
            guard let g = geometry, let x = input else {
                throw SwiftCNNError.runtime("Conv2d: backward called before forward")
            }
            try g.checkGradOut(op: "Conv2d.backward", gradOut.shape)
            let gradX = inputGradient ? try layerBuffer(&gradInput, shape: g.inputShape, avoiding: gradOut) : nil
            try conv2dBackward(g, gradOut: gradOut.pointer, x: x.pointer, weight: weight.data.pointer,
                               gradX: gradX?.pointer, gradWeight: weight.grad.pointer, gradBias: bias?.grad.pointer,
                               accumulate: true, workspace: workspace)
            return gradX
        }
    }

    public func zeroGrad() throws {
        try access.run {
            weight.grad.zero()
            bias?.grad.zero()
        }
    }

    /// As PyTorch prints it: `Conv2d(1, 6, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2))`.
    public var description: String {
        describeConvolution(inChannels, outChannels, kernelSize, stride, .explicit(padding.0, padding.1), dilation,
                            groups: 1, hasBias: bias != nil)
    }
}

// What both convolution layers (this one and GroupedConv2d) share: their settings' checks, their
// parameters and their description.

/// The checked (weight, bias) of a convolution layer: weight (K, C/G, kH, kW) and bias (K) from
/// U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = C/G*kH*kW, as PyTorch. Throws `.value` for sizes
/// < 1, padding < 0, dilation < 1, channel counts not divisible by `groups`, "same" with a stride
/// other than 1.
func convolutionParameters<T: CNNScalar>(inChannels: Int, outChannels: Int, kernelSize: (Int, Int), stride: (Int, Int),
                                         padding: ConvPadding, dilation: (Int, Int), groups: Int, bias: Bool,
                                         seed: UInt64) throws -> (Parameter<T>, Parameter<T>?) {
    guard inChannels >= 1 else { throw SwiftCNNError.value("Conv2d: inChannels must be >= 1, got \(inChannels)") }
    guard outChannels >= 1 else { throw SwiftCNNError.value("Conv2d: outChannels must be >= 1, got \(outChannels)") }
    guard groups >= 1 else { throw SwiftCNNError.value("Conv2d: groups must be >= 1, got \(groups)") }
    guard inChannels % groups == 0 else {
        throw SwiftCNNError.value("Conv2d: inChannels (\(inChannels)) must be divisible by groups (\(groups))")
    }
    guard outChannels % groups == 0 else {
        throw SwiftCNNError.value("Conv2d: outChannels (\(outChannels)) must be divisible by groups (\(groups))")
    }
    try requirePair("Conv2d", "kernelSize", kernelSize, atLeast: 1)
    try requirePair("Conv2d", "stride", stride, atLeast: 1)
    switch padding {
    case .explicit(let ph, let pw): try requirePair("Conv2d", "padding", (ph, pw), atLeast: 0)
    case .same:
        guard stride == (1, 1) else {
            throw SwiftCNNError.value(
                "Conv2d: padding='same' is not supported for strided convolutions, got stride (\(stride.0), \(stride.1))")
        }
    }
    try requirePair("Conv2d", "dilation", dilation, atLeast: 1)
    let weightShape = [outChannels, inChannels / groups, kernelSize.0, kernelSize.1]
    let fanIn = try checkedElementCount(Array(weightShape.dropFirst()), what: "Conv2d: weight")
    _ = try checkedElementCount(weightShape, what: "Conv2d: weight")
    let weight = try Parameter<T>(name: "weight", shape: weightShape)
    let biasParameter = bias ? try Parameter<T>(name: "bias", shape: [outChannels]) : nil
    initializeDefault(weight: weight.data, bias: biasParameter?.data, fanIn: fanIn, seed: seed)
    return (weight, biasParameter)
}

/// PyTorch's repr of a convolution: `Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1), padding=same, groups=2)`.
func describeConvolution(_ inChannels: Int, _ outChannels: Int, _ kernelSize: (Int, Int), _ stride: (Int, Int),
                         _ padding: ConvPadding, _ dilation: (Int, Int), groups: Int, hasBias: Bool) -> String {
    var s = "Conv2d(\(inChannels), \(outChannels), kernel_size=\(describePair(kernelSize)), stride=\(describePair(stride))"
    switch padding {
    case .same: s += ", padding=same"
    case .explicit(let ph, let pw): if (ph, pw) != (0, 0) { s += ", padding=\(describePair((ph, pw)))" }
    }
    if dilation != (1, 1) { s += ", dilation=\(describePair(dilation))" }
    if groups != 1 { s += ", groups=\(groups)" }
    if !hasBias { s += ", bias=False" }
    return s + ")"
}

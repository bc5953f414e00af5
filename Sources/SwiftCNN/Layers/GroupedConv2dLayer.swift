/// A 2-D convolution layer with groups and/or "same" padding (PyTorch's `Conv2d(..., groups=G,
/// padding="same")`); the forward and backward of Ops/GroupedConv2D.swift. The plain layer
/// (`Conv2d`, groups 1, explicit padding) keeps its fused fast paths; this one is its general form.
public final class GroupedConv2d<T: CNNScalar>: Layer, @unchecked Sendable, CustomStringConvertible {
    public typealias Scalar = T

    public let inChannels, outChannels, groups: Int
    public let kernelSize, stride, dilation: (Int, Int)
    public let padding: ConvPadding
    /// (K, C/G, kH, kW), initialized from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = C/G*kH*kW.
    public let weight: Parameter<T>
    /// (K), same initialization, or nil.
    public let bias: Parameter<T>?

    let access = ExclusiveAccess(name: "Conv2d")
    let workspace = Workspace<T>()
    @usableFromInline var geometry: GroupedConv2DGeometry?
    @usableFromInline var input: Tensor<T>?
    @usableFromInline var output: Tensor<T>?
    @usableFromInline var gradInput: Tensor<T>?

    /// Throws `.value` for sizes < 1, padding < 0, dilation < 1, channel counts not divisible by
    /// `groups`, "same" with a stride other than 1.
    public init(inChannels: Int, outChannels: Int, kernelSize: (Int, Int), stride: (Int, Int) = (1, 1),
                padding: ConvPadding = .explicit(0, 0), dilation: (Int, Int) = (1, 1), groups: Int = 1,
                bias: Bool = true, seed: UInt64) throws {
        (self.weight, self.bias) = try convolutionParameters(
            inChannels: inChannels, outChannels: outChannels, kernelSize: kernelSize, stride: stride,
            padding: padding, dilation: dilation, groups: groups, bias: bias, seed: seed)
        (self.inChannels, self.outChannels, self.groups) = (inChannels, outChannels, groups)
        (self.kernelSize, self.stride, self.padding, self.dilation) = (kernelSize, stride, padding, dilation)
    }

    public var parameters: [Parameter<T>] { bias.map { [weight, $0] } ?? [weight] }

    public var lastInputShape: [Int]? { access.read { geometry?.inputShape } }

    func makeGeometry(_ xShape: [Int]) throws -> GroupedConv2DGeometry {
        try GroupedConv2DGeometry(op: "Conv2d", xShape: xShape, weightShape: weight.data.shape,
                                  biasLength: bias?.data.count, stride: stride, padding: padding, dilation: dilation,
                                  groups: groups)
    }

    public func outputShape(forInput shape: [Int]) throws -> [Int] { try makeGeometry(shape).outputShape }

    public func forward(_ x: Tensor<T>, returning result: ForwardResult) throws -> Tensor<T> {
        try access.run {
            let g = try makeGeometry(x.shape)
            let y = try layerBuffer(&output, shape: g.outputShape, avoiding: x)
            if g.batch > 0 {
                try groupedConv2dForward(g, x: x.pointer, weight: weight.data.pointer,
                                         bias: bias.map { UnsafePointer($0.data.pointer) }, y: y.pointer, workspace: workspace)
            }
            geometry = g
            input = x
            return try result.deliver(y)
        }
    }

    public func backward(_ gradOut: Tensor<T>) throws -> Tensor<T> {
        guard let gradX = try backward(gradOut, inputGradient: true) else {
            throw SwiftCNNError.runtime("Conv2d: backward produced no input gradient")
        }
        return gradX
    }

    public func backward(_ gradOut: Tensor<T>, inputGradient: Bool) throws -> Tensor<T>? {
        try access.run {
            guard let g = geometry, let x = input else {
                throw SwiftCNNError.runtime("Conv2d: backward called before forward")
            }
            guard gradOut.shape == g.outputShape else {
                throw SwiftCNNError.value(
                    "Conv2d.backward: grad_out must have shape \(describeShape(g.outputShape)), got \(describeShape(gradOut.shape))")
            }
            let gradX = inputGradient ? try layerBuffer(&gradInput, shape: g.inputShape, avoiding: gradOut) : nil
            if g.batch > 0 {
                try groupedConv2dBackward(g, gradOut: gradOut.pointer, x: x.pointer, weight: weight.data.pointer,
                                          gradX: gradX?.pointer, gradWeight: weight.grad.pointer,
                                          gradBias: bias?.grad.pointer, accumulate: true, workspace: workspace)
            }
            return gradX
        }
    }

    public func zeroGrad() throws {
        try access.run {
            weight.grad.zero()
            bias?.grad.zero()
        }
    }

    public var description: String {
        describeConvolution(inChannels, outChannels, kernelSize, stride, padding, dilation, groups: groups,
                            hasBias: bias != nil)
    }
}

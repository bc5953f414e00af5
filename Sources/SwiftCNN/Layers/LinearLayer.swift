/// A fully connected layer, as PyTorch's `nn.Linear`.
///
///     x (N, in) -> y (N, out),  y = x W^T + b,   weight (out, in), bias (out)
///
/// Forward keeps a view of x; backward computes dL/dx = dL/dy W into the layer's buffer and adds
/// dL/dW = (dL/dy)^T x and dL/db = sum_n dL/dy into the parameter grads.
public final class Linear<T: CNNScalar>: Layer, @unchecked Sendable, CustomStringConvertible {
    public typealias Scalar = T

    public let inFeatures: Int
    public let outFeatures: Int
    /// (out, in), initialized from U(-1/sqrt(in), 1/sqrt(in)).
    public let weight: Parameter<T>
    /// (out), same distribution; nil when created with `bias: false`.
    public let bias: Parameter<T>?

    let access = ExclusiveAccess(name: "Linear")
    @usableFromInline var geometry: LinearGeometry?
    @usableFromInline var input: Tensor<T>?
    @usableFromInline var output: Tensor<T>?
    @usableFromInline var gradInput: Tensor<T>?

    /// PyTorch's `Linear(in_features, out_features, bias=True)`; `seed` determines the initial
    /// weights. Throws `.value` for sizes < 1.
    public init(inFeatures: Int, outFeatures: Int, bias: Bool = true, seed: UInt64) throws {
        guard inFeatures >= 1 else { throw SwiftCNNError.value("Linear: inFeatures must be >= 1, got \(inFeatures)") }
        guard outFeatures >= 1 else { throw SwiftCNNError.value("Linear: outFeatures must be >= 1, got \(outFeatures)") }
        let weightShape = [outFeatures, inFeatures]
        _ = try checkedElementCount(weightShape, what: "Linear: weight")
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        self.weight = try Parameter(name: "weight", shape: weightShape)
        self.bias = bias ? try Parameter(name: "bias", shape: [outFeatures]) : nil
        initializeDefault(weight: weight.data, bias: self.bias?.data, fanIn: inFeatures, seed: seed)
    }

    public var parameters: [Parameter<T>] { bias.map { [weight, $0] } ?? [weight] }

    public var lastInputShape: [Int]? { access.read { geometry?.inputShape } }

    @usableFromInline
    func makeGeometry(_ xShape: [Int]) throws -> LinearGeometry {
        try LinearGeometry(op: "Linear", xShape: xShape, weightShape: weight.data.shape, biasShape: bias?.data.shape)
    }

    public func outputShape(forInput shape: [Int]) throws -> [Int] {
        try makeGeometry(shape).outputShape
    }

    @_specialize(where T == Float) @_specialize(where T == Double)
    public func forward(_ x: Tensor<T>, returning result: ForwardResult) throws -> Tensor<T> {
        try access.run {
            let g = try makeGeometry(x.shape)
            let y = try layerBuffer(&output, shape: g.outputShape, avoiding: x)
            linearForward(batch: g.batch, inFeatures: g.inFeatures, outFeatures: g.outFeatures,
                          x: x.pointer, weight: weight.data.pointer, bias: bias.map { UnsafePointer($0.data.pointer) },
                          y: y.pointer)
            geometry = g
            input = x
            return try result.deliver(y)
        }
    }

    @_specialize(where T == Float) @_specialize(where T == Double)
    public func backward(_ gradOut: Tensor<T>) throws -> Tensor<T> {
        try access.run {
            guard let g = geometry, let x = input else {
                throw SwiftCNNError.runtime("Linear: backward called before forward")
            }
            try g.checkGradOut(op: "Linear.backward", gradOut.shape)
            let gradX = try layerBuffer(&gradInput, shape: g.inputShape, avoiding: gradOut)
            linearBackward(batch: g.batch, inFeatures: g.inFeatures, outFeatures: g.outFeatures,
                           gradOut: gradOut.pointer, x: x.pointer, weight: weight.data.pointer,
                           gradX: gradX.pointer, gradWeight: weight.grad.pointer, gradBias: bias?.grad.pointer,
                           accumulate: true)
            return gradX
        }
    }

    public func zeroGrad() throws {
        try access.run {
            weight.grad.zero()
            bias?.grad.zero()
        }
    }

    /// As PyTorch prints it: `Linear(in_features=400, out_features=120, bias=True)`.
    public var description: String {
        "Linear(in_features=\(inFeatures), out_features=\(outFeatures), bias=\(bias == nil ? "False" : "True"))"
    }
}

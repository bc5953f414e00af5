import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Adam (Kingma and Ba, 2015) as `torch.optim.Adam` (amsgrad off). For each parameter p with
/// gradient g, at step t = 1, 2, ...:
///
///     g <- g + weight_decay * p                        (L2 added to the gradient, not decoupled as AdamW)
///     m <- beta1 * m + (1 - beta1) * g                 first-moment estimate (lerp, as PyTorch)
///     v <- beta2 * v + (1 - beta2) * g * g             second-moment estimate
///     p <- p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
///
/// m and v start at zero, so early averages are biased toward zero; dividing by 1 - beta^t removes
/// that bias exactly. The step size is then about lr per coordinate, whatever the gradient's scale.
public final class Adam<T: CNNScalar>: Optimizer, @unchecked Sendable {
    /// The parameters updated, without repeats of the same memory.
    public let parameters: [Parameter<T>]
    /// The learning rate of the next step (atomic: may be set from any thread, even during a step,
    /// which then uses the old or the new value throughout).
    public var learningRate: Double {
        get { Double(bitPattern: learningRateBits.load(ordering: .relaxed)) }
        set { learningRateBits.store(newValue.bitPattern, ordering: .relaxed) }
    }
    let learningRateBits: Atomic<UInt64>
    public let beta1: Double
    public let beta2: Double
    public let epsilon: Double
    public let weightDecay: Double
    /// AdamW (Loshchilov and Hutter): the decay shrinks the weights directly,
    /// p <- p * (1 - lr * weight_decay), instead of adding weight_decay * p to the gradient.
    public let decoupledWeightDecay: Bool

    let access = ExclusiveAccess(name: "Adam")
    /// First and second moment estimates, one tensor each per parameter.
    @usableFromInline var firstMoment: [Tensor<T>]
    @usableFromInline var secondMoment: [Tensor<T>]
    /// Steps taken so far (t of the last step); atomic, so it can be read from any thread.
    public var stepCount: Int { steps.load(ordering: .relaxed) }
    let steps = Atomic<Int>(0)

    /// `Adam(params, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)`. Throws `.value` where
    /// PyTorch raises: lr, eps or weight_decay negative (or NaN), a beta outside [0, 1).
    public init(parameters: [Parameter<T>], learningRate: Double = 0.001, beta1: Double = 0.9, beta2: Double = 0.999,
                epsilon: Double = 1e-8, weightDecay: Double = 0, decoupledWeightDecay: Bool = false) throws {
        let op = decoupledWeightDecay ? "AdamW" : "Adam"
        try requireNonNegative("learningRate", learningRate, op: op)
        try requireNonNegative("epsilon", epsilon, op: op)
        try requireNonNegative("weightDecay", weightDecay, op: op)
        for (name, beta) in [("beta1", beta1), ("beta2", beta2)] {
            guard beta >= 0 && beta < 1 else {
                throw SwiftCNNError.value("\(op): invalid \(name): \(beta) (must be in [0, 1))")
            }
        }
        self.decoupledWeightDecay = decoupledWeightDecay
        self.parameters = uniqueParameters(parameters)
        self.learningRateBits = Atomic(learningRate.bitPattern)
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
        self.firstMoment = try self.parameters.map { try Tensor<T>(zeros: $0.data.shape) }
        self.secondMoment = try self.parameters.map { try Tensor<T>(zeros: $0.data.shape) }
    }

    @_specialize(where T == Float) @_specialize(where T == Double)
    public func step() throws {
        try access.run {
            let t = stepCount + 1
            // Scalars in Double, as PyTorch computes them in Python floats.
            let biasCorrection1 = 1 - pow(beta1, Double(t))
            let biasCorrection2 = 1 - pow(beta2, Double(t))
            let learningRate = self.learningRate   // read once: one value for the whole step
            let stepSize = T(learningRate / biasCorrection1)
            let biasCorrection2Sqrt = T(biasCorrection2.squareRoot())
            let w = T(1 - beta1), b2 = T(beta2), oneMinusB2 = T(1 - beta2), eps = T(epsilon)
            // L2 (Adam) adds wd * p to the gradient; AdamW shrinks p by (1 - lr * wd) first.
            let wd = decoupledWeightDecay ? T(0) : T(weightDecay)
            let shrink = T(1 - learningRate * weightDecay)
            for (index, param) in parameters.enumerated() {
                let p = param.data.pointer, grad = param.grad.pointer
                let m = firstMoment[index].pointer, v = secondMoment[index].pointer
                if decoupledWeightDecay && weightDecay != 0 {
                    for i in 0..<param.data.count { p[i] *= shrink }
                }
                for i in 0..<param.data.count {
                    var g = grad[i]
                    if wd != 0 { g = multiplyAdd(wd, p[i], g) }
                    // m <- lerp(m, g, 1 - beta1), with PyTorch's two-sided formula (exact at w = 1).
                    m[i] = w < 0.5 ? multiplyAdd(w, g - m[i], m[i]) : g - (g - m[i]) * (1 - w)
                    v[i] = multiplyAdd(oneMinusB2, g * g, v[i] * b2)
                    let denom = v[i].squareRoot() / biasCorrection2Sqrt + eps
                    p[i] = multiplyAdd(-stepSize, m[i] / denom, p[i])
                }
            }
            steps.store(t, ordering: .relaxed)
        }
    }

    public func zeroGrad() throws {
        try access.run {
            for param in parameters { param.grad.zero() }
        }
    }
}

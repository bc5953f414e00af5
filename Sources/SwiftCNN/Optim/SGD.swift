import Synchronization
/// Stochastic gradient descent with momentum, dampening, weight decay and Nesterov momentum, as
/// `torch.optim.SGD`. For each parameter p with gradient g, per step:
///
///     g <- g + weight_decay * p                          (L2 penalty, added to the gradient)
///     if momentum != 0:
///         b <- g                                         on the first step (no dampening)
///         b <- momentum * b + (1 - dampening) * g        afterwards
///         g <- g + momentum * b   if nesterov,  else  g <- b
///     p <- p - lr * g
///
/// With momentum 0 this is the lecture's update theta <- theta - eta dL/dtheta. The momentum buffer
/// b is a running, exponentially weighted sum of past gradients (velocity); Nesterov evaluates the
/// step at the look-ahead point, which with this rearrangement costs nothing extra.
public final class SGD<T: CNNScalar>: Optimizer, @unchecked Sendable {
    /// The parameters updated, without repeats of the same memory.
    public let parameters: [Parameter<T>]
    /// The learning rate of the next step (atomic: may be set from any thread, even during a step,
    /// which then uses the old or the new value throughout).
    public var learningRate: Double {
        get { Double(bitPattern: learningRateBits.load(ordering: .relaxed)) }
        set { learningRateBits.store(newValue.bitPattern, ordering: .relaxed) }
    }
    let learningRateBits: Atomic<UInt64>
    public let momentum: Double
    public let dampening: Double
    public let weightDecay: Double
    public let nesterov: Bool

    let access = ExclusiveAccess(name: "SGD")
    /// One velocity buffer per parameter (momentum != 0 only), valid after the first step.
    @usableFromInline var velocity: [Tensor<T>]
    @usableFromInline var stepCount = 0

    /// `SGD(params, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False)`. Throws `.value`
    /// where PyTorch raises: lr, momentum or weight_decay negative (or NaN); nesterov without
    /// momentum or with dampening.
    public init(parameters: [Parameter<T>], learningRate: Double, momentum: Double = 0, dampening: Double = 0,
                weightDecay: Double = 0, nesterov: Bool = false) throws {
        try requireNonNegative("learningRate", learningRate, op: "SGD")
        try requireNonNegative("momentum", momentum, op: "SGD")
        try requireNonNegative("weightDecay", weightDecay, op: "SGD")
        guard !nesterov || (momentum > 0 && dampening == 0) else {
            throw SwiftCNNError.value(
                "SGD: nesterov momentum requires a momentum > 0 and zero dampening, got momentum \(momentum), dampening \(dampening)")
        }
        self.parameters = uniqueParameters(parameters)
        self.learningRateBits = Atomic(learningRate.bitPattern)
        self.momentum = momentum
        self.dampening = dampening
        self.weightDecay = weightDecay
        self.nesterov = nesterov
        self.velocity = momentum != 0 ? try self.parameters.map { try Tensor<T>(zeros: $0.data.shape) } : []
    }

    @_specialize(where T == Float) @_specialize(where T == Double)
    public func step() throws {
        try access.run {
            let lr = T(learningRate), mu = T(momentum), damp = 1 - T(dampening), wd = T(weightDecay)
            let first = stepCount == 0
            for (index, param) in parameters.enumerated() {
                let p = param.data.pointer, grad = param.grad.pointer
                let b = momentum != 0 ? velocity[index].pointer : nil
                if b == nil && wd == 0 {
                    // Plain SGD, p -= lr * g, 8 lanes at a time (the same fused operation per element
                    // as the loop below, which the compiler does not vectorize).
                    sgdPlainStep(count: param.data.count, p: p, grad: grad, negativeLR: -lr)
                    continue
                }
                for i in 0..<param.data.count {
                    var g = grad[i]
                    if wd != 0 { g = multiplyAdd(wd, p[i], g) }
                    if let b {
                        b[i] = first ? g : multiplyAdd(damp, g, mu * b[i])
                        g = nesterov ? multiplyAdd(mu, b[i], g) : b[i]
                    }
                    p[i] = multiplyAdd(-lr, g, p[i])
                }
            }
            stepCount += 1
        }
    }

    public func zeroGrad() throws {
        try access.run {
            for param in parameters { param.grad.zero() }
        }
    }
}

/// p[i] = p[i] + (-lr) * grad[i] for i in 0..<count, with `multiplyAdd` as the scalar loop of
/// `SGD.step` (same result per element).
@inlinable
func sgdPlainStep<T: CNNScalar>(count: Int, p: UnsafeMutablePointer<T>, grad: UnsafePointer<T>, negativeLR: T) {
    let lanes = SIMD8<T>(repeating: negativeLR), size = MemoryLayout<T>.stride
    let praw = UnsafeMutableRawPointer(p), graw = UnsafeRawPointer(grad)
    var i = 0
    while i + 8 <= count {
        let g = graw.loadUnaligned(fromByteOffset: i * size, as: SIMD8<T>.self)
        let v = praw.loadUnaligned(fromByteOffset: i * size, as: SIMD8<T>.self)
        praw.storeBytes(of: multiplyAdd(lanes, g, v), toByteOffset: i * size, as: SIMD8<T>.self)
        i += 8
    }
    while i < count { p[i] = multiplyAdd(negativeLR, grad[i], p[i]); i += 1 }
}

/// Dropout, as PyTorch's `nn.Dropout(p=0.5)`: in training mode each forward draws a fresh mask,
/// zeroing each element with probability p and scaling the others by 1/(1-p); in eval mode it is
/// the identity. Backward applies the last forward's mask (Ops/Dropout.swift).
///
/// The masks come from the layer's own generator, seeded at creation (or by `reseed`), so a run is
/// reproducible: the same seed and the same sequence of forward shapes give the same masks.
///
/// Like PyTorch, the identity cases (eval mode, p = 0, an empty input) return the input itself,
/// with no copy and no draw, and their backward returns grad_out itself; p = 1 gives zeros without
/// drawing. Otherwise the output, the mask and the input gradient are layer-owned buffers.
public final class Dropout<T: CNNScalar>: Layer, @unchecked Sendable, CustomStringConvertible {
    public typealias Scalar = T

    /// The probability of zeroing an element, in [0, 1].
    public let p: Double

    let access = ExclusiveAccess(name: "Dropout")
    @usableFromInline let training = TrainingFlag()
    @usableFromInline var generator: RandomGenerator
    /// The last forward's mask (0 or 1/(1-p) per element); nil when that forward was the identity.
    @usableFromInline var mask: Tensor<T>?
    @usableFromInline var maskBuffer: Tensor<T>?
    @usableFromInline var output: Tensor<T>?
    @usableFromInline var gradInput: Tensor<T>?
    @usableFromInline var inputShape: [Int]?

    /// PyTorch's `Dropout(p=0.5)` with its masks drawn from a generator seeded with `seed`.
    /// Throws `.value` for p outside [0, 1] or NaN.
    public init(p: Double = 0.5, seed: UInt64) throws {
        try checkDropoutProbability(op: "Dropout", p)
        self.p = p
        self.generator = RandomGenerator(seed: seed)
    }

    /// Restarts the mask stream from `seed` (for a global `manual_seed`). Throws only `.runtime` (busy).
    public func reseed(_ seed: UInt64) throws {
        try access.run { generator = RandomGenerator(seed: seed) }
    }

    public var parameters: [Parameter<T>] { [] }

    public var isTraining: Bool { training.isOn }

    public func setTraining(_ on: Bool) { training.set(on) }

    public var lastInputShape: [Int]? { access.read { inputShape } }

    public func outputShape(forInput shape: [Int]) throws -> [Int] {
        _ = try checkedElementCount(shape, what: "Dropout: x")
        return shape
    }

    @_specialize(where T == Float) @_specialize(where T == Double)
    public func forward(_ x: Tensor<T>, returning result: ForwardResult) throws -> Tensor<T> {
        try access.run {
            inputShape = nil
            mask = nil
            guard training.isOn, p > 0, x.count > 0 else {
                inputShape = x.shape
                return try result.deliver(x)
            }
            let m = try layerBuffer(&maskBuffer, shape: x.shape, avoiding: x)
            let y = try layerBuffer(&output, shape: x.shape, avoiding: x)
            if p < 1 {
                dropoutMask(count: x.count, p: p, generator: &generator, mask: m.pointer)
            } else {
                m.zero()   // p = 1: every element dropped, nothing to draw
            }
            dropoutForward(count: x.count, x: x.pointer, mask: m.pointer, y: y.pointer)
            mask = m
            inputShape = x.shape
            return try result.deliver(y)
        }
    }

    /// dL/dx = dL/dy * mask (the last forward's), or dL/dy itself after an identity forward.
    @_specialize(where T == Float) @_specialize(where T == Double)
    public func backward(_ gradOut: Tensor<T>) throws -> Tensor<T> {
        try access.run {
            guard let shape = inputShape else {
                throw SwiftCNNError.runtime("Dropout: backward called before forward")
            }
            try requireGradOutShape("Dropout", gradOut, shape)
            guard let m = mask else { return gradOut }
            let gradX = try layerBuffer(&gradInput, shape: shape, avoiding: gradOut)
            dropoutBackward(count: m.count, gradOut: gradOut.pointer, mask: m.pointer, gradX: gradX.pointer)
            return gradX
        }
    }

    public func zeroGrad() throws {}

    /// As PyTorch prints it: `Dropout(p=0.5, inplace=False)`.
    public var description: String { "Dropout(p=\(p), inplace=False)" }
}

import Synchronization

/// A stateful building block of a network: forward keeps what backward needs, backward returns the
/// input gradient and adds into the parameter gradients (caffe's Layer, PyTorch's Module with a
/// hand-written backward).
///
/// Buffers: a layer owns its output and input-gradient buffers and reuses them while shapes stay the
/// same, so a training loop allocates nothing in the steady state. `forward` returns an owned copy
/// of the output, which never changes afterwards (keep it, store it, send it to another task);
/// `forwardView` returns the layer's output buffer itself, with no copy, valid until the layer's
/// next forward (what `Sequential` passes between its children, and what the C ABI hands to
/// Python). `backward` returns a view of the input-gradient buffer, valid until the next backward;
/// copy it (`copy()`) to keep it longer. A layer keeps a view of its input, not a copy: the caller
/// keeps it alive and unchanged until backward (mutating it gives wrong gradients, never a crash).
///
/// Threads: a layer is used by one thread at a time; a second thread calling in at the same moment
/// gets `SwiftCNNError.runtime("... is in use by another thread")` instead of corrupting state.
///
/// Sendable: a layer (or a whole `Sequential`) may be moved into a `Task` or owned by an actor.
/// The library's layers are `@unchecked Sendable` on the strength of that run-time guard: every
/// method that reads or writes a layer's mutable state runs under its `ExclusiveAccess` flag, and
/// the training mode is atomic. The compiler cannot check this, hence "unchecked". The guard
/// refuses concurrent use rather than serializing it: to call one model from several tasks, let an
/// actor own it (see the README's "Swift" section), so that the calls queue up. A layer of your own
/// must keep the same promise (guard its mutable state, e.g. with a lock or an actor) to conform.
///
/// Specialization: the layers' entry points carry `@_specialize` for Float and Double, so calls
/// through `any Layer<Float>` from other modules run code specialized for the scalar type.
public protocol Layer<Scalar>: AnyObject, Sendable {
    associatedtype Scalar: CNNScalar

    /// The output shape `forward` would give for an input of `shape`; throws what forward would throw.
    func outputShape(forInput shape: [Int]) throws -> [Int]

    /// Computes the output, keeping a view of `x` (not a copy) and what backward needs, and returns
    /// it as `result` asks: an owned copy (`.copy`, what `forward(_:)` does) or the layer's own
    /// output buffer (`.view`, what `forwardView(_:)` does: no copy, valid until the next forward).
    /// The copy is taken while the layer is still held, so a concurrent call cannot change it.
    ///
    /// - Parameters:
    ///   - x: the input batch, e.g. (N, C, H, W) for a convolution; kept (as a view) until
    ///     backward, so leave it unchanged until then.
    ///   - result: `.copy` for a tensor of its own, `.view` for the layer's buffer.
    /// - Returns: the output.
    func forward(_ x: Tensor<Scalar>, returning result: ForwardResult) throws -> Tensor<Scalar>

    /// The shape of the last successful forward's input (the shape backward's result will have),
    /// nil before any forward.
    var lastInputShape: [Int]? { get }

    /// dL/dx for the last forward's input from dL/dy, and ADDS dL/dparameter into each parameter's
    /// grad (accumulation, as PyTorch). Needs a preceding forward (else `.runtime`); `gradOut` must
    /// have the last output's shape (else `.value`). Returns a view of a layer-owned buffer (or of
    /// `gradOut` itself for shape-only layers such as Flatten).
    func backward(_ gradOut: Tensor<Scalar>) throws -> Tensor<Scalar>

    /// `backward(gradOut)`, except that with `inputGradient: false` a layer may skip computing dL/dx
    /// (and then returns nil): a training step that discards the network's input gradient saves the
    /// first layer's dx (for LeNet's first convolution, a quarter of that layer's backward). The
    /// parameter gradients are accumulated either way. The default computes dx.
    func backward(_ gradOut: Tensor<Scalar>, inputGradient: Bool) throws -> Tensor<Scalar>?

    /// The trainable tensors, in PyTorch's order, named relative to this layer ("weight", "bias";
    /// "0.weight", "2.0.bias" in a Sequential). The same memory for the layer's whole life.
    var parameters: [Parameter<Scalar>] { get }

    /// Fills every parameter gradient with zeros in place. Throws only `.runtime` (layer busy).
    func zeroGrad() throws

    /// Training (true, the mode at creation) or evaluation mode. Only BatchNorm and Dropout act
    /// differently in the two; layers without modes answer true (default in Modes.swift).
    var isTraining: Bool { get }

    /// Sets the mode (PyTorch's `train(mode)`); containers pass it to every child. Layers without
    /// modes ignore it. Takes effect at the next forward.
    func setTraining(_ on: Bool)

    /// The non-trainable state tensors (BatchNorm's running statistics), named as parameters are
    /// ("running_mean", "3.running_var" in a Sequential). The same memory for the layer's whole life;
    /// never in `parameters`. Default: none.
    var buffers: [Buffer<Scalar>] { get }
}

/// What `Layer.forward(_:returning:)` hands back.
public enum ForwardResult: Sendable {
    /// A tensor of its own, which no later call changes (`forward(_:)`).
    case copy
    /// The layer's output buffer itself, overwritten at the layer's next forward (`forwardView(_:)`).
    case view

    /// `y` itself for `.view`, a copy of it for `.copy`. Layers call it last, inside their
    /// exclusive-access guard, so the copy cannot race with another thread's forward.
    @inlinable
    public func deliver<T: CNNScalar>(_ y: Tensor<T>) throws -> Tensor<T> {
        self == .view ? y : try y.copy()
    }
}

/// A trainable tensor and its gradient: two tensors of one shape, owned by a layer.
///
/// `Parameter` is a value holding two views: copies of it (in an optimizer, in a Sequential's list)
/// read and write the layer's memory, and keep that memory alive. Sendable as its tensors are (see
/// `Tensor`): sending one shares the memory, it does not copy it.
public struct Parameter<T: CNNScalar>: Sendable {
    /// The state-dict key relative to the layer asked: "weight", "0.bias", "2.0.weight".
    public let name: String
    /// The values, updated in place by optimizers.
    public let data: Tensor<T>
    /// dL/data, accumulated by backward, zeroed by zeroGrad; optimizers only read it.
    public let grad: Tensor<T>

    /// A parameter of existing tensors (e.g. memory the C ABI borrows); they must have one shape.
    public init(name: String, data: Tensor<T>, grad: Tensor<T>) throws {
        guard data.shape == grad.shape else {
            throw SwiftCNNError.value(
                "Parameter \(name): grad must have the shape of data \(describeShape(data.shape)), got \(describeShape(grad.shape))")
        }
        self.name = name
        self.data = data
        self.grad = grad
    }

    /// A new parameter of zeros (data and grad) of `shape`.
    public init(name: String, shape: [Int]) throws {
        self.name = name
        self.data = try Tensor(zeros: shape)
        self.grad = try Tensor(zeros: shape)
    }

    @usableFromInline
    init(unchecked name: String, data: Tensor<T>, grad: Tensor<T>) {
        self.name = name
        self.data = data
        self.grad = grad
    }

    /// The same tensors under the name "prefix.name" (how a Sequential names its children's parameters).
    public func prefixed(_ prefix: String) -> Parameter {
        Parameter(unchecked: prefix + "." + name, data: data, grad: grad)
    }
}

/// A non-blocking guard that lets one thread at a time into an object.
///
/// `run` takes the flag with an atomic compare-exchange (false -> true) and gives it back when the
/// body returns or throws. A second thread arriving meanwhile does not wait: it gets
/// `.runtime("<name> is in use by another thread")`, which Python raises as RuntimeError. Not
/// re-entrant: the same thread entering twice gets the same error (a layer never calls itself).
@_spi(Engine) public final class ExclusiveAccess: Sendable {
    /// The object's name in the error message ("Conv2d", "Sequential", "SGD").
    public let name: String
    let busy = Atomic<Bool>(false)

    public init(name: String) {
        self.name = name
    }

    /// Runs `body` holding the flag, or throws `.runtime` if another call holds it.
    public func run<R>(_ body: () throws -> R) throws -> R {
        // acquiring/releasing: the previous holder's writes to the object are visible to the next.
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            throw SwiftCNNError.runtime("\(name) is in use by another thread")
        }
        defer { busy.store(false, ordering: .releasing) }
        return try body()
    }

    /// Reads state under the flag, or returns nil if another call holds it. For the layers'
    /// `lastInputShape`: reading a layer's fields while another thread's forward writes them is a
    /// data race (and for fields holding object references, a possible crash), so a busy layer
    /// answers "unknown" instead.
    public func read<R>(_ body: () -> R?) -> R? {
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            return nil
        }
        defer { busy.store(false, ordering: .releasing) }
        return body()
    }
}

// MARK: - Shared helpers of the layer implementations

/// A layer-owned buffer of `shape`: `buffer` itself if it holds exactly that many elements (now
/// viewed with the new shape) and does not overlap `avoiding`, else a new zero buffer stored into `buffer`.
///
/// Avoiding the argument's memory matters when a caller feeds a layer its own previous result
/// (`layer.forward(layer.forward(x))`): writing the new output over the input being read would give
/// garbage. Views handed out earlier keep the old memory alive, so replacing a buffer is always safe.
@usableFromInline
func layerBuffer<T: CNNScalar>(_ buffer: inout Tensor<T>?, shape: [Int], avoiding other: Tensor<T>) throws -> Tensor<T> {
    let count = try checkedElementCount(shape, what: "layer buffer")
    if let b = buffer, b.count == count, !memoryOverlaps(b, other) {
        if b.shape != shape { buffer = try b.reshaped(shape) }
        return buffer!
    }
    let fresh = try Tensor<T>(zeros: shape)
    buffer = fresh
    return fresh
}

/// Formats an (h, w) pair as PyTorch prints it: "(5, 5)".
@usableFromInline
func describePair(_ p: (Int, Int)) -> String { "(\(p.0), \(p.1))" }

/// Throws `.value` unless both entries of `pair` are >= `minimum`:
/// "Conv2d: kernel_size must be >= 1, got (0, 3)".
@usableFromInline
func requirePair(_ op: String, _ name: String, _ pair: (Int, Int), atLeast minimum: Int) throws {
    guard pair.0 >= minimum, pair.1 >= minimum else {
        throw SwiftCNNError.value("\(op): \(name) must be >= \(minimum), got \(describePair(pair))")
    }
}

extension Layer {
    /// Computes the output and returns an owned copy of it: a tensor that no later call changes,
    /// safe to keep in a struct or send to another task. The copy costs one pass over the output
    /// (for a classifier, the logits: negligible next to the network); `forwardView(_:)` skips it.
    ///
    /// - Parameter x: the input batch; kept (as a view) until backward, so leave it unchanged until then.
    /// - Returns: the output, in memory of its own.
    @inlinable
    public func forward(_ x: Tensor<Scalar>) throws -> Tensor<Scalar> {
        try forward(x, returning: .copy)
    }

    /// Computes the output and returns the layer's own output buffer, with no copy: the zero-copy
    /// form of `forward(_:)` for loops that use the output before the next forward (a training
    /// step: loss, then backward). The layer overwrites this memory at its next forward, so do not
    /// keep the result past that (copy it with `copy()` to keep it).
    ///
    /// - Parameter x: the input batch; kept (as a view) until backward, so leave it unchanged until then.
    /// - Returns: a view of the layer's output buffer, valid until this layer's next forward.
    @inlinable
    public func forwardView(_ x: Tensor<Scalar>) throws -> Tensor<Scalar> {
        try forward(x, returning: .view)
    }

    public func backward(_ gradOut: Tensor<Scalar>, inputGradient: Bool) throws -> Tensor<Scalar>? {
        try backward(gradOut)
    }
}

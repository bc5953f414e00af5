/// Updates parameters in place from their gradients, with PyTorch's rules step for step.
///
/// An optimizer holds `Parameter` values (views of the layers' data and grad tensors), which keep
/// that memory alive. `step()` writes `data` and its own state, never `grad`. Like layers, an
/// optimizer is used by one thread at a time (a concurrent second call gets `.runtime`).
///
/// `Sendable`: an optimizer may be handed to another task or actor. Its mutable state is guarded
/// at run time (`step` and `zeroGrad` under a non-blocking exclusive-access flag; the learning rate
/// is atomic), so concurrent misuse throws instead of racing. It writes the parameters' memory,
/// which it shares with the layers: run `step` and the model's forward/backward in one task (or
/// one actor), not concurrently.
public protocol Optimizer: AnyObject, Sendable {
    /// One update of every parameter from its current gradient.
    func step() throws
    /// Fills every parameter's gradient with zeros.
    func zeroGrad() throws
    /// The learning rate of the next step. Assign any value; use `setLearningRate` to reject
    /// negative or NaN values as PyTorch does.
    var learningRate: Double { get set }
}

extension Optimizer {
    /// Sets the learning rate after checking it as PyTorch's constructors do (lr >= 0, not NaN).
    public func setLearningRate(_ lr: Double) throws {
        try requireNonNegative("learningRate", lr, op: "\(type(of: self))".split(separator: "<").first.map(String.init) ?? "Optimizer")
        learningRate = lr
    }
}

/// Throws `.value` unless `value >= 0` (NaN fails too, as in PyTorch's `not 0.0 <= value`):
/// "SGD: Invalid lr: -0.1 (must be >= 0)".
@usableFromInline
func requireNonNegative(_ name: String, _ value: Double, op: String) throws {
    guard value >= 0 else {
        throw SwiftCNNError.value("\(op): invalid \(name): \(value) (must be >= 0)")
    }
}

/// The parameters without repeats of the same memory (first occurrence kept), so a tensor listed
/// twice is not updated twice per step.
@usableFromInline
func uniqueParameters<T: CNNScalar>(_ parameters: [Parameter<T>]) -> [Parameter<T>] {
    var seen = Set<UnsafeMutablePointer<T>>()
    return parameters.filter { $0.data.count == 0 || seen.insert($0.data.pointer).inserted }
}

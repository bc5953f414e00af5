#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// One value of a state dict: a floating-point tensor of the model's scalar type (weights, biases,
/// BatchNorm's running statistics) or 64-bit integers (BatchNorm's `num_batches_tracked`, a 0-d
/// int64 array in PyTorch and in Python's swiftcnn).
public enum StateValue<T: CNNScalar> {
    case floating(Tensor<T>)
    case int64(shape: [Int], values: [Int64])

    /// The shape ([] for a 0-d value).
    public var shape: [Int] {
        switch self {
        case .floating(let t): return t.shape
        case .int64(let shape, _): return shape
        }
    }

    /// The floating-point tensor, or nil for an integer value.
    public var tensor: Tensor<T>? {
        if case .floating(let t) = self { return t }
        return nil
    }

    /// The integers, or nil for a floating-point value.
    public var integers: [Int64]? {
        if case .int64(_, let values) = self { return values }
        return nil
    }

    /// "float32", "float64" or "int64", as NumPy names the dtype.
    public var dtypeName: String {
        switch self {
        case .floating: return T.dtype.description
        case .int64: return "int64"
        }
    }
}

/// An ordered state dict: every parameter and buffer of a model under PyTorch's name, in PyTorch's
/// order (layer by layer, each layer's parameters then its buffers: "0.weight", "0.bias",
/// "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked", "3.0.weight"
/// for a nested container), the keys Python's `Sequential.state_dict()` gives.
///
/// Values from `stateDict()` are copies: changing them does not change the model, and training the
/// model does not change them.
public struct StateDict<T: CNNScalar>: RandomAccessCollection {
    public typealias Element = (name: String, value: StateValue<T>)

    /// The entries, in order.
    public private(set) var entries: [Element]

    /// An empty state dict.
    public init() { entries = [] }

    /// A state dict of `entries` in the order given. Throws `.value` if a name appears twice.
    public init(_ entries: [Element]) throws {
        self.entries = []
        for (name, value) in entries { try append(name, value) }
    }

    public var startIndex: Int { entries.startIndex }
    public var endIndex: Int { entries.endIndex }
    public subscript(position: Int) -> Element { entries[position] }

    /// The names, in order.
    public var names: [String] { entries.map(\.name) }

    /// The value stored under `name`, or nil.
    public subscript(name: String) -> StateValue<T>? {
        entries.first(where: { $0.name == name })?.value
    }

    /// Adds `value` at the end under `name`; throws `.value` if `name` is already present.
    public mutating func append(_ name: String, _ value: StateValue<T>) throws {
        guard self[name] == nil else {
            throw SwiftCNNError.value("StateDict: the name \"\(name)\" appears more than once")
        }
        entries.append((name, value))
    }

    /// Adds (or replaces) the floating-point tensor under `name`.
    public mutating func set(_ name: String, _ tensor: Tensor<T>) {
        set(name, .floating(tensor))
    }

    /// Adds (or replaces) `value` under `name`; a new name goes at the end.
    public mutating func set(_ name: String, _ value: StateValue<T>) {
        if let i = entries.firstIndex(where: { $0.name == name }) {
            entries[i].value = value
        } else {
            entries.append((name, value))
        }
    }
}

/// A slot of a model's state: where `loadStateDict` writes and `stateDict` reads one entry.
@usableFromInline
enum StateSlot<T: CNNScalar> {
    case floating(Tensor<T>)
    case int64(Int64Tensor)

    var shape: [Int] {
        switch self {
        case .floating(let t): return t.shape
        case .int64(let t): return t.shape
        }
    }
}

extension Layer {
    /// The model's state slots in PyTorch's order: for a container each child's in turn (prefixed
    /// by its index), for any other layer its parameters, then its buffers.
    func stateSlots(prefix: String) -> [(String, StateSlot<Scalar>)] {
        if let sequential = self as? Sequential<Scalar> {
            return childSlots(sequential.layers, prefix: prefix)
        }
        if let residual = self as? Residual<Scalar> {
            return childSlots(residual.layers, prefix: prefix)
        }
        var slots = parameters.map { (prefix + $0.name, StateSlot<Scalar>.floating($0.data)) }
        for buffer in buffers {
            switch buffer.storage {
            case .floating(let t): slots.append((prefix + buffer.name, .floating(t)))
            case .int64(let t): slots.append((prefix + buffer.name, .int64(t)))
            }
        }
        return slots
    }

    private func childSlots(_ layers: [any Layer<Scalar>], prefix: String) -> [(String, StateSlot<Scalar>)] {
        var slots: [(String, StateSlot<Scalar>)] = []
        for (i, layer) in layers.enumerated() {
            slots += layer.stateSlots(prefix: "\(prefix)\(i).")
        }
        return slots
    }

    /// Copies of every parameter and buffer under PyTorch's names and in PyTorch's order (see
    /// `StateDict`): the names and order Python's `state_dict()` gives for the same model.
    /// Throws only `.memory` (a copy could not be allocated).
    public func stateDict() throws -> StateDict<Scalar> {
        var dict = StateDict<Scalar>()
        for (name, slot) in stateSlots(prefix: "") {
            switch slot {
            case .floating(let t): dict.set(name, .floating(try t.copy()))
            case .int64(let t): dict.set(name, .int64(shape: t.shape, values: Array(UnsafeBufferPointer(start: t.pointer, count: t.count))))
            }
        }
        return dict
    }

    /// Copies `state`'s values into the model's parameters and buffers, in place (PyTorch's
    /// `load_state_dict(strict=True)`).
    ///
    /// Everything is checked before anything is written: a missing or unexpected name, a value of
    /// the wrong shape or kind (floating point where `num_batches_tracked` needs integers, or the
    /// reverse) throws `.value` naming the entry, and the model is left unchanged.
    public func loadStateDict(_ state: StateDict<Scalar>) throws {
        let slots = stateSlots(prefix: "")
        let known = Set(slots.map(\.0))
        let missing = slots.map(\.0).filter { state[$0] == nil }
        let unexpected = state.names.filter { !known.contains($0) }
        if !missing.isEmpty || !unexpected.isEmpty {
            var problems: [String] = []
            if !missing.isEmpty {
                problems.append("missing key" + (missing.count > 1 ? "s " : " ") + missing.map { "\"\($0)\"" }.joined(separator: ", "))
            }
            if !unexpected.isEmpty {
                problems.append("unexpected key" + (unexpected.count > 1 ? "s " : " ") + unexpected.map { "\"\($0)\"" }.joined(separator: ", "))
            }
            throw SwiftCNNError.value(
                "loadStateDict: \(problems.joined(separator: "; ")) (the model's keys are \(slots.map { "\"\($0.0)\"" }.joined(separator: ", ")))")
        }
        var writes: [() -> Void] = []
        for (name, slot) in slots {
            guard let value = state[name] else { continue }  // unreachable: checked above
            guard value.shape == slot.shape else {
                throw SwiftCNNError.value(
                    "loadStateDict: \"\(name)\" has shape \(describeShape(value.shape)) but the model expects \(describeShape(slot.shape))")
            }
            switch (slot, value) {
            case (.floating(let target), .floating(let source)):
                // A state dict taken from this very model (or sharing its memory) loads too.
                writes.append { if target.pointer != source.pointer { target.pointer.update(from: source.pointer, count: target.count) } }
            case (.int64(let target), .int64(_, let values)):
                guard values.count == target.count else {
                    throw SwiftCNNError.value(
                        "loadStateDict: \"\(name)\" holds \(values.count) integers but its shape \(describeShape(value.shape)) needs \(target.count)")
                }
                writes.append { for i in 0..<values.count { target.pointer[i] = values[i] } }
            case (.floating, .int64):
                throw SwiftCNNError.value("loadStateDict: \"\(name)\" must hold \(Scalar.dtype) values, got int64")
            case (.int64, .floating):
                throw SwiftCNNError.value("loadStateDict: \"\(name)\" must hold int64 values, got \(Scalar.dtype)")
            }
        }
        for write in writes { write() }
    }
}

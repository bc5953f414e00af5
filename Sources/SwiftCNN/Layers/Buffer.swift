#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A named, non-trainable state tensor of a layer (PyTorch's buffers: BatchNorm's `running_mean`,
/// `running_var` and `num_batches_tracked`).
///
/// Like `Parameter`, a value holding views: copies read and write the layer's memory and keep it
/// alive. The layer writes its buffers in place (training updates them) and never reallocates them,
/// so a caller (the C ABI) may expose the memory without copying and write into it (load_state_dict).
public struct Buffer<T: CNNScalar>: Sendable {
    /// The memory: a tensor of the layer's scalar type, or 64-bit integers (`num_batches_tracked`).
    public enum Storage: Sendable {
        case floating(Tensor<T>)
        case int64(Int64Tensor)
    }

    /// The state-dict key relative to the layer asked: "running_mean", "3.running_var", "2.0.num_batches_tracked".
    public let name: String
    public let storage: Storage

    public init(name: String, storage: Storage) {
        self.name = name
        self.storage = storage
    }

    /// The shape of the memory ([] for a 0-d buffer such as `num_batches_tracked`).
    public var shape: [Int] {
        switch storage {
        case .floating(let t): return t.shape
        case .int64(let t): return t.shape
        }
    }

    /// The floating-point tensor, or nil for an int64 buffer.
    public var tensor: Tensor<T>? {
        if case .floating(let t) = storage { return t }
        return nil
    }

    /// The int64 memory, or nil for a floating-point buffer.
    public var int64: Int64Tensor? {
        if case .int64(let t) = storage { return t }
        return nil
    }

    /// The same memory under the name "prefix.name" (how containers name their children's buffers).
    public func prefixed(_ prefix: String) -> Buffer {
        Buffer(name: prefix + "." + name, storage: storage)
    }
}

/// Row-major Int64 memory a layer owns (zero-filled, malloc'd, stable for the object's life):
/// `num_batches_tracked`, a 0-d int64 array in PyTorch.
///
/// `@unchecked Sendable` with the same contract as `Tensor`: a shared view of memory whose
/// elements are not synchronized; the owning layer writes it only under its exclusive-access guard.
public final class Int64Tensor: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<Int64>
    public let shape: [Int]
    public let count: Int

    /// Zeros of `shape` ([] for one element). Throws `.value` / `.overflow` for bad sizes, `.memory`
    /// if the allocation fails.
    public init(zeros shape: [Int]) throws {
        let count = try checkedElementCount(shape, what: "Int64Tensor")
        let bytes = try checkedMultiply(max(count, 1), MemoryLayout<Int64>.stride, what: "Int64Tensor bytes")
        guard let raw = calloc(1, bytes) else {
            throw SwiftCNNError.memory("cannot allocate \(bytes) bytes")
        }
        self.pointer = raw.bindMemory(to: Int64.self, capacity: max(count, 1))
        self.shape = shape
        self.count = count
    }

    /// The first element (the value of a 0-d tensor).
    public var value: Int64 {
        get { pointer[0] }
        set { pointer[0] = newValue }
    }

    deinit { free(pointer) }
}

extension Layer {
    /// No buffers (every layer but BatchNorm and the containers).
    public var buffers: [Buffer<Scalar>] { [] }
}

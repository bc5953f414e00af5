#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A contiguous, row-major (NCHW for images) array of `Float` or `Double`.
///
/// A tensor either owns its memory (`init(zeros:)`, `init(shape:scalars:)`) or borrows memory
/// somebody else keeps alive (`init(borrowing:shape:)`: NumPy buffers handed over by the Python
/// extension, with no copy). Copies of a `Tensor` value share the same memory: it is a view, like a
/// NumPy array, and writes through one are seen through all.
///
/// Sendable (unchecked): a tensor can be passed to another task or actor, and what crosses is the
/// view, not a copy of the elements. The elements are not synchronized, exactly as with the memory
/// behind an `UnsafeMutableBufferPointer`: do not write a tensor in one task while another task reads
/// or writes the same memory. Tensors that nobody else references (`init(zeros:)`, `copy()`, the
/// result of `forward`, a loss gradient) are safe to send as they are; a view (`forwardView`,
/// `reshaped`, a parameter's `data`) shares its owner's memory and is safe to send only when the
/// owner will not write it meanwhile.
public struct Tensor<Scalar: CNNScalar>: @unchecked Sendable {
    /// Sizes per dimension, outermost first.
    public let shape: [Int]
    /// The product of `shape`.
    public let count: Int
    /// The first element. Valid for `count` elements while the owner (or the lender) is alive.
    public let pointer: UnsafeMutablePointer<Scalar>
    /// Keeps owned memory alive; `nil` for borrowed memory.
    @usableFromInline let owner: AnyObject?

    /// A tensor of zeros that owns its memory. Throws on negative sizes, overflow, or allocation failure.
    public init(zeros shape: [Int]) throws {
        let count = try checkedElementCount(shape, what: "Tensor")
        let storage = try AlignedBuffer<Scalar>(count: count, what: "Tensor \(describeShape(shape))")
        self.shape = shape
        self.count = count
        self.pointer = storage.pointer
        self.owner = storage
    }

    /// A tensor that owns a copy of `scalars`, which must hold exactly `shape`'s element count.
    public init(shape: [Int], scalars: [Scalar]) throws {
        try self.init(zeros: shape)
        guard scalars.count == count else {
            throw SwiftCNNError.value("Tensor: shape \(describeShape(shape)) holds \(count) elements but \(scalars.count) were given")
        }
        scalars.withUnsafeBufferPointer { src in
            if let base = src.baseAddress { pointer.update(from: base, count: count) }
        }
    }

    /// A view of memory this tensor does not own. The caller keeps `pointer` valid for
    /// `shape`'s element count for as long as the tensor (or anything holding it) may read it.
    public init(borrowing pointer: UnsafeMutablePointer<Scalar>, shape: [Int]) throws {
        self.count = try checkedElementCount(shape, what: "Tensor")
        self.shape = shape
        self.pointer = pointer
        self.owner = nil
    }

    /// A view of the same memory with another shape of the same element count (like `reshape`).
    public func reshaped(_ newShape: [Int]) throws -> Tensor {
        let n = try checkedElementCount(newShape, what: "reshape")
        guard n == count else {
            throw SwiftCNNError.value("reshape: cannot view shape \(describeShape(shape)) as \(describeShape(newShape))")
        }
        return Tensor(unchecked: pointer, shape: newShape, count: n, owner: owner)
    }

    @usableFromInline
    init(unchecked pointer: UnsafeMutablePointer<Scalar>, shape: [Int], count: Int, owner: AnyObject?) {
        self.pointer = pointer
        self.shape = shape
        self.count = count
        self.owner = owner
    }

    /// Number of dimensions.
    @inlinable public var rank: Int { shape.count }

    /// The elements, copied into an array, in row-major order.
    public var scalars: [Scalar] { Array(UnsafeBufferPointer(start: pointer, count: count)) }

    /// Row-major flat element access. Traps unless `0 <= index < count`, as `Array`'s subscript does
    /// (an index out of range is a programming error in the calling Swift code, never user input).
    @inlinable public subscript(flat index: Int) -> Scalar {
        get {
            checkFlatIndex(index)
            return pointer[index]
        }
        nonmutating set {
            checkFlatIndex(index)
            pointer[index] = newValue
        }
    }

    /// The bounds check of `subscript(flat:)`: one unsigned comparison covers both ends.
    @inlinable @inline(__always)
    func checkFlatIndex(_ index: Int) {
        precondition(UInt(bitPattern: index) < UInt(bitPattern: count),
                     "Tensor[flat:]: index \(index) is out of range for \(count) elements")
    }

    /// A tensor that owns a copy of this one's elements.
    public func copy() throws -> Tensor {
        let t = try Tensor(zeros: shape)
        t.pointer.update(from: pointer, count: count)
        return t
    }

    /// Sets every element to zero (all-zero bytes are 0.0 in IEEE 754; a memset, where the generic
    /// element loop went through a value witness per element: 2% of a batch-64 training step).
    @inlinable
    public func zero() {
        memset(pointer, 0, count * MemoryLayout<Scalar>.stride)
    }
}

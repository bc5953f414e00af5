#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Every heap buffer of the core comes from here: tensors, workspaces, index tables and kernel scratch.
///
/// `UnsafeMutablePointer.allocate` traps when memory runs out, and a trap inside the Python
/// extension kills the interpreter; these throw instead, so that Python raises MemoryError.

/// `count` elements of `T`, 64-byte aligned (one cache line, one AVX-512 vector), contents
/// unspecified; release with `deallocateAligned`. At least 64 bytes are allocated, so an empty buffer still has
/// a valid, unique address. Throws `.overflow` if the byte count does not fit in an Int, `.memory`
/// if the allocation fails; both messages begin with `what` (the op and buffer).
@usableFromInline
func allocateAligned<T>(_: T.Type, count: Int, what: @autoclosure () -> String) throws -> UnsafeMutablePointer<T> {
    let (bytes, overflow) = count.multipliedReportingOverflow(by: MemoryLayout<T>.stride)
    guard count >= 0, !overflow else {
        throw SwiftCNNError.overflow("\(what()): cannot allocate \(count) elements: the byte count overflows")
    }
    var raw: UnsafeMutableRawPointer? = nil
    guard posix_memalign(&raw, 64, max(bytes, 64)) == 0, let raw else {
        throw SwiftCNNError.memory("\(what()): cannot allocate \(bytes) bytes")
    }
    return raw.bindMemory(to: T.self, capacity: max(count, 1))
}

/// Releases memory from `allocateAligned`.
@usableFromInline
func deallocateAligned<T>(_ pointer: UnsafeMutablePointer<T>) {
    free(pointer)
}

/// An owned, zero-filled, 64-byte-aligned buffer of `count` elements (`allocateAligned`), freed
/// with the object: a tensor's storage, a workspace slot, max pooling's argmax indices, a kernel's
/// scratch.
@usableFromInline
final class AlignedBuffer<Element> {
    @usableFromInline let pointer: UnsafeMutablePointer<Element>
    @usableFromInline let count: Int

    /// Allocates and zeroes `count` elements, or throws `.overflow` / `.memory` naming `what`.
    @usableFromInline
    convenience init(count: Int, what: @autoclosure () -> String) throws {
        try self.init(copies: 1, of: count, what: what())
    }

    /// Allocates and zeroes `copies` consecutive runs of `count` elements (one per thread chunk:
    /// run i starts at `pointer + i * count`), or throws `.overflow` / `.memory` naming `what`.
    @usableFromInline
    init(copies: Int, of count: Int, what: @autoclosure () -> String) throws {
        let (total, overflow) = copies.multipliedReportingOverflow(by: count)
        guard copies >= 0, !overflow else {
            throw SwiftCNNError.overflow("\(what()): cannot allocate \(copies) x \(count) elements: the count overflows")
        }
        pointer = try allocateAligned(Element.self, count: total, what: what())
        memset(pointer, 0, max(total * MemoryLayout<Element>.stride, 64))
        self.count = total
    }

    deinit { deallocateAligned(pointer) }
}

/// Max pooling's argmax and the direct convolutions' tap offsets.
@usableFromInline typealias IndexBuffer = AlignedBuffer<Int32>

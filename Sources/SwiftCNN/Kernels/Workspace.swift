/// Reusable scratch memory for kernels (im2col buffers, per-thread partial sums).
///
/// A workspace holds numbered slots; `buffer(slot, count:)` returns a 64-byte-aligned buffer of at
/// least `count` elements for that slot, reallocating only when it must grow. Contents are
/// unspecified on return (not zeroed). Pointers stay valid until the next `buffer` call for the same
/// slot or the workspace's end.
///
/// A layer owns one workspace and reuses it across forward/backward calls (no allocation in the
/// steady state); a functional call makes a fresh one. A workspace is not thread-safe: one call at a
/// time (layers guard themselves with ExclusiveAccess). Kernels that fan out to threads take one
/// slot per chunk before starting them.
@usableFromInline
final class ScratchSlots<T: CNNScalar> {
    @usableFromInline
    var slots: [AlignedBuffer<T>?] = []

    @inlinable
    init() {}

    /// A buffer of at least `count` elements for `slot` (>= 0). Throws `.memory` if it cannot be
    /// allocated, `.overflow` if `count * stride` overflows.
    @usableFromInline
    func buffer(_ slot: Int, count: Int) throws -> UnsafeMutablePointer<T> {
        precondition(slot >= 0, "scratch slot must be >= 0")  // internal use only, never user input
        while slots.count <= slot { slots.append(nil) }
        if let s = slots[slot], s.count >= count { return s.pointer }
        slots[slot] = nil  // free the old buffer before allocating the bigger one
        let s = try AlignedBuffer<T>(count: count, what: "workspace slot \(slot)")
        slots[slot] = s
        return s.pointer
    }

    /// Frees every slot.
    func release() { slots.removeAll() }

    /// Total elements held (for tests and diagnostics).
    var allocatedCount: Int { slots.reduce(0) { $0 + ($1?.count ?? 0) } }
}

/// The scratch of one C ABI call: `conv2dForward(..., workspace: Workspace())`.
///
/// A struct around the engine's `ScratchSlots` rather than that class itself: inlinable engine code
/// cannot name an SPI type, so the kernels take `ScratchSlots` and only this entry type is SPI.
@_spi(Engine) public struct Workspace<T: CNNScalar> {
    @usableFromInline let slots: ScratchSlots<T>

    @inlinable
    public init() { slots = ScratchSlots() }
}

/// A deterministic vectorized sum of a contiguous run (conv2d's bias gradient).

/// p[0] + ... + p[count-1], summed 16 wide (two independent SIMD8 accumulators, then the lanes,
/// then the tail: a fixed order, so deterministic; a scalar loop would be one long dependency chain).
@inlinable
func contiguousSum<T: CNNScalar>(_ p: UnsafePointer<T>, count: Int) -> T {
    var a = SIMD8<T>(repeating: 0), b = SIMD8<T>(repeating: 0)
    let raw = UnsafeRawPointer(p), size = MemoryLayout<T>.stride
    var i = 0
    while i + 16 <= count {
        a += raw.loadUnaligned(fromByteOffset: i * size, as: SIMD8<T>.self)
        b += raw.loadUnaligned(fromByteOffset: (i + 8) * size, as: SIMD8<T>.self)
        i += 16
    }
    var sum = (a + b).sum()
    while i < count { sum += p[i]; i += 1 }
    return sum
}

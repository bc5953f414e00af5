/// CRC-32 as zip (and zlib, PNG) define it: the reflected polynomial 0xEDB88320, initial value and
/// final xor 0xFFFFFFFF. Table-driven, one byte per step.
struct CRC32 {
    /// The 256 table entries: entry b is the CRC register after shifting byte b through 8 rounds.
    static let table: [UInt32] = (0..<256).map { (b: Int) -> UInt32 in
        var c = UInt32(b)
        for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    private var state: UInt32 = 0xFFFF_FFFF

    init() {}

    mutating func update(_ bytes: UnsafeRawBufferPointer) {
        var c = state
        Self.table.withUnsafeBufferPointer { t in
            for byte in bytes { c = t[Int((c ^ UInt32(byte)) & 0xFF)] ^ (c >> 8) }
        }
        state = c
    }

    mutating func update(_ bytes: ArraySlice<UInt8>) {
        bytes.withUnsafeBytes { update($0) }
    }

    var value: UInt32 { state ^ 0xFFFF_FFFF }

    static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        var c = CRC32()
        c.update(bytes)
        return c.value
    }
}

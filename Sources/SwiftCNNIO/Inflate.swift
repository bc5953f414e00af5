@_spi(Engine) import SwiftCNN

/// A raw DEFLATE decoder (RFC 1951), for the members `np.savez_compressed` writes (zip method 8).
///
/// Written after Mark Adler's `puff.c`: canonical Huffman codes decoded one bit at a time from
/// per-length code counts. Slow next to zlib (a few MB/s), ample for model files. Every malformed
/// stream (a bad block type, an over-subscribed or missing code, a distance reaching before the
/// start, output beyond `expectedSize`, a stream ending early) throws `.value`; nothing traps.
enum Inflate {
    struct Huffman {
        /// count[len]: the number of codes of length len (1...15).
        var count = [Int](repeating: 0, count: 16)
        /// The symbols ordered by code (canonical order: by length, then by symbol).
        var symbol: [Int] = []

        /// The code for `lengths` (0 = unused symbol). Throws for an over-subscribed set of lengths.
        init(lengths: ArraySlice<Int>) throws {
            for l in lengths { count[l] += 1 }
            count[0] = 0
            var left = 1
            for len in 1...15 {
                left <<= 1
                left -= count[len]
                guard left >= 0 else { throw SwiftCNNError.value("a Huffman code is over-subscribed") }
            }
            var offsets = [Int](repeating: 0, count: 16)
            for len in 1..<15 { offsets[len + 1] = offsets[len] + count[len] }
            symbol = [Int](repeating: 0, count: lengths.count)
            for (s, l) in lengths.enumerated() where l != 0 {
                symbol[offsets[l]] = s
                offsets[l] += 1
            }
        }
    }

    struct BitReader {
        let bytes: ArraySlice<UInt8>
        var position: Int
        var bitBuffer: UInt32 = 0
        var bitCount = 0

        init(_ bytes: ArraySlice<UInt8>) {
            self.bytes = bytes
            self.position = bytes.startIndex
        }

        mutating func bits(_ need: Int) throws -> Int {
            while bitCount < need {
                guard position < bytes.endIndex else { throw SwiftCNNError.value("the deflate stream ends early") }
                bitBuffer |= UInt32(bytes[position]) << UInt32(bitCount)
                position += 1
                bitCount += 8
            }
            let v = Int(bitBuffer & ((1 << UInt32(need)) - 1))
            bitBuffer >>= UInt32(need)
            bitCount -= need
            return v
        }

        mutating func decode(_ h: Huffman) throws -> Int {
            var code = 0, first = 0, index = 0
            for len in 1...15 {
                code |= try bits(1)
                let count = h.count[len]
                if code - count < first { return h.symbol[index + (code - first)] }
                index += count
                first += count
                first <<= 1
                code <<= 1
            }
            throw SwiftCNNError.value("the deflate stream uses a code that is not defined")
        }
    }

    static let lengthBase = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115,
                             131, 163, 195, 227, 258]
    static let lengthExtra = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0]
    static let distanceBase = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
                               2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577]
    static let distanceExtra = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13]
    /// The order in which a dynamic block lists the code-length code's lengths.
    static let codeLengthOrder = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]

    /// The bytes the raw deflate stream `input` decodes to, which must be exactly `expectedSize`.
    static func decompress(_ input: ArraySlice<UInt8>, expectedSize: Int) throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(expectedSize)
        var r = BitReader(input)
        var last = false
        while !last {
            last = try r.bits(1) == 1
            switch try r.bits(2) {
            case 0:
                // Stored block: byte-aligned LEN and its complement NLEN, then LEN bytes.
                r.bitBuffer = 0
                r.bitCount = 0
                guard r.position + 4 <= input.endIndex else { throw SwiftCNNError.value("the deflate stream ends early") }
                let len = Int(input[r.position]) | Int(input[r.position + 1]) << 8
                let nlen = Int(input[r.position + 2]) | Int(input[r.position + 3]) << 8
                guard len == (~nlen & 0xFFFF) else { throw SwiftCNNError.value("a stored block's length check fails") }
                r.position += 4
                guard r.position + len <= input.endIndex else { throw SwiftCNNError.value("the deflate stream ends early") }
                guard out.count + len <= expectedSize else { throw tooLong(expectedSize) }
                out += input[r.position..<(r.position + len)]
                r.position += len
            case 1:
                var lengths = [Int](repeating: 8, count: 288)
                for s in 144..<256 { lengths[s] = 9 }
                for s in 256..<280 { lengths[s] = 7 }
                let literal = try Huffman(lengths: lengths[...])
                let distance = try Huffman(lengths: [Int](repeating: 5, count: 30)[...])
                try codes(&r, &out, literal, distance, expectedSize)
            case 2:
                let nlen = try r.bits(5) + 257, ndist = try r.bits(5) + 1, ncode = try r.bits(4) + 4
                guard nlen <= 286, ndist <= 30 else { throw SwiftCNNError.value("a dynamic block declares too many codes") }
                var lengths = [Int](repeating: 0, count: 19)
                for i in 0..<ncode { lengths[codeLengthOrder[i]] = try r.bits(3) }
                let lengthCode = try Huffman(lengths: lengths[...])
                var all = [Int]()
                all.reserveCapacity(nlen + ndist)
                while all.count < nlen + ndist {
                    let s = try r.decode(lengthCode)
                    if s < 16 {
                        all.append(s)
                        continue
                    }
                    var value = 0, repeats: Int
                    if s == 16 {
                        guard let previous = all.last else { throw SwiftCNNError.value("a length repeat has nothing to repeat") }
                        value = previous
                        repeats = 3 + (try r.bits(2))
                    } else if s == 17 {
                        repeats = 3 + (try r.bits(3))
                    } else {
                        repeats = 11 + (try r.bits(7))
                    }
                    guard all.count + repeats <= nlen + ndist else { throw SwiftCNNError.value("code lengths overflow their table") }
                    all += [Int](repeating: value, count: repeats)
                }
                guard all[256] != 0 else { throw SwiftCNNError.value("a dynamic block has no end-of-block code") }
                let literal = try Huffman(lengths: all[0..<nlen])
                let distance = try Huffman(lengths: all[nlen...])
                try codes(&r, &out, literal, distance, expectedSize)
            default:
                throw SwiftCNNError.value("the deflate stream has an invalid block type (3)")
            }
        }
        guard out.count == expectedSize else {
            throw SwiftCNNError.value("it decompresses to \(out.count) bytes, not the \(expectedSize) declared")
        }
        return out
    }

    static func tooLong(_ expected: Int) -> SwiftCNNError {
        SwiftCNNError.value("it decompresses to more than the \(expected) bytes declared")
    }

    /// The literal/length and distance codes of one block, up to its end-of-block symbol (256).
    static func codes(_ r: inout BitReader, _ out: inout [UInt8], _ literal: Huffman, _ distance: Huffman,
                      _ expectedSize: Int) throws {
        while true {
            let s = try r.decode(literal)
            if s < 256 {
                guard out.count < expectedSize else { throw tooLong(expectedSize) }
                out.append(UInt8(s))
            } else if s == 256 {
                return
            } else {
                let i = s - 257
                guard i < 29 else { throw SwiftCNNError.value("the deflate stream has an invalid length code \(s)") }
                let length = lengthBase[i] + (try r.bits(lengthExtra[i]))
                let d = try r.decode(distance)
                guard d < 30 else { throw SwiftCNNError.value("the deflate stream has an invalid distance code \(d)") }
                let dist = distanceBase[d] + (try r.bits(distanceExtra[d]))
                guard dist <= out.count else { throw SwiftCNNError.value("a distance reaches before the start of the output") }
                guard out.count + length <= expectedSize else { throw tooLong(expectedSize) }
                let from = out.count - dist
                for k in 0..<length { out.append(out[from + k]) }  // may overlap: byte by byte
            }
        }
    }
}

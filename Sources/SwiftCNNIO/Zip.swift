@_spi(Engine) import SwiftCNN

/// The zip archive structure an `.npz` is (PKWARE APPNOTE 6.3): local file headers with the member
/// data, then the central directory, then the end-of-central-directory record. Reading trusts the
/// central directory (as Python's zipfile), checks every offset and size against the file before
/// using it, and checks each member's CRC-32. Writing produces what `np.savez` does: stored
/// (uncompressed) members with their CRC-32 and sizes, no data descriptors.
///
/// Every problem is thrown as `SwiftCNNError.value` with a reason that names the member; nothing
/// here traps on a damaged file.
enum Zip {
    /// Compression methods.
    static let methodStored: UInt16 = 0
    static let methodDeflated: UInt16 = 8

    /// One member: its name and its (decompressed, CRC-checked) bytes.
    struct Member {
        let name: String
        let bytes: [UInt8]
    }

    // MARK: little-endian fields, bounds-checked

    /// Reads little-endian integers from a byte array; any read past the end throws `.value`
    /// with `what` (the structure being read), so a truncated file is an error, never a trap.
    struct Reader {
        let bytes: [UInt8]

        func u16(_ at: Int, _ what: @autoclosure () -> String) throws -> UInt16 {
            try require(at, 2, what())
            return UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8
        }

        func u32(_ at: Int, _ what: @autoclosure () -> String) throws -> UInt32 {
            try require(at, 4, what())
            var v: UInt32 = 0
            for i in (0..<4).reversed() { v = v << 8 | UInt32(bytes[at + i]) }
            return v
        }

        func u64(_ at: Int, _ what: @autoclosure () -> String) throws -> UInt64 {
            try require(at, 8, what())
            var v: UInt64 = 0
            for i in (0..<8).reversed() { v = v << 8 | UInt64(bytes[at + i]) }
            return v
        }

        func require(_ at: Int, _ count: Int, _ what: @autoclosure () -> String) throws {
            guard at >= 0, count >= 0, at <= bytes.count, count <= bytes.count - at else {
                throw SwiftCNNError.value("it is truncated or damaged: \(what()) lies beyond the end of the file (\(bytes.count) bytes)")
            }
        }
    }

    /// Converts a size or offset read from the file to Int, refusing values beyond the file.
    static func offset(_ v: UInt64, within size: Int, _ what: String) throws -> Int {
        guard v <= UInt64(size) else {
            throw SwiftCNNError.value("its \(what) (\(v)) is beyond the end of the file (\(size) bytes)")
        }
        return Int(v)
    }

    // MARK: reading

    /// Every member of the archive `bytes`, in central-directory order.
    static func read(_ bytes: [UInt8]) throws -> [Member] {
        let r = Reader(bytes: bytes)
        let size = bytes.count
        if size >= 6, Array(bytes[0..<6]) == [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59] {
            throw SwiftCNNError.value("it holds a single .npy array, not an .npz archive")
        }
        // The end-of-central-directory record: 22 bytes plus a comment of up to 65535 bytes.
        guard size >= 22 else {
            throw SwiftCNNError.value("it is not an .npz (zip) archive: \(size) bytes is too short for a zip file")
        }
        var eocd = -1
        var at = size - 22
        let lowest = max(0, size - 22 - 65535)
        while at >= lowest {
            if bytes[at] == 0x50, bytes[at + 1] == 0x4B, bytes[at + 2] == 0x05, bytes[at + 3] == 0x06 {
                let commentLength = Int(try r.u16(at + 20, "the end-of-directory comment length"))
                if at + 22 + commentLength <= size {
                    eocd = at
                    break
                }
            }
            at -= 1
        }
        guard eocd >= 0 else {
            throw SwiftCNNError.value("it is not an .npz (zip) archive: no end-of-central-directory record (truncated or not a zip file)")
        }
        guard try r.u16(eocd + 4, "the disk number") == 0, try r.u16(eocd + 6, "the directory's disk") == 0 else {
            throw SwiftCNNError.value("it is a multi-disk zip archive, which is not supported")
        }
        var entries = UInt64(try r.u16(eocd + 10, "the entry count"))
        var directorySize = UInt64(try r.u32(eocd + 12, "the directory size"))
        var directoryOffset = UInt64(try r.u32(eocd + 16, "the directory offset"))
        if entries == 0xFFFF || directorySize == 0xFFFF_FFFF || directoryOffset == 0xFFFF_FFFF {
            // Zip64: a locator just before the record points at the zip64 end-of-directory record.
            let locator = eocd - 20
            guard locator >= 0, try r.u32(locator, "the zip64 locator") == 0x0706_4B50 else {
                throw SwiftCNNError.value("its end-of-directory record needs a zip64 record, which is missing")
            }
            let record = try offset(try r.u64(locator + 8, "the zip64 record offset"), within: size, "zip64 record offset")
            guard try r.u32(record, "the zip64 end-of-directory record") == 0x0606_4B50 else {
                throw SwiftCNNError.value("its zip64 end-of-directory record has a bad signature")
            }
            entries = try r.u64(record + 32, "the zip64 entry count")
            directorySize = try r.u64(record + 40, "the zip64 directory size")
            directoryOffset = try r.u64(record + 48, "the zip64 directory offset")
        }
        guard directoryOffset <= directoryOffset &+ directorySize else {
            throw SwiftCNNError.value("its central directory size overflows")
        }
        let directory = try offset(directoryOffset, within: size, "central directory offset")
        let directoryEnd = try offset(directoryOffset &+ directorySize, within: size, "central directory end")
        // Each entry takes at least 46 bytes: a larger count is damage (and bounds the loop).
        guard entries <= UInt64(directoryEnd - directory) / 46 else {
            throw SwiftCNNError.value("its directory declares \(entries) entries in \(directoryEnd - directory) bytes")
        }

        var members: [Member] = []
        var seen = Set<String>()
        var p = directory
        for index in 0..<Int(entries) {
            let what = "central directory entry \(index)"
            guard p + 46 <= directoryEnd, try r.u32(p, what) == 0x0201_4B50 else {
                throw SwiftCNNError.value("its \(what) is damaged (bad signature or beyond the directory)")
            }
            let flags = try r.u16(p + 8, what)
            let method = try r.u16(p + 10, what)
            let crc = try r.u32(p + 16, what)
            var compressedSize = UInt64(try r.u32(p + 20, what))
            var uncompressedSize = UInt64(try r.u32(p + 24, what))
            let nameLength = Int(try r.u16(p + 28, what))
            let extraLength = Int(try r.u16(p + 30, what))
            let commentLength = Int(try r.u16(p + 32, what))
            var localOffset = UInt64(try r.u32(p + 42, what))
            try r.require(p + 46, nameLength + extraLength + commentLength, what)
            guard p + 46 + nameLength + extraLength + commentLength <= directoryEnd else {
                throw SwiftCNNError.value("its \(what) runs past the end of the directory")
            }
            let nameBytes = Array(bytes[(p + 46)..<(p + 46 + nameLength)])
            guard let name = String(validating: nameBytes, as: UTF8.self) else {
                throw SwiftCNNError.value("its \(what) has a name that is not valid UTF-8")
            }
            // The zip64 extra field holds the 64-bit values of the fields set to 0xFFFFFFFF, in order.
            var e = p + 46 + nameLength
            let extraEnd = e + extraLength
            while e + 4 <= extraEnd {
                let id = try r.u16(e, what), length = Int(try r.u16(e + 2, what))
                guard e + 4 + length <= extraEnd else {
                    throw SwiftCNNError.value("its entry \"\(name)\" has a damaged extra field")
                }
                if id == 0x0001 {
                    var q = e + 4
                    func next() throws -> UInt64 {
                        guard q + 8 <= e + 4 + length else {
                            throw SwiftCNNError.value("its entry \"\(name)\" has a short zip64 extra field")
                        }
                        defer { q += 8 }
                        return try r.u64(q, what)
                    }
                    if uncompressedSize == 0xFFFF_FFFF { uncompressedSize = try next() }
                    if compressedSize == 0xFFFF_FFFF { compressedSize = try next() }
                    if localOffset == 0xFFFF_FFFF { localOffset = try next() }
                }
                e += 4 + length
            }
            p += 46 + nameLength + extraLength + commentLength

            guard flags & 1 == 0 else {
                throw SwiftCNNError.value("its entry \"\(name)\" is encrypted, which is not supported")
            }
            guard seen.insert(name).inserted else {
                throw SwiftCNNError.value("its entry \"\(name)\" appears more than once")
            }
            // The local header repeats the name; the data follow it and its own extra field.
            let local = try offset(localOffset, within: size, "entry \"\(name)\"'s local header offset")
            guard try r.u32(local, "entry \"\(name)\"'s local header") == 0x0403_4B50 else {
                throw SwiftCNNError.value("its entry \"\(name)\" has a damaged local header (bad signature)")
            }
            let localNameLength = Int(try r.u16(local + 26, "entry \"\(name)\"'s local header"))
            let localExtraLength = Int(try r.u16(local + 28, "entry \"\(name)\"'s local header"))
            try r.require(local + 30, localNameLength, "entry \"\(name)\"'s local name")
            guard Array(bytes[(local + 30)..<(local + 30 + localNameLength)]) == nameBytes else {
                throw SwiftCNNError.value("its entry \"\(name)\" has a local header naming another file")
            }
            let dataStart = local + 30 + localNameLength + localExtraLength
            let storedCount = try offset(compressedSize, within: size, "entry \"\(name)\"'s compressed size")
            try r.require(dataStart, storedCount, "entry \"\(name)\"'s data (\(storedCount) bytes)")
            let raw = bytes[dataStart..<(dataStart + storedCount)]
            let data: [UInt8]
            switch method {
            case methodStored:
                guard compressedSize == uncompressedSize else {
                    throw SwiftCNNError.value(
                        "its entry \"\(name)\" is stored with two different sizes (\(compressedSize) and \(uncompressedSize) bytes)")
                }
                data = Array(raw)
            case methodDeflated:
                // Deflate expands at most ~1032:1; anything more declared is damage (or hostile).
                guard uncompressedSize <= 1032 * compressedSize + 1024 else {
                    throw SwiftCNNError.value(
                        "its entry \"\(name)\" declares \(uncompressedSize) bytes from \(compressedSize) compressed bytes")
                }
                do {
                    data = try Inflate.decompress(raw, expectedSize: Int(uncompressedSize))
                } catch let error as SwiftCNNError {
                    throw SwiftCNNError.value("its entry \"\(name)\" cannot be decompressed: \(error.message)")
                }
            default:
                throw SwiftCNNError.value("its entry \"\(name)\" uses an unsupported compression method (\(method))")
            }
            let actual = CRC32.checksum(data[...])
            guard actual == crc else {
                throw SwiftCNNError.value(
                    "its entry \"\(name)\" fails its CRC-32 check (stored \(hex(crc)), computed \(hex(actual))): the file is damaged")
            }
            members.append(Member(name: name, bytes: data))
        }
        return members
    }


    static func hex(_ v: UInt32) -> String {
        let s = String(v, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 8 - s.count)) + s
    }

    // MARK: writing

    /// A zip archive of `members`, stored uncompressed, each with its CRC-32 (what `np.savez`
    /// writes; the timestamps are fixed at 1980-01-01 00:00 so equal contents give equal files).
    /// Throws `.value` for a name longer than 65535 bytes or an archive past 4 GiB (zip64 is not written).
    static func write(_ members: [Member]) throws -> [UInt8] {
        var out: [UInt8] = []
        var directory: [UInt8] = []
        func put16(_ a: inout [UInt8], _ v: UInt16) { a.append(UInt8(v & 0xFF)); a.append(UInt8(v >> 8)) }
        func put32(_ a: inout [UInt8], _ v: UInt32) { for i in 0..<4 { a.append(UInt8((v >> (8 * UInt32(i))) & 0xFF)) } }
        let limit = Int(UInt32.max)
        for member in members {
            let name = Array(member.name.utf8)
            guard name.count <= 0xFFFF else { throw SwiftCNNError.value("the member name \"\(member.name)\" is too long for zip") }
            guard member.bytes.count < limit, out.count < limit else {
                throw SwiftCNNError.value("the archive would exceed 4 GiB, which needs zip64 (not written)")
            }
            let crc = CRC32.checksum(member.bytes[...])
            let ascii = name.allSatisfy { $0 < 0x80 }
            let flags: UInt16 = ascii ? 0 : 0x0800   // bit 11: the name is UTF-8
            let offset = UInt32(out.count)
            let size = UInt32(member.bytes.count)
            // Local file header.
            put32(&out, 0x0403_4B50)
            put16(&out, 20)                  // version needed: 2.0
            put16(&out, flags)
            put16(&out, methodStored)
            put16(&out, 0)                   // time 00:00:00
            put16(&out, 0x0021)              // date 1980-01-01
            put32(&out, crc)
            put32(&out, size)
            put32(&out, size)
            put16(&out, UInt16(name.count))
            put16(&out, 0)                   // no extra field
            out += name
            out += member.bytes
            // Its central directory entry.
            put32(&directory, 0x0201_4B50)
            put16(&directory, 0x0314)        // made by: Unix, 2.0
            put16(&directory, 20)
            put16(&directory, flags)
            put16(&directory, methodStored)
            put16(&directory, 0)
            put16(&directory, 0x0021)
            put32(&directory, crc)
            put32(&directory, size)
            put32(&directory, size)
            put16(&directory, UInt16(name.count))
            put16(&directory, 0)             // extra
            put16(&directory, 0)             // comment
            put16(&directory, 0)             // disk
            put16(&directory, 0)             // internal attributes
            put32(&directory, 0o100644 << 16) // external: a regular file, rw-r--r--
            put32(&directory, offset)
            directory += name
        }
        guard members.count < 0xFFFF, out.count + directory.count < limit else {
            throw SwiftCNNError.value("the archive would exceed zip's limits (65535 members, 4 GiB), which needs zip64 (not written)")
        }
        let directoryOffset = UInt32(out.count)
        out += directory
        put32(&out, 0x0605_4B50)
        put16(&out, 0)
        put16(&out, 0)
        put16(&out, UInt16(members.count))
        put16(&out, UInt16(members.count))
        put32(&out, UInt32(directory.count))
        put32(&out, directoryOffset)
        put16(&out, 0)                       // no comment
        return out
    }
}

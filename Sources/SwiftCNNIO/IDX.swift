@_spi(Engine) import SwiftCNN

/// An IDX file (the MNIST format, http://yann.lecun.com/exdb/mnist/ "THE IDX FILE FORMAT"): a
/// big-endian header `00 00 <type> <rank>`, `rank` big-endian UInt32 sizes, then the data in row-major
/// order. Only unsigned bytes (type 0x08), what MNIST's images and labels hold, are read; gzip is not.
public struct IDXFile: Sendable {
    /// Sizes per dimension: (N, 28, 28) for MNIST images, (N,) for labels.
    public let shape: [Int]
    /// The bytes, in row-major order.
    public let bytes: [UInt8]

    /// Reads the IDX file at `path`. Throws `.value` naming the path for a missing file, a bad
    /// magic number, a type other than unsigned bytes (or a gzipped file), or a data size other than
    /// the header's shape.
    public init(path: String) throws {
        let data = try FileIO.read(path, op: "IDXFile")
        do {
            try self.init(data)
        } catch let error as SwiftCNNError {
            throw SwiftCNNError(error.kind, "IDXFile: \"\(path)\" \(error.message)")
        }
    }

    /// Parses IDX bytes (errors without a file name).
    public init(_ data: [UInt8]) throws {
        guard data.count >= 4, data[0] == 0, data[1] == 0 else {
            if data.count >= 2, data[0] == 0x1F, data[1] == 0x8B {
                throw SwiftCNNError.value("is gzipped; gunzip it first")
            }
            throw SwiftCNNError.value("is not an IDX file (bad magic number)")
        }
        guard data[2] == 0x08 else {
            throw SwiftCNNError.value("holds IDX type 0x\(String(data[2], radix: 16)), not unsigned bytes (0x08)")
        }
        let rank = Int(data[3])
        guard rank >= 1 else { throw SwiftCNNError.value("declares 0 dimensions") }
        guard data.count >= 4 + 4 * rank else { throw SwiftCNNError.value("is truncated (header)") }
        var shape: [Int] = []
        for d in 0..<rank {
            let at = 4 + 4 * d
            shape.append(Int(data[at]) << 24 | Int(data[at + 1]) << 16 | Int(data[at + 2]) << 8 | Int(data[at + 3]))
        }
        let count = try checkedElementCount(shape, what: "IDX shape")
        let held = data.count - 4 - 4 * rank
        guard held == count else {
            throw SwiftCNNError.value("holds \(held) data bytes but its header announces shape \(describeShape(shape)) (\(count) bytes)")
        }
        self.shape = shape
        self.bytes = Array(data[(4 + 4 * rank)...])
    }

    /// Writes an unsigned-byte IDX file of `shape` (as MNIST's), atomically.
    public static func write(shape: [Int], bytes: [UInt8], to path: String) throws {
        guard (1...255).contains(shape.count) else { throw SwiftCNNError.value("IDXFile.write: rank must be 1...255, got \(shape.count)") }
        let count = try checkedElementCount(shape, what: "IDXFile.write: shape")
        guard count == bytes.count else {
            throw SwiftCNNError.value("IDXFile.write: shape \(describeShape(shape)) holds \(count) bytes, got \(bytes.count)")
        }
        var out: [UInt8] = [0, 0, 0x08, UInt8(shape.count)]
        for d in shape {
            guard d <= Int(UInt32.max) else { throw SwiftCNNError.value("IDXFile.write: size \(d) does not fit in 32 bits") }
            out += [UInt8(d >> 24 & 0xFF), UInt8(d >> 16 & 0xFF), UInt8(d >> 8 & 0xFF), UInt8(d & 0xFF)]
        }
        try FileIO.writeAtomically(out + bytes, to: path, op: "IDXFile.write")
    }
}

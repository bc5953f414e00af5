#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
@_spi(Engine) import SwiftCNN

/// Whole-file reads and atomic whole-file writes with the C library (no Foundation).
enum FileIO {
    /// The text of the C library's message for `errno`.
    static func describeErrno(_ code: Int32) -> String {
        guard let s = strerror(code) else { return "errno \(code)" }
        return String(cString: s)
    }

    /// The bytes of the regular file at `path`. Throws `.value` if there is no such file, it is a
    /// directory or not a regular file, or it cannot be read (the message names `path` and the reason).
    static func read(_ path: String, op: String) throws -> [UInt8] {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw SwiftCNNError.value("\(op): cannot read \"\(path)\": \(describeErrno(errno))")
        }
        let type = UInt32(st.st_mode) & 0o170000
        guard type != 0o040000 else {
            throw SwiftCNNError.value("\(op): \"\(path)\" is a directory, not a file")
        }
        guard type == 0o100000 else {
            throw SwiftCNNError.value("\(op): \"\(path)\" is not a regular file")
        }
        guard let f = fopen(path, "rb") else {
            throw SwiftCNNError.value("\(op): cannot open \"\(path)\": \(describeErrno(errno))")
        }
        defer { fclose(f) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, f) }
            if n > 0 { bytes.append(contentsOf: chunk[0..<n]) }
            if n < chunk.count {
                if ferror(f) != 0 {
                    throw SwiftCNNError.value("\(op): error reading \"\(path)\": \(describeErrno(errno))")
                }
                break
            }
        }
        return bytes
    }

    /// Writes `bytes` to exactly `path`, atomically: into a temporary file in the same directory,
    /// flushed to disk, then renamed over `path` (as Python's `swiftcnn.save`). On any error the
    /// temporary file is removed and `.value` names the path and the reason.
    static func writeAtomically(_ bytes: [UInt8], to path: String, op: String) throws {
        guard !path.isEmpty else { throw SwiftCNNError.value("\(op): path is empty") }
        let slash = path.lastIndex(of: "/")
        let prefix = slash.map { String(path[...$0]) } ?? ""   // the directory with its slash, or ""
        let directory = prefix.isEmpty ? "." : prefix
        let base = slash.map { String(path[path.index(after: $0)...]) } ?? path
        guard !base.isEmpty else { throw SwiftCNNError.value("\(op): \"\(path)\" names a directory, not a file") }
        var rng = SystemRandomNumberGenerator()
        let token = String(rng.next() & 0xFFFF_FFFF_FFFF, radix: 16)
        let temporary = prefix + ".\(base).\(token).tmp"
        guard let f = fopen(temporary, "wbx") else {
            throw SwiftCNNError.value("\(op): cannot create a file in \"\(directory)\": \(describeErrno(errno))")
        }
        var failure: String?
        let written = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, f) }
        if written != bytes.count { failure = describeErrno(errno) }
        if failure == nil, fflush(f) != 0 { failure = describeErrno(errno) }
        if failure == nil, fsync(fileno(f)) != 0 { failure = describeErrno(errno) }
        if fclose(f) != 0, failure == nil { failure = describeErrno(errno) }
        if failure == nil, rename(temporary, path) != 0 { failure = describeErrno(errno) }
        if let failure {
            unlink(temporary)
            throw SwiftCNNError.value("\(op): cannot write \"\(path)\": \(failure)")
        }
        // Make the rename durable where the platform allows it.
        let d = open(directory, O_RDONLY)
        if d >= 0 {
            _ = fsync(d)
            close(d)
        }
    }
}

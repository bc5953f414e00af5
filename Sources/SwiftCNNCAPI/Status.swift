// Status codes, error messages and argument validation shared by every exported function.
//
// Every @_cdecl function of this module follows one pattern:
//
//     return withStatus(msg, msgCap) {
//         ...                                  // validate everything, touch no memory
//         switch dtype {                       // the generic body, specialized per dtype
//         case .float32: try body(Float.self, ...)
//         case .float64: try body(Double.self, ...)
//         }
//     }
//
// (the functional ops go through `runOp` in OpCall.swift, which adds the operand descriptors).
//
// `withStatus` catches `SwiftCNNError` and turns it into the status code and the message; nothing in
// here may trap on any argument a C caller can pass, because a Swift trap kills the Python
// interpreter that loaded this library.

@_spi(Engine) import SwiftCNN

/// The status codes of swiftcnn.h (`SCNN_OK`, `SCNN_*_ERROR`).
@usableFromInline
enum Status {
    static let ok: Int32 = 0
    static let valueError: Int32 = SwiftCNNError.Kind.value.rawValue
    static let typeError: Int32 = SwiftCNNError.Kind.type.rawValue
    static let overflowError: Int32 = SwiftCNNError.Kind.overflow.rawValue
    static let memoryError: Int32 = SwiftCNNError.Kind.memory.rawValue
    static let runtimeError: Int32 = SwiftCNNError.Kind.runtime.rawValue
}


// MARK: - messages

/// Writes `text` into the caller's buffer `msg` of `cap` bytes as NUL-terminated UTF-8, truncated
/// (on a character boundary) to fit. Does nothing when `msg` is NULL or `cap <= 0`.
func writeCString(_ text: String, to buffer: UnsafeMutablePointer<CChar>?, capacity cap: Int64) {
    guard let buffer, cap > 0 else { return }
    var utf8 = Array(text.utf8)
    let room = Int(min(cap - 1, Int64(Int.max)))
    if utf8.count > room {
        var end = room
        // Never cut a multi-byte sequence: if the first dropped byte is a continuation byte
        // (10xxxxxx), the sequence it belongs to started before `end`; drop that whole sequence.
        while end > 0 && (utf8[end] & 0xC0) == 0x80 { end -= 1 }
        utf8.removeSubrange(end...)
    }
    utf8.withUnsafeBufferPointer { src in
        if let base = src.baseAddress, src.count > 0 {
            UnsafeMutableRawPointer(buffer).copyMemory(from: base, byteCount: src.count)
        }
    }
    buffer[utf8.count] = 0
}

/// Runs `body`, returning `SCNN_OK`, or the status of the `SwiftCNNError` it throws with its
/// message written into `msg`. Any other error (none is expected) becomes a runtime error.
@inline(__always)
func withStatus(_ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64, _ body: () throws -> Void) -> Int32 {
    do {
        try body()
        return Status.ok
    } catch let error as SwiftCNNError {
        writeCString(error.message, to: msg, capacity: msgCap)
        return error.kind.rawValue
    } catch {
        writeCString("internal error: \(error)", to: msg, capacity: msgCap)
        return Status.runtimeError
    }
}

// MARK: - scalar arguments

/// The dtype of `SCNN_FLOAT32` / `SCNN_FLOAT64`, or a type error.
func parseDType(_ raw: Int32, op: String) throws -> DType {
    guard let dtype = DType(rawValue: raw) else {
        throw SwiftCNNError.type("\(op): dtype must be SCNN_FLOAT32 (0) or SCNN_FLOAT64 (1), got \(raw)")
    }
    return dtype
}

/// An int64 argument as an `Int` (the same width on every platform this library builds for).
@inline(__always)
func int(_ v: Int64) -> Int { Int(truncatingIfNeeded: v) }

/// One caller buffer, for the overlap checks: [start, start + bytes).
struct Region {
    let name: StaticString
    let start: UInt
    let bytes: UInt
    init(_ name: StaticString, _ raw: UnsafeRawPointer?, count: Int, elementSize: Int) {
        self.name = name
        self.start = UInt(bitPattern: raw)
        self.bytes = raw == nil ? 0 : UInt(count) &* UInt(elementSize)
    }
    func overlaps(_ other: Region) -> Bool {
        guard bytes > 0, other.bytes > 0 else { return false }
        return start < other.start &+ other.bytes && other.start < start &+ bytes
    }
    func identical(_ other: Region) -> Bool { start == other.start && bytes == other.bytes }
}


/// Runs `body` (a layer or optimizer constructor), rewriting a SwiftCNNError's message from the Swift
/// argument labels the core's initializers name (`inChannels`, `learningRate`) to the Python
/// argument names (`in_channels`, `lr`) that Python users pass.
func pythonNames<R>(_ body: () throws -> R) throws -> R {
    do {
        return try body()
    } catch let error as SwiftCNNError {
        throw error.withPythonArgumentNames()
    }
}

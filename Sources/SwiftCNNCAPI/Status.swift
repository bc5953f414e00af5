// Status codes, error messages and argument validation shared by every exported function.
//
// Every @_cdecl function of this module follows one pattern:
//
//     return withStatus(msg, msgCap) {
//         let dtype = try parseDType(dtype, op: "conv2d")
//         let xShape = try readShape(xShape, ndim: xNdim, name: "x", op: "conv2d")
//         ...                                  // validate everything, touch no memory
//         switch dtype {                       // the generic body, specialized per dtype:
//         case .float32: try conv2dImpl(Float.self, ...)   // wraps raw pointers as Tensor<T>
//         case .float64: try conv2dImpl(Double.self, ...)  // and calls the core's Tensor API
//         }
//     }
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

/// The most dimensions a tensor argument of a functional op may have (the ops need at most 4; the
/// limit only keeps a corrupt `ndim` from making us read a huge shape array).
let maxFunctionalNdim = 64
/// The most dimensions a layer input or output may have: `scnn_layer_output_shape` and
/// `scnn_layer_input_shape` write shapes into caller arrays with room for 8.
let maxLayerNdim = 8

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

// MARK: - shapes

/// Reads a shape of `ndim` entries from a caller array, checking `ndim` (0...`maxNdim`, or exactly
/// `rank` when given), that the array is non-NULL when `ndim > 0`, that sizes are >= 0, and that
/// the element count and byte count (for `elementSize`) fit in an Int64.
func readShape(_ shape: UnsafePointer<Int64>?, ndim: Int64, name: String, op: String,
               rank: Int? = nil, layout: String = "", maxNdim: Int = maxFunctionalNdim) throws -> [Int] {
    if let rank, ndim != Int64(rank) {
        let what = layout.isEmpty ? "" : " \(layout)"
        // Only read the actual shape for the message when it is safe and small.
        if ndim >= 0 && ndim <= Int64(maxNdim), let shape {
            let dims = (0..<Int(ndim)).map { int(shape[$0]) }
            throw SwiftCNNError.value("\(op): \(name) must be \(rank)-D\(what), got shape \(describeShape(dims))")
        }
        throw SwiftCNNError.value("\(op): \(name) must be \(rank)-D\(what), got ndim \(ndim)")
    }
    guard ndim >= 0 else {
        throw SwiftCNNError.value("\(op): \(name) ndim must be >= 0, got \(ndim)")
    }
    guard ndim <= Int64(maxNdim) else {
        throw SwiftCNNError.value("\(op): \(name) must have at most \(maxNdim) dimensions, got ndim \(ndim)")
    }
    if ndim == 0 { return [] }
    guard let shape else {
        throw SwiftCNNError.value("\(op): \(name) shape pointer is NULL but ndim is \(ndim)")
    }
    let dims = (0..<Int(ndim)).map { int(shape[$0]) }
    try checkSizes(dims, name: name, op: op)
    return dims
}

/// A 4-D shape as a tuple, without the array `readShape` returns: nil unless `ndim` is 4, the
/// pointer is non-NULL, every size is >= 0 and the element count and byte count fit (readShape's
/// rules). Hot-path callers take readShape on nil, which throws its exact message.
@inline(__always)
func readShape4IfValid(_ shape: UnsafePointer<Int64>?, _ ndim: Int64) -> (Int, Int, Int, Int)? {
    guard ndim == 4, let shape else { return nil }
    let d = (int(shape[0]), int(shape[1]), int(shape[2]), int(shape[3]))
    guard d.0 >= 0, d.1 >= 0, d.2 >= 0, d.3 >= 0, sizeFits(d.0, d.1, d.2, d.3) != nil else { return nil }
    return d
}

/// The same for a 2-D shape.
@inline(__always)
func readShape2IfValid(_ shape: UnsafePointer<Int64>?, _ ndim: Int64) -> (Int, Int)? {
    guard ndim == 2, let shape else { return nil }
    let d = (int(shape[0]), int(shape[1]))
    guard d.0 >= 0, d.1 >= 0, sizeFits(d.0, d.1, 1, 1) != nil else { return nil }
    return d
}

/// The element count of non-negative sizes when it, and its byte count for the wider dtype (8),
/// fit in an Int (checkSizes' rule, multiplied in the same order); else nil.
@inline(__always)
func sizeFits(_ a: Int, _ b: Int, _ c: Int, _ d: Int) -> Int? {
    var p = a, o = false
    (p, o) = p.multipliedReportingOverflow(by: b); if o { return nil }
    (p, o) = p.multipliedReportingOverflow(by: c); if o { return nil }
    (p, o) = p.multipliedReportingOverflow(by: d); if o { return nil }
    (_, o) = p.multipliedReportingOverflow(by: 8); if o { return nil }
    return p
}

/// Writes a 4-D shape into a caller array (skipped when NULL) without building an array.
@inline(__always)
func writeShape4(_ a: Int, _ b: Int, _ c: Int, _ d: Int, to out: UnsafeMutablePointer<Int64>?) {
    guard let out else { return }
    out[0] = Int64(a); out[1] = Int64(b); out[2] = Int64(c); out[3] = Int64(d)
}

/// Value error for negative sizes, overflow error when the element count or byte count (of the
/// wider dtype) does not fit in an Int64.
func checkSizes(_ dims: [Int], name: String, op: String) throws {
    guard dims.allSatisfy({ $0 >= 0 }) else {
        throw SwiftCNNError.value("\(op): \(name) must have non-negative sizes, got shape \(describeShape(dims))")
    }
    let count = try checkedElementCount(dims, what: "\(op): \(name)")
    _ = try checkedMultiply(count, 8, what: "\(op): \(name) byte count")
}

/// Validates a flat element count argument (`count` of the elementwise ops).
func checkCount(_ count: Int64, name: String = "count", op: String) throws -> Int {
    guard count >= 0 else { throw SwiftCNNError.value("\(op): \(name) must be >= 0, got \(count)") }
    _ = try checkedMultiply(int(count), 8, what: "\(op): \(name) byte count")
    return int(count)
}

// MARK: - data pointers

/// A `Tensor<T>` viewing caller memory at `raw` with `shape`. NULL is allowed only for an empty
/// shape (then a fresh empty tensor is returned); the pointer must be aligned for `T`.
func borrow<T: CNNScalar>(_ raw: UnsafeRawPointer?, shape: [Int], name: String, op: String,
                          as _: T.Type = T.self) throws -> Tensor<T> {
    let count = try checkedElementCount(shape, what: "\(op): \(name)")
    guard let typed = try checkData(raw, count: count, shape: shape, name: name, op: op, as: T.self) else {
        return try Tensor<T>(zeros: shape)
    }
    return try Tensor<T>(borrowing: UnsafeMutablePointer(mutating: typed), shape: shape)
}

/// `borrow`'s pointer checks without the Tensor: `raw` as a typed pointer, nil when it is NULL for
/// an empty buffer (`count == 0`); a value error when it is NULL for a non-empty one or misaligned.
/// `count` must be the (already checked) element count of `shape`.
///
/// Hot-path functional calls (conv2d, linear, ...) use this directly: wrapping each argument in a
/// Tensor costs an object and a shape array per argument, which dominated a call on small inputs.
/// `shape` is an autoclosure so that the shape array is only built for the error message.
@inline(__always)
func checkData<T: CNNScalar>(_ raw: UnsafeRawPointer?, count: Int, shape: @autoclosure () -> [Int], name: String,
                             op: String, as _: T.Type = T.self) throws -> UnsafePointer<T>? {
    guard let raw else {
        guard count == 0 else {
            throw SwiftCNNError.value("\(op): \(name) is NULL but has shape \(describeShape(shape())) (\(count) elements)")
        }
        return nil
    }
    guard Int(bitPattern: raw) % MemoryLayout<T>.alignment == 0 else {
        throw SwiftCNNError.value("\(op): \(name) is not aligned for \(T.dtype) (address \(Int(bitPattern: raw)))")
    }
    return raw.assumingMemoryBound(to: T.self)
}

/// The same for an output pointer.
func borrowOut<T: CNNScalar>(_ raw: UnsafeMutableRawPointer?, shape: [Int], name: String, op: String,
                             as _: T.Type = T.self) throws -> Tensor<T> {
    try borrow(UnsafeRawPointer(raw), shape: shape, name: name, op: op, as: T.self)
}

/// Validates a non-NULL, aligned pointer for `count` elements of `elementSize` bytes (NULL allowed
/// when `count == 0`).
func checkPointer(_ raw: UnsafeRawPointer?, count: Int, alignment: Int, name: String, op: String) throws {
    guard let raw else {
        guard count == 0 else { throw SwiftCNNError.value("\(op): \(name) is NULL but has \(count) elements") }
        return
    }
    guard Int(bitPattern: raw) % alignment == 0 else {
        throw SwiftCNNError.value("\(op): \(name) is not aligned (address \(Int(bitPattern: raw)))")
    }
}

/// One caller buffer, for the overlap checks: [start, start + bytes).
struct Region {
    let name: String
    let start: UInt
    let bytes: UInt
    init(_ name: String, _ raw: UnsafeRawPointer?, count: Int, elementSize: Int) {
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

/// Value error if an output region overlaps any input region (or another output). `allowIdentical`
/// pairs (by name) may coincide exactly, as for in-place activations.
func checkNoOverlap(op: String, outputs: [Region], inputs: [Region],
                    allowIdentical: [(String, String)] = []) throws {
    for (i, out) in outputs.enumerated() {
        for other in inputs + outputs[(i + 1)...] where out.overlaps(other) {
            let allowed = allowIdentical.contains { ($0.0 == out.name && $0.1 == other.name) || ($0.1 == out.name && $0.0 == other.name) }
            if allowed && out.identical(other) { continue }
            if allowed {
                throw SwiftCNNError.value("\(op): \(out.name) must be \(other.name) itself or not overlap it; it partially overlaps")
            }
            throw SwiftCNNError.value("\(op): \(out.name) must not overlap \(other.name)")
        }
    }
}

/// Value error if output `out` overlaps `other` (the message of `checkNoOverlap`), without the
/// arrays `checkNoOverlap` takes: for the hot path of the functional ops.
@inline(__always)
func checkDisjoint(op: String, _ out: Region, _ other: Region) throws {
    if out.overlaps(other) { throw SwiftCNNError.value("\(op): \(out.name) must not overlap \(other.name)") }
}

/// Writes `shape` into a caller array (skipped when NULL).
func writeShape(_ shape: [Int], to out: UnsafeMutablePointer<Int64>?) {
    guard let out else { return }
    for (i, d) in shape.enumerated() { out[i] = Int64(d) }
}

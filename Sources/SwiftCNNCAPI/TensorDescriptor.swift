// `scnn_tensor`, the one operand descriptor of swiftcnn.h, read and written by byte offset.
//
// The C struct is { void *data; int64_t shape[8]; int32_t ndim; int32_t dtype; } (80 bytes); the
// header pins those offsets with _Static_assert, and these accessors use the same numbers, so the
// two languages cannot disagree on the layout silently.

@_spi(Engine) import SwiftCNN

/// The dtypes an operand may have (`SCNN_FLOAT32`, `SCNN_FLOAT64`, `SCNN_INT64`).
enum OperandType: Int32 {
    case float32 = 0, float64 = 1, int64 = 2

    var name: String {
        switch self {
        case .float32: return "float32"
        case .float64: return "float64"
        case .int64: return "int64"
        }
    }

    /// The float dtype, or nil for int64.
    var float: DType? { self == .float32 ? .float32 : self == .float64 ? .float64 : nil }

    init(_ dtype: DType) { self = dtype == .float32 ? .float32 : .float64 }
}

/// The most dimensions an operand may have (`SCNN_MAX_NDIM`).
let maxNdim = 8
/// `SCNN_ABSENT`: the ndim of an optional operand that was not given.
let absentNdim: Int32 = -1

/// A read-only view of one caller `scnn_tensor`, with the name the Python API gives it.
///
/// Names are `StaticString`s: an operand is copied many times on every call, and a `String`
/// would be retained and released at each copy (a measurable share of a small call).
struct Operand {
    let base: UnsafeRawPointer
    let name: StaticString
    let op: StaticString

    var data: UnsafeMutableRawPointer? { base.load(as: UnsafeMutableRawPointer?.self) }
    var rawNdim: Int32 { base.load(fromByteOffset: 72, as: Int32.self) }
    var rawDType: Int32 { base.load(fromByteOffset: 76, as: Int32.self) }
    var isAbsent: Bool { rawNdim == absentNdim }

    /// Size `i` (i < ndim <= 8; callers check ndim first).
    @inline(__always) func dim(_ i: Int) -> Int { Int(base.load(fromByteOffset: 8 + 8 * i, as: Int64.self)) }

    /// The shape as an array, for messages and the general (Tensor-level) paths.
    var shape: [Int] { (0..<max(0, min(Int(rawNdim), maxNdim))).map(dim) }

    /// ndim, checked to be in 0...8 and not absent.
    @inline(__always)
    func ndim() throws -> Int {
        let n = rawNdim
        guard n != absentNdim else { throw SwiftCNNError.type("\(op): \(name) must be an array, not None") }
        guard n >= 0, n <= Int32(maxNdim) else {
            throw SwiftCNNError.value("\(op): \(name) must have at most \(maxNdim) dimensions, got ndim \(n)")
        }
        return Int(n)
    }

    /// The dtype, checked to be one of the three.
    @inline(__always)
    func dtype() throws -> OperandType {
        guard !isAbsent else { throw SwiftCNNError.type("\(op): \(name) must be an array, not None") }
        guard let t = OperandType(rawValue: rawDType) else {
            throw SwiftCNNError.type("\(op): \(name) has an unknown dtype code \(rawDType)")
        }
        return t
    }

    /// The float dtype `expected` (the op's), or a type error naming both dtypes.
    @inline(__always)
    func requireDType(_ expected: DType, like first: StaticString) throws {
        let t = try dtype()
        guard t.float == expected else {
            throw SwiftCNNError.type("\(op): \(first) has dtype \(expected) but \(name) has dtype \(t.name)")
        }
    }

    /// Rank `rank`, non-negative sizes whose element count (and byte count at 8 bytes an element)
    /// fit in 64 bits; `layout` describes the expected shape in the message. Allocates nothing
    /// unless it throws.
    @inline(__always)
    func requireRank(_ rank: Int, layout: String) throws {
        let n = try ndim()
        guard n == rank else {
            throw SwiftCNNError.value("\(op): \(name) must be \(rank)-D \(layout), got shape \(describeShape(shape))")
        }
        try checkSizes()
    }

    /// Non-negative sizes with an element count that fits (the count's bytes too).
    @discardableResult
    @inline(__always)
    func checkSizes() throws -> Int {
        let n = try ndim()
        var bytes = 8, elements = 1, overflow = false
        for i in 0..<n {
            let d = dim(i)
            guard d >= 0 else {
                throw SwiftCNNError.value("\(op): \(name) must have non-negative sizes, got shape \(describeShape(shape))")
            }
            if !overflow {
                (bytes, overflow) = bytes.multipliedReportingOverflow(by: d)
                elements = elements &* d
            }
        }
        if overflow {
            throw SwiftCNNError.overflow("\(op): \(name) of shape \(describeShape(shape)) has more bytes than fit in 64 bits")
        }
        return elements
    }

    /// The element count, checked.
    func count() throws -> Int { try checkSizes() }

    @inline(__always)
    func shape4(layout: String) throws -> (Int, Int, Int, Int) {
        try requireRank(4, layout: layout)
        return (dim(0), dim(1), dim(2), dim(3))
    }

    func shape2(layout: String) throws -> (Int, Int) {
        try requireRank(2, layout: layout)
        return (dim(0), dim(1))
    }

    /// True when `other` has exactly this operand's shape.
    func sameShape(as other: Operand) -> Bool {
        guard rawNdim == other.rawNdim, rawNdim >= 0, rawNdim <= Int32(maxNdim) else { return false }
        for i in 0..<Int(rawNdim) where dim(i) != other.dim(i) { return false }
        return true
    }

    /// Value error unless this operand has `other`'s shape.
    func requireShape(of other: Operand) throws {
        guard sameShape(as: other) else {
            throw SwiftCNNError.value(
                "\(op): \(name) must have the shape of \(other.name) \(describeShape(other.shape)), got shape \(describeShape(shape))")
        }
    }

    /// The data as `T` for `count` elements: NULL only when empty, aligned.
    @inline(__always)
    func pointer<T>(_: T.Type, count: Int) throws -> UnsafeMutablePointer<T>? {
        guard let raw = data else {
            guard count == 0 else {
                throw SwiftCNNError.value("\(op): \(name) is NULL but has shape \(describeShape(shape)) (\(count) elements)")
            }
            return nil
        }
        guard Int(bitPattern: raw) % MemoryLayout<T>.alignment == 0 else {
            throw SwiftCNNError.value("\(op): \(name) is not aligned for its dtype (address \(Int(bitPattern: raw)))")
        }
        return raw.assumingMemoryBound(to: T.self)
    }

    /// A Tensor viewing this operand's memory (no copy), for the Tensor-level core API.
    func tensor<T: CNNScalar>(_: T.Type) throws -> Tensor<T> {
        let s = shape
        let n = try count()
        guard let p = try pointer(T.self, count: n) else { return try Tensor<T>(zeros: s) }
        return try Tensor<T>(borrowing: p, shape: s)
    }

    /// The memory this operand spans (by its own dtype's element size), for the overlap checks.
    /// Called after the operand's sizes were validated, so the count is a plain product.
    @inline(__always)
    func region() -> Region {
        var n = 1
        for i in 0..<max(0, min(Int(rawNdim), maxNdim)) { n = n &* dim(i) }
        return Region(name, data.map(UnsafeRawPointer.init), count: n, elementSize: rawDType == 0 ? 4 : 8)
    }
}

/// A caller `scnn_tensor` that receives a result. In the shape query its ndim, shape and dtype are
/// written; before computing they are checked to be exactly those, so a caller that allocated
/// something else is refused instead of overrun.
struct ResultOperand {
    let base: UnsafeMutableRawPointer
    let name: StaticString
    let op: StaticString
    let compute: Bool

    var operand: Operand { Operand(base: UnsafeRawPointer(base), name: name, op: op) }

    /// Declares the result: rank `rank` with sizes d0, d1, ... (unused ones ignored) and `dtype`.
    @inline(__always)
    func declare(rank: Int, _ d0: Int = 0, _ d1: Int = 0, _ d2: Int = 0, _ d3: Int = 0, dtype: OperandType) throws {
        let dims = (d0, d1, d2, d3)
        try withUnsafeBytes(of: dims) { raw in
            try declare(rank: rank, dims: raw.bindMemory(to: Int.self), dtype: dtype)
        }
    }

    /// Declares the result with the shape of `other` (elementwise ops).
    func declare(like other: Operand, dtype: OperandType) throws {
        let n = try other.ndim()
        var dims = (0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &dims) { raw in
            for i in 0..<n { raw.storeBytes(of: other.dim(i), toByteOffset: 8 * i, as: Int.self) }
        }
        try withUnsafeBytes(of: dims) { raw in
            try declare(rank: n, dims: raw.bindMemory(to: Int.self), dtype: dtype)
        }
    }

    /// Declares the result with a shape array (the general paths).
    func declare(shape: [Int], dtype: OperandType) throws {
        guard shape.count <= maxNdim else {
            throw SwiftCNNError.value("\(op): the result \(name) would have \(shape.count) dimensions; at most \(maxNdim) are supported")
        }
        try shape.withUnsafeBufferPointer { try declare(rank: shape.count, dims: $0, dtype: dtype) }
    }

    @inline(__always)
    private func declare(rank: Int, dims: UnsafeBufferPointer<Int>, dtype: OperandType) throws {
        if !compute {
            // The caller allocates this: its byte count must fit in 64 bits (the element count
            // alone can fit while the bytes do not: conv2d with padding 2^53 + 1).
            var bytes = dtype == .float32 ? 4 : 8, overflow = false
            for i in 0..<rank where !overflow { (bytes, overflow) = bytes.multipliedReportingOverflow(by: dims[i]) }
            if overflow {
                throw SwiftCNNError.overflow(
                    "\(op): the result \(name) of shape \(describeShape((0..<rank).map { dims[$0] })) has more bytes than fit in 64 bits")
            }
            base.storeBytes(of: Int32(rank), toByteOffset: 72, as: Int32.self)
            base.storeBytes(of: dtype.rawValue, toByteOffset: 76, as: Int32.self)
            for i in 0..<rank { base.storeBytes(of: Int64(dims[i]), toByteOffset: 8 + 8 * i, as: Int64.self) }
            return
        }
        let given = operand
        var same = given.rawNdim == Int32(rank) && given.rawDType == dtype.rawValue
        for i in 0..<rank where same { same = given.dim(i) == dims[i] }
        guard same else {
            let want = (0..<rank).map { dims[$0] }
            throw SwiftCNNError.value(
                "\(op): \(name) must be a \(dtype.name) array of shape \(describeShape(want)), got \(OperandType(rawValue: given.rawDType)?.name ?? "dtype \(given.rawDType)") of shape \(describeShape(given.shape))")
        }
    }

    /// The result's memory as `T` (compute mode, after `declare`).
    @inline(__always)
    func pointer<T>(_: T.Type) throws -> UnsafeMutablePointer<T>? {
        try operand.pointer(T.self, count: operand.count())
    }

    /// A Tensor viewing the result's memory, for the Tensor-level core API.
    func tensor<T: CNNScalar>(_: T.Type) throws -> Tensor<T> { try operand.tensor(T.self) }
}

@_spi(Engine) import SwiftCNN

/// One array of an `.npy` file (NumPy's format 1.0/2.0/3.0): a header (a Python dict literal with
/// `descr`, `fortran_order` and `shape`) and the raw data.
///
/// Values are held as the kinds a model file needs: floating point (float16 is not read; float32
/// and float64 exactly as Double), integers (any width, signed or not, as Int64; bools as 0/1),
/// and NumPy unicode strings (`<U n`, UTF-32, which `np.array("text")` makes). Object (pickled)
/// arrays, structured dtypes, byte strings and complex numbers are refused with `.value`.
public struct NpyArray: Sendable, Equatable {
    public enum Values: Sendable, Equatable {
        /// float32 or float64 data (`dtype` says which), in C (row-major) order.
        case floating([Double])
        /// Integer data of any width, in C order.
        case integer([Int64])
        /// Unicode strings (trailing NULs removed, as NumPy does), in C order.
        case unicode([String])
    }

    /// Sizes per dimension ([] for a 0-d array).
    public let shape: [Int]
    /// NumPy's dtype name: "float32", "float64", "int64", "uint8", "bool", "<U8" ...
    public let dtype: String
    public let values: Values

    /// A float32 (`single: true`) or float64 array of `values` in C order; throws `.value` unless
    /// `values` holds exactly `shape`'s element count.
    public init(shape: [Int], floating values: [Double], single: Bool) throws {
        try Self.requireCount(shape, values.count)
        self.shape = shape
        self.dtype = single ? "float32" : "float64"
        self.values = .floating(values)
    }

    /// An int64 array.
    public init(shape: [Int], int64 values: [Int64]) throws {
        try Self.requireCount(shape, values.count)
        self.shape = shape
        self.dtype = "int64"
        self.values = .integer(values)
    }

    /// A 0-d unicode string array, as `np.array(text)`.
    public init(string: String) {
        self.shape = []
        self.dtype = "<U\(max(1, string.unicodeScalars.count))"
        self.values = .unicode([string])
    }

    init(shape: [Int], dtype: String, values: Values) {
        self.shape = shape
        self.dtype = dtype
        self.values = values
    }

    static func requireCount(_ shape: [Int], _ count: Int) throws {
        let n = try checkedElementCount(shape, what: "NpyArray")
        guard n == count else {
            throw SwiftCNNError.value("NpyArray: shape \(describeShape(shape)) holds \(n) elements but \(count) values were given")
        }
    }

    /// The 0-d string, or nil unless this is a 0-d unicode array.
    public var scalarString: String? {
        if case .unicode(let s) = values, shape.isEmpty { return s[0] }
        return nil
    }

    /// The 0-d integer, or nil unless this is a 0-d integer array.
    public var scalarInteger: Int64? {
        if case .integer(let v) = values, shape.isEmpty { return v[0] }
        return nil
    }

    // MARK: - Reading

    static let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]  // "\x93NUMPY"

    /// Parses one `.npy` file's bytes. Throws `.value` (the reason, without the member's name) for
    /// a bad magic or version, a header that is not the dict NumPy writes, an unsupported dtype, or
    /// data whose size is not the declared shape's.
    public static func decode(_ bytes: [UInt8]) throws -> NpyArray {
        guard bytes.count >= 10, Array(bytes[0..<6]) == magic else {
            throw SwiftCNNError.value("it is not a .npy array (no \\x93NUMPY magic)")
        }
        let major = bytes[6], minor = bytes[7]
        var headerLength: Int, headerStart: Int
        switch (major, minor) {
        case (1, 0):
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        case (2, 0), (3, 0):
            guard bytes.count >= 12 else { throw SwiftCNNError.value("its .npy header is truncated") }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            headerStart = 12
        default:
            throw SwiftCNNError.value("it has .npy format version (\(major), \(minor)), not 1.0, 2.0 or 3.0")
        }
        guard headerLength <= bytes.count - headerStart else {
            throw SwiftCNNError.value("its .npy header (\(headerLength) bytes) runs past the end of the data")
        }
        let headerBytes = bytes[headerStart..<(headerStart + headerLength)]
        // Versions 1 and 2 are latin-1, 3 is UTF-8; the dict NumPy writes is ASCII either way.
        guard headerBytes.allSatisfy({ $0 < 0x80 }), let text = String(validating: Array(headerBytes), as: UTF8.self) else {
            throw SwiftCNNError.value("its .npy header is not ASCII text")
        }
        var parser = HeaderParser(text)
        let header = try parser.parseHeader()
        let dataStart = headerStart + headerLength
        let dtype = try DType(header.descr)
        let count = try checkedElementCount(header.shape, what: "its .npy shape")
        let declared = try checkedMultiply(count, dtype.size, what: "its .npy data size")
        let held = bytes.count - dataStart
        guard declared == held else {
            throw SwiftCNNError.value(
                "it declares shape \(describeShape(header.shape)) of \(dtype.name) (\(declared) bytes) but holds \(held) bytes of data")
        }
        var values = try dtype.values(bytes[dataStart...], count: count)
        if header.fortranOrder && header.shape.count > 1 {
            values = fortranToC(values, shape: header.shape)
        }
        return NpyArray(shape: header.shape, dtype: dtype.name, values: values)
    }

    /// Reorders column-major (Fortran) data to row-major.
    static func fortranToC(_ values: Values, shape: [Int]) -> Values {
        func reorder<E>(_ v: [E]) -> [E] {
            guard !v.isEmpty else { return v }
            var out = v
            var index = [Int](repeating: 0, count: shape.count)  // the C-order multi-index
            for c in 0..<v.count {
                var f = 0, stride = 1
                for d in 0..<shape.count {
                    f += index[d] * stride
                    stride *= shape[d]
                }
                out[c] = v[f]
                var d = shape.count - 1
                while d >= 0 {
                    index[d] += 1
                    if index[d] < shape[d] { break }
                    index[d] = 0
                    d -= 1
                }
            }
            return out
        }
        switch values {
        case .floating(let v): return .floating(reorder(v))
        case .integer(let v): return .integer(reorder(v))
        case .unicode(let v): return .unicode(reorder(v))
        }
    }

    /// A dtype descriptor such as "<f4", "|u1", "<U8", ">i8".
    struct DType {
        enum Kind { case float, signed, unsigned, bool, unicode }
        let kind: Kind
        let bigEndian: Bool
        /// Bytes per element.
        let size: Int
        /// Characters per element for unicode.
        let characters: Int
        let name: String

        init(_ descr: String) throws {
            let chars = Array(descr)
            if chars.count >= 2, chars[1] == "O" {
                throw SwiftCNNError.value("it holds Python objects (a pickled object array), which are never unpickled")
            }
            guard chars.count >= 3, "<>|=".contains(chars[0]), let n = Int(String(chars[2...])), n >= 0 else {
                throw SwiftCNNError.value("its .npy dtype '\(descr)' is not supported")
            }
            let big = chars[0] == ">"
            switch (chars[1], n) {
            case ("f", 4), ("f", 8):
                self.init(kind: .float, bigEndian: big, size: n, characters: 0, name: "float\(n * 8)")
            case ("i", 1), ("i", 2), ("i", 4), ("i", 8):
                self.init(kind: .signed, bigEndian: big, size: n, characters: 0, name: "int\(n * 8)")
            case ("u", 1), ("u", 2), ("u", 4), ("u", 8):
                self.init(kind: .unsigned, bigEndian: big, size: n, characters: 0, name: "uint\(n * 8)")
            case ("b", 1):
                self.init(kind: .bool, bigEndian: big, size: 1, characters: 0, name: "bool")
            case ("U", _):
                let (bytes, overflow) = n.multipliedReportingOverflow(by: 4)
                guard !overflow else { throw SwiftCNNError.value("its .npy dtype '\(descr)' is too large") }
                self.init(kind: .unicode, bigEndian: big, size: bytes, characters: n, name: "<U\(n)")
            default:
                throw SwiftCNNError.value(
                    "its .npy dtype '\(descr)' is not supported (float32, float64, integers, bool or unicode strings are)")
            }
        }

        init(kind: Kind, bigEndian: Bool, size: Int, characters: Int, name: String) {
            (self.kind, self.bigEndian, self.size, self.characters, self.name) = (kind, bigEndian, size, characters, name)
        }

        /// The element at byte offset `at` as an unsigned integer of `size` bytes.
        @inline(__always)
        func raw(_ b: ArraySlice<UInt8>, _ at: Int, _ size: Int) -> UInt64 {
            var v: UInt64 = 0
            if bigEndian {
                for i in 0..<size { v = v << 8 | UInt64(b[at + i]) }
            } else {
                for i in (0..<size).reversed() { v = v << 8 | UInt64(b[at + i]) }
            }
            return v
        }

        func values(_ b: ArraySlice<UInt8>, count: Int) throws -> Values {
            let base = b.startIndex
            switch kind {
            case .float:
                var out = [Double](repeating: 0, count: count)
                if size == 4 {
                    for i in 0..<count { out[i] = Double(Float(bitPattern: UInt32(raw(b, base + 4 * i, 4)))) }
                } else {
                    for i in 0..<count { out[i] = Double(bitPattern: raw(b, base + 8 * i, 8)) }
                }
                return .floating(out)
            case .signed:
                var out = [Int64](repeating: 0, count: count)
                let shift = UInt64(64 - 8 * size)
                for i in 0..<count {
                    // Sign-extend: shift the value to the top, then arithmetic-shift back.
                    out[i] = Int64(bitPattern: raw(b, base + size * i, size) << shift) >> Int64(shift)
                }
                return .integer(out)
            case .unsigned, .bool:
                var out = [Int64](repeating: 0, count: count)
                for i in 0..<count {
                    let v = raw(b, base + size * i, size)
                    guard v <= UInt64(Int64.max) else {
                        throw SwiftCNNError.value("its uint64 value \(v) at index \(i) does not fit in int64")
                    }
                    out[i] = Int64(v)
                }
                return .integer(out)
            case .unicode:
                var out: [String] = []
                out.reserveCapacity(count)
                for i in 0..<count {
                    var scalars = String.UnicodeScalarView()
                    for c in 0..<characters {
                        let v = UInt32(raw(b, base + size * i + 4 * c, 4))
                        guard let s = Unicode.Scalar(v) else {
                            throw SwiftCNNError.value("its string at index \(i) holds an invalid code point \(v)")
                        }
                        scalars.append(s)
                    }
                    while let lastScalar = scalars.last, lastScalar.value == 0 { scalars.removeLast() }
                    out.append(String(scalars))
                }
                return .unicode(out)
            }
        }
    }

    /// The `.npy` header dict: `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
    struct Header {
        var descr: String
        var fortranOrder: Bool
        var shape: [Int]
    }

    /// A parser for the Python literal subset NumPy writes in headers: a dict of string keys whose
    /// values are strings, True/False, or tuples of non-negative integers.
    struct HeaderParser {
        let chars: [Character]
        var i = 0

        init(_ text: String) { chars = Array(text) }

        func fail(_ what: String) -> SwiftCNNError {
            SwiftCNNError.value("its .npy header is not valid (\(what)): \(String(chars).trimmingSpaces)")
        }

        mutating func skipSpace() { while i < chars.count, chars[i] == " " || chars[i] == "\n" || chars[i] == "\t" { i += 1 } }

        mutating func expect(_ c: Character) throws {
            skipSpace()
            guard i < chars.count, chars[i] == c else { throw fail("expected '\(c)'") }
            i += 1
        }

        mutating func peek() -> Character? {
            skipSpace()
            return i < chars.count ? chars[i] : nil
        }

        mutating func string() throws -> String {
            skipSpace()
            guard i < chars.count, chars[i] == "'" || chars[i] == "\"" else { throw fail("expected a string") }
            let quote = chars[i]
            i += 1
            var s = ""
            while i < chars.count, chars[i] != quote {
                guard chars[i] != "\\" else { throw fail("escapes in strings are not supported") }
                s.append(chars[i])
                i += 1
            }
            guard i < chars.count else { throw fail("unterminated string") }
            i += 1
            return s
        }

        mutating func integer() throws -> Int {
            skipSpace()
            var digits = ""
            while i < chars.count, chars[i].isASCII, chars[i].isNumber { digits.append(chars[i]); i += 1 }
            // A Python 2 long suffix, as old NumPy versions wrote.
            if i < chars.count, chars[i] == "L" { i += 1 }
            guard !digits.isEmpty, let v = Int(digits) else { throw fail("a shape entry is not a non-negative integer that fits in 64 bits") }
            return v
        }

        mutating func parseHeader() throws -> Header {
            try expect("{")
            var descr: String?, fortran: Bool?, shape: [Int]?
            while peek() != "}" {
                let key = try string()
                try expect(":")
                switch key {
                case "descr":
                    guard peek() == "'" || peek() == "\"" else { throw fail("a structured dtype (a list of fields) is not supported") }
                    descr = try string()
                case "fortran_order":
                    skipSpace()
                    if chars[i...].starts(with: "True") { fortran = true; i += 4 } else if chars[i...].starts(with: "False") {
                        fortran = false
                        i += 5
                    } else { throw fail("fortran_order is not True or False") }
                case "shape":
                    try expect("(")
                    var dims: [Int] = []
                    while peek() != ")" {
                        dims.append(try integer())
                        if peek() == "," { i += 1 } else { break }
                    }
                    try expect(")")
                    shape = dims
                default:
                    throw fail("unknown key '\(key)'")
                }
                if peek() == "," { i += 1 } else { break }
            }
            try expect("}")
            guard let descr, let fortran, let shape else { throw fail("a key of descr, fortran_order, shape is missing") }
            return Header(descr: descr, fortranOrder: fortran, shape: shape)
        }
    }

    // MARK: - Writing

    /// This array as a `.npy` file, byte for byte as `np.save` (NumPy 1.x/2.x) writes it: format 1.0
    /// (2.0 for a header over 65535 bytes), a little-endian descriptor, C order, the header padded
    /// with spaces (21 - digits of the first size, NumPy's growth room, then to a multiple of 64
    /// bytes) and ended by a newline.
    public func encoded() throws -> [UInt8] {
        var payload: [UInt8] = []
        let descr: String
        switch values {
        case .floating(let v):
            if dtype == "float32" {
                descr = "<f4"
                payload.reserveCapacity(4 * v.count)
                for x in v { appendLE(&payload, UInt64(Float(x).bitPattern), 4) }
            } else {
                descr = "<f8"
                payload.reserveCapacity(8 * v.count)
                for x in v { appendLE(&payload, x.bitPattern, 8) }
            }
        case .integer(let v):
            descr = "<i8"
            payload.reserveCapacity(8 * v.count)
            for x in v { appendLE(&payload, UInt64(bitPattern: x), 8) }
        case .unicode(let v):
            let width = max(1, v.map { $0.unicodeScalars.count }.max() ?? 1)
            descr = "<U\(width)"
            for s in v {
                var n = 0
                for scalar in s.unicodeScalars { appendLE(&payload, UInt64(scalar.value), 4); n += 1 }
                for _ in n..<width { appendLE(&payload, 0, 4) }
            }
        }
        let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var header = Array("{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeText), }".utf8)
        // NumPy's spare room for growing the first axis in place (GROWTH_AXIS_MAX_DIGITS = 21).
        if let first = shape.first { header += [UInt8](repeating: 0x20, count: max(0, 21 - String(first).count)) }
        var prefix = NpyArray.magic
        var lengthBytes = 2
        if header.count + 1 + 10 + 64 > 65535 {
            prefix += [2, 0]
            lengthBytes = 4
        } else {
            prefix += [1, 0]
        }
        let unpadded = prefix.count + lengthBytes + header.count + 1
        let padding = (64 - unpadded % 64) % 64
        header += [UInt8](repeating: 0x20, count: padding)
        header.append(0x0A)
        var out = prefix
        appendLE(&out, UInt64(header.count), lengthBytes)
        out += header
        out += payload
        return out
    }
}

@inline(__always)
func appendLE(_ a: inout [UInt8], _ v: UInt64, _ bytes: Int) {
    for i in 0..<bytes { a.append(UInt8((v >> (8 * UInt64(i))) & 0xFF)) }
}

extension String {
    /// The text without leading and trailing spaces and newlines (for error messages).
    var trimmingSpaces: String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { $0 != " " && $0 != "\n" }),
              let last = scalars.lastIndex(where: { $0 != " " && $0 != "\n" }) else { return "" }
        return String(scalars[first...last])
    }
}

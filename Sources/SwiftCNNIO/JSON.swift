@_spi(Engine) import SwiftCNN

/// The JSON the architecture entry of a model file holds (RFC 8259), without Foundation.
///
/// Numbers keep whether they were written as integers (no fraction or exponent), because the
/// format distinguishes `"in_channels": 6` from `6.0` as Python's `json` module does. Objects keep
/// their key order. The writer uses Python's `json.dumps` separators (", " and ": ") and escapes
/// non-ASCII characters as `json.dumps` does by default.
indirect enum JSON: Equatable {
    case null
    case bool(Bool)
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([JSON])
    case object([(String, JSON)])

    static func == (a: JSON, b: JSON) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.integer(x), .integer(y)): return x == y
        case let (.number(x), .number(y)): return x == y
        case let (.string(x), .string(y)): return x == y
        case let (.array(x), .array(y)): return x == y
        case let (.object(x), .object(y)):
            return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    /// The value under `key` of an object (nil for other values or a missing key).
    subscript(key: String) -> JSON? {
        if case .object(let fields) = self { return fields.first(where: { $0.0 == key })?.1 }
        return nil
    }

    // MARK: writing

    var text: String {
        var out = ""
        write(&out)
        return out
    }

    func write(_ out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .integer(let i): out += String(i)
        case .number(let d):
            // Swift's shortest round-trip form is Python's repr for finite values ("1e-05", "0.1").
            out += d.isFinite ? "\(d)" : (d.isNaN ? "NaN" : (d > 0 ? "Infinity" : "-Infinity"))
        case .string(let s): JSON.writeString(s, &out)
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += ", " }
                item.write(&out)
            }
            out += "]"
        case .object(let fields):
            out += "{"
            for (i, (key, value)) in fields.enumerated() {
                if i > 0 { out += ", " }
                JSON.writeString(key, &out)
                out += ": "
                value.write(&out)
            }
            out += "}"
        }
    }

    static func writeString(_ s: String, _ out: inout String) {
        out += "\""
        for u in s.utf16 {
            switch u {
            case 0x22: out += "\\\""
            case 0x5C: out += "\\\\"
            case 0x0A: out += "\\n"
            case 0x0D: out += "\\r"
            case 0x09: out += "\\t"
            case 0x08: out += "\\b"
            case 0x0C: out += "\\f"
            case 0x20..<0x7F: out.unicodeScalars.append(Unicode.Scalar(u)!)
            default:
                let h = String(u, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - h.count) + h
            }
        }
        out += "\""
    }

    // MARK: parsing

    /// Parses `text`; throws `.value` with the position of the first error. Nesting deeper than
    /// `maxDepth` is refused (a hostile file cannot exhaust the stack).
    static func parse(_ text: String, maxDepth: Int = 200) throws -> JSON {
        var p = Parser(bytes: Array(text.utf8), maxDepth: maxDepth)
        let value = try p.value(depth: 0)
        p.skipSpace()
        guard p.i == p.bytes.count else { throw p.fail("extra data after the JSON value") }
        return value
    }

    struct Parser {
        let bytes: [UInt8]
        let maxDepth: Int
        var i = 0

        func fail(_ what: String) -> SwiftCNNError {
            SwiftCNNError.value("its architecture is not valid JSON (\(what) at byte \(i))")
        }

        mutating func skipSpace() {
            while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i += 1 }
        }

        mutating func literal(_ word: String, _ value: JSON) throws -> JSON {
            let w = Array(word.utf8)
            guard bytes.count - i >= w.count, Array(bytes[i..<(i + w.count)]) == w else { throw fail("unexpected character") }
            i += w.count
            return value
        }

        mutating func value(depth: Int) throws -> JSON {
            guard depth <= maxDepth else { throw fail("nested more than \(maxDepth) deep") }
            skipSpace()
            guard i < bytes.count else { throw fail("unexpected end") }
            switch bytes[i] {
            case UInt8(ascii: "{"):
                i += 1
                var fields: [(String, JSON)] = []
                skipSpace()
                if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; return .object(fields) }
                while true {
                    skipSpace()
                    guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw fail("expected a string key") }
                    let key = try string()
                    skipSpace()
                    guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw fail("expected ':'") }
                    i += 1
                    let v = try value(depth: depth + 1)
                    // Python's json keeps the last of repeated keys.
                    if let k = fields.firstIndex(where: { $0.0 == key }) { fields[k].1 = v } else { fields.append((key, v)) }
                    skipSpace()
                    guard i < bytes.count else { throw fail("unexpected end") }
                    if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                    if bytes[i] == UInt8(ascii: "}") { i += 1; return .object(fields) }
                    throw fail("expected ',' or '}'")
                }
            case UInt8(ascii: "["):
                i += 1
                var items: [JSON] = []
                skipSpace()
                if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                while true {
                    items.append(try value(depth: depth + 1))
                    skipSpace()
                    guard i < bytes.count else { throw fail("unexpected end") }
                    if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                    if bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                    throw fail("expected ',' or ']'")
                }
            case UInt8(ascii: "\""):
                return .string(try string())
            case UInt8(ascii: "t"): return try literal("true", .bool(true))
            case UInt8(ascii: "f"): return try literal("false", .bool(false))
            case UInt8(ascii: "n"): return try literal("null", .null)
            case UInt8(ascii: "N"): return try literal("NaN", .number(.nan))
            case UInt8(ascii: "I"): return try literal("Infinity", .number(.infinity))
            default:
                return try number()
            }
        }

        mutating func number() throws -> JSON {
            let start = i
            if i < bytes.count, bytes[i] == UInt8(ascii: "-") {
                i += 1
                if i < bytes.count, bytes[i] == UInt8(ascii: "I") { return try literal("Infinity", .number(-.infinity)) }
            }
            var isInteger = true
            func digits() -> Int {
                let s = i
                while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 { i += 1 }
                return i - s
            }
            let intDigits = digits()
            guard intDigits > 0 else { throw fail("unexpected character") }
            if intDigits > 1, bytes[i - intDigits] == 0x30 { throw fail("a number with a leading zero") }
            if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
                isInteger = false
                i += 1
                guard digits() > 0 else { throw fail("a number without digits after '.'") }
            }
            if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
                isInteger = false
                i += 1
                if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
                guard digits() > 0 else { throw fail("a number without exponent digits") }
            }
            let text = String(decoding: bytes[start..<i], as: UTF8.self)
            if isInteger {
                guard let v = Int64(text) else { throw fail("the integer \(text) does not fit in 64 bits") }
                return .integer(v)
            }
            guard let d = Double(text) else { throw fail("the number \(text) cannot be read") }
            return .number(d)
        }

        mutating func hex4() throws -> UInt16 {
            guard bytes.count - i >= 4 else { throw fail("a short \\u escape") }
            var v: UInt16 = 0
            for _ in 0..<4 {
                let c = bytes[i]
                let d: UInt8
                switch c {
                case 0x30...0x39: d = c - 0x30
                case 0x41...0x46: d = c - 0x41 + 10
                case 0x61...0x66: d = c - 0x61 + 10
                default: throw fail("a bad \\u escape")
                }
                v = v << 4 | UInt16(d)
                i += 1
            }
            return v
        }

        mutating func string() throws -> String {
            i += 1  // the opening quote
            var units: [UInt16] = []
            var raw: [UInt8] = []  // UTF-8 run since the last escape
            func flush() throws {
                guard let s = String(validating: raw, as: UTF8.self) else { throw fail("a string that is not valid UTF-8") }
                units += Array(s.utf16)
                raw.removeAll()
            }
            while true {
                guard i < bytes.count else { throw fail("an unterminated string") }
                let c = bytes[i]
                if c == UInt8(ascii: "\"") { i += 1; break }
                guard c >= 0x20 else { throw fail("a control character in a string") }
                if c == UInt8(ascii: "\\") {
                    try flush()
                    i += 1
                    guard i < bytes.count else { throw fail("an unterminated string") }
                    let e = bytes[i]
                    i += 1
                    switch e {
                    case UInt8(ascii: "\""): units.append(0x22)
                    case UInt8(ascii: "\\"): units.append(0x5C)
                    case UInt8(ascii: "/"): units.append(0x2F)
                    case UInt8(ascii: "b"): units.append(0x08)
                    case UInt8(ascii: "f"): units.append(0x0C)
                    case UInt8(ascii: "n"): units.append(0x0A)
                    case UInt8(ascii: "r"): units.append(0x0D)
                    case UInt8(ascii: "t"): units.append(0x09)
                    case UInt8(ascii: "u"): units.append(try hex4())
                    default: throw fail("an invalid escape")
                    }
                } else {
                    raw.append(c)
                    i += 1
                }
            }
            try flush()
            // Lone surrogates (valid in Python's JSON) are replaced by U+FFFD.
            return String(decoding: units, as: UTF16.self)
        }
    }
}

import XCTest
import SwiftCNN
@testable import SwiftCNNCAPI

// Helpers for the C ABI tests: calling an export with a message buffer, status names, seeded data
// and the layer handle wrapper (the descriptor helpers are in DescriptorSupport.swift).

let OK: Int32 = 0
let VALUE: Int32 = 1
let TYPE: Int32 = 2
let OVERFLOW: Int32 = 3
let MEMORY: Int32 = 4
let RUNTIME: Int32 = 5

let F32: Int32 = 0
let F64: Int32 = 1

/// The result of one export call: its status and the message it wrote (empty if none).
struct Outcome: CustomStringConvertible {
    let status: Int32
    let message: String
    var description: String { "status \(status): \(message)" }
}

/// Calls `body(msg, msgCap)` with a zeroed message buffer of `cap` bytes and decodes the message.
func call(cap: Int = 1024, _ body: (UnsafeMutablePointer<CChar>, Int64) -> Int32) -> Outcome {
    var buffer = [CChar](repeating: 0, count: max(cap, 1))
    let status = buffer.withUnsafeMutableBufferPointer { body($0.baseAddress!, Int64(cap)) }
    let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
    return Outcome(status: status, message: String(decoding: bytes, as: UTF8.self))
}

/// Asserts the exact status and that the message contains each of `contains` (case-sensitive).
func assertStatus(_ outcome: Outcome, _ expected: Int32, _ contains: String..., file: StaticString = #filePath,
                  line: UInt = #line) {
    XCTAssertEqual(outcome.status, expected, "unexpected status, message: \(outcome.message)", file: file, line: line)
    for part in contains {
        XCTAssertTrue(outcome.message.contains(part), "message \"\(outcome.message)\" does not contain \"\(part)\"",
                      file: file, line: line)
    }
    if expected != OK {
        XCTAssertFalse(outcome.message.isEmpty, "a failure must write a message", file: file, line: line)
    }
}

/// A seeded SplitMix64, independent of the library's generator.
struct SeededRNG {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func uniform(_ lo: Double = -1, _ hi: Double = 1) -> Double { lo + (hi - lo) * Double(next() >> 11) * 0x1p-53 }
}

/// `count` seeded values in [lo, hi).
func randomValues<T: CNNScalar>(_ count: Int, seed: UInt64, _ lo: Double = -1, _ hi: Double = 1, as _: T.Type = T.self) -> [T] {
    var rng = SeededRNG(seed)
    return (0..<count).map { _ in T(rng.uniform(lo, hi)) }
}

/// An owned tensor with seeded values.
func randomTensor<T: CNNScalar>(_ shape: [Int], seed: UInt64, _ lo: Double = -1, _ hi: Double = 1, as _: T.Type = T.self) -> Tensor<T> {
    try! Tensor(shape: shape, scalars: randomValues(shape.reduce(1, *), seed: seed, lo, hi))
}

/// Int64 shape for the C calls.
func s64(_ shape: [Int]) -> [Int64] { shape.map(Int64.init) }

/// max |a - b| / max(max |b|, tiny).
func relErr<T: CNNScalar>(_ a: [T], _ b: [T]) -> Double {
    precondition(a.count == b.count, "count mismatch \(a.count) vs \(b.count)")
    var num = 0.0, den = 0.0
    for (x, y) in zip(a, b) {
        num = max(num, abs(Double(x) - Double(y)))
        den = max(den, abs(Double(y)))
    }
    return num / max(den, 1e-300)
}

func tol<T: CNNScalar>(_: T.Type) -> Double { T.self == Float.self ? 1e-5 : 1e-12 }

/// A retained layer handle released at deinit.
final class LayerRef {
    let raw: OpaquePointer
    init(_ raw: OpaquePointer) { self.raw = raw }
    deinit { scnn_layer_release(raw) }
}

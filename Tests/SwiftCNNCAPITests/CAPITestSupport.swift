import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport
@testable import SwiftCNNCAPI

// Helpers for the C ABI tests: calling an export with a message buffer, status names and the layer
// handle wrapper (the descriptor helpers are in DescriptorSupport.swift). Seeded data and the
// generic checks come from SwiftCNNTestSupport.

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

/// The C ABI tests' name for the shared seeded generator (SwiftCNNTestSupport's TestRNG).
typealias SeededRNG = TestRNG

extension TestRNG {
    init(_ seed: UInt64) { self.init(seed: seed) }
}

/// Int64 shape for the C calls.
func s64(_ shape: [Int]) -> [Int64] { shape.map(Int64.init) }

/// max|a - b| / max|b| (SwiftCNNTestSupport's relativeError), under the name these tests use.
func relErr<T: CNNScalar>(_ a: [T], _ b: [T]) -> Double { relativeError(a, b) }

func tol<T: CNNScalar>(_: T.Type) -> Double { T.self == Float.self ? 1e-5 : 1e-12 }

/// A retained layer handle released at deinit. Sendable: the handle is immutable and the C ABI
/// guards the layer behind it (a concurrent call gets SCNN_RUNTIME_ERROR).
final class LayerRef: @unchecked Sendable {
    let raw: OpaquePointer
    init(_ raw: OpaquePointer) { self.raw = raw }
    deinit { scnn_layer_release(raw) }
}

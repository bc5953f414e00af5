import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport

/// Every heap buffer of the core comes from `allocateAligned` / `AlignedBuffer`: a request that
/// cannot be met throws `.memory` (or `.overflow` when the byte count does not fit in an Int),
/// naming the buffer, instead of trapping as `UnsafeMutablePointer.allocate` does.
final class AllocationTests: XCTestCase {
    func testUnsatisfiableRequestThrowsMemoryNamingBufferAndBytes() {
        // 2^62 bytes: no overflow, but beyond any address space, so posix_memalign fails.
        assertThrowsKind(.memory, contains: "conv2d: padded input: cannot allocate 4611686018427387904 bytes") {
            try allocateAligned(UInt8.self, count: 1 << 62, what: "conv2d: padded input")
        }
        assertThrowsKind(.memory, contains: "workspace slot 3") {
            try ScratchSlots<Float>().buffer(3, count: 1 << 60)
        }
        assertThrowsKind(.memory, contains: "Tensor (1048576, 1048576, 262144)") {
            try Tensor<Double>(zeros: [1 << 20, 1 << 20, 1 << 18])
        }
    }

    func testByteCountOverflowThrowsOverflow() {
        assertThrowsKind(.overflow, contains: "scratch: cannot allocate") {
            try allocateAligned(Double.self, count: Int.max / 4, what: "scratch")
        }
        assertThrowsKind(.overflow, contains: "pool2d: scratch") {
            try AlignedBuffer<Float>(copies: 3, of: Int.max / 2, what: "pool2d: scratch")
        }
        assertThrowsKind(.overflow, contains: "argmax") {
            try IndexBuffer(count: -1, what: "argmax")
        }
    }

    func testBuffersAreZeroedAlignedAndSized() throws {
        let b = try AlignedBuffer<Double>(copies: 3, of: 5, what: "test")
        XCTAssertEqual(b.count, 15)
        XCTAssertEqual(Int(bitPattern: b.pointer) % 64, 0)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: b.pointer, count: b.count)), [Double](repeating: 0, count: 15))
        let empty = try IndexBuffer(count: 0, what: "test")
        XCTAssertEqual(empty.count, 0)
    }
}

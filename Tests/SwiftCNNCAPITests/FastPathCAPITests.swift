import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport
@testable import SwiftCNNCAPI

/// The hot-path validation of the functional exports decides from scalars (no shape arrays) and
/// falls back to the array-based checks to throw. These tests hold the two paths to one behaviour:
/// for random, often invalid, arguments both give the same geometry or the same error (kind and
/// message), and the shape readers accept exactly what `readShape` accepts.
final class FastPathCAPITests: XCTestCase {
    var rng = SeededRNG(77)

    /// Sizes around the edges that matter: negative, zero, small, and large enough to overflow.
    func size() -> Int {
        switch rng.next() % 10 {
        case 0: return -Int(rng.next() % 3) - 1
        case 1: return 0
        case 2: return 1 << (40 + Int(rng.next() % 23))
        case 3: return Int.max - Int(rng.next() % 4)
        default: return Int(rng.next() % 7) + 1
        }
    }

    func outcome<G: Equatable>(_ body: () throws -> G) -> Result<G, SwiftCNNError> {
        do { return .success(try body()) } catch let e as SwiftCNNError { return .failure(e) } catch {
            XCTFail("unexpected error \(error)")
            return .failure(SwiftCNNError(.runtime, "unexpected"))
        }
    }

    func assertSame<G: Equatable>(_ a: Result<G, SwiftCNNError>, _ b: Result<G, SwiftCNNError>, _ what: String) {
        switch (a, b) {
        case let (.success(x), .success(y)): XCTAssertEqual(x, y, what)
        case let (.failure(x), .failure(y)):
            XCTAssertEqual(x.kind, y.kind, what)
            XCTAssertEqual(x.message, y.message, what)
        default: XCTFail("\(what): scalar path \(a), array path \(b)")
        }
    }

    func testConvGeometryScalarInitMatchesArrayInit() {
        for _ in 0..<20_000 {
            let x = (size(), size(), size(), size())
            let w = (size(), rng.next() % 2 == 0 ? x.1 : size(), size(), size())
            let bias: Int? = rng.next() % 3 == 0 ? nil : (rng.next() % 2 == 0 ? w.0 : size())
            let s = (size(), size()), p = (size() - 1, size() - 1), d = (size(), size())
            let fast = outcome { try Conv2DGeometry(op: "conv2d", x: x, weight: w, biasLength: bias,
                                                    stride: s, padding: p, dilation: d) }
            let slow = outcome { try Conv2DGeometry(op: "conv2d", xShape: [x.0, x.1, x.2, x.3],
                                                    weightShape: [w.0, w.1, w.2, w.3], biasShape: bias.map { [$0] },
                                                    stride: s, padding: p, dilation: d) }
            assertSame(fast, slow, "conv \(x) \(w) \(String(describing: bias)) \(s) \(p) \(d)")
        }
    }

    func testPoolGeometryScalarInitMatchesArrayInit() {
        for _ in 0..<20_000 {
            let x = (size(), size(), size(), size())
            let k = (size(), size()), s = (size(), size()), p = (size() - 1, size() - 1)
            let kind: PoolKind = rng.next() % 2 == 0 ? .max : .average
            let fast = outcome { try Pool2DGeometry(op: "max_pool2d", kind: kind, x: x, kernelSize: k, stride: s, padding: p) }
            let slow = outcome { try Pool2DGeometry(op: "max_pool2d", kind: kind, xShape: [x.0, x.1, x.2, x.3],
                                                    kernelSize: k, stride: s, padding: p) }
            assertSame(fast, slow, "pool \(x) \(k) \(s) \(p)")
        }
    }

    func testShapeReadersAcceptExactlyWhatReadShapeAccepts() {
        for _ in 0..<20_000 {
            let ndim = Int64(rng.next() % 6)
            let dims = (0..<Int(ndim)).map { _ in Int64(truncatingIfNeeded: size()) }
            dims.withUnsafeBufferPointer { buf in
                let p = ndim == 0 ? nil : buf.baseAddress
                let four = readShape4IfValid(p, ndim).map { [$0.0, $0.1, $0.2, $0.3] }
                let two = readShape2IfValid(p, ndim).map { [$0.0, $0.1] }
                let slow4 = try? readShape(p, ndim: ndim, name: "x", op: "t", rank: 4)
                let slow2 = try? readShape(p, ndim: ndim, name: "x", op: "t", rank: 2)
                XCTAssertEqual(four, slow4, "\(dims)")
                XCTAssertEqual(two, slow2, "\(dims)")
            }
        }
    }
}

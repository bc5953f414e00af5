import XCTest
@_spi(Engine) @testable import SwiftCNN

/// The tiny-convolution direct loops (Kernels/TinyConv.swift) against the naive oracle, bit for bit:
/// both sum the bias and then every in-bounds tap in (c, r, s) order with one multiply-add each, so
/// the 2-row x 2-block tiles, the row-at-a-time clipped rows and the one-output fallback must all
/// agree exactly, for every stride, padding, dilation and width (fewer than 4 outputs a row, a last
/// block that overlaps the one before it, odd row counts).
final class TinyConvTests: XCTestCase {
    /// Deterministic values in [-1, 1) (a 64-bit LCG), distinct enough to catch a wrong tap.
    private func values<T: CNNScalar>(_: T.Type, _ count: Int, seed: UInt64) -> [T] {
        var state = seed &* 6364136223846793005 &+ 1442695040888963407
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return T(Double(state >> 11) / Double(1 << 53) * 2 - 1)
        }
    }

    /// Every small geometry the direct loops take: (n, c, h, w, k, kh, kw, stride, padding, dilation).
    private var cases: [Conv2DGeometry] {
        var out: [Conv2DGeometry] = []
        let shapes: [(Int, Int, Int, Int, Int, Int, Int)] = [
            (1, 1, 8, 8, 1, 3, 3),    // the per-call benchmark's shape
            (1, 1, 5, 5, 1, 3, 3), (1, 1, 4, 9, 1, 2, 3), (2, 2, 6, 7, 2, 3, 2), (1, 1, 3, 3, 1, 3, 3),
            (1, 1, 9, 4, 1, 1, 1), (1, 2, 7, 11, 1, 3, 3), (1, 1, 12, 12, 1, 5, 5), (1, 1, 2, 2, 1, 1, 2),
        ]
        for (n, c, h, w, k, kh, kw) in shapes {
            for stride in [(1, 1), (2, 1), (1, 2), (3, 2)] {
                for padding in [(0, 0), (1, 1), (0, 2), (2, 0)] {
                    for dilation in [(1, 1), (2, 1), (1, 2)] {
                        guard let g = try? Conv2DGeometry(op: "conv2d", x: (n, c, h, w), weight: (k, c, kh, kw),
                                                          biasLength: k, stride: stride, padding: padding,
                                                          dilation: dilation),
                              conv2dUsesDirectLoops(g) else { continue }
                        out.append(g)
                    }
                }
            }
        }
        return out
    }

    private func checkAgainstNaive<T: CNNScalar>(_: T.Type) {
        let all = cases
        XCTAssertGreaterThan(all.count, 200)
        for (index, g) in all.enumerated() {
            let x = values(T.self, g.batch * g.inChannels * g.height * g.width, seed: UInt64(index))
            let w = values(T.self, g.outChannels * g.colRows, seed: UInt64(index) + 1000)
            let b = values(T.self, g.outChannels, seed: UInt64(index) + 2000)
            let count = g.batch * g.outChannels * g.outH * g.outW
            for withBias in [true, false] {
                var fast = [T](repeating: .nan, count: count), slow = [T](repeating: .nan, count: count)
                var entry = [T](repeating: .nan, count: count)
                x.withUnsafeBufferPointer { xp in
                    w.withUnsafeBufferPointer { wp in
                        b.withUnsafeBufferPointer { bp in
                            let bias = withBias ? bp.baseAddress : nil
                            fast.withUnsafeMutableBufferPointer {
                                conv2dForwardDirect(g, x: xp.baseAddress!, weight: wp.baseAddress!, bias: bias, y: $0.baseAddress!)
                            }
                            slow.withUnsafeMutableBufferPointer {
                                conv2dForwardNaive(g, x: xp.baseAddress!, weight: wp.baseAddress!, bias: bias, y: $0.baseAddress!)
                            }
                            entry.withUnsafeMutableBufferPointer { (yp: inout UnsafeMutableBufferPointer<T>) -> Void in
                                do {
                                    try conv2dForward(g, x: xp.baseAddress!, weight: wp.baseAddress!, bias: bias,
                                                      y: yp.baseAddress!)
                                } catch {
                                    XCTFail("\(g): \(error)")
                                }
                            }
                        }
                    }
                }
                // Exact equality; a NaN left in an output (one never written) is unequal to itself.
                XCTAssertEqual(fast, slow, "\(T.self) \(g) bias \(withBias)")
                XCTAssertEqual(entry, slow, "\(T.self) \(g) bias \(withBias) (C ABI entry)")
            }
        }
    }

    func testDirectLoopsMatchNaiveFloat() { checkAgainstNaive(Float.self) }
    func testDirectLoopsMatchNaiveDouble() { checkAgainstNaive(Double.self) }

    /// Which problems take the direct loops: the per-call benchmark's (324 multiply-adds) does; a
    /// LeNet layer's (far above conv2dDirectMaxWork) does not.
    func testDirectLoopsAreChosenForTinyProblemsOnly() throws {
        let tiny = try Conv2DGeometry(op: "conv2d", x: (1, 1, 8, 8), weight: (1, 1, 3, 3), biasLength: nil,
                                      stride: (1, 1), padding: (0, 0), dilation: (1, 1))
        XCTAssertTrue(conv2dUsesDirectLoops(tiny))
        let lenet = try Conv2DGeometry(op: "conv2d", x: (64, 6, 14, 14), weight: (16, 6, 5, 5), biasLength: 16,
                                       stride: (1, 1), padding: (0, 0), dilation: (1, 1))
        XCTAssertFalse(conv2dUsesDirectLoops(lenet))
        let edge = try Conv2DGeometry(op: "conv2d", x: (1, 4, 10, 10), weight: (2, 4, 2, 2), biasLength: nil,
                                      stride: (1, 1), padding: (0, 0), dilation: (1, 1))
        XCTAssertEqual(conv2dUsesDirectLoops(edge), 2 * 16 * 81 <= conv2dDirectMaxWork)
    }
}

import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport

/// The narrow channel-lane forward block (Kernels/DirectConvChannelLanesNarrow.swift) against the
/// wide one (Kernels/DirectConvChannelLanes.swift) and a scalar sum.
final class NarrowChannelLaneTests: XCTestCase {
    /// 12 positions × 16 channels: the narrow block's bits equal the wide block's, both with and
    /// without an initial (bias) value, for several tap counts (1, LeNet's 150, odd ones), and both
    /// match a Double sum over the taps.
    func testNarrowChannelBlockMatchesWideBitForBit() {
        var rng = TestRNG(seed: 7)
        let xCount = 2048
        let x = UnsafeMutablePointer<Float>.allocate(capacity: xCount)
        defer { x.deallocate() }
        for i in 0..<xCount { x[i] = Float(rng.uniform()) * 2 - 1 }
        for taps in [1, 5, 37, 150] {
            let offsets = UnsafeMutablePointer<Int32>.allocate(capacity: taps)
            let packed = UnsafeMutablePointer<Float>.allocate(capacity: taps * 16)
            let wide = UnsafeMutablePointer<Float>.allocate(capacity: 13 * 16)
            let narrow = UnsafeMutablePointer<Float>.allocate(capacity: 13 * 16)
            defer { offsets.deallocate(); packed.deallocate(); wide.deallocate(); narrow.deallocate() }
            for t in 0..<taps { offsets[t] = Int32(rng.int(0...(xCount - 16))) }
            for i in 0..<(taps * 16) { packed[i] = Float(rng.uniform()) * 2 - 1 }
            for withBias in [false, true] {
                var initial = Lanes(repeating: 0)
                if withBias { for lane in 0..<16 { initial[lane] = Float(lane) * 0.25 - 1.5 } }
                wide.update(repeating: .nan, count: 13 * 16)
                narrow.update(repeating: .nan, count: 13 * 16)
                channelLaneForwardBlock(taps: taps, offsets: offsets, x: x, packed: packed, initial: initial, out: wide)
                channelLaneForwardBlockNarrow(taps: taps, offsets: offsets, x: x, packed: packed, initial: initial,
                                              out: narrow)
                for p in 0..<12 {
                    for lane in 0..<16 {
                        let a = wide[p * 16 + lane], b = narrow[p * 16 + lane]
                        XCTAssertEqual(a.bitPattern, b.bitPattern, "taps \(taps) position \(p) lane \(lane)")
                        var ref = Double(initial[lane])
                        for t in 0..<taps { ref += Double(x[Int(offsets[t]) + p]) * Double(packed[t * 16 + lane]) }
                        XCTAssertEqual(Double(b), ref, accuracy: 1e-4, "taps \(taps) position \(p) lane \(lane)")
                    }
                }
                // Nothing written past the 12 positions.
                for i in (12 * 16)..<(13 * 16) { XCTAssertTrue(narrow[i].isNaN, "taps \(taps) element \(i)") }
            }
        }
    }

    /// A small-spatial convolution (16 -> 16 channels, 3 x 3 "same" on 4 x 4: too short a span for
    /// the position blocks) takes the channel-lane forward, whose block is the narrow one on a narrow
    /// register file; its output matches the naive convolution (Float) whichever block ran. (In
    /// debug builds conv2d runs the scalar kernels unless SWIFTCNN_DEBUG_SIMD is set.)
    func testSmallSpatialConvolutionUsesChannelLanes() throws {
        let g = try Conv2DGeometry(op: "conv2d", xShape: [3, 16, 4, 4], weightShape: [16, 16, 3, 3], biasShape: [16],
                                   stride: (1, 1), padding: (1, 1), dilation: (1, 1))
        XCTAssertEqual(conv2dForwardKernel(g), .channelLanes)
        let x: [Float] = randomArray(3 * 16 * 16, seed: 5)
        let w: [Float] = randomArray(16 * 16 * 9, seed: 6)
        let b: [Float] = randomArray(16, seed: 7)
        let xt = try Tensor<Float>(shape: [3, 16, 4, 4], scalars: x), wt = try Tensor<Float>(shape: [16, 16, 3, 3], scalars: w)
        let bt = try Tensor<Float>(shape: [16], scalars: b)
        let y = try conv2d(xt, weight: wt, bias: bt, padding: (1, 1))
        var ref = [Float](repeating: 0, count: 3 * 16 * 16)
        x.withUnsafeBufferPointer { xp in
            w.withUnsafeBufferPointer { wp in
                b.withUnsafeBufferPointer { bp in
                    ref.withUnsafeMutableBufferPointer { rp in
                        conv2dForwardNaive(g, x: xp.baseAddress!, weight: wp.baseAddress!, bias: bp.baseAddress!,
                                           y: rp.baseAddress!)
                    }
                }
            }
        }
        XCTAssertLessThanOrEqual(relativeError(y.scalars, ref), 1e-5)
    }
}

import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport

/// A 3x3, stride-1 convolution problem for the Winograd kernels.
private struct WinogradCase: CustomStringConvertible {
    var n, c, h, w, k: Int
    var pad = (1, 1)
    var description: String { "x (\(n), \(c), \(h), \(w)) k \(k) pad \(pad)" }
    func geometry() throws -> Conv2DGeometry {
        try Conv2DGeometry(op: "conv2d", xShape: [n, c, h, w], weightShape: [k, c, 3, 3], biasShape: [k],
                           stride: (1, 1), padding: pad, dilation: (1, 1))
    }
}

/// Odd and even sizes, pads 0/1/2 (and mixed), batch 1 and > 1, C and K not multiples of the 4-row
/// blocks, a single partial tile, tile rows not a multiple of the lanes (lane groups across rows),
/// several blocks per image with a partial last one, and a deep channel sum.
private let winogradCases: [WinogradCase] = [
    WinogradCase(n: 1, c: 1, h: 3, w: 3, k: 1, pad: (0, 0)),        // one 1x1 output: one partial tile
    WinogradCase(n: 2, c: 3, h: 7, w: 6, k: 5),                     // odd Ho
    WinogradCase(n: 3, c: 5, h: 9, w: 11, k: 6, pad: (2, 2)),       // pad 2, odd Ho and Wo
    WinogradCase(n: 2, c: 16, h: 8, w: 8, k: 16, pad: (0, 0)),      // 6x6 output
    WinogradCase(n: 2, c: 7, h: 30, w: 29, k: 9, pad: (1, 0)),      // 15x14 tiles, 3 blocks per image
    WinogradCase(n: 1, c: 20, h: 40, w: 36, k: 13),                 // 4 blocks per image, a partial last one
    WinogradCase(n: 2, c: 64, h: 10, w: 10, k: 18, pad: (2, 1)),    // deep sum, mixed padding
]

final class WinogradTests: XCTestCase {
    // MARK: forward and input gradient against the naive loops

    private func checkForward<T: CNNScalar>(_: T.Type, tolerance: Double) throws {
        for (index, cs) in winogradCases.enumerated() {
            let g = try cs.geometry()
            let seed = UInt64(4100 + 10 * index)
            let x: Tensor<T> = randomTensor(g.inputShape, seed: seed)
            let w: Tensor<T> = randomTensor(g.weightShape, seed: seed + 1)
            let b: Tensor<T> = randomTensor([cs.k], seed: seed + 2)
            for withBias in [true, false] {
                let bias = withBias ? UnsafePointer(b.pointer) : nil
                let y = try Tensor<T>(zeros: g.outputShape), yRef = try Tensor<T>(zeros: g.outputShape)
                y.pointer.update(repeating: 7, count: y.count)   // overwritten, not added to
                try winogradConv2dForward(g, x: x.pointer, weight: w.pointer, bias: bias, y: y.pointer,
                                          workspace: ScratchSlots<T>())
                conv2dForwardNaive(g, x: x.pointer, weight: w.pointer, bias: bias, y: yRef.pointer)
                assertRelativeError(y.scalars, yRef.scalars, tolerance, "forward \(cs) bias \(withBias) \(T.self)")
            }
        }
    }

    func testForwardMatchesNaiveDouble() throws { try checkForward(Double.self, tolerance: 1e-12) }
    func testForwardMatchesNaiveFloat() throws { try checkForward(Float.self, tolerance: 1e-5) }

    private func checkGradInput<T: CNNScalar>(_: T.Type, tolerance: Double) throws {
        for (index, cs) in winogradCases.enumerated() {
            let g = try cs.geometry()
            let seed = UInt64(5100 + 10 * index)
            let x: Tensor<T> = randomTensor(g.inputShape, seed: seed)
            let w: Tensor<T> = randomTensor(g.weightShape, seed: seed + 1)
            let gy: Tensor<T> = randomTensor(g.outputShape, seed: seed + 2)
            let dx = try Tensor<T>(zeros: g.inputShape), dxRef = try Tensor<T>(zeros: g.inputShape)
            dx.pointer.update(repeating: 7, count: dx.count)
            try winogradConv2dGradInput(g, gradOut: gy.pointer, weight: w.pointer, gradX: dx.pointer,
                                        workspace: ScratchSlots<T>())
            conv2dBackwardNaive(g, gradOut: gy.pointer, x: x.pointer, weight: w.pointer, gradX: dxRef.pointer,
                                gradWeight: nil, gradBias: nil, accumulate: false)
            assertRelativeError(dx.scalars, dxRef.scalars, tolerance, "grad_x \(cs) \(T.self)")
        }
    }

    func testGradInputMatchesNaiveDouble() throws { try checkGradInput(Double.self, tolerance: 1e-12) }
    func testGradInputMatchesNaiveFloat() throws { try checkGradInput(Float.self, tolerance: 1e-5) }

    private func checkGradWeight<T: CNNScalar>(_: T.Type, tolerance: Double) throws {
        for (index, cs) in winogradCases.enumerated() {
            let g = try cs.geometry()
            let seed = UInt64(5600 + 10 * index)
            let x: Tensor<T> = randomTensor(g.inputShape, seed: seed)
            let w: Tensor<T> = randomTensor(g.weightShape, seed: seed + 1)
            let gy: Tensor<T> = randomTensor(g.outputShape, seed: seed + 2)
            let dwRef = try Tensor<T>(zeros: g.weightShape)
            conv2dBackwardNaive(g, gradOut: gy.pointer, x: x.pointer, weight: w.pointer, gradX: nil,
                                gradWeight: dwRef.pointer, gradBias: nil, accumulate: false)
            let dw = try Tensor<T>(zeros: g.weightShape)
            dw.pointer.update(repeating: 7, count: dw.count)   // overwritten
            try winogradConv2dGradWeight(g, gradOut: gy.pointer, x: x.pointer, gradWeight: dw.pointer,
                                         accumulate: false, workspace: ScratchSlots<T>())
            assertRelativeError(dw.scalars, dwRef.scalars, tolerance, "grad_weight \(cs) \(T.self)")
            let dw0: Tensor<T> = randomTensor(g.weightShape, seed: seed + 3)
            let dwAcc = try dw0.copy()
            try winogradConv2dGradWeight(g, gradOut: gy.pointer, x: x.pointer, gradWeight: dwAcc.pointer,
                                         accumulate: true, workspace: ScratchSlots<T>())
            assertRelativeError(dwAcc.scalars, zip(dw0.scalars, dwRef.scalars).map { $0 + $1 }, tolerance,
                                "accumulate: grad_weight \(cs) \(T.self)")
        }
    }

    func testGradWeightMatchesNaiveDouble() throws { try checkGradWeight(Double.self, tolerance: 1e-12) }
    func testGradWeightMatchesNaiveFloat() throws { try checkGradWeight(Float.self, tolerance: 1e-5) }

    /// dw and dx of L = Σ y ⊙ gy (y by the Winograd forward) against central differences of L, Double.
    func testGradientsMatchFiniteDifferences() throws {
        let cs = WinogradCase(n: 2, c: 3, h: 6, w: 5, k: 5, pad: (1, 2))
        let g = try cs.geometry()
        let x: Tensor<Double> = randomTensor(g.inputShape, seed: 5900)
        let w: Tensor<Double> = randomTensor(g.weightShape, seed: 5901)
        let gy: Tensor<Double> = randomTensor(g.outputShape, seed: 5902)
        func loss() throws -> Double {
            let y = try Tensor<Double>(zeros: g.outputShape)
            try winogradConv2dForward(g, x: x.pointer, weight: w.pointer, bias: nil, y: y.pointer,
                                      workspace: ScratchSlots<Double>())
            return zip(y.scalars, gy.scalars).reduce(0) { $0 + $1.0 * $1.1 }
        }
        let dw = try Tensor<Double>(zeros: g.weightShape), dx = try Tensor<Double>(zeros: g.inputShape)
        try winogradConv2dGradWeight(g, gradOut: gy.pointer, x: x.pointer, gradWeight: dw.pointer, accumulate: false,
                                     workspace: ScratchSlots<Double>())
        try winogradConv2dGradInput(g, gradOut: gy.pointer, weight: w.pointer, gradX: dx.pointer,
                                    workspace: ScratchSlots<Double>())
        let h = 1e-6
        for (t, grad) in [(w, dw), (x, dx)] {
            var numeric: [Double] = []
            for i in 0..<t.count {
                let saved = t.pointer[i]
                t.pointer[i] = saved + h; let up = try loss()
                t.pointer[i] = saved - h; let down = try loss()
                t.pointer[i] = saved
                numeric.append((up - down) / (2 * h))
            }
            assertRelativeError(grad.scalars, numeric, 1e-7, "finite differences \(t.shape)")
        }
    }

    /// The Float kernel against the Double kernel on the same (Float-representable) data.
    func testFloatMatchesDouble() throws {
        for (index, cs) in winogradCases.enumerated() {
            let g = try cs.geometry()
            let x: Tensor<Float> = randomTensor(g.inputShape, seed: UInt64(6100 + index))
            let w: Tensor<Float> = randomTensor(g.weightShape, seed: UInt64(6200 + index))
            let b: Tensor<Float> = randomTensor([cs.k], seed: UInt64(6300 + index))
            let (xd, wd, bd) = (converted(x, to: Double.self), converted(w, to: Double.self), converted(b, to: Double.self))
            let y = try conv2d(x, weight: w, bias: b, padding: cs.pad)
            let yd = try Tensor<Double>(zeros: g.outputShape)
            try winogradConv2dForward(g, x: xd.pointer, weight: wd.pointer, bias: UnsafePointer(bd.pointer),
                                      y: yd.pointer, workspace: ScratchSlots<Double>())
            assertRelativeError(y.scalars, yd.scalars, 1e-5, "Float vs Double \(cs)")
        }
    }

    // MARK: through conv2d and conv2dBackward

    /// Shapes that `conv2dUsesWinograd` selects: the public functions give the naive results for
    /// y, dx, dw and db, and the pointer-level backward accumulates dw and db onto existing values.
    private func checkThroughConv2d<T: CNNScalar>(_: T.Type, tolerance: Double) throws {
        let cases = [WinogradCase(n: 2, c: 16, h: 9, w: 11, k: 17),
                     WinogradCase(n: 3, c: 17, h: 12, w: 10, k: 16, pad: (2, 0))]
        for (index, cs) in cases.enumerated() {
            let g = try cs.geometry()
            XCTAssertEqual(conv2dForwardKernel(g), .winograd, "\(cs)")
            XCTAssertEqual(conv2dGradInputKernel(g), .winograd, "\(cs)")
            let seed = UInt64(7100 + 10 * index)
            let x: Tensor<T> = randomTensor(g.inputShape, seed: seed)
            let w: Tensor<T> = randomTensor(g.weightShape, seed: seed + 1)
            let b: Tensor<T> = randomTensor([cs.k], seed: seed + 2)
            let gy: Tensor<T> = randomTensor(g.outputShape, seed: seed + 3)
            let y = try conv2d(x, weight: w, bias: b, padding: cs.pad)
            let yRef = try Tensor<T>(zeros: g.outputShape)
            conv2dForwardNaive(g, x: x.pointer, weight: w.pointer, bias: UnsafePointer(b.pointer), y: yRef.pointer)
            assertRelativeError(y.scalars, yRef.scalars, tolerance, "forward \(cs) \(T.self)")

            let grads = try conv2dBackward(gradOut: gy, x: x, weight: w, padding: cs.pad)
            let dx = try Tensor<T>(zeros: g.inputShape), dw = try Tensor<T>(zeros: g.weightShape)
            let db = try Tensor<T>(zeros: [cs.k])
            conv2dBackwardNaive(g, gradOut: gy.pointer, x: x.pointer, weight: w.pointer, gradX: dx.pointer,
                                gradWeight: dw.pointer, gradBias: db.pointer, accumulate: false)
            assertRelativeError(grads.gradX.scalars, dx.scalars, tolerance, "grad_x \(cs) \(T.self)")
            assertRelativeError(grads.gradWeight.scalars, dw.scalars, tolerance, "grad_weight \(cs) \(T.self)")
            assertRelativeError(grads.gradBias.scalars, db.scalars, tolerance, "grad_bias \(cs) \(T.self)")

            // Accumulating onto existing dw and db (as layers do); dx overwritten.
            let dw0: Tensor<T> = randomTensor(g.weightShape, seed: seed + 4)
            let db0: Tensor<T> = randomTensor([cs.k], seed: seed + 5)
            let (dwAcc, dbAcc) = (try dw0.copy(), try db0.copy())
            let dxOut: Tensor<T> = randomTensor(g.inputShape, seed: seed + 6)
            try conv2dBackward(g, gradOut: gy.pointer, x: x.pointer, weight: w.pointer, gradX: dxOut.pointer,
                               gradWeight: dwAcc.pointer, gradBias: dbAcc.pointer, accumulate: true,
                               workspace: ScratchSlots<T>())
            assertRelativeError(dxOut.scalars, dx.scalars, tolerance, "accumulate: grad_x \(cs) \(T.self)")
            assertRelativeError(dwAcc.scalars, zip(dw0.scalars, dw.scalars).map { $0 + $1 }, tolerance,
                                "accumulate: grad_weight \(cs) \(T.self)")
            assertRelativeError(dbAcc.scalars, zip(db0.scalars, db.scalars).map { $0 + $1 }, tolerance,
                                "accumulate: grad_bias \(cs) \(T.self)")
        }
    }

    func testThroughConv2dDouble() throws { try checkThroughConv2d(Double.self, tolerance: 1e-12) }
    func testThroughConv2dFloat() throws { try checkThroughConv2d(Float.self, tolerance: 1e-5) }

    // MARK: selection and determinism

    /// When `.winograd` is chosen: 3x3, stride 1, no dilation, C >= 16, K >= 16, output >= 8 x 8; the
    /// input gradient also needs padding <= 2.
    func testSelection() throws {
        func geometry(_ n: Int, _ c: Int, _ h: Int, _ w: Int, _ k: Int, kernel: Int = 3, stride: Int = 1,
                      pad: Int = 1, dilation: Int = 1) throws -> Conv2DGeometry {
            try Conv2DGeometry(op: "conv2d", xShape: [n, c, h, w], weightShape: [k, c, kernel, kernel], biasShape: nil,
                               stride: (stride, stride), padding: (pad, pad), dilation: (dilation, dilation))
        }
        let chosen = [try geometry(32, 64, 32, 32, 64),          // bench figure 2
                      try geometry(1, 16, 8, 8, 16),             // the smallest: 16 channels, 8x8 output
                      try geometry(2, 16, 10, 10, 16, pad: 0),    // 8x8 output without padding
                      try geometry(3, 16, 20, 20, 32)]
        for g in chosen {
            XCTAssertTrue(conv2dUsesWinograd(g), "\(g.inputShape) \(g.weightShape)")
            XCTAssertEqual(conv2dForwardKernel(g), .winograd, "\(g.inputShape) \(g.weightShape)")
            XCTAssertEqual(conv2dGradInputKernel(g), .winograd, "\(g.inputShape) \(g.weightShape)")
        }
        let notChosen = [try geometry(32, 15, 32, 32, 64),       // C < 16
                         try geometry(32, 64, 32, 32, 15),       // K < 16
                         try geometry(2, 16, 7, 7, 16),          // 7x7 output
                         try geometry(2, 16, 9, 9, 16, pad: 0),  // 7x7 output
                         try geometry(2, 16, 32, 32, 16, kernel: 5, pad: 2),
                         try geometry(2, 16, 32, 32, 16, stride: 2),
                         try geometry(2, 16, 32, 32, 16, dilation: 2),
                         try geometry(2, 6, 14, 14, 16, kernel: 5, pad: 0)]   // LeNet's second layer
        for g in notChosen {
            XCTAssertFalse(conv2dUsesWinograd(g), "\(g.inputShape) \(g.weightShape)")
            XCTAssertNotEqual(conv2dForwardKernel(g), .winograd, "\(g.inputShape) \(g.weightShape)")
            XCTAssertNotEqual(conv2dGradInputKernel(g), .winograd, "\(g.inputShape) \(g.weightShape)")
        }
        // Padding 3: the forward is Winograd, the input gradient (padding 2 - 3 < 0) is not.
        let pad3 = try geometry(2, 16, 8, 8, 16, pad: 3)
        XCTAssertEqual(conv2dForwardKernel(pad3), .winograd)
        XCTAssertNotEqual(conv2dGradInputKernel(pad3), .winograd)
    }

    /// The forward and the input gradient are bit-identical run to run and for 1, 2 and 3 threads
    /// (every output element has one fixed sequence of operations whatever the split).
    func testDeterministicAcrossThreadCounts() throws {
        let saved = Threading.numThreads
        defer { Threading.numThreads = saved }
        let cs = WinogradCase(n: 3, c: 24, h: 20, w: 18, k: 20)
        let g = try cs.geometry()
        let x: Tensor<Float> = randomTensor(g.inputShape, seed: 8100)
        let w: Tensor<Float> = randomTensor(g.weightShape, seed: 8101)
        let gy: Tensor<Float> = randomTensor(g.outputShape, seed: 8102)
        var results: [[Float]] = []
        for threads in [1, 2, 2, 3] {
            Threading.numThreads = threads
            let y = try Tensor<Float>(zeros: g.outputShape), dx = try Tensor<Float>(zeros: g.inputShape)
            try winogradConv2dForward(g, x: x.pointer, weight: w.pointer, bias: nil, y: y.pointer,
                                      workspace: ScratchSlots<Float>())
            try winogradConv2dGradInput(g, gradOut: gy.pointer, weight: w.pointer, gradX: dx.pointer,
                                        workspace: ScratchSlots<Float>())
            results.append(y.scalars + dx.scalars)
        }
        for r in results.dropFirst() { XCTAssertEqual(r, results[0]) }
        // The weight gradient's chunks depend on the thread count: bit-identical run to run for each.
        for threads in [1, 2, 3] {
            Threading.numThreads = threads
            var dws: [[Float]] = []
            for _ in 0..<2 {
                let dw = try Tensor<Float>(zeros: g.weightShape)
                try winogradConv2dGradWeight(g, gradOut: gy.pointer, x: x.pointer, gradWeight: dw.pointer,
                                             accumulate: false, workspace: ScratchSlots<Float>())
                dws.append(dw.scalars)
            }
            XCTAssertEqual(dws[0], dws[1], "\(threads) threads")
        }
    }
}

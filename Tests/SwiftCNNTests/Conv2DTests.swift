import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport

/// A conv2d problem: shapes and hyper-parameters.
private struct ConvCase: CustomStringConvertible {
    var n, c, h, w, k, kh, kw: Int
    var stride = (1, 1), padding = (0, 0), dilation = (1, 1)
    var bias = true

    var xShape: [Int] { [n, c, h, w] }
    var wShape: [Int] { [k, c, kh, kw] }
    var description: String {
        "x \(describeShape(xShape)) w \(describeShape(wShape)) stride \(stride) padding \(padding) dilation \(dilation) bias \(bias)"
    }
    func geometry() throws -> Conv2DGeometry {
        try Conv2DGeometry(op: "conv2d", xShape: xShape, weightShape: wShape, biasShape: bias ? [k] : nil,
                           stride: stride, padding: padding, dilation: dilation)
    }
}

/// Shapes covering stride, padding, dilation, 1x1 kernels, non-square everything, batch 1 and > 1,
/// and a problem big enough for the threaded / packed paths.
private let convCases: [ConvCase] = [
    ConvCase(n: 1, c: 1, h: 5, w: 5, k: 1, kh: 3, kw: 3),
    ConvCase(n: 2, c: 3, h: 7, w: 6, k: 4, kh: 3, kw: 2, bias: false),
    ConvCase(n: 2, c: 2, h: 8, w: 9, k: 3, kh: 3, kw: 3, stride: (2, 1), padding: (1, 2)),
    ConvCase(n: 3, c: 2, h: 9, w: 7, k: 2, kh: 2, kw: 3, stride: (2, 3), padding: (1, 0), dilation: (2, 1)),
    ConvCase(n: 1, c: 3, h: 10, w: 11, k: 5, kh: 3, kw: 3, stride: (1, 1), padding: (2, 2), dilation: (2, 3)),
    ConvCase(n: 2, c: 4, h: 5, w: 5, k: 3, kh: 1, kw: 1),                                    // pointwise
    ConvCase(n: 2, c: 4, h: 6, w: 5, k: 3, kh: 1, kw: 1, stride: (2, 2), padding: (1, 0)),   // 1x1 strided
    ConvCase(n: 2, c: 1, h: 4, w: 4, k: 2, kh: 4, kw: 4, padding: (0, 0)),                   // 1x1 output
    ConvCase(n: 1, c: 2, h: 3, w: 3, k: 2, kh: 5, kw: 5, padding: (1, 1)),                   // kernel = padded input
    ConvCase(n: 5, c: 3, h: 12, w: 12, k: 6, kh: 5, kw: 5, padding: (2, 2)),                 // lecture-like
    ConvCase(n: 2, c: 16, h: 20, w: 18, k: 24, kh: 3, kw: 3, padding: (1, 1)),               // GEMM-sized
]

final class Conv2DTests: XCTestCase {
    // MARK: fast vs naive

    private func checkFastMatchesNaive<T: CNNScalar>(_: T.Type, tolerance: Double) throws {
        for (index, cs) in convCases.enumerated() {
            let g = try cs.geometry()
            let seed = UInt64(100 + index)
            let x: Tensor<T> = randomTensor(cs.xShape, seed: seed)
            let w: Tensor<T> = randomTensor(cs.wShape, seed: seed + 1000)
            let b: Tensor<T>? = cs.bias ? randomTensor([cs.k], seed: seed + 2000) : nil
            let gy: Tensor<T> = randomTensor(g.outputShape, seed: seed + 3000)

            let y = try conv2d(x, weight: w, bias: b, stride: cs.stride, padding: cs.padding, dilation: cs.dilation)
            let yRef = try Tensor<T>(zeros: g.outputShape)
            conv2dForwardNaive(g, x: x.pointer, weight: w.pointer, bias: b.map { UnsafePointer($0.pointer) }, y: yRef.pointer)
            assertRelativeError(y.scalars, yRef.scalars, tolerance, "forward \(cs) \(T.self)")

            let grads = try conv2dBackward(gradOut: gy, x: x, weight: w, stride: cs.stride, padding: cs.padding,
                                           dilation: cs.dilation)
            let dx = try Tensor<T>(zeros: g.inputShape), dw = try Tensor<T>(zeros: g.weightShape)
            let db = try Tensor<T>(zeros: [cs.k])
            conv2dBackwardNaive(g, gradOut: gy.pointer, x: x.pointer, weight: w.pointer, gradX: dx.pointer,
                                gradWeight: dw.pointer, gradBias: db.pointer, accumulate: false)
            assertRelativeError(grads.gradX.scalars, dx.scalars, tolerance, "grad_x \(cs) \(T.self)")
            assertRelativeError(grads.gradWeight.scalars, dw.scalars, tolerance, "grad_weight \(cs) \(T.self)")
            assertRelativeError(grads.gradBias.scalars, db.scalars, tolerance, "grad_bias \(cs) \(T.self)")
        }
    }

    func testFastMatchesNaiveDouble() throws { try checkFastMatchesNaive(Double.self, tolerance: 1e-13) }
    func testFastMatchesNaiveFloat() throws { try checkFastMatchesNaive(Float.self, tolerance: 1e-5) }

    // MARK: direct kernels (Float): each path taken and checked against the naive loops

    /// Geometries chosen to take every direct-kernel path (Kernels/DirectConv*.swift), with the
    /// path each must take: a change of the selection rules fails here rather than silently leaving
    /// a kernel untested.
    func testDirectKernelPathsMatchNaive() throws {
        typealias Case = (cs: ConvCase, forward: Conv2DForwardKernel, gradX: Conv2DGradInputKernel)
        let cases: [Case] = [
            // LeNet's first layer: 6 channels x 64 positions forward; dx one channel x 128 positions.
            (ConvCase(n: 5, c: 1, h: 28, w: 28, k: 6, kh: 5, kw: 5, padding: (2, 2)), .positionLanes, .positionLanes),
            // LeNet's second layer (two image chunks): 6 channels x 48 positions forward, dx scattered.
            (ConvCase(n: 9, c: 6, h: 14, w: 14, k: 16, kh: 5, kw: 5), .positionLanes, .scatter),
            // dx with lanes over 13 input channels (the channel correlation's cost beats the
            // scatter's here), padding, odd K.
            (ConvCase(n: 3, c: 13, h: 9, w: 10, k: 7, kh: 4, kw: 3, padding: (2, 1)), .other, .channelLanes),
            // A 3x3 "same" layer: position lanes both ways (K = 12, below Winograd's 16 channels).
            (ConvCase(n: 3, c: 16, h: 20, w: 20, k: 12, kh: 3, kw: 3, padding: (1, 1)), .positionLanes, .positionLanes),
            // The same on a small image.
            (ConvCase(n: 3, c: 16, h: 12, w: 12, k: 12, kh: 3, kw: 3, padding: (1, 1)), .positionLanes, .positionLanes),
            // A 4 x 4 image: only the 12-position blocks of the channel lanes are mostly filled.
            (ConvCase(n: 3, c: 16, h: 4, w: 4, k: 16, kh: 3, kw: 3, padding: (1, 1)), .channelLanes, .channelLanes),
            // A 3 x 3 image: no forward kernel fills its blocks; dx scattered, with padding and a
            // partly empty last block of 6 channels.
            (ConvCase(n: 2, c: 16, h: 3, w: 3, k: 16, kh: 3, kw: 3, padding: (1, 1)), .other, .scatter),
            // Odd K (a weight-gradient channel pair with itself), 18 taps (a short tap block),
            // uneven padding, two input channels (dx one channel per block), 37 images (>1 group);
            // the forward's blocks would be mostly empty: GEMM.
            (ConvCase(n: 37, c: 2, h: 9, w: 11, k: 5, kh: 3, kw: 3, padding: (1, 0), bias: false), .other, .positionLanes),
            // One output channel over a long span (forward one channel per block); 17 input
            // channels (dx in blocks of 6 with a partly empty last one).
            (ConvCase(n: 2, c: 17, h: 20, w: 30, k: 1, kh: 2, kw: 3), .positionLanes, .positionLanes),
            // 6 channels over LeNet's second-layer span: 6 x 48 position blocks.
            (ConvCase(n: 2, c: 3, h: 14, w: 14, k: 6, kh: 5, kw: 5), .positionLanes, .other),
            // Four output channels, 25 taps: weight-gradient blocks of 4 x 6 with a 1-tap last block.
            (ConvCase(n: 3, c: 1, h: 9, w: 9, k: 4, kh: 5, kw: 5), .other, .positionLanes),
            // Four channels in and out on 20 x 20: no block fills; the row-direct kernels (16-wide
            // output rows) take the forward and the input gradient.
            (ConvCase(n: 2, c: 4, h: 20, w: 20, k: 4, kh: 3, kw: 3), .other, .other),
            // Strided and dilated: no direct kernel.
            (ConvCase(n: 2, c: 16, h: 9, w: 9, k: 16, kh: 3, kw: 3, stride: (2, 2)), .other, .other),
            (ConvCase(n: 2, c: 16, h: 9, w: 9, k: 16, kh: 3, kw: 3, dilation: (2, 1)), .other, .other),
        ]
        // The position-lane block shapes those cases take (each block kernel in use).
        let sixByFortyEight = cases.first { $0.cs.c == 3 && $0.cs.k == 6 }!.cs
        let blockShapes: [(ConvCase, Int, Int)] = [(cases[0].cs, 6, 64), (cases[1].cs, 8, 48), (sixByFortyEight, 6, 48)]
        for (cs, rows, width) in blockShapes {
            let shape = conv2dDirectConvShape(try cs.geometry()).positionBlockShape
            XCTAssertEqual([shape.rows, shape.width], [rows, width], "position block shape for \(cs)")
        }
        // Which weight-gradient block each channel count takes (3 x 8 for LeNet's first layer,
        // 4 x 6 for its second and for the 4-channel case).
        let fourBySix = try cases.map { try conv2dDirectConvShape($0.cs.geometry()).weightGradUses4x6 }
        XCTAssertEqual(fourBySix[0], false)
        XCTAssertEqual(fourBySix[1], true)
        XCTAssertTrue(cases.contains { $0.cs.k == 4 && (try? conv2dDirectConvShape($0.cs.geometry()).weightGradUses4x6) == true })
        XCTAssertTrue(try conv2dUsesRowDirect(cases.first { $0.cs.c == 4 && $0.cs.k == 4 }!.cs.geometry()))
        for (index, (cs, forwardKernel, gradXKernel)) in cases.enumerated() {
            let g = try cs.geometry()
            XCTAssertEqual(conv2dForwardKernel(g), forwardKernel, "forward kernel for \(cs)")
            XCTAssertEqual(conv2dGradInputKernel(g), gradXKernel, "grad_x kernel for \(cs)")
            let seed = UInt64(900 + index)
            let x: Tensor<Float> = randomTensor(cs.xShape, seed: seed)
            let w: Tensor<Float> = randomTensor(cs.wShape, seed: seed + 1)
            let b: Tensor<Float>? = cs.bias ? randomTensor([cs.k], seed: seed + 2) : nil
            let gy: Tensor<Float> = randomTensor(g.outputShape, seed: seed + 3)
            let y = try conv2d(x, weight: w, bias: b, stride: cs.stride, padding: cs.padding, dilation: cs.dilation)
            let yRef = try Tensor<Float>(zeros: g.outputShape)
            conv2dForwardNaive(g, x: x.pointer, weight: w.pointer, bias: b.map { UnsafePointer($0.pointer) }, y: yRef.pointer)
            assertRelativeError(y.scalars, yRef.scalars, 1e-5, "forward \(cs)")
            // Parameter gradients accumulate onto existing values; dx is overwritten.
            let dw0: Tensor<Float> = randomTensor(cs.wShape, seed: seed + 4)
            let dx = try Tensor<Float>(zeros: g.inputShape), dw = try dw0.copy()
            dx.pointer.update(repeating: .nan, count: dx.count)
            try conv2dBackward(g, gradOut: gy.pointer, x: x.pointer, weight: w.pointer, gradX: dx.pointer,
                               gradWeight: dw.pointer, gradBias: nil, accumulate: true, workspace: Workspace())
            let dxRef = try Tensor<Float>(zeros: g.inputShape), dwRef = try dw0.copy()
            conv2dBackwardNaive(g, gradOut: gy.pointer, x: x.pointer, weight: w.pointer, gradX: dxRef.pointer,
                                gradWeight: dwRef.pointer, gradBias: nil, accumulate: true)
            assertRelativeError(dx.scalars, dxRef.scalars, 1e-5, "grad_x \(cs)")
            assertRelativeError(dw.scalars, dwRef.scalars, 1e-5, "grad_weight \(cs)")
        }
    }

    /// accumulate == true adds into gradWeight/gradBias (layers), false overwrites; nil outputs are skipped.
    private func checkAccumulate<T: CNNScalar>(_: T.Type, tolerance: Double) throws {
        for (index, cs) in convCases.enumerated() {
            let g = try cs.geometry()
            let seed = UInt64(200 + index)
            let x: Tensor<T> = randomTensor(cs.xShape, seed: seed)
            let w: Tensor<T> = randomTensor(cs.wShape, seed: seed + 1)
            let gy: Tensor<T> = randomTensor(g.outputShape, seed: seed + 2)
            let dw0: Tensor<T> = randomTensor(cs.wShape, seed: seed + 3)
            let db0: Tensor<T> = randomTensor([cs.k], seed: seed + 4)
            let dw = try dw0.copy(), db = try db0.copy()
            try conv2dBackward(g, gradOut: gy.pointer, x: x.pointer, weight: w.pointer, gradX: nil,
                               gradWeight: dw.pointer, gradBias: db.pointer, accumulate: true, workspace: Workspace())
            let dwRef = try dw0.copy(), dbRef = try db0.copy()
            conv2dBackwardNaive(g, gradOut: gy.pointer, x: x.pointer, weight: w.pointer, gradX: nil,
                                gradWeight: dwRef.pointer, gradBias: dbRef.pointer, accumulate: true)
            assertRelativeError(dw.scalars, dwRef.scalars, tolerance, "accumulated grad_weight \(cs)")
            assertRelativeError(db.scalars, dbRef.scalars, tolerance, "accumulated grad_bias \(cs)")
            // Only grad_x requested.
            let dx = try Tensor<T>(zeros: g.inputShape), dxRef = try Tensor<T>(zeros: g.inputShape)
            dx.pointer.update(repeating: 7, count: dx.count)  // must be overwritten
            try conv2dBackward(g, gradOut: gy.pointer, x: x.pointer, weight: w.pointer, gradX: dx.pointer,
                               gradWeight: nil, gradBias: nil, accumulate: true, workspace: Workspace())
            conv2dBackwardNaive(g, gradOut: gy.pointer, x: x.pointer, weight: w.pointer, gradX: dxRef.pointer,
                                gradWeight: nil, gradBias: nil, accumulate: false)
            assertRelativeError(dx.scalars, dxRef.scalars, tolerance, "grad_x only \(cs)")
        }
    }

    func testAccumulateAndSkippedOutputs() throws {
        try checkAccumulate(Double.self, tolerance: 1e-13)
        try checkAccumulate(Float.self, tolerance: 1e-5)
    }

    // MARK: gradients vs finite differences

    /// loss = sum(conv2d(x, w, b) * R); its gradients are conv2dBackward(R).
    func testBackwardMatchesFiniteDifferences() throws {
        for (index, cs) in convCases.enumerated() where cs.xShape.reduce(1, *) <= 800 {
            let g = try cs.geometry()
            let seed = UInt64(300 + index)
            let x: Tensor<Double> = randomTensor(cs.xShape, seed: seed)
            let w: Tensor<Double> = randomTensor(cs.wShape, seed: seed + 1)
            let b: Tensor<Double> = randomTensor([cs.k], seed: seed + 2)
            let r: [Double] = randomArray(g.outputShape.reduce(1, *), seed: seed + 3)
            let rT = try Tensor(shape: g.outputShape, scalars: r)
            func loss(_ x: Tensor<Double>, _ w: Tensor<Double>, _ b: Tensor<Double>) throws -> Double {
                weightedSum(try conv2d(x, weight: w, bias: b, stride: cs.stride, padding: cs.padding,
                                       dilation: cs.dilation), r)
            }
            let grads = try conv2dBackward(gradOut: rT, x: x, weight: w, stride: cs.stride, padding: cs.padding,
                                           dilation: cs.dilation)
            let nx = try numericalGradient(of: { try loss($0, w, b) }, at: x)
            let nw = try numericalGradient(of: { try loss(x, $0, b) }, at: w)
            let nb = try numericalGradient(of: { try loss(x, w, $0) }, at: b)
            assertRelativeError(grads.gradX.scalars, nx, 1e-7, "grad_x vs FD \(cs)")
            assertRelativeError(grads.gradWeight.scalars, nw, 1e-7, "grad_weight vs FD \(cs)")
            assertRelativeError(grads.gradBias.scalars, nb, 1e-7, "grad_bias vs FD \(cs)")
        }
    }

    // MARK: Float vs Double

    func testFloatMatchesDouble() throws {
        for (index, cs) in convCases.enumerated() {
            let seed = UInt64(400 + index)
            let xd: Tensor<Double> = randomTensor(cs.xShape, seed: seed)
            let wd: Tensor<Double> = randomTensor(cs.wShape, seed: seed + 1)
            let bd: Tensor<Double> = randomTensor([cs.k], seed: seed + 2)
            let g = try cs.geometry()
            let gyd: Tensor<Double> = randomTensor(g.outputShape, seed: seed + 3)
            let (xf, wf, bf, gyf) = (converted(xd, to: Float.self), converted(wd, to: Float.self),
                                     converted(bd, to: Float.self), converted(gyd, to: Float.self))
            // Compare against Double computed from the Float-rounded inputs: only arithmetic differs.
            let (xr, wr, br, gyr) = (converted(xf, to: Double.self), converted(wf, to: Double.self),
                                     converted(bf, to: Double.self), converted(gyf, to: Double.self))
            let p = (cs.stride, cs.padding, cs.dilation)
            let yf = try conv2d(xf, weight: wf, bias: bf, stride: p.0, padding: p.1, dilation: p.2)
            let yd = try conv2d(xr, weight: wr, bias: br, stride: p.0, padding: p.1, dilation: p.2)
            assertRelativeError(yf.scalars, yd.scalars, 1e-4, "forward \(cs)")
            let gf = try conv2dBackward(gradOut: gyf, x: xf, weight: wf, stride: p.0, padding: p.1, dilation: p.2)
            let gd = try conv2dBackward(gradOut: gyr, x: xr, weight: wr, stride: p.0, padding: p.1, dilation: p.2)
            assertRelativeError(gf.gradX.scalars, gd.gradX.scalars, 1e-4, "grad_x \(cs)")
            assertRelativeError(gf.gradWeight.scalars, gd.gradWeight.scalars, 1e-4, "grad_weight \(cs)")
            assertRelativeError(gf.gradBias.scalars, gd.gradBias.scalars, 1e-4, "grad_bias \(cs)")
        }
    }

    // MARK: the lecture's identity

    /// One channel, stride 1, no padding: dL/dx is the full cross-correlation of dL/dy with the
    /// filter rotated by 180 degrees (i.e. the full true convolution of dL/dy with the filter).
    func testGradXIsFullCorrelationWithRotatedFilter() throws {
        for (h, w, kh, kw) in [(5, 5, 3, 3), (7, 6, 2, 4), (4, 4, 4, 4), (6, 3, 1, 2)] {
            let x: Tensor<Double> = randomTensor([1, 1, h, w], seed: 500)
            let wt: Tensor<Double> = randomTensor([1, 1, kh, kw], seed: 501)
            let (oh, ow) = (h - kh + 1, w - kw + 1)
            let gy: Tensor<Double> = randomTensor([1, 1, oh, ow], seed: 502)
            let dx = try conv2dBackward(gradOut: gy, x: x, weight: wt).gradX

            // full[a, b] = sum_{r,s} gy_padded[a + r, b + s] * rot[r, s],  rot[r, s] = w[kh-1-r, kw-1-s],
            // where gy_padded is gy with kh-1 (kw-1) zero rows (columns) on each side: output (h, w).
            var full = [Double](repeating: 0, count: h * w)
            for a in 0..<h {
                for b in 0..<w {
                    var sum = 0.0
                    for r in 0..<kh {
                        for s in 0..<kw {
                            let (i, j) = (a + r - (kh - 1), b + s - (kw - 1))
                            guard i >= 0, i < oh, j >= 0, j < ow else { continue }
                            sum += gy[flat: i * ow + j] * wt[flat: (kh - 1 - r) * kw + (kw - 1 - s)]
                        }
                    }
                    full[a * w + b] = sum
                }
            }
            assertRelativeError(dx.scalars, full, 1e-14, "\(h)x\(w) kernel \(kh)x\(kw)")
        }
    }

    // MARK: im2col / col2im

    /// im2col follows its formula, and col2im is its adjoint: <im2col(x), c> == <x, col2im(c)>.
    func testIm2ColAndCol2ImAdjoint() throws {
        for (index, cs) in convCases.enumerated() {
            let g = try cs.geometry()
            let x: Tensor<Double> = randomTensor([cs.c, cs.h, cs.w], seed: UInt64(600 + index))
            let cv: [Double] = randomArray(g.colCount, seed: UInt64(700 + index))
            var col = [Double](repeating: .nan, count: g.colCount)
            im2col(g, x: x.pointer, col: &col)
            for q in 0..<g.colRows {
                let (c, r, s) = (q / (cs.kh * cs.kw), (q / cs.kw) % cs.kh, q % cs.kw)
                for i in 0..<g.outH {
                    for j in 0..<g.outW {
                        let h = i * g.strideH - g.padH + r * g.dilationH, w = j * g.strideW - g.padW + s * g.dilationW
                        let expected = h >= 0 && h < cs.h && w >= 0 && w < cs.w ? x[flat: (c * cs.h + h) * cs.w + w] : 0
                        XCTAssertEqual(col[q * g.colCols + i * g.outW + j], expected, "\(cs) q \(q) i \(i) j \(j)")
                    }
                }
            }
            var folded = [Double](repeating: .nan, count: x.count)
            cv.withUnsafeBufferPointer { col2im(g, col: $0.baseAddress!, x: &folded) }
            let lhs = zip(col, cv).reduce(0.0) { $0 + $1.0 * $1.1 }
            let rhs = zip(x.scalars, folded).reduce(0.0) { $0 + $1.0 * $1.1 }
            XCTAssertEqual(lhs, rhs, accuracy: 1e-12 * max(1, abs(lhs)), "\(cs)")
        }
    }

    // MARK: edge cases

    func testEmptyBatch() throws {
        let x = try Tensor<Double>(zeros: [0, 3, 5, 5])
        let w: Tensor<Double> = randomTensor([4, 3, 3, 3], seed: 1)
        let b: Tensor<Double> = randomTensor([4], seed: 2)
        let y = try conv2d(x, weight: w, bias: b, padding: (1, 1))
        XCTAssertEqual(y.shape, [0, 4, 5, 5])
        let gy = try Tensor<Double>(zeros: [0, 4, 5, 5])
        let g = try conv2dBackward(gradOut: gy, x: x, weight: w, padding: (1, 1))
        XCTAssertEqual(g.gradX.shape, [0, 3, 5, 5])
        XCTAssertEqual(g.gradWeight.scalars, [Double](repeating: 0, count: 108))
        XCTAssertEqual(g.gradBias.scalars, [0, 0, 0, 0])
        // The pointer-level call must overwrite (not leave garbage in) gradWeight/gradBias.
        let geo = try Conv2DGeometry(op: "conv2d", xShape: [0, 3, 5, 5], weightShape: [4, 3, 3, 3], biasShape: nil,
                                     stride: (1, 1), padding: (1, 1), dilation: (1, 1))
        let dw: Tensor<Double> = randomTensor([4, 3, 3, 3], seed: 3), db: Tensor<Double> = randomTensor([4], seed: 4)
        try conv2dBackward(geo, gradOut: gy.pointer, x: x.pointer, weight: w.pointer, gradX: nil,
                           gradWeight: dw.pointer, gradBias: db.pointer, accumulate: false, workspace: Workspace())
        XCTAssertEqual(maxAbs(dw.scalars), 0)
        XCTAssertEqual(maxAbs(db.scalars), 0)
    }

    /// Every combination of requested outputs, for empty and non-empty batches (an optimized build
    /// once mis-handled one of these early-exit paths).
    func testOutputCombinations() throws {
        for batch in [0, 1, 3] {
            let cs = ConvCase(n: batch, c: 3, h: 5, w: 5, k: 4, kh: 3, kw: 3, padding: (1, 1), bias: false)
            let g = try cs.geometry()
            let x: Tensor<Double> = randomTensor(cs.xShape, seed: 31), w: Tensor<Double> = randomTensor(cs.wShape, seed: 32)
            let gy: Tensor<Double> = randomTensor(g.outputShape, seed: 33)
            let dxRef = try Tensor<Double>(zeros: g.inputShape), dwRef = try Tensor<Double>(zeros: g.weightShape)
            let dbRef = try Tensor<Double>(zeros: [4])
            conv2dBackwardNaive(g, gradOut: gy.pointer, x: x.pointer, weight: w.pointer, gradX: dxRef.pointer,
                                gradWeight: dwRef.pointer, gradBias: dbRef.pointer, accumulate: false)
            for mask in 0..<8 {
                let dx = try Tensor<Double>(zeros: g.inputShape), dw = try Tensor<Double>(zeros: g.weightShape)
                let db = try Tensor<Double>(zeros: [4])
                try conv2dBackward(g, gradOut: gy.pointer, x: x.pointer, weight: w.pointer,
                                   gradX: mask & 1 != 0 ? dx.pointer : nil, gradWeight: mask & 2 != 0 ? dw.pointer : nil,
                                   gradBias: mask & 4 != 0 ? db.pointer : nil, accumulate: false, workspace: Workspace())
                if mask & 1 != 0 { assertRelativeError(dx.scalars, dxRef.scalars, 1e-13, "batch \(batch) mask \(mask)") }
                if mask & 2 != 0 { assertRelativeError(dw.scalars, dwRef.scalars, 1e-13, "batch \(batch) mask \(mask)") }
                if mask & 4 != 0 { assertRelativeError(db.scalars, dbRef.scalars, 1e-13, "batch \(batch) mask \(mask)") }
            }
        }
    }

    func testIntoOutAndOverlap() throws {
        let x: Tensor<Float> = randomTensor([2, 2, 6, 6], seed: 7)
        let w: Tensor<Float> = randomTensor([3, 2, 3, 3], seed: 8)
        let out = try Tensor<Float>(zeros: [2, 3, 4, 4])
        let y = try conv2d(x, weight: w, into: out)
        XCTAssertEqual(y.pointer, out.pointer)
        XCTAssertEqual(y.scalars, try conv2d(x, weight: w).scalars)
        assertThrowsKind(.value, contains: "out must have shape (2, 3, 4, 4)") {
            try conv2d(x, weight: w, into: try Tensor<Float>(zeros: [2, 3, 4, 5]))
        }
        // out overlapping x: view x's memory as an output-shaped tensor (it has enough elements).
        let xAsOut = try Tensor(borrowing: x.pointer, shape: [2, 3, 4, 4])
        assertThrowsKind(.value, contains: "overlap x") { try conv2d(x, weight: w, into: xAsOut) }
    }

    /// Same inputs, same thread count: bit-identical results; every thread count agrees with the
    /// naive oracle. Two shapes: small images (split across threads image by image, dW summed per
    /// chunk) and large ones (each image's GEMM split across threads).
    func testThreadsDeterministic() throws {
        let saved = Threading.numThreads
        defer { Threading.numThreads = saved }
        for (xs, ws) in [([9, 8, 12, 12], [12, 8, 3, 3]), ([2, 16, 24, 24], [32, 16, 3, 3])] {
            let x: Tensor<Float> = randomTensor(xs, seed: 9)
            let w: Tensor<Float> = randomTensor(ws, seed: 10)
            let g = try Conv2DGeometry(op: "conv2d", xShape: xs, weightShape: ws, biasShape: nil,
                                       stride: (1, 1), padding: (1, 1), dilation: (1, 1))
            let gy: Tensor<Float> = randomTensor(g.outputShape, seed: 11)
            func run() throws -> [[Float]] {
                let y = try conv2d(x, weight: w, padding: (1, 1))
                let grads = try conv2dBackward(gradOut: gy, x: x, weight: w, padding: (1, 1))
                return [y.scalars, grads.gradX.scalars, grads.gradWeight.scalars, grads.gradBias.scalars]
            }
            let y = try Tensor<Float>(zeros: g.outputShape), dx = try Tensor<Float>(zeros: xs)
            let dw = try Tensor<Float>(zeros: ws), db = try Tensor<Float>(zeros: [ws[0]])
            conv2dForwardNaive(g, x: x.pointer, weight: w.pointer, bias: nil, y: y.pointer)
            conv2dBackwardNaive(g, gradOut: gy.pointer, x: x.pointer, weight: w.pointer, gradX: dx.pointer,
                                gradWeight: dw.pointer, gradBias: db.pointer, accumulate: false)
            let reference = [y.scalars, dx.scalars, dw.scalars, db.scalars]
            var byThreads: [[[Float]]] = []
            for threads in [1, 2, 3] {
                Threading.numThreads = threads
                let a = try run(), b = try run()
                XCTAssertEqual(a, b, "\(xs) threads \(threads): not bit-identical run to run")
                for (t, (got, want)) in zip(a, reference).enumerated() {
                    assertRelativeError(got, want, 1e-5, "\(xs) threads \(threads) output \(t)")
                }
                byThreads.append(a)
            }
            // The forward and grad_x never split a sum, so they agree across thread counts too.
            XCTAssertEqual(byThreads[0][0], byThreads[1][0])
            XCTAssertEqual(byThreads[0][1], byThreads[2][1])
        }
    }

    // MARK: validation

    func testValidationErrors() {
        let x = try! Tensor<Double>(zeros: [2, 3, 8, 8])
        let w = try! Tensor<Double>(zeros: [4, 3, 3, 3])
        assertThrowsKind(.value, contains: "conv2d: x must be 4-D") {
            try conv2d(try Tensor<Double>(zeros: [3, 8, 8]), weight: w)
        }
        assertThrowsKind(.value, contains: "conv2d: weight must be 4-D") {
            try conv2d(x, weight: try Tensor<Double>(zeros: [4, 3, 3]))
        }
        assertThrowsKind(.value, contains: "conv2d: weight must have 3 input channels to match x (2, 3, 8, 8), got shape (4, 5, 3, 3)") {
            try conv2d(x, weight: try Tensor<Double>(zeros: [4, 5, 3, 3]))
        }
        assertThrowsKind(.value, contains: "bias must have shape (4,)") {
            try conv2d(x, weight: w, bias: try Tensor<Double>(zeros: [3]))
        }
        assertThrowsKind(.value, contains: "stride") { try conv2d(x, weight: w, stride: (0, 1)) }
        assertThrowsKind(.value, contains: "padding") { try conv2d(x, weight: w, padding: (0, -1)) }
        assertThrowsKind(.value, contains: "dilation") { try conv2d(x, weight: w, dilation: (1, 0)) }
        assertThrowsKind(.value, contains: "larger than the padded input") {
            try conv2d(x, weight: try Tensor<Double>(zeros: [4, 3, 11, 3]), padding: (1, 1))
        }
        assertThrowsKind(.value, contains: "larger than the padded input") {
            try conv2d(x, weight: w, dilation: (4, 1))
        }
        assertThrowsKind(.value, contains: "at least 1 channel") {
            try conv2d(try Tensor<Double>(zeros: [2, 0, 8, 8]), weight: try Tensor<Double>(zeros: [4, 0, 3, 3]))
        }
        assertThrowsKind(.value, contains: "spatial size") {
            try conv2d(try Tensor<Double>(zeros: [2, 3, 0, 8]), weight: w)
        }
        assertThrowsKind(.value, contains: "output channel") {
            try conv2d(x, weight: try Tensor<Double>(zeros: [0, 3, 3, 3]))
        }
        assertThrowsKind(.value, contains: "kernel size") {
            try conv2d(x, weight: try Tensor<Double>(zeros: [4, 3, 0, 3]))
        }
        assertThrowsKind(.value,
                         contains: "conv2d_backward: grad_out must have shape (2, 4, 6, 6), got (2, 4, 5, 6)") {
            try conv2dBackward(gradOut: try Tensor<Double>(zeros: [2, 4, 5, 6]), x: x, weight: w)
        }
        // Geometry-level checks (shapes that would never be allocated).
        func geometry(_ xs: [Int], _ ws: [Int], stride: (Int, Int) = (1, 1), padding: (Int, Int) = (0, 0),
                      dilation: (Int, Int) = (1, 1)) throws -> Conv2DGeometry {
            try Conv2DGeometry(op: "conv2d", xShape: xs, weightShape: ws, biasShape: nil, stride: stride,
                               padding: padding, dilation: dilation)
        }
        assertThrowsKind(.value, contains: "non-negative") { try geometry([-1, 3, 8, 8], [4, 3, 3, 3]) }
        assertThrowsKind(.overflow) { try geometry([1 << 40, 1 << 20, 8, 8], [4, 1 << 20, 3, 3]) }
        assertThrowsKind(.overflow) { try geometry([1, 1, 8, 8], [1, 1, 3, 3], padding: (Int.max / 2, 0)) }
        assertThrowsKind(.overflow) { try geometry([1, 1, 8, 8], [1, 1, 4, 3], dilation: (Int.max / 2, 1)) }
        // im2col buffer: C*kH*kW*Ho*Wo overflows though x, weight and y fit.
        assertThrowsKind(.overflow, contains: "im2col") {
            try geometry([1, 1 << 24, 1 << 20, 1 << 10], [1, 1 << 24, 1 << 10, 1], padding: (1 << 9, 0))
        }
        XCTAssertNoThrow(try geometry([0, 3, 8, 8], [4, 3, 3, 3]))
    }
}

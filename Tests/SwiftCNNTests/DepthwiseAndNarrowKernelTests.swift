import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The depthwise kernels (Kernels/DepthwiseConv.swift) and the narrow-register position blocks
/// (Kernels/DirectConvNarrowBlocks.swift): each against its naive loops, the depthwise gradients
/// against central finite differences in Double, and the dispatch that picks them.
final class DepthwiseAndNarrowKernelTests: XCTestCase {
    private struct DepthwiseCase: CustomStringConvertible {
        var n, c, h, w, kh, kw: Int
        var padding = (0, 0)
        var bias = true
        var description: String { "N \(n) C \(c) \(h)x\(w) kernel \(kh)x\(kw) padding \(padding) bias \(bias)" }
        func geometry() throws -> GroupedConv2DGeometry {
            try GroupedConv2DGeometry(op: "conv2d", xShape: [n, c, h, w], weightShape: [c, 1, kh, kw],
                                      biasLength: bias ? c : nil, stride: (1, 1),
                                      padding: .explicit(padding.0, padding.1), dilation: (1, 1), groups: c)
        }
    }

    private let cases: [DepthwiseCase] = [
        DepthwiseCase(n: 2, c: 5, h: 9, w: 11, kh: 3, kw: 3, padding: (1, 1)),
        // A row longer than one 32-wide block (a full block and a partial one), 5 x 5, uneven padding.
        DepthwiseCase(n: 2, c: 3, h: 4, w: 35, kh: 5, kw: 5, padding: (1, 2)),
        // Padding beyond the kernel span (dx reads g's padding from an offset), no bias.
        DepthwiseCase(n: 1, c: 2, h: 5, w: 6, kh: 2, kw: 2, padding: (3, 3), bias: false),
        // A 1 x 4 filter over two full blocks; the figure's 3 x 3 "same" layer on full 32-wide rows.
        DepthwiseCase(n: 3, c: 2, h: 3, w: 67, kh: 1, kw: 4),
        DepthwiseCase(n: 2, c: 8, h: 32, w: 32, kh: 3, kw: 3, padding: (1, 1)),
    ]

    private func run<T: CNNScalar>(_ cs: DepthwiseCase, _: T.Type, seed: UInt64, threads: Int? = nil)
        throws -> (y: [T], dx: [T], dw: [T], db: [T]) {
        let g = try cs.geometry()
        let x: Tensor<T> = randomTensor(g.inputShape, seed: seed)
        let w: Tensor<T> = randomTensor(g.weightShape, seed: seed + 1)
        let b: Tensor<T> = randomTensor([cs.c], seed: seed + 2)
        let gy: Tensor<T> = randomTensor(g.outputShape, seed: seed + 3)
        let saved = Threading.numThreads
        defer { Threading.numThreads = saved }
        if let threads { Threading.numThreads = threads }
        let y = try Tensor<T>(zeros: g.outputShape)
        try groupedConv2dForward(g, x: x.pointer, weight: w.pointer, bias: cs.bias ? UnsafePointer(b.pointer) : nil,
                                 y: y.pointer, workspace: Workspace())
        let dx = try Tensor<T>(zeros: g.inputShape)
        dx.pointer.update(repeating: .nan, count: dx.count)
        let dw: Tensor<T> = randomTensor(g.weightShape, seed: seed + 4), db: Tensor<T> = randomTensor([cs.c], seed: seed + 5)
        try groupedConv2dBackward(g, gradOut: gy.pointer, x: x.pointer, weight: w.pointer, gradX: dx.pointer,
                                  gradWeight: dw.pointer, gradBias: db.pointer, accumulate: true, workspace: Workspace())
        return (y.scalars, dx.scalars, dw.scalars, db.scalars)
    }

    private func naive<T: CNNScalar>(_ cs: DepthwiseCase, _: T.Type, seed: UInt64) throws -> (y: [T], dx: [T], dw: [T], db: [T]) {
        let g = try cs.geometry()
        let x: Tensor<T> = randomTensor(g.inputShape, seed: seed)
        let w: Tensor<T> = randomTensor(g.weightShape, seed: seed + 1)
        let b: Tensor<T> = randomTensor([cs.c], seed: seed + 2)
        let gy: Tensor<T> = randomTensor(g.outputShape, seed: seed + 3)
        let y = try Tensor<T>(zeros: g.outputShape)
        depthwiseConv2dForwardNaive(g, x: x.pointer, weight: w.pointer, bias: cs.bias ? UnsafePointer(b.pointer) : nil, y: y.pointer)
        let dx = try Tensor<T>(zeros: g.inputShape)
        let dw: Tensor<T> = randomTensor(g.weightShape, seed: seed + 4), db: Tensor<T> = randomTensor([cs.c], seed: seed + 5)
        depthwiseConv2dBackwardNaive(g, gradOut: gy.pointer, x: x.pointer, weight: w.pointer, gradX: dx.pointer,
                                     gradWeight: dw.pointer, gradBias: db.pointer, accumulate: true)
        return (y.scalars, dx.scalars, dw.scalars, db.scalars)
    }

    /// Which grouped convolutions take the depthwise kernels.
    func testDepthwiseDispatch() throws {
        for cs in cases { XCTAssertTrue(depthwiseConvApplies(try cs.geometry()), "\(cs)") }
        func geometry(_ c: Int, _ k: Int, groups: Int, stride: (Int, Int) = (1, 1), dilation: (Int, Int) = (1, 1),
                      padding: ConvPadding = .explicit(1, 1), kernel: Int = 3) throws -> GroupedConv2DGeometry {
            try GroupedConv2DGeometry(op: "conv2d", xShape: [2, c, 8, 8], weightShape: [k, c / groups, kernel, kernel],
                                      biasLength: nil, stride: stride, padding: padding, dilation: dilation, groups: groups)
        }
        XCTAssertTrue(depthwiseConvApplies(try geometry(4, 4, groups: 4, padding: .same)))
        XCTAssertFalse(depthwiseConvApplies(try geometry(4, 8, groups: 4)))          // channel multiplier 2
        XCTAssertFalse(depthwiseConvApplies(try geometry(4, 4, groups: 2)))          // two channels per group
        XCTAssertFalse(depthwiseConvApplies(try geometry(4, 4, groups: 4, stride: (2, 2))))
        XCTAssertFalse(depthwiseConvApplies(try geometry(4, 4, groups: 4, dilation: (1, 2))))
        XCTAssertFalse(depthwiseConvApplies(try geometry(4, 4, groups: 4, padding: .same, kernel: 2)))  // extra row
        XCTAssertFalse(depthwiseConvApplies(try geometry(1, 1, groups: 1)))          // plain convolution
    }

    /// The fast kernels against the naive loops, Double (to rounding) and Float.
    func testDepthwiseMatchesNaive() throws {
        for (index, cs) in cases.enumerated() {
            let seed = UInt64(3100 + 10 * index)
            let fastD = try run(cs, Double.self, seed: seed), refD = try naive(cs, Double.self, seed: seed)
            assertRelativeError(fastD.y, refD.y, 1e-14, "y \(cs)")
            assertRelativeError(fastD.dx, refD.dx, 1e-14, "dx \(cs)")
            assertRelativeError(fastD.dw, refD.dw, 1e-14, "dw \(cs)")
            assertRelativeError(fastD.db, refD.db, 1e-14, "db \(cs)")
            let fastF = try run(cs, Float.self, seed: seed)
            assertRelativeError(fastF.y, refD.y, 1e-5, "Float y \(cs)")
            assertRelativeError(fastF.dx, refD.dx, 1e-5, "Float dx \(cs)")
            assertRelativeError(fastF.dw, refD.dw, 1e-5, "Float dw \(cs)")
            assertRelativeError(fastF.db, refD.db, 1e-5, "Float db \(cs)")
        }
    }

    /// Every output is summed by one fixed chain of operations: 1 and 2 threads agree bit for bit.
    func testDepthwiseSameBitsAcrossThreadCounts() throws {
        let cs = cases[4]
        let one = try run(cs, Float.self, seed: 77, threads: 1), two = try run(cs, Float.self, seed: 77, threads: 2)
        XCTAssertEqual(one.y, two.y)
        XCTAssertEqual(one.dx, two.dx)
        XCTAssertEqual(one.dw, two.dw)
        XCTAssertEqual(one.db, two.db)
    }

    /// Gradients of L = sum(y * r) against central finite differences (Double).
    func testDepthwiseGradientsMatchFiniteDifferences() throws {
        for (index, cs) in cases.prefix(4).enumerated() {
            let g = try cs.geometry()
            let seed = UInt64(3300 + 10 * index)
            let x: Tensor<Double> = randomTensor(g.inputShape, seed: seed)
            let w: Tensor<Double> = randomTensor(g.weightShape, seed: seed + 1)
            let b: Tensor<Double> = randomTensor([cs.c], seed: seed + 2)
            let r = randomArray(g.outputShape.reduce(1, *), seed: seed + 3, as: Double.self)
            func loss(_ x: Tensor<Double>, _ w: Tensor<Double>, _ b: Tensor<Double>) throws -> Double {
                let y = try Tensor<Double>(zeros: g.outputShape)
                try groupedConv2dForward(g, x: x.pointer, weight: w.pointer, bias: cs.bias ? UnsafePointer(b.pointer) : nil,
                                         y: y.pointer, workspace: Workspace())
                return weightedSum(y, r)
            }
            let gy = try Tensor<Double>(shape: g.outputShape, scalars: r)
            let dx = try Tensor<Double>(zeros: g.inputShape), dw = try Tensor<Double>(zeros: g.weightShape)
            let db = try Tensor<Double>(zeros: [cs.c])
            try groupedConv2dBackward(g, gradOut: gy.pointer, x: x.pointer, weight: w.pointer, gradX: dx.pointer,
                                      gradWeight: dw.pointer, gradBias: db.pointer, accumulate: false, workspace: Workspace())
            assertRelativeError(dx.scalars, try numericalGradient(of: { try loss($0, w, b) }, at: x), 1e-7, "dx \(cs)")
            assertRelativeError(dw.scalars, try numericalGradient(of: { try loss(x, $0, b) }, at: w), 1e-7, "dw \(cs)")
            if cs.bias {
                assertRelativeError(db.scalars, try numericalGradient(of: { try loss(x, w, $0) }, at: b), 1e-7, "db \(cs)")
            }
        }
    }

    // MARK: narrow position blocks

    /// Each wide position block and its narrow sub-blocks give the same bits, and both match a
    /// scalar sum over the taps.
    func testNarrowPositionBlocksMatchWideBitForBit() throws {
        let taps = 37, rowStride = 160
        var rng = TestRNG(seed: 41)
        let xCount = 4096
        let x = UnsafeMutablePointer<Float>.allocate(capacity: xCount)
        defer { x.deallocate() }
        for i in 0..<xCount { x[i] = Float(rng.uniform()) }
        let offsets = UnsafeMutablePointer<Int32>.allocate(capacity: taps)
        defer { offsets.deallocate() }
        for t in 0..<taps { offsets[t] = Int32(rng.int(0...(xCount - 256))) }
        let packed = UnsafeMutablePointer<Float>.allocate(capacity: taps * 8)
        defer { packed.deallocate() }
        for i in 0..<(taps * 8) { packed[i] = Float(rng.uniform()) }
        let wide = UnsafeMutablePointer<Float>.allocate(capacity: 8 * rowStride)
        let narrow = UnsafeMutablePointer<Float>.allocate(capacity: 8 * rowStride)
        defer { wide.deallocate(); narrow.deallocate() }
        for (rows, width) in [(1, 128), (6, 64), (8, 48), (6, 48)] {
            wide.update(repeating: .nan, count: 8 * rowStride)
            narrow.update(repeating: .nan, count: 8 * rowStride)
            switch (rows, width) {
            case (1, _): positionLaneForwardBlock1(taps: taps, offsets: offsets, x: x, packed: packed, out: wide)
            case (8, _): positionLaneForwardBlock8x3(taps: taps, offsets: offsets, x: x, packed: packed, out: wide, rowStride: rowStride)
            case (6, 64): positionLaneForwardBlock(taps: taps, offsets: offsets, x: x, packed: packed, out: wide, rowStride: rowStride)
            default: positionLaneForwardBlock3(taps: taps, offsets: offsets, x: x, packed: packed, out: wide, rowStride: rowStride)
            }
            positionLaneNarrowBlock(rows: rows, width: width, taps: taps, offsets: offsets, x: x, packed: packed,
                                    out: narrow, rowStride: rowStride)
            for i in 0..<rows {
                for p in 0..<width {
                    var ref = 0.0
                    for t in 0..<taps { ref += Double(packed[t * rows + i]) * Double(x[Int(offsets[t]) + p]) }
                    let a = wide[i * rowStride + p], b = narrow[i * rowStride + p]
                    XCTAssertEqual(a.bitPattern, b.bitPattern, "block \(rows)x\(width) row \(i) position \(p)")
                    XCTAssertEqual(Double(b), ref, accuracy: 1e-4, "block \(rows)x\(width) row \(i) position \(p)")
                }
                // Nothing written past the block's width.
                XCTAssertTrue(narrow[i * rowStride + width].isNaN, "block \(rows)x\(width) row \(i)")
            }
        }
    }

    /// The narrow weight-gradient blocks give the wide blocks' partial sums bit for bit (4 x 6 and
    /// 3 x 8 channel/tap blocks, short last tap blocks, two images), and those sums add up to the
    /// naive dw.
    func testNarrowWeightGradientMatchesWideBitForBit() throws {
        for (k, c, kh) in [(8, 3, 3), (5, 2, 5), (6, 1, 5)] {   // 4 x 6; 3 x 8 with a dropped row; 3 x 8
            let s = DirectConvShape(inChannels: c, paddedH: 11, paddedW: 13, outChannels: k, kernelH: kh, kernelW: kh)
            let images = 2, taps = s.taps
            var rng = TestRNG(seed: UInt64(50 + k))
            let xpad = UnsafeMutablePointer<Float>.allocate(capacity: images * s.paddedCount)
            let gq = UnsafeMutablePointer<Float>.allocate(capacity: images * s.gradRowsCount)
            defer { xpad.deallocate(); gq.deallocate() }
            xpad.update(repeating: 0, count: images * s.paddedCount)
            gq.update(repeating: 0, count: images * s.gradRowsCount)
            for m in 0..<images {
                for i in 0..<(c * s.paddedPlane) { xpad[m * s.paddedCount + i] = Float(rng.uniform()) }
                for kk in 0..<k {
                    for i in 0..<s.outH {
                        for j in 0..<s.outW { gq[m * s.gradRowsCount + kk * s.gradRow + i * s.paddedW + j] = Float(rng.uniform()) }
                    }
                }
            }
            let offsets = UnsafeMutablePointer<Int32>.allocate(capacity: taps)
            defer { offsets.deallocate() }
            directConvOffsets(s, into: offsets)
            let count = k * taps * 16
            let wide = UnsafeMutablePointer<Float>.allocate(capacity: count), narrow = UnsafeMutablePointer<Float>.allocate(capacity: count)
            let dropped = UnsafeMutablePointer<Float>.allocate(capacity: 2 * taps * 16)
            defer { wide.deallocate(); narrow.deallocate(); dropped.deallocate() }
            for i in 0..<count { wide[i] = Float(i % 7); narrow[i] = Float(i % 7) }
            weightGradImagesWide(s, images: images, xpad: xpad, xImageStride: s.paddedCount, gq: gq, offsets: offsets,
                                 acc: wide, dropped: dropped)
            weightGradImagesNarrow(s, images: images, xpad: xpad, xImageStride: s.paddedCount, gq: gq, offsets: offsets,
                                   acc: narrow)
            for i in 0..<count { XCTAssertEqual(wide[i].bitPattern, narrow[i].bitPattern, "k \(k) c \(c) element \(i)") }
            for kk in 0..<k {
                for t in 0..<taps {
                    var ref = 0.0, sum = 0.0
                    for lane in 0..<16 { sum += Double(narrow[(kk * taps + t) * 16 + lane]) - Double(((kk * taps + t) * 16 + lane) % 7) }
                    for m in 0..<images {
                        for q in 0..<s.span {
                            ref += Double(gq[m * s.gradRowsCount + kk * s.gradRow + q])
                                * Double(xpad[m * s.paddedCount + q + Int(offsets[t])])
                        }
                    }
                    XCTAssertEqual(sum, ref, accuracy: 1e-3, "k \(k) c \(c) channel \(kk) tap \(t)")
                }
            }
        }
    }

    /// The narrow scatter block adds the wide block's sums bit for bit.
    func testNarrowScatterBlockMatchesWideBitForBit() {
        let K = 7, gRow = 64, plane = 100
        var rng = TestRNG(seed: 61)
        let g = UnsafeMutablePointer<Float>.allocate(capacity: K * gRow)
        let packed = UnsafeMutablePointer<Float>.allocate(capacity: K * 6)
        let wide = UnsafeMutablePointer<Float>.allocate(capacity: 6 * plane)
        let narrow = UnsafeMutablePointer<Float>.allocate(capacity: 6 * plane)
        defer { g.deallocate(); packed.deallocate(); wide.deallocate(); narrow.deallocate() }
        for i in 0..<(K * gRow) { g[i] = Float(rng.uniform()) }
        for i in 0..<(K * 6) { packed[i] = Float(rng.uniform()) }
        for i in 0..<(6 * plane) { wide[i] = Float(rng.uniform()); narrow[i] = wide[i] }
        scatterBlock(outChannels: K, g: g, gRow: gRow, packed: packed, dx: wide, plane: plane)
        for p in stride(from: 0, to: 48, by: 16) {
            scatterNarrowBlock6x2(outChannels: K, g: g + p, gRow: gRow, packed: packed, dx: narrow + p, plane: plane)
        }
        for i in 0..<(6 * plane) { XCTAssertEqual(wide[i].bitPattern, narrow[i].bitPattern, "element \(i)") }
    }

    /// The register-file switch: the environment override, and the flag probe on Linux x86-64.
    func testRegisterFileDetection() {
        let saved = getenv("SWIFTCNN_REGISTER_FILE").map { String(cString: $0) }
        defer {
            if let saved { setenv("SWIFTCNN_REGISTER_FILE", saved, 1) } else { unsetenv("SWIFTCNN_REGISTER_FILE") }
        }
        setenv("SWIFTCNN_REGISTER_FILE", "narrow", 1)
        XCTAssertEqual(detectRegisterFile(), .narrow)
        setenv("SWIFTCNN_REGISTER_FILE", "wide", 1)
        XCTAssertEqual(detectRegisterFile(), .wide)
        #if os(Linux) && arch(x86_64)
        XCTAssertTrue(cpuInfoHasFlag("fpu"))
        XCTAssertFalse(cpuInfoHasFlag("no-such-flag"))
        #endif
    }
}

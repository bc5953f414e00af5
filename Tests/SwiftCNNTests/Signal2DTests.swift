import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport

final class Signal2DTests: XCTestCase {
    // Expected values from scipy.signal 1.17 (correlate2d / convolve2d, boundary="fill", fillvalue=0).
    static let image: [Double] = [1, 2, 0, -1, 3,
                                  0, 1, 4, 2, -2,
                                  2, -1, 1, 0, 1,
                                  3, 0, -2, 1, 2]            // (4, 5)
    static let k2: [Double] = [1, -1, 2, 0.5]                // (2, 2): even, centring differs per function
    static let k3: [Double] = [0, 1, 2, -1, 0, 1, 1, 1, -2]  // (3, 3): odd

    static let expected: [String: (shape: [Int], values: [Double])] = [
        "k2 correlate2d valid": ([3, 4], [-0.5, 6, 10, -1, 2.5, -4.5, 4, 4.5, 9, -3, -2.5, 2]),
        "k2 correlate2d same": ([4, 5], [-0.5, 6, 10, -1, -1, 2.5, -4.5, 4, 4.5, 0, 9, -3, -2.5, 2, 5, 3, 2, -3, -1, 2]),
        "k2 correlate2d full": ([5, 6], [0.5, 3, 4, -0.5, -0.5, 6, -1, -0.5, 6, 10, -1, -1, 1, 2.5, -4.5, 4, 4.5, 0,
                                         -0.5, 9, -3, -2.5, 2, 5, -3, 3, 2, -3, -1, 2]),
        "k2 convolve2d valid": ([3, 4], [5.5, 4, -4, 1.5, -1, 10.5, 5, -2, -4, -0.5, 3.5, 3]),
        "k2 convolve2d same": ([4, 5], [1, 1, -2, -1, 4, 2, 5.5, 4, -4, 1.5, 2, -1, 10.5, 5, -2, 7, -4, -0.5, 3.5, 3]),
        "k2 convolve2d full": ([5, 6], [1, 1, -2, -1, 4, -3, 2, 5.5, 4, -4, 1.5, 3.5, 2, -1, 10.5, 5, -2, -2,
                                        7, -4, -0.5, 3.5, 3, -1.5, 6, 1.5, -4, 1, 4.5, 1]),
        "k3 correlate2d valid": ([2, 3], [5, -1, -2, 15, 5, -7]),
        "k3 correlate2d same": ([4, 5], [0, -8, -2, 13, 1, 10, 5, -1, -2, 2, 4, 15, 5, -7, 1, 0, -4, 2, 6, 0]),
        "k3 correlate2d full": ([6, 7], [-2, -3, 3, 4, -7, 2, 3, 1, 0, -8, -2, 13, 1, -5, -2, 10, 5, -1, -2, 2, 3,
                                         -4, 4, 15, 5, -7, 1, 1, 7, 0, -4, 2, 6, 0, -2, 6, 3, -4, 0, 5, 2, 0]),
        "k3 convolve2d valid": ([2, 3], [-1, -7, 10, 12, 1, -11]),
        "k3 convolve2d same": ([4, 5], [-2, 2, 9, 7, 1, 4, -1, -7, 10, 8, 5, 12, 1, -11, -2, 1, 1, 2, -5, 2]),
        "k3 convolve2d full": ([6, 7], [0, 1, 4, 4, -1, 1, 6, -1, -2, 2, 9, 7, 1, -1, 1, 4, -1, -7, 10, 8, -6,
                                        -2, 5, 12, 1, -11, -2, 9, -1, 1, 1, 2, -5, 2, 0, 3, 3, -8, -1, 7, 0, -4]),
    ]

    func run<T: CNNScalar>(_ name: String, _ image: Tensor<T>, _ kernel: Tensor<T>, _ mode: CorrelationMode) throws -> Tensor<T> {
        name == "correlate2d" ? try correlate2d(image, kernel, mode: mode) : try convolve2d(image, kernel, mode: mode)
    }

    func testMatchesScipyExactly() throws {
        func check<T: CNNScalar>(_: T.Type) throws {
            let image = try Tensor<T>(shape: [4, 5], scalars: Self.image.map { T($0) })
            for (kname, kvalues, kshape) in [("k2", Self.k2, [2, 2]), ("k3", Self.k3, [3, 3])] {
                let kernel = try Tensor<T>(shape: kshape, scalars: kvalues.map { T($0) })
                for f in ["correlate2d", "convolve2d"] {
                    for mode in CorrelationMode.allCases {
                        let key = "\(kname) \(f) \(mode.rawValue)"
                        let out = try run(f, image, kernel, mode)
                        let (shape, values) = Self.expected[key]!
                        XCTAssertEqual(out.shape, shape, key)
                        // Small integers and halves: exact in both types.
                        XCTAssertEqual(out.scalars.map(Double.init), values, key)
                    }
                }
            }
        }
        try check(Float.self)
        try check(Double.self)
    }

    /// `same` and `full` with a kernel larger than the image (scipy does not swap in these modes).
    func testKernelLargerThanImage() throws {
        let image = try Tensor<Double>(shape: [2, 2], scalars: [1, 2, 3, 4])
        let kernel = try Tensor<Double>(shape: [3, 4], scalars: [0, 1, 2, 1, -1, 0, 1, 3, 1, 1, -2, 0])
        XCTAssertEqual(try correlate2d(image, kernel, mode: .same).scalars, [-3, 6, 9, -1])
        XCTAssertEqual(try convolve2d(image, kernel, mode: .same).scalars, [1, 11, -1, 3])
        XCTAssertEqual(try correlate2d(image, kernel, mode: .full).scalars,
                       [0, -2, -3, 3, 2, 3, 1, -3, 6, 2, 10, 19, 9, -1, -4, 3, 10, 11, 4, 0])
        XCTAssertEqual(try convolve2d(image, kernel, mode: .full).scalars,
                       [0, 1, 4, 5, 2, -1, 1, 11, 16, 10, -2, -1, 3, 9, 12, 3, 7, -2, -8, 0])
        // In valid mode scipy would swap the operands; we refuse.
        assertThrowsKind(.value, contains: "correlate2d: kernel (3, 4) must not be larger than image (2, 2) in 'valid' mode") {
            try correlate2d(image, kernel)
        }
        assertThrowsKind(.value, contains: "convolve2d: kernel") { try convolve2d(image, kernel) }
    }

    func testValidation() throws {
        let image = try Tensor<Float>(zeros: [3, 3])
        assertThrowsKind(.value, contains: "image must be 2-D (H, W), got shape (1, 3, 3)") {
            try correlate2d(Tensor<Float>(zeros: [1, 3, 3]), image)
        }
        assertThrowsKind(.value, contains: "kernel must be 2-D (kH, kW), got shape (3,)") {
            try correlate2d(image, Tensor<Float>(zeros: [3]))
        }
        assertThrowsKind(.value, contains: "image must have a size of at least 1x1") {
            try correlate2d(Tensor<Float>(zeros: [0, 3]), image, mode: .full)
        }
        assertThrowsKind(.value, contains: "kernel must have a size of at least 1x1") {
            try convolve2d(image, Tensor<Float>(zeros: [2, 0]), mode: .same)
        }
        assertThrowsKind(.value, contains: "out must not overlap image") { try correlate2d(image, image, mode: .same, into: image) }
        XCTAssertEqual(CorrelationMode(rawValue: "same"), .same)
        XCTAssertNil(CorrelationMode(rawValue: "circular"))
    }

    /// The clipped-range kernel against the per-element definition, every size combination.
    func testFastMatchesNaive() throws {
        for h in 1...5 {
            for w in 1...5 {
                for kh in 1...4 {
                    for kw in 1...4 {
                        for mode in CorrelationMode.allCases where mode != .valid || (kh <= h && kw <= w) {
                            for flip in [false, true] {
                                let g = try Correlation2DGeometry(op: "t", imageShape: [h, w], kernelShape: [kh, kw],
                                                                  mode: mode, flipKernel: flip)
                                let image = randomTensor([h, w], seed: UInt64(h * 7 + w), as: Double.self)
                                let kernel = randomTensor([kh, kw], seed: UInt64(kh * 5 + kw + 100), as: Double.self)
                                let fast = try Tensor<Double>(zeros: g.outputShape)
                                let naive = try Tensor<Double>(zeros: g.outputShape)
                                correlate2dForward(g, image: image.pointer, kernel: kernel.pointer, out: fast.pointer)
                                correlate2dForwardNaive(g, image: image.pointer, kernel: kernel.pointer, out: naive.pointer)
                                // Same taps summed in the same order: bit-identical.
                                XCTAssertEqual(fast.scalars, naive.scalars, "\(h)x\(w) * \(kh)x\(kw) \(mode) flip \(flip)")
                            }
                        }
                    }
                }
            }
        }
    }

    func testGradientsMatchFiniteDifferences() throws {
        for (kshape, mode) in [([2, 3], CorrelationMode.valid), ([2, 2], .same), ([3, 2], .same), ([3, 3], .full), ([4, 2], .full)] {
            for flip in [false, true] {
                let image = randomTensor([4, 5], seed: 11, as: Double.self)
                let kernel = randomTensor(kshape, seed: 12, as: Double.self)
                let f: (Tensor<Double>, Tensor<Double>) throws -> Tensor<Double> = {
                    flip ? try convolve2d($0, $1, mode: mode) : try correlate2d($0, $1, mode: mode)
                }
                let out = try f(image, kernel)
                let r = randomArray(out.count, seed: 13, as: Double.self)
                let gradOut = try Tensor(shape: out.shape, scalars: r)
                let (gi, gk) = flip ? try convolve2dBackward(gradOut: gradOut, image: image, kernel: kernel, mode: mode)
                                    : try correlate2dBackward(gradOut: gradOut, image: image, kernel: kernel, mode: mode)
                let ni = numericalGradient(of: { weightedSum(try! f($0, kernel), r) }, at: image)
                let nk = numericalGradient(of: { weightedSum(try! f(image, $0), r) }, at: kernel)
                assertRelativeError(gi.scalars, ni, 1e-7, "image \(kshape) \(mode) \(flip)")
                assertRelativeError(gk.scalars, nk, 1e-7, "kernel \(kshape) \(mode) \(flip)")
            }
        }
    }

    /// The lecture's identity: for one channel, stride 1, no padding, conv2d's input gradient is the
    /// full convolution of the upstream gradient with the filter, i.e. the full correlation with the
    /// filter rotated by 180 degrees.
    func testConvBackwardIsFullConvolutionWithFilter() throws {
        let x = randomTensor([1, 1, 6, 7], seed: 14, as: Double.self)
        let w = randomTensor([1, 1, 3, 2], seed: 15, as: Double.self)
        let y = try conv2d(x, weight: w)
        let gradOut = randomTensor(y.shape, seed: 16, as: Double.self)
        let (gradX, gradW, _) = try conv2dBackward(gradOut: gradOut, x: x, weight: w, stride: (1, 1), padding: (0, 0),
                                                   dilation: (1, 1))
        let g2 = try gradOut.reshaped([y.shape[2], y.shape[3]])
        let w2 = try w.reshaped([3, 2])
        assertRelativeError(gradX.scalars, try convolve2d(g2, w2, mode: .full).scalars, 1e-15)
        let rotated = try Tensor<Double>(shape: [3, 2], scalars: w2.scalars.reversed())
        assertRelativeError(gradX.scalars, try correlate2d(g2, rotated, mode: .full).scalars, 1e-15)
        // Forward is the valid correlation; the weight gradient the valid correlation of x with grad_out.
        let x2 = try x.reshaped([6, 7])
        assertRelativeError(y.scalars, try correlate2d(x2, w2).scalars, 1e-15)
        assertRelativeError(gradW.scalars, try correlate2d(x2, g2).scalars, 1e-15)
    }

    func testFloatMatchesDouble() throws {
        let image = randomTensor([9, 8], seed: 17, as: Double.self)
        let kernel = randomTensor([3, 4], seed: 18, as: Double.self)
        for mode in CorrelationMode.allCases {
            assertRelativeError(try convolve2d(converted(image, to: Float.self), converted(kernel, to: Float.self), mode: mode).scalars,
                                try convolve2d(image, kernel, mode: mode).scalars, 1e-5)
        }
    }
}

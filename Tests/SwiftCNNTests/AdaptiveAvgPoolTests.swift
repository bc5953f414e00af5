import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport

final class AdaptiveAvgPoolTests: XCTestCase {
    /// PyTorch's bins: H = 5 into 3 gives rows [0, 2), [1, 4), [3, 5) (overlapping by one).
    func testBins() {
        XCTAssertEqual((0..<3).map { adaptivePoolBin($0, outSize: 3, inSize: 5) }, [0..<2, 1..<4, 3..<5])
        XCTAssertEqual((0..<2).map { adaptivePoolBin($0, outSize: 2, inSize: 4) }, [0..<2, 2..<4])
        XCTAssertEqual((0..<1).map { adaptivePoolBin($0, outSize: 1, inSize: 7) }, [0..<7])
        // More outputs than inputs: bins repeat rows.
        XCTAssertEqual((0..<3).map { adaptivePoolBin($0, outSize: 3, inSize: 2) }, [0..<1, 0..<2, 1..<2])
    }

    /// torch float64 reference:
    ///     x = torch.arange(1, 36, dtype=torch.float64).reshape(1, 1, 5, 7); F.adaptive_avg_pool2d(x, (3, 4))
    ///     x = torch.arange(1, 7, dtype=torch.float64).reshape(1, 1, 2, 3);  F.adaptive_avg_pool2d(x, (3, 4))
    func testMatchesTorchSmallCases() throws {
        let a = try Tensor<Double>(shape: [1, 1, 5, 7], scalars: (1...35).map(Double.init))
        XCTAssertEqual(try adaptiveAvgPool2d(a, outputSize: (3, 4)).scalars,
                       [5.0, 6.5, 8.5, 10.0, 15.5, 17.0, 19.0, 20.5, 26.0, 27.5, 29.5, 31.0])
        let b = try Tensor<Double>(shape: [1, 1, 2, 3], scalars: (1...6).map(Double.init))
        XCTAssertEqual(try adaptiveAvgPool2d(b, outputSize: (3, 4)).scalars,
                       [1.0, 1.5, 2.5, 3.0, 2.5, 3.0, 4.0, 4.5, 4.0, 4.5, 5.5, 6.0])
    }

    /// The fast path against the naive loops (bins by floor/ceil at every output; the backward
    /// gathered instead of scattered), for even, uneven, global and upsampling sizes.
    func testMatchesNaive() throws {
        func check<T: CNNScalar>(_: T.Type, _ shape: [Int], _ out: (Int, Int), tolerance: Double) throws {
            let x = randomTensor(shape, seed: 1, as: T.self)
            let g = try AdaptivePool2DGeometry(op: "test", xShape: shape, outputSize: out)
            let y = try adaptiveAvgPool2d(x, outputSize: out)
            let yn = try Tensor<T>(zeros: g.outputShape)
            adaptiveAvgPool2dForwardNaive(g, x: x.pointer, y: yn.pointer)
            assertRelativeError(y.scalars, yn.scalars, tolerance, "\(T.self) \(shape) -> \(out)")
            let go = randomTensor(g.outputShape, seed: 2, as: T.self)
            let dx = try adaptiveAvgPool2dBackward(gradOut: go, x: x, outputSize: out)
            let dxn = try Tensor<T>(zeros: shape)
            adaptiveAvgPool2dBackwardNaive(g, gradOut: go.pointer, gradX: dxn.pointer)
            assertRelativeError(dx.scalars, dxn.scalars, tolerance, "backward \(T.self) \(shape) -> \(out)")
        }
        let cases: [([Int], (Int, Int))] = [([2, 3, 8, 8], (4, 4)), ([2, 3, 5, 7], (3, 4)), ([1, 2, 6, 6], (1, 1)),
                                            ([2, 2, 3, 2], (5, 7)), ([3, 1, 7, 5], (7, 5)), ([0, 2, 4, 4], (2, 2)),
                                            ([2, 4, 13, 11], (6, 3))]
        for (shape, out) in cases {
            try check(Double.self, shape, out, tolerance: 1e-14)
            try check(Float.self, shape, out, tolerance: 1e-6)
        }
    }

    func testBackwardMatchesFiniteDifferences() throws {
        for (shape, out) in [([2, 2, 5, 7], (3, 4)), ([1, 3, 3, 2], (4, 5)), ([2, 1, 6, 6], (1, 1))] {
            let x = randomTensor(shape, seed: 3, as: Double.self)
            let g = try AdaptivePool2DGeometry(op: "test", xShape: shape, outputSize: out)
            let r = randomArray(g.outputShape.reduce(1, *), seed: 4, as: Double.self)
            let numeric = numericalGradient(of: { weightedSum(try! adaptiveAvgPool2d($0, outputSize: out), r) }, at: x)
            let analytic = try adaptiveAvgPool2dBackward(gradOut: Tensor(shape: g.outputShape, scalars: r), x: x,
                                                         outputSize: out).scalars
            assertRelativeError(analytic, numeric, 1e-7, "\(shape) -> \(out)")
        }
    }

    func testFloatMatchesDouble() throws {
        let xd = randomTensor([4, 3, 11, 9], seed: 5, as: Double.self)
        let gd = randomTensor([4, 3, 4, 5], seed: 6, as: Double.self)
        assertRelativeError(try adaptiveAvgPool2d(converted(xd, to: Float.self), outputSize: (4, 5)).scalars,
                            try adaptiveAvgPool2d(xd, outputSize: (4, 5)).scalars, 1e-6)
        assertRelativeError(try adaptiveAvgPool2dBackward(gradOut: converted(gd, to: Float.self),
                                                          x: converted(xd, to: Float.self), outputSize: (4, 5)).scalars,
                            try adaptiveAvgPool2dBackward(gradOut: gd, x: xd, outputSize: (4, 5)).scalars, 1e-6)
    }

    func testArgumentErrors() throws {
        let x = try Tensor<Double>(zeros: [2, 3, 4, 4])
        assertThrowsKind(.value, contains: "adaptive_avg_pool2d: output_size must be >= 1, got (0, 2)") {
            try adaptiveAvgPool2d(x, outputSize: (0, 2))
        }
        assertThrowsKind(.value, contains: "adaptive_avg_pool2d: x must be 4-D (N, C, H, W), got shape (3, 4, 4)") {
            try adaptiveAvgPool2d(Tensor<Double>(zeros: [3, 4, 4]), outputSize: (2, 2))
        }
        assertThrowsKind(.value, contains: "x must have non-zero sizes after the batch dimension") {
            try adaptiveAvgPool2d(Tensor<Double>(zeros: [2, 3, 0, 4]), outputSize: (2, 2))
        }
        assertThrowsKind(.value, contains: "adaptive_avg_pool2d_backward: grad_out must have shape (2, 3, 2, 2), got (2, 3, 2, 3)") {
            try adaptiveAvgPool2dBackward(gradOut: Tensor<Double>(zeros: [2, 3, 2, 3]), x: x, outputSize: (2, 2))
        }
        assertThrowsKind(.value, contains: "out must not overlap x") {
            try adaptiveAvgPool2d(x, outputSize: (4, 4), into: x)
        }
        assertThrowsKind(.overflow) {
            try adaptiveAvgPool2d(x, outputSize: (Int.max / 2, 1))
        }
        assertThrowsKind(.value, contains: "AdaptiveAvgPool2d: outputSize must be >= 1, got (1, -1)") {
            try AdaptiveAvgPool2d<Float>(outputSize: (1, -1))
        }
    }

    func testLayer() throws {
        let layer = try AdaptiveAvgPool2d<Double>(outputSize: (2, 3))
        XCTAssertEqual(layer.description, "AdaptiveAvgPool2d(output_size=(2, 3))")
        XCTAssertEqual(try layer.outputShape(forInput: [4, 2, 5, 5]), [4, 2, 2, 3])
        assertThrowsKind(.runtime, contains: "backward called before forward") {
            try layer.backward(Tensor<Double>(zeros: [4, 2, 2, 3]))
        }
        let x = randomTensor([3, 2, 5, 7], seed: 7, as: Double.self)
        try assertLayerGradients(layer, input: x)
        XCTAssertEqual(layer.lastInputShape, [3, 2, 5, 7])
        XCTAssertEqual(try layer.forward(x).scalars, try adaptiveAvgPool2d(x, outputSize: (2, 3)).scalars)
        assertThrowsKind(.value, contains: "AdaptiveAvgPool2d.backward: grad_out must have shape (3, 2, 2, 3)") {
            try layer.backward(Tensor<Double>(zeros: [3, 2, 3, 2]))
        }
    }

    func testThreadCountDoesNotChangeResults() throws {
        let saved = Threading.numThreads
        defer { Threading.numThreads = saved }
        let x = randomTensor([16, 16, 20, 20], seed: 8, as: Float.self)
        let g = randomTensor([16, 16, 3, 3], seed: 9, as: Float.self)
        var results: [[[Float]]] = []
        for threads in [1, 2, 3] {
            Threading.numThreads = threads
            results.append([try adaptiveAvgPool2d(x, outputSize: (3, 3)).scalars,
                            try adaptiveAvgPool2dBackward(gradOut: g, x: x, outputSize: (3, 3)).scalars])
        }
        XCTAssertEqual(results[0], results[1])
        XCTAssertEqual(results[0], results[2])
    }
}

import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport

final class ActivationTests: XCTestCase {
    // MARK: sigmoid

    func testSigmoidValues() throws {
        func check<T: CNNScalar>(_: T.Type) throws {
            let x = try Tensor<T>(shape: [5], scalars: [0, 1, -1, 2.5, -30])
            let y = try sigmoid(x).scalars
            for (xi, yi) in zip(x.scalars, y) {
                let expected = 1 / (1 + Double.exp(-Double(xi)))
                XCTAssertEqual(Double(yi), expected, accuracy: expected * Double(T.ulpOfOne) * 4)
            }
            XCTAssertEqual(y[0], 0.5)
        }
        try check(Float.self)
        try check(Double.self)
    }

    /// No overflow for large |x|: e^-|x| never exceeds 1, so nothing is inf/inf or 0/0.
    func testSigmoidStableForLargeInputs() throws {
        func check<T: CNNScalar>(_: T.Type) throws {
            let x = try Tensor<T>(shape: [6], scalars: [1e4, -1e4, 100, -100, 88.7, -88.7])
            let y = try sigmoid(x).scalars
            XCTAssertEqual(y[0], 1)
            XCTAssertEqual(y[1], 0)
            XCTAssertEqual(y[2], 1)
            XCTAssertTrue(y.allSatisfy { $0.isFinite && $0 >= 0 && $0 <= 1 })
            // For very negative x, sigma(x) ~ e^x keeps its relative precision.
            XCTAssertEqual(Double(y[5]), Double.exp(-88.7), accuracy: Double.exp(-88.7) * 1e-5)
        }
        try check(Float.self)
        try check(Double.self)
        // A NaN stays NaN.
        XCTAssertTrue(try sigmoid(Tensor<Double>(shape: [1], scalars: [.nan])).scalars[0].isNaN)
    }

    /// The lecture's identity sigma'(x) = sigma(x) (1 - sigma(x)), against finite differences.
    func testSigmoidDerivativeIsYTimesOneMinusY() throws {
        let x = randomTensor([64], seed: 1, -6, 6, as: Double.self)
        let y = try sigmoid(x)
        let ones = try Tensor<Double>(shape: [64], scalars: Array(repeating: 1, count: 64))
        let analytic = try sigmoidBackward(gradOut: ones, y: y).scalars
        for i in 0..<64 {
            XCTAssertEqual(analytic[i], y[flat: i] * (1 - y[flat: i]))
        }
        let r = randomArray(64, seed: 2, as: Double.self)
        let numeric = numericalGradient(of: { weightedSum(try! sigmoid($0), r) }, at: x)
        let backward = try sigmoidBackward(gradOut: Tensor(shape: [64], scalars: r), y: y).scalars
        assertRelativeError(backward, numeric, 1e-7)
    }

    func testSigmoidInPlaceAndOverlap() throws {
        let x = randomTensor([2, 3], seed: 3, as: Double.self)
        let expected = try sigmoid(x).scalars
        let same = try sigmoid(x, into: x)
        XCTAssertEqual(same.pointer, x.pointer)
        XCTAssertEqual(x.scalars, expected)
        // Partial overlap is refused.
        let big = try Tensor<Double>(zeros: [7])
        let a = try Tensor(borrowing: big.pointer, shape: [6])
        let b = try Tensor(borrowing: big.pointer + 1, shape: [6])
        assertThrowsKind(.value, contains: "out must not overlap x") { try sigmoid(a, into: b) }
        assertThrowsKind(.value, contains: "out must have shape (6,)") { try sigmoid(a, into: Tensor<Double>(zeros: [5])) }
    }

    func testSigmoidBackwardShapeMismatch() throws {
        assertThrowsKind(.value, contains: "grad_out must have the shape of y (2, 3), got (3, 2)") {
            try sigmoidBackward(gradOut: Tensor<Float>(zeros: [3, 2]), y: Tensor<Float>(zeros: [2, 3]))
        }
    }

    // MARK: ReLU

    func testReLUForwardBackward() throws {
        let x = try Tensor<Double>(shape: [6], scalars: [-2, -0.5, 0, 0.5, 3, .nan])
        let y = try relu(x).scalars
        XCTAssertEqual(Array(y[0..<5]), [0, 0, 0, 0.5, 3])
        XCTAssertTrue(y[5].isNaN)
        let g = try Tensor<Double>(shape: [6], scalars: [1, 2, 3, 4, 5, 6])
        // The gradient passes where x > 0; at the kink x = 0 the subgradient 0 (PyTorch's).
        XCTAssertEqual(try reluBackward(gradOut: g, x: x).scalars, [0, 0, 0, 4, 5, 0])
    }

    func testReLUGradientMatchesFiniteDifferences() throws {
        let x = distinctRandomTensor([40], seed: 4, spacing: 0.05, as: Double.self)  // |x| >= 0.025: no kink
        let r = randomArray(40, seed: 5, as: Double.self)
        let numeric = numericalGradient(of: { weightedSum(try! relu($0), r) }, at: x)
        let analytic = try reluBackward(gradOut: Tensor(shape: [40], scalars: r), x: x).scalars
        assertRelativeError(analytic, numeric, 1e-7)
    }

    func testFloatMatchesDouble() throws {
        let xd = randomTensor([100], seed: 6, -8, 8, as: Double.self)
        let xf = converted(xd, to: Float.self)
        assertRelativeError(try sigmoid(xf).scalars, try sigmoid(xd).scalars, 1e-6)
        assertRelativeError(try relu(xf).scalars, try relu(xd).scalars, 1e-6)
        let gd = randomTensor([100], seed: 7, as: Double.self)
        let gf = converted(gd, to: Float.self)
        assertRelativeError(try sigmoidBackward(gradOut: gf, y: sigmoid(xf)).scalars,
                            try sigmoidBackward(gradOut: gd, y: sigmoid(xd)).scalars, 1e-5)
    }

    /// Big tensors are split over threads; every element is computed the same way, so the result is
    /// bit-identical for any thread count.
    func testThreadCountDoesNotChangeResults() throws {
        let saved = Threading.numThreads
        defer { Threading.numThreads = saved }
        let x = randomTensor([300_001], seed: 10, -10, 10, as: Float.self)
        let g = randomTensor([300_001], seed: 11, as: Float.self)
        var results: [[[Float]]] = []
        for threads in [1, 2, 3] {
            Threading.numThreads = threads
            let y = try sigmoid(x)
            results.append([y.scalars, try sigmoidBackward(gradOut: g, y: y).scalars,
                            try relu(x).scalars, try reluBackward(gradOut: g, x: x).scalars])
        }
        XCTAssertEqual(results[0], results[1])
        XCTAssertEqual(results[0], results[2])
        XCTAssertEqual(results[0][0][12345], stableSigmoid(x[flat: 12345]))
    }

    /// The gradient may be written over grad_out (exact aliasing).
    func testBackwardInPlace() throws {
        let y = randomTensor([10], seed: 8, 0, 1, as: Float.self)
        let g = randomTensor([10], seed: 9, as: Float.self)
        let expected = try sigmoidBackward(gradOut: g, y: y).scalars
        _ = try sigmoidBackward(gradOut: g, y: y, into: g)
        XCTAssertEqual(g.scalars, expected)
    }
}

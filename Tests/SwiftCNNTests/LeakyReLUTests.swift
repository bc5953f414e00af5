import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport

final class LeakyReLUTests: XCTestCase {
    func testValuesAndKink() throws {
        func check<T: CNNScalar>(_: T.Type) throws {
            let x = try Tensor<T>(shape: [6], scalars: [-2, -0.5, 0, 0.5, 3, .nan])
            let y = try leakyRelu(x, negativeSlope: 0.125).scalars
            XCTAssertEqual(Array(y[0..<5]), [-0.25, -0.0625, 0, 0.5, 3])
            XCTAssertTrue(y[5].isNaN)
            let g = try Tensor<T>(shape: [6], scalars: [1, 2, 3, 4, 5, 6])
            // Slope where x <= 0 (the kink x = 0 included, as PyTorch) and for NaN; 1 where x > 0.
            XCTAssertEqual(try leakyReluBackward(gradOut: g, x: x, negativeSlope: 0.125).scalars,
                           [0.125, 0.25, 0.375, 4, 5, 0.75])
            // Default slope 0.01.
            XCTAssertEqual(try leakyRelu(Tensor<T>(shape: [1], scalars: [-1])).scalars, [T(-0.01)])
        }
        try check(Float.self)
        try check(Double.self)
    }

    /// Non-finite slopes are accepted and enter the arithmetic, as in PyTorch:
    /// F.leaky_relu(tensor([-1., 0., 2.]), inf) == [-inf, nan, 2.], with nan: [nan, nan, 2.].
    func testNonFiniteSlopesFollowPyTorch() throws {
        let x = try Tensor<Double>(shape: [3], scalars: [-1, 0, 2])
        let yInf = try leakyRelu(x, negativeSlope: .infinity).scalars
        XCTAssertEqual(yInf[0], -.infinity)
        XCTAssertTrue(yInf[1].isNaN)
        XCTAssertEqual(yInf[2], 2)
        let yNaN = try leakyRelu(x, negativeSlope: .nan).scalars
        XCTAssertTrue(yNaN[0].isNaN && yNaN[1].isNaN)
        XCTAssertEqual(yNaN[2], 2)
        // A slope beyond Float's range becomes inf in Float, as PyTorch's to<float>().
        XCTAssertEqual(try leakyRelu(Tensor<Float>(shape: [1], scalars: [-1]), negativeSlope: 1e300).scalars, [-.infinity])
    }

    func testBackwardMatchesFiniteDifferences() throws {
        for slope in [0.01, 0.3, -0.7, 2.5] {
            let x = distinctRandomTensor([5, 8], seed: 1, spacing: 0.05, as: Double.self)   // |x| >= 0.025
            let r = randomArray(x.count, seed: 2, as: Double.self)
            let numeric = numericalGradient(of: { weightedSum(try! leakyRelu($0, negativeSlope: slope), r) }, at: x)
            let analytic = try leakyReluBackward(gradOut: Tensor(shape: x.shape, scalars: r), x: x,
                                                 negativeSlope: slope).scalars
            assertRelativeError(analytic, numeric, 1e-7, "slope \(slope)")
        }
    }

    func testFloatMatchesDouble() throws {
        let xd = randomTensor([300], seed: 3, -4, 4, as: Double.self)
        let gd = randomTensor([300], seed: 4, as: Double.self)
        let xf = converted(xd, to: Float.self), gf = converted(gd, to: Float.self)
        assertRelativeError(try leakyRelu(xf, negativeSlope: 0.2).scalars, try leakyRelu(xd, negativeSlope: 0.2).scalars, 1e-6)
        assertRelativeError(try leakyReluBackward(gradOut: gf, x: xf, negativeSlope: 0.2).scalars,
                            try leakyReluBackward(gradOut: gd, x: xd, negativeSlope: 0.2).scalars, 1e-6)
    }

    func testInPlaceAndArgumentErrors() throws {
        let x = randomTensor([4, 2], seed: 5, as: Double.self)
        let expected = try leakyRelu(x, negativeSlope: 0.1).scalars
        XCTAssertEqual(try leakyRelu(x, negativeSlope: 0.1, into: x).pointer, x.pointer)
        XCTAssertEqual(x.scalars, expected)
        assertThrowsKind(.value, contains: "leaky_relu_backward: grad_out must have the shape of x (4, 2), got (8,)") {
            try leakyReluBackward(gradOut: Tensor<Double>(zeros: [8]), x: x)
        }
        assertThrowsKind(.value, contains: "leaky_relu: out must have shape (4, 2)") {
            try leakyRelu(x, into: Tensor<Double>(zeros: [2, 4]))
        }
    }

    func testLayer() throws {
        let layer = LeakyReLU<Double>(negativeSlope: 0.2)
        XCTAssertEqual(layer.description, "LeakyReLU(negative_slope=0.2)")
        XCTAssertEqual(LeakyReLU<Float>().negativeSlope, 0.01)
        assertThrowsKind(.runtime, contains: "backward called before forward") {
            try layer.backward(Tensor<Double>(zeros: [2]))
        }
        try assertLayerGradients(layer, input: distinctRandomTensor([3, 2, 5], seed: 6, spacing: 0.05, as: Double.self))
        let x = randomTensor([12], seed: 7, as: Double.self)
        XCTAssertEqual(try layer.forward(x).scalars, try leakyRelu(x, negativeSlope: 0.2).scalars)
        XCTAssertEqual(layer.lastInputShape, [12])
    }
}

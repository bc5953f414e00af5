import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport

final class TanhTests: XCTestCase {
    func testValuesSaturationAndNaN() throws {
        func check<T: CNNScalar>(_: T.Type) throws {
            let x = try Tensor<T>(shape: [7], scalars: [0, 0.5, -0.5, 3, -3, 1e4, -1e4])
            let y = try tanh(x).scalars
            for (xi, yi) in zip(x.scalars, y) {
                let expected = Glibc.tanh(Double(xi))
                XCTAssertEqual(Double(yi), expected, accuracy: 4 * Double(T.ulpOfOne))
            }
            XCTAssertEqual(y[0], 0)
            XCTAssertEqual(y[5], 1)
            XCTAssertEqual(y[6], -1)
            XCTAssertTrue(try tanh(Tensor<T>(shape: [1], scalars: [.nan])).scalars[0].isNaN)
        }
        try check(Float.self)
        try check(Double.self)
    }

    /// tanh'(x) = 1 - tanh(x)^2, from the output, against central differences.
    func testBackwardMatchesFiniteDifferences() throws {
        let x = randomTensor([3, 5, 4], seed: 1, -3, 3, as: Double.self)
        let r = randomArray(x.count, seed: 2, as: Double.self)
        let numeric = numericalGradient(of: { weightedSum(try! tanh($0), r) }, at: x)
        let analytic = try tanhBackward(gradOut: Tensor(shape: x.shape, scalars: r), y: tanh(x)).scalars
        assertRelativeError(analytic, numeric, 1e-7)
    }

    func testFloatMatchesDouble() throws {
        let xd = randomTensor([200], seed: 3, -5, 5, as: Double.self)
        let gd = randomTensor([200], seed: 4, as: Double.self)
        let xf = converted(xd, to: Float.self), gf = converted(gd, to: Float.self)
        assertRelativeError(try tanh(xf).scalars, try tanh(xd).scalars, 1e-6)
        assertRelativeError(try tanhBackward(gradOut: gf, y: tanh(xf)).scalars,
                            try tanhBackward(gradOut: gd, y: tanh(xd)).scalars, 1e-5)
    }

    func testInPlaceAndArgumentErrors() throws {
        let x = randomTensor([2, 3], seed: 5, as: Double.self)
        let expected = try tanh(x).scalars
        let same = try tanh(x, into: x)
        XCTAssertEqual(same.pointer, x.pointer)
        XCTAssertEqual(x.scalars, expected)
        let g = randomTensor([2, 3], seed: 6, as: Double.self)
        let expectedGrad = try tanhBackward(gradOut: g, y: x).scalars
        XCTAssertEqual(try tanhBackward(gradOut: g, y: x, into: g).scalars, expectedGrad)
        assertThrowsKind(.value, contains: "tanh_backward: grad_out must have the shape of y (2, 3), got (3, 2)") {
            try tanhBackward(gradOut: Tensor<Double>(zeros: [3, 2]), y: x)
        }
        assertThrowsKind(.value, contains: "tanh: out must have shape (2, 3)") {
            try tanh(x, into: Tensor<Double>(zeros: [6]))
        }
        let big = try Tensor<Double>(zeros: [7])
        assertThrowsKind(.value, contains: "out must not overlap x") {
            try tanh(Tensor(borrowing: big.pointer, shape: [6]), into: Tensor(borrowing: big.pointer + 1, shape: [6]))
        }
    }

    func testLayer() throws {
        let layer = Tanh<Double>()
        XCTAssertEqual(layer.description, "Tanh()")
        assertThrowsKind(.runtime, contains: "backward called before forward") {
            try layer.backward(Tensor<Double>(zeros: [2]))
        }
        try assertLayerGradients(layer, input: randomTensor([4, 3, 2], seed: 7, -2, 2, as: Double.self))
        XCTAssertEqual(layer.lastInputShape, [4, 3, 2])
        assertThrowsKind(.value, contains: "Tanh.backward: grad_out must have shape (4, 3, 2)") {
            try layer.backward(Tensor<Double>(zeros: [4, 3]))
        }
        // The layer's output is the functional op's.
        let x = randomTensor([10], seed: 8, as: Double.self)
        XCTAssertEqual(try layer.forward(x).scalars, try tanh(x).scalars)
        // Feeding the layer its own output does not overwrite the input being read.
        let y1 = try layer.forward(x)
        let expected = try tanh(y1.copy()).scalars
        XCTAssertEqual(try layer.forward(y1).scalars, expected)
    }
}

import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport

final class LinearTests: XCTestCase {
    func testSmallExampleByHand() throws {
        // y = x W^T + b: [1 2 3] . [1 0 -1] + 0.5 = -1.5; [1 2 3] . [2 1 0] - 1 = 3
        let x = try Tensor<Double>(shape: [1, 3], scalars: [1, 2, 3])
        let w = try Tensor<Double>(shape: [2, 3], scalars: [1, 0, -1, 2, 1, 0])
        let b = try Tensor<Double>(shape: [2], scalars: [0.5, -1])
        XCTAssertEqual(try linear(x, weight: w, bias: b).scalars, [-1.5, 3])
        XCTAssertEqual(try linear(x, weight: w).scalars, [-2, 4])
        let g = try Tensor<Double>(shape: [1, 2], scalars: [1, -1])
        let (gx, gw, gb) = try linearBackward(gradOut: g, x: x, weight: w)
        XCTAssertEqual(gx.scalars, [-1, -1, -1])     // g W = [1-2, 0-1, -1-0]
        XCTAssertEqual(gw.scalars, [1, 2, 3, -1, -2, -3])  // g^T x
        XCTAssertEqual(gb.scalars, [1, -1])
    }

    func testFastMatchesNaive() throws {
        func check<T: CNNScalar>(_: T.Type, tolerance: Double) throws {
            for (n, i, o) in [(1, 1, 1), (7, 13, 5), (33, 65, 17), (40, 150, 70)] {
                let x = randomTensor([n, i], seed: 1, as: T.self)
                let w = randomTensor([o, i], seed: 2, as: T.self)
                let b = randomTensor([o], seed: 3, as: T.self)
                let g = randomTensor([n, o], seed: 4, as: T.self)
                let y = try Tensor<T>(zeros: [n, o]), yn = try Tensor<T>(zeros: [n, o])
                linearForward(batch: n, inFeatures: i, outFeatures: o, x: x.pointer, weight: w.pointer, bias: b.pointer, y: y.pointer)
                linearForwardNaive(batch: n, inFeatures: i, outFeatures: o, x: x.pointer, weight: w.pointer, bias: b.pointer, y: yn.pointer)
                assertRelativeError(y.scalars, yn.scalars, tolerance, "forward \(n)x\(i)x\(o)")
                // accumulate: start both from the same non-zero grads.
                let gw0 = randomTensor([o, i], seed: 5, as: T.self), gb0 = randomTensor([o], seed: 6, as: T.self)
                for accumulate in [false, true] {
                    let (gx, gw, gb) = (try Tensor<T>(zeros: [n, i]), try gw0.copy(), try gb0.copy())
                    let (gxn, gwn, gbn) = (try Tensor<T>(zeros: [n, i]), try gw0.copy(), try gb0.copy())
                    linearBackward(batch: n, inFeatures: i, outFeatures: o, gradOut: g.pointer, x: x.pointer, weight: w.pointer,
                                   gradX: gx.pointer, gradWeight: gw.pointer, gradBias: gb.pointer, accumulate: accumulate)
                    linearBackwardNaive(batch: n, inFeatures: i, outFeatures: o, gradOut: g.pointer, x: x.pointer, weight: w.pointer,
                                        gradX: gxn.pointer, gradWeight: gwn.pointer, gradBias: gbn.pointer, accumulate: accumulate)
                    assertRelativeError(gx.scalars, gxn.scalars, tolerance, "gradX")
                    assertRelativeError(gw.scalars, gwn.scalars, tolerance, "gradWeight")
                    assertRelativeError(gb.scalars, gbn.scalars, tolerance, "gradBias")
                }
            }
        }
        try check(Double.self, tolerance: 1e-13)
        try check(Float.self, tolerance: 1e-5)
    }

    func testGradientsMatchFiniteDifferences() throws {
        let x = randomTensor([4, 6], seed: 7, as: Double.self)
        let w = randomTensor([3, 6], seed: 8, as: Double.self)
        let b = randomTensor([3], seed: 9, as: Double.self)
        let r = randomArray(12, seed: 10, as: Double.self)
        let loss: (Tensor<Double>) -> Double = { _ in weightedSum(try! linear(x, weight: w, bias: b), r) }
        let (gx, gw, gb) = try linearBackward(gradOut: Tensor(shape: [4, 3], scalars: r), x: x, weight: w)
        assertRelativeError(gx.scalars, numericalGradient(of: loss, at: x), 1e-7)
        assertRelativeError(gw.scalars, numericalGradient(of: loss, at: w), 1e-7)
        assertRelativeError(gb.scalars, numericalGradient(of: loss, at: b), 1e-7)
    }

    func testEmptyBatch() throws {
        let w = randomTensor([3, 4], seed: 11, as: Float.self)
        let y = try linear(Tensor<Float>(zeros: [0, 4]), weight: w, bias: Tensor<Float>(zeros: [3]))
        XCTAssertEqual(y.shape, [0, 3])
        let (gx, gw, gb) = try linearBackward(gradOut: Tensor<Float>(zeros: [0, 3]), x: Tensor<Float>(zeros: [0, 4]), weight: w)
        XCTAssertEqual(gx.shape, [0, 4])
        XCTAssertEqual(gw.scalars, Array(repeating: 0, count: 12))
        XCTAssertEqual(gb.scalars, [0, 0, 0])
    }

    func testValidationMessages() throws {
        let x = try Tensor<Float>(zeros: [4, 5])
        assertThrowsKind(.value, contains: "linear: x must be 2-D (N, in_features), got shape (5,)") {
            try linear(Tensor<Float>(zeros: [5]), weight: Tensor<Float>(zeros: [3, 5]))
        }
        assertThrowsKind(.value, contains: "linear: weight must have 5 input features to match x (4, 5), got shape (3, 4)") {
            try linear(x, weight: Tensor<Float>(zeros: [3, 4]))
        }
        assertThrowsKind(.value, contains: "linear: bias must have shape (3,) to match weight (3, 5), got shape (4,)") {
            try linear(x, weight: Tensor<Float>(zeros: [3, 5]), bias: Tensor<Float>(zeros: [4]))
        }
        assertThrowsKind(.value, contains: "x must have at least one feature") {
            try linear(Tensor<Float>(zeros: [4, 0]), weight: Tensor<Float>(zeros: [3, 0]))
        }
        assertThrowsKind(.value, contains: "at least one output feature") {
            try linear(x, weight: Tensor<Float>(zeros: [0, 5]))
        }
        assertThrowsKind(.value, contains: "linear_backward: grad_out must have shape (4, 3), got (4, 2)") {
            try linearBackward(gradOut: Tensor<Float>(zeros: [4, 2]), x: x, weight: Tensor<Float>(zeros: [3, 5]))
        }
        assertThrowsKind(.value, contains: "linear: out must not overlap x") {
            try linear(x, weight: Tensor<Float>(zeros: [5, 5]), into: x)
        }
        assertThrowsKind(.value, contains: "linear: out must have shape (4, 3), got (3, 4)") {
            try linear(x, weight: Tensor<Float>(zeros: [3, 5]), into: Tensor<Float>(zeros: [3, 4]))
        }
    }

    func testFloatMatchesDouble() throws {
        let x = randomTensor([16, 50], seed: 12, as: Double.self)
        let w = randomTensor([20, 50], seed: 13, as: Double.self)
        let b = randomTensor([20], seed: 14, as: Double.self)
        let yd = try linear(x, weight: w, bias: b)
        let yf = try linear(converted(x, to: Float.self), weight: converted(w, to: Float.self), bias: converted(b, to: Float.self))
        assertRelativeError(yf.scalars, yd.scalars, 1e-5)
    }
}

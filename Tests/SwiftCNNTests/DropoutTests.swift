import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport

final class DropoutTests: XCTestCase {
    func testProbabilityValidation() throws {
        for p in [-0.1, 1.0000001, .nan, .infinity, -.infinity] {
            assertThrowsKind(.value, contains: "Dropout: p (the dropout probability) must be in [0, 1]") {
                try Dropout<Float>(p: p, seed: 1)
            }
            var generator = RandomGenerator(seed: 1)
            let before = generator
            assertThrowsKind(.value, contains: "dropout: p (the dropout probability) must be in [0, 1]") {
                try dropout(Tensor<Double>(zeros: [3]), p: p, generator: &generator)
            }
            XCTAssertEqual(generator.nextUInt64(), { var b = before; return b.nextUInt64() }())   // nothing drawn
        }
        XCTAssertNoThrow(try Dropout<Float>(p: 0, seed: 1))
        XCTAssertNoThrow(try Dropout<Float>(p: 1, seed: 1))
        XCTAssertEqual(try Dropout<Double>(seed: 1).p, 0.5)
        XCTAssertEqual(try Dropout<Double>(p: 0.25, seed: 1).description, "Dropout(p=0.25, inplace=False)")
    }

    /// For a large tensor the fraction zeroed is p within a few standard deviations
    /// (sqrt(p (1-p) / n) ~ 0.0015 for n = 10^5), and every kept element is x / (1 - p).
    func testStatisticsAndScale() throws {
        let n = 100_000
        let x = randomTensor([n], seed: 1, 0.5, 1.5, as: Double.self)   // no zeros in x
        for p in [0.1, 0.3, 0.5, 0.9] {
            var generator = RandomGenerator(seed: 7)
            let (y, mask) = try dropout(x, p: p, generator: &generator)
            let zeros = y.scalars.filter { $0 == 0 }.count
            XCTAssertEqual(Double(zeros) / Double(n), p, accuracy: 0.01, "p \(p)")
            let scale = 1 / (1 - p)
            for i in 0..<n {
                XCTAssertTrue(mask[flat: i] == 0 || mask[flat: i] == scale)
                XCTAssertEqual(y[flat: i], x[flat: i] * mask[flat: i])
                if y[flat: i] != 0 { XCTAssertEqual(y[flat: i], x[flat: i] * scale) }
            }
            // E[y] = x: the mean of y / x is 1 within a few standard deviations.
            let ratio = (0..<n).map { y[flat: $0] / x[flat: $0] }.reduce(0, +) / Double(n)
            XCTAssertEqual(ratio, 1, accuracy: 6 * (p / (1 - p) / Double(n)).squareRoot(), "p \(p)")
        }
        // Float masks hold 1 / Float(1 - p), as PyTorch's div_ on a float tensor.
        var generator = RandomGenerator(seed: 7)
        let mask: Tensor<Float> = try dropoutMask(shape: [1000], p: 0.3, generator: &generator)
        XCTAssertTrue(mask.scalars.allSatisfy { $0 == 0 || $0 == 1 / Float(0.7) })
    }

    func testSameSeedSameMaskAndFreshMasksPerForward() throws {
        let x = randomTensor([64, 32], seed: 2, 1, 2, as: Double.self)
        let a = try Dropout<Double>(p: 0.4, seed: 123), b = try Dropout<Double>(p: 0.4, seed: 123)
        let a1 = try a.forward(x).scalars, b1 = try b.forward(x).scalars
        XCTAssertEqual(a1, b1)
        let a2 = try a.forward(x).scalars
        XCTAssertNotEqual(a1, a2)   // a fresh mask each forward
        XCTAssertNotEqual(try Dropout<Double>(p: 0.4, seed: 124).forward(x).scalars, a1)
        // reseed restarts the stream.
        try a.reseed(123)
        XCTAssertEqual(try a.forward(x).scalars, a1)
        // The mask positions do not depend on the scalar type (draws are in Double).
        let f = try Dropout<Float>(p: 0.4, seed: 123)
        let yf = try f.forward(converted(x, to: Float.self)).scalars
        XCTAssertEqual(yf.map { $0 == 0 }, a1.map { $0 == 0 })
        assertRelativeError(yf, a1, 1e-7)
    }

    /// Backward applies the forward's mask: zero exactly where the forward dropped, 1/(1-p) elsewhere.
    func testBackwardUsesTheForwardMask() throws {
        let layer = try Dropout<Double>(p: 0.5, seed: 9)
        let x = randomTensor([10, 20], seed: 3, 1, 2, as: Double.self)
        let y = try layer.forward(x).scalars
        let g = randomTensor([10, 20], seed: 4, 1, 2, as: Double.self)
        let dx = try layer.backward(g).scalars
        for i in 0..<y.count {
            XCTAssertEqual(dx[i], y[i] == 0 ? 0 : g[flat: i] * 2)
        }
        // A second backward reuses the same mask (no new draw).
        XCTAssertEqual(try layer.backward(g).scalars, dx)
        // The functional pair: dropout_backward(g, mask) = g * mask, and (x -> x * mask) is linear,
        // so its gradient matches central differences exactly.
        var generator = RandomGenerator(seed: 5)
        let (_, mask) = try dropout(x, p: 0.3, generator: &generator)
        let r = randomArray(x.count, seed: 6, as: Double.self)
        let numeric = numericalGradient(of: { weightedSum(try! dropout($0, mask: mask), r) }, at: x)
        let analytic = try dropoutBackward(gradOut: Tensor(shape: x.shape, scalars: r), mask: mask).scalars
        assertRelativeError(analytic, numeric, 1e-7)
        assertThrowsKind(.value, contains: "dropout_backward: grad_out must have the shape of mask (10, 20), got (20, 10)") {
            try dropoutBackward(gradOut: Tensor<Double>(zeros: [20, 10]), mask: mask)
        }
        assertThrowsKind(.value, contains: "Dropout.backward: grad_out must have shape (10, 20)") {
            try layer.backward(Tensor<Double>(zeros: [200]))
        }
    }

    func testEvalModeAndEdgeProbabilities() throws {
        let x = randomTensor([4, 5], seed: 7, as: Double.self)
        let g = randomTensor([4, 5], seed: 8, as: Double.self)
        let layer = try Dropout<Double>(p: 0.5, seed: 1)
        assertThrowsKind(.runtime, contains: "Dropout: backward called before forward") { try layer.backward(g) }
        layer.setTraining(false)
        XCTAssertFalse(layer.isTraining)
        // Eval: the identity, the input itself (forwardView; forward copies it), and its backward is
        // grad_out itself.
        let y = try layer.forwardView(x)
        XCTAssertEqual(y.pointer, x.pointer)
        XCTAssertNotEqual(try layer.forward(x).pointer, x.pointer)
        XCTAssertEqual(try layer.backward(g).pointer, g.pointer)
        XCTAssertEqual(layer.lastInputShape, [4, 5])
        layer.setTraining(true)
        XCTAssertTrue(layer.isTraining)
        XCTAssertNotEqual(try layer.forward(x).scalars, x.scalars)
        // p = 0: identity; p = 1: zeros (NaN * 0 stays NaN, as PyTorch), and a zero gradient.
        XCTAssertEqual(try Dropout<Double>(p: 0, seed: 1).forwardView(x).pointer, x.pointer)
        let all = try Dropout<Double>(p: 1, seed: 1)
        XCTAssertEqual(try all.forward(x).scalars, [Double](repeating: 0, count: 20))
        XCTAssertEqual(try all.backward(g).scalars, [Double](repeating: 0, count: 20))
        let withNaN = try all.forward(Tensor<Double>(shape: [2], scalars: [.nan, 1])).scalars
        XCTAssertTrue(withNaN[0].isNaN)
        XCTAssertEqual(withNaN[1], 0)
        var generator = RandomGenerator(seed: 3)
        XCTAssertEqual(try dropoutMask(shape: [5], p: 1, generator: &generator, as: Float.self).scalars, [0, 0, 0, 0, 0])
        XCTAssertEqual(try dropoutMask(shape: [5], p: 0, generator: &generator, as: Float.self).scalars, [1, 1, 1, 1, 1])
        // Gradients of the layer in eval mode (the identity) against finite differences.
        layer.setTraining(false)
        try assertLayerGradients(layer, input: x)
    }

    func testInPlaceFunctional() throws {
        let x = randomTensor([50], seed: 10, 1, 2, as: Double.self)
        let copy = try x.copy()
        var generator = RandomGenerator(seed: 11)
        let (y, mask) = try dropout(x, p: 0.5, generator: &generator, into: x)
        XCTAssertEqual(y.pointer, x.pointer)
        XCTAssertEqual(y.scalars, (0..<50).map { copy[flat: $0] * mask[flat: $0] })
        assertThrowsKind(.value, contains: "dropout: mask must have the shape of x (50,), got (5,)") {
            try dropout(x, mask: Tensor<Double>(zeros: [5]))
        }
    }
}

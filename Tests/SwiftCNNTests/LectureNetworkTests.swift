import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport

/// The lecture's network end to end: LeNet-5 with sigmoids on (N, 1, 28, 28), Flatten included.
final class LectureNetworkTests: XCTestCase {
    /// A fixed batch: class k is a bright horizontal bar at rows 2k+4...2k+5 on uniform noise.
    func batch<T: CNNScalar>(_ n: Int, as: T.Type = T.self) -> (x: Tensor<T>, labels: [Int64]) {
        let x = randomTensor([n, 1, 28, 28], seed: 100, -0.5, 0.5, as: T.self)
        let labels = (0..<n).map { Int64($0 % 10) }
        for (i, label) in labels.enumerated() {
            for row in (2 * Int(label) + 4)...(2 * Int(label) + 5) {
                for col in 4..<24 { x[flat: i * 784 + row * 28 + col] += 2 }
            }
        }
        return (x, labels)
    }

    func testShapesAndParameters() throws {
        let model = try lectureNetwork(Float.self)
        XCTAssertEqual(try model.outputShape(forInput: [5, 1, 28, 28]), [5, 10])
        XCTAssertEqual(model.parameters.map(\.name),
                       ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias", "9.weight", "9.bias",
                        "11.weight", "11.bias"])
        // 156 + 2416 + 48120 + 10164 + 850 parameters, as LeNet-5.
        XCTAssertEqual(model.parameters.reduce(0) { $0 + $1.data.count }, 61706)
        XCTAssertEqual(try model.forward(Tensor<Float>(zeros: [0, 1, 28, 28])).shape, [0, 10])
    }

    /// The canonical training step, repeated on one batch: the loss falls.
    func testLossFallsOverSGDSteps() throws {
        for relu in [false, true] {
            let model = try lectureNetwork(Float.self, relu: relu)
            let (x, labels) = batch(4, as: Float.self)
            let optimizer = try SGD(parameters: model.parameters, learningRate: relu ? 0.05 : 0.2)
            var losses: [Float] = []
            for _ in 0..<5 {
                try optimizer.zeroGrad()
                let (loss, g) = try softmaxCrossEntropy(logits: model.forward(x), labels: labels)
                _ = try model.backward(g)
                try optimizer.step()
                losses.append(loss)
            }
            XCTAssertTrue(losses.allSatisfy { $0.isFinite })
            for t in 1..<losses.count {
                XCTAssertLessThan(losses[t], losses[t - 1], "relu \(relu): \(losses)")
            }
        }
    }

    /// Every analytic gradient of the whole network (input and each parameter, through Flatten)
    /// against central finite differences of sum(model(x) * R), in Double.
    ///
    /// Through four sigmoids and two poolings the input gradients are ~1e-4 of the loss, so the
    /// differences' rounding noise (~1e-16 |L| / eps) needs eps ~1e-4 to stay below 1e-7 of them;
    /// still small enough not to cross a max-pool switch here. Each tensor is checked at its 4
    /// largest gradients and 4 random positions (the full check would take minutes in debug builds).
    func testWholeNetworkGradientsMatchFiniteDifferences() throws {
        let model = try lectureNetwork(Double.self)
        let (x, _) = batch(2, as: Double.self)
        try assertLayerGradients(model, input: x, eps: 1e-4, sample: 4)
    }

    /// Float training computes what Double computes, to Float precision.
    func testFloatMatchesDouble() throws {
        let md = try lectureNetwork(Double.self)
        let mf = try lectureNetwork(Float.self)
        copyParameters(from: md, to: mf)
        let (xd, labels) = batch(4, as: Double.self)
        let (ld, gd) = try softmaxCrossEntropy(logits: md.forward(xd), labels: labels)
        let (lf, gf) = try softmaxCrossEntropy(logits: mf.forward(converted(xd, to: Float.self)), labels: labels)
        XCTAssertEqual(Double(lf), ld, accuracy: 1e-4 * ld)
        assertRelativeError(try mf.backward(gf).scalars, try md.backward(gd).scalars, 1e-4)
        for (pf, pd) in zip(mf.parameters, md.parameters) {
            assertRelativeError(pf.grad.scalars, pd.grad.scalars, 1e-4, pf.name)
        }
    }

    /// Same seeds, same data: bit-identical losses run to run.
    func testDeterministic() throws {
        func run() throws -> [Float] {
            let model = try lectureNetwork(Float.self, seed: 3)
            let (x, labels) = batch(4, as: Float.self)
            let adam = try Adam(parameters: model.parameters, learningRate: 0.01)
            return try (0..<2).map { _ in
                try adam.zeroGrad()
                let (loss, g) = try softmaxCrossEntropy(logits: model.forward(x), labels: labels)
                _ = try model.backward(g)
                try adam.step()
                return loss
            }
        }
        XCTAssertEqual(try run(), try run())
    }
}

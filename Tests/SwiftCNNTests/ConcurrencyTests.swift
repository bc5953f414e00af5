import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport

/// The documented way to share a model between tasks (README, "Swift"): an actor owns it, so calls
/// from many tasks queue up instead of meeting the layers' busy error.
actor Classifier {
    let model: Sequential<Float>

    init(model: Sequential<Float>) {
        self.model = model
        model.setTraining(false)
    }

    /// The model's output for `x`: `forward` returns a tensor of its own, safe to hand back across
    /// the actor boundary (the model's buffers are reused by the next call).
    func predict(_ x: Tensor<Float>) throws -> Tensor<Float> {
        try model.forward(x)
    }
}

final class ConcurrencyTests: XCTestCase {
    private func smallNetwork() throws -> Sequential<Float> {
        try Sequential<Float>(
            Conv2d(inChannels: 1, outChannels: 4, kernelSize: (3, 3), padding: (1, 1), seed: 1), ReLU(),
            MaxPool2d(kernelSize: (2, 2)), Flatten(),
            Linear(inFeatures: 4 * 4 * 4, outFeatures: 10, seed: 2))
    }

    /// An actor owning a model, called from 8 tasks at once, 4 calls each: every call gets the
    /// output a lone sequential call gives for its input (no busy errors, no mixed-up buffers).
    func testActorOwnedModelServesConcurrentTasks() async throws {
        let inputs = (0..<8).map { randomTensor([3, 1, 8, 8], seed: UInt64(100 + $0), as: Float.self) }
        let reference = try smallNetwork()
        reference.setTraining(false)
        let expected = try inputs.map { try reference.forward($0).scalars }

        let classifier = Classifier(model: try smallNetwork())
        let results = try await withThrowingTaskGroup(of: (Int, [[Float]]).self) { group in
            for (i, x) in inputs.enumerated() {
                group.addTask {
                    var outputs: [[Float]] = []
                    for _ in 0..<4 { outputs.append(try await classifier.predict(x).scalars) }
                    return (i, outputs)
                }
            }
            var all: [Int: [[Float]]] = [:]
            for try await (i, outputs) in group { all[i] = outputs }
            return all
        }
        XCTAssertEqual(results.count, inputs.count)
        for (i, outputs) in results {
            for output in outputs { XCTAssertEqual(output, expected[i], "input \(i)") }
        }
    }

    /// A model (and its optimizer) moved into a Task trains there; the caller gets the losses back.
    func testModelTrainsInsideATask() async throws {
        let model = try smallNetwork()
        let x = randomTensor([4, 1, 8, 8], seed: 7, as: Float.self)
        let labels: [Int64] = [0, 3, 5, 9]
        let losses = try await Task.detached {
            let optimizer = try SGD(parameters: model.parameters, learningRate: 0.1)
            var losses: [Float] = []
            for _ in 0..<5 {
                try optimizer.zeroGrad()
                let (loss, grad) = try softmaxCrossEntropy(logits: model.forwardView(x), labels: labels)
                _ = try model.backward(grad)
                try optimizer.step()
                losses.append(loss)
            }
            return losses
        }.value
        XCTAssertEqual(losses.count, 5)
        XCTAssertLessThan(losses[4], losses[0], "\(losses)")
    }

    /// `forward` returns a tensor of its own: the next forward does not change a kept result.
    /// `forwardView` returns the layer's buffer: the next forward overwrites it (zero copy).
    func testKeptForwardResultDoesNotChange() throws {
        for layer in [try smallNetwork() as any Layer<Float>,
                      try Linear<Float>(inFeatures: 64, outFeatures: 10, seed: 3), ReLU<Float>()] {
            let shape = layer is Linear<Float> ? [3, 64] : [3, 1, 8, 8]
            let x1 = randomTensor(shape, seed: 11, as: Float.self), x2 = randomTensor(shape, seed: 12, as: Float.self)
            let kept = try layer.forward(x1)
            let keptValues = kept.scalars
            let second = try layer.forward(x2)
            XCTAssertEqual(kept.scalars, keptValues, "\(layer): forward's result changed at the next forward")
            XCTAssertNotEqual(second.scalars, keptValues, "\(layer)")

            let view = try layer.forwardView(x1)
            XCTAssertEqual(view.scalars, keptValues, "\(layer): forwardView computes what forward does")
            let next = try layer.forwardView(x2)
            XCTAssertEqual(view.pointer, next.pointer, "\(layer): forwardView reuses the layer's buffer")
            XCTAssertEqual(view.scalars, second.scalars, "\(layer)")
        }
        // Flatten's view is its input itself; forward's result is memory of its own.
        let x = randomTensor([2, 3, 4, 4], seed: 13, as: Float.self)
        let flat = try Flatten<Float>().forward(x)
        XCTAssertNotEqual(flat.pointer, x.pointer)
        XCTAssertEqual(try Flatten<Float>().forwardView(x).pointer, x.pointer)
        x[flat: 0] += 1
        XCTAssertNotEqual(flat[flat: 0], x[flat: 0])
    }

    /// Optimizers: the learning rate may be set from another thread while the owner trains.
    func testLearningRateIsAtomic() async throws {
        let model = try smallNetwork()
        let adam = try Adam(parameters: model.parameters, learningRate: 0.01)
        let setter = Task.detached {
            for i in 0..<1000 { adam.learningRate = i % 2 == 0 ? 0.01 : 0.02 }
        }
        let x = randomTensor([2, 1, 8, 8], seed: 21, as: Float.self)
        for _ in 0..<3 {
            try adam.zeroGrad()
            let (_, grad) = try softmaxCrossEntropy(logits: model.forwardView(x), labels: [1, 2])
            _ = try model.backward(grad)
            try adam.step()
        }
        await setter.value
        XCTAssertEqual(adam.stepCount, 3)
        XCTAssertTrue(adam.learningRate == 0.01 || adam.learningRate == 0.02)
    }
}

import Foundation
import XCTest
import SwiftCNN
import SwiftCNNIO

/// README "Saving, loading and training in Swift": the example, verbatim but for the file path and
/// the printing, so it keeps compiling and doing what the README says.
final class ReadmeExampleTests: XCTestCase {
    func testReadmeExample() throws {
        let file = NSTemporaryDirectory() + "swiftcnn-readme-\(UUID().uuidString).npz"
        defer { try? FileManager.default.removeItem(atPath: file) }
        var printed: [String] = []

        // --- README ---
        let model = try Sequential<Float>(
            Conv2d(inChannels: 1, outChannels: 4, kernelSize: (3, 3), padding: (1, 1), seed: 1), ReLU(),
            MaxPool2d(kernelSize: (2, 2)), Flatten(),
            Linear(inFeatures: 4 * 8 * 8, outFeatures: 10, seed: 2))

        // 200 seeded random 16x16 images, class k marked by a bright bar on row k+3; plain [Int] labels.
        let x = try Tensor<Float>.random(shape: [200, 1, 16, 16], seed: 0)
        let labels = (0..<200).map { $0 % 10 }
        for (n, k) in labels.enumerated() {
            for col in 3..<13 { x[flat: n * 256 + (k + 3) * 16 + col] += 2 }
        }

        let adam = try Adam(parameters: model.parameters, learningRate: 0.01)
        let history = try model.fit(x, labels, epochs: 4, batchSize: 20, optimizer: adam, seed: 0) { progress in
            if progress.batch == progress.batchesPerEpoch - 1 {
                printed.append("epoch \(progress.epoch + 1): loss \(progress.epochLoss)")
            }
            return .proceed  // or .stop
        }
        let result = try model.evaluate(x, labels)             // Evaluation(loss:accuracy:)
        try model.save(to: file)                               // Python: swiftcnn.load(file)
        let again = try Sequential<Float>.load(from: file)
        let logits = try again.predict(x)                      // (200, 10), a tensor you own
        let names = try again.stateDict().names                // ["0.weight", "0.bias", "4.weight", "4.bias"]
        // --- end ---

        XCTAssertEqual(printed.count, 4)
        XCTAssertLessThan(history.loss[3], 0.5 * history.loss[0], "\(history)")
        XCTAssertGreaterThan(result.accuracy, 0.9)
        XCTAssertEqual(try model.predict(x).scalars, logits.scalars)
        XCTAssertEqual(logits.shape, [200, 10])
        XCTAssertEqual(names, ["0.weight", "0.bias", "4.weight", "4.bias"])
    }
}

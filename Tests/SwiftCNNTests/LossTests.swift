import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport

final class LossTests: XCTestCase {
    // MARK: softmax

    func testSoftmaxRowsSumToOneAndAreStable() throws {
        func check<T: CNNScalar>(_: T.Type) throws {
            // Logits of 1000 would overflow e^z without the max subtraction.
            let z = try Tensor<T>(shape: [3, 3], scalars: [1000, 1000, 0, -1000, 0, 1000, 1, 2, 3])
            let p = try softmax(z).scalars
            XCTAssertTrue(p.allSatisfy { $0.isFinite })
            XCTAssertEqual(Double(p[0]), 0.5, accuracy: 1e-6)
            XCTAssertEqual(Double(p[5]), 1, accuracy: 1e-6)
            let e = [1.0, 2, 3].map { Double.exp($0 - 3) }
            let s = e.reduce(0, +)
            for k in 0..<3 { XCTAssertEqual(Double(p[6 + k]), e[k] / s, accuracy: 1e-6) }
            for n in 0..<3 { XCTAssertEqual(Double(p[3 * n] + p[3 * n + 1] + p[3 * n + 2]), 1, accuracy: 1e-6) }
        }
        try check(Float.self)
        try check(Double.self)
    }

    func testSoftmaxValidation() throws {
        assertThrowsKind(.value, contains: "softmax: logits must be 2-D (N, K), got shape (4,)") {
            try softmax(Tensor<Float>(zeros: [4]))
        }
        assertThrowsKind(.value, contains: "at least one class") { try softmax(Tensor<Float>(zeros: [2, 0])) }
        XCTAssertEqual(try softmax(Tensor<Float>(zeros: [0, 3])).shape, [0, 3])
    }

    // MARK: cross-entropy with class indices

    func testCrossEntropyMatchesNaiveAndLectureGradient() throws {
        let z = randomTensor([5, 7], seed: 1, -3, 3, as: Double.self)
        let labels: [Int64] = [0, 6, 3, 3, 1]
        let (loss, grad) = try softmaxCrossEntropy(logits: z, labels: labels)
        let naive = labels.withUnsafeBufferPointer {
            softmaxCrossEntropyNaive(batch: 5, classes: 7, logits: z.pointer, labels: $0.baseAddress!)
        }
        XCTAssertEqual(loss, naive.loss, accuracy: 1e-14)
        assertRelativeError(grad.scalars, naive.grad, 1e-14)
        // The lecture: dL/dz = (y_hat - y) / N with y one-hot.
        let p = try softmax(z)
        for n in 0..<5 {
            for k in 0..<7 {
                let onehot: Double = k == labels[n] ? 1 : 0
                XCTAssertEqual(grad[flat: n * 7 + k], (p[flat: n * 7 + k] - onehot) / 5, accuracy: 1e-16)
            }
        }
    }

    func testCrossEntropyGradientMatchesFiniteDifferences() throws {
        let z = randomTensor([4, 6], seed: 2, -2, 2, as: Double.self)
        let labels: [Int64] = [5, 0, 2, 2]
        let numeric = numericalGradient(of: { try! softmaxCrossEntropy(logits: $0, labels: labels).loss }, at: z)
        assertRelativeError(try softmaxCrossEntropy(logits: z, labels: labels).grad.scalars, numeric, 1e-7)
    }

    func testCrossEntropyLargeLogits() throws {
        // Correct class far ahead: loss ~ 0; far behind: loss ~ the gap. No inf/NaN either way.
        let z = try Tensor<Float>(shape: [2, 2], scalars: [1e4, -1e4, -1e4, 1e4])
        let (l1, g1) = try softmaxCrossEntropy(logits: z, labels: [0, 1])
        XCTAssertEqual(l1, 0)
        XCTAssertTrue(g1.scalars.allSatisfy { $0.isFinite })
        let (l2, _) = try softmaxCrossEntropy(logits: z, labels: [1, 0])
        XCTAssertEqual(l2, 2e4, accuracy: 1)
    }

    func testCrossEntropyRejectsBadLabelsBeforeWriting() throws {
        let z = randomTensor([3, 4], seed: 3, as: Float.self)
        let out = try Tensor<Float>(shape: [3, 4], scalars: Array(repeating: 7, count: 12))
        assertThrowsKind(.value, contains: "must be in [0, 4), got 4 at index 2") {
            try softmaxCrossEntropy(logits: z, labels: [0, 1, 4], gradInto: out)
        }
        assertThrowsKind(.value, contains: "got -1 at index 0") {
            try softmaxCrossEntropy(logits: z, labels: [-1, 1, 2], gradInto: out)
        }
        XCTAssertEqual(out.scalars, Array(repeating: 7, count: 12))
        assertThrowsKind(.value, contains: "target must have shape (3,) to match logits (3, 4), got (2,)") {
            try softmaxCrossEntropy(logits: z, labels: [0, 1])
        }
    }

    func testCrossEntropyEmptyBatchIsNaN() throws {
        let (loss, grad) = try softmaxCrossEntropy(logits: Tensor<Double>(zeros: [0, 3]), labels: [])
        XCTAssertTrue(loss.isNaN)
        XCTAssertEqual(grad.shape, [0, 3])
        let (loss2, _) = try softmaxCrossEntropy(logits: Tensor<Double>(zeros: [0, 3]),
                                                 targetProbabilities: Tensor<Double>(zeros: [0, 3]))
        XCTAssertTrue(loss2.isNaN)
    }

    // MARK: cross-entropy with class probabilities

    func testProbabilityTargetsEqualIndicesForOneHot() throws {
        let z = randomTensor([3, 4], seed: 4, as: Double.self)
        let labels: [Int64] = [1, 3, 0]
        var onehot = [Double](repeating: 0, count: 12)
        for (n, k) in labels.enumerated() { onehot[n * 4 + Int(k)] = 1 }
        let a = try softmaxCrossEntropy(logits: z, labels: labels)
        let b = try softmaxCrossEntropy(logits: z, targetProbabilities: Tensor(shape: [3, 4], scalars: onehot))
        XCTAssertEqual(a.loss, b.loss, accuracy: 1e-15)
        assertRelativeError(b.grad.scalars, a.grad.scalars, 1e-15)
    }

    /// Rows that do not sum to 1: PyTorch's gradient (softmax * rowsum(t) - t) / N, which is the true
    /// gradient of -mean sum t log softmax(z); checked against finite differences and a PyTorch value.
    func testProbabilityTargetsNotSummingToOne() throws {
        let z = randomTensor([3, 5], seed: 5, -2, 2, as: Double.self)
        let t = randomTensor([3, 5], seed: 6, 0, 1, as: Double.self)  // rows sum to ~2.5
        let (_, grad) = try softmaxCrossEntropy(logits: z, targetProbabilities: t)
        let numeric = numericalGradient(of: { try! softmaxCrossEntropy(logits: $0, targetProbabilities: t).loss }, at: z)
        assertRelativeError(grad.scalars, numeric, 1e-7)

        // torch.nn.functional.cross_entropy(torch.tensor([[1., 2., 3.]]), torch.tensor([[0.5, 0.5, 1.0]]))
        // = 2.315211928888761 (float64); its gradient, softmax * 2 - t:
        let (loss, g) = try softmaxCrossEntropy(logits: Tensor<Double>(shape: [1, 3], scalars: [1, 2, 3]),
                                                targetProbabilities: Tensor(shape: [1, 3], scalars: [0.5, 0.5, 1]))
        XCTAssertEqual(loss, 2.315211928888761, accuracy: 1e-14)
        assertRelativeError(g.scalars, [-0.31993885365923913, -0.010543057890404717, 0.33048191154964357], 1e-14)
        assertThrowsKind(.value, contains: "target must have the shape of logits (3, 5), got (3, 4)") {
            try softmaxCrossEntropy(logits: z, targetProbabilities: Tensor<Double>(zeros: [3, 4]))
        }
    }

    // MARK: binary cross-entropy with logits

    func testBCEMatchesDefinitionAndFiniteDifferences() throws {
        let z = randomTensor([4, 3], seed: 7, -4, 4, as: Double.self)
        let t = randomTensor([4, 3], seed: 8, 0, 1, as: Double.self)
        let (loss, grad) = try binaryCrossEntropyWithLogits(logits: z, target: t)
        var expected = 0.0
        for i in 0..<12 {
            let s = 1 / (1 + Double.exp(-z[flat: i]))
            expected -= t[flat: i] * Double.log(s) + (1 - t[flat: i]) * Double.log(1 - s)
        }
        XCTAssertEqual(loss, expected / 12, accuracy: 1e-14)
        // The lecture's delta = a - y, over numel for the mean.
        for i in 0..<12 {
            XCTAssertEqual(grad[flat: i], (1 / (1 + Double.exp(-z[flat: i])) - t[flat: i]) / 12, accuracy: 1e-16)
        }
        let numeric = numericalGradient(of: { try! binaryCrossEntropyWithLogits(logits: $0, target: t).loss }, at: z)
        assertRelativeError(grad.scalars, numeric, 1e-7)
    }

    func testBCEStableForHugeLogits() throws {
        func check<T: CNNScalar>(_: T.Type) throws {
            let z = try Tensor<T>(shape: [4], scalars: [1e4, -1e4, 1e4, -1e4])
            let t = try Tensor<T>(shape: [4], scalars: [1, 0, 0, 1])
            let (loss, grad) = try binaryCrossEntropyWithLogits(logits: z, target: t)
            // Two perfect predictions (0) and two wrong by 1e4 each: mean 5e3.
            XCTAssertEqual(loss, 5e3, accuracy: 1e-3)
            XCTAssertEqual(grad.scalars.map(Double.init), [0, 0, 0.25, -0.25])
        }
        try check(Float.self)
        try check(Double.self)
        XCTAssertTrue(try binaryCrossEntropyWithLogits(logits: Tensor<Float>(zeros: [0]), target: Tensor<Float>(zeros: [0])).loss.isNaN)
    }

    func testFloatMatchesDouble() throws {
        let zd = randomTensor([8, 10], seed: 9, -5, 5, as: Double.self)
        let zf = converted(zd, to: Float.self)
        let labels: [Int64] = [0, 1, 2, 3, 4, 5, 6, 9]
        let d = try softmaxCrossEntropy(logits: zd, labels: labels)
        let f = try softmaxCrossEntropy(logits: zf, labels: labels)
        XCTAssertEqual(Double(f.loss), d.loss, accuracy: 1e-4 * abs(d.loss))
        assertRelativeError(f.grad.scalars, d.grad.scalars, 1e-4)
        let td = randomTensor([8, 10], seed: 10, 0, 1, as: Double.self)
        let bd = try binaryCrossEntropyWithLogits(logits: zd, target: td)
        let bf = try binaryCrossEntropyWithLogits(logits: zf, target: converted(td, to: Float.self))
        XCTAssertEqual(Double(bf.loss), bd.loss, accuracy: 1e-4 * abs(bd.loss))
        assertRelativeError(bf.grad.scalars, bd.grad.scalars, 1e-4)
    }
}

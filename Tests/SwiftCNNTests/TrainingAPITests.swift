import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport

/// fit / predict / evaluate, state dicts and seeded random tensors (Sources/SwiftCNN/Training).
final class TrainingAPITests: XCTestCase {
    /// Three Gaussian blobs in 4-D, well separated: class k centered at 3 * e_k.
    static func blobs<T: CNNScalar>(_: T.Type, count: Int, seed: UInt64) throws -> (Tensor<T>, [Int]) {
        let x = try Tensor<T>.random(shape: [count, 4], seed: seed, distribution: .normal(mean: 0, standardDeviation: 0.5))
        let labels = (0..<count).map { $0 % 3 }
        for (i, k) in labels.enumerated() { x[flat: i * 4 + k] += 3 }
        return (x, labels)
    }

    static func mlp<T: CNNScalar>(_: T.Type, seed: UInt64 = 7) throws -> Sequential<T> {
        try Sequential<T>(Linear<T>(inFeatures: 4, outFeatures: 8, seed: seed), ReLU<T>(),
                          Linear<T>(inFeatures: 8, outFeatures: 3, seed: seed + 1))
    }

    func checkFitDropsTheLoss<T: CNNScalar>(_: T.Type) throws {
        let (x, y) = try Self.blobs(T.self, count: 90, seed: 1)
        let model = try Self.mlp(T.self)
        let before = try model.evaluate(x, y)
        let history = try model.fit(x, y, epochs: 8, batchSize: 16, seed: 3)
        XCTAssertEqual(history.epochs, 8)
        XCTAssertEqual(history.seconds.count, 8)
        XCTAssertLessThan(history.loss.last!, 0.25 * history.loss.first!, "\(history)")
        let after = try model.evaluate(x, y)
        XCTAssertLessThan(after.loss, 0.25 * before.loss)
        XCTAssertGreaterThanOrEqual(after.accuracy, 0.95)
    }

    func testFitDropsTheLossFloat() throws { try checkFitDropsTheLoss(Float.self) }
    func testFitDropsTheLossDouble() throws { try checkFitDropsTheLoss(Double.self) }

    func checkEvaluateMatchesPredict<T: CNNScalar>(_: T.Type) throws {
        let (x, y) = try Self.blobs(T.self, count: 50, seed: 2)
        let model = try Self.mlp(T.self, seed: 11)
        try model.fit(x, y, epochs: 1, batchSize: 10, seed: 0)  // part-trained: some right, some wrong
        let logits = try model.predict(x, batchSize: 7)  // batches of 7 across 50 samples
        XCTAssertEqual(logits.shape, [50, 3])
        var correct = 0
        for i in 0..<50 where argmax(logits.pointer + 3 * i, 3) == y[i] { correct += 1 }
        let m = try model.evaluate(x, y, batchSize: 13)
        XCTAssertEqual(m.accuracy, Double(correct) / 50)
        let (loss, _) = try softmaxCrossEntropy(logits: logits, labels: y)
        XCTAssertEqual(m.loss, Double(loss), accuracy: 1e-12)
        // predict in one batch equals predict in batches of 7 (row by row the same computation).
        let whole = try model.predict(x)
        assertRelativeError(whole.scalars, logits.scalars, T.self == Float.self ? 1e-6 : 1e-14)
        // predict returns an owned copy: another forward does not change it.
        let kept = logits.scalars
        _ = try model.forward(try Tensor<T>.random(shape: [50, 4], seed: 9))
        XCTAssertEqual(logits.scalars, kept)
    }

    func testEvaluateAccuracyIsTheFractionPredictGetsRightFloat() throws { try checkEvaluateMatchesPredict(Float.self) }
    func testEvaluateAccuracyIsTheFractionPredictGetsRightDouble() throws { try checkEvaluateMatchesPredict(Double.self) }

    func testIntAndInt64LabelsGiveIdenticalResults() throws {
        let (x, y) = try Self.blobs(Float.self, count: 40, seed: 5)
        let a = try Self.mlp(Float.self), b = try Self.mlp(Float.self)
        let ha = try a.fit(x, y, epochs: 3, batchSize: 8, optimizer: try Adam(parameters: a.parameters, learningRate: 0.01), seed: 4)
        let hb = try b.fit(x, y.map { Int64($0) }, epochs: 3, batchSize: 8,
                           optimizer: try Adam(parameters: b.parameters, learningRate: 0.01), seed: 4)
        XCTAssertEqual(ha.loss, hb.loss)
        XCTAssertEqual(ha.accuracy, hb.accuracy)
        for (p, q) in zip(a.parameters, b.parameters) { XCTAssertEqual(p.data.scalars, q.data.scalars, p.name) }
        XCTAssertEqual(try a.evaluate(x, y), try a.evaluate(x, y.map { Int64($0) }))
        XCTAssertEqual(try a.evaluate(x, y), try a.evaluate(x, y.map { UInt8($0) }))
        let logits = try a.predict(x)
        let (l1, g1) = try softmaxCrossEntropy(logits: logits, labels: y)
        let (l2, g2) = try softmaxCrossEntropy(logits: logits, labels: y.map { Int64($0) })
        XCTAssertEqual(l1, l2)
        XCTAssertEqual(g1.scalars, g2.scalars)
    }

    func testFitIsDeterministicAndTheSeedPicksTheOrder() throws {
        let (x, y) = try Self.blobs(Double.self, count: 30, seed: 6)
        func run(_ seed: UInt64, shuffle: Bool = true) throws -> [Double] {
            let m = try Self.mlp(Double.self)
            try m.fit(x, y, epochs: 2, batchSize: 4, shuffle: shuffle, seed: seed)
            return m.parameters.flatMap(\.data.scalars)
        }
        XCTAssertEqual(try run(1), try run(1))
        XCTAssertNotEqual(try run(1), try run(2))
        XCTAssertEqual(try run(1, shuffle: false), try run(2, shuffle: false))
    }

    func testFitWithoutShuffleIsTheCanonicalLoop() throws {
        // fit(shuffle: false) with SGD equals the README's hand-written loop over the same batches.
        let (x, y) = try Self.blobs(Double.self, count: 10, seed: 8)
        let a = try Self.mlp(Double.self), b = try Self.mlp(Double.self)
        try a.fit(x, y, epochs: 2, batchSize: 4, optimizer: try SGD(parameters: a.parameters, learningRate: 0.05), shuffle: false)
        let opt = try SGD(parameters: b.parameters, learningRate: 0.05)
        for _ in 0..<2 {
            for start in stride(from: 0, to: 10, by: 4) {
                let n = min(4, 10 - start)
                let xb = try Tensor<Double>(shape: [n, 4], scalars: Array(x.scalars[(start * 4)..<((start + n) * 4)]))
                try opt.zeroGrad()
                let (_, g) = try softmaxCrossEntropy(logits: try b.forward(xb), labels: Array(y[start..<(start + n)]))
                _ = try b.backward(g)
                try opt.step()
            }
        }
        for (p, q) in zip(a.parameters, b.parameters) { assertRelativeError(p.data.scalars, q.data.scalars, 1e-15, p.name) }
    }

    func testProgressCallbackSeesEveryBatchAndCanStop() throws {
        let (x, y) = try Self.blobs(Float.self, count: 25, seed: 3)
        let model = try Self.mlp(Float.self)
        var seen: [(Int, Int)] = []
        var losses: [Double] = []
        let h = try model.fit(x, y, epochs: 2, batchSize: 10) { p in
            seen.append((p.epoch, p.batch))
            losses.append(p.loss)
            XCTAssertEqual(p.batchesPerEpoch, 3)
            return .proceed
        }
        XCTAssertEqual(seen.map(\.0), [0, 0, 0, 1, 1, 1])
        XCTAssertEqual(seen.map(\.1), [0, 1, 2, 0, 1, 2])
        XCTAssertTrue(losses.allSatisfy { $0.isFinite && $0 > 0 })
        XCTAssertFalse(h.stopped)
        // Batch sizes 10, 10, 5: the epoch loss is the batch losses weighted by size.
        XCTAssertEqual(h.loss[0], (10 * losses[0] + 10 * losses[1] + 5 * losses[2]) / 25, accuracy: 1e-12)
        var calls = 0
        let stopped = try model.fit(x, y, epochs: 5, batchSize: 10) { p in
            calls += 1
            return p.epoch == 1 && p.batch == 0 ? .stop : .proceed
        }
        XCTAssertEqual(calls, 4)
        XCTAssertTrue(stopped.stopped)
        XCTAssertEqual(stopped.epochs, 1, "the interrupted epoch is not recorded")
    }

    func testValidationDataIsEvaluatedEachEpoch() throws {
        let (x, y) = try Self.blobs(Double.self, count: 30, seed: 1)
        let (vx, vy) = try Self.blobs(Double.self, count: 12, seed: 2)
        let model = try Self.mlp(Double.self)
        let h = try model.fit(x, y, epochs: 2, batchSize: 8, validationData: (vx, vy))
        XCTAssertEqual(h.validationLoss.count, 2)
        XCTAssertEqual(h.validationLoss[1], try model.evaluate(vx, vy).loss, accuracy: 1e-12)
        XCTAssertEqual(h.validationAccuracy[1], try model.evaluate(vx, vy).accuracy)
    }

    func testFitRejectsBadArgumentsBeforeAnyStep() throws {
        let (x, y) = try Self.blobs(Float.self, count: 12, seed: 1)
        let model = try Self.mlp(Float.self)
        let before = model.parameters.flatMap(\.data.scalars)
        var bad = y
        bad[7] = 3
        assertThrowsKind(.value, contains: "got 3 at index 7") { try model.fit(x, bad) }
        assertThrowsKind(.value, contains: "got -1 at index 0") { try model.fit(x, [-1] + y.dropFirst()) }
        assertThrowsKind(.value, contains: "same number of samples") { try model.fit(x, Array(y.dropLast())) }
        assertThrowsKind(.value, contains: "batchSize") { try model.fit(x, y, batchSize: 0) }
        assertThrowsKind(.value, contains: "epochs") { try model.fit(x, y, epochs: -1) }
        assertThrowsKind(.value, contains: "does not fit the model") { try model.fit(try Tensor<Float>(zeros: [12, 5]), y) }
        assertThrowsKind(.value, contains: "no samples") { try model.fit(try Tensor<Float>(zeros: [0, 4]), [Int]()) }
        assertThrowsKind(.value, contains: "validationData.labels") {
            try model.fit(x, y, validationData: (x, bad))
        }
        assertThrowsKind(.value, contains: "got 3 at index 7") { try model.evaluate(x, bad) }
        assertThrowsKind(.value, contains: "batchSize") { try model.predict(x, batchSize: 0) }
        assertThrowsKind(.value, contains: "batch dimension") { try model.predict(try Tensor<Float>(zeros: [])) }
        XCTAssertEqual(model.parameters.flatMap(\.data.scalars), before)
        let empty = try model.evaluate(try Tensor<Float>(zeros: [0, 4]), [Int]())
        XCTAssertTrue(empty.loss.isNaN && empty.accuracy.isNaN)
    }

    func testNonFiniteLossStopsWithTheEpochAndBatch() throws {
        let (x, y) = try Self.blobs(Float.self, count: 8, seed: 1)
        x[flat: 4 * 5] = .nan  // sample 5: batch 2 without shuffling
        let model = try Self.mlp(Float.self)
        assertThrowsKind(.runtime, contains: "epoch 1, batch 2: loss is nan") {
            try model.fit(x, y, batchSize: 4, shuffle: false)
        }
    }

    func testModesArePutBack() throws {
        let (x, y) = try Self.blobs(Double.self, count: 16, seed: 1)
        let dropout = try Dropout<Double>(p: 0.5, seed: 1)
        let bn = try BatchNorm<Double>(.batchNorm1d, numFeatures: 8)
        let model = try Sequential<Double>(Linear<Double>(inFeatures: 4, outFeatures: 8, seed: 1), bn, ReLU<Double>(), dropout,
                                           Linear<Double>(inFeatures: 8, outFeatures: 3, seed: 2))
        dropout.setTraining(false)
        try model.fit(x, y, epochs: 1, batchSize: 8)
        XCTAssertTrue(model.isTraining)
        XCTAssertFalse(dropout.isTraining, "fit restores a layer's own mode")
        XCTAssertTrue(bn.isTraining)
        XCTAssertEqual(bn.numBatchesTracked?.value, 2, "fit ran BatchNorm in training mode")
        // predict runs in evaluation mode (running statistics, no dropout) and leaves BatchNorm alone.
        let p1 = try model.predict(x), p2 = try model.predict(x)
        XCTAssertEqual(p1.scalars, p2.scalars)
        XCTAssertEqual(bn.numBatchesTracked?.value, 2)
        model.setTraining(false)
        XCTAssertEqual(try model.forward(x).scalars, p1.scalars)
        XCTAssertFalse(model.isTraining)
    }

    // MARK: state dicts

    static func bnModel<T: CNNScalar>(_: T.Type) throws -> Sequential<T> {
        try Sequential<T>(
            Conv2d<T>(inChannels: 1, outChannels: 2, kernelSize: (3, 3), padding: (1, 1), seed: 1),
            BatchNorm<T>(.batchNorm2d, numFeatures: 2), ReLU<T>(),
            Residual<T>(Conv2d<T>(inChannels: 2, outChannels: 2, kernelSize: (3, 3), padding: (1, 1), bias: false, seed: 2),
                        BatchNorm<T>(.batchNorm2d, numFeatures: 2, affine: false)),
            Sequential<T>(MaxPool2d<T>(kernelSize: (2, 2)), Flatten<T>()),
            Linear<T>(inFeatures: 8, outFeatures: 3, seed: 3))
    }

    func testStateDictHasPyTorchNamesInPyTorchOrder() throws {
        let model = try Self.bnModel(Float.self)
        let state = try model.stateDict()
        // torch.nn.Sequential's state_dict() order for this architecture: per module, parameters
        // then buffers, recursively.
        XCTAssertEqual(state.names, [
            "0.weight", "0.bias",
            "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked",
            "3.0.weight", "3.1.running_mean", "3.1.running_var", "3.1.num_batches_tracked",
            "5.weight", "5.bias",
        ])
        XCTAssertEqual(state.map(\.value.shape), [[2, 1, 3, 3], [2], [2], [2], [2], [2], [], [2, 2, 3, 3], [2], [2], [], [3, 8], [3]])
        XCTAssertEqual(state["1.num_batches_tracked"]?.integers, [0])
        XCTAssertEqual(state["1.running_var"]?.tensor?.scalars, [1, 1])
        XCTAssertEqual(state["0.weight"]?.tensor?.scalars, model.parameters[0].data.scalars)
        XCTAssertEqual(state["0.weight"]?.dtypeName, "float32")
        // Copies: training the model does not change them.
        let (x, _) = (try Tensor<Float>.random(shape: [4, 1, 4, 4], seed: 1), 0)
        try model.fit(x, [0, 1, 2, 0], epochs: 1, batchSize: 4)
        XCTAssertNotEqual(state["0.weight"]?.tensor?.scalars, model.parameters[0].data.scalars)
        XCTAssertEqual(try model.stateDict()["1.num_batches_tracked"]?.integers, [1])
    }

    func testLoadStateDictRoundTripsAndValidatesFirst() throws {
        let a = try Self.bnModel(Double.self), b = try Self.bnModel(Double.self)
        try a.fit(try Tensor<Double>.random(shape: [6, 1, 4, 4], seed: 2), [0, 1, 2, 0, 1, 2], epochs: 2, batchSize: 3)
        let trained = try a.stateDict()
        try b.loadStateDict(trained)
        let x = try Tensor<Double>.random(shape: [3, 1, 4, 4], seed: 3)
        XCTAssertEqual(try a.predict(x).scalars, try b.predict(x).scalars)
        XCTAssertEqual(try b.stateDict()["1.num_batches_tracked"]?.integers, [4])
        for (e, f) in zip(trained, try b.stateDict()) {
            XCTAssertEqual(e.name, f.name)
            XCTAssertEqual(e.value.tensor?.scalars, f.value.tensor?.scalars)
            XCTAssertEqual(e.value.integers, f.value.integers)
        }

        let c = try Self.bnModel(Double.self)
        let untouched = try c.stateDict()
        func unchanged() throws {
            for (e, f) in zip(untouched, try c.stateDict()) {
                XCTAssertEqual(e.value.tensor?.scalars, f.value.tensor?.scalars, e.name)
                XCTAssertEqual(e.value.integers, f.value.integers, e.name)
            }
        }
        var missing = StateDict<Double>()
        for entry in trained where entry.name != "3.1.running_var" { try missing.append(entry.name, entry.value) }
        assertThrowsKind(.value, contains: "missing key \"3.1.running_var\"") { try c.loadStateDict(missing) }
        var extra = trained
        extra.set("9.weight", try Tensor<Double>(zeros: [1]))
        assertThrowsKind(.value, contains: "unexpected key \"9.weight\"") { try c.loadStateDict(extra) }
        var wrongShape = trained
        wrongShape.set("5.bias", try Tensor<Double>(zeros: [4]))  // the last entry: all others valid
        assertThrowsKind(.value, contains: "\"5.bias\" has shape (4,) but the model expects (3,)") { try c.loadStateDict(wrongShape) }
        var wrongKind = trained
        wrongKind.set("1.num_batches_tracked", try Tensor<Double>(zeros: []))
        assertThrowsKind(.value, contains: "must hold int64") { try c.loadStateDict(wrongKind) }
        var wrongKind2 = trained
        wrongKind2.set("5.bias", .int64(shape: [3], values: [1, 2, 3]))
        assertThrowsKind(.value, contains: "must hold float64") { try c.loadStateDict(wrongKind2) }
        try unchanged()
        assertThrowsKind(.value, contains: "appears more than once") {
            try StateDict<Double>([("a", .int64(shape: [], values: [0])), ("a", .int64(shape: [], values: [1]))])
        }
    }

    // MARK: random tensors

    func testRandomTensorsAreSeededAndDistributed() throws {
        let a = try Tensor<Float>.random(shape: [1000], seed: 42)
        XCTAssertEqual(a.scalars, try Tensor<Float>.random(shape: [1000], seed: 42).scalars)
        XCTAssertNotEqual(a.scalars, try Tensor<Float>.random(shape: [1000], seed: 43).scalars)
        XCTAssertTrue(a.scalars.allSatisfy { $0 >= 0 && $0 < 1 })
        let mean = a.scalars.reduce(0, +) / 1000
        XCTAssertEqual(Double(mean), 0.5, accuracy: 0.05)  // sd of the mean: 0.29 / sqrt(1000) = 0.009
        // The stream is RandomGenerator's, in row-major order.
        var g = RandomGenerator(seed: 42)
        XCTAssertEqual(a[flat: 0], g.uniform(Float(0), Float(1)))
        let n = try Tensor<Double>.random(shape: [20, 100], seed: 1, distribution: .normal(mean: 2, standardDeviation: 3))
        let s = n.scalars
        let m = s.reduce(0, +) / 2000
        let sd = (s.map { ($0 - m) * ($0 - m) }.reduce(0, +) / 1999).squareRoot()
        XCTAssertEqual(m, 2, accuracy: 0.3)   // 4.5 sd of the mean
        XCTAssertEqual(sd, 3, accuracy: 0.3)
        let u = try Tensor<Double>.random(shape: [500], seed: 3, distribution: .uniform(low: -2, high: -1))
        XCTAssertTrue(u.scalars.allSatisfy { $0 >= -2 && $0 < -1 })
        assertThrowsKind(.value, contains: "low <= high") { try Tensor<Float>.random(shape: [2], seed: 0, distribution: .uniform(low: 1, high: 0)) }
        assertThrowsKind(.value, contains: "standardDeviation") {
            try Tensor<Float>.random(shape: [2], seed: 0, distribution: .normal(mean: 0, standardDeviation: -1))
        }
        assertThrowsKind(.value) { try Tensor<Float>.random(shape: [-1], seed: 0) }
    }
}

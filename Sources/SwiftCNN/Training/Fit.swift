/// Training loops for `Sequential`: `fit`, `predict`, `evaluate`, as Python's `Sequential.fit`,
/// `predict` and `evaluate` (python/swiftcnn/training.py, API.md).
///
/// Each training batch runs the canonical step
///
///     optimizer.zeroGrad(); logits = model.forward(x)
///     (loss, g) = softmaxCrossEntropy(logits, labels); model.backward(g)
///     if loss is finite: optimizer.step()
///
/// Labels are any integer type (`[Int]`, `[Int64]`, `[UInt8]` ...); they are checked against the
/// model's number of outputs before the first step, so a rejected call leaves the model unchanged.

/// What `fit` measured, per epoch (Python's `History.history`).
public struct TrainingHistory: Sendable, CustomStringConvertible {
    /// Mean loss over each epoch's batches as trained, weighted by batch size.
    public var loss: [Double] = []
    /// Fraction of each epoch's training samples classified correctly as trained.
    public var accuracy: [Double] = []
    /// After each epoch, the loss on the validation data (empty without validation data).
    public var validationLoss: [Double] = []
    /// After each epoch, the accuracy on the validation data (empty without validation data).
    public var validationAccuracy: [Double] = []
    /// Each epoch's training time in seconds (shuffling and steps; validation excluded).
    public var seconds: [Double] = []
    /// True if the progress callback stopped training early (the lists hold the completed epochs).
    public var stopped = false

    public init() {}

    /// The number of epochs recorded.
    public var epochs: Int { loss.count }

    public var description: String {
        func round4(_ v: [Double]) -> String { "[" + v.map { "\((($0 * 10000).rounded()) / 10000)" }.joined(separator: ", ") + "]" }
        var s = "TrainingHistory(epochs=\(epochs), loss=\(round4(loss)), accuracy=\(round4(accuracy))"
        if !validationLoss.isEmpty { s += ", val_loss=\(round4(validationLoss)), val_accuracy=\(round4(validationAccuracy))" }
        return s + (stopped ? ", stopped=true)" : ")")
    }
}

/// What `fit` tells its progress callback after each batch.
public struct TrainingProgress: Sendable {
    /// The epoch, from 0.
    public let epoch: Int
    /// The batch within the epoch, from 0.
    public let batch: Int
    /// Batches per epoch.
    public let batchesPerEpoch: Int
    /// This batch's mean loss.
    public let loss: Double
    /// The epoch's mean loss so far (weighted by batch size).
    public let epochLoss: Double
    /// The epoch's accuracy so far.
    public let epochAccuracy: Double
}

/// The callback's answer: go on, or stop after this batch (the history then holds the completed
/// epochs and `stopped` is set; the model keeps the weights of the last step).
public enum TrainingControl: Sendable {
    case proceed
    case stop
}

/// `evaluate`'s result: the mean cross-entropy and the fraction classified correctly (both nan
/// for zero samples).
public struct Evaluation: Sendable, Equatable {
    public let loss: Double
    public let accuracy: Double
}

/// The labels as Int64, each in [0, classes): `.value` naming `argument`, the index and the value
/// otherwise (an integer type wider than Int64 with a value beyond it is out of range too).
func checkedLabels<L: BinaryInteger>(_ labels: [L], classes: Int, op: String, argument: String) throws -> [Int64] {
    var out = [Int64]()
    out.reserveCapacity(labels.count)
    for (i, label) in labels.enumerated() {
        guard let v = Int64(exactly: label), v >= 0, v < Int64(classes) else {
            throw SwiftCNNError.value("\(op): \(argument) (class indices) must be in [0, \(classes)), got \(label) at index \(i)")
        }
        out.append(v)
    }
    return out
}

/// The index of the largest of `k` values at `z` (the first on ties, as NumPy's argmax).
@inlinable
func argmax<T: CNNScalar>(_ z: UnsafePointer<T>, _ k: Int) -> Int {
    var best = 0
    for j in 1..<k where z[j] > z[best] { best = j }
    return best
}

/// The layers' modes in pre-order (a container before its children), to put back after
/// `fit`/`predict`/`evaluate` switched them: restoring a container's mode resets its children,
/// whose own modes are restored next (they may differ: one layer in eval in a training model).
func savedModes<T: CNNScalar>(_ layer: any Layer<T>) -> [(any Layer<T>, Bool)] {
    var out: [(any Layer<T>, Bool)] = [(layer, layer.isTraining)]
    if let s = layer as? Sequential<T> {
        for child in s.layers { out += savedModes(child) }
    } else if let r = layer as? Residual<T> {
        out += savedModes(r.body)
    }
    return out
}

func restoreModes<T: CNNScalar>(_ saved: [(any Layer<T>, Bool)]) {
    for (layer, mode) in saved where layer.isTraining != mode || layer is Sequential<T> || layer is Residual<T> {
        layer.setTraining(mode)
    }
}

extension Sequential {
    /// The sample shape check shared by the entry points: x is (N, ...) with N >= 0, and the model
    /// maps it to (N, K) logits. Returns K.
    func logitsClasses(forInput shape: [Int], op: String, argument: String) throws -> Int {
        guard shape.count >= 1 else {
            throw SwiftCNNError.value("\(op): \(argument) must have a batch dimension (N, ...), got shape \(describeShape(shape))")
        }
        let out: [Int]
        do {
            out = try outputShape(forInput: shape)
        } catch let error as SwiftCNNError {
            throw SwiftCNNError(error.kind, "\(op): \(argument) of shape \(describeShape(shape)) does not fit the model: \(error.message)")
        }
        guard out.count == 2, out[1] >= 1 else {
            throw SwiftCNNError.value(
                "\(op): the model's output for \(argument) has shape \(describeShape(out)); the cross-entropy needs logits of shape (N, K)")
        }
        return out[1]
    }

    /// Trains the model on `(x, labels)` with mini-batches of softmax cross-entropy; returns the
    /// per-epoch history.
    ///
    /// - Parameters:
    ///   - x: inputs (N, ...), e.g. (N, 1, 28, 28) images.
    ///   - labels: N class indices in [0, K) for a model with K outputs; any integer type.
    ///   - epochs: passes over the data (>= 0).
    ///   - batchSize: samples per step (>= 1); the last, partial batch of an epoch is kept.
    ///   - optimizer: default a new `SGD(parameters, learningRate: 0.1)` for this call (Python's default).
    ///   - shuffle: visit the samples in a new random order each epoch.
    ///   - seed: the seed of the shuffling; the same seed gives bit-identical training.
    ///   - validationData: `(x, labels)` evaluated after each epoch (in evaluation mode).
    ///   - progress: called after every batch; return `.stop` to end training after that batch.
    /// - Throws: `.value` for bad arguments (before any step); `.runtime` if a batch's loss is not
    ///   finite, naming the epoch and batch (that step is not applied; the gradients hold that
    ///   batch's, as after a PyTorch loop that checks the loss after backward).
    ///
    /// Runs in training mode and puts back every layer's mode afterwards.
    @discardableResult
    public func fit<L: BinaryInteger, V: BinaryInteger>(
        _ x: Tensor<T>, _ labels: [L], epochs: Int = 1, batchSize: Int = 64, optimizer: (any Optimizer)? = nil,
        shuffle: Bool = true, seed: UInt64 = 0, validationData: (x: Tensor<T>, labels: [V])?,
        progress: ((TrainingProgress) throws -> TrainingControl)? = nil
    ) throws -> TrainingHistory {
        let op = "Sequential.fit"
        guard epochs >= 0 else { throw SwiftCNNError.value("\(op): epochs must be >= 0, got \(epochs)") }
        guard batchSize >= 1 else { throw SwiftCNNError.value("\(op): batchSize must be >= 1, got \(batchSize)") }
        let classes = try logitsClasses(forInput: x.shape, op: op, argument: "x")
        let n = x.shape[0]
        guard labels.count == n else {
            throw SwiftCNNError.value(
                "\(op): x and labels must hold the same number of samples, got x of shape \(describeShape(x.shape)) and \(labels.count) labels")
        }
        guard n > 0 else { throw SwiftCNNError.value("\(op): x holds no samples (shape \(describeShape(x.shape)))") }
        let y = try checkedLabels(labels, classes: classes, op: op, argument: "labels")
        var validation: (Tensor<T>, [Int64])?
        if let v = validationData {
            let (vx, vy) = v
            let vClasses = try logitsClasses(forInput: vx.shape, op: op, argument: "validationData.x")
            guard vy.count == vx.shape[0] else {
                throw SwiftCNNError.value(
                    "\(op): validationData's x and labels must hold the same number of samples, got x of shape \(describeShape(vx.shape)) and \(vy.count) labels")
            }
            validation = (vx, try checkedLabels(vy, classes: vClasses, op: op, argument: "validationData.labels"))
        }
        let opt = try optimizer ?? SGD(parameters: parameters, learningRate: 0.1)

        let modes = savedModes(self)
        setTraining(true)
        defer { restoreModes(modes) }

        let sampleShape = Array(x.shape.dropFirst())
        let sampleSize = x.count / n
        var order = Array(0..<n)
        var generator = RandomGenerator(seed: seed)
        let batches = (n + batchSize - 1) / batchSize
        var history = TrainingHistory()
        // Batch buffers, allocated once per size (the full size and the last, partial one).
        var xBuffers: [Int: Tensor<T>] = [:]
        var gradBuffers: [Int: Tensor<T>] = [:]
        var yBatch = [Int64](repeating: 0, count: batchSize)
        let clock = ContinuousClock()

        for epoch in 0..<epochs {
            let started = clock.now
            if shuffle { shuffleInPlace(&order, &generator) }
            var lossSum = 0.0, correctSum = 0, seen = 0
            for batch in 0..<batches {
                let start = batch * batchSize
                let size = min(batchSize, n - start)
                let xb: Tensor<T>
                if let b = xBuffers[size] { xb = b } else {
                    xb = try Tensor<T>(zeros: [size] + sampleShape)
                    xBuffers[size] = xb
                }
                let grad: Tensor<T>
                if let g = gradBuffers[size] { grad = g } else {
                    grad = try Tensor<T>(zeros: [size, classes])
                    gradBuffers[size] = grad
                }
                for i in 0..<size {
                    let sample = order[start + i]
                    (xb.pointer + i * sampleSize).update(from: x.pointer + sample * sampleSize, count: sampleSize)
                    yBatch[i] = y[sample]
                }
                // The canonical step.
                try opt.zeroGrad()
                let logits = try forward(xb)
                let loss = try yBatch.withUnsafeBufferPointer { yp in
                    try softmaxCrossEntropy(batch: size, classes: classes, logits: logits.pointer, labels: yp.baseAddress!,
                                            gradLogits: grad.pointer)
                }
                var correct = 0
                for row in 0..<size where Int64(argmax(logits.pointer + row * classes, classes)) == yBatch[row] {
                    correct += 1
                }
                _ = try backward(grad, inputGradient: false)
                guard loss.isFinite else {
                    throw SwiftCNNError.runtime(
                        "\(op): epoch \(epoch + 1), batch \(batch + 1): loss is \(loss); that step was not applied (try a smaller learning rate)")
                }
                try opt.step()
                lossSum += loss * Double(size)
                correctSum += correct
                seen += size
                if let progress {
                    let report = TrainingProgress(epoch: epoch, batch: batch, batchesPerEpoch: batches, loss: loss,
                                                  epochLoss: lossSum / Double(seen),
                                                  epochAccuracy: Double(correctSum) / Double(seen))
                    if try progress(report) == .stop {
                        history.stopped = true
                        break
                    }
                }
            }
            if history.stopped && seen < n { break }  // a partial epoch is not recorded
            history.seconds.append(seconds(clock.now - started))
            history.loss.append(lossSum / Double(seen))
            history.accuracy.append(Double(correctSum) / Double(seen))
            if let v = validation {
                let m = try evaluateChecked(v.0, v.1, batchSize: 256)
                history.validationLoss.append(m.loss)
                history.validationAccuracy.append(m.accuracy)
            }
            if history.stopped { break }
        }
        return history
    }

    /// `fit` without validation data (see the full form for the arguments).
    @discardableResult
    public func fit<L: BinaryInteger>(
        _ x: Tensor<T>, _ labels: [L], epochs: Int = 1, batchSize: Int = 64, optimizer: (any Optimizer)? = nil,
        shuffle: Bool = true, seed: UInt64 = 0, progress: ((TrainingProgress) throws -> TrainingControl)? = nil
    ) throws -> TrainingHistory {
        try fit(x, labels, epochs: epochs, batchSize: batchSize, optimizer: optimizer, shuffle: shuffle, seed: seed,
                validationData: nil as (x: Tensor<T>, labels: [Int64])?, progress: progress)
    }

    /// The model's outputs (logits) for `x` (N, ...), computed `batchSize` samples at a time in
    /// evaluation mode, as a new tensor the caller owns (not a view of a layer buffer). Every
    /// layer's mode is put back afterwards.
    public func predict(_ x: Tensor<T>, batchSize: Int = 256) throws -> Tensor<T> {
        let op = "Sequential.predict"
        guard batchSize >= 1 else { throw SwiftCNNError.value("\(op): batchSize must be >= 1, got \(batchSize)") }
        guard x.rank >= 1 else {
            throw SwiftCNNError.value("\(op): x must have a batch dimension (N, ...), got shape \(describeShape(x.shape))")
        }
        let outShape: [Int]
        do {
            outShape = try outputShape(forInput: x.shape)
        } catch let error as SwiftCNNError {
            throw SwiftCNNError(error.kind, "\(op): x of shape \(describeShape(x.shape)) does not fit the model: \(error.message)")
        }
        let modes = savedModes(self)
        setTraining(false)
        defer { restoreModes(modes) }
        let n = x.shape[0]
        let out = try Tensor<T>(zeros: outShape)
        guard n > 0 else { return out }
        let sampleShape = Array(x.shape.dropFirst())
        let inSize = x.count / n, outSize = out.count / n
        var start = 0
        while start < n {
            let size = min(batchSize, n - start)
            let xb = try Tensor<T>(borrowing: x.pointer + start * inSize, shape: [size] + sampleShape)
            let y = try forward(xb)
            guard y.count == size * outSize else {
                throw SwiftCNNError.runtime("\(op): the model returned shape \(describeShape(y.shape)) for a batch of \(size); was it used by another thread?")
            }
            (out.pointer + start * outSize).update(from: y.pointer, count: y.count)
            start += size
        }
        // x stays alive to here (the borrowed views read its memory).
        withExtendedLifetime(x) {}
        return out
    }

    /// The mean softmax cross-entropy and the accuracy (fraction of argmax predictions equal to
    /// the label) on `(x, labels)`, from `predict(x, batchSize:)`. Both nan for N = 0.
    public func evaluate<L: BinaryInteger>(_ x: Tensor<T>, _ labels: [L], batchSize: Int = 256) throws -> Evaluation {
        let op = "Sequential.evaluate"
        guard batchSize >= 1 else { throw SwiftCNNError.value("\(op): batchSize must be >= 1, got \(batchSize)") }
        let classes = try logitsClasses(forInput: x.shape, op: op, argument: "x")
        guard labels.count == x.shape[0] else {
            throw SwiftCNNError.value(
                "\(op): x and labels must hold the same number of samples, got x of shape \(describeShape(x.shape)) and \(labels.count) labels")
        }
        return try evaluateChecked(x, try checkedLabels(labels, classes: classes, op: op, argument: "labels"), batchSize: batchSize)
    }

    func evaluateChecked(_ x: Tensor<T>, _ labels: [Int64], batchSize: Int) throws -> Evaluation {
        let logits = try predict(x, batchSize: batchSize)
        let n = labels.count
        guard n > 0 else { return Evaluation(loss: .nan, accuracy: .nan) }
        let k = logits.shape[1]
        let (loss, _) = try softmaxCrossEntropy(logits: logits, labels: labels)
        var correct = 0
        for row in 0..<n where Int64(argmax(logits.pointer + row * k, k)) == labels[row] { correct += 1 }
        return Evaluation(loss: Double(loss), accuracy: Double(correct) / Double(n))
    }
}

/// `softmaxCrossEntropy(logits:labels:)` with labels of any integer type (`[Int]` ...): each must
/// be in [0, K) (else `.value` naming the index).
public func softmaxCrossEntropy<T: CNNScalar, L: BinaryInteger>(logits: Tensor<T>, labels: [L],
                                                                 gradInto out: Tensor<T>? = nil) throws -> (loss: T, grad: Tensor<T>) {
    guard logits.rank == 2, logits.shape[1] >= 1 else {
        throw SwiftCNNError.value("softmax_cross_entropy: logits must be 2-D (N, K) with K >= 1, got shape \(describeShape(logits.shape))")
    }
    let y = try checkedLabels(labels, classes: logits.shape[1], op: "softmax_cross_entropy", argument: "labels")
    return try softmaxCrossEntropy(logits: logits, labels: y, gradInto: out)
}

/// A duration in seconds as a Double.
func seconds(_ d: Duration) -> Double {
    let (s, attoseconds) = d.components
    return Double(s) + Double(attoseconds) * 1e-18
}

/// Fisher-Yates with the draw written out (not the standard library's `shuffle`, whose use of the
/// generator may change between toolchains): position i takes the element at a position j uniform
/// in [0, i] (Lemire's multiply-high; its bias is below 2^-40 for the sizes used here).
func shuffleInPlace(_ a: inout [Int], _ generator: inout RandomGenerator) {
    var i = a.count - 1
    while i > 0 {
        let j = Int(UInt64(i + 1).multipliedFullWidth(by: generator.nextUInt64()).high)
        a.swapAt(i, j)
        i -= 1
    }
}

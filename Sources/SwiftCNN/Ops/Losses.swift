// Softmax and the two losses: softmax cross-entropy (class indices or class probabilities) and
// binary cross-entropy with logits. Each loss returns the batch mean as a Double and, optionally, the
// gradient with respect to the logits in the same pass (the forward/backward pair fused, as every
// framework does: the gradient is cheaper from the forward's intermediates than from the loss).
//
// Losses are summed in Double in a fixed order, so they are deterministic and as accurate in Float as
// the per-row terms allow.

// MARK: - Softmax

/// probs[n, k] = e^(z[n,k] - m_n) / sum_j e^(z[n,j] - m_n), with m_n = max_j z[n,j]; logits, probs (N, K).
///
/// Subtracting the row maximum changes nothing mathematically (it cancels between numerator and
/// denominator) but keeps every exponent <= 0: no overflow for large logits, and the denominator is
/// >= 1, so no division by an underflowed zero. `probs` may be `logits`.
@_spi(Engine) @inlinable
public func softmaxForward<T: CNNScalar>(batch: Int, classes: Int, logits: UnsafePointer<T>,
                                         probs: UnsafeMutablePointer<T>) {
    for n in 0..<batch {
        let z = logits + n * classes, p = probs + n * classes
        let m = rowMaximum(z, classes)
        var sum: T = 0
        for k in 0..<classes {
            let e = T.exp(z[k] - m)
            p[k] = e
            sum += e
        }
        let inv = 1 / sum
        for k in 0..<classes { p[k] *= inv }
    }
}

/// The largest of `count >= 1` values; NaN if any is NaN (so a NaN logit poisons its row visibly).
@inlinable @inline(__always)
func rowMaximum<T: CNNScalar>(_ z: UnsafePointer<T>, _ count: Int) -> T {
    guard count > 0 else { return -.infinity }
    var m = z[0]
    for k in 1..<count {
        let v = z[k]
        if v > m || v.isNaN { m = v }
    }
    return m
}

/// log sum_k e^(z[k]) = m + log sum_k e^(z[k] - m), stably; also returns s = sum_k e^(z[k] - m).
@inlinable @inline(__always)
func rowLogSumExp<T: CNNScalar>(_ z: UnsafePointer<T>, _ count: Int) -> (lse: T, max: T, sum: T) {
    let m = rowMaximum(z, count)
    var s: T = 0
    for k in 0..<count { s += T.exp(z[k] - m) }
    return (m + T.log(s), m, s)
}

// MARK: - Softmax cross-entropy, class indices

/// Softmax cross-entropy against class indices, batch mean; logits (N, K), labels (N) in [0, K).
///
///     loss = (1/N) sum_n [ logsumexp(z[n,:]) - z[n, y_n] ]               (NaN when N = 0)
///     gradLogits[n, k] = (softmax(z)[n, k] - [k == y_n]) / N
///
/// The gradient is the lecture's y_hat - y: the log-softmax's Jacobian and the one-hot target
/// collapse to probabilities minus one-hot, divided by N because the loss is a mean.
/// Throws `.value` if a label is outside [0, K), before writing anything.
@_spi(Engine) @inlinable
public func softmaxCrossEntropy<T: CNNScalar>(batch: Int, classes: Int, logits: UnsafePointer<T>,
                                              labels: UnsafePointer<Int64>,
                                              gradLogits: UnsafeMutablePointer<T>?) throws -> Double {
    for n in 0..<batch {
        let label = labels[n]
        guard label >= 0 && label < Int64(classes) else {
            throw SwiftCNNError.value(
                "softmax_cross_entropy: target (class indices) must be in [0, \(classes)), got \(label) at index \(n)")
        }
    }
    guard batch > 0 else { return .nan }
    let nT = T(batch)
    var total: Double = 0
    for n in 0..<batch {
        let z = logits + n * classes
        let label = Int(labels[n])
        let (lse, m, s) = rowLogSumExp(z, classes)
        total += Double(lse - z[label])
        if let gradLogits {
            let g = gradLogits + n * classes
            let inv = 1 / s
            for k in 0..<classes {
                let p = T.exp(z[k] - m) * inv
                g[k] = (k == label ? p - 1 : p) / nT
            }
        }
    }
    return total / Double(batch)
}

// MARK: - Softmax cross-entropy, class probabilities

/// Softmax cross-entropy against class probabilities t, batch mean; logits, targetProbabilities (N, K).
///
///     loss = -(1/N) sum_n sum_k t[n,k] log softmax(z)[n,k]
///          =  (1/N) sum_n [ S_n logsumexp(z[n,:]) - sum_k t[n,k] z[n,k] ],   S_n = sum_k t[n,k]
///     gradLogits[n, k] = (softmax(z)[n, k] * S_n - t[n, k]) / N
///
/// PyTorch's gradient when rows do not sum to 1 (S_n = 1 gives the familiar softmax - t). No
/// requirement that t be a distribution. NaN loss when N = 0.
@_spi(Engine) @inlinable
public func softmaxCrossEntropy<T: CNNScalar>(batch: Int, classes: Int, logits: UnsafePointer<T>,
                                              targetProbabilities: UnsafePointer<T>,
                                              gradLogits: UnsafeMutablePointer<T>?) -> Double {
    guard batch > 0 else { return .nan }
    let nT = T(batch)
    var total: Double = 0
    for n in 0..<batch {
        let z = logits + n * classes, t = targetProbabilities + n * classes
        let (lse, m, s) = rowLogSumExp(z, classes)
        // sum_k t_k (lse - z_k): each term is >= 0 for t_k >= 0, so no cancellation between big terms.
        var rowLoss: T = 0
        var rowSum: T = 0
        for k in 0..<classes {
            rowLoss += t[k] * (lse - z[k])
            rowSum += t[k]
        }
        total += Double(rowLoss)
        if let gradLogits {
            let g = gradLogits + n * classes
            let inv = 1 / s
            for k in 0..<classes {
                let p = T.exp(z[k] - m) * inv
                g[k] = (p * rowSum - t[k]) / nT
            }
        }
    }
    return total / Double(batch)
}

// MARK: - Binary cross-entropy with logits

/// Binary cross-entropy on logits z with targets t, mean over all `count` elements.
///
///     loss = (1/count) sum_i [ max(z_i, 0) - z_i t_i + log(1 + e^-|z_i|) ]     (NaN when count = 0)
///     gradLogits[i] = (sigmoid(z_i) - t_i) / count
///
/// The loss term is -[t log sigma(z) + (1 - t) log(1 - sigma(z))] rewritten so that no exponent is
/// positive and no log sees 0: stable for |z| up to and beyond 1e4. The gradient is the lecture's
/// delta = a - y for a sigmoid output with cross-entropy, divided by count for the mean.
@_spi(Engine) @inlinable
public func binaryCrossEntropyWithLogits<T: CNNScalar>(count: Int, logits: UnsafePointer<T>, target: UnsafePointer<T>,
                                                       gradLogits: UnsafeMutablePointer<T>?) -> Double {
    guard count > 0 else { return .nan }
    let countT = T(count)
    var total: Double = 0
    for i in 0..<count {
        let z = logits[i], t = target[i]
        total += Double(max(z, 0) - z * t + T.log1p(T.exp(-z.magnitude)))
        if let gradLogits {
            gradLogits[i] = (stableSigmoid(z) - t) / countT
        }
    }
    return total / Double(count)
}

// MARK: - Naive oracles

/// Softmax cross-entropy with class indices straight from the definition, in Double:
/// loss = -(1/N) sum_n log(softmax(z)[n, y_n]). For tests.
@usableFromInline
func softmaxCrossEntropyNaive<T: CNNScalar>(batch: Int, classes: Int, logits: UnsafePointer<T>,
                                            labels: UnsafePointer<Int64>) -> (loss: Double, grad: [Double]) {
    var loss: Double = 0
    var grad = [Double](repeating: 0, count: batch * classes)
    for n in 0..<batch {
        let z = (0..<classes).map { Double(logits[n * classes + $0]) }
        let m = z.max() ?? 0
        let e = z.map { Double.exp($0 - m) }
        let s = e.reduce(0, +)
        let label = Int(labels[n])
        loss -= Double.log(e[label] / s)
        for k in 0..<classes {
            grad[n * classes + k] = (e[k] / s - (k == label ? 1 : 0)) / Double(batch)
        }
    }
    return (batch > 0 ? loss / Double(batch) : .nan, grad)
}

// MARK: - Tensor level
//
// The Swift API's losses come back in the model's scalar type T (a Float model gets a Float loss).
// They are accumulated in Double by the pointer-level functions above (which the C ABI calls, and
// whose Double result Python receives), then rounded to T once.

/// `softmax(logits)`: probabilities over axis 1; logits (N, K) with K >= 1.
@_specialize(where T == Float) @_specialize(where T == Double)
public func softmax<T: CNNScalar>(_ logits: Tensor<T>, into out: Tensor<T>? = nil) throws -> Tensor<T> {
    let (batch, classes) = try logitsShape(op: "softmax", logits)
    let probs = try makeOutput(out, shape: logits.shape, op: "softmax", inputs: [("logits", logits)])
    softmaxForward(batch: batch, classes: classes, logits: logits.pointer, probs: probs.pointer)
    return probs
}

/// `softmax_cross_entropy(logits, target)` with class indices: (batch-mean loss, grad_logits).
/// `labels` holds N values in [0, K); `gradInto` receives the gradient if given.
@_specialize(where T == Float) @_specialize(where T == Double)
public func softmaxCrossEntropy<T: CNNScalar>(logits: Tensor<T>, labels: UnsafeBufferPointer<Int64>,
                                              gradInto out: Tensor<T>? = nil) throws -> (loss: T, grad: Tensor<T>) {
    let (batch, classes) = try logitsShape(op: "softmax_cross_entropy", logits)
    guard labels.count == batch else {
        throw SwiftCNNError.value(
            "softmax_cross_entropy: target must have shape (\(batch),) to match logits \(describeShape(logits.shape)), got (\(labels.count),)")
    }
    let grad = try makeOutput(out, shape: logits.shape, op: "softmax_cross_entropy", inputs: [("logits", logits)])
    guard let base = labels.baseAddress else {
        return (.nan, grad)  // N = 0: nothing to read
    }
    let loss = try softmaxCrossEntropy(batch: batch, classes: classes, logits: logits.pointer, labels: base,
                                       gradLogits: grad.pointer)
    return (T(loss), grad)
}

/// `softmax_cross_entropy(logits, target)` with class indices given as an array.
@inlinable
public func softmaxCrossEntropy<T: CNNScalar>(logits: Tensor<T>, labels: [Int64],
                                              gradInto out: Tensor<T>? = nil) throws -> (loss: T, grad: Tensor<T>) {
    try labels.withUnsafeBufferPointer { try softmaxCrossEntropy(logits: logits, labels: $0, gradInto: out) }
}

/// `softmax_cross_entropy(logits, target)` with class probabilities of the logits' shape.
@_specialize(where T == Float) @_specialize(where T == Double)
public func softmaxCrossEntropy<T: CNNScalar>(logits: Tensor<T>, targetProbabilities target: Tensor<T>,
                                              gradInto out: Tensor<T>? = nil) throws -> (loss: T, grad: Tensor<T>) {
    let (batch, classes) = try logitsShape(op: "softmax_cross_entropy", logits)
    try requireSameShape(op: "softmax_cross_entropy", "target", target, "logits", logits)
    let grad = try makeOutput(out, shape: logits.shape, op: "softmax_cross_entropy",
                              inputs: [("logits", logits), ("target", target)])
    let loss = softmaxCrossEntropy(batch: batch, classes: classes, logits: logits.pointer,
                                   targetProbabilities: target.pointer, gradLogits: grad.pointer)
    return (T(loss), grad)
}

/// `binary_cross_entropy_with_logits(logits, target)`: (mean loss, grad_logits); any shape, target
/// of the logits' shape.
@_specialize(where T == Float) @_specialize(where T == Double)
public func binaryCrossEntropyWithLogits<T: CNNScalar>(logits: Tensor<T>, target: Tensor<T>,
                                                       gradInto out: Tensor<T>? = nil) throws -> (loss: T, grad: Tensor<T>) {
    try requireSameShape(op: "binary_cross_entropy_with_logits", "target", target, "logits", logits)
    let grad = try makeOutput(out, shape: logits.shape, op: "binary_cross_entropy_with_logits",
                              inputs: [("logits", logits), ("target", target)])
    let loss = binaryCrossEntropyWithLogits(count: logits.count, logits: logits.pointer, target: target.pointer,
                                            gradLogits: grad.pointer)
    return (T(loss), grad)
}

/// (N, K) of 2-D logits with K >= 1, or a value error naming `logits`.
@usableFromInline
func logitsShape<T: CNNScalar>(op: String, _ logits: Tensor<T>) throws -> (batch: Int, classes: Int) {
    guard logits.rank == 2 else {
        throw SwiftCNNError.value("\(op): logits must be 2-D (N, K), got shape \(describeShape(logits.shape))")
    }
    guard logits.shape[1] >= 1 else {
        throw SwiftCNNError.value("\(op): logits must have at least one class (K >= 1), got shape \(describeShape(logits.shape))")
    }
    return (logits.shape[0], logits.shape[1])
}

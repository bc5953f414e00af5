/// Batch normalization over every axis but 1 (the channels), forward and backward.
///
///     x (N, C, *spatial)  viewed as (N, C, S),  S = product of the spatial sizes (1 for (N, C))
///     M = N * S values per channel
///
///     batch statistics (training):   mean_c = (1/M) sum_{n,s} x[n,c,s]
///                                    var_c  = (1/M) sum_{n,s} (x[n,c,s] - mean_c)^2      (biased)
///     running statistics (eval):     mean_c = running_mean[c],  var_c = running_var[c]
///
///     invstd_c = 1 / sqrt(var_c + eps),   x_hat = (x - mean_c) * invstd_c
///     y[n,c,s] = x_hat[n,c,s] * w[c] + b[c]          (w = 1, b = 0 when absent)
///
/// In training mode the running statistics (when given) move toward the batch's:
///
///     running_mean = (1 - momentum) * running_mean + momentum * mean_c
///     running_var  = (1 - momentum) * running_var  + momentum * var_c * M / (M - 1)   (UNBIASED)
///
/// (PyTorch's rules; momentum = 1/k for the k-th batch gives the cumulative average, which the
/// layer uses for `momentum=None`.) One value per channel (M == 1) has no variance to normalize by:
/// training with it is rejected, as PyTorch does. M == 0 (an empty batch) gives an empty output and
/// leaves the running statistics alone (PyTorch's early return).
///
/// Precision: the per-channel sums run in Double for both scalar types (4 independent accumulators,
/// a fixed order), and the variance is the two-pass sum of squared deviations from the mean (no
/// E[x^2] - E[x]^2 cancellation). Channels are independent: the fast path splits them over the
/// worker threads in fixed chunks, so results do not depend on timing.
///
/// Backward of the training-mode forward (the statistics depend on x), per channel, sums over the
/// M positions i = (n, s) of that channel, dy = dL/dy:
///
///     dL/db = sum_i dy_i,      dL/dw = sum_i dy_i * x_hat_i
///     dL/dx_hat_i = dy_i * w
///
///     x_hat_i = (x_i - mean) * invstd depends on x_j through x_i itself, the mean and the variance:
///       d mean / d x_j = 1/M
///       d var / d x_j  = (2/M) sum_i (x_i - mean) (delta_ij - 1/M) = (2/M) (x_j - mean)
///                        (the sum_i (x_i - mean) term vanishes)
///       d invstd / d x_j = -1/2 (var + eps)^(-3/2) * (2/M)(x_j - mean) = -(invstd^3 / M)(x_j - mean)
///     so  d x_hat_i / d x_j = invstd (delta_ij - 1/M) + (x_i - mean) * d invstd / d x_j
///                           = invstd (delta_ij - 1/M - x_hat_i x_hat_j / M)
///
///     dL/dx_j = sum_i dL/dx_hat_i * d x_hat_i / d x_j
///             = w invstd ( dy_j - (1/M) sum_i dy_i - x_hat_j (1/M) sum_i dy_i x_hat_i )
///             = (1/M) w invstd ( M dy_j - sum_i dy_i - x_hat_j sum_i dy_i x_hat_i )
///
/// The two terms people forget are the gradient through the mean (-sum dy / M) and through the
/// variance (-x_hat * sum(dy x_hat) / M): without them the gradient is that of a fixed affine map.
/// That fixed map is exactly the eval-mode gradient (running statistics do not depend on x):
///
///     eval:  dL/dx = dy * w * invstd,   dL/dw = sum dy * x_hat,   dL/db = sum dy
///
/// The naive oracle (`batchNormBackwardNaive`) follows the chain rule term by term instead
/// (dx_hat, then d var, then d mean), a different route to the same numbers.

// MARK: - Geometry

/// The validated layout of a batch-norm input: x of rank >= 2 viewed as (N, C, S).
public struct BatchNormGeometry: Equatable, Sendable {
    /// x's shape as given.
    public let shape: [Int]
    public let batch, channels, spatial: Int

    /// Values per channel, N * S.
    @inlinable public var valuesPerChannel: Int { batch * spatial }
    /// Total elements, N * C * S.
    @inlinable public var count: Int { batch * channels * spatial }

    /// Throws `.value` (naming `name`, prefixed by `op`) unless `xShape` has rank >= 2 with sizes >= 0,
    /// `.overflow` if its element count does not fit in Int.
    public init(op: String, name: String = "x", xShape: [Int]) throws {
        guard xShape.count >= 2 else {
            throw SwiftCNNError.value(
                "\(op): \(name) must have at least 2 dimensions (N, C, ...), got shape \(describeShape(xShape))")
        }
        _ = try checkedElementCount(xShape, what: "\(op): \(name)")
        shape = xShape
        batch = xShape[0]
        channels = xShape[1]
        spatial = xShape.dropFirst(2).reduce(1, *)   // fits: a factor of the checked element count
    }

    /// Throws `.value` unless `t` is absent or has shape (C,): "batch_norm: weight must have shape (3,), got (4,)".
    public func checkPerChannel<T: CNNScalar>(op: String, _ name: String, _ t: Tensor<T>?) throws {
        guard let t else { return }
        guard t.shape == [channels] else {
            throw SwiftCNNError.value(
                "\(op): \(name) must have shape (C,) = \(describeShape([channels])) for x of shape \(describeShape(shape)), "
                    + "got \(describeShape(t.shape))")
        }
    }

    /// Throws `.value` if batch statistics would be computed from one value per channel (PyTorch's
    /// "Expected more than 1 value per channel when training").
    public func checkBatchStatisticsDefined(op: String) throws {
        guard valuesPerChannel != 1 else {
            throw SwiftCNNError.value(
                "\(op): expected more than 1 value per channel when training (batch statistics need N * spatial >= 2), "
                    + "got x of shape \(describeShape(shape))")
        }
    }
}

/// Throws `.value` unless eps is finite and >= 0 (eps = 0 is allowed, as in PyTorch).
@usableFromInline
func checkBatchNormEps(op: String, _ eps: Double) throws {
    guard eps.isFinite, eps >= 0 else {
        throw SwiftCNNError.value("\(op): eps must be a finite number >= 0, got \(eps)")
    }
}

/// Throws `.value` unless momentum is finite.
@usableFromInline
func checkBatchNormMomentum(op: String, _ momentum: Double) throws {
    guard momentum.isFinite else {
        throw SwiftCNNError.value("\(op): momentum must be a finite number, got \(momentum)")
    }
}

// MARK: - pointer level, fast path

/// sum of p[0..<n] in Double, with 4 independent accumulators (a fixed order; the independent
/// chains keep the adds from serializing on their latency).
@inlinable
func sumInDouble<T: CNNScalar>(_ p: UnsafePointer<T>, _ n: Int) -> Double {
    var s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
    var i = 0
    while i + 4 <= n {
        s0 += Double(p[i]); s1 += Double(p[i + 1]); s2 += Double(p[i + 2]); s3 += Double(p[i + 3])
        i += 4
    }
    while i < n { s0 += Double(p[i]); i += 1 }
    return (s0 + s1) + (s2 + s3)
}

/// sum of (p[i] - mean)^2 over 0..<n in Double, 4 accumulators.
@inlinable
func sumSquaredDeviationsInDouble<T: CNNScalar>(_ p: UnsafePointer<T>, _ n: Int, mean: Double) -> Double {
    var s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
    var i = 0
    while i + 4 <= n {
        let d0 = Double(p[i]) - mean, d1 = Double(p[i + 1]) - mean
        let d2 = Double(p[i + 2]) - mean, d3 = Double(p[i + 3]) - mean
        s0 += d0 * d0; s1 += d1 * d1; s2 += d2 * d2; s3 += d3 * d3
        i += 4
    }
    while i < n { let d = Double(p[i]) - mean; s0 += d * d; i += 1 }
    return (s0 + s1) + (s2 + s3)
}

/// (sum dy, sum dy * (x - mean)) over 0..<n in Double, 4 accumulators each.
@inlinable
func sumGradAndGradDeviationInDouble<T: CNNScalar>(_ dy: UnsafePointer<T>, _ x: UnsafePointer<T>, _ n: Int,
                                                   mean: Double) -> (Double, Double) {
    var g0 = 0.0, g1 = 0.0, g2 = 0.0, g3 = 0.0
    var h0 = 0.0, h1 = 0.0, h2 = 0.0, h3 = 0.0
    var i = 0
    while i + 4 <= n {
        let a0 = Double(dy[i]), a1 = Double(dy[i + 1]), a2 = Double(dy[i + 2]), a3 = Double(dy[i + 3])
        g0 += a0; g1 += a1; g2 += a2; g3 += a3
        h0 += a0 * (Double(x[i]) - mean); h1 += a1 * (Double(x[i + 1]) - mean)
        h2 += a2 * (Double(x[i + 2]) - mean); h3 += a3 * (Double(x[i + 3]) - mean)
        i += 4
    }
    while i < n { let a = Double(dy[i]); g0 += a; h0 += a * (Double(x[i]) - mean); i += 1 }
    return ((g0 + g1) + (g2 + g3), (h0 + h1) + (h2 + h3))
}

/// Channel chunks worth running in parallel for `work` element operations.
@inlinable
func batchNormChannelChunks(_ g: BatchNormGeometry, costPerElement: Int) -> Int {
    let (work, overflow) = g.count.multipliedReportingOverflow(by: costPerElement)
    return min(max(g.channels, 1), parallelChunks(work: overflow ? Int.max : work))
}

/// The batch statistics of each channel: `mean`, `invstd` = 1/sqrt(biased var + eps) and, if
/// asked, the unbiased variance (for the running update). Computed in Double, rounded to T.
/// Precondition (checked by callers): valuesPerChannel >= 1, and >= 2 when `unbiasedVariance` is
/// asked (else it is a division by zero, giving inf or NaN, never a trap).
///
///     x (N, C, S) -> mean (C), invstd (C), unbiasedVariance (C) overwritten
@inlinable
public func batchNormBatchStatistics<T: CNNScalar>(_ g: BatchNormGeometry, x: UnsafePointer<T>, eps: Double,
                                                   mean: UnsafeMutablePointer<T>, invstd: UnsafeMutablePointer<T>,
                                                   unbiasedVariance: UnsafeMutablePointer<T>?) {
    let (n, c, s) = (g.batch, g.channels, g.spatial)
    let m = Double(g.valuesPerChannel)
    let chunks = batchNormChannelChunks(g, costPerElement: 3)
    parallelFor(chunks) { chunk in
        for ch in chunkRange(chunk, of: chunks, total: c) {
            var sum = 0.0
            for b in 0..<n { sum += sumInDouble(x + (b * c + ch) * s, s) }
            let mu = sum / m
            var squares = 0.0
            for b in 0..<n { squares += sumSquaredDeviationsInDouble(x + (b * c + ch) * s, s, mean: mu) }
            mean[ch] = T(mu)
            invstd[ch] = T(1 / (squares / m + eps).squareRoot())
            unbiasedVariance?[ch] = T(squares / (m - 1))
        }
    }
}

/// invstd = 1 / sqrt(running_var + eps) per channel (eval mode), computed in Double.
///
///     runningVar (C) -> invstd (C) overwritten
@inlinable
public func batchNormRunningInvstd<T: CNNScalar>(channels: Int, runningVar: UnsafePointer<T>, eps: Double,
                                                 invstd: UnsafeMutablePointer<T>) {
    for ch in 0..<channels { invstd[ch] = T(1 / (Double(runningVar[ch]) + eps).squareRoot()) }
}

/// The running-statistics update, in place:
/// running_mean = (1 - m) running_mean + m mean, running_var = (1 - m) running_var + m unbiased_var.
///
///     mean (C), unbiasedVariance (C) -> runningMean (C), runningVar (C) updated
@inlinable
public func batchNormUpdateRunningStatistics<T: CNNScalar>(channels: Int, mean: UnsafePointer<T>,
                                                           unbiasedVariance: UnsafePointer<T>, momentum: Double,
                                                           runningMean: UnsafeMutablePointer<T>,
                                                           runningVar: UnsafeMutablePointer<T>) {
    let m = T(momentum), keep = T(1 - momentum)
    for ch in 0..<channels {
        runningMean[ch] = keep * runningMean[ch] + m * mean[ch]
        runningVar[ch] = keep * runningVar[ch] + m * unbiasedVariance[ch]
    }
}

/// y = (x - mean) * (invstd * w) + b per channel: the forward of both modes once the statistics
/// are known (batch or running). `y` may be `x`.
///
///     x (N, C, S), mean (C), invstd (C), weight (C)?, bias (C)? -> y (N, C, S) overwritten
@inlinable
public func batchNormTransform<T: CNNScalar>(_ g: BatchNormGeometry, x: UnsafePointer<T>, mean: UnsafePointer<T>,
                                             invstd: UnsafePointer<T>, weight: UnsafePointer<T>?,
                                             bias: UnsafePointer<T>?, y: UnsafeMutablePointer<T>) {
    let (c, s) = (g.channels, g.spatial)
    let planes = g.batch * c
    let (work, overflow) = g.count.multipliedReportingOverflow(by: 2)
    let chunks = min(max(planes, 1), parallelChunks(work: overflow ? Int.max : work))
    parallelFor(chunks) { chunk in
        for p in chunkRange(chunk, of: chunks, total: planes) {
            let ch = p % c
            let mu = mean[ch], scale = invstd[ch] * (weight?[ch] ?? 1), shift = bias?[ch] ?? 0
            let xp = x + p * s, yp = y + p * s
            for i in 0..<s { yp[i] = (xp[i] - mu) * scale + shift }
        }
    }
}

/// The backward of batch norm given the statistics the forward used (see the file header).
///
/// `batchStatistics: true` is training mode (mean and invstd are the batch's, and the gradient flows
/// through them); `false` is eval mode (running statistics, a fixed affine map). gradX, gradWeight,
/// gradBias are each optional; the parameter gradients are added into (`accumulate`) or overwritten.
/// Precondition: batchStatistics implies valuesPerChannel >= 1 (M == 0 writes nothing into gradX,
/// which is empty, and adds zeros).
///
///     gradOut (N, C, S), x (N, C, S), mean (C), invstd (C), weight (C)?
///         -> gradX (N, C, S) overwritten, gradWeight (C), gradBias (C)
@inlinable
public func batchNormBackward<T: CNNScalar>(_ g: BatchNormGeometry, gradOut: UnsafePointer<T>, x: UnsafePointer<T>,
                                            mean: UnsafePointer<T>, invstd: UnsafePointer<T>,
                                            weight: UnsafePointer<T>?, batchStatistics: Bool,
                                            gradX: UnsafeMutablePointer<T>?, gradWeight: UnsafeMutablePointer<T>?,
                                            gradBias: UnsafeMutablePointer<T>?, accumulate: Bool) {
    let (n, c, s) = (g.batch, g.channels, g.spatial)
    let m = g.valuesPerChannel
    let chunks = batchNormChannelChunks(g, costPerElement: 4)
    parallelFor(chunks) { chunk in
        for ch in chunkRange(chunk, of: chunks, total: c) {
            let mu = mean[ch], istd = invstd[ch]
            var sumDy = 0.0, sumDyDev = 0.0
            for b in 0..<n {
                let o = (b * c + ch) * s
                let (gsum, hsum) = sumGradAndGradDeviationInDouble(gradOut + o, x + o, s, mean: Double(mu))
                sumDy += gsum
                sumDyDev += hsum
            }
            let sumDyXhat = sumDyDev * Double(istd)   // sum dy * x_hat
            if let gradBias { gradBias[ch] = (accumulate ? gradBias[ch] : 0) + T(sumDy) }
            if let gradWeight { gradWeight[ch] = (accumulate ? gradWeight[ch] : 0) + T(sumDyXhat) }
            guard let gradX else { continue }
            let k = (weight?[ch] ?? 1) * istd
            if batchStatistics && m > 0 {
                // dx = k (dy - sum(dy)/M - x_hat sum(dy x_hat)/M), x_hat = (x - mean) invstd
                let a = T(sumDy / Double(m)), b = T(sumDyXhat / Double(m)) * istd
                for bn in 0..<n {
                    let o = (bn * c + ch) * s
                    let dy = gradOut + o, xp = x + o, dx = gradX + o
                    for i in 0..<s { dx[i] = k * (dy[i] - a - (xp[i] - mu) * b) }
                }
            } else {
                for bn in 0..<n {
                    let o = (bn * c + ch) * s
                    let dy = gradOut + o, dx = gradX + o
                    for i in 0..<s { dx[i] = k * dy[i] }
                }
            }
        }
    }
}

// MARK: - pointer level, naive oracle

/// The definition, term by term in Double (test oracle): statistics by plain loops over (n, s),
/// y = (x - mean) / sqrt(var + eps) * w + b, and in training mode the running update (if given)
/// with the unbiased variance. Eval mode reads the running statistics; without them (PyTorch's
/// track_running_stats=False) it uses the batch statistics, as training does.
///
///     x (N, C, S) -> y (N, C, S) overwritten; runningMean, runningVar (C) updated in training mode
@inlinable
public func batchNormForwardNaive<T: CNNScalar>(_ g: BatchNormGeometry, x: UnsafePointer<T>,
                                                runningMean: UnsafeMutablePointer<T>?,
                                                runningVar: UnsafeMutablePointer<T>?, weight: UnsafePointer<T>?,
                                                bias: UnsafePointer<T>?, training: Bool, momentum: Double,
                                                eps: Double, y: UnsafeMutablePointer<T>) {
    let (n, c, s) = (g.batch, g.channels, g.spatial)
    let m = Double(n * s)
    for ch in 0..<c {
        var mu = 0.0, variance = 0.0
        if let runningMean, let runningVar, !training {
            mu = Double(runningMean[ch])
            variance = Double(runningVar[ch])
        } else {
            for b in 0..<n { for i in 0..<s { mu += Double(x[(b * c + ch) * s + i]) } }
            mu /= m
            for b in 0..<n {
                for i in 0..<s { let d = Double(x[(b * c + ch) * s + i]) - mu; variance += d * d }
            }
            if training, let runningMean, let runningVar {
                runningMean[ch] = T((1 - momentum) * Double(runningMean[ch]) + momentum * mu)
                runningVar[ch] = T((1 - momentum) * Double(runningVar[ch]) + momentum * variance / (m - 1))
            }
            variance /= m
        }
        let w = weight.map { Double($0[ch]) } ?? 1, bb = bias.map { Double($0[ch]) } ?? 0
        for b in 0..<n {
            for i in 0..<s {
                let idx = (b * c + ch) * s + i
                y[idx] = T((Double(x[idx]) - mu) / (variance + eps).squareRoot() * w + bb)
            }
        }
    }
}

/// The training-mode backward by the chain rule, term by term in Double (test oracle):
///
///     dx_hat = dy * w
///     dvar   = sum dx_hat * (x - mean) * (-1/2) (var + eps)^(-3/2)
///     dmean  = sum dx_hat * (-invstd) + dvar * (1/M) sum -2 (x - mean)     (the second sum is 0)
///     dx     = dx_hat * invstd + dvar * 2 (x - mean) / M + dmean / M
///     dw     = sum dy * x_hat,  db = sum dy          (overwritten, not accumulated)
///
///     gradOut (N, C, S), x (N, C, S), weight (C)? -> gradX (N, C, S), gradWeight (C), gradBias (C)
@inlinable
public func batchNormBackwardNaive<T: CNNScalar>(_ g: BatchNormGeometry, gradOut: UnsafePointer<T>,
                                                 x: UnsafePointer<T>, weight: UnsafePointer<T>?, eps: Double,
                                                 gradX: UnsafeMutablePointer<T>, gradWeight: UnsafeMutablePointer<T>,
                                                 gradBias: UnsafeMutablePointer<T>) {
    let (n, c, s) = (g.batch, g.channels, g.spatial)
    let m = Double(n * s)
    for ch in 0..<c {
        func at(_ b: Int, _ i: Int) -> Int { (b * c + ch) * s + i }
        var mu = 0.0
        for b in 0..<n { for i in 0..<s { mu += Double(x[at(b, i)]) } }
        mu /= m
        var variance = 0.0
        for b in 0..<n { for i in 0..<s { let d = Double(x[at(b, i)]) - mu; variance += d * d } }
        variance /= m
        let istd = 1 / (variance + eps).squareRoot()
        let w = weight.map { Double($0[ch]) } ?? 1
        var dvar = 0.0, dmean = 0.0, sumDeviation = 0.0, dw = 0.0, db = 0.0
        for b in 0..<n {
            for i in 0..<s {
                let dy = Double(gradOut[at(b, i)]), d = Double(x[at(b, i)]) - mu
                dvar += dy * w * d * (-0.5) * istd * istd * istd
                dmean += dy * w * (-istd)
                sumDeviation += -2 * d
                dw += dy * d * istd
                db += dy
            }
        }
        dmean += dvar * sumDeviation / m
        for b in 0..<n {
            for i in 0..<s {
                let dy = Double(gradOut[at(b, i)]), d = Double(x[at(b, i)]) - mu
                gradX[at(b, i)] = T(dy * w * istd + dvar * 2 * d / m + dmean / m)
            }
        }
        gradWeight[ch] = T(dw)
        gradBias[ch] = T(db)
    }
}

// MARK: - Tensor level

/// `batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
/// eps=1e-5, out=None)`, as `torch.nn.functional.batch_norm`: normalizes with the batch statistics
/// (`training`) or the running ones, and in training mode updates the running statistics in place
/// when they are given. Validates everything before writing anything (a rejected call changes nothing).
///
///     x (N, C, ...), running_mean (C)?, running_var (C)?, weight (C)?, bias (C)? -> y (x's shape)
///
/// Throws `.value` for: x of rank < 2; a per-channel tensor not of shape (C,); only one of
/// running_mean / running_var given; training False without running statistics; training with one
/// value per channel (N * spatial == 1); eps not finite or < 0; momentum not finite; `out` of the
/// wrong shape or overlapping an input. `.overflow` for element counts beyond Int.
@inlinable
public func batchNorm<T: CNNScalar>(_ x: Tensor<T>, runningMean: Tensor<T>?, runningVar: Tensor<T>?,
                                    weight: Tensor<T>? = nil, bias: Tensor<T>? = nil, training: Bool = false,
                                    momentum: Double = 0.1, eps: Double = 1e-5,
                                    into out: Tensor<T>? = nil) throws -> Tensor<T> {
    let op = "batch_norm"
    let g = try BatchNormGeometry(op: op, xShape: x.shape)
    try g.checkPerChannel(op: op, "running_mean", runningMean)
    try g.checkPerChannel(op: op, "running_var", runningVar)
    try g.checkPerChannel(op: op, "weight", weight)
    try g.checkPerChannel(op: op, "bias", bias)
    guard (runningMean == nil) == (runningVar == nil) else {
        throw SwiftCNNError.value("\(op): running_mean and running_var must both be given or both be None")
    }
    try checkBatchNormEps(op: op, eps)
    try checkBatchNormMomentum(op: op, momentum)
    if training {
        try g.checkBatchStatisticsDefined(op: op)
    } else if runningMean == nil {
        throw SwiftCNNError.value("\(op): running_mean and running_var are required when training is False")
    }
    var inputs: [(String, Tensor<T>)] = [("x", x)]
    for (name, t) in [("running_mean", runningMean), ("running_var", runningVar), ("weight", weight), ("bias", bias)] {
        if let t { inputs.append((name, t)) }
    }
    let y = try makeOutput(out, shape: x.shape, op: op, inputs: inputs)
    if g.count == 0 { return y }   // nothing to normalize; no statistics to record (PyTorch's early return)
    let c = g.channels
    let stats = try Tensor<T>(zeros: [3, c])   // mean, invstd, unbiased variance
    let mean = stats.pointer, invstd = stats.pointer + c, unbiased = stats.pointer + 2 * c
    if training {
        batchNormBatchStatistics(g, x: x.pointer, eps: eps, mean: mean, invstd: invstd,
                                 unbiasedVariance: runningMean == nil ? nil : unbiased)
    } else {
        mean.update(from: runningMean!.pointer, count: c)
        batchNormRunningInvstd(channels: c, runningVar: runningVar!.pointer, eps: eps, invstd: invstd)
    }
    batchNormTransform(g, x: x.pointer, mean: mean, invstd: invstd, weight: weight.map { UnsafePointer($0.pointer) },
                       bias: bias.map { UnsafePointer($0.pointer) }, y: y.pointer)
    if training, let runningMean, let runningVar {
        batchNormUpdateRunningStatistics(channels: c, mean: mean, unbiasedVariance: unbiased, momentum: momentum,
                                         runningMean: runningMean.pointer, runningVar: runningVar.pointer)
    }
    return y
}

/// `batch_norm_backward(grad_out, x, weight=None, eps=1e-5)`: the exact gradient of training-mode
/// batch norm (through the batch mean and variance, see the file header), recomputing the batch
/// statistics from x. Weight None counts as ones; grad_weight is still sum(grad_out * x_hat).
///
///     gradOut (x's shape), x (N, C, ...), weight (C)? -> gradX (x's shape), gradWeight (C), gradBias (C)
///
/// Throws `.value` for: x of rank < 2; grad_out not of x's shape; weight not of shape (C,); one value
/// per channel (N * spatial == 1); eps not finite or < 0.
@inlinable
public func batchNormBackward<T: CNNScalar>(gradOut: Tensor<T>, x: Tensor<T>, weight: Tensor<T>? = nil,
                                            eps: Double = 1e-5) throws
    -> (gradX: Tensor<T>, gradWeight: Tensor<T>, gradBias: Tensor<T>) {
    let op = "batch_norm_backward"
    let g = try BatchNormGeometry(op: op, xShape: x.shape)
    try requireSameShape(op: op, "grad_out", gradOut, "x", x)
    try g.checkPerChannel(op: op, "weight", weight)
    try checkBatchNormEps(op: op, eps)
    try g.checkBatchStatisticsDefined(op: op)
    let c = g.channels
    let gradX = try Tensor<T>(zeros: x.shape)
    let gradWeight = try Tensor<T>(zeros: [c]), gradBias = try Tensor<T>(zeros: [c])
    if g.count == 0 { return (gradX, gradWeight, gradBias) }
    let stats = try Tensor<T>(zeros: [2, c])
    batchNormBatchStatistics(g, x: x.pointer, eps: eps, mean: stats.pointer, invstd: stats.pointer + c,
                             unbiasedVariance: nil)
    batchNormBackward(g, gradOut: gradOut.pointer, x: x.pointer, mean: stats.pointer, invstd: stats.pointer + c,
                      weight: weight.map { UnsafePointer($0.pointer) }, batchStatistics: true, gradX: gradX.pointer,
                      gradWeight: gradWeight.pointer, gradBias: gradBias.pointer, accumulate: false)
    return (gradX, gradWeight, gradBias)
}

/// The gradient of eval-mode batch norm (running statistics: a fixed affine map per channel):
/// dx = grad_out * w / sqrt(running_var + eps), grad_weight = sum(grad_out * x_hat), grad_bias = sum(grad_out).
///
///     gradOut (x's shape), x (N, C, ...), runningMean (C), runningVar (C), weight (C)?
///         -> gradX (x's shape), gradWeight (C), gradBias (C)
///
/// Throws `.value` for: x of rank < 2; grad_out not of x's shape; a per-channel tensor not of shape
/// (C,); eps not finite or < 0.
@inlinable
public func batchNormEvalBackward<T: CNNScalar>(gradOut: Tensor<T>, x: Tensor<T>, runningMean: Tensor<T>,
                                                runningVar: Tensor<T>, weight: Tensor<T>? = nil,
                                                eps: Double = 1e-5) throws
    -> (gradX: Tensor<T>, gradWeight: Tensor<T>, gradBias: Tensor<T>) {
    let op = "batch_norm_eval_backward"
    let g = try BatchNormGeometry(op: op, xShape: x.shape)
    try requireSameShape(op: op, "grad_out", gradOut, "x", x)
    try g.checkPerChannel(op: op, "running_mean", runningMean)
    try g.checkPerChannel(op: op, "running_var", runningVar)
    try g.checkPerChannel(op: op, "weight", weight)
    try checkBatchNormEps(op: op, eps)
    let c = g.channels
    let gradX = try Tensor<T>(zeros: x.shape)
    let gradWeight = try Tensor<T>(zeros: [c]), gradBias = try Tensor<T>(zeros: [c])
    if g.count == 0 { return (gradX, gradWeight, gradBias) }
    let invstd = try Tensor<T>(zeros: [c])
    batchNormRunningInvstd(channels: c, runningVar: runningVar.pointer, eps: eps, invstd: invstd.pointer)
    batchNormBackward(g, gradOut: gradOut.pointer, x: x.pointer, mean: runningMean.pointer, invstd: invstd.pointer,
                      weight: weight.map { UnsafePointer($0.pointer) }, batchStatistics: false, gradX: gradX.pointer,
                      gradWeight: gradWeight.pointer, gradBias: gradBias.pointer, accumulate: false)
    return (gradX, gradWeight, gradBias)
}

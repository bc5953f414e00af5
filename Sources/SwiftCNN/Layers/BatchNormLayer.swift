/// Which PyTorch class a `BatchNorm` layer is: the accepted input ranks and the printed name.
public enum BatchNormKind: Sendable, Equatable, CustomStringConvertible {
    /// `BatchNorm1d`: (N, C) or (N, C, L).
    case batchNorm1d
    /// `BatchNorm2d`: (N, C, H, W).
    case batchNorm2d

    public var description: String { self == .batchNorm1d ? "BatchNorm1d" : "BatchNorm2d" }
}

/// Batch normalization, as PyTorch's `nn.BatchNorm1d` / `nn.BatchNorm2d` (the math, both modes and
/// the gradient's derivation are in Ops/BatchNorm.swift).
///
///     x (N, C[, L]) or (N, C, H, W) -> y (same shape),  y = (x - mean_c) / sqrt(var_c + eps) * w_c + b_c
///
/// - Training mode, or `trackRunningStats: false`: the batch's mean and biased variance; with
///   running statistics tracked and in training mode, `runningMean` / `runningVar` move toward the
///   batch mean and UNBIASED variance by `momentum` (nil: the cumulative average 1/numBatchesTracked)
///   and `numBatchesTracked` grows by one. Backward is the exact gradient through the batch statistics.
/// - Eval mode with running statistics: the running ones, a fixed affine map; backward is that map's.
///
/// Parameters "weight" (ones) and "bias" (zeros) when `affine`; buffers "running_mean" (zeros),
/// "running_var" (ones), "num_batches_tracked" (a 0-d Int64, 0) when `trackRunningStats`. The
/// buffers are allocated once and only ever written in place. A rejected forward changes nothing.
public final class BatchNorm<T: CNNScalar>: Layer, @unchecked Sendable, CustomStringConvertible {
    public typealias Scalar = T

    public let kind: BatchNormKind
    public let numFeatures: Int
    public let eps: Double
    /// nil: cumulative moving average.
    public let momentum: Double?
    /// (C), ones; nil unless affine.
    public let weight: Parameter<T>?
    /// (C), zeros; nil unless affine.
    public let bias: Parameter<T>?
    /// (C), zeros; nil unless trackRunningStats.
    public let runningMean: Tensor<T>?
    /// (C), ones; nil unless trackRunningStats.
    public let runningVar: Tensor<T>?
    /// 0-d, 0; nil unless trackRunningStats.
    public let numBatchesTracked: Int64Tensor?

    let access: ExclusiveAccess
    @usableFromInline let training = TrainingFlag()
    /// (3, C): the statistics the last forward used (mean, invstd), and the unbiased variance scratch.
    @usableFromInline let saved: Tensor<T>
    @usableFromInline var usedBatchStatistics = true
    @usableFromInline var geometry: BatchNormGeometry?
    @usableFromInline var input: Tensor<T>?
    @usableFromInline var output: Tensor<T>?
    @usableFromInline var gradInput: Tensor<T>?

    /// PyTorch's `BatchNorm1d` / `BatchNorm2d(num_features, eps=1e-5, momentum=0.1, affine=True,
    /// track_running_stats=True)`. Throws `.value` for num_features < 1, eps not finite or < 0,
    /// momentum not finite.
    public init(_ kind: BatchNormKind, numFeatures: Int, eps: Double = 1e-5, momentum: Double? = 0.1,
                affine: Bool = true, trackRunningStats: Bool = true) throws {
        let name = kind.description
        guard numFeatures >= 1 else {
            throw SwiftCNNError.value("\(name): numFeatures must be >= 1, got \(numFeatures)")
        }
        try checkBatchNormEps(op: name, eps)
        if let momentum { try checkBatchNormMomentum(op: name, momentum) }
        self.kind = kind
        self.access = ExclusiveAccess(name: name)
        self.numFeatures = numFeatures
        self.eps = eps
        self.momentum = momentum
        if affine {
            let w = try Parameter<T>(name: "weight", shape: [numFeatures])
            w.data.pointer.update(repeating: 1, count: numFeatures)
            weight = w
            bias = try Parameter<T>(name: "bias", shape: [numFeatures])
        } else {
            weight = nil
            bias = nil
        }
        if trackRunningStats {
            runningMean = try Tensor<T>(zeros: [numFeatures])
            let v = try Tensor<T>(zeros: [numFeatures])
            v.pointer.update(repeating: 1, count: numFeatures)
            runningVar = v
            numBatchesTracked = try Int64Tensor(zeros: [])
        } else {
            runningMean = nil
            runningVar = nil
            numBatchesTracked = nil
        }
        saved = try Tensor<T>(zeros: [3, numFeatures])
    }

    public var parameters: [Parameter<T>] {
        guard let weight, let bias else { return [] }
        return [weight, bias]
    }

    /// "running_mean", "running_var", "num_batches_tracked" (PyTorch's order), when tracked.
    public var buffers: [Buffer<T>] {
        guard let runningMean, let runningVar, let numBatchesTracked else { return [] }
        return [Buffer(name: "running_mean", storage: .floating(runningMean)),
                Buffer(name: "running_var", storage: .floating(runningVar)),
                Buffer(name: "num_batches_tracked", storage: .int64(numBatchesTracked))]
    }

    public var isTraining: Bool { training.isOn }

    public func setTraining(_ on: Bool) { training.set(on) }

    public var lastInputShape: [Int]? { access.read { geometry?.shape } }

    /// The geometry of `shape`: rank 2 or 3 (1d) or 4 (2d), and C = num_features.
    @usableFromInline
    func makeGeometry(_ shape: [Int]) throws -> BatchNormGeometry {
        let name = kind.description
        let ranks = kind == .batchNorm1d ? [2, 3] : [4]
        guard ranks.contains(shape.count) else {
            let expected = kind == .batchNorm1d ? "2-D (N, C) or 3-D (N, C, L)" : "4-D (N, C, H, W)"
            throw SwiftCNNError.value("\(name): x must be \(expected), got shape \(describeShape(shape))")
        }
        let g = try BatchNormGeometry(op: name, xShape: shape)
        guard g.channels == numFeatures else {
            throw SwiftCNNError.value(
                "\(name): x must have num_features = \(numFeatures) channels (dimension 1), got shape \(describeShape(shape))")
        }
        return g
    }

    public func outputShape(forInput shape: [Int]) throws -> [Int] {
        try makeGeometry(shape).shape
    }

    @_specialize(where T == Float) @_specialize(where T == Double)
    public func forward(_ x: Tensor<T>, returning result: ForwardResult) throws -> Tensor<T> {
        try access.run {
            geometry = nil
            input = nil
            let g = try makeGeometry(x.shape)
            let isTraining = training.isOn
            // PyTorch: batch statistics in training mode, and in both modes without running statistics.
            let useBatch = isTraining || runningMean == nil
            if useBatch { try g.checkBatchStatisticsDefined(op: kind.description) }
            let y = try layerBuffer(&output, shape: x.shape, avoiding: x)
            let c = numFeatures
            let mean = saved.pointer, invstd = saved.pointer + c, unbiased = saved.pointer + 2 * c
            let update = isTraining ? runningMean.flatMap { rm in runningVar.map { (rm, $0) } } : nil
            if let nbt = numBatchesTracked, isTraining { nbt.value = nbt.value &+ 1 }
            if g.count > 0 {
                if useBatch {
                    batchNormBatchStatistics(g, x: x.pointer, eps: eps, mean: mean, invstd: invstd,
                                             unbiasedVariance: update == nil ? nil : unbiased)
                } else {
                    mean.update(from: runningMean!.pointer, count: c)
                    batchNormRunningInvstd(channels: c, runningVar: runningVar!.pointer, eps: eps, invstd: invstd)
                }
                batchNormTransform(g, x: x.pointer, mean: mean, invstd: invstd,
                                   weight: weight.map { UnsafePointer($0.data.pointer) },
                                   bias: bias.map { UnsafePointer($0.data.pointer) }, y: y.pointer)
                if let (rm, rv) = update {
                    // momentum None: the cumulative average, factor 1/k at the k-th batch.
                    let factor = momentum ?? 1 / Double(numBatchesTracked!.value)
                    batchNormUpdateRunningStatistics(channels: c, mean: mean, unbiasedVariance: unbiased,
                                                     momentum: factor, runningMean: rm.pointer, runningVar: rv.pointer)
                }
            }
            usedBatchStatistics = useBatch
            geometry = g
            input = x
            return try result.deliver(y)
        }
    }

    /// dL/dx through the statistics the last forward used (batch: the exact gradient through mean
    /// and variance; running: the affine map), and adds dL/dw = sum dy x_hat, dL/db = sum dy.
    public func backward(_ gradOut: Tensor<T>) throws -> Tensor<T> {
        guard let gradX = try backward(gradOut, inputGradient: true) else {
            throw SwiftCNNError.runtime("BatchNorm: backward produced no input gradient")
        }
        return gradX
    }

    @_specialize(where T == Float) @_specialize(where T == Double)
    public func backward(_ gradOut: Tensor<T>, inputGradient: Bool) throws -> Tensor<T>? {
        try access.run {
            guard let g = geometry, let x = input else {
                throw SwiftCNNError.runtime("\(kind): backward called before forward")
            }
            try requireGradOutShape(kind.description, gradOut, g.shape)
            let gradX = inputGradient ? try layerBuffer(&gradInput, shape: g.shape, avoiding: gradOut) : nil
            if g.count > 0 {
                let c = numFeatures
                batchNormBackward(g, gradOut: gradOut.pointer, x: x.pointer, mean: saved.pointer,
                                  invstd: saved.pointer + c, weight: weight.map { UnsafePointer($0.data.pointer) },
                                  batchStatistics: usedBatchStatistics, gradX: gradX?.pointer,
                                  gradWeight: weight?.grad.pointer, gradBias: bias?.grad.pointer, accumulate: true)
            }
            return gradX
        }
    }

    public func zeroGrad() throws {
        try access.run {
            weight?.grad.zero()
            bias?.grad.zero()
        }
    }

    /// As PyTorch prints it: `BatchNorm2d(16, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)`.
    public var description: String {
        let m = momentum.map { "\($0)" } ?? "None"
        return "\(kind)(\(numFeatures), eps=\(eps), momentum=\(m), affine=\(weight == nil ? "False" : "True"), "
            + "track_running_stats=\(runningMean == nil ? "False" : "True"))"
    }
}

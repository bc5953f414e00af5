/// Seeded random tensors: the same seed gives bit-identical values on every run and platform
/// (xoshiro256** seeded through SplitMix64, see `RandomGenerator`), drawn in row-major order.
extension Tensor {
    /// The distributions `random(shape:seed:distribution:)` draws from.
    public enum Distribution: Sendable {
        /// U(low, high), half-open as PyTorch's `uniform_`.
        case uniform(low: Double, high: Double)
        /// N(mean, standardDeviation^2).
        case normal(mean: Double, standardDeviation: Double)
    }

    /// A new tensor of `shape` with independent draws from `distribution` (default U(0, 1)), in
    /// row-major order from a generator seeded with `seed`.
    ///
    /// Throws `.value` for a negative size, a distribution with low > high, a negative or
    /// non-finite standard deviation, or non-finite bounds; `.overflow` / `.memory` as `init(zeros:)`.
    public static func random(shape: [Int], seed: UInt64,
                              distribution: Distribution = .uniform(low: 0, high: 1)) throws -> Tensor {
        var generator = RandomGenerator(seed: seed)
        return try random(shape: shape, distribution: distribution, generator: &generator)
    }

    /// As `random(shape:seed:distribution:)`, drawing from (and advancing) `generator`.
    public static func random(shape: [Int], distribution: Distribution = .uniform(low: 0, high: 1),
                              generator: inout RandomGenerator) throws -> Tensor {
        switch distribution {
        case .uniform(let low, let high):
            guard low.isFinite, high.isFinite, low <= high else {
                throw SwiftCNNError.value("Tensor.random: uniform bounds must be finite with low <= high, got low \(low), high \(high)")
            }
        case .normal(let mean, let std):
            guard mean.isFinite, std.isFinite, std >= 0 else {
                throw SwiftCNNError.value(
                    "Tensor.random: normal needs a finite mean and a finite standardDeviation >= 0, got mean \(mean), standardDeviation \(std)")
            }
        }
        let t = try Tensor(zeros: shape)
        switch distribution {
        case .uniform(let low, let high):
            let (lo, hi) = (Scalar(low), Scalar(high))
            for i in 0..<t.count { t.pointer[i] = generator.uniform(lo, hi) }
        case .normal(let mean, let std):
            initializeNormal(t, mean: Scalar(mean), standardDeviation: Scalar(std), generator: &generator)
        }
        return t
    }
}

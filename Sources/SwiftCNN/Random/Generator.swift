/// A small, seedable, deterministic pseudo-random generator: xoshiro256** seeded through SplitMix64.
///
/// - Same seed, same sequence, on every platform and build: weights initialized with `seed: 42`
///   are bit-identical run to run (the library's determinism rule).
/// - xoshiro256** (Blackman and Vigna, 2018) has a 2^256 - 1 period and passes BigCrush; it is four
///   shifts, rotates and xors per draw. Its state must not be all zeros, and nearby seeds must not give
///   correlated streams, so the seed is expanded by SplitMix64, the seeding its authors recommend.
/// - A value type: copying a generator forks the stream. No global state; `manual_seed` in Python
///   picks the seeds handed to layer initializers.
public struct RandomGenerator: RandomNumberGenerator, Sendable {
    @usableFromInline var s0, s1, s2, s3: UInt64

    /// A generator whose whole stream is determined by `seed` (any value, including 0).
    public init(seed: UInt64) {
        var sm = seed
        @inline(__always) func splitMix64(_ x: inout UInt64) -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s0 = splitMix64(&sm)
        s1 = splitMix64(&sm)
        s2 = splitMix64(&sm)
        s3 = splitMix64(&sm)
        // SplitMix64 is a bijection of its counter, so four consecutive outputs are never all zero.
    }

    /// The next 64 uniformly distributed bits (xoshiro256**).
    @inlinable
    public mutating func nextUInt64() -> UInt64 {
        let result = Self.rotateLeft(s1 &* 5, 7) &* 9
        let t = s1 << 17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = Self.rotateLeft(s3, 45)
        return result
    }

    @inlinable @inline(__always)
    static func rotateLeft(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    /// `RandomNumberGenerator` conformance, so the standard library's `shuffle(using:)` etc. work.
    @inlinable
    public mutating func next() -> UInt64 { nextUInt64() }

    /// A Double uniform in [0, 1): the top 53 bits, scaled by 2^-53. Every value is a multiple of
    /// 2^-53, so 1.0 is never returned.
    @inlinable
    public mutating func nextUnitDouble() -> Double {
        Double(nextUInt64() >> 11) * 0x1p-53
    }

    /// A value uniform in [low, high): `low + (high - low) * u`, computed in Double and rounded to T.
    ///
    /// Rounding to Float can land exactly on `high`; such a draw is moved to the largest T below
    /// `high`, so the interval stays half-open as PyTorch's `uniform_`. Returns `low` (drawing
    /// nothing) unless low < high.
    @inlinable
    public mutating func uniform<T: CNNScalar>(_ low: T, _ high: T) -> T {
        guard low < high else { return low }
        let lo = Double(low), hi = Double(high)
        let v = T(lo + (hi - lo) * nextUnitDouble())
        return v < high ? v : high.nextDown
    }

    /// A standard normal draw N(0, 1), by Marsaglia's polar method.
    ///
    /// Draws (u, v) uniform in the square [-1, 1)^2 until s = u^2 + v^2 is in (0, 1) (probability
    /// pi/4 per try), then returns u * sqrt(-2 ln(s) / s). Only log and sqrt are needed, and the method
    /// is exact (no tables). The second normal of the pair is dropped to keep the generator a plain
    /// four-word state.
    @inlinable
    public mutating func normal<T: CNNScalar>() -> T {
        while true {
            let u = 2 * nextUnitDouble() - 1
            let v = 2 * nextUnitDouble() - 1
            let s = u * u + v * v
            if s > 0 && s < 1 {
                return T(u * (-2 * Double.log(s) / s).squareRoot())
            }
        }
    }

    /// A normal draw with the given mean and standard deviation.
    @inlinable
    public mutating func normal<T: CNNScalar>(mean: T, standardDeviation: T) -> T {
        let z: T = normal()
        return mean + standardDeviation * z
    }
}

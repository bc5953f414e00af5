import XCTest
import SwiftCNN

// The helpers both test targets share (SwiftCNNTests and SwiftCNNCAPITests; a library target that
// only they depend on). Public API of SwiftCNN only, so no @testable import here.
//
//   TestRNG                       seeded SplitMix64 (independent of the library's generator)
//   randomArray / randomTensor    uniform values, seeded
//   distinctRandomTensor          values with pairwise gaps >= a given spacing (no ties: max-pool, ReLU)
//   numericalGradient             central finite differences of a scalar function of a Tensor<Double>
//   weightedSum                   sum(t * r), the usual scalar loss for gradient checks
//   relativeError / maxAbs        max|a - b| / max|b|, as the spec measures gradient errors
//   assertRelativeError           XCTAssert wrapper of relativeError
//   converted                     Tensor<Double> -> Tensor<Float> (and back) with the same values

/// A small seeded generator (SplitMix64), so tests do not depend on the library's RandomGenerator.
public struct TestRNG {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    public mutating func unit() -> Double { Double(next() >> 11) * 0x1p-53 }

    /// Uniform in [low, high) (default [-1, 1)).
    public mutating func uniform(_ low: Double = -1, _ high: Double = 1) -> Double { low + (high - low) * unit() }

    /// Uniform integer in range.
    public mutating func int(_ range: ClosedRange<Int>) -> Int {
        range.lowerBound + Int(next() % UInt64(range.upperBound - range.lowerBound + 1))
    }
}

/// `count` values uniform in [low, high) (default [-1, 1)), seeded. Float arrays are the Double
/// values rounded, so the same seed gives "the same" data in both types.
public func randomArray<T: CNNScalar>(_ count: Int, seed: UInt64, _ low: Double = -1, _ high: Double = 1,
                                      as: T.Type = T.self) -> [T] {
    var rng = TestRNG(seed: seed)
    return (0..<count).map { _ in T(rng.uniform(low, high)) }
}

/// A tensor of `shape` filled by `randomArray`.
public func randomTensor<T: CNNScalar>(_ shape: [Int], seed: UInt64, _ low: Double = -1, _ high: Double = 1,
                                       as: T.Type = T.self) -> Tensor<T> {
    let count = shape.reduce(1, *)
    return try! Tensor(shape: shape, scalars: randomArray(count, seed: seed, low, high, as: T.self))
}

/// A tensor whose values are a seeded random permutation of `offset + spacing * (0..<count)`
/// (centred on 0 by default), plus a little jitter below spacing/4: every pair of values differs by
/// more than spacing/2. Keeps max-pool windows and ReLU inputs away from ties and kinks for finite
/// differences with eps << spacing.
public func distinctRandomTensor<T: CNNScalar>(_ shape: [Int], seed: UInt64, spacing: Double = 0.01,
                                               as: T.Type = T.self) -> Tensor<T> {
    let count = shape.reduce(1, *)
    var rng = TestRNG(seed: seed)
    var values = (0..<count).map { Double($0) - Double(count - 1) / 2 }
    for i in stride(from: count - 1, to: 0, by: -1) {  // Fisher-Yates
        values.swapAt(i, rng.int(0...i))
    }
    let scalars = values.map { T(($0 + rng.uniform(-0.25, 0.25)) * spacing) }
    return try! Tensor(shape: shape, scalars: scalars)
}

/// Central finite differences: d f / d x[i] ~ (f(x + eps e_i) - f(x - eps e_i)) / (2 eps), for every
/// element of `x` (or only those in `indices`; the others are reported as 0). `x` is perturbed in
/// place and restored exactly.
public func numericalGradient(of f: (Tensor<Double>) throws -> Double, at x: Tensor<Double>,
                              eps: Double = 1e-6, indices: [Int]? = nil) rethrows -> [Double] {
    var grad = [Double](repeating: 0, count: x.count)
    for i in indices ?? Array(0..<x.count) {
        let saved = x[flat: i]
        x[flat: i] = saved + eps
        let plus = try f(x)
        x[flat: i] = saved - eps
        let minus = try f(x)
        x[flat: i] = saved
        grad[i] = (plus - minus) / (2 * eps)
    }
    return grad
}

/// sum_i t[i] * r[i], accumulated in Double.
public func weightedSum<T: CNNScalar>(_ t: Tensor<T>, _ r: [Double]) -> Double {
    precondition(t.count == r.count)
    var s = 0.0
    for i in 0..<t.count { s += Double(t[flat: i]) * r[i] }
    return s
}

/// max |a|.
public func maxAbs<T: BinaryFloatingPoint>(_ a: [T]) -> Double {
    a.reduce(0.0) { max($0, Swift.abs(Double($1))) }
}

/// max|a - b| / max|b|, the spec's per-tensor error (b is the reference). If b is all zeros,
/// returns max|a - b|. NaN anywhere gives .infinity.
public func relativeError<A: BinaryFloatingPoint, B: BinaryFloatingPoint>(_ a: [A], _ b: [B]) -> Double {
    precondition(a.count == b.count, "relativeError: \(a.count) vs \(b.count) elements")
    var diff = 0.0, scale = 0.0
    for i in 0..<a.count {
        let x = Double(a[i]), y = Double(b[i])
        if x.isNaN || y.isNaN { return .infinity }
        diff = max(diff, Swift.abs(x - y))
        scale = max(scale, Swift.abs(y))
    }
    return scale == 0 ? diff : diff / scale
}

/// Asserts relativeError(actual, expected) <= tolerance.
public func assertRelativeError<A: BinaryFloatingPoint, B: BinaryFloatingPoint>(
    _ actual: [A], _ expected: [B], _ tolerance: Double, _ message: @autoclosure () -> String = "",
    file: StaticString = #filePath, line: UInt = #line
) {
    let e = relativeError(actual, expected)
    XCTAssertLessThanOrEqual(e, tolerance, "relative error \(e) > \(tolerance) \(message())", file: file, line: line)
}

/// A tensor of another scalar type holding the same values (rounded).
public func converted<A: CNNScalar, B: CNNScalar>(_ t: Tensor<A>, to: B.Type = B.self) -> Tensor<B> {
    try! Tensor(shape: t.shape, scalars: t.scalars.map { B($0) })
}

/// Asserts that `body` throws a SwiftCNNError of `kind` (and, if given, that its message contains
/// `contains`).
public func assertThrowsKind<R>(_ kind: SwiftCNNError.Kind, contains: String? = nil,
                                file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> R) {
    do {
        _ = try body()
        XCTFail("expected a \(kind) error, nothing was thrown", file: file, line: line)
    } catch let e as SwiftCNNError {
        XCTAssertEqual(e.kind, kind, "wrong kind for: \(e.message)", file: file, line: line)
        if let contains {
            XCTAssertTrue(e.message.contains(contains), "message \"\(e.message)\" lacks \"\(contains)\"",
                          file: file, line: line)
        }
    } catch {
        XCTFail("unexpected error type: \(error)", file: file, line: line)
    }
}

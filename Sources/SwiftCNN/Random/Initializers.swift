/// Fills `t` with independent draws from U(-bound, bound), in row-major order.
///
/// With `bound == 0` every element is 0. The draw order is part of the contract: a layer created with
/// the same seed gets the same weights.
// @_specialize as well as @inlinable: layer initializers call this from generic, non-inlined code,
// where only the specializations' runtime type check keeps the loop fast (~1 ns per element, not ~75).
@inlinable
@_specialize(where T == Float)
@_specialize(where T == Double)
public func initializeUniform<T: CNNScalar>(_ t: Tensor<T>, bound: T, generator: inout RandomGenerator) {
    let p = t.pointer
    if bound == 0 {
        t.zero()
        return
    }
    for i in 0..<t.count {
        p[i] = generator.uniform(-bound, bound)
    }
}

/// Fills `t` with independent draws from N(mean, std^2), in row-major order.
@inlinable
public func initializeNormal<T: CNNScalar>(_ t: Tensor<T>, mean: T = 0, standardDeviation: T = 1,
                                           generator: inout RandomGenerator) {
    let p = t.pointer
    for i in 0..<t.count {
        p[i] = generator.normal(mean: mean, standardDeviation: standardDeviation)
    }
}

/// PyTorch's default initialization of `nn.Conv2d` and `nn.Linear`:
///
///     weight ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)),   bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))
///
/// fan_in = in_channels * kH * kW (conv) or in_features (linear). PyTorch writes it as
/// `kaiming_uniform_(w, a=sqrt(5))`, whose bound gain * sqrt(3 / fan_in) with
/// gain = sqrt(2 / (1 + a^2)) = sqrt(1/3) is exactly 1/sqrt(fan_in). The weight is drawn first, then
/// the bias, from one generator seeded with `seed`. (Same distribution as PyTorch, not the same
/// numbers: the generators differ.)
@inlinable
public func initializeDefault<T: CNNScalar>(weight: Tensor<T>, bias: Tensor<T>?, fanIn: Int, seed: UInt64) {
    var generator = RandomGenerator(seed: seed)
    let bound = fanIn > 0 ? T(1 / Double(fanIn).squareRoot()) : 0
    initializeUniform(weight, bound: bound, generator: &generator)
    if let bias { initializeUniform(bias, bound: bound, generator: &generator) }
}

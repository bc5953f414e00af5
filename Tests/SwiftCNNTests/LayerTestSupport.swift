import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport

// Helpers of the layer, Sequential and lecture-network tests (H2's; the op-level helpers are in
// the SwiftCNNTestSupport target).

/// Checks a Double layer's backward against central finite differences of
/// L(x, params) = sum(layer.forward(x) * R), R uniform in [-1, 1) from `seed`:
/// dL/dx from backward(R), dL/dparam from the grads it accumulates (after zeroGrad), each against
/// numericalGradient with the spec's per-tensor error max|a - n| / max|n| <= tolerance.
///
/// `sample`: for big tensors, check only the `sample` positions of largest |analytic| gradient (so
/// max|n| is the tensor's, not a random subset's) plus `sample` seeded random positions.
func assertLayerGradients(_ layer: any Layer<Double>, input x: Tensor<Double>, seed: UInt64 = 99,
                          tolerance: Double = 1e-7, eps: Double = 1e-6, sample: Int? = nil,
                          file: StaticString = #filePath, line: UInt = #line) throws {
    let y = try layer.forward(x)
    let r = randomArray(y.count, seed: seed, as: Double.self)
    let gradOut = try Tensor(shape: y.shape, scalars: r)
    try layer.zeroGrad()
    let gradX = try layer.backward(gradOut).scalars
    let loss: (Tensor<Double>) throws -> Double = { _ in weightedSum(try layer.forward(x), r) }

    func check(_ analytic: [Double], _ t: Tensor<Double>, _ salt: UInt64, _ what: String) throws {
        var indices = Array(0..<t.count)
        if let sample, 2 * sample < t.count {
            var rng = TestRNG(seed: seed &+ salt)
            let largest = indices.sorted { abs(analytic[$0]) > abs(analytic[$1]) }.prefix(sample)
            indices = Array(Set(largest).union((0..<sample).map { _ in rng.int(0...(t.count - 1)) })).sorted()
        }
        let numeric = try numericalGradient(of: loss, at: t, eps: eps, indices: indices)
        assertRelativeError(indices.map { analytic[$0] }, indices.map { numeric[$0] }, tolerance, what, file: file, line: line)
    }
    try check(gradX, x, 0, "input")
    for (k, p) in layer.parameters.enumerated() {
        try check(p.grad.scalars, p.data, UInt64(k + 1), p.name)
    }
}

/// The lecture's network: LeNet-5 with sigmoids (or ReLUs), for (N, 1, 28, 28) inputs.
func lectureNetwork<T: CNNScalar>(_: T.Type = T.self, relu: Bool = false, seed: UInt64 = 1) throws -> Sequential<T> {
    func act() -> any Layer<T> { relu ? ReLU<T>() : Sigmoid<T>() }
    return try Sequential<T>(
        Conv2d(inChannels: 1, outChannels: 6, kernelSize: (5, 5), padding: (2, 2), seed: seed), act(),
        MaxPool2d(kernelSize: (2, 2)),
        Conv2d(inChannels: 6, outChannels: 16, kernelSize: (5, 5), seed: seed + 1), act(),
        MaxPool2d(kernelSize: (2, 2)),
        Flatten(),
        Linear(inFeatures: 400, outFeatures: 120, seed: seed + 2), act(),
        Linear(inFeatures: 120, outFeatures: 84, seed: seed + 3), act(),
        Linear(inFeatures: 84, outFeatures: 10, seed: seed + 4))
}

/// Copies every parameter value of `source` into `target` (same architecture), converting the type.
func copyParameters<A: CNNScalar, B: CNNScalar>(from source: any Layer<A>, to target: any Layer<B>) {
    for (s, t) in zip(source.parameters, target.parameters) {
        precondition(s.name == t.name && s.data.shape == t.data.shape)
        for i in 0..<s.data.count { t.data[flat: i] = B(s.data[flat: i]) }
    }
}

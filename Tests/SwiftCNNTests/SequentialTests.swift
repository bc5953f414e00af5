import Dispatch
import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport

final class SequentialTests: XCTestCase {
    func testParameterNamesFollowPyTorch() throws {
        let inner = try Sequential<Float>(Linear<Float>(inFeatures: 4, outFeatures: 3, seed: 1), ReLU<Float>())
        let model = try Sequential<Float>(
            Conv2d<Float>(inChannels: 1, outChannels: 2, kernelSize: (3, 3), seed: 2), Sigmoid<Float>(),
            Flatten<Float>(), Linear<Float>(inFeatures: 2 * 3 * 3, outFeatures: 4, bias: false, seed: 3), inner)
        XCTAssertEqual(model.parameters.map(\.name), ["0.weight", "0.bias", "3.weight", "4.0.weight", "4.0.bias"])
        XCTAssertEqual(model.parameters.map(\.data.shape), [[2, 1, 3, 3], [2], [4, 18], [3, 4], [3]])
        XCTAssertEqual(inner.parameters.map(\.name), ["0.weight", "0.bias"])
        XCTAssertEqual(model.layers.count, 5)
        XCTAssertEqual(try model.outputShape(forInput: [7, 1, 5, 5]), [7, 3])
        XCTAssertEqual(model.description, """
            Sequential(
              (0): Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1))
              (1): Sigmoid()
              (2): Flatten(start_dim=1, end_dim=-1)
              (3): Linear(in_features=18, out_features=4, bias=False)
              (4): Sequential(
                (0): Linear(in_features=4, out_features=3, bias=True)
                (1): ReLU()
              )
            )
            """)
    }

    /// A Sequential holds the very objects given: parameters are the same memory, and training
    /// through the model is seen through the layer (and the other way round).
    func testLayersAndParametersAreShared() throws {
        let linear = try Linear<Double>(inFeatures: 3, outFeatures: 2, seed: 4)
        let model = try Sequential<Double>(linear, Sigmoid<Double>())
        XCTAssertTrue(model.layers[0] === linear)
        XCTAssertEqual(model.parameters[0].data.pointer, linear.weight.data.pointer)
        XCTAssertEqual(model.parameters[0].grad.pointer, linear.weight.grad.pointer)
        let other = try Sequential<Double>(linear)  // the same layer in two models is fine
        let x = randomTensor([2, 3], seed: 5, as: Double.self)
        _ = try model.forward(x)
        _ = try model.backward(randomTensor([2, 2], seed: 6, as: Double.self))
        XCTAssertTrue(linear.weight.grad.scalars.contains { $0 != 0 })
        try other.zeroGrad()
        XCTAssertTrue(linear.weight.grad.scalars.allSatisfy { $0 == 0 })
        linear.weight.data[flat: 0] = 42
        XCTAssertEqual(model.parameters[0].data[flat: 0], 42)
    }

    func testForwardChainsAndBackwardMatchesManualChain() throws {
        let conv = try Conv2d<Double>(inChannels: 1, outChannels: 2, kernelSize: (3, 3), padding: (1, 1), seed: 7)
        let pool = try AvgPool2d<Double>(kernelSize: (2, 2))
        let flat = Flatten<Double>()
        let fc = try Linear<Double>(inFeatures: 2 * 2 * 2, outFeatures: 3, seed: 8)
        let model = try Sequential<Double>(conv, pool, flat, fc)
        let x = randomTensor([2, 1, 4, 4], seed: 9, as: Double.self)
        let g = randomTensor([2, 3], seed: 10, as: Double.self)
        let y = try model.forwardView(x)
        XCTAssertEqual(y.pointer, fc.output!.pointer)  // a view of the last layer's buffer, no copy
        XCTAssertNotEqual(try model.forward(x).pointer, fc.output!.pointer)  // forward: a copy
        let expected = try linear(flat.forward(avgPool2d(conv2d(x, weight: conv.weight.data, bias: conv.bias!.data,
                                                                 padding: (1, 1)), kernelSize: (2, 2))),
                                  weight: fc.weight.data, bias: fc.bias!.data)
        assertRelativeError(y.scalars, expected.scalars, 1e-15)
        _ = try model.forward(x)
        let gx = try model.backward(g).scalars
        // The same chain by hand, reversed.
        let g3 = try linearBackward(gradOut: g, x: flat.forward(pool.forward(conv.forward(x))), weight: fc.weight.data)
        let g1 = try avgPool2dBackward(gradOut: g3.gradX.reshaped([2, 2, 2, 2]), x: conv.forward(x), kernelSize: (2, 2))
        let g0 = try conv2dBackward(gradOut: g1, x: x, weight: conv.weight.data, padding: (1, 1))
        assertRelativeError(gx, g0.gradX.scalars, 1e-15)
        try assertLayerGradients(model, input: x)
    }

    /// Sequential fuses Conv2d + ReLU / Sigmoid (the convolution activates its own output) and
    /// ReLU / Sigmoid + MaxPool2d in backward (the pool applies the activation's backward per
    /// plane): the output and every gradient are bit-identical to running the layers one by one,
    /// for a direct-kernel convolution and a strided (GEMM) one, non-overlapping and overlapping
    /// pools, in Float and Double.
    private func checkFusedConvActivation<T: CNNScalar>(_: T.Type) throws {
        for relu in [false, true] {
            for (stride, overlap) in [(1, false), (2, false), (1, true)] {
                let conv = try Conv2d<T>(inChannels: 3, outChannels: 8, kernelSize: (3, 3), stride: (stride, stride),
                                         padding: (1, 1), seed: 21)
                let act: any Layer<T> = relu ? ReLU<T>() : Sigmoid<T>()
                let pool = overlap ? try MaxPool2d<T>(kernelSize: (3, 3), stride: (2, 2), padding: (1, 1))
                                   : try MaxPool2d<T>(kernelSize: (2, 2))
                let model = try Sequential<T>(conv, act, pool)
                let x = randomTensor([4, 3, 12, 12], seed: 22, as: T.self)
                let y = try model.forward(x).scalars
                let shape = try model.outputShape(forInput: x.shape)
                let g = randomTensor(shape, seed: 23, as: T.self)
                let gx = try model.backward(g).scalars
                let dw = conv.weight.grad.scalars, db = conv.bias!.grad.scalars
                // The same layers one by one (fresh gradients).
                try model.zeroGrad()
                let c = try conv.forward(x).copy()
                let a = try act.forward(c).copy()
                XCTAssertEqual(try pool.forward(a).scalars, y, "forward relu \(relu) stride \(stride) overlap \(overlap) \(T.self)")
                let ga = try pool.backward(g).copy()
                let gc = try act.backward(ga).copy()
                XCTAssertEqual(try conv.backward(gc).scalars, gx, "grad_x relu \(relu) stride \(stride) overlap \(overlap) \(T.self)")
                XCTAssertEqual(conv.weight.grad.scalars, dw, "grad_weight relu \(relu) stride \(stride) \(T.self)")
                XCTAssertEqual(conv.bias!.grad.scalars, db, "grad_bias relu \(relu) stride \(stride) \(T.self)")
            }
        }
    }

    func testFusedConvActivationMatchesSeparateLayers() throws {
        try checkFusedConvActivation(Float.self)
        try checkFusedConvActivation(Double.self)
    }

    /// backward(_, inputGradient: false), the fused training step's call, skips only the input
    /// gradient: the parameter gradients are those of backward(_:), bit for bit, for a network whose
    /// first layer is a convolution and for one nested in another Sequential.
    func testBackwardWithoutInputGradientAccumulatesTheSameParameterGradients() throws {
        for nested in [false, true] {
            let a = try lectureNetwork(Float.self, seed: 3), b = try lectureNetwork(Float.self, seed: 3)
            let modelA = nested ? try Sequential<Float>(a) : a, modelB = nested ? try Sequential<Float>(b) : b
            let x = randomTensor([5, 1, 28, 28], seed: 4, as: Float.self)
            let g = randomTensor([5, 10], seed: 5, as: Float.self)
            _ = try modelA.forward(x)
            _ = try modelB.forward(x)
            XCTAssertNotNil(try modelA.backward(g, inputGradient: true))
            XCTAssertNil(try modelB.backward(g, inputGradient: false))
            for (pa, pb) in zip(modelA.parameters, modelB.parameters) {
                XCTAssertEqual(pa.grad.scalars, pb.grad.scalars, "\(pa.name) nested \(nested)")
            }
            XCTAssertTrue(modelA.parameters.contains { p in p.grad.scalars.contains { $0 != 0 } })
        }
    }

    func testEmptySequentialIsIdentity() throws {
        let model = try Sequential<Float>([])
        let x = randomTensor([2, 3], seed: 11, as: Float.self)
        XCTAssertEqual(try model.forward(x).scalars, x.scalars)
        XCTAssertEqual(try model.backward(x).scalars, x.scalars)
        XCTAssertTrue(model.parameters.isEmpty)
        XCTAssertEqual(model.description, "Sequential()")
    }

    func testSameLayerTwiceIsRejected() throws {
        let sig = Sigmoid<Float>()
        assertThrowsKind(.value, contains: "layer 2 is the same object as an earlier layer") {
            try Sequential<Float>(sig, ReLU<Float>(), sig)
        }
        let inner = try Sequential<Float>(sig)
        assertThrowsKind(.value, contains: "layer 1.0 is the same object") { try Sequential<Float>(sig, inner) }
        assertThrowsKind(.value) { try Sequential<Float>(inner, inner) }
    }

    func testErrorsNameTheLayer() throws {
        let model = try Sequential<Float>(Flatten<Float>(), Linear<Float>(inFeatures: 10, outFeatures: 2, seed: 1))
        assertThrowsKind(.value, contains: "layer 1: Linear: weight must have 12 input features") {
            try model.forward(Tensor<Float>(zeros: [2, 3, 4]))
        }
        // A failed forward leaves nothing for backward.
        assertThrowsKind(.runtime, contains: "Sequential: backward called before forward") {
            try model.backward(Tensor<Float>(zeros: [2, 2]))
        }
        _ = try model.forward(Tensor<Float>(zeros: [2, 10]))
        assertThrowsKind(.value, contains: "Sequential.backward: grad_out must have shape (2, 2), got (2, 3)") {
            try model.backward(Tensor<Float>(zeros: [2, 3]))
        }
    }

    /// A child run on its own between the model's forward and backward: a runtime error, no trap.
    func testChildUsedStandaloneInBetween() throws {
        let linear = try Linear<Float>(inFeatures: 4, outFeatures: 2, seed: 2)
        let model = try Sequential<Float>(linear, Sigmoid<Float>())
        _ = try model.forward(Tensor<Float>(zeros: [3, 4]))
        _ = try linear.forward(Tensor<Float>(zeros: [5, 4]))
        assertThrowsKind(.runtime, contains: "layer 0 was run on another input") {
            try model.backward(Tensor<Float>(zeros: [3, 2]))
        }
    }

    func testBusySequentialRejectsASecondThread() throws {
        let model = try Sequential<Float>(ReLU<Float>())
        let entered = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0), done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            _ = try? model.access.run {
                entered.signal()
                release.wait()
            }
            done.signal()
        }
        entered.wait()
        assertThrowsKind(.runtime, contains: "Sequential is in use by another thread") {
            try model.forward(Tensor<Float>(zeros: [1, 1]))
        }
        release.signal()
        done.wait()
        XCTAssertEqual(try model.forward(Tensor<Float>(zeros: [1, 1])).shape, [1, 1])
    }
}

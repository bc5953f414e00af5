import Dispatch
import Synchronization
import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport

final class LayerTests: XCTestCase {
    // MARK: gradients vs finite differences (Double)

    func testConv2dGradients() throws {
        let conv = try Conv2d<Double>(inChannels: 2, outChannels: 3, kernelSize: (3, 2), stride: (2, 1),
                                      padding: (1, 1), dilation: (1, 2), seed: 1)
        try assertLayerGradients(conv, input: randomTensor([2, 2, 6, 7], seed: 2, as: Double.self))
        let noBias = try Conv2d<Double>(inChannels: 3, outChannels: 2, kernelSize: (2, 2), bias: false, seed: 3)
        XCTAssertNil(noBias.bias)
        XCTAssertEqual(noBias.parameters.map(\.name), ["weight"])
        try assertLayerGradients(noBias, input: randomTensor([1, 3, 4, 5], seed: 4, as: Double.self))
    }

    func testPoolGradients() throws {
        // Distinct values (gaps >= 0.005 >> eps): no ties, so max pooling is differentiable there.
        let x = distinctRandomTensor([2, 3, 7, 6], seed: 5, spacing: 0.01, as: Double.self)
        try assertLayerGradients(MaxPool2d<Double>(kernelSize: (2, 2)), input: x)
        try assertLayerGradients(MaxPool2d<Double>(kernelSize: (3, 3), stride: (2, 1), padding: (1, 1)), input: x)
        try assertLayerGradients(AvgPool2d<Double>(kernelSize: (2, 3)), input: x)
        try assertLayerGradients(AvgPool2d<Double>(kernelSize: (3, 3), stride: (2, 2), padding: (1, 1)), input: x)
    }

    func testLinearGradients() throws {
        try assertLayerGradients(Linear<Double>(inFeatures: 7, outFeatures: 4, seed: 6),
                                 input: randomTensor([5, 7], seed: 7, as: Double.self))
        try assertLayerGradients(Linear<Double>(inFeatures: 3, outFeatures: 2, bias: false, seed: 8),
                                 input: randomTensor([2, 3], seed: 9, as: Double.self))
    }

    func testActivationAndFlattenGradients() throws {
        try assertLayerGradients(Sigmoid<Double>(), input: randomTensor([3, 2, 4], seed: 10, -4, 4, as: Double.self))
        // ReLU: inputs at least 0.01 away from the kink.
        try assertLayerGradients(ReLU<Double>(), input: distinctRandomTensor([2, 3, 5], seed: 11, spacing: 0.02, as: Double.self))
        try assertLayerGradients(Flatten<Double>(), input: randomTensor([2, 3, 2, 2], seed: 12, as: Double.self))
    }

    // MARK: state rules

    func allLayers<T: CNNScalar>(_: T.Type) throws -> [(any Layer<T>, Tensor<T>)] {
        let image = randomTensor([2, 2, 6, 6], seed: 13, as: T.self)
        return [
            (try Conv2d<T>(inChannels: 2, outChannels: 3, kernelSize: (3, 3), seed: 1), image),
            (try MaxPool2d<T>(kernelSize: (2, 2)), image),
            (try AvgPool2d<T>(kernelSize: (2, 2)), image),
            (try Linear<T>(inFeatures: 5, outFeatures: 3, seed: 2), randomTensor([4, 5], seed: 14, as: T.self)),
            (Sigmoid<T>(), image),
            (ReLU<T>(), image),
            (Flatten<T>(), image),
            (try Sequential<T>(Flatten<T>(), Linear<T>(inFeatures: 72, outFeatures: 2, seed: 3)), image),
        ]
    }

    func testBackwardBeforeForwardIsRuntimeError() throws {
        for (layer, x) in try allLayers(Float.self) {
            XCTAssertNil(layer.lastInputShape)
            assertThrowsKind(.runtime, contains: "backward called before forward") { try layer.backward(x) }
        }
    }

    func testGradOutOfWrongShapeIsValueError() throws {
        for (layer, x) in try allLayers(Float.self) {
            let y = try layer.forward(x)
            XCTAssertEqual(y.shape, try layer.outputShape(forInput: x.shape))
            XCTAssertEqual(layer.lastInputShape, x.shape)
            let wrong = try Tensor<Float>(zeros: [y.shape[0] + 1] + y.shape.dropFirst())
            assertThrowsKind(.value, contains: "grad_out must have shape \(describeShape(y.shape))") { try layer.backward(wrong) }
            // ... and the layer is still usable.
            XCTAssertEqual(try layer.backward(Tensor<Float>(zeros: y.shape)).shape, x.shape)
        }
    }

    func testEmptyBatch() throws {
        for (layer, x) in try allLayers(Double.self) {
            let empty = try Tensor<Double>(zeros: [0] + x.shape.dropFirst())
            let y = try layer.forward(empty)
            XCTAssertEqual(y.shape, try layer.outputShape(forInput: empty.shape))
            XCTAssertEqual(y.shape[0], 0)
            try layer.zeroGrad()
            XCTAssertEqual(try layer.backward(Tensor<Double>(zeros: y.shape)).shape, empty.shape)
            for p in layer.parameters { XCTAssertTrue(p.grad.scalars.allSatisfy { $0 == 0 }, p.name) }
        }
    }

    /// backward adds into the parameter grads; zeroGrad zeroes them in place.
    func testGradientsAccumulateAndZeroGrad() throws {
        let conv = try Conv2d<Double>(inChannels: 1, outChannels: 2, kernelSize: (2, 2), seed: 4)
        let x = randomTensor([2, 1, 4, 4], seed: 15, as: Double.self)
        let g = randomTensor([2, 2, 3, 3], seed: 16, as: Double.self)
        _ = try conv.forward(x)
        _ = try conv.backward(g)
        let once = conv.parameters.map { $0.grad.scalars }
        let gradX1 = try conv.backward(g).scalars  // the input gradient is not accumulated
        for (p, o) in zip(conv.parameters, once) {
            assertRelativeError(p.grad.scalars, o.map { 2 * $0 }, 1e-15)
        }
        XCTAssertEqual(try conv.backward(g).scalars, gradX1)
        let gradPointer = conv.weight.grad.pointer
        try conv.zeroGrad()
        XCTAssertEqual(conv.weight.grad.pointer, gradPointer)
        XCTAssertTrue(conv.parameters.allSatisfy { $0.grad.scalars.allSatisfy { $0 == 0 } })
    }

    /// Output buffers are reused while the shape stays; a layer fed its own output gets a new one.
    func testBufferReuse() throws {
        let sig = Sigmoid<Float>()
        let x = randomTensor([3, 4], seed: 17, as: Float.self)
        let y1 = try sig.forwardView(x)
        let y2 = try sig.forwardView(x)
        XCTAssertEqual(y1.pointer, y2.pointer)
        let y3 = try sig.forwardView(y2)  // would overwrite its own input
        XCTAssertNotEqual(y3.pointer, y2.pointer)
        let expected = try sigmoid(sigmoid(x)).scalars
        XCTAssertEqual(y3.scalars, expected)
        let linear = try Linear<Float>(inFeatures: 4, outFeatures: 4, seed: 5)
        let a = try linear.forwardView(x)
        let b = try linear.forwardView(a)
        XCTAssertNotEqual(a.pointer, b.pointer)
        XCTAssertEqual(b.scalars, try linear.forward(Tensor(shape: [3, 4], scalars: a.scalars)).scalars)
    }

    /// A layer keeps a view of its input, not a copy: changing x before backward changes dW.
    func testLayerKeepsAViewOfItsInput() throws {
        let linear = try Linear<Double>(inFeatures: 3, outFeatures: 2, seed: 6)
        let x = randomTensor([4, 3], seed: 18, as: Double.self)
        _ = try linear.forward(x)
        x.zero()
        _ = try linear.backward(randomTensor([4, 2], seed: 19, as: Double.self))
        XCTAssertTrue(linear.weight.grad.scalars.allSatisfy { $0 == 0 })
    }

    func testForwardErrorsNameTheArgument() throws {
        let conv = try Conv2d<Float>(inChannels: 3, outChannels: 4, kernelSize: (3, 3), seed: 7)
        assertThrowsKind(.value, contains: "Conv2d: weight must have 2 input channels to match x (1, 2, 8, 8), got shape (4, 3, 3, 3)") {
            try conv.forward(Tensor<Float>(zeros: [1, 2, 8, 8]))
        }
        assertThrowsKind(.value, contains: "Conv2d: x must be 4-D") { try conv.forward(Tensor<Float>(zeros: [3, 8, 8])) }
        assertThrowsKind(.value, contains: "Linear: weight must have 6 input features to match x (2, 6)") {
            try Linear<Float>(inFeatures: 5, outFeatures: 2, seed: 1).forward(Tensor<Float>(zeros: [2, 6]))
        }
        assertThrowsKind(.value, contains: "Flatten: x must have at least 2 dimensions (N, ...), got shape (5,)") {
            try Flatten<Float>().forward(Tensor<Float>(zeros: [5]))
        }
        assertThrowsKind(.value, contains: "MaxPool2d: kernel height 3 is larger than the padded input height 2") {
            try MaxPool2d<Float>(kernelSize: (3, 3)).forward(Tensor<Float>(zeros: [1, 1, 2, 5]))
        }
    }

    func testConstructorValidation() throws {
        assertThrowsKind(.value, contains: "Conv2d: inChannels must be >= 1, got 0") {
            try Conv2d<Float>(inChannels: 0, outChannels: 1, kernelSize: (3, 3), seed: 0)
        }
        assertThrowsKind(.value, contains: "Conv2d: kernelSize must be >= 1, got (0, 3)") {
            try Conv2d<Float>(inChannels: 1, outChannels: 1, kernelSize: (0, 3), seed: 0)
        }
        assertThrowsKind(.value, contains: "Conv2d: padding must be >= 0") {
            try Conv2d<Float>(inChannels: 1, outChannels: 1, kernelSize: (3, 3), padding: (-1, 0), seed: 0)
        }
        assertThrowsKind(.value, contains: "Conv2d: dilation must be >= 1") {
            try Conv2d<Float>(inChannels: 1, outChannels: 1, kernelSize: (3, 3), dilation: (1, 0), seed: 0)
        }
        assertThrowsKind(.overflow) {
            try Conv2d<Float>(inChannels: 1 << 40, outChannels: 1 << 40, kernelSize: (1 << 40, 1), seed: 0)
        }
        assertThrowsKind(.value, contains: "Linear: outFeatures must be >= 1, got 0") {
            try Linear<Float>(inFeatures: 3, outFeatures: 0, seed: 0)
        }
        assertThrowsKind(.value, contains: "MaxPool2d: padding must be at most half of kernel_size (3, 3), got (2, 0)") {
            try MaxPool2d<Float>(kernelSize: (3, 3), padding: (2, 0))
        }
        assertThrowsKind(.value, contains: "AvgPool2d: stride must be >= 1, got (0, 1)") {
            try AvgPool2d<Float>(kernelSize: (2, 2), stride: (0, 1))
        }
        let pool = try MaxPool2d<Float>(kernelSize: (3, 2))
        XCTAssertTrue(pool.stride == (3, 2))  // stride defaults to kernel_size
    }

    /// PyTorch's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias, by seed.
    func testDefaultInitialization() throws {
        let conv = try Conv2d<Double>(inChannels: 4, outChannels: 50, kernelSize: (3, 3), seed: 42)
        let bound = 1 / 36.0.squareRoot()  // fan_in = 4 * 3 * 3
        let w = conv.weight.data.scalars
        XCTAssertTrue(w.allSatisfy { abs($0) < bound })
        XCTAssertGreaterThan(w.max()!, 0.95 * bound)   // 1800 draws cover the interval
        XCTAssertLessThan(w.min()!, -0.95 * bound)
        XCTAssertEqual(w.reduce(0, +) / Double(w.count), 0, accuracy: 0.05 * bound)
        // Variance of U(-b, b) is b^2 / 3.
        XCTAssertEqual(w.map { $0 * $0 }.reduce(0, +) / Double(w.count), bound * bound / 3, accuracy: 0.1 * bound * bound / 3)
        XCTAssertTrue(conv.bias!.data.scalars.allSatisfy { abs($0) < bound })
        XCTAssertTrue(conv.weight.grad.scalars.allSatisfy { $0 == 0 })
        // Same seed, same weights; another seed, others.
        let again = try Conv2d<Double>(inChannels: 4, outChannels: 50, kernelSize: (3, 3), seed: 42)
        XCTAssertEqual(again.weight.data.scalars, w)
        XCTAssertEqual(again.bias!.data.scalars, conv.bias!.data.scalars)
        XCTAssertNotEqual(try Conv2d<Double>(inChannels: 4, outChannels: 50, kernelSize: (3, 3), seed: 43).weight.data.scalars, w)
        let linear = try Linear<Float>(inFeatures: 400, outFeatures: 120, seed: 1)
        XCTAssertTrue(linear.weight.data.scalars.allSatisfy { abs($0) < 0.05 })
    }

    func testRandomGenerator() throws {
        var a = RandomGenerator(seed: 0), b = RandomGenerator(seed: 0)
        let first = (0..<5).map { _ in a.nextUInt64() }
        XCTAssertEqual(first, (0..<5).map { _ in b.nextUInt64() })
        XCTAssertEqual(Set(first).count, 5)
        var c = RandomGenerator(seed: 1)
        XCTAssertNotEqual(first[0], c.nextUInt64())
        // Uniform in [low, high) and standard normal moments over many draws.
        var g = RandomGenerator(seed: 7)
        let u: [Float] = (0..<20000).map { _ in g.uniform(-2, 3) }
        XCTAssertTrue(u.allSatisfy { $0 >= -2 && $0 < 3 })
        XCTAssertEqual(Double(u.reduce(0, +)) / 20000, 0.5, accuracy: 0.05)
        let z: [Double] = (0..<20000).map { _ in g.normal() }
        let mean = z.reduce(0, +) / 20000
        XCTAssertEqual(mean, 0, accuracy: 0.03)
        XCTAssertEqual(z.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 20000, 1, accuracy: 0.05)
    }

    /// Float layers agree with Double layers holding the same parameters.
    func testFloatMatchesDouble() throws {
        let cd = try Conv2d<Double>(inChannels: 2, outChannels: 3, kernelSize: (3, 3), padding: (1, 1), seed: 8)
        let cf = try Conv2d<Float>(inChannels: 2, outChannels: 3, kernelSize: (3, 3), padding: (1, 1), seed: 8)
        copyParameters(from: cd, to: cf)
        let xd = randomTensor([2, 2, 5, 5], seed: 20, as: Double.self)
        let gd = randomTensor([2, 3, 5, 5], seed: 21, as: Double.self)
        assertRelativeError(try cf.forward(converted(xd)).scalars, try cd.forward(xd).scalars, 1e-5)
        assertRelativeError(try cf.backward(converted(gd)).scalars, try cd.backward(gd).scalars, 1e-5)
        assertRelativeError(cf.weight.grad.scalars, cd.weight.grad.scalars, 1e-5)
    }

    // MARK: threads

    /// While one thread is inside a layer, a second call fails with a runtime error instead of
    /// racing; once the first leaves, the layer works again.
    func testBusyLayerRejectsASecondThread() throws {
        let conv = try Conv2d<Float>(inChannels: 1, outChannels: 1, kernelSize: (3, 3), seed: 9)
        let x = randomTensor([1, 1, 5, 5], seed: 22, as: Float.self)
        let entered = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0), done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            // Holds the layer exactly as a long forward would.
            _ = try? conv.access.run {
                entered.signal()
                release.wait()
            }
            done.signal()
        }
        entered.wait()
        assertThrowsKind(.runtime, contains: "Conv2d is in use by another thread") { try conv.forward(x) }
        assertThrowsKind(.runtime, contains: "Conv2d is in use by another thread") { try conv.zeroGrad() }
        // A Sequential holding it reports which child was busy.
        let model = try Sequential<Float>(conv)
        assertThrowsKind(.runtime, contains: "layer 0: Conv2d is in use by another thread") { try model.forward(x) }
        release.signal()
        done.wait()
        XCTAssertEqual(try conv.forward(x).shape, [1, 1, 3, 3])
    }

    /// Real concurrent use: two threads hammering one layer never crash; every call either works
    /// or reports the layer busy, and at least the calls that ran give the right result.
    func testConcurrentForwardsAreSafe() throws {
        let linear = try Linear<Double>(inFeatures: 64, outFeatures: 64, seed: 10)
        let x = randomTensor([32, 64], seed: 23, as: Double.self)
        let expected = try linear.forward(x).scalars
        // Per thread: calls that ran, calls refused as busy.
        let counts = Mutex([0, 0, 0, 0])
        DispatchQueue.concurrentPerform(iterations: 2) { t in
            for _ in 0..<200 {
                do {
                    // forward's copy is taken inside the layer's guard: a result that ran is exact.
                    let y = try linear.forward(x)
                    XCTAssertEqual(y.scalars, expected)
                    counts.withLock { $0[2 * t] += 1 }
                } catch let e as SwiftCNNError {
                    XCTAssertEqual(e.kind, .runtime)
                    counts.withLock { $0[2 * t + 1] += 1 }
                } catch { XCTFail("\(error)") }
            }
        }
        let c = counts.withLock { $0 }
        XCTAssertEqual(c[0] + c[1] + c[2] + c[3], 400)
        XCTAssertGreaterThan(c[0] + c[2], 0)
        XCTAssertEqual(try linear.forward(x).scalars, expected)
    }
}

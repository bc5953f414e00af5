import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport

final class ResidualTests: XCTestCase {
    func testForwardIsInputPlusBranch() throws {
        let lin = try Linear<Double>(inFeatures: 4, outFeatures: 4, seed: 1)
        let block = try Residual<Double>(lin, Tanh())
        let x = randomTensor([3, 4], seed: 2, as: Double.self)
        let y = try block.forward(x).scalars
        let f = try tanh(linear(x, weight: lin.weight.data, bias: lin.bias!.data)).scalars
        assertRelativeError(y, zip(x.scalars, f).map { $0 + $1 }, 1e-15)
        XCTAssertEqual(block.lastInputShape, [3, 4])
        // An empty branch is the identity: y = 2x.
        XCTAssertEqual(try Residual<Double>([]).forward(x).scalars, x.scalars.map { 2 * $0 })
    }

    /// dL/dx = dL/dy + f.backward(dL/dy): against the branch run on its own with the same
    /// parameters, and against central differences for x and every parameter.
    func testGradientIsSkipPlusBranch() throws {
        let block = try Residual<Double>(Linear(inFeatures: 5, outFeatures: 6, seed: 3), LeakyReLU(negativeSlope: 0.1),
                                         Linear(inFeatures: 6, outFeatures: 5, seed: 4))
        let branch = try Sequential<Double>(Linear(inFeatures: 5, outFeatures: 6, seed: 3), LeakyReLU(negativeSlope: 0.1),
                                            Linear(inFeatures: 6, outFeatures: 5, seed: 4))
        let x = randomTensor([4, 5], seed: 5, as: Double.self)
        let g = randomTensor([4, 5], seed: 6, as: Double.self)
        _ = try block.forward(x)
        let dx = try block.backward(g).scalars
        _ = try branch.forward(x)
        let df = try branch.backward(g).scalars
        assertRelativeError(dx, zip(g.scalars, df).map { $0 + $1 }, 1e-15)
        for (a, b) in zip(block.parameters, branch.parameters) {
            XCTAssertEqual(a.name, b.name)
            XCTAssertEqual(a.grad.scalars, b.grad.scalars)
        }
        try assertLayerGradients(block, input: x)
        // inputGradient: false still gives the parameters their gradients.
        try block.zeroGrad()
        _ = try block.forward(x)
        XCTAssertNil(try block.backward(g, inputGradient: false))
        for (a, b) in zip(block.parameters, branch.parameters) { XCTAssertEqual(a.grad.scalars, b.grad.scalars) }
    }

    func testShapeMismatchThrows() throws {
        let block = try Residual<Double>(Linear(inFeatures: 4, outFeatures: 3, seed: 1))
        assertThrowsKind(.value, contains: "Residual: the layers' output f(x) must have the shape of x (2, 4), got (2, 3)") {
            try block.forward(Tensor<Double>(zeros: [2, 4]))
        }
        assertThrowsKind(.value, contains: "must have the shape of x (2, 4)") { try block.outputShape(forInput: [2, 4]) }
        XCTAssertNil(block.lastInputShape)
        assertThrowsKind(.runtime, contains: "Residual: backward called before forward") {
            try block.backward(Tensor<Double>(zeros: [2, 4]))
        }
        let ok = try Residual<Double>(Linear(inFeatures: 4, outFeatures: 4, seed: 1))
        _ = try ok.forward(Tensor<Double>(zeros: [2, 4]))
        assertThrowsKind(.value, contains: "Residual.backward: grad_out must have shape (2, 4)") {
            try ok.backward(Tensor<Double>(zeros: [4, 2]))
        }
    }

    /// Names as a nested Sequential ("2.0.weight"), buffers likewise, and a layer object may appear
    /// only once, also across a Residual boundary.
    func testNamesBuffersAndDuplicates() throws {
        let conv = try Conv2d<Float>(inChannels: 2, outChannels: 2, kernelSize: (3, 3), padding: (1, 1), seed: 1)
        let bn = try BatchNorm<Float>(.batchNorm2d, numFeatures: 2)
        let model = try Sequential<Float>(Conv2d(inChannels: 1, outChannels: 2, kernelSize: (3, 3), padding: (1, 1), seed: 2),
                                          BatchNorm(.batchNorm2d, numFeatures: 2), Residual(conv, bn, ReLU()), Flatten())
        XCTAssertEqual(model.parameters.map(\.name),
                       ["0.weight", "0.bias", "1.weight", "1.bias", "2.0.weight", "2.0.bias", "2.1.weight", "2.1.bias"])
        XCTAssertEqual(model.buffers.map(\.name),
                       ["1.running_mean", "1.running_var", "1.num_batches_tracked",
                        "2.1.running_mean", "2.1.running_var", "2.1.num_batches_tracked"])
        XCTAssertEqual(model.buffers[3].tensor!.pointer, bn.runningMean!.pointer)
        XCTAssertTrue(model.buffers[5].int64 === bn.numBatchesTracked)
        XCTAssertTrue(model.description.contains("(2): Residual(\n    (0): Conv2d"), model.description)
        assertThrowsKind(.value, contains: "layer 3.0 is the same object as an earlier layer") {
            try Sequential<Float>(conv, ReLU(), Flatten(), Residual(conv))
        }
        assertThrowsKind(.value, contains: "is the same object") { try Residual<Float>(bn, bn) }
    }

    /// train/eval reach every child through Sequential and Residual; only BatchNorm and Dropout change.
    func testModesPropagate() throws {
        let bn = try BatchNorm<Double>(.batchNorm1d, numFeatures: 3)
        let drop = try Dropout<Double>(p: 0.5, seed: 1)
        let inner = try Residual<Double>(bn, drop)
        let model = try Sequential<Double>(Linear(inFeatures: 3, outFeatures: 3, seed: 2), inner, ReLU())
        XCTAssertTrue(model.isTraining && inner.isTraining && bn.isTraining && drop.isTraining)
        model.setTraining(false)
        XCTAssertFalse(model.isTraining || inner.isTraining || bn.isTraining || drop.isTraining)
        XCTAssertTrue(ReLU<Double>().isTraining)   // layers without modes always answer true
        let x = randomTensor([4, 3], seed: 3, as: Double.self)
        let y1 = try model.forward(x).scalars
        XCTAssertEqual(try model.forward(x).scalars, y1)   // eval: deterministic, statistics untouched
        XCTAssertEqual(bn.numBatchesTracked!.value, 0)
        model.setTraining(true)
        XCTAssertTrue(bn.isTraining && drop.isTraining)
        _ = try model.forward(x)
        XCTAssertEqual(bn.numBatchesTracked!.value, 1)
    }

    /// A composite Conv-BN-ReLU-Residual(Conv-BN-ReLU)-MaxPool-AdaptiveAvgPool-Flatten-Dropout-Linear
    /// network: gradients against central differences in training mode (Dropout p = 0 so the check
    /// is deterministic; BatchNorm through its batch statistics) and in eval mode. The convolutions
    /// before a BatchNorm have no bias: batch norm removes any per-channel constant, so that bias's
    /// gradient is exactly 0 and a relative error against it is meaningless.
    func testCompositeNetworkGradients() throws {
        func network(p: Double) throws -> Sequential<Double> {
            try Sequential<Double>(
                Conv2d(inChannels: 2, outChannels: 3, kernelSize: (3, 3), padding: (1, 1), bias: false, seed: 1),
                BatchNorm(.batchNorm2d, numFeatures: 3), ReLU(),
                Residual(Conv2d(inChannels: 3, outChannels: 3, kernelSize: (3, 3), padding: (1, 1), bias: false, seed: 2),
                         BatchNorm(.batchNorm2d, numFeatures: 3), LeakyReLU(negativeSlope: 0.2)),
                MaxPool2d(kernelSize: (2, 2)), AdaptiveAvgPool2d(outputSize: (2, 1)), Flatten(),
                Dropout(p: p, seed: 3), Linear(inFeatures: 6, outFeatures: 4, seed: 4), Tanh())
        }
        let x = distinctRandomTensor([3, 2, 6, 6], seed: 5, spacing: 0.05, as: Double.self)
        let train = try network(p: 0)
        try assertLayerGradients(train, input: x, tolerance: 1e-6, sample: 40)
        let eval = try network(p: 0.5)
        _ = try eval.forward(x)   // move the running statistics off their initial values
        eval.setTraining(false)
        try assertLayerGradients(eval, input: x, tolerance: 1e-6, sample: 40)
        // Float vs Double, training mode with a real dropout mask (same seed: same mask).
        let d = try network(p: 0.5), f = try Sequential<Float>(
            Conv2d(inChannels: 2, outChannels: 3, kernelSize: (3, 3), padding: (1, 1), bias: false, seed: 1),
            BatchNorm(.batchNorm2d, numFeatures: 3), ReLU(),
            Residual(Conv2d(inChannels: 3, outChannels: 3, kernelSize: (3, 3), padding: (1, 1), bias: false, seed: 2),
                     BatchNorm(.batchNorm2d, numFeatures: 3), LeakyReLU(negativeSlope: 0.2)),
            MaxPool2d(kernelSize: (2, 2)), AdaptiveAvgPool2d(outputSize: (2, 1)), Flatten(),
            Dropout(p: 0.5, seed: 3), Linear(inFeatures: 6, outFeatures: 4, seed: 4), Tanh())
        copyParameters(from: d, to: f)
        let g = randomTensor([3, 4], seed: 6, as: Double.self)
        assertRelativeError(try f.forward(converted(x, to: Float.self)).scalars, try d.forward(x).scalars, 1e-4)
        assertRelativeError(try f.backward(converted(g, to: Float.self)).scalars, try d.backward(g).scalars, 1e-4)
        for (pf, pd) in zip(f.parameters, d.parameters) {
            assertRelativeError(pf.grad.scalars, pd.grad.scalars, 1e-4, pf.name)
        }
    }
}

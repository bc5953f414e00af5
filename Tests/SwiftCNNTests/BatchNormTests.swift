import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport

final class BatchNormTests: XCTestCase {
    /// (rm, rv, w, b) of C channels, random but with rv > 0.
    func channelTensors(_ c: Int, seed: UInt64) -> (Tensor<Double>, Tensor<Double>, Tensor<Double>, Tensor<Double>) {
        (randomTensor([c], seed: seed, as: Double.self), randomTensor([c], seed: seed + 1, 0.5, 2, as: Double.self),
         randomTensor([c], seed: seed + 2, -2, 2, as: Double.self), randomTensor([c], seed: seed + 3, as: Double.self))
    }

    // MARK: functional forward

    /// Hand-computed: x = [1, 2, 3, 6] in one channel has mean 3, biased variance 14/4 = 3.5 and
    /// unbiased variance 14/3; momentum 0.1 from (0, 1) gives running (0.3, 0.9 + 0.1 * 14/3).
    func testTrainingForwardAndRunningStatisticsByHand() throws {
        let x = try Tensor<Double>(shape: [4, 1], scalars: [1, 2, 3, 6])
        let rm = try Tensor<Double>(shape: [1], scalars: [0]), rv = try Tensor<Double>(shape: [1], scalars: [1])
        let y = try batchNorm(x, runningMean: rm, runningVar: rv, training: true, momentum: 0.1, eps: 1e-5)
        let s = (3.5 + 1e-5).squareRoot()
        assertRelativeError(y.scalars, [-2 / s, -1 / s, 0, 3 / s], 1e-15)
        XCTAssertEqual(rm.scalars[0], 0.3, accuracy: 1e-15)
        XCTAssertEqual(rv.scalars[0], 0.9 + 0.1 * 14 / 3, accuracy: 1e-15)
        // Eval mode normalizes with the running statistics instead.
        let e = try batchNorm(x, runningMean: rm, runningVar: rv, training: false)
        let rs = (rv.scalars[0] + 1e-5).squareRoot()
        assertRelativeError(e.scalars, [1, 2, 3, 6].map { ($0 - 0.3) / rs }, 1e-15)
        XCTAssertEqual(rm.scalars[0], 0.3, accuracy: 1e-15)   // eval leaves them alone
    }

    /// torch float64 reference (script below), training with weight and bias, forward and backward:
    ///
    ///     x = torch.tensor([[1., -2.], [2., .5], [3., 4.], [6., 1.5]], dtype=torch.float64, requires_grad=True)
    ///     w = torch.tensor([1.5, -.5], ...requires_grad=True); b = torch.tensor([.25, 2.], ...requires_grad=True)
    ///     rm = torch.zeros(2, dtype=torch.float64); rv = torch.ones(2, dtype=torch.float64)
    ///     y = F.batch_norm(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5)
    ///     y.backward(torch.tensor([[.5, -1.], [1., 2.], [-.5, .25], [2., 1.]], dtype=torch.float64))
    func testMatchesTorchSmallCase() throws {
        let x = try Tensor<Double>(shape: [4, 2], scalars: [1, -2, 2, 0.5, 3, 4, 6, 1.5])
        let w = try Tensor<Double>(shape: [2], scalars: [1.5, -0.5]), b = try Tensor<Double>(shape: [2], scalars: [0.25, 2])
        let rm = try Tensor<Double>(zeros: [2]), rv = try Tensor<Double>(shape: [2], scalars: [1, 1])
        let g = try Tensor<Double>(shape: [4, 2], scalars: [0.5, -1, 1, 2, -0.5, 0.25, 2, 1])
        let y = try batchNorm(x, runningMean: rm, runningVar: rv, weight: w, bias: b, training: true)
        assertRelativeError(y.scalars, [-1.3535651606688104, 2.6974850784254008, -0.5517825803344052, 2.1162475130709004,
                                        0.25, 1.3025149215745995, 2.6553477410032156, 1.8837524869291], 1e-14)
        assertRelativeError(rm.scalars, [0.30000000000000004, 0.1], 1e-15)
        assertRelativeError(rv.scalars, [1.3666666666666667, 1.5166666666666666], 1e-15)
        let (gx, gw, gb) = try batchNormBackward(gradOut: g, x: x, weight: w)
        assertRelativeError(gx.scalars, [0.25771452036415754, 0.24074258085214922, 0.42952572780748066, -0.3546334163279068,
                                         -1.0022282254180064, 0.19518559316372625, 0.3149879772463682, -0.08129475768796866],
                            1e-13)
        assertRelativeError(gw.scalars, [2.138086880891747, 1.5112176699217015], 1e-14)
        assertRelativeError(gb.scalars, [3.0, 2.25], 1e-15)
    }

    /// The fast path against the naive definition, both modes, ranks 2-5, Float and Double.
    func testForwardMatchesNaive() throws {
        func check<T: CNNScalar>(_: T.Type, _ shape: [Int], training: Bool, affine: Bool, tolerance: Double) throws {
            let c = shape[1]
            let x = randomTensor(shape, seed: 11, -3, 5, as: T.self)
            let (rmd, rvd, wd, bd) = channelTensors(c, seed: 20)
            let rm = converted(rmd, to: T.self), rv = converted(rvd, to: T.self)
            let rm2 = try rm.copy(), rv2 = try rv.copy()
            let w = affine ? converted(wd, to: T.self) : nil, b = affine ? converted(bd, to: T.self) : nil
            let y = try batchNorm(x, runningMean: rm, runningVar: rv, weight: w, bias: b, training: training,
                                  momentum: 0.3, eps: 1e-4)
            let g = try BatchNormGeometry(op: "test", xShape: shape)
            let expected = try Tensor<T>(zeros: shape)
            batchNormForwardNaive(g, x: x.pointer, runningMean: rm2.pointer, runningVar: rv2.pointer,
                                  weight: w.map { UnsafePointer($0.pointer) }, bias: b.map { UnsafePointer($0.pointer) },
                                  training: training, momentum: 0.3, eps: 1e-4, y: expected.pointer)
            assertRelativeError(y.scalars, expected.scalars, tolerance, "\(T.self) \(shape) training \(training)")
            assertRelativeError(rm.scalars, rm2.scalars, tolerance, "running_mean")
            assertRelativeError(rv.scalars, rv2.scalars, tolerance, "running_var")
        }
        for shape in [[7, 3], [4, 3, 5], [3, 2, 4, 5], [2, 2, 3, 2, 2], [1, 4, 3, 3]] {
            for training in [true, false] {
                for affine in [true, false] {
                    try check(Double.self, shape, training: training, affine: affine, tolerance: 1e-13)
                    try check(Float.self, shape, training: training, affine: affine, tolerance: 1e-5)
                }
            }
        }
    }

    func testFloatMatchesDouble() throws {
        let xd = randomTensor([8, 3, 6, 5], seed: 30, -2, 4, as: Double.self)
        let gd = randomTensor([8, 3, 6, 5], seed: 31, as: Double.self)
        let (_, _, wd, bd) = channelTensors(3, seed: 32)
        let yd = try batchNorm(xd, runningMean: nil, runningVar: nil, weight: wd, bias: bd, training: true)
        let yf = try batchNorm(converted(xd, to: Float.self), runningMean: nil, runningVar: nil,
                               weight: converted(wd, to: Float.self), bias: converted(bd, to: Float.self), training: true)
        assertRelativeError(yf.scalars, yd.scalars, 1e-5)
        let bdbl = try batchNormBackward(gradOut: gd, x: xd, weight: wd)
        let bflt = try batchNormBackward(gradOut: converted(gd, to: Float.self), x: converted(xd, to: Float.self),
                                         weight: converted(wd, to: Float.self))
        assertRelativeError(bflt.gradX.scalars, bdbl.gradX.scalars, 1e-4)
        assertRelativeError(bflt.gradWeight.scalars, bdbl.gradWeight.scalars, 1e-4)
        assertRelativeError(bflt.gradBias.scalars, bdbl.gradBias.scalars, 1e-4)
    }

    // MARK: functional backward

    /// The training-mode gradient (through the batch mean and variance) against central differences
    /// of L = sum(batch_norm(x, w, b) * R), for x, w and b, and against the chain-rule oracle.
    func testTrainingBackwardMatchesFiniteDifferencesAndNaive() throws {
        for (shape, affine) in [([6, 3], true), ([3, 2, 7], true), ([2, 3, 4, 3], true), ([2, 3, 4, 3], false)] {
            let c = shape[1]
            let x = randomTensor(shape, seed: 40, -2, 3, as: Double.self)
            let (_, _, w, b) = channelTensors(c, seed: 41)
            let weight = affine ? w : nil, bias = affine ? b : nil
            let r = randomArray(x.count, seed: 42, as: Double.self)
            let gradOut = try Tensor(shape: shape, scalars: r)
            let (gx, gw, gb) = try batchNormBackward(gradOut: gradOut, x: x, weight: weight, eps: 1e-3)
            let loss: (Tensor<Double>) -> Double = { _ in
                weightedSum(try! batchNorm(x, runningMean: nil, runningVar: nil, weight: weight, bias: bias,
                                           training: true, eps: 1e-3), r)
            }
            assertRelativeError(gx.scalars, numericalGradient(of: loss, at: x), 1e-7, "dx \(shape)")
            if affine {
                assertRelativeError(gw.scalars, numericalGradient(of: loss, at: w), 1e-7, "dw \(shape)")
                assertRelativeError(gb.scalars, numericalGradient(of: loss, at: b), 1e-7, "db \(shape)")
            } else {
                // weight None counts as ones: grad_weight is still sum(dy * x_hat).
                let xhat = try batchNorm(x, runningMean: nil, runningVar: nil, training: true, eps: 1e-3)
                var expected = [Double](repeating: 0, count: c)
                let s = x.count / (shape[0] * c)
                for i in 0..<x.count { expected[(i / s) % c] += r[i] * xhat[flat: i] }
                assertRelativeError(gw.scalars, expected, 1e-13)
            }
            let g = try BatchNormGeometry(op: "test", xShape: shape)
            let nx = try Tensor<Double>(zeros: shape), nw = try Tensor<Double>(zeros: [c]), nb = try Tensor<Double>(zeros: [c])
            batchNormBackwardNaive(g, gradOut: gradOut.pointer, x: x.pointer, weight: weight.map { UnsafePointer($0.pointer) },
                                   eps: 1e-3, gradX: nx.pointer, gradWeight: nw.pointer, gradBias: nb.pointer)
            assertRelativeError(gx.scalars, nx.scalars, 1e-12, "naive dx")
            assertRelativeError(gw.scalars, nw.scalars, 1e-12, "naive dw")
            assertRelativeError(gb.scalars, nb.scalars, 1e-12, "naive db")
        }
    }

    /// Eval mode is a fixed affine map per channel; its gradient against central differences.
    func testEvalBackwardMatchesFiniteDifferences() throws {
        let x = randomTensor([3, 4, 2, 3], seed: 50, -2, 2, as: Double.self)
        let (rm, rv, w, b) = channelTensors(4, seed: 51)
        let r = randomArray(x.count, seed: 52, as: Double.self)
        let (gx, gw, gb) = try batchNormEvalBackward(gradOut: Tensor(shape: x.shape, scalars: r), x: x,
                                                     runningMean: rm, runningVar: rv, weight: w)
        let loss: (Tensor<Double>) -> Double = { _ in
            weightedSum(try! batchNorm(x, runningMean: rm, runningVar: rv, weight: w, bias: b, training: false), r)
        }
        assertRelativeError(gx.scalars, numericalGradient(of: loss, at: x), 1e-7)
        assertRelativeError(gw.scalars, numericalGradient(of: loss, at: w), 1e-7)
        assertRelativeError(gb.scalars, numericalGradient(of: loss, at: b), 1e-7)
    }

    func testFunctionalArgumentErrorsChangeNothing() throws {
        let x = randomTensor([4, 3, 2], seed: 60, as: Double.self)
        let rm = try Tensor<Double>(zeros: [3]), rv = try Tensor<Double>(shape: [3], scalars: [1, 1, 1])
        func unchanged(file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertEqual(rm.scalars, [0, 0, 0], file: file, line: line)
            XCTAssertEqual(rv.scalars, [1, 1, 1], file: file, line: line)
        }
        assertThrowsKind(.value, contains: "batch_norm: x must have at least 2 dimensions") {
            try batchNorm(Tensor<Double>(zeros: [3]), runningMean: rm, runningVar: rv, training: true)
        }
        assertThrowsKind(.value, contains: "batch_norm: running_mean must have shape (C,) = (3,)") {
            try batchNorm(x, runningMean: Tensor<Double>(zeros: [4]), runningVar: rv, training: true)
        }
        assertThrowsKind(.value, contains: "batch_norm: weight must have shape (C,) = (3,)") {
            try batchNorm(x, runningMean: rm, runningVar: rv, weight: Tensor<Double>(zeros: [2]), training: true)
        }
        assertThrowsKind(.value, contains: "batch_norm: bias must have shape") {
            try batchNorm(x, runningMean: rm, runningVar: rv, bias: Tensor<Double>(zeros: [3, 1]), training: true)
        }
        assertThrowsKind(.value, contains: "both be given or both be None") {
            try batchNorm(x, runningMean: rm, runningVar: nil, training: true)
        }
        assertThrowsKind(.value, contains: "required when training is False") {
            try batchNorm(x, runningMean: nil, runningVar: nil, training: false)
        }
        for eps in [-1e-5, .nan, .infinity] {
            assertThrowsKind(.value, contains: "batch_norm: eps must be a finite number >= 0") {
                try batchNorm(x, runningMean: rm, runningVar: rv, training: true, eps: eps)
            }
        }
        assertThrowsKind(.value, contains: "batch_norm: momentum must be a finite number") {
            try batchNorm(x, runningMean: rm, runningVar: rv, training: true, momentum: .nan)
        }
        assertThrowsKind(.value, contains: "out must not overlap x") {
            try batchNorm(x, runningMean: rm, runningVar: rv, training: true, into: x)
        }
        // One value per channel: no batch variance (PyTorch's ValueError), in any rank.
        for shape in [[1, 3], [1, 3, 1], [1, 3, 1, 1]] {
            assertThrowsKind(.value, contains: "expected more than 1 value per channel when training") {
                try batchNorm(Tensor<Double>(zeros: shape), runningMean: rm, runningVar: rv, training: true)
            }
            assertThrowsKind(.value, contains: "expected more than 1 value per channel") {
                try batchNormBackward(gradOut: Tensor<Double>(zeros: shape), x: Tensor<Double>(zeros: shape))
            }
            // Eval mode with running statistics is fine.
            XCTAssertEqual(try batchNorm(Tensor<Double>(zeros: shape), runningMean: rm, runningVar: rv).shape, shape)
        }
        unchanged()
        assertThrowsKind(.value, contains: "batch_norm_backward: grad_out must have the shape of x (4, 3, 2)") {
            try batchNormBackward(gradOut: Tensor<Double>(zeros: [4, 3]), x: x)
        }
        assertThrowsKind(.value, contains: "batch_norm_backward: weight must have shape (C,) = (3,)") {
            try batchNormBackward(gradOut: x, x: x, weight: Tensor<Double>(zeros: [4]))
        }
        // An empty batch: empty output, running statistics untouched (PyTorch's early return).
        XCTAssertEqual(try batchNorm(Tensor<Double>(zeros: [0, 3, 2]), runningMean: rm, runningVar: rv,
                                     training: true).shape, [0, 3, 2])
        unchanged()
    }

    // MARK: layer

    func testLayerConstructionParametersAndBuffers() throws {
        let bn = try BatchNorm<Float>(.batchNorm2d, numFeatures: 3)
        XCTAssertEqual(bn.description, "BatchNorm2d(3, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)")
        XCTAssertEqual(bn.parameters.map(\.name), ["weight", "bias"])
        XCTAssertEqual(bn.weight!.data.scalars, [1, 1, 1])
        XCTAssertEqual(bn.bias!.data.scalars, [0, 0, 0])
        XCTAssertEqual(bn.buffers.map(\.name), ["running_mean", "running_var", "num_batches_tracked"])
        XCTAssertEqual(bn.buffers.map(\.shape), [[3], [3], []])
        XCTAssertEqual(bn.runningMean!.scalars, [0, 0, 0])
        XCTAssertEqual(bn.runningVar!.scalars, [1, 1, 1])
        XCTAssertEqual(bn.numBatchesTracked!.value, 0)
        XCTAssertTrue(bn.isTraining)
        let plain = try BatchNorm<Double>(.batchNorm1d, numFeatures: 2, momentum: nil, affine: false, trackRunningStats: false)
        XCTAssertEqual(plain.description, "BatchNorm1d(2, eps=1e-05, momentum=None, affine=False, track_running_stats=False)")
        XCTAssertTrue(plain.parameters.isEmpty)
        XCTAssertTrue(plain.buffers.isEmpty)
        assertThrowsKind(.value, contains: "BatchNorm2d: numFeatures must be >= 1, got 0") {
            try BatchNorm<Float>(.batchNorm2d, numFeatures: 0)
        }
        assertThrowsKind(.value, contains: "BatchNorm1d: eps must be a finite number >= 0, got -1.0") {
            try BatchNorm<Float>(.batchNorm1d, numFeatures: 2, eps: -1)
        }
        assertThrowsKind(.value, contains: "BatchNorm1d: momentum must be a finite number") {
            try BatchNorm<Float>(.batchNorm1d, numFeatures: 2, momentum: .infinity)
        }
    }

    func testLayerInputRanks() throws {
        let bn1 = try BatchNorm<Double>(.batchNorm1d, numFeatures: 3)
        XCTAssertEqual(try bn1.outputShape(forInput: [4, 3]), [4, 3])
        XCTAssertEqual(try bn1.outputShape(forInput: [4, 3, 5]), [4, 3, 5])
        assertThrowsKind(.value, contains: "BatchNorm1d: x must be 2-D (N, C) or 3-D (N, C, L), got shape (4, 3, 5, 5)") {
            try bn1.forward(Tensor<Double>(zeros: [4, 3, 5, 5]))
        }
        let bn2 = try BatchNorm<Double>(.batchNorm2d, numFeatures: 3)
        assertThrowsKind(.value, contains: "BatchNorm2d: x must be 4-D (N, C, H, W), got shape (4, 3)") {
            try bn2.forward(Tensor<Double>(zeros: [4, 3]))
        }
        assertThrowsKind(.value, contains: "BatchNorm2d: x must have num_features = 3 channels") {
            try bn2.forward(Tensor<Double>(zeros: [2, 4, 2, 2]))
        }
        XCTAssertEqual(bn2.numBatchesTracked!.value, 0)
        assertThrowsKind(.runtime, contains: "BatchNorm2d: backward called before forward") {
            try bn2.backward(Tensor<Double>(zeros: [2, 3, 2, 2]))
        }
    }

    /// momentum=None: the running statistics are the cumulative average of the batches' mean and
    /// unbiased variance; num_batches_tracked counts the batches.
    func testLayerCumulativeAverageWithMomentumNone() throws {
        let bn = try BatchNorm<Double>(.batchNorm1d, numFeatures: 2, momentum: nil)
        var means: [[Double]] = [], variances: [[Double]] = []
        for k in 0..<3 {
            let x = randomTensor([5, 2, 3], seed: 70 + UInt64(k), -1, 2 + Double(k), as: Double.self)
            _ = try bn.forward(x)
            var mean = [0.0, 0.0], variance = [0.0, 0.0]
            for c in 0..<2 {
                let values = (0..<5).flatMap { n in (0..<3).map { s in x[flat: (n * 2 + c) * 3 + s] } }
                mean[c] = values.reduce(0, +) / 15
                variance[c] = values.map { ($0 - mean[c]) * ($0 - mean[c]) }.reduce(0, +) / 14   // unbiased
            }
            means.append(mean)
            variances.append(variance)
            XCTAssertEqual(bn.numBatchesTracked!.value, Int64(k + 1))
            let count = Double(k + 1)
            assertRelativeError(bn.runningMean!.scalars, (0..<2).map { c in means.map { $0[c] }.reduce(0, +) / count }, 1e-14)
            assertRelativeError(bn.runningVar!.scalars, (0..<2).map { c in variances.map { $0[c] }.reduce(0, +) / count }, 1e-14)
        }
    }

    func testLayerTrainVersusEval() throws {
        let bn = try BatchNorm<Double>(.batchNorm2d, numFeatures: 3, momentum: 0.2)
        let (_, _, w, b) = channelTensors(3, seed: 80)
        bn.weight!.data.pointer.update(from: w.pointer, count: 3)
        bn.bias!.data.pointer.update(from: b.pointer, count: 3)
        let rm = try bn.runningMean!.copy(), rv = try bn.runningVar!.copy()
        let x = randomTensor([4, 3, 3, 2], seed: 81, -1, 3, as: Double.self)
        // Training: batch statistics, running statistics move (the functional op with the same state).
        let yTrain = try bn.forward(x).scalars
        let expected = try batchNorm(x, runningMean: rm, runningVar: rv, weight: w, bias: b, training: true, momentum: 0.2)
        XCTAssertEqual(yTrain, expected.scalars)
        XCTAssertEqual(bn.runningMean!.scalars, rm.scalars)
        XCTAssertEqual(bn.runningVar!.scalars, rv.scalars)
        // Eval: the running statistics, which stay put, and num_batches_tracked too.
        let pointers = (bn.runningMean!.pointer, bn.runningVar!.pointer)
        bn.setTraining(false)
        XCTAssertFalse(bn.isTraining)
        let yEval = try bn.forward(x).scalars
        XCTAssertEqual(yEval, try batchNorm(x, runningMean: rm, runningVar: rv, weight: w, bias: b, training: false).scalars)
        XCTAssertNotEqual(yEval, yTrain)
        XCTAssertEqual(bn.runningMean!.scalars, rm.scalars)
        XCTAssertEqual(bn.numBatchesTracked!.value, 1)
        // One value per channel is fine in eval mode, rejected in training mode without any change.
        XCTAssertEqual(try bn.forward(Tensor<Double>(zeros: [1, 3, 1, 1])).shape, [1, 3, 1, 1])
        bn.setTraining(true)
        assertThrowsKind(.value, contains: "BatchNorm2d: expected more than 1 value per channel when training") {
            try bn.forward(Tensor<Double>(zeros: [1, 3, 1, 1]))
        }
        XCTAssertEqual(bn.runningMean!.scalars, rm.scalars)
        XCTAssertEqual(bn.numBatchesTracked!.value, 1)
        XCTAssertNil(bn.lastInputShape)   // a failed forward leaves nothing for backward
        // The buffers are never reallocated.
        XCTAssertTrue(bn.runningMean!.pointer == pointers.0 && bn.runningVar!.pointer == pointers.1)
        XCTAssertEqual(bn.buffers[0].tensor!.pointer, pointers.0)
        // Without running statistics both modes use the batch statistics (PyTorch).
        let plain = try BatchNorm<Double>(.batchNorm2d, numFeatures: 3, trackRunningStats: false)
        let a = try plain.forward(x).scalars
        plain.setTraining(false)
        XCTAssertEqual(try plain.forward(x).scalars, a)
        assertThrowsKind(.value, contains: "more than 1 value per channel") {
            try plain.forward(Tensor<Double>(zeros: [1, 3, 1, 1]))
        }
    }

    /// Layer gradients against central differences: training mode (through the batch statistics),
    /// eval mode (the affine map), without affine parameters, and 1d inputs. Parameter gradients
    /// accumulate.
    func testLayerGradients() throws {
        let x2 = randomTensor([3, 2, 3, 4], seed: 90, -2, 2, as: Double.self)
        let bn = try BatchNorm<Double>(.batchNorm2d, numFeatures: 2, eps: 1e-3)
        let (rm, rv, w, b) = channelTensors(2, seed: 91)
        bn.weight!.data.pointer.update(from: w.pointer, count: 2)
        bn.bias!.data.pointer.update(from: b.pointer, count: 2)
        try assertLayerGradients(bn, input: x2)
        bn.setTraining(false)
        bn.runningMean!.pointer.update(from: rm.pointer, count: 2)
        bn.runningVar!.pointer.update(from: rv.pointer, count: 2)
        try assertLayerGradients(bn, input: x2)
        try assertLayerGradients(try BatchNorm<Double>(.batchNorm2d, numFeatures: 2, affine: false), input: x2)
        try assertLayerGradients(try BatchNorm<Double>(.batchNorm1d, numFeatures: 4),
                                 input: randomTensor([5, 4], seed: 92, as: Double.self))
        try assertLayerGradients(try BatchNorm<Double>(.batchNorm1d, numFeatures: 3, trackRunningStats: false),
                                 input: randomTensor([2, 3, 5], seed: 93, as: Double.self))
        // Accumulation, and inputGradient: false still accumulates the parameter gradients.
        let layer = try BatchNorm<Double>(.batchNorm2d, numFeatures: 2)
        let g = randomTensor(x2.shape, seed: 94, as: Double.self)
        _ = try layer.forward(x2)
        let dx = try layer.backward(g).scalars
        let once = layer.weight!.grad.scalars
        XCTAssertNil(try layer.backward(g, inputGradient: false))
        assertRelativeError(layer.weight!.grad.scalars, once.map { 2 * $0 }, 1e-15)
        XCTAssertEqual(dx, try batchNormBackward(gradOut: g, x: x2, weight: layer.weight!.data).gradX.scalars)
        try layer.zeroGrad()
        XCTAssertEqual(layer.weight!.grad.scalars, [0, 0])
    }

    func testLayerFloatMatchesDouble() throws {
        let xd = randomTensor([6, 4, 5, 5], seed: 100, -1, 3, as: Double.self)
        let gd = randomTensor([6, 4, 5, 5], seed: 101, as: Double.self)
        let bd = try BatchNorm<Double>(.batchNorm2d, numFeatures: 4), bf = try BatchNorm<Float>(.batchNorm2d, numFeatures: 4)
        for training in [true, false] {
            bd.setTraining(training); bf.setTraining(training)
            assertRelativeError(try bf.forward(converted(xd, to: Float.self)).scalars, try bd.forward(xd).scalars, 1e-5)
            assertRelativeError(try bf.backward(converted(gd, to: Float.self)).scalars, try bd.backward(gd).scalars, 1e-4)
            assertRelativeError(bf.runningVar!.scalars, bd.runningVar!.scalars, 1e-5)
        }
        assertRelativeError(bf.weight!.grad.scalars, bd.weight!.grad.scalars, 1e-4)
    }

    /// Channels are split over the threads in fixed chunks, each computed alone: the results are
    /// bit-identical for any thread count.
    func testThreadCountDoesNotChangeResults() throws {
        let saved = Threading.numThreads
        defer { Threading.numThreads = saved }
        let x = randomTensor([8, 16, 24, 24], seed: 110, -1, 2, as: Float.self)
        let g = randomTensor([8, 16, 24, 24], seed: 111, as: Float.self)
        var results: [[[Float]]] = []
        for threads in [1, 2, 3] {
            Threading.numThreads = threads
            let rm = try Tensor<Float>(zeros: [16]), rv = try Tensor<Float>(zeros: [16])
            let y = try batchNorm(x, runningMean: rm, runningVar: rv, training: true)
            let (gx, gw, gb) = try batchNormBackward(gradOut: g, x: x)
            results.append([y.scalars, rm.scalars, rv.scalars, gx.scalars, gw.scalars, gb.scalars])
        }
        XCTAssertEqual(results[0], results[1])
        XCTAssertEqual(results[0], results[2])
    }

    /// A layer fed its own previous output does not overwrite the input it is reading.
    func testLayerFedItsOwnOutput() throws {
        let bn = try BatchNorm<Double>(.batchNorm1d, numFeatures: 3, trackRunningStats: false)
        let x = randomTensor([5, 3], seed: 120, as: Double.self)
        let y1 = try bn.forward(x)
        let expected = try batchNorm(y1.copy(), runningMean: nil, runningVar: nil, training: true).scalars
        assertRelativeError(try bn.forward(y1).scalars, expected, 1e-15)
    }
}

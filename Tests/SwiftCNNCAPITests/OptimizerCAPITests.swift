import Synchronization
import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport
@testable import SwiftCNNCAPI

/// Optimizer handles (created by kind over (data, grad) descriptors) and the fused training step.
final class OptimizerCAPITests: XCTestCase {

    override func tearDown() { Owned.drain() }

    func testSGDMatchesPyTorchRuleAndCore() throws {
        // PyTorch: g += wd*p; b = g (first) or mu*b + (1-damp)*g; g = b (or g + mu*b, nesterov); p -= lr*g.
        for nesterov in [false, true] {
            let damp = nesterov ? 0 : 0.1
            let p = Owned([1, -2, 0.5], shape: [3]), g = Owned([0.3, 0.1, -0.2], shape: [3])
            let opt = makeOptimizer("sgd", data: [p.desc], grads: [g.desc],
                                    reals: sgdReals(lr: 0.1, momentum: 0.9, dampening: damp, weightDecay: 0.01, nesterov: nesterov))
            // The core's SGD on its own copy.
            let cp = try Parameter<Double>(name: "p", data: try Tensor(shape: [3], scalars: [1, -2, 0.5]),
                                       grad: try Tensor(shape: [3], scalars: [0.3, 0.1, -0.2]))
            let core = try SGD<Double>(parameters: [cp], learningRate: 0.1, momentum: 0.9, dampening: damp, weightDecay: 0.01,
                                       nesterov: nesterov)
            var ref = [1, -2, 0.5], buf = [0.0, 0, 0]
            for step in 0..<3 {
                assertStatus(call { scnn_optimizer_step(opt.raw, $0, $1) }, OK)
                try core.step()
                for i in 0..<3 {
                    var d = g.values(Double.self)[i] + 0.01 * ref[i]
                    buf[i] = step == 0 ? d : 0.9 * buf[i] + (1 - damp) * d
                    d = nesterov ? d + 0.9 * buf[i] : buf[i]
                    ref[i] -= 0.1 * d
                }
                XCTAssertLessThan(relErr(p.values(Double.self), ref), 1e-14)
                XCTAssertEqual(p.values(Double.self), cp.data.scalars)
            }
            XCTAssertEqual(g.values(Double.self), [0.3, 0.1, -0.2], "step never changes grad")
            assertStatus(call { scnn_optimizer_zero_grad(opt.raw, $0, $1) }, OK)
            XCTAssertEqual(g.values(Double.self), [0, 0, 0])
        }
    }

    func testAdamMatchesPyTorchRuleAndCore() throws {
        let p = Owned([Float(0.5), -1, 2, 0], shape: [2, 2]), g = Owned([Float(0.2), -0.4, 0, 1], shape: [2, 2])
        let opt = makeOptimizer("adam", data: [p.desc], grads: [g.desc], reals: adamReals(lr: 0.01, weightDecay: 0.1))
        let cp = try Parameter<Float>(name: "p", data: try Tensor(shape: [2, 2], scalars: [0.5, -1, 2, 0]),
                                  grad: try Tensor(shape: [2, 2], scalars: [0.2, -0.4, 0, 1]))
        let core = try Adam<Float>(parameters: [cp], learningRate: 0.01, weightDecay: 0.1)
        var ref: [Double] = [0.5, -1, 2, 0], m = [0.0, 0, 0, 0], v = [0.0, 0, 0, 0]
        for t in 1...4 {
            assertStatus(call { scnn_optimizer_step(opt.raw, $0, $1) }, OK)
            try core.step()
            for i in 0..<4 {
                let gi = Double(g.values(Float.self)[i]) + 0.1 * ref[i]
                m[i] = 0.9 * m[i] + 0.1 * gi
                v[i] = 0.999 * v[i] + 0.001 * gi * gi
                let mh = m[i] / (1 - pow(0.9, Double(t))), vh = v[i] / (1 - pow(0.999, Double(t)))
                ref[i] -= 0.01 * mh / (vh.squareRoot() + 1e-8)
            }
            XCTAssertLessThan(relErr(p.values(Float.self).map(Double.init), ref), 1e-5)
            XCTAssertEqual(p.values(Float.self), cp.data.scalars)
        }
        XCTAssertEqual(scnn_optimizer_get_lr(opt.raw), 0.01)
        assertStatus(call { scnn_optimizer_set_lr(opt.raw, 0.5, $0, $1) }, OK)
        XCTAssertEqual(scnn_optimizer_get_lr(opt.raw), 0.5)
        assertStatus(call { scnn_optimizer_set_lr(opt.raw, -0.5, $0, $1) }, VALUE, "Adam: invalid lr: -0.5")
        assertStatus(call { scnn_optimizer_set_lr(opt.raw, .nan, $0, $1) }, VALUE, "lr")
        XCTAssertEqual(scnn_optimizer_get_lr(opt.raw), 0.5)
    }

    func testOptimizerRejections() {
        let p = Owned([Float(1), 2], shape: [2]), g = Owned([Float(3), 4], shape: [2])
        let before = p.values(Float.self)
        var out: OpaquePointer? = nil
        func r(_ kind: String? = "sgd", data: [TensorDesc]? = nil, grads: [TensorDesc]? = nil, n: Int64? = nil,
               reals: [Double]? = sgdReals(lr: 0.1), nReals: Int32? = nil, _ status: Int32, _ msg: String...,
               file: StaticString = #filePath, line: UInt = #line) {
            let o = createOptimizer(kind, data: data ?? [p.desc], grads: grads ?? [g.desc], n: n, reals: reals, nReals: nReals, out: &out)
            assertStatus(o, status, file: file, line: line)
            for m in msg { XCTAssertTrue(o.message.contains(m), "\(o.message) lacks \(m)", file: file, line: line) }
            XCTAssertNil(out, file: file, line: line)
        }
        // PyTorch's checks.
        r(reals: sgdReals(lr: -0.1), VALUE, "SGD", "lr")
        r(reals: sgdReals(lr: .nan), VALUE, "lr")
        r(reals: sgdReals(lr: 0.1, momentum: -1), VALUE, "momentum")
        r(reals: sgdReals(lr: 0.1, weightDecay: -1), VALUE, "weight_decay")
        r(reals: sgdReals(lr: 0.1, nesterov: true), VALUE, "nesterov")
        r(reals: sgdReals(lr: 0.1, momentum: 0.9, dampening: 0.1, nesterov: true), VALUE, "nesterov")
        r("adam", reals: adamReals(lr: -1), VALUE, "Adam", "lr")
        r("adam", reals: adamReals(lr: 1e-3, beta1: 1), VALUE, "beta1")
        r("adam", reals: adamReals(lr: 1e-3, beta2: -0.1), VALUE, "beta2")
        r("adam", reals: adamReals(lr: 1e-3, beta1: .nan), VALUE, "beta1")
        r("adam", reals: adamReals(lr: 1e-3, eps: -1), VALUE, "eps")
        r("adam", reals: adamReals(lr: 1e-3, weightDecay: -1), VALUE, "weight_decay")
        // The ABI's own checks.
        r(nil, VALUE, "optimizer_create: kind is NULL")
        r("rmsprop", VALUE, "optimizer_create: unknown optimizer kind 'rmsprop'")
        r(reals: [0.1], VALUE, "SGD: takes 5 reals, got 1")
        r("adam", reals: adamReals(lr: 0.1) + [0], VALUE, "Adam: takes 5 reals, got 6")
        r(reals: nil, nReals: 5, VALUE, "optimizer_create: reals is NULL")
        r(reals: [], nReals: -1, VALUE, "reals is NULL")
        r(data: nil, n: -1, VALUE, "optimizer_create: n_params must be >= 0, got -1")
        let o = createOptimizer("sgd", data: nil, grads: [g.desc], n: 1, reals: sgdReals(lr: 0.1), out: &out)
        assertStatus(o, VALUE, "optimizer_create: data or grads is NULL but n_params is 1")
        assertStatus(createOptimizer("sgd", data: [p.desc], grads: nil, n: 1, reals: sgdReals(lr: 0.1), out: &out), VALUE, "data or grads is NULL")
        r(grads: [TensorDesc(g.raw, [2], dtype: F64)], TYPE, "optimizer_create: the optimizer has dtype float32 but grads has dtype float64")
        r(data: [TensorDesc(p.raw, [2], dtype: I64)], grads: [TensorDesc(g.raw, [2], dtype: I64)], TYPE, "data has dtype int64")
        r(data: [TensorDesc(p.raw, [2], dtype: 9)], TYPE, "optimizer_create: data has an unknown dtype code 9")
        r(grads: [TensorDesc(g.raw, [1, 2], dtype: F32)], VALUE, "optimizer_create: grads must have the shape of data (2,), got shape (1, 2)")
        r(data: [TensorDesc(p.raw, [2], dtype: F32, ndim: 9)], VALUE, "data must have at most 8 dimensions, got ndim 9")
        r(data: [TensorDesc(p.raw, [Int64.max], dtype: F32)], grads: [TensorDesc(g.raw, [Int64.max], dtype: F32)], OVERFLOW, "data")
        r(data: [TensorDesc(p.raw, [-2], dtype: F32)], VALUE, "data must have non-negative sizes")
        r(data: [TensorDesc(nil, [2], dtype: F32)], VALUE, "data is NULL but has shape (2,)")
        r(grads: [TensorDesc(g.raw + 2, [2], dtype: F32)], VALUE, "grads is not aligned")
        r(grads: [TensorDesc(p.raw + 4, [2], dtype: F32)], VALUE, "optimizer_create: data must not share memory with grads")
        r(data: [p.desc, TensorDesc(p.raw, [2], dtype: F64)], grads: [g.desc, g.desc], TYPE, "float64")
        r(data: [TensorDesc(p.raw, [2], dtype: F64, ndim: ABSENT)], TYPE, "data must be an array, not None")
        assertStatus(call { m, c in "sgd".withCString { k in
            [p.desc].withUnsafeBytes { db in [g.desc].withUnsafeBytes { gb in
                sgdReals(lr: 0.1).withUnsafeBufferPointer { rb in
                    scnn_optimizer_create(k, db.baseAddress, gb.baseAddress, 1, rb.baseAddress, 5, nil, m, c)
                }}}}}, VALUE, "optimizer_create: optimizer_out is NULL")
        XCTAssertEqual(p.values(Float.self), before)
        // Empty parameter lists and zero-size parameters are fine.
        assertStatus(createOptimizer("sgd", data: nil, grads: nil, n: 0, reals: sgdReals(lr: 0.1), out: &out), OK)
        scnn_optimizer_release(out)
        out = nil
        assertStatus(createOptimizer("adam", data: [TensorDesc(nil, [0, 3], dtype: F64)], grads: [TensorDesc(nil, [0, 3], dtype: F64)],
                                     reals: adamReals(lr: 0.1), out: &out), OK)
        assertStatus(call { scnn_optimizer_step(out, $0, $1) }, OK)
        scnn_optimizer_release(out)
        assertStatus(call { scnn_optimizer_step(nil, $0, $1) }, VALUE, "optimizer_step: optimizer is NULL")
        assertStatus(call { scnn_optimizer_zero_grad(nil, $0, $1) }, VALUE, "optimizer_zero_grad: optimizer is NULL")
        assertStatus(call { scnn_optimizer_set_lr(nil, 0.1, $0, $1) }, VALUE, "optimizer_set_lr: optimizer is NULL")
        XCTAssertTrue(scnn_optimizer_get_lr(nil).isNaN)
        scnn_optimizer_release(nil)
    }

    /// An optimizer over a layer's parameter descriptors updates the layer's own memory.
    func testOptimizerOverLayerParameters() throws {
        let l = linearLayer(F64, 3, 2, seed: 5)
        let opt = optimizer(for: l, lr: 0.5)
        let ps = parameters(l)
        let before = ps.map { $0.values(Double.self) }
        let x = Owned([1.0, 2, 3, -1, 0, 1], shape: [2, 3])
        _ = forward(l, x)
        _ = backward(l, Owned([1.0, 1, 1, 1], shape: [2, 2]))
        let grads = ps.map { $0.grads(Double.self) }
        assertStatus(call { scnn_optimizer_step(opt.raw, $0, $1) }, OK)
        for (i, p) in ps.enumerated() {
            XCTAssertEqual(p.values(Double.self), zip(before[i], grads[i]).map { $0 - 0.5 * $1 })
        }
        assertStatus(call { scnn_optimizer_zero_grad(opt.raw, $0, $1) }, OK)
        XCTAssertTrue(ps.allSatisfy { $0.grads(Double.self).allSatisfy { $0 == 0 } })
    }

    // MARK: - train step

    /// A learnable synthetic batch: each image's class is where a bright square sits.
    func batch<T: CNNScalar>(_ n: Int, seed: UInt64, as _: T.Type) -> (Owned, Owned) {
        var rng = SeededRNG(seed)
        var values = [T](repeating: 0, count: n * 28 * 28)
        var labels: [Int64] = []
        for i in 0..<n {
            let label = Int(rng.next() % 10)
            labels.append(Int64(label))
            let (r0, c0) = ((label / 5) * 14 + 4, (label % 5) * 5 + 1)
            for r in 0..<28 { for c in 0..<28 {
                let inside = r >= r0 && r < r0 + 6 && c >= c0 && c < c0 + 4
                values[i * 784 + r * 28 + c] = T((inside ? 1.0 : 0.0) + 0.1 * rng.uniform())
            }}
        }
        return (Owned(values, shape: [n, 1, 28, 28]), Owned(labels: labels))
    }

    func testTrainStepLowersLossOnLectureNetwork() {
        let model = lectureNetwork(F32, relu: true)
        let opt = optimizer(for: model, lr: 2e-3, adam: true)
        let (x, labels) = batch(8, seed: 1, as: Float.self)
        var losses: [Double] = []
        for _ in 0..<10 {
            let (o, loss, correct) = trainStep(model, opt, x.desc, labels.desc)
            assertStatus(o, OK)
            XCTAssertTrue((0...8).contains(correct))
            losses.append(loss)
        }
        print("lecture network losses:", losses)
        XCTAssertLessThan(losses.last!, losses.first! * 0.7)
        XCTAssertTrue(losses.allSatisfy { $0.isFinite })

        let sig = lectureNetwork(F64, relu: false)
        let sgd = optimizer(for: sig, lr: 0.5)
        let (x64, l64) = batch(4, seed: 2, as: Double.self)
        let first = trainStep(sig, sgd, x64.desc, l64.desc).1
        var last = first
        for _ in 0..<4 { last = trainStep(sig, sgd, x64.desc, l64.desc).1 }
        XCTAssertLessThan(last, first)
    }

    /// The fused step is exactly optimizer.zero_grad; forward; CE; backward; step.
    func testTrainStepEqualsManualSequence() throws {
        func net() -> LayerRef {
            sequential(F64, [layer("flatten", F64), linearLayer(F64, 12, 6, seed: 3), layer("sigmoid", F64), linearLayer(F64, 6, 4, seed: 4)])
        }
        let fused = net(), manual = net()
        let o1 = optimizer(for: fused, lr: 0.3), o2 = optimizer(for: manual, lr: 0.3)
        let x = Owned(randomTensor([5, 3, 2, 2], seed: 9) as Tensor<Double>)
        let labelValues: [Int64] = [0, 3, 1, 1, 2]
        let labels = Owned(labels: labelValues)
        for _ in 0..<3 {
            let (o, loss, correct) = trainStep(fused, o1, x.desc, labels.desc)
            assertStatus(o, OK)
            assertStatus(call { scnn_optimizer_zero_grad(o2.raw, $0, $1) }, OK)
            let logits = forward(manual, x)
            let r = runOp(scnn_softmax_cross_entropy, inputs: [logits.desc, labels.desc], outputs: 2)
            _ = backward(manual, r[1])
            assertStatus(call { scnn_optimizer_step(o2.raw, $0, $1) }, OK)
            XCTAssertEqual(loss, r[0].scalar)
            var expectedCorrect: Int64 = 0
            let z = logits.values(Double.self)
            for row in 0..<5 {
                let rowValues = Array(z[(row * 4)..<(row * 4 + 4)])
                if Int64(rowValues.firstIndex(of: rowValues.max()!)!) == labelValues[row] { expectedCorrect += 1 }
            }
            XCTAssertEqual(correct, expectedCorrect)
            XCTAssertEqual(snapshot(fused, Double.self), snapshot(manual, Double.self))
        }
        // Without an optimizer: gradients accumulate, nothing steps.
        let before = parameters(fused).map { $0.values(Double.self) }
        let gradsBefore = parameters(fused).map { $0.grads(Double.self) }
        assertStatus(trainStep(fused, nil, x.desc, labels.desc).0, OK)
        XCTAssertEqual(parameters(fused).map { $0.values(Double.self) }, before)
        XCTAssertNotEqual(parameters(fused).map { $0.grads(Double.self) }, gradsBefore)
    }

    func testTrainStepRejectionsChangeNothing() throws {
        let model = sequential(F32, [layer("flatten", F32), linearLayer(F32, 8, 3, seed: 1)])
        let opt = optimizer(for: model, lr: 0.1)
        let x = Owned(randomTensor([2, 2, 4], seed: 2) as Tensor<Float>)
        // Give the grads a recognizable non-zero state: a rejected call must not zero them.
        assertStatus(trainStep(model, nil, x.desc, Owned(labels: [0, 1]).desc).0, OK)
        let state = snapshot(model, Float.self)
        XCTAssertTrue(state[1].contains { $0 != 0 })

        var r = trainStep(model, opt, x.desc, Owned(labels: [0, 3]).desc)
        assertStatus(r.0, VALUE, "train_step_cross_entropy: labels must be in [0, 3), got 3 at index 1")
        XCTAssertEqual(r.1, -1, "loss_out untouched")
        XCTAssertEqual(r.2, -1, "correct_out untouched")
        assertStatus(trainStep(model, opt, x.desc, Owned(labels: [-1, 0]).desc).0, VALUE, "labels", "-1")
        assertStatus(trainStep(model, opt, x.desc, Owned(labels: [0, Int64.min]).desc).0, VALUE, "labels", "\(Int64.min)")
        assertStatus(trainStep(model, opt, x.desc, Owned(labels: [0]).desc).0, VALUE, "labels must have shape (2,)", "got (1,)")
        assertStatus(trainStep(model, opt, x.desc, Owned(labels: [0, 1, 2]).desc).0, VALUE, "labels")
        assertStatus(trainStep(model, opt, x.desc, TensorDesc(Owned(labels: [0, 1]).raw, [2], dtype: F64)).0, TYPE,
                     "train_step_cross_entropy: labels must be int64, got float64")
        assertStatus(trainStep(model, opt, x.desc, TensorDesc(Owned(labels: [0, 1]).raw, [1, 2], dtype: I64)).0, VALUE,
                     "labels must be 1-D (N,)")
        assertStatus(trainStep(model, opt, x.desc, TensorDesc(nil, [2], dtype: I64)).0, VALUE, "labels is NULL but has shape (2,)")
        assertStatus(trainStep(model, opt, x.desc, .absent).0, TYPE, "labels must be an array, not None")
        let bad = Owned(randomTensor([2, 3, 4], seed: 2) as Tensor<Float>)
        assertStatus(trainStep(model, opt, bad.desc, Owned(labels: [0, 1]).desc).0, VALUE, "Linear", "x")
        assertStatus(trainStep(model, opt, TensorDesc(x.raw, [2, 2, 4], dtype: F64), Owned(labels: [0, 1]).desc).0, TYPE,
                     "train_step_cross_entropy: the model has dtype float32 but x has dtype float64")
        assertStatus(trainStep(model, opt, TensorDesc(nil, [2, 2, 4], dtype: F32), Owned(labels: [0, 1]).desc).0, VALUE, "x is NULL")
        assertStatus(trainStep(model, opt, TensorDesc(x.raw, [2, 2, 4], dtype: F32, ndim: 12), Owned(labels: [0, 1]).desc).0, VALUE,
                     "x must have at most 8 dimensions")
        let convModel = conv(F32, 2, 3, k: 1)
        assertStatus(trainStep(convModel, nil, Owned(shape: [2, 2, 2, 2], dtype: F32).desc, Owned(labels: [0, 1]).desc).0, VALUE, "2-D")
        var loss = 0.0
        var correct: Int64 = 0
        var xd = x.desc
        assertStatus(call { scnn_train_step_cross_entropy(model.raw, opt.raw, &xd, nil, &loss, &correct, $0, $1) }, VALUE,
                     "train_step_cross_entropy: x or labels is NULL")
        // Optimizer of another dtype.
        let p64 = Owned([1.0], shape: [1]), g64 = Owned([1.0], shape: [1])
        let opt64 = makeOptimizer("sgd", data: [p64.desc], grads: [g64.desc], reals: sgdReals(lr: 0.1))
        assertStatus(trainStep(model, opt64, x.desc, Owned(labels: [0, 1]).desc).0, TYPE,
                     "train_step_cross_entropy: the optimizer's dtype float64 does not match the model's dtype float32")
        XCTAssertEqual(snapshot(model, Float.self), state)

        // A non-finite loss: gradients computed, no step, status OK, loss written.
        let inf = Owned(x.values(Float.self), shape: x.shape)
        inf.raw.assumingMemoryBound(to: Float.self)[0] = .infinity
        inf.raw.assumingMemoryBound(to: Float.self)[1] = -.infinity
        r = trainStep(model, opt, inf.desc, Owned(labels: [0, 1]).desc)
        assertStatus(r.0, OK)
        XCTAssertFalse(r.1.isFinite)
        let after = snapshot(model, Float.self)
        XCTAssertEqual(after[0], state[0], "weights unchanged")
        XCTAssertEqual(after[2], state[2], "bias unchanged")

        // N = 0: NaN loss, 0 correct, no step.
        r = trainStep(model, opt, TensorDesc(nil, [0, 2, 4], dtype: F32), TensorDesc(nil, [0], dtype: I64))
        assertStatus(r.0, OK)
        XCTAssertTrue(r.1.isNaN)
        XCTAssertEqual(r.2, 0)
        XCTAssertEqual(snapshot(model, Float.self)[0], state[0])
    }

    func testConcurrentTrainSteps() {
        let model = sequential(F64, [layer("flatten", F64), linearLayer(F64, 8, 3, seed: 1)])
        let opt = optimizer(for: model, lr: 0.01)
        let x = Owned(randomTensor([4, 8], seed: 3) as Tensor<Double>)
        let labels = Owned(labels: [0, 1, 2, 0])
        let counts = Mutex([Int32: Int]())
        DispatchQueue.concurrentPerform(iterations: 3) { _ in
            for _ in 0..<200 {
                let (o, loss, _) = trainStep(model, opt, x.desc, labels.desc)
                counts.withLock { statuses in
                    statuses[o.status, default: 0] += 1
                    if o.status == OK && !loss.isFinite { statuses[-1, default: 0] += 1 }
                }
                let s = call { scnn_optimizer_step(opt.raw, $0, $1) }
                counts.withLock { $0[s.status, default: 0] += 1 }
            }
        }
        let statuses = counts.withLock { $0 }
        XCTAssertEqual(Set(statuses.keys).subtracting([OK, RUNTIME]), [])
        XCTAssertGreaterThan(statuses[OK, default: 0], 0)
        XCTAssertTrue(parameters(model).allSatisfy { $0.values(Double.self).allSatisfy(\.isFinite) })
        print("concurrent train steps:", statuses)
    }
}

import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport
@testable import SwiftCNNCAPI

/// Optimizer handles and the fused training step.
final class OptimizerCAPITests: XCTestCase {

    /// A retained optimizer handle released at deinit.
    final class OptRef {
        let raw: OpaquePointer
        init(_ raw: OpaquePointer) { self.raw = raw }
        deinit { scnn_optimizer_release(raw) }
    }

    func makeSGD(_ dtype: Int32, _ params: [(UnsafeMutableRawPointer, UnsafeMutableRawPointer, Int)], lr: Double,
                 momentum: Double = 0, dampening: Double = 0, weightDecay: Double = 0, nesterov: Bool = false,
                 file: StaticString = #filePath, line: UInt = #line) -> OptRef? {
        let data: [UnsafeMutableRawPointer?] = params.map { $0.0 }, grad: [UnsafeMutableRawPointer?] = params.map { $0.1 }
        let counts = params.map { Int64($0.2) }
        var out: OpaquePointer? = nil
        let o = call { scnn_sgd_create(dtype, data, grad, counts, Int64(params.count), lr, momentum, dampening, weightDecay,
                                       nesterov, &out, $0, $1) }
        XCTAssertEqual(o.status, OK, o.message, file: file, line: line)
        return out.map(OptRef.init)
    }

    func makeAdam(_ dtype: Int32, _ params: [(UnsafeMutableRawPointer, UnsafeMutableRawPointer, Int)], lr: Double,
                  beta1: Double = 0.9, beta2: Double = 0.999, eps: Double = 1e-8, weightDecay: Double = 0) -> OptRef? {
        let data: [UnsafeMutableRawPointer?] = params.map { $0.0 }, grad: [UnsafeMutableRawPointer?] = params.map { $0.1 }
        let counts = params.map { Int64($0.2) }
        var out: OpaquePointer? = nil
        let o = call { scnn_adam_create(dtype, data, grad, counts, Int64(params.count), lr, beta1, beta2, eps, weightDecay, &out, $0, $1) }
        XCTAssertEqual(o.status, OK, o.message)
        return out.map(OptRef.init)
    }

    func testSGDMatchesPyTorchRule() throws {
        // PyTorch: g += wd*p; b = g (first) or mu*b + (1-damp)*g; g = b (or g + mu*b, nesterov); p -= lr*g.
        for nesterov in [false, true] {
            let p = try Tensor<Double>(shape: [3], scalars: [1, -2, 0.5])
            let g = try Tensor<Double>(shape: [3], scalars: [0.3, 0.1, -0.2])
            let opt = makeSGD(F64, [(UnsafeMutableRawPointer(p.pointer), UnsafeMutableRawPointer(g.pointer), 3)], lr: 0.1,
                              momentum: 0.9, dampening: nesterov ? 0 : 0.1, weightDecay: 0.01, nesterov: nesterov)!
            var ref = [1, -2, 0.5], buf = [0.0, 0, 0]
            for step in 0..<3 {
                assertStatus(call { scnn_optimizer_step(opt.raw, $0, $1) }, OK)
                for i in 0..<3 {
                    var d = g.scalars[i] + 0.01 * ref[i]
                    buf[i] = step == 0 ? d : 0.9 * buf[i] + (1 - (nesterov ? 0 : 0.1)) * d
                    d = nesterov ? d + 0.9 * buf[i] : buf[i]
                    ref[i] -= 0.1 * d
                }
                XCTAssertLessThan(relErr(p.scalars, ref), 1e-14)
            }
            XCTAssertEqual(g.scalars, [0.3, 0.1, -0.2], "step never changes grad")
            assertStatus(call { scnn_optimizer_zero_grad(opt.raw, $0, $1) }, OK)
            XCTAssertEqual(g.scalars, [0, 0, 0])
        }
    }

    func testAdamMatchesPyTorchRule() throws {
        let p = try Tensor<Float>(shape: [2], scalars: [0.5, -1])
        let g = try Tensor<Float>(shape: [2], scalars: [0.2, -0.4])
        let opt = makeAdam(F32, [(UnsafeMutableRawPointer(p.pointer), UnsafeMutableRawPointer(g.pointer), 2)], lr: 0.01, weightDecay: 0.1)!
        var ref: [Double] = [0.5, -1], m = [0.0, 0], v = [0.0, 0]
        for t in 1...4 {
            assertStatus(call { scnn_optimizer_step(opt.raw, $0, $1) }, OK)
            for i in 0..<2 {
                let gi = Double(g.scalars[i]) + 0.1 * ref[i]
                m[i] = 0.9 * m[i] + 0.1 * gi
                v[i] = 0.999 * v[i] + 0.001 * gi * gi
                let mh = m[i] / (1 - pow(0.9, Double(t))), vh = v[i] / (1 - pow(0.999, Double(t)))
                ref[i] -= 0.01 * mh / (vh.squareRoot() + 1e-8)
            }
            XCTAssertLessThan(relErr(p.scalars.map(Double.init), ref), 1e-5)
        }
        XCTAssertEqual(scnn_optimizer_get_lr(opt.raw), 0.01)
        assertStatus(call { scnn_optimizer_set_lr(opt.raw, 0.5, $0, $1) }, OK)
        XCTAssertEqual(scnn_optimizer_get_lr(opt.raw), 0.5)
        assertStatus(call { scnn_optimizer_set_lr(opt.raw, -0.5, $0, $1) }, VALUE, "lr")
        assertStatus(call { scnn_optimizer_set_lr(opt.raw, .nan, $0, $1) }, VALUE, "lr")
        XCTAssertEqual(scnn_optimizer_get_lr(opt.raw), 0.5)
    }

    func testOptimizerRejections() {
        var p: [Float] = [1, 2], g: [Float] = [3, 4]
        let before = p
        p.withUnsafeMutableBytes { pb in g.withUnsafeMutableBytes { gb in
            let data: [UnsafeMutableRawPointer?] = [pb.baseAddress], grad: [UnsafeMutableRawPointer?] = [gb.baseAddress]
            var out: OpaquePointer? = nil
            func sgd(_ dtype: Int32 = F32, data: [UnsafeMutableRawPointer?]? = nil, grad: [UnsafeMutableRawPointer?]? = nil,
                     counts: [Int64]? = [2], n: Int64 = 1, lr: Double = 0.1, momentum: Double = 0, dampening: Double = 0,
                     wd: Double = 0, nesterov: Bool = false) -> Outcome {
                call { scnn_sgd_create(dtype, data, grad, counts, n, lr, momentum, dampening, wd, nesterov, &out, $0, $1) }
            }
            assertStatus(sgd(data: data, grad: grad, lr: -0.1), VALUE, "SGD", "lr")
            assertStatus(sgd(data: data, grad: grad, lr: .nan), VALUE, "lr")
            assertStatus(sgd(data: data, grad: grad, momentum: -1), VALUE, "momentum")
            assertStatus(sgd(data: data, grad: grad, wd: -1), VALUE, "weight_decay")
            assertStatus(sgd(data: data, grad: grad, nesterov: true), VALUE, "nesterov")
            assertStatus(sgd(data: data, grad: grad, momentum: 0.9, dampening: 0.1, nesterov: true), VALUE, "nesterov")
            assertStatus(sgd(7, data: data, grad: grad), TYPE, "dtype")
            assertStatus(sgd(data: nil, grad: grad), VALUE, "data", "NULL")
            assertStatus(sgd(data: data, grad: nil), VALUE, "grad", "NULL")
            assertStatus(sgd(data: data, grad: grad, counts: nil), VALUE, "counts", "NULL")
            assertStatus(sgd(data: data, grad: grad, counts: [-2]), VALUE, "counts[0]")
            assertStatus(sgd(data: data, grad: grad, counts: [Int64.max]), OVERFLOW)
            assertStatus(sgd(data: [nil], grad: grad), VALUE, "data[0]", "NULL")
            assertStatus(sgd(data: data, grad: [nil]), VALUE, "grad[0]", "NULL")
            assertStatus(sgd(data: data, grad: data), VALUE, "overlap")
            assertStatus(sgd(data: data, grad: grad, n: -1), VALUE, "param_count")
            assertStatus(call { scnn_sgd_create(F32, data, grad, [2], 1, 0.1, 0, 0, 0, false, nil, $0, $1) }, VALUE, "optimizer_out")
            func adam(lr: Double = 1e-3, b1: Double = 0.9, b2: Double = 0.999, eps: Double = 1e-8, wd: Double = 0) -> Outcome {
                call { scnn_adam_create(F32, data, grad, [2], 1, lr, b1, b2, eps, wd, &out, $0, $1) }
            }
            assertStatus(adam(lr: -1), VALUE, "Adam", "lr")
            assertStatus(adam(b1: 1), VALUE, "beta1")
            assertStatus(adam(b2: -0.1), VALUE, "beta2")
            assertStatus(adam(b1: .nan), VALUE, "beta1")
            assertStatus(adam(eps: -1), VALUE, "eps")
            assertStatus(adam(wd: -1), VALUE, "weight_decay")
            XCTAssertNil(out)
            // Empty parameter lists and zero-size parameters are fine.
            assertStatus(sgd(data: nil, grad: nil, counts: nil, n: 0), OK)
            scnn_optimizer_release(out)
            out = nil
            assertStatus(sgd(data: [nil], grad: [nil], counts: [0]), OK)
            assertStatus(call { scnn_optimizer_step(out, $0, $1) }, OK)
            scnn_optimizer_release(out)
        }}
        XCTAssertEqual(p, before)
        assertStatus(call { scnn_optimizer_step(nil, $0, $1) }, VALUE, "optimizer", "NULL")
        assertStatus(call { scnn_optimizer_zero_grad(nil, $0, $1) }, VALUE, "NULL")
        assertStatus(call { scnn_optimizer_set_lr(nil, 0.1, $0, $1) }, VALUE, "NULL")
        XCTAssertTrue(scnn_optimizer_get_lr(nil).isNaN)
        scnn_optimizer_release(nil)
    }

    // MARK: - train step

    func optimizer(for model: LayerRef, _ dtype: Int32, lr: Double, adam: Bool = false) -> OptRef {
        let ps = parameters(model).map { ($0.data, $0.grad, $0.count) }
        return adam ? makeAdam(dtype, ps, lr: lr)! : makeSGD(dtype, ps, lr: lr)!
    }

    /// A learnable synthetic batch: each image's class is where a bright 6x6 square sits.
    func batch<T: CNNScalar>(_ n: Int, seed: UInt64, as _: T.Type) -> (Tensor<T>, [Int64]) {
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
        return (try! Tensor(shape: [n, 1, 28, 28], scalars: values), labels)
    }

    func trainStep<T: CNNScalar>(_ model: LayerRef, _ opt: OptRef?, _ x: Tensor<T>, _ labels: [Int64]) -> (Outcome, Double, Int64) {
        var loss = -1.0
        var correct: Int64 = -1
        let xs = s64(x.shape)
        let o = call { scnn_train_step_cross_entropy(model.raw, opt?.raw, x.pointer, xs, Int64(xs.count), labels,
                                                     Int64(labels.count), &loss, &correct, $0, $1) }
        return (o, loss, correct)
    }

    func testTrainStepLowersLossOnLectureNetwork() {
        let model = lectureNetwork(F32, relu: true)
        let opt = optimizer(for: model, F32, lr: 2e-3, adam: true)
        let (x, labels) = batch(8, seed: 1, as: Float.self)
        var losses: [Double] = []
        for _ in 0..<10 {
            let (o, loss, correct) = trainStep(model, opt, x, labels)
            assertStatus(o, OK)
            XCTAssertTrue((0...8).contains(correct))
            losses.append(loss)
        }
        print("lecture network losses:", losses)
        XCTAssertLessThan(losses.last!, losses.first! * 0.7)
        XCTAssertTrue(losses.allSatisfy { $0.isFinite })

        // The sigmoid network too, with SGD (slower: just lower).
        let sig = lectureNetwork(F64, relu: false)
        let sgd = optimizer(for: sig, F64, lr: 0.5)
        let (x64, l64) = batch(4, seed: 2, as: Double.self)
        let first = trainStep(sig, sgd, x64, l64).1
        var last = first
        for _ in 0..<4 { last = trainStep(sig, sgd, x64, l64).1 }
        XCTAssertLessThan(last, first)
    }

    /// The fused step is exactly optimizer.zero_grad; forward; CE; backward; step.
    func testTrainStepEqualsManualSequence() throws {
        let fused = sequential(F64, [simple(F64, 2), linearLayer(F64, 12, 6, seed: 3), simple(F64, 0), linearLayer(F64, 6, 4, seed: 4)])
        let manual = sequential(F64, [simple(F64, 2), linearLayer(F64, 12, 6, seed: 3), simple(F64, 0), linearLayer(F64, 6, 4, seed: 4)])
        let o1 = optimizer(for: fused, F64, lr: 0.3), o2 = optimizer(for: manual, F64, lr: 0.3)
        let x: Tensor<Double> = randomTensor([5, 3, 2, 2], seed: 9)
        let labels: [Int64] = [0, 3, 1, 1, 2]
        for _ in 0..<3 {
            let (o, loss, correct) = trainStep(fused, o1, x, labels)
            assertStatus(o, OK)
            assertStatus(call { scnn_optimizer_zero_grad(o2.raw, $0, $1) }, OK)
            let logits: Tensor<Double> = forward(manual, x)
            var expectedLoss = 0.0
            let g = try Tensor<Double>(zeros: [5, 4])
            assertStatus(call { scnn_softmax_cross_entropy(F64, logits.pointer, [5, 4], 2, labels, 5, nil, nil, 0, &expectedLoss, g.pointer, $0, $1) }, OK)
            _ = backward(manual, g)
            assertStatus(call { scnn_optimizer_step(o2.raw, $0, $1) }, OK)
            XCTAssertEqual(loss, expectedLoss)
            var expectedCorrect: Int64 = 0
            for r in 0..<5 {
                let row = Array(logits.scalars[(r * 4)..<(r * 4 + 4)])
                if Int64(row.firstIndex(of: row.max()!)!) == labels[r] { expectedCorrect += 1 }
            }
            XCTAssertEqual(correct, expectedCorrect)
            XCTAssertEqual(snapshot(fused, Double.self), snapshot(manual, Double.self))
        }
        // Without an optimizer: gradients accumulate, nothing steps.
        let before = parameters(fused).map { $0.values(Double.self) }
        let gradsBefore = parameters(fused).map { $0.grads(Double.self) }
        assertStatus(trainStep(fused, nil, x, labels).0, OK)
        XCTAssertEqual(parameters(fused).map { $0.values(Double.self) }, before)
        XCTAssertNotEqual(parameters(fused).map { $0.grads(Double.self) }, gradsBefore)
    }

    func testTrainStepRejectionsChangeNothing() throws {
        let model = sequential(F32, [simple(F32, 2), linearLayer(F32, 8, 3, seed: 1)])
        let opt = optimizer(for: model, F32, lr: 0.1)
        let x: Tensor<Float> = randomTensor([2, 2, 4], seed: 2)
        // Give the grads a recognizable non-zero state: a rejected call must not zero them.
        assertStatus(trainStep(model, nil, x, [0, 1]).0, OK)
        let state = snapshot(model, Float.self)
        XCTAssertTrue(state[1].contains { $0 != 0 })

        var r = trainStep(model, opt, x, [0, 3])
        assertStatus(r.0, VALUE, "labels", "[0, 3)", "3", "index 1")
        XCTAssertEqual(r.1, -1, "loss_out untouched")
        XCTAssertEqual(r.2, -1, "correct_out untouched")
        assertStatus(trainStep(model, opt, x, [-1, 0]).0, VALUE, "labels", "-1")
        assertStatus(trainStep(model, opt, x, [0]).0, VALUE, "labels", "(2,)", "(1,)")
        assertStatus(trainStep(model, opt, x, [0, 1, 2]).0, VALUE, "labels")
        let bad: Tensor<Float> = randomTensor([2, 3, 4], seed: 2)
        assertStatus(trainStep(model, opt, bad, [0, 1]).0, VALUE, "Linear", "x")
        let conv4d: Tensor<Float> = randomTensor([2, 2, 2, 2], seed: 2)
        let convModel = conv(F32, 2, 3, k: 1)
        assertStatus(trainStep(convModel, nil, conv4d, [0, 1]).0, VALUE, "2-D")
        // Labels NULL with N > 0, x NULL.
        var loss = 0.0
        var correct: Int64 = 0
        assertStatus(call { scnn_train_step_cross_entropy(model.raw, opt.raw, x.pointer, [2, 2, 4], 3, nil, 2, &loss, &correct, $0, $1) },
                     VALUE, "labels", "NULL")
        assertStatus(call { scnn_train_step_cross_entropy(model.raw, opt.raw, nil, [2, 2, 4], 3, [0, 1], 2, &loss, &correct, $0, $1) },
                     VALUE, "x", "NULL")
        assertStatus(call { scnn_train_step_cross_entropy(model.raw, opt.raw, x.pointer, [2, 2, 4], 12, [0, 1], 2, &loss, &correct, $0, $1) },
                     VALUE, "x")
        // Optimizer of another dtype.
        var p64: [Double] = [1], g64: [Double] = [1]
        let opt64 = p64.withUnsafeMutableBytes { pb in g64.withUnsafeMutableBytes { gb in
            makeSGD(F64, [(pb.baseAddress!, gb.baseAddress!, 1)], lr: 0.1)!
        }}
        assertStatus(trainStep(model, opt64, x, [0, 1]).0, TYPE, "float64", "float32")
        XCTAssertEqual(snapshot(model, Float.self), state)

        // A non-finite loss: gradients computed, no step, status OK, loss written.
        let inf = try x.copy()
        inf[flat: 0] = .infinity
        inf[flat: 1] = -.infinity
        r = trainStep(model, opt, inf, [0, 1])
        assertStatus(r.0, OK)
        XCTAssertFalse(r.1.isFinite)
        let after = snapshot(model, Float.self)
        XCTAssertEqual(after[0], state[0], "weights unchanged")
        XCTAssertEqual(after[2], state[2], "bias unchanged")

        // N = 0: NaN loss, 0 correct, no step.
        r = trainStep(model, opt, try Tensor<Float>(zeros: [0, 2, 4]), [])
        assertStatus(r.0, OK)
        XCTAssertTrue(r.1.isNaN)
        XCTAssertEqual(r.2, 0)
        XCTAssertEqual(snapshot(model, Float.self)[0], state[0])
    }

    func testConcurrentTrainSteps() {
        let model = sequential(F64, [simple(F64, 2), linearLayer(F64, 8, 3, seed: 1)])
        let opt = optimizer(for: model, F64, lr: 0.01)
        let x: Tensor<Double> = randomTensor([4, 8], seed: 3)
        let lock = NSLock()
        var statuses: [Int32: Int] = [:]
        DispatchQueue.concurrentPerform(iterations: 3) { _ in
            for _ in 0..<200 {
                let (o, loss, _) = trainStep(model, opt, x, [0, 1, 2, 0])
                lock.lock()
                statuses[o.status, default: 0] += 1
                if o.status == OK && !loss.isFinite { statuses[-1, default: 0] += 1 }
                lock.unlock()
                let s = call { scnn_optimizer_step(opt.raw, $0, $1) }
                lock.lock(); statuses[s.status, default: 0] += 1; lock.unlock()
            }
        }
        XCTAssertEqual(Set(statuses.keys).subtracting([OK, RUNTIME]), [])
        XCTAssertTrue(parameters(model).allSatisfy { $0.values(Double.self).allSatisfy(\.isFinite) })
        print("concurrent train steps:", statuses)
    }
}

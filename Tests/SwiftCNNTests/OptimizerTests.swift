import Dispatch
import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport

/// SGD and Adam against values worked out by hand from PyTorch's documented algorithms (and
/// confirmed with torch 2.x in float64): parameters p = (1, -2), lr 0.1, three steps.
final class OptimizerTests: XCTestCase {
    /// A parameter holding `values`, with its gradient set to `grad`.
    func parameter(_ values: [Double], grad: [Double]) throws -> Parameter<Double> {
        try Parameter(name: "p", data: Tensor(shape: [values.count], scalars: values),
                      grad: Tensor(shape: [grad.count], scalars: grad))
    }

    /// Runs `steps` steps with gradient `grads[t]` at step t and returns p after each step.
    func trajectory(_ make: ([Parameter<Double>]) throws -> any Optimizer, grads: [[Double]]) throws -> [[Double]] {
        let p = try parameter([1, -2], grad: [0, 0])
        let optimizer = try make([p])
        return try grads.map { g in
            for i in 0..<g.count { p.grad[flat: i] = g[i] }
            try optimizer.step()
            XCTAssertEqual(p.grad.scalars, g, "step never changes grads")
            return p.data.scalars
        }
    }

    func assertTrajectory(_ actual: [[Double]], _ expected: [[Double]], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, file: file, line: line)
        for (a, e) in zip(actual, expected) { assertRelativeError(a, e, 1e-14, file: file, line: line) }
    }

    // Constant gradient g = (0.5, -1) for SGD.
    let constant: [[Double]] = Array(repeating: [0.5, -1], count: 3)

    func testSGDPlain() throws {
        // p <- p - lr g: 1 - 0.05 = 0.95, 0.9, 0.85.
        assertTrajectory(try trajectory({ try SGD(parameters: $0, learningRate: 0.1) }, grads: constant),
                         [[0.95, -1.9], [0.9, -1.8], [0.85, -1.7]])
    }

    func testSGDMomentum() throws {
        // b1 = g = 0.5 (first step: the buffer is the gradient, no dampening); p1 = 1 - 0.05 = 0.95
        // b2 = 0.9 * 0.5 + 0.5 = 0.95;  p2 = 0.95 - 0.095 = 0.855
        // b3 = 0.9 * 0.95 + 0.5 = 1.355; p3 = 0.855 - 0.1355 = 0.7195
        assertTrajectory(try trajectory({ try SGD(parameters: $0, learningRate: 0.1, momentum: 0.9) }, grads: constant),
                         [[0.95, -1.9], [0.855, -1.71], [0.7195, -1.439]])
    }

    func testSGDDampening() throws {
        // b1 = g = 0.5 (dampening does not apply to the first step); p1 = 0.95
        // b2 = 0.9 * 0.5 + (1 - 0.5) * 0.5 = 0.7;  p2 = 0.95 - 0.07 = 0.88
        // b3 = 0.9 * 0.7 + 0.25 = 0.88;            p3 = 0.88 - 0.088 = 0.792
        assertTrajectory(try trajectory({ try SGD(parameters: $0, learningRate: 0.1, momentum: 0.9, dampening: 0.5) },
                                        grads: constant),
                         [[0.95, -1.9], [0.88, -1.76], [0.792, -1.584]])
    }

    func testSGDNesterov() throws {
        // b1 = 0.5;  step g + 0.9 b1 = 0.95;  p1 = 1 - 0.095 = 0.905
        // b2 = 0.95; step 0.5 + 0.855 = 1.355; p2 = 0.905 - 0.1355 = 0.7695
        // b3 = 1.355; step 0.5 + 1.2195 = 1.7195; p3 = 0.7695 - 0.17195 = 0.59755
        assertTrajectory(try trajectory({ try SGD(parameters: $0, learningRate: 0.1, momentum: 0.9, nesterov: true) },
                                        grads: constant),
                         [[0.905, -1.81], [0.7695, -1.539], [0.59755, -1.1951]])
    }

    func testSGDWeightDecay() throws {
        // g' = g + 0.1 p: 0.5 + 0.1 = 0.6 -> p1 = 0.94; 0.5 + 0.094 = 0.594 -> p2 = 0.8806;
        // 0.5 + 0.08806 = 0.58806 -> p3 = 0.821794.
        assertTrajectory(try trajectory({ try SGD(parameters: $0, learningRate: 0.1, weightDecay: 0.1) }, grads: constant),
                         [[0.94, -1.88], [0.8806, -1.7612], [0.821794, -1.643588]])
        // With momentum, the decayed gradient is what enters the buffer:
        // b1 = 0.6, p1 = 0.94; b2 = 0.54 + 0.594 = 1.134, p2 = 0.8266; b3 = 1.0206 + 0.58266 = 1.60326, p3 = 0.666274.
        assertTrajectory(try trajectory({ try SGD(parameters: $0, learningRate: 0.1, momentum: 0.9, weightDecay: 0.1) },
                                        grads: constant),
                         [[0.94, -1.88], [0.8266, -1.6532], [0.666274, -1.332548]])
    }

    // Gradients that change sign and scale, so Adam's bias corrections matter.
    let varying: [[Double]] = [[0.5, -1], [-0.25, 0.5], [1, 2]]

    func testAdam() throws {
        // Step 1: m = 0.1 * 0.5 = 0.05, v = 0.001 * 0.25 = 0.00025; corrected m^ = 0.05 / 0.1 = 0.5,
        //   sqrt(v^) = sqrt(0.00025 / 0.001) = 0.5, so p1 = 1 - 0.1 * 0.5 / (0.5 + 1e-8) = 0.900000002.
        // Step 2: m = 0.045 - 0.025 = 0.02, v = 0.00024975 + 0.0000625 = 0.00031225;
        //   m^ = 0.02 / 0.19, v^ = 0.00031225 / 0.001999; p2 = p1 - 0.1 m^ / (sqrt(v^) + 1e-8) = 0.87336629870784...
        assertTrajectory(try trajectory({ try Adam(parameters: $0, learningRate: 0.1) }, grads: varying),
                         [[0.900000002, -1.900000001], [0.8733662987078463, -1.873366297370903],
                          [0.8075551396770898, -1.9190994760260234]])
    }

    func testAdamWeightDecay() throws {
        // L2 added to the gradient (torch.optim.Adam, not AdamW): step 1 g' = 0.5 + 0.1 * 1 = 0.6, and
        // with m^ = 0.6, sqrt(v^) = 0.6 the step is 0.1 * 0.6 / (0.6 + 1e-8) -> p1 = 0.90000000166...
        assertTrajectory(try trajectory({ try Adam(parameters: $0, learningRate: 0.1, weightDecay: 0.1) }, grads: varying),
                         [[0.9000000016666666, -1.9000000008333333], [0.8544413674617625, -1.8537472646427609],
                          [0.7815043998631658, -1.88636311586399]])
    }

    func testAdamBetasAndEps() throws {
        assertTrajectory(try trajectory({ try Adam(parameters: $0, learningRate: 0.01, beta1: 0.5, beta2: 0.75, epsilon: 1e-3) },
                                        grads: varying),
                         [[0.9900199600798403, -1.99000999000999], [0.9900199600798403, -1.99000999000999],
                          [0.9820568927932278, -1.9979786095788106]])
        // beta1 = beta2 = 0, eps = 0: m = g, v = g^2, so every step moves by lr * sign(g).
        assertTrajectory(try trajectory({ try Adam(parameters: $0, learningRate: 0.01, beta1: 0, beta2: 0, epsilon: 0) },
                                        grads: varying),
                         [[0.99, -1.99], [1.0, -2.0], [0.99, -2.01]])
    }

    func testValidation() throws {
        let p = try parameter([1], grad: [0])
        assertThrowsKind(.value, contains: "SGD: invalid learningRate: -0.1") { try SGD(parameters: [p], learningRate: -0.1) }
        assertThrowsKind(.value, contains: "SGD: invalid learningRate: nan") { try SGD(parameters: [p], learningRate: .nan) }
        assertThrowsKind(.value, contains: "SGD: invalid momentum") { try SGD(parameters: [p], learningRate: 0.1, momentum: -1) }
        assertThrowsKind(.value, contains: "SGD: invalid weightDecay") { try SGD(parameters: [p], learningRate: 0.1, weightDecay: -1) }
        assertThrowsKind(.value, contains: "nesterov") { try SGD(parameters: [p], learningRate: 0.1, nesterov: true) }
        assertThrowsKind(.value, contains: "nesterov") {
            try SGD(parameters: [p], learningRate: 0.1, momentum: 0.9, dampening: 0.1, nesterov: true)
        }
        assertThrowsKind(.value, contains: "Adam: invalid learningRate") { try Adam(parameters: [p], learningRate: -1) }
        assertThrowsKind(.value, contains: "Adam: invalid epsilon") { try Adam(parameters: [p], epsilon: -1e-8) }
        assertThrowsKind(.value, contains: "Adam: invalid weightDecay") { try Adam(parameters: [p], weightDecay: -1) }
        assertThrowsKind(.value, contains: "Adam: invalid beta1: 1.0 (must be in [0, 1))") { try Adam(parameters: [p], beta1: 1) }
        assertThrowsKind(.value, contains: "Adam: invalid beta2: -0.5") { try Adam(parameters: [p], beta2: -0.5) }
        assertThrowsKind(.value, contains: "Parameter q: grad must have the shape of data (2,), got (3,)") {
            try Parameter(name: "q", data: Tensor<Double>(zeros: [2]), grad: Tensor<Double>(zeros: [3]))
        }
        // Settings PyTorch accepts.
        XCTAssertNoThrow(try SGD(parameters: [p], learningRate: 0, momentum: 0.9, dampening: 0.5))
        XCTAssertNoThrow(try Adam(parameters: [p], learningRate: 0, beta1: 0, beta2: 0, epsilon: 0))
    }

    func testLearningRateIsSettableAndZeroGrad() throws {
        let p = try parameter([1, -2], grad: [0.5, -1])
        let sgd = try SGD(parameters: [p], learningRate: 0.1)
        sgd.learningRate = 1
        try sgd.step()
        XCTAssertEqual(p.data.scalars, [0.5, -1])
        try sgd.setLearningRate(0.5)
        XCTAssertEqual(sgd.learningRate, 0.5)
        assertThrowsKind(.value, contains: "SGD: invalid learningRate: -1.0") { try sgd.setLearningRate(-1) }
        XCTAssertEqual(sgd.learningRate, 0.5)
        try sgd.zeroGrad()
        XCTAssertEqual(p.grad.scalars, [0, 0])
    }

    /// A parameter listed twice is updated once per step.
    func testDuplicateParametersUpdateOnce() throws {
        let p = try parameter([1], grad: [1])
        let sgd = try SGD(parameters: [p, p], learningRate: 0.1)
        XCTAssertEqual(sgd.parameters.count, 1)
        try sgd.step()
        XCTAssertEqual(p.data.scalars, [0.9])
    }

    /// Float follows the same rules (within Float rounding).
    func testFloatMatchesDouble() throws {
        let pd = try parameter([1, -2], grad: [0.5, -1])
        let pf = try Parameter<Float>(name: "p", data: Tensor(shape: [2], scalars: [1, -2]), grad: Tensor(shape: [2], scalars: [0.5, -1]))
        let (od, of) = (try Adam(parameters: [pd], learningRate: 0.1, weightDecay: 0.01),
                        try Adam(parameters: [pf], learningRate: 0.1, weightDecay: 0.01))
        let (sd, sf) = (try SGD(parameters: [pd], learningRate: 0.1, momentum: 0.9, nesterov: true),
                        try SGD(parameters: [pf], learningRate: 0.1, momentum: 0.9, nesterov: true))
        for _ in 0..<5 {
            try od.step(); try of.step(); try sd.step(); try sf.step()
        }
        assertRelativeError(pf.data.scalars, pd.data.scalars, 1e-5)
    }

    /// With a model: parameters(), a real gradient, and the busy guard.
    func testTrainsAModelAndRejectsConcurrentUse() throws {
        let model = try Sequential<Double>(Linear<Double>(inFeatures: 4, outFeatures: 3, seed: 1))
        let sgd = try SGD(parameters: model.parameters, learningRate: 0.5)
        let x = randomTensor([8, 4], seed: 2, as: Double.self)
        let labels: [Int64] = [0, 1, 2, 0, 1, 2, 0, 1]
        var losses: [Double] = []
        for _ in 0..<10 {
            try sgd.zeroGrad()
            let (loss, g) = try softmaxCrossEntropy(logits: model.forward(x), labels: labels)
            _ = try model.backward(g)
            try sgd.step()
            losses.append(loss)
        }
        XCTAssertLessThan(losses.last!, losses.first!)
        let entered = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0), done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            _ = try? sgd.access.run {
                entered.signal()
                release.wait()
            }
            done.signal()
        }
        entered.wait()
        assertThrowsKind(.runtime, contains: "SGD is in use by another thread") { try sgd.step() }
        release.signal()
        done.wait()
    }
}

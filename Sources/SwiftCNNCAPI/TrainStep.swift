// The fused canonical training step: one C call per batch for `Sequential.fit`.
//
//     optimizer.zero_grad(); logits = model.forward(x)
//     (loss, g) = softmax_cross_entropy(logits, labels); model.backward(g)
//     if loss is finite: optimizer.step()
//
// Everything the caller passes (x's shape against the model, labels' length and range, the
// optimizer's dtype) is validated before the first state change. Both handles are held for the
// whole step, so no other thread's call on them interleaves.

@_spi(Engine) import SwiftCNN

/// `scnn_train_step_cross_entropy`.
@_cdecl("scnn_train_step_cross_entropy")
public func scnn_train_step_cross_entropy(_ model: OpaquePointer?, _ optimizer: OpaquePointer?,
                                          _ x: UnsafeRawPointer?, _ labels: UnsafeRawPointer?,
                                          _ lossOut: UnsafeMutablePointer<Double>?, _ correctOut: UnsafeMutablePointer<Int64>?,
                                          _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let op = "train_step_cross_entropy"
        let h = try layerHandle(model, op: op, name: "model")
        let opt = try optimizer.map { try optimizerHandle($0, op: op) }
        if let opt, opt.dtype != h.dtype {
            throw SwiftCNNError.type("\(op): the optimizer's dtype \(opt.dtype) does not match the model's dtype \(h.dtype)")
        }
        guard let x, let labels else { throw SwiftCNNError.value("\(op): x or labels is NULL") }
        let xo = Operand(base: x, name: "x", op: "train_step_cross_entropy")
        let lo = Operand(base: labels, name: "labels", op: "train_step_cross_entropy")
        try xo.requireDType(h.dtype, like: "the model")
        try xo.checkSizes()
        guard try lo.dtype() == .int64 else {
            throw SwiftCNNError.type("\(op): labels must be int64, got \(try lo.dtype().name)")
        }
        try lo.requireRank(1, layout: "(N,)")
        let result: (loss: Double, correct: Int)
        let step = {
            switch h.model {
            case .float32(let l): return try trainStepC(l, opt, xo, lo, op: op)
            case .float64(let l): return try trainStepC(l, opt, xo, lo, op: op)
            }
        }
        if let opt {
            result = try h.exclusive { try opt.access.run(step) }
        } else {
            result = try h.exclusive(step)
        }
        lossOut?.pointee = result.loss
        correctOut?.pointee = Int64(result.correct)
    }
}

func trainStepC<T: CNNScalar>(_ model: any Layer<T>, _ opt: OptimizerHandle?, _ x: Operand, _ labelsOperand: Operand,
                              op: String) throws -> (loss: Double, correct: Int) {
    let xs = x.shape, labelsLen = labelsOperand.dim(0)
    // Validation, before any state changes.
    let ys = try model.outputShape(forInput: xs)
    guard ys.count == 2, ys[1] >= 1 else {
        throw SwiftCNNError.value(
            "\(op): the model's output must be 2-D logits (N, K) with K >= 1, got \(describeShape(ys)) for x \(describeShape(xs))")
    }
    let (n, k) = (ys[0], ys[1])
    guard labelsLen == n else {
        throw SwiftCNNError.value(
            "\(op): labels must have shape (\(n),) to match the model's output \(describeShape(ys)), got (\(labelsLen),)")
    }
    let labels = try labelsOperand.pointer(Int64.self, count: n)
    if let labels {
        for i in 0..<n where labels[i] < 0 || labels[i] >= Int64(k) {
            throw SwiftCNNError.value("\(op): labels must be in [0, \(k)), got \(labels[i]) at index \(i)")
        }
    }
    let xt = try x.tensor(T.self)
    let grad = try Tensor<T>(zeros: ys)  // allocated before any state change too

    // The step.
    try opt?.optimizer.zeroGrad()
    let logits = try model.forwardView(xt)
    guard logits.shape == ys else {
        throw SwiftCNNError.runtime(
            "\(op): the model returned shape \(describeShape(logits.shape)), expected \(describeShape(ys)); was it used by another thread?")
    }
    var loss = Double.nan
    var correct = 0
    if n > 0, let labels {
        loss = try softmaxCrossEntropy(batch: n, classes: k, logits: logits.pointer, labels: labels,
                                       gradLogits: grad.pointer)
        for row in 0..<n {
            let z = logits.pointer + row * k
            var best = 0
            for j in 1..<k where z[j] > z[best] { best = j }
            if Int64(best) == labels[row] { correct += 1 }
        }
    }
    _ = try model.backward(grad, inputGradient: false)   // the input's gradient is not returned
    if loss.isFinite, let opt {
        try opt.optimizer.step()
    }
    return (loss, correct)
}

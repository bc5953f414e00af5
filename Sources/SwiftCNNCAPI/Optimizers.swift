// Optimizer handles: `scnn_optimizer *` is a retained `OptimizerHandle` holding a core SGD<T> or
// Adam<T> built over Parameters that borrow the caller's (data, grad, count) buffers. The caller (the
// Python Optimizer, through its Parameter objects) keeps that memory alive.
//
// Threads: the handle's guard lets one call at a time through (step, zero_grad, set_lr, the train
// step); a second concurrent caller gets SCNN_RUNTIME_ERROR. The core optimizers guard step and
// zero_grad themselves too; the handle's guard also covers set_lr, which the core does not.

@_spi(Engine) import SwiftCNN

final class OptimizerHandle {
    let optimizer: any Optimizer
    let dtype: DType
    /// One caller at a time ("SGD is in use by another thread").
    let access: ExclusiveAccess

    init(_ optimizer: any Optimizer, dtype: DType, name: String) {
        self.optimizer = optimizer
        self.dtype = dtype
        self.access = ExclusiveAccess(name: name)
    }

    var name: String { access.name }
}

/// The `OptimizerHandle` of a non-NULL `scnn_optimizer *`.
func optimizerHandle(_ p: OpaquePointer?, op: String) throws -> OptimizerHandle {
    guard let p else { throw SwiftCNNError.value("\(op): optimizer is NULL") }
    return Unmanaged<OptimizerHandle>.fromOpaque(UnsafeRawPointer(p)).takeUnretainedValue()
}

/// The (data, grad) descriptor pairs as Parameters borrowing the caller's memory: equal shapes, the
/// dtype `T`, data and grad not overlapping.
func borrowedParameters<T: CNNScalar>(_: T.Type, _ data: UnsafeRawPointer?, _ grads: UnsafeRawPointer?,
                                      _ count: Int64, op: String) throws -> [Parameter<T>] {
    guard count >= 0 else { throw SwiftCNNError.value("\(op): n_params must be >= 0, got \(count)") }
    guard count > 0 else { return [] }
    guard let data, let grads else { throw SwiftCNNError.value("\(op): data or grads is NULL but n_params is \(count)") }
    var result: [Parameter<T>] = []
    for i in 0..<Int(count) {
        let d = Operand(base: data + 80 * i, name: "data", op: "optimizer_create")
        let g = Operand(base: grads + 80 * i, name: "grads", op: "optimizer_create")
        try d.requireDType(T.dtype, like: "the optimizer")
        try g.requireDType(T.dtype, like: "the optimizer")
        try d.checkSizes()
        try g.requireShape(of: d)
        if d.region().overlaps(g.region()) {
            throw SwiftCNNError.value("\(op): \(d.name) must not share memory with \(g.name)")
        }
        result.append(try Parameter(name: "params[\(i)]", data: try d.tensor(T.self), grad: try g.tensor(T.self)))
    }
    return result
}

/// The optimizer of `kind` in `T`: the one table of optimizer kinds behind `scnn_optimizer_create`.
func makeOptimizer<T: CNNScalar>(_: T.Type, kind: String, _ params: [Parameter<T>], _ r: UnsafePointer<Double>?,
                                 _ n: Int) throws -> (any Optimizer, String) {
    func expect(_ count: Int, _ op: String) throws {
        guard n == count else { throw SwiftCNNError.value("\(op): takes \(count) reals, got \(n)") }
    }
    switch kind {
    case "sgd":
        try expect(5, "SGD")
        return (try SGD<T>(parameters: params, learningRate: r![0], momentum: r![1], dampening: r![2],
                           weightDecay: r![3], nesterov: r![4] != 0), "SGD")
    case "adam":
        try expect(5, "Adam")
        return (try Adam<T>(parameters: params, learningRate: r![0], beta1: r![1], beta2: r![2], epsilon: r![3],
                            weightDecay: r![4]), "Adam")
    case "adamw":
        try expect(5, "AdamW")
        return (try Adam<T>(parameters: params, learningRate: r![0], beta1: r![1], beta2: r![2], epsilon: r![3],
                            weightDecay: r![4], decoupledWeightDecay: true), "AdamW")
    default:
        throw SwiftCNNError.value("optimizer_create: unknown optimizer kind '\(kind)'")
    }
}

/// `scnn_optimizer_create`: one constructor for every optimizer kind (see makeOptimizer).
@_cdecl("scnn_optimizer_create")
public func scnn_optimizer_create(_ kind: UnsafePointer<CChar>?, _ data: UnsafeRawPointer?, _ grads: UnsafeRawPointer?,
                                  _ count: Int64, _ reals: UnsafePointer<Double>?, _ nReals: Int32,
                                  _ optimizerOut: UnsafeMutablePointer<OpaquePointer?>?,
                                  _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let op = "optimizer_create"
        guard let kind else { throw SwiftCNNError.value("\(op): kind is NULL") }
        let out = try requireOut(optimizerOut, name: "optimizer_out", op: op)
        guard nReals >= 0, nReals == 0 || reals != nil else { throw SwiftCNNError.value("\(op): reals is NULL") }
        let k = String(cString: kind)
        // The dtype is the parameters' (float32 when there are none).
        var dt = DType.float32
        if count > 0, let data {
            dt = try Operand(base: data, name: "data", op: "optimizer_create").dtype().float ?? .float32
        }
        let made: (any Optimizer, String)
        switch dt {
        case .float32:
            made = try pythonNames { try makeOptimizer(Float.self, kind: k, try borrowedParameters(Float.self, data, grads, count, op: op), reals, Int(nReals)) }
        case .float64:
            made = try pythonNames { try makeOptimizer(Double.self, kind: k, try borrowedParameters(Double.self, data, grads, count, op: op), reals, Int(nReals)) }
        }
        out.pointee = OpaquePointer(Unmanaged.passRetained(OptimizerHandle(made.0, dtype: dt, name: made.1)).toOpaque())
    }
}

/// `scnn_optimizer_step`: one update of every parameter's data (grads unchanged).
@_cdecl("scnn_optimizer_step")
public func scnn_optimizer_step(_ optimizer: OpaquePointer?, _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let h = try optimizerHandle(optimizer, op: "optimizer_step")
        try h.access.run { try h.optimizer.step() }
    }
}

/// `scnn_optimizer_set_lr`: lr >= 0 (NaN rejected), effective from the next step.
@_cdecl("scnn_optimizer_set_lr")
public func scnn_optimizer_set_lr(_ optimizer: OpaquePointer?, _ lr: Double,
                                  _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let h = try optimizerHandle(optimizer, op: "optimizer_set_lr")
        guard lr >= 0 else { throw SwiftCNNError.value("\(h.name): invalid lr: \(lr) (must be >= 0)") }
        try h.access.run { h.optimizer.learningRate = lr }
    }
}

/// `scnn_optimizer_get_lr`: the learning rate, or NaN for a NULL handle.
@_cdecl("scnn_optimizer_get_lr")
public func scnn_optimizer_get_lr(_ optimizer: OpaquePointer?) -> Double {
    guard let h = try? optimizerHandle(optimizer, op: "optimizer_get_lr") else { return .nan }
    return h.optimizer.learningRate
}

/// `scnn_optimizer_zero_grad`: every parameter's grad set to zero.
@_cdecl("scnn_optimizer_zero_grad")
public func scnn_optimizer_zero_grad(_ optimizer: OpaquePointer?, _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let h = try optimizerHandle(optimizer, op: "optimizer_zero_grad")
        try h.access.run { try h.optimizer.zeroGrad() }
    }
}

/// `scnn_optimizer_release`: drops one reference (NULL is ignored).
@_cdecl("scnn_optimizer_release")
public func scnn_optimizer_release(_ optimizer: OpaquePointer?) {
    guard let optimizer else { return }
    Unmanaged<OptimizerHandle>.fromOpaque(UnsafeRawPointer(optimizer)).release()
}

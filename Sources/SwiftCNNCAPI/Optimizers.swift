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

/// Validates the (data, grad, counts) arrays and builds Parameters of shape (count,) borrowing them.
func borrowedParameters<T: CNNScalar>(_: T.Type, _ data: UnsafePointer<UnsafeMutableRawPointer?>?,
                                      _ grad: UnsafePointer<UnsafeMutableRawPointer?>?,
                                      _ counts: UnsafePointer<Int64>?, _ paramCount: Int64, op: String) throws -> [Parameter<T>] {
    guard paramCount >= 0 else { throw SwiftCNNError.value("\(op): param_count must be >= 0, got \(paramCount)") }
    guard paramCount > 0 else { return [] }
    guard let data else { throw SwiftCNNError.value("\(op): data is NULL but param_count is \(paramCount)") }
    guard let grad else { throw SwiftCNNError.value("\(op): grad is NULL but param_count is \(paramCount)") }
    guard let counts else { throw SwiftCNNError.value("\(op): counts is NULL but param_count is \(paramCount)") }
    var result: [Parameter<T>] = []
    for i in 0..<int(paramCount) {
        let name = "params[\(i)]"
        guard counts[i] >= 0 else { throw SwiftCNNError.value("\(op): counts[\(i)] must be >= 0, got \(counts[i])") }
        let shape = [int(counts[i])]
        try checkSizes(shape, name: name, op: op)
        let d: Tensor<T> = try borrowOut(data[i], shape: shape, name: "data[\(i)]", op: op)
        let g: Tensor<T> = try borrowOut(grad[i], shape: shape, name: "grad[\(i)]", op: op)
        try checkNoOverlapOutputs(op: op, [("data[\(i)]", d)], [("grad[\(i)]", g)])
        result.append(try Parameter(name: name, data: d, grad: g))
    }
    return result
}

/// `scnn_sgd_create`: SGD with PyTorch's rules and checks.
@_cdecl("scnn_sgd_create")
public func scnn_sgd_create(_ dtype: Int32, _ data: UnsafePointer<UnsafeMutableRawPointer?>?,
                            _ grad: UnsafePointer<UnsafeMutableRawPointer?>?, _ counts: UnsafePointer<Int64>?,
                            _ paramCount: Int64, _ lr: Double, _ momentum: Double, _ dampening: Double,
                            _ weightDecay: Double, _ nesterov: Bool,
                            _ optimizerOut: UnsafeMutablePointer<OpaquePointer?>?,
                            _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let op = "SGD"
        let dt = try parseDType(dtype, op: op)
        let out = try requireOut(optimizerOut, name: "optimizer_out", op: op)
        let optimizer: any Optimizer
        switch dt {
        case .float32:
            optimizer = try SGD<Float>(parameters: try borrowedParameters(Float.self, data, grad, counts, paramCount, op: op),
                                       learningRate: lr, momentum: momentum, dampening: dampening,
                                       weightDecay: weightDecay, nesterov: nesterov)
        case .float64:
            optimizer = try SGD<Double>(parameters: try borrowedParameters(Double.self, data, grad, counts, paramCount, op: op),
                                        learningRate: lr, momentum: momentum, dampening: dampening,
                                        weightDecay: weightDecay, nesterov: nesterov)
        }
        out.pointee = OpaquePointer(Unmanaged.passRetained(OptimizerHandle(optimizer, dtype: dt, name: op)).toOpaque())
    }
}

/// `scnn_adam_create`: Adam with PyTorch's rules and checks.
@_cdecl("scnn_adam_create")
public func scnn_adam_create(_ dtype: Int32, _ data: UnsafePointer<UnsafeMutableRawPointer?>?,
                             _ grad: UnsafePointer<UnsafeMutableRawPointer?>?, _ counts: UnsafePointer<Int64>?,
                             _ paramCount: Int64, _ lr: Double, _ beta1: Double, _ beta2: Double, _ eps: Double,
                             _ weightDecay: Double,
                             _ optimizerOut: UnsafeMutablePointer<OpaquePointer?>?,
                             _ msg: UnsafeMutablePointer<CChar>?, _ msgCap: Int64) -> Int32 {
    withStatus(msg, msgCap) {
        let op = "Adam"
        let dt = try parseDType(dtype, op: op)
        let out = try requireOut(optimizerOut, name: "optimizer_out", op: op)
        let optimizer: any Optimizer
        switch dt {
        case .float32:
            optimizer = try Adam<Float>(parameters: try borrowedParameters(Float.self, data, grad, counts, paramCount, op: op),
                                        learningRate: lr, beta1: beta1, beta2: beta2, epsilon: eps, weightDecay: weightDecay)
        case .float64:
            optimizer = try Adam<Double>(parameters: try borrowedParameters(Double.self, data, grad, counts, paramCount, op: op),
                                         learningRate: lr, beta1: beta1, beta2: beta2, epsilon: eps, weightDecay: weightDecay)
        }
        out.pointee = OpaquePointer(Unmanaged.passRetained(OptimizerHandle(optimizer, dtype: dt, name: op)).toOpaque())
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

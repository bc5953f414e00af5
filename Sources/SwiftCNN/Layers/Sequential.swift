/// A chain of layers, as PyTorch's `nn.Sequential`: forward runs them in order, each on the previous
/// one's output; backward runs them in reverse, each on the next one's input gradient (the chain rule,
/// one Jacobian-vector product per layer).
///
/// Holds the very layer objects given (not copies), so parameters are shared with whoever else holds
/// them. The activations passed between children are views of the children's own buffers: nothing
/// is copied along the chain. Parameters are named by position as in PyTorch's state dicts:
/// "0.weight", "0.bias", "3.weight", and "2.0.weight" for a nested Sequential.
///
/// A layer object may appear only once in a model (nested Sequentials included): a layer keeps the
/// state of one forward, so a second use would overwrite what the first one's backward needs.
public final class Sequential<T: CNNScalar>: Layer, @unchecked Sendable, CustomStringConvertible {
    public typealias Scalar = T

    /// The children, in order.
    public let layers: [any Layer<T>]

    let access = ExclusiveAccess(name: "Sequential")
    /// Shapes of the last successful forward: input, then each child's output.
    @usableFromInline var activationShapes: [[Int]]?

    /// A model of `layers` (may be empty: the identity). Throws `.value` if a layer object appears
    /// twice, directly or inside a nested Sequential.
    public init(_ layers: [any Layer<T>]) throws {
        var seen = Set<ObjectIdentifier>()
        func visit(_ layer: any Layer<T>, _ path: String) throws {
            guard seen.insert(ObjectIdentifier(layer)).inserted else {
                throw SwiftCNNError.value(
                    "Sequential: layer \(path) is the same object as an earlier layer; a layer keeps the state of one "
                        + "forward, so it can appear only once in a model")
            }
            if let nested = (layer as? Sequential<T>) ?? (layer as? Residual<T>)?.body {
                for (i, child) in nested.layers.enumerated() { try visit(child, path + ".\(i)") }
            }
        }
        for (i, layer) in layers.enumerated() { try visit(layer, "\(i)") }
        self.layers = layers
    }

    /// `Sequential(a, b, c)`.
    public convenience init(_ layers: any Layer<T>...) throws {
        try self.init(layers)
    }

    public var parameters: [Parameter<T>] {
        layers.enumerated().flatMap { i, layer in layer.parameters.map { $0.prefixed("\(i)") } }
    }

    /// The children's buffers, named by position like the parameters ("3.running_mean").
    public var buffers: [Buffer<T>] {
        layers.enumerated().flatMap { i, layer in layer.buffers.map { $0.prefixed("\(i)") } }
    }

    @usableFromInline let training = TrainingFlag()

    public var isTraining: Bool { training.isOn }

    /// Sets this container's mode and every child's (nested containers pass it on).
    public func setTraining(_ on: Bool) {
        training.set(on)
        for layer in layers { layer.setTraining(on) }
    }

    public var lastInputShape: [Int]? { access.read { activationShapes?.first } }

    public func outputShape(forInput shape: [Int]) throws -> [Int] {
        var s = shape
        for (i, layer) in layers.enumerated() {
            s = try inLayer(i) { try layer.outputShape(forInput: s) }
        }
        return s
    }

    public func forward(_ x: Tensor<T>, returning result: ForwardResult) throws -> Tensor<T> {
        try access.run {
            activationShapes = nil  // a failed forward leaves nothing for backward to misuse
            var shapes = [x.shape]
            shapes.reserveCapacity(layers.count + 1)
            var h = x
            var i = 0
            while i < layers.count {
                // Conv2d followed by ReLU or Sigmoid: the convolution activates each image's output
                // while it is in cache and the activation layer adopts the result (one pass over
                // the largest activations of a CNN saved; the same values as running both).
                if i + 1 < layers.count, let conv = layers[i] as? Conv2d<T>,
                   let (epilogue, adopt) = fusableActivation(layers[i + 1]) {
                    h = try inLayer(i) { try conv.forward(h, epilogue: epilogue, returning: .view) }
                    shapes.append(h.shape)
                    h = try inLayer(i + 1) { try adopt(h) }
                    shapes.append(h.shape)
                    i += 2
                    continue
                }
                h = try inLayer(i) { try layers[i].forwardView(h) }
                shapes.append(h.shape)
                i += 1
            }
            activationShapes = shapes
            return try result.deliver(h)
        }
    }

    public func backward(_ gradOut: Tensor<T>) throws -> Tensor<T> {
        guard let gradX = try backward(gradOut, inputGradient: true) else {
            throw SwiftCNNError.runtime("Sequential: backward produced no input gradient")
        }
        return gradX
    }

    /// Backward through the children in reverse; with `inputGradient: false` the first child is
    /// asked not to compute its input gradient (nil is returned).
    public func backward(_ gradOut: Tensor<T>, inputGradient: Bool) throws -> Tensor<T>? {
        try access.run {
            guard let shapes = activationShapes else {
                throw SwiftCNNError.runtime("Sequential: backward called before forward")
            }
            try requireGradOutShape("Sequential", gradOut, shapes[layers.count])
            var g = gradOut
            var i = layers.count - 1
            while i >= 0 {
                defer { i -= 1 }
                let layer = layers[i]
                // A child used on its own since our forward now holds another input's state.
                guard layer.lastInputShape == shapes[i] else {
                    throw SwiftCNNError.runtime(
                        "Sequential: layer \(i) was run on another input since this model's forward; call forward again")
                }
                // ReLU or Sigmoid followed by MaxPool2d: the pool applies the activation's backward
                // to each plane of its gradient while it is in cache (one pass over the largest
                // gradients saved; the same values as running both).
                if let pool = layer as? MaxPool2d<T>, i >= 1, layers[i - 1] is ReLU<T> || layers[i - 1] is Sigmoid<T>,
                   layers[i - 1].lastInputShape == shapes[i - 1] {
                    let activation = layers[i - 1]
                    let saved = try inLayer(i - 1) { () throws -> Tensor<T> in
                        if let relu = activation as? ReLU<T> { return try relu.savedForBackward() }
                        if let sigmoid = activation as? Sigmoid<T> { return try sigmoid.savedForBackward() }
                        throw SwiftCNNError.runtime("Sequential: internal error: not a fusable activation")
                    }
                    g = try inLayer(i) { try pool.backward(g, then: (activation, saved)) }
                    guard g.shape == shapes[i - 1] else {
                        throw SwiftCNNError.runtime("Sequential: layer \(i) returned a gradient of the wrong shape")
                    }
                    i -= 1   // the activation's backward is done
                    if i == 0 && !inputGradient { return nil }
                    continue
                }
                if i == 0 && !inputGradient {
                    // The first child's input gradient is not wanted; a layer may still return one.
                    _ = try inLayer(i) { try layer.backward(g, inputGradient: false) }
                    return nil
                }
                g = try inLayer(i) { try layer.backward(g) }
                guard g.shape == shapes[i] else {
                    throw SwiftCNNError.runtime(
                        "Sequential: layer \(i) returned a gradient of shape \(describeShape(g.shape)) for an input of "
                            + "shape \(describeShape(shapes[i])); was it run on another input since this model's forward?")
                }
            }
            return g
        }
    }

    public func zeroGrad() throws {
        try access.run {
            for (i, layer) in layers.enumerated() { try inLayer(i) { try layer.zeroGrad() } }
        }
    }

    /// For a ReLU or Sigmoid layer: the convolution epilogue that computes it, and the layer's
    /// method that adopts the activated output; nil for any other layer.
    func fusableActivation(_ layer: any Layer<T>) -> (ConvEpilogue, (Tensor<T>) throws -> Tensor<T>)? {
        if let relu = layer as? ReLU<T> { return (.relu, relu.adopt) }
        if let sigmoid = layer as? Sigmoid<T> { return (.sigmoid, sigmoid.adopt) }
        return nil
    }

    /// Runs `body`, prefixing the position to a child's error message: "layer 3: Conv2d: ...".
    @usableFromInline
    func inLayer<R>(_ index: Int, _ body: () throws -> R) throws -> R {
        do {
            return try body()
        } catch let error as SwiftCNNError {
            throw SwiftCNNError(error.kind, "layer \(index): \(error.message)")
        }
    }

    /// As PyTorch prints it, one child per line with its index.
    public var description: String {
        guard !layers.isEmpty else { return "Sequential()" }
        var lines = ["Sequential("]
        for (i, layer) in layers.enumerated() {
            let text = (layer as? CustomStringConvertible)?.description ?? "\(type(of: layer))"
            let indented = text.split(separator: "\n", omittingEmptySubsequences: false).joined(separator: "\n  ")
            lines.append("  (\(i)): \(indented)")
        }
        lines.append(")")
        return lines.joined(separator: "\n")
    }
}

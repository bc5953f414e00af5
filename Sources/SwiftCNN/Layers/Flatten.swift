/// Flattens every dimension but the batch: (N, d1, d2, ...) -> (N, d1 * d2 * ...), as PyTorch's
/// `nn.Flatten()` (start_dim = 1). Row-major order makes this a reshape, so no element moves.
///
/// Forward returns a view of x itself, backward a view of gradOut itself, each with the other shape:
/// no copy, no buffer (caffe's Flatten shares its bottom blob the same way). The input needs at least
/// 2 dimensions, and every dimension after the batch must be >= 1.
public final class Flatten<T: CNNScalar>: Layer, @unchecked Sendable, CustomStringConvertible {
    public typealias Scalar = T

    let access = ExclusiveAccess(name: "Flatten")
    @usableFromInline var inputShape: [Int]?

    public init() {}

    public var parameters: [Parameter<T>] { [] }

    public var lastInputShape: [Int]? { access.read { inputShape } }

    public func outputShape(forInput shape: [Int]) throws -> [Int] {
        guard shape.count >= 2 else {
            throw SwiftCNNError.value("Flatten: x must have at least 2 dimensions (N, ...), got shape \(describeShape(shape))")
        }
        guard shape.dropFirst().allSatisfy({ $0 >= 1 }), shape[0] >= 0 else {
            throw SwiftCNNError.value("Flatten: x must have sizes >= 1 after the batch dimension, got shape \(describeShape(shape))")
        }
        _ = try checkedElementCount(shape, what: "Flatten: x")
        return [shape[0], try checkedElementCount(Array(shape.dropFirst()), what: "Flatten: x")]
    }

    public func forward(_ x: Tensor<T>, returning result: ForwardResult) throws -> Tensor<T> {
        try access.run {
            let y = try x.reshaped(try outputShape(forInput: x.shape))
            inputShape = x.shape
            return try result.deliver(y)
        }
    }

    public func backward(_ gradOut: Tensor<T>) throws -> Tensor<T> {
        try access.run {
            guard let shape = inputShape else {
                throw SwiftCNNError.runtime("Flatten: backward called before forward")
            }
            try requireGradOutShape("Flatten", gradOut, try outputShape(forInput: shape))
            return try gradOut.reshaped(shape)
        }
    }

    public func zeroGrad() throws {}

    public var description: String { "Flatten(start_dim=1, end_dim=-1)" }
}

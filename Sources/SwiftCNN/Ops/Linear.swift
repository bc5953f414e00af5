// The fully connected (linear) op, forward and backward, as three GEMMs.
//
//     x (N, in)    weight (out, in)    bias (out)    y (N, out)
//
// The weight is (out, in) as in PyTorch, so the forward multiplies by its transpose; GEMM reads the
// transpose in place (transB), nothing is copied.

/// The validated shapes of `linear(x, weight, bias)`:
///
///     x (N, in_features)   weight (out_features, in_features)   bias (out_features)   y (N, out_features)
///
/// N may be 0 (empty results); in_features and out_features must be >= 1.
public struct LinearGeometry: Equatable, Sendable {
    public let batch, inFeatures, outFeatures: Int

    /// (N, in)
    public var inputShape: [Int] { [batch, inFeatures] }
    /// (out, in)
    public var weightShape: [Int] { [outFeatures, inFeatures] }
    /// (out,)
    public var biasShape: [Int] { [outFeatures] }
    /// (N, out)
    public var outputShape: [Int] { [batch, outFeatures] }

    /// Validates the shapes of x, weight and (if not nil) bias; `op` prefixes error messages
    /// ("linear", "linear_backward", "Linear").
    public init(op: String, xShape: [Int], weightShape: [Int], biasShape: [Int]?) throws {
        guard xShape.count == 2 else {
            throw SwiftCNNError.value("\(op): x must be 2-D (N, in_features), got shape \(describeShape(xShape))")
        }
        guard weightShape.count == 2 else {
            throw SwiftCNNError.value(
                "\(op): weight must be 2-D (out_features, in_features), got shape \(describeShape(weightShape))")
        }
        let (n, inF, outF) = (xShape[0], xShape[1], weightShape[0])
        guard n >= 0 else {
            throw SwiftCNNError.value("\(op): x must have non-negative sizes, got shape \(describeShape(xShape))")
        }
        guard inF >= 1 else {
            throw SwiftCNNError.value("\(op): x must have at least one feature, got shape \(describeShape(xShape))")
        }
        guard weightShape[1] == inF else {
            throw SwiftCNNError.value(
                "\(op): weight must have \(inF) input features to match x \(describeShape(xShape)), got shape \(describeShape(weightShape))")
        }
        guard outF >= 1 else {
            throw SwiftCNNError.value(
                "\(op): weight must have at least one output feature, got shape \(describeShape(weightShape))")
        }
        if let biasShape {
            guard biasShape == [outF] else {
                throw SwiftCNNError.value(
                    "\(op): bias must have shape (\(outF),) to match weight \(describeShape(weightShape)), got shape \(describeShape(biasShape))")
            }
        }
        _ = try checkedElementCount(xShape, what: "\(op): x")
        _ = try checkedElementCount(weightShape, what: "\(op): weight")
        _ = try checkedElementCount([n, outF], what: "\(op): output")
        self.batch = n; self.inFeatures = inF; self.outFeatures = outF
    }

    /// Throws a value error unless `gradOutShape` is this geometry's output shape.
    public func checkGradOut(op: String, _ gradOutShape: [Int]) throws {
        guard gradOutShape == outputShape else {
            throw SwiftCNNError.value(
                "\(op): grad_out must have shape \(describeShape(outputShape)), got \(describeShape(gradOutShape))")
        }
    }
}

// MARK: - Pointer level

/// y = x W^T + b:   y[n, o] = b[o] + sum_i x[n, i] * W[o, i]
///
///     x (N, in)   weight (out, in)   bias (out) or nil   y (N, out), overwritten
///
/// One GEMM with the bias pre-loaded into y (beta = 1), so the bias costs one pass over y.
@_spi(Engine) @inlinable
public func linearForward<T: CNNScalar>(batch: Int, inFeatures: Int, outFeatures: Int,
                                        x: UnsafePointer<T>, weight: UnsafePointer<T>, bias: UnsafePointer<T>?,
                                        y: UnsafeMutablePointer<T>) {
    if let bias {
        for n in 0..<batch { (y + n * outFeatures).update(from: bias, count: outFeatures) }
    }
    // y (N, out) = x (N, in) · weight^T (in, out)
    gemm(transA: false, transB: true, m: batch, n: outFeatures, k: inFeatures, alpha: 1,
         a: x, lda: inFeatures, b: weight, ldb: inFeatures, beta: bias == nil ? 0 : 1, c: y, ldc: outFeatures)
}

/// Gradients of y = x W^T + b, given gradOut = dL/dy:
///
///     gradX      (N, in)   = gradOut · W            dL/dx[n,i] = sum_o g[n,o] W[o,i]
///     gradWeight (out, in) = gradOut^T · x          dL/dW[o,i] = sum_n g[n,o] x[n,i]
///     gradBias   (out)     = sum_n gradOut[n, :]    (b is broadcast over the batch, so its gradient sums)
///
/// Any output may be nil to skip it. `accumulate`: gradWeight/gradBias += (layers, which add into
/// their parameter grads as PyTorch does) instead of being overwritten; gradX is always overwritten.
@_spi(Engine) @inlinable
public func linearBackward<T: CNNScalar>(batch: Int, inFeatures: Int, outFeatures: Int,
                                         gradOut: UnsafePointer<T>, x: UnsafePointer<T>, weight: UnsafePointer<T>,
                                         gradX: UnsafeMutablePointer<T>?, gradWeight: UnsafeMutablePointer<T>?,
                                         gradBias: UnsafeMutablePointer<T>?, accumulate: Bool) {
    if let gradX {
        // (N, in) = (N, out) · (out, in)
        gemm(transA: false, transB: false, m: batch, n: inFeatures, k: outFeatures, alpha: 1,
             a: gradOut, lda: outFeatures, b: weight, ldb: inFeatures, beta: 0, c: gradX, ldc: inFeatures)
    }
    if let gradWeight {
        // (out, in) = (N, out)^T · (N, in); with N = 0 the product is empty: zeros, or unchanged if accumulating.
        gemm(transA: true, transB: false, m: outFeatures, n: inFeatures, k: batch, alpha: 1,
             a: gradOut, lda: outFeatures, b: x, ldb: inFeatures, beta: accumulate ? 1 : 0, c: gradWeight, ldc: inFeatures)
    }
    if let gradBias {
        if !accumulate { gradBias.update(repeating: 0, count: outFeatures) }
        // Rows summed in batch order: deterministic, and vectorized along the contiguous out axis.
        for n in 0..<batch {
            let g = gradOut + n * outFeatures
            for o in 0..<outFeatures { gradBias[o] += g[o] }
        }
    }
}

// MARK: - Naive oracles

/// y[n, o] = b[o] + sum_i x[n, i] W[o, i], by the definition (test oracle of `linearForward`).
@inlinable
func linearForwardNaive<T: CNNScalar>(batch: Int, inFeatures: Int, outFeatures: Int,
                                      x: UnsafePointer<T>, weight: UnsafePointer<T>, bias: UnsafePointer<T>?,
                                      y: UnsafeMutablePointer<T>) {
    for n in 0..<batch {
        for o in 0..<outFeatures {
            var sum: T = bias?[o] ?? 0
            for i in 0..<inFeatures { sum = multiplyAdd(x[n * inFeatures + i], weight[o * inFeatures + i], sum) }
            y[n * outFeatures + o] = sum
        }
    }
}

/// The three gradients by their definitions (test oracle of `linearBackward`), same arguments.
@inlinable
func linearBackwardNaive<T: CNNScalar>(batch: Int, inFeatures: Int, outFeatures: Int,
                                       gradOut: UnsafePointer<T>, x: UnsafePointer<T>, weight: UnsafePointer<T>,
                                       gradX: UnsafeMutablePointer<T>?, gradWeight: UnsafeMutablePointer<T>?,
                                       gradBias: UnsafeMutablePointer<T>?, accumulate: Bool) {
    if let gradX {
        for n in 0..<batch {
            for i in 0..<inFeatures {
                var sum: T = 0
                for o in 0..<outFeatures { sum = multiplyAdd(gradOut[n * outFeatures + o], weight[o * inFeatures + i], sum) }
                gradX[n * inFeatures + i] = sum
            }
        }
    }
    if let gradWeight {
        for o in 0..<outFeatures {
            for i in 0..<inFeatures {
                var sum: T = accumulate ? gradWeight[o * inFeatures + i] : 0
                for n in 0..<batch { sum = multiplyAdd(gradOut[n * outFeatures + o], x[n * inFeatures + i], sum) }
                gradWeight[o * inFeatures + i] = sum
            }
        }
    }
    if let gradBias {
        for o in 0..<outFeatures {
            var sum: T = accumulate ? gradBias[o] : 0
            for n in 0..<batch { sum += gradOut[n * outFeatures + o] }
            gradBias[o] = sum
        }
    }
}

// MARK: - Tensor level

/// `linear(x, weight, bias=None, out=None)`: y = x @ weight.T + bias; x (N, in), weight (out, in),
/// bias (out). Returns a new tensor, or `out` (N, out), which must not overlap the inputs.
@_specialize(where T == Float) @_specialize(where T == Double)
public func linear<T: CNNScalar>(_ x: Tensor<T>, weight: Tensor<T>, bias: Tensor<T>? = nil,
                                 into out: Tensor<T>? = nil) throws -> Tensor<T> {
    let g = try LinearGeometry(op: "linear", xShape: x.shape, weightShape: weight.shape, biasShape: bias?.shape)
    var inputs = [("x", x), ("weight", weight)]
    if let bias { inputs.append(("bias", bias)) }
    let y = try makeOutput(out, shape: g.outputShape, op: "linear", inputs: inputs)
    linearForward(batch: g.batch, inFeatures: g.inFeatures, outFeatures: g.outFeatures,
                  x: x.pointer, weight: weight.pointer, bias: bias.map { UnsafePointer($0.pointer) }, y: y.pointer)
    return y
}

/// `linear_backward(grad_out, x, weight)`: (grad_x (N, in), grad_weight (out, in), grad_bias (out)),
/// new tensors.
@_specialize(where T == Float) @_specialize(where T == Double)
public func linearBackward<T: CNNScalar>(gradOut: Tensor<T>, x: Tensor<T>, weight: Tensor<T>) throws
    -> (gradX: Tensor<T>, gradWeight: Tensor<T>, gradBias: Tensor<T>) {
    let g = try LinearGeometry(op: "linear_backward", xShape: x.shape, weightShape: weight.shape, biasShape: nil)
    try g.checkGradOut(op: "linear_backward", gradOut.shape)
    let gradX = try Tensor<T>(zeros: g.inputShape)
    let gradWeight = try Tensor<T>(zeros: g.weightShape)
    let gradBias = try Tensor<T>(zeros: g.biasShape)
    linearBackward(batch: g.batch, inFeatures: g.inFeatures, outFeatures: g.outFeatures,
                   gradOut: gradOut.pointer, x: x.pointer, weight: weight.pointer,
                   gradX: gradX.pointer, gradWeight: gradWeight.pointer, gradBias: gradBias.pointer, accumulate: false)
    return (gradX, gradWeight, gradBias)
}

/// 2-D adaptive average pooling (PyTorch's `adaptive_avg_pool2d`): forward and backward.
///
///     x (N, C, H, W) -> y (N, C, Ho, Wo) for a requested output size (Ho, Wo)
///
/// Output row i averages the input rows of its bin  start(i) ..< end(i),
///
///     start(i) = floor(i * H / Ho),   end(i) = ceil((i + 1) * H / Ho)
///
/// and the columns likewise with W and Wo (PyTorch's bins). Every bin is non-empty (end > start since
/// (i+1) H / Ho > i H / Ho), and bins may overlap by one row when Ho does not divide H. Ho may exceed
/// H (PyTorch allows it): bins then repeat input rows. With Ho = 1 this is the global average.
///
///     y[n,c,i,j] = (1 / (rows_i * cols_j)) * sum over the bin of x[n,c,h,w]
///     dx[n,c,h,w] = sum over the bins (i, j) containing (h, w) of g[n,c,i,j] / (rows_i * cols_j)
///
/// The fast path computes each axis's bins once per call and runs the (n, c) planes in parallel
/// chunks with disjoint outputs (deterministic). The `Naive` functions evaluate the bin formulas at
/// every output, and the naive backward gathers into each input from every output instead of
/// scattering (the oracle).

// MARK: - Geometry

/// The validated shapes of an adaptive average pooling call.
public struct AdaptivePool2DGeometry: Equatable, Sendable {
    public let batch, channels, height, width, outH, outW: Int

    /// (N, C, H, W)
    public var inputShape: [Int] { [batch, channels, height, width] }
    /// (N, C, Ho, Wo)
    public var outputShape: [Int] { [batch, channels, outH, outW] }

    /// Throws `.value` naming the argument unless x is 4-D (N, C, H, W) with C, H, W >= 1 (N may be
    /// 0) and output_size >= 1 in both entries; `.overflow` if an element count or a bin bound
    /// (i + 1) * H does not fit in Int.
    public init(op: String, xShape: [Int], outputSize: (Int, Int)) throws {
        try requireRank(op, "x", xShape, 4, layout: "(N, C, H, W)")
        guard outputSize.0 >= 1, outputSize.1 >= 1 else {
            throw SwiftCNNError.value("\(op): output_size must be >= 1, got \(describePair(outputSize))")
        }
        let (n, c, h, w) = (xShape[0], xShape[1], xShape[2], xShape[3])
        guard c >= 1, h >= 1, w >= 1 else {
            throw SwiftCNNError.value(
                "\(op): x must have non-zero sizes after the batch dimension (C, H, W >= 1), got shape \(describeShape(xShape))")
        }
        _ = try checkedElementCount(xShape, what: "\(op): x")
        _ = try checkedElementCount([n, c, outputSize.0, outputSize.1], what: "\(op): output")
        _ = try checkedMultiply(outputSize.0, h, what: "\(op): output_size * input height")
        _ = try checkedMultiply(outputSize.1, w, what: "\(op): output_size * input width")
        batch = n; channels = c; height = h; width = w
        outH = outputSize.0; outW = outputSize.1
    }

    /// Throws `.value` unless `gradOutShape` is this geometry's output shape.
    public func checkGradOut(op: String, _ gradOutShape: [Int]) throws {
        guard gradOutShape == outputShape else {
            throw SwiftCNNError.value(
                "\(op): grad_out must have shape \(describeShape(outputShape)), got \(describeShape(gradOutShape))")
        }
    }
}

/// PyTorch's bin of output index i of `outSize` over `inSize` inputs: floor(i * in / out) ..< ceil((i+1) * in / out).
@inlinable @inline(__always)
public func adaptivePoolBin(_ i: Int, outSize: Int, inSize: Int) -> Range<Int> {
    let start = (i * inSize) / outSize
    let end = ((i + 1) * inSize + outSize - 1) / outSize
    return start..<end
}

// MARK: - pointer level, fast path

/// Plane chunks worth running in parallel.
@inlinable
func adaptivePoolPlaneChunks(_ g: AdaptivePool2DGeometry) -> Int {
    let planes = g.batch * g.channels
    // Each input element is read about once per overlapping bin: ~ max(H*W, Ho*Wo) per plane.
    let work = Int(min(Double(planes) * Double(max(g.height * g.width, g.outH * g.outW)), 1e15))
    return min(max(planes, 1), parallelChunks(work: work, minPerThread: 50_000))
}

/// y = adaptive_avg_pool2d(x).
///
///     x (N, C, H, W) -> y (N, C, Ho, Wo) overwritten
@inlinable
public func adaptiveAvgPool2dForward<T: CNNScalar>(_ g: AdaptivePool2DGeometry, x: UnsafePointer<T>,
                                                   y: UnsafeMutablePointer<T>) {
    // No planes, nothing to do: and the bin tables below are O(Ho + Wo), which only an empty batch
    // leaves unbounded by the output the caller allocated (the fuzzer's output_size 2^40, N = 0).
    guard g.batch > 0 else { return }
    let rows = (0..<g.outH).map { adaptivePoolBin($0, outSize: g.outH, inSize: g.height) }
    let cols = (0..<g.outW).map { adaptivePoolBin($0, outSize: g.outW, inSize: g.width) }
    let inPlane = g.height * g.width, outPlane = g.outH * g.outW
    let chunks = adaptivePoolPlaneChunks(g)
    rows.withUnsafeBufferPointer { rows in
        cols.withUnsafeBufferPointer { cols in
            parallelFor(chunks) { chunk in
                for p in chunkRange(chunk, of: chunks, total: g.batch * g.channels) {
                    let xp = x + p * inPlane, yp = y + p * outPlane
                    for i in 0..<g.outH {
                        let r = rows[i]
                        for j in 0..<g.outW {
                            let cb = cols[j]
                            var sum: T = 0
                            for h in r {
                                let row = xp + h * g.width
                                for w in cb { sum += row[w] }
                            }
                            yp[i * g.outW + j] = sum / T(r.count * cb.count)
                        }
                    }
                }
            }
        }
    }
}

/// dx of adaptive average pooling: each output's gradient spread evenly over its bin (scattered;
/// overlapping bins accumulate). x is not needed, only the geometry.
///
///     gradOut (N, C, Ho, Wo) -> gradX (N, C, H, W) overwritten
@inlinable
public func adaptiveAvgPool2dBackward<T: CNNScalar>(_ g: AdaptivePool2DGeometry, gradOut: UnsafePointer<T>,
                                                    gradX: UnsafeMutablePointer<T>) {
    // No planes, nothing to do: and the bin tables below are O(Ho + Wo), which only an empty batch
    // leaves unbounded by the output the caller allocated (the fuzzer's output_size 2^40, N = 0).
    guard g.batch > 0 else { return }
    let rows = (0..<g.outH).map { adaptivePoolBin($0, outSize: g.outH, inSize: g.height) }
    let cols = (0..<g.outW).map { adaptivePoolBin($0, outSize: g.outW, inSize: g.width) }
    let inPlane = g.height * g.width, outPlane = g.outH * g.outW
    let chunks = adaptivePoolPlaneChunks(g)
    rows.withUnsafeBufferPointer { rows in
        cols.withUnsafeBufferPointer { cols in
            parallelFor(chunks) { chunk in
                for p in chunkRange(chunk, of: chunks, total: g.batch * g.channels) {
                    let gx = gradX + p * inPlane, go = gradOut + p * outPlane
                    gx.update(repeating: 0, count: inPlane)
                    for i in 0..<g.outH {
                        let r = rows[i]
                        for j in 0..<g.outW {
                            let cb = cols[j]
                            let share = go[i * g.outW + j] / T(r.count * cb.count)
                            for h in r {
                                let row = gx + h * g.width
                                for w in cb { row[w] += share }
                            }
                        }
                    }
                }
            }
        }
    }
}

// MARK: - pointer level, naive oracle

/// The definition (test oracle; same contract as `adaptiveAvgPool2dForward`): the bin bounds
/// evaluated with floor/ceil at every output, the sum accumulated in Double.
@inlinable
public func adaptiveAvgPool2dForwardNaive<T: CNNScalar>(_ g: AdaptivePool2DGeometry, x: UnsafePointer<T>,
                                                        y: UnsafeMutablePointer<T>) {
    for p in 0..<(g.batch * g.channels) {
        for i in 0..<g.outH {
            let h0 = Int((Double(i * g.height) / Double(g.outH)).rounded(.down))
            let h1 = Int((Double((i + 1) * g.height) / Double(g.outH)).rounded(.up))
            for j in 0..<g.outW {
                let w0 = Int((Double(j * g.width) / Double(g.outW)).rounded(.down))
                let w1 = Int((Double((j + 1) * g.width) / Double(g.outW)).rounded(.up))
                var sum = 0.0
                for h in h0..<h1 { for w in w0..<w1 { sum += Double(x[(p * g.height + h) * g.width + w]) } }
                y[(p * g.outH + i) * g.outW + j] = T(sum / Double((h1 - h0) * (w1 - w0)))
            }
        }
    }
}

/// The definition of dx, gathered (test oracle; same contract as `adaptiveAvgPool2dBackward`): for
/// every input (h, w), the sum over all outputs whose bins contain it of g / bin area, in Double.
@inlinable
public func adaptiveAvgPool2dBackwardNaive<T: CNNScalar>(_ g: AdaptivePool2DGeometry, gradOut: UnsafePointer<T>,
                                                         gradX: UnsafeMutablePointer<T>) {
    func bin(_ i: Int, _ outSize: Int, _ inSize: Int) -> (Int, Int) {
        (Int((Double(i * inSize) / Double(outSize)).rounded(.down)),
         Int((Double((i + 1) * inSize) / Double(outSize)).rounded(.up)))
    }
    for p in 0..<(g.batch * g.channels) {
        for h in 0..<g.height {
            for w in 0..<g.width {
                var sum = 0.0
                for i in 0..<g.outH {
                    let (h0, h1) = bin(i, g.outH, g.height)
                    guard h >= h0 && h < h1 else { continue }
                    for j in 0..<g.outW {
                        let (w0, w1) = bin(j, g.outW, g.width)
                        guard w >= w0 && w < w1 else { continue }
                        sum += Double(gradOut[(p * g.outH + i) * g.outW + j]) / Double((h1 - h0) * (w1 - w0))
                    }
                }
                gradX[(p * g.height + h) * g.width + w] = T(sum)
            }
        }
    }
}

// MARK: - Tensor level

/// `adaptive_avg_pool2d(x, output_size, out=None)`: PyTorch's adaptive average pooling (bins in the
/// file header). `out` must not overlap x.
///
///     x (N, C, H, W) -> y (N, C, Ho, Wo)
///
/// Throws `.value` for x not 4-D or with C, H or W = 0, output_size < 1, a bad `out`; `.overflow`
/// for sizes beyond Int.
@inlinable
public func adaptiveAvgPool2d<T: CNNScalar>(_ x: Tensor<T>, outputSize: (Int, Int),
                                            into out: Tensor<T>? = nil) throws -> Tensor<T> {
    let g = try AdaptivePool2DGeometry(op: "adaptive_avg_pool2d", xShape: x.shape, outputSize: outputSize)
    let y = try makeOutput(out, shape: g.outputShape, op: "adaptive_avg_pool2d", inputs: [("x", x)])
    adaptiveAvgPool2dForward(g, x: x.pointer, y: y.pointer)
    return y
}

/// `adaptive_avg_pool2d_backward(grad_out, x, output_size)`: dx (x supplies the input shape).
///
///     gradOut (N, C, Ho, Wo), x (N, C, H, W) -> gradX (N, C, H, W)
///
/// Throws what the forward throws, and `.value` for grad_out not of the output's shape.
@inlinable
public func adaptiveAvgPool2dBackward<T: CNNScalar>(gradOut: Tensor<T>, x: Tensor<T>,
                                                    outputSize: (Int, Int)) throws -> Tensor<T> {
    let op = "adaptive_avg_pool2d_backward"
    let g = try AdaptivePool2DGeometry(op: op, xShape: x.shape, outputSize: outputSize)
    try g.checkGradOut(op: op, gradOut.shape)
    let gradX = try Tensor<T>(zeros: g.inputShape)
    adaptiveAvgPool2dBackward(g, gradOut: gradOut.pointer, gradX: gradX.pointer)
    return gradX
}

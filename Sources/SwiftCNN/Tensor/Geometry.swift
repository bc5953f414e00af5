/// Validated shapes and hyper-parameters of the 2-D convolution and pooling ops.
///
/// A geometry value is the proof that a call is well formed: every public entry point (Tensor level,
/// C ABI, layers) builds one first, and the pointer-level kernels take it as given. Its initializer
/// checks every rule of `swiftcnn.h`: ranks, channel agreement, bias length, strides, dilations and
/// kernel sizes >= 1, padding >= 0, spatial sizes >= 1, output sizes >= 1, and that every element
/// count the kernels will index (input, weight, output, im2col buffer) fits in `Int`. After that the
/// kernels may compute any index with plain (trapping) arithmetic without ever trapping.

/// Which reduction a pooling window applies.
public enum PoolKind: Sendable, Equatable {
    /// The window's maximum; padding counts as -infinity.
    case max
    /// The window's mean; padded zeros count in the divisor (PyTorch's `count_include_pad=True`).
    case average
}

// MARK: - shared validation helpers

/// Throws a value error unless `shape` has `rank` dimensions, all >= 0.
@usableFromInline
func requireRank(_ op: String, _ name: String, _ shape: [Int], _ rank: Int, layout: String) throws {
    guard shape.count == rank else {
        throw SwiftCNNError.value("\(op): \(name) must be \(rank)-D \(layout), got shape \(describeShape(shape))")
    }
    guard shape.allSatisfy({ $0 >= 0 }) else {
        throw SwiftCNNError.value("\(op): \(name) must have non-negative sizes, got shape \(describeShape(shape))")
    }
}

/// `(size + 2*pad - dilation*(kernel-1) - 1) / stride + 1`, the output length of a sliding window,
/// with overflow checks; throws a value error (naming `what`) if the dilated kernel does not fit in
/// the padded input.
@usableFromInline
func slidingOutputSize(_ opName: @autoclosure () -> String, size: Int, kernel: Int, stride: Int, pad: Int,
                       dilation: Int, axis: String) throws -> Int {
    var op: String { opName() }
    let padded = try checkedAdd(size, try checkedMultiply(2, pad, what: "\(op): padding"), what: "\(op): padded input \(axis)")
    // Dilated extent of the kernel: dilation*(kernel-1) + 1.
    let extent = try checkedAdd(try checkedMultiply(dilation, kernel - 1, what: "\(op): dilated kernel \(axis)"), 1,
                                what: "\(op): dilated kernel \(axis)")
    guard extent <= padded else {
        let dil = dilation == 1 ? "" : " (dilated: \(extent))"
        throw SwiftCNNError.value(
            "\(op): kernel \(axis) \(kernel)\(dil) is larger than the padded input \(axis) \(padded) (input \(size) + 2 * padding \(pad))")
    }
    return (padded - extent) / stride + 1
}

/// True when the product of the non-negative sizes fits in an `Int`: `checkedElementCount`'s rule
/// without the array (the geometry initializers run on every functional call and allocate nothing).
@inlinable
func productFits(_ a: Int, _ b: Int, _ c: Int = 1, _ d: Int = 1, _ e: Int = 1, _ f: Int = 1) -> Bool {
    var p = a, o = false
    (p, o) = p.multipliedReportingOverflow(by: b); if o { return false }
    (p, o) = p.multipliedReportingOverflow(by: c); if o { return false }
    (p, o) = p.multipliedReportingOverflow(by: d); if o { return false }
    (p, o) = p.multipliedReportingOverflow(by: e); if o { return false }
    (p, o) = p.multipliedReportingOverflow(by: f); if o { return false }
    return true
}

/// The stride the kernels use along one axis: the caller's, except that a window that slides only
/// once never moves, so any stride beyond the room left (`span` = padded size - dilated kernel + 1,
/// >= 1) gives the same single output; it is stored as `min(stride, span)`. That keeps the kernels'
/// index arithmetic (`(j + 3) * stride`) in range for any stride a caller may pass (2^62 trapped),
/// and a stride that becomes 1 does so only when the stride-1 kernels' own output size
/// (padded - extent + 1) is that single output (storing 1 otherwise sent a (1 x 5) result through
/// the stride-1 kernels, which wrote (5 x 5): a heap overflow the generated sweep found).
@inlinable
func effectiveStride(_ stride: Int, outputSize: Int, span: Int) -> Int { outputSize == 1 ? min(stride, span) : stride }

/// Throws an overflow error unless every index the sliding-window kernels compute along one axis
/// (`(o + 3) * stride + (kernel - 1) * dilation + padded size`, with margin) fits in an `Int`.
@usableFromInline
func checkIndexRange(_ op: @autoclosure () -> String, axis: String, outputSize: Int, stride: Int, kernel: Int,
                     dilation: Int, padded: Int) throws {
    let (a, o1) = (outputSize + 4).multipliedReportingOverflow(by: stride)
    let (b, o2) = (kernel).multipliedReportingOverflow(by: dilation)
    let (c, o3) = a.addingReportingOverflow(b)
    let (d, o4) = c.addingReportingOverflow(padded)
    let (_, o5) = d.multipliedReportingOverflow(by: 2)
    if o1 || o2 || o3 || o4 || o5 {
        throw SwiftCNNError.overflow(
            "\(op()): the \(axis) geometry (stride \(stride), kernel \(kernel), dilation \(dilation), padded size \(padded)) is too large for 64-bit index arithmetic")
    }
}

// MARK: - convolution

/// The validated geometry of `conv2d(x, weight, bias, stride, padding, dilation)`.
///
///     x      (N, C, H, W)
///     weight (K, C, kH, kW)
///     bias   (K)
///     y      (N, K, Ho, Wo),  Ho = (H + 2*padH - dilationH*(kH-1) - 1) / strideH + 1  (same for Wo)
public struct Conv2DGeometry: Equatable, Sendable, SlidingWindowGeometry {
    public let batch, inChannels, height, width, outChannels, kernelH, kernelW,
               strideH, strideW, padH, padW, dilationH, dilationW, outH, outW: Int

    /// (N, C, H, W)
    public var inputShape: [Int] { [batch, inChannels, height, width] }
    /// (K, C, kH, kW)
    public var weightShape: [Int] { [outChannels, inChannels, kernelH, kernelW] }
    /// (N, K, Ho, Wo)
    public var outputShape: [Int] { [batch, outChannels, outH, outW] }
    public var outputDims: (Int, Int, Int, Int) { (batch, outChannels, outH, outW) }
    /// (K,)
    public var biasShape: [Int] { [outChannels] }

    /// Rows of the im2col matrix: C*kH*kW (the reduction length of the convolution GEMM).
    @inlinable public var colRows: Int { inChannels * kernelH * kernelW }
    /// Columns of the im2col matrix of one image: Ho*Wo.
    @inlinable public var colCols: Int { outH * outW }
    /// Elements of one image's im2col matrix: C*kH*kW*Ho*Wo (checked to fit in `init`).
    @inlinable public var colCount: Int { colRows * colCols }

    /// Validates everything `swiftcnn.h` lists and computes the output size. This is the one
    /// validation of a convolution: the C ABI, the Tensor-level ops and the layers all come here.
    /// It allocates nothing; a message is built only when a rule fails.
    ///
    /// - Parameters:
    ///   - opName: the name prefixed to error messages ("conv2d", "conv2d_backward", "Conv2d").
    ///   - x: (N, C, H, W).
    ///   - weight: (K, C, kH, kW).
    ///   - biasLength: the bias's length, `nil` for no bias.
    ///   - stride: (h, w), each >= 1.
    ///   - padding: (h, w) zeros on each side, each >= 0.
    ///   - dilation: (h, w), each >= 1.
    /// - Throws: `.value` naming the argument with expected and actual shapes; `.overflow` if an
    ///   element count (x, weight, y, the im2col buffer) or the kernels' index arithmetic does not
    ///   fit in a 64-bit integer.
    public init(op opName: @autoclosure () -> String, x: (Int, Int, Int, Int), weight: (Int, Int, Int, Int),
                biasLength: Int?, stride: (Int, Int), padding: (Int, Int), dilation: (Int, Int)) throws {
        // The name is built only for a message: this runs on every call (a String per call was a
        // measurable share of a small convolution).
        var op: String { opName() }
        let (n, c, h, w) = x, (k, wc, kh, kw) = weight
        var xs: String { describeShape([n, c, h, w]) }
        var ws: String { describeShape([k, wc, kh, kw]) }
        guard n >= 0, c >= 0, h >= 0, w >= 0 else {
            throw SwiftCNNError.value("\(op): x must have non-negative sizes, got shape \(xs)")
        }
        guard k >= 0, wc >= 0, kh >= 0, kw >= 0 else {
            throw SwiftCNNError.value("\(op): weight must have non-negative sizes, got shape \(ws)")
        }
        guard stride.0 >= 1, stride.1 >= 1 else {
            throw SwiftCNNError.value("\(op): stride must be >= 1, got (\(stride.0), \(stride.1))")
        }
        guard padding.0 >= 0, padding.1 >= 0 else {
            throw SwiftCNNError.value("\(op): padding must be >= 0, got (\(padding.0), \(padding.1))")
        }
        guard dilation.0 >= 1, dilation.1 >= 1 else {
            throw SwiftCNNError.value("\(op): dilation must be >= 1, got (\(dilation.0), \(dilation.1))")
        }
        guard c >= 1 else {
            throw SwiftCNNError.value("\(op): x must have at least 1 channel, got shape \(xs)")
        }
        guard h >= 1, w >= 1 else {
            throw SwiftCNNError.value("\(op): x must have a spatial size of at least 1x1, got shape \(xs)")
        }
        guard k >= 1 else {
            throw SwiftCNNError.value("\(op): weight must have at least 1 output channel, got shape \(ws)")
        }
        guard wc == c else {
            throw SwiftCNNError.value("\(op): weight must have \(c) input channels to match x \(xs), got shape \(ws)")
        }
        guard kh >= 1, kw >= 1 else {
            throw SwiftCNNError.value("\(op): weight must have a kernel size of at least 1x1, got shape \(ws)")
        }
        if let biasLength, biasLength != k {
            throw SwiftCNNError.value(
                "\(op): bias must have shape (\(k),) to match weight \(ws), got shape (\(biasLength),)")
        }
        guard productFits(n, c, h, w) else { throw SwiftCNNError.overflow("\(op): x \(xs) has more elements than fit in 64 bits") }
        guard productFits(k, c, kh, kw) else { throw SwiftCNNError.overflow("\(op): weight \(ws) has more elements than fit in 64 bits") }
        let oh = try slidingOutputSize(op, size: h, kernel: kh, stride: stride.0, pad: padding.0, dilation: dilation.0, axis: "height")
        let ow = try slidingOutputSize(op, size: w, kernel: kw, stride: stride.1, pad: padding.1, dilation: dilation.1, axis: "width")
        // Elements and bytes (the caller allocates it): a huge padding or a tiny stride is what makes
        // an output this large, so the message names them.
        guard productFits(n, k, oh, ow, 8) else {
            throw SwiftCNNError.overflow(
                "\(op): padding (\(padding.0), \(padding.1)) with stride (\(stride.0), \(stride.1)) gives an output (\(n), \(k), \(oh), \(ow)) of more bytes than fit in 64 bits")
        }
        // The im2col buffer (C*kH*kW rows, Ho*Wo columns), for one image and for the whole batch
        // (the kernels may unfold several images at once).
        guard productFits(n, c, kh, kw, oh, ow) else {
            throw SwiftCNNError.overflow("\(op): the im2col buffer (\(n) x \(c * kh * kw) x \(oh * ow)) has more elements than fit in 64 bits")
        }
        // Spans (padded - dilated extent + 1): the sliding output sizes fit, so these cannot overflow.
        let spanH = h + 2 * padding.0 - dilation.0 * (kh - 1), spanW = w + 2 * padding.1 - dilation.1 * (kw - 1)
        let sh = effectiveStride(stride.0, outputSize: oh, span: spanH)
        let sw = effectiveStride(stride.1, outputSize: ow, span: spanW)
        try checkIndexRange(op, axis: "height", outputSize: oh, stride: sh, kernel: kh, dilation: dilation.0,
                            padded: h + 2 * padding.0)
        try checkIndexRange(op, axis: "width", outputSize: ow, stride: sw, kernel: kw, dilation: dilation.1,
                            padded: w + 2 * padding.1)

        self.batch = n; self.inChannels = c; self.height = h; self.width = w
        self.outChannels = k; self.kernelH = kh; self.kernelW = kw
        self.strideH = sh; self.strideW = sw
        self.padH = padding.0; self.padW = padding.1
        self.dilationH = dilation.0; self.dilationW = dilation.1
        self.outH = oh; self.outW = ow
    }

    /// The same from shape arrays (the Tensor-level ops and layers): checks the ranks, then runs
    /// the initializer above.
    public init(op: String, xShape: [Int], weightShape: [Int], biasShape: [Int]?,
                stride: (Int, Int), padding: (Int, Int), dilation: (Int, Int)) throws {
        try requireRank(op, "x", xShape, 4, layout: "(N, C, H, W)")
        try requireRank(op, "weight", weightShape, 4, layout: "(out_channels, in_channels, kH, kW)")
        var biasLength: Int? = nil
        if let biasShape {
            guard biasShape.count == 1 else {
                throw SwiftCNNError.value(
                    "\(op): bias must have shape (\(weightShape[0]),) to match weight \(describeShape(weightShape)), got shape \(describeShape(biasShape))")
            }
            biasLength = biasShape[0]
        }
        try self.init(op: op, x: (xShape[0], xShape[1], xShape[2], xShape[3]),
                      weight: (weightShape[0], weightShape[1], weightShape[2], weightShape[3]), biasLength: biasLength,
                      stride: stride, padding: padding, dilation: dilation)
    }
}

// MARK: - pooling

/// The validated geometry of `max_pool2d` / `avg_pool2d(x, kernel_size, stride, padding)`.
///
///     x (N, C, H, W)  ->  y (N, C, Ho, Wo),  Ho = (H + 2*padH - kH) / strideH + 1  (same for Wo)
///
/// As PyTorch, padding must be at most half the kernel (`padding <= kernel_size // 2`), for both
/// kinds. That guarantees every window overlaps the real input, so a max window is never all -inf.
public struct Pool2DGeometry: Equatable, Sendable, SlidingWindowGeometry {
    public let batch, channels, height, width, kernelH, kernelW, strideH, strideW, padH, padW, outH, outW: Int

    /// (N, C, H, W)
    public var inputShape: [Int] { [batch, channels, height, width] }
    /// (N, C, Ho, Wo)
    public var outputShape: [Int] { [batch, channels, outH, outW] }
    public var outputDims: (Int, Int, Int, Int) { (batch, channels, outH, outW) }

    /// Validates everything `swiftcnn.h` lists and computes the output size: the one validation of
    /// a pooling call (C ABI, Tensor level, layers). Allocates nothing unless it throws.
    ///
    /// - Parameters:
    ///   - opName: the name prefixed to error messages ("max_pool2d", "avg_pool2d_backward", ...).
    ///   - kind: max or average pooling.
    ///   - x: (N, C, H, W).
    ///   - kernelSize: (h, w), each >= 1.
    ///   - stride: (h, w), or `nil` for the default, which is the kernel size (PyTorch's rule,
    ///     decided here and nowhere else).
    ///   - padding: (h, w), each at most half the kernel.
    /// - Throws: `.value` naming the argument; `.overflow` for element counts beyond `Int`, and for
    ///   max pooling, for input planes of more than 2^31 - 1 elements (argmax indices are Int32).
    public init(op opName: @autoclosure () -> String, kind: PoolKind, x: (Int, Int, Int, Int), kernelSize: (Int, Int),
                stride: (Int, Int)?, padding: (Int, Int)) throws {
        var op: String { opName() }  // built only for a message
        let (n, c, h, w) = x
        let stride = stride ?? kernelSize
        var xs: String { describeShape([n, c, h, w]) }
        guard n >= 0, c >= 0, h >= 0, w >= 0 else {
            throw SwiftCNNError.value("\(op): x must have non-negative sizes, got shape \(xs)")
        }
        guard kernelSize.0 >= 1, kernelSize.1 >= 1 else {
            throw SwiftCNNError.value("\(op): kernel_size must be >= 1, got (\(kernelSize.0), \(kernelSize.1))")
        }
        guard stride.0 >= 1, stride.1 >= 1 else {
            throw SwiftCNNError.value("\(op): stride must be >= 1, got (\(stride.0), \(stride.1))")
        }
        guard padding.0 >= 0, padding.1 >= 0 else {
            throw SwiftCNNError.value("\(op): padding must be >= 0, got (\(padding.0), \(padding.1))")
        }
        guard padding.0 <= kernelSize.0 / 2, padding.1 <= kernelSize.1 / 2 else {
            throw SwiftCNNError.value(
                "\(op): padding must be at most half of kernel_size (\(kernelSize.0), \(kernelSize.1)), got (\(padding.0), \(padding.1))")
        }
        guard c >= 1 else {
            throw SwiftCNNError.value("\(op): x must have at least 1 channel, got shape \(xs)")
        }
        guard h >= 1, w >= 1 else {
            throw SwiftCNNError.value("\(op): x must have a spatial size of at least 1x1, got shape \(xs)")
        }
        guard productFits(n, c, h, w) else { throw SwiftCNNError.overflow("\(op): x \(xs) has more elements than fit in 64 bits") }
        // Padding up to kernel/2 lets a kernel exceed the input; its area is the average's divisor.
        guard productFits(kernelSize.0, kernelSize.1) else {
            throw SwiftCNNError.overflow("\(op): kernel_size area (\(kernelSize.0) x \(kernelSize.1)) does not fit in 64 bits")
        }
        let oh = try slidingOutputSize(op, size: h, kernel: kernelSize.0, stride: stride.0, pad: padding.0, dilation: 1, axis: "height")
        let ow = try slidingOutputSize(op, size: w, kernel: kernelSize.1, stride: stride.1, pad: padding.1, dilation: 1, axis: "width")
        guard productFits(n, c, oh, ow, 8) else {
            throw SwiftCNNError.overflow(
                "\(op): padding (\(padding.0), \(padding.1)) with stride (\(stride.0), \(stride.1)) gives an output (\(n), \(c), \(oh), \(ow)) of more bytes than fit in 64 bits")
        }
        if kind == .max {
            guard productFits(h, w), h * w <= Int(Int32.max) else {
                throw SwiftCNNError.overflow("\(op): x planes of \(h)x\(w) elements exceed the 2^31 - 1 argmax indices")
            }
        }
        let sh = effectiveStride(stride.0, outputSize: oh, span: h + 2 * padding.0 - kernelSize.0 + 1)
        let sw = effectiveStride(stride.1, outputSize: ow, span: w + 2 * padding.1 - kernelSize.1 + 1)
        try checkIndexRange(op, axis: "height", outputSize: oh, stride: sh, kernel: kernelSize.0, dilation: 1,
                            padded: h + 2 * padding.0)
        try checkIndexRange(op, axis: "width", outputSize: ow, stride: sw, kernel: kernelSize.1, dilation: 1,
                            padded: w + 2 * padding.1)
        self.batch = n; self.channels = c; self.height = h; self.width = w
        self.kernelH = kernelSize.0; self.kernelW = kernelSize.1
        self.strideH = sh; self.strideW = sw
        self.padH = padding.0; self.padW = padding.1
        self.outH = oh; self.outW = ow
    }

    /// The same from a shape array (Tensor level, layers): checks the rank, then runs the
    /// initializer above.
    public init(op: String, kind: PoolKind, xShape: [Int], kernelSize: (Int, Int), stride: (Int, Int)?,
                padding: (Int, Int)) throws {
        try requireRank(op, "x", xShape, 4, layout: "(N, C, H, W)")
        try self.init(op: op, kind: kind, x: (xShape[0], xShape[1], xShape[2], xShape[3]), kernelSize: kernelSize,
                      stride: stride, padding: padding)
    }
}

/// A convolution's or a pooling's geometry, as its backward sees it: the output's (N, C, Ho, Wo),
/// which grad_out must match.
public protocol SlidingWindowGeometry {
    /// [N, C or K, Ho, Wo].
    var outputShape: [Int] { get }
    /// The same as a tuple (no allocation).
    var outputDims: (Int, Int, Int, Int) { get }
}

extension SlidingWindowGeometry {
    /// Throws a value error unless `gradOut` is this geometry's output shape. Allocates nothing
    /// unless it throws.
    public func checkGradOut(op: @autoclosure () -> String, _ gradOut: (Int, Int, Int, Int)) throws {
        guard gradOut == outputDims else {
            throw SwiftCNNError.value(
                "\(op()): grad_out must have shape \(describeShape(outputShape)), got \(describeShape([gradOut.0, gradOut.1, gradOut.2, gradOut.3]))")
        }
    }

    /// The same from a shape array.
    public func checkGradOut(op: String, _ gradOutShape: [Int]) throws {
        guard gradOutShape == outputShape else {
            throw SwiftCNNError.value(
                "\(op): grad_out must have shape \(describeShape(outputShape)), got \(describeShape(gradOutShape))")
        }
    }
}

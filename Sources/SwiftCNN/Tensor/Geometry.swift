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
func slidingOutputSize(_ op: String, size: Int, kernel: Int, stride: Int, pad: Int, dilation: Int,
                       axis: String) throws -> Int {
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

/// `a * b` for sizes already known to be >= 0, or nil on overflow. The scalar initializers below
/// use it to mirror `checkedElementCount` (same factors, same order) without building an array.
@inlinable
func productFits(_ a: Int, _ b: Int) -> Int? {
    let (p, overflow) = a.multipliedReportingOverflow(by: b)
    return overflow ? nil : p
}

/// `slidingOutputSize` without its messages: nil wherever that function would throw.
@inlinable
func slidingOutputSizeIfValid(size: Int, kernel: Int, stride: Int, pad: Int, dilation: Int) -> Int? {
    guard let twoPad = productFits(2, pad) else { return nil }
    let (padded, o1) = size.addingReportingOverflow(twoPad)
    guard !o1, let dilated = productFits(dilation, kernel - 1) else { return nil }
    let (extent, o2) = dilated.addingReportingOverflow(1)
    guard !o2, extent <= padded else { return nil }
    return (padded - extent) / stride + 1
}

// MARK: - convolution

/// The validated geometry of `conv2d(x, weight, bias, stride, padding, dilation)`.
///
///     x      (N, C, H, W)
///     weight (K, C, kH, kW)
///     bias   (K)
///     y      (N, K, Ho, Wo),  Ho = (H + 2*padH - dilationH*(kH-1) - 1) / strideH + 1  (same for Wo)
public struct Conv2DGeometry: Equatable, Sendable {
    public let batch, inChannels, height, width, outChannels, kernelH, kernelW,
               strideH, strideW, padH, padW, dilationH, dilationW, outH, outW: Int

    /// (N, C, H, W)
    public var inputShape: [Int] { [batch, inChannels, height, width] }
    /// (K, C, kH, kW)
    public var weightShape: [Int] { [outChannels, inChannels, kernelH, kernelW] }
    /// (N, K, Ho, Wo)
    public var outputShape: [Int] { [batch, outChannels, outH, outW] }
    /// (K,)
    public var biasShape: [Int] { [outChannels] }

    /// Rows of the im2col matrix: C*kH*kW (the reduction length of the convolution GEMM).
    @inlinable public var colRows: Int { inChannels * kernelH * kernelW }
    /// Columns of the im2col matrix of one image: Ho*Wo.
    @inlinable public var colCols: Int { outH * outW }
    /// Elements of one image's im2col matrix: C*kH*kW*Ho*Wo (checked to fit in `init`).
    @inlinable public var colCount: Int { colRows * colCols }

    /// Validates everything `swiftcnn.h` lists and computes the output size.
    ///
    /// - Parameters:
    ///   - op: the name prefixed to error messages ("conv2d", "conv2d_backward", "Conv2d").
    ///   - biasShape: `nil` for no bias.
    ///   - stride, padding, dilation: (h, w) pairs.
    /// - Throws: `.value` naming the argument with expected and actual shapes; `.overflow` if an
    ///   element count (x, weight, y, the im2col buffer) does not fit in a 64-bit integer.
    public init(op: String, xShape: [Int], weightShape: [Int], biasShape: [Int]?,
                stride: (Int, Int), padding: (Int, Int), dilation: (Int, Int)) throws {
        try requireRank(op, "x", xShape, 4, layout: "(N, C, H, W)")
        try requireRank(op, "weight", weightShape, 4, layout: "(out_channels, in_channels, kH, kW)")
        guard stride.0 >= 1, stride.1 >= 1 else {
            throw SwiftCNNError.value("\(op): stride must be >= 1, got (\(stride.0), \(stride.1))")
        }
        guard padding.0 >= 0, padding.1 >= 0 else {
            throw SwiftCNNError.value("\(op): padding must be >= 0, got (\(padding.0), \(padding.1))")
        }
        guard dilation.0 >= 1, dilation.1 >= 1 else {
            throw SwiftCNNError.value("\(op): dilation must be >= 1, got (\(dilation.0), \(dilation.1))")
        }
        let (n, c, h, w) = (xShape[0], xShape[1], xShape[2], xShape[3])
        let (k, wc, kh, kw) = (weightShape[0], weightShape[1], weightShape[2], weightShape[3])
        guard c >= 1 else {
            throw SwiftCNNError.value("\(op): x must have at least 1 channel, got shape \(describeShape(xShape))")
        }
        guard h >= 1, w >= 1 else {
            throw SwiftCNNError.value("\(op): x must have a spatial size of at least 1x1, got shape \(describeShape(xShape))")
        }
        guard k >= 1 else {
            throw SwiftCNNError.value("\(op): weight must have at least 1 output channel, got shape \(describeShape(weightShape))")
        }
        guard wc == c else {
            throw SwiftCNNError.value(
                "\(op): weight must have \(c) input channels to match x \(describeShape(xShape)), got shape \(describeShape(weightShape))")
        }
        guard kh >= 1, kw >= 1 else {
            throw SwiftCNNError.value("\(op): weight must have a kernel size of at least 1x1, got shape \(describeShape(weightShape))")
        }
        if let biasShape {
            guard biasShape == [k] else {
                throw SwiftCNNError.value(
                    "\(op): bias must have shape (\(k),) to match weight \(describeShape(weightShape)), got shape \(describeShape(biasShape))")
            }
        }
        _ = try checkedElementCount(xShape, what: "\(op): x")
        _ = try checkedElementCount(weightShape, what: "\(op): weight")
        let oh = try slidingOutputSize(op, size: h, kernel: kh, stride: stride.0, pad: padding.0, dilation: dilation.0, axis: "height")
        let ow = try slidingOutputSize(op, size: w, kernel: kw, stride: stride.1, pad: padding.1, dilation: dilation.1, axis: "width")
        _ = try checkedElementCount([n, k, oh, ow], what: "\(op): output")
        // The im2col buffer (C*kH*kW rows, Ho*Wo columns), for one image and for the whole batch
        // (the kernels may unfold several images at once).
        _ = try checkedElementCount([c, kh, kw, oh, ow], what: "\(op): im2col buffer")
        _ = try checkedElementCount([n, c, kh, kw, oh, ow], what: "\(op): im2col buffer")

        self.batch = n; self.inChannels = c; self.height = h; self.width = w
        self.outChannels = k; self.kernelH = kh; self.kernelW = kw
        self.strideH = stride.0; self.strideW = stride.1
        self.padH = padding.0; self.padW = padding.1
        self.dilationH = dilation.0; self.dilationW = dilation.1
        self.outH = oh; self.outW = ow
    }

    /// The same validation from scalar sizes, without the shape arrays the initializer above builds
    /// (for its checks and messages): a functional call on a small input validates once per call, and
    /// those arrays (malloc + free each) were most of the cost of validating. `biasLength` is nil for
    /// no bias. Only the passing case is decided here; when any rule fails, the array initializer
    /// runs to throw its exact message (so messages and the order of the checks cannot drift).
    public init(op: String, x: (Int, Int, Int, Int), weight: (Int, Int, Int, Int), biasLength: Int?,
                stride: (Int, Int), padding: (Int, Int), dilation: (Int, Int)) throws {
        let (n, c, h, w) = x, (k, wc, kh, kw) = weight
        if n >= 0, c >= 1, h >= 1, w >= 1, k >= 1, wc == c, kh >= 1, kw >= 1,
           stride.0 >= 1, stride.1 >= 1, padding.0 >= 0, padding.1 >= 0, dilation.0 >= 1, dilation.1 >= 1,
           biasLength == nil || biasLength == k,
           let xc = productFits(n, c), let xc2 = productFits(xc, h), productFits(xc2, w) != nil,
           let wc1 = productFits(k, c), let wc2 = productFits(wc1, kh), productFits(wc2, kw) != nil,
           let oh = slidingOutputSizeIfValid(size: h, kernel: kh, stride: stride.0, pad: padding.0, dilation: dilation.0),
           let ow = slidingOutputSizeIfValid(size: w, kernel: kw, stride: stride.1, pad: padding.1, dilation: dilation.1),
           let y1 = productFits(n, k), let y2 = productFits(y1, oh), productFits(y2, ow) != nil,
           let c1 = productFits(c, kh), let c2 = productFits(c1, kw), let c3 = productFits(c2, oh),
           productFits(c3, ow) != nil,  // one image's im2col buffer
           let b1 = productFits(n, c), let b2 = productFits(b1, kh), let b3 = productFits(b2, kw),
           let b4 = productFits(b3, oh), productFits(b4, ow) != nil {  // the whole batch's
            self.batch = n; self.inChannels = c; self.height = h; self.width = w
            self.outChannels = k; self.kernelH = kh; self.kernelW = kw
            self.strideH = stride.0; self.strideW = stride.1
            self.padH = padding.0; self.padW = padding.1
            self.dilationH = dilation.0; self.dilationW = dilation.1
            self.outH = oh; self.outW = ow
            return
        }
        self = try Conv2DGeometry(op: op, xShape: [n, c, h, w], weightShape: [k, wc, kh, kw],
                                  biasShape: biasLength.map { [$0] }, stride: stride, padding: padding,
                                  dilation: dilation)
    }

    /// Throws a value error unless `gradOutShape` is this geometry's output shape.
    public func checkGradOut(op: String, _ gradOutShape: [Int]) throws {
        guard gradOutShape == outputShape else {
            throw SwiftCNNError.value(
                "\(op): grad_out must have shape \(describeShape(outputShape)), got \(describeShape(gradOutShape))")
        }
    }
}

// MARK: - pooling

/// The validated geometry of `max_pool2d` / `avg_pool2d(x, kernel_size, stride, padding)`.
///
///     x (N, C, H, W)  ->  y (N, C, Ho, Wo),  Ho = (H + 2*padH - kH) / strideH + 1  (same for Wo)
///
/// As PyTorch, padding must be at most half the kernel (`padding <= kernel_size // 2`), for both
/// kinds. That guarantees every window overlaps the real input, so a max window is never all -inf.
public struct Pool2DGeometry: Equatable, Sendable {
    public let batch, channels, height, width, kernelH, kernelW, strideH, strideW, padH, padW, outH, outW: Int

    /// (N, C, H, W)
    public var inputShape: [Int] { [batch, channels, height, width] }
    /// (N, C, Ho, Wo)
    public var outputShape: [Int] { [batch, channels, outH, outW] }

    /// Validates everything `swiftcnn.h` lists and computes the output size.
    ///
    /// - Parameters:
    ///   - op: the name prefixed to error messages ("max_pool2d", "avg_pool2d_backward", ...).
    ///   - kernelSize, stride, padding: (h, w) pairs (a `nil` stride is resolved by the caller to
    ///     the kernel size).
    /// - Throws: `.value` naming the argument; `.overflow` for element counts beyond `Int`, and for
    ///   max pooling, for input planes of more than 2^31 - 1 elements (argmax indices are Int32).
    public init(op: String, kind: PoolKind, xShape: [Int], kernelSize: (Int, Int), stride: (Int, Int),
                padding: (Int, Int)) throws {
        try requireRank(op, "x", xShape, 4, layout: "(N, C, H, W)")
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
        let (n, c, h, w) = (xShape[0], xShape[1], xShape[2], xShape[3])
        guard c >= 1 else {
            throw SwiftCNNError.value("\(op): x must have at least 1 channel, got shape \(describeShape(xShape))")
        }
        guard h >= 1, w >= 1 else {
            throw SwiftCNNError.value("\(op): x must have a spatial size of at least 1x1, got shape \(describeShape(xShape))")
        }
        _ = try checkedElementCount(xShape, what: "\(op): x")
        // Padding up to kernel/2 lets a kernel exceed the input; its area is the average's divisor.
        _ = try checkedMultiply(kernelSize.0, kernelSize.1, what: "\(op): kernel_size area")
        let oh = try slidingOutputSize(op, size: h, kernel: kernelSize.0, stride: stride.0, pad: padding.0, dilation: 1, axis: "height")
        let ow = try slidingOutputSize(op, size: w, kernel: kernelSize.1, stride: stride.1, pad: padding.1, dilation: 1, axis: "width")
        _ = try checkedElementCount([n, c, oh, ow], what: "\(op): output")
        if kind == .max {
            let plane = try checkedMultiply(h, w, what: "\(op): x plane")
            guard plane <= Int(Int32.max) else {
                throw SwiftCNNError.overflow("\(op): x planes of \(h)x\(w) elements exceed the 2^31 - 1 argmax indices")
            }
        }
        self.batch = n; self.channels = c; self.height = h; self.width = w
        self.kernelH = kernelSize.0; self.kernelW = kernelSize.1
        self.strideH = stride.0; self.strideW = stride.1
        self.padH = padding.0; self.padW = padding.1
        self.outH = oh; self.outW = ow
    }


    /// The same validation from scalar sizes, without shape arrays (see `Conv2DGeometry`'s scalar
    /// initializer: only the passing case is decided here, a failing one runs the array initializer
    /// for its exact message).
    public init(op: String, kind: PoolKind, x: (Int, Int, Int, Int), kernelSize: (Int, Int), stride: (Int, Int),
                padding: (Int, Int)) throws {
        let (n, c, h, w) = x
        if n >= 0, c >= 1, h >= 1, w >= 1, kernelSize.0 >= 1, kernelSize.1 >= 1, stride.0 >= 1, stride.1 >= 1,
           padding.0 >= 0, padding.1 >= 0, padding.0 <= kernelSize.0 / 2, padding.1 <= kernelSize.1 / 2,
           let x1 = productFits(n, c), let x2 = productFits(x1, h), productFits(x2, w) != nil,
           productFits(kernelSize.0, kernelSize.1) != nil,
           let oh = slidingOutputSizeIfValid(size: h, kernel: kernelSize.0, stride: stride.0, pad: padding.0, dilation: 1),
           let ow = slidingOutputSizeIfValid(size: w, kernel: kernelSize.1, stride: stride.1, pad: padding.1, dilation: 1),
           let y1 = productFits(n, c), let y2 = productFits(y1, oh), productFits(y2, ow) != nil,
           kind != .max || (productFits(h, w).map { $0 <= Int(Int32.max) } ?? false) {
            self.batch = n; self.channels = c; self.height = h; self.width = w
            self.kernelH = kernelSize.0; self.kernelW = kernelSize.1
            self.strideH = stride.0; self.strideW = stride.1
            self.padH = padding.0; self.padW = padding.1
            self.outH = oh; self.outW = ow
            return
        }
        self = try Pool2DGeometry(op: op, kind: kind, xShape: [n, c, h, w], kernelSize: kernelSize, stride: stride,
                                  padding: padding)
    }

    /// Throws a value error unless `gradOutShape` is this geometry's output shape.
    public func checkGradOut(op: String, _ gradOutShape: [Int]) throws {
        guard gradOutShape == outputShape else {
            throw SwiftCNNError.value(
                "\(op): grad_out must have shape \(describeShape(outputShape)), got \(describeShape(gradOutShape))")
        }
    }
}

// Single-channel 2-D cross-correlation and convolution, exactly as scipy.signal.correlate2d and
// convolve2d with zero fill, plus their gradients.
//
//     image (H, W)   kernel (kH, kW)
//     valid: (H - kH + 1, W - kW + 1)    same: (H, W)    full: (H + kH - 1, W + kW - 1)
//
// Every mode is one primitive, a correlation whose output row i starts `shift` rows into the image:
//
//     out[i, j] = sum_{r,c} image[i + shiftH + r, j + shiftW + c] * k[r, c]     (zero outside the image)
//
// with k the kernel (correlate) or the kernel rotated by 180 degrees (convolve), and
//
//     mode    correlate2d            convolve2d
//     valid   0                      0
//     same    kH/2 - (kH - 1)        (kH - 1)/2 - (kH - 1)
//     full    -(kH - 1)              -(kH - 1)
//
// (integer division). `same` is the centre of `full`, but scipy centres the two differently for an
// even kernel: correlate2d's `same` starts kH/2 rows into `full`, convolve2d's (kH - 1)/2. Both were
// checked against scipy 1.x for every image size 1...5 and kernel size 1...6 in each dimension.
//
// The gradients are correlations too (the lecture's "backward pass = convolution with the flipped
// filter"): for out = corr_shift(image, k),
//
//     dL/dimage = corr_{-shift-(kH-1)}(gradOut, rot180(k))      (H, W)
//     dL/dk     = corr_{shift}(image, gradOut)                  (kH, kW)

/// The mode of `correlate2d` / `convolve2d`, named as scipy names it.
public enum CorrelationMode: String, Sendable, CaseIterable {
    /// Only positions where the kernel lies entirely inside the image.
    case valid
    /// The image's size, centred on the full result (scipy's centring, see the file comment).
    case same
    /// Every position where kernel and image overlap.
    case full
}

/// The validated shapes of `correlate2d(image, kernel, mode)` / `convolve2d`, and the primitive's shift.
public struct Correlation2DGeometry: Equatable, Sendable {
    public let height, width, kernelH, kernelW, outH, outW: Int
    public let mode: CorrelationMode
    /// True for convolution: the kernel is rotated by 180 degrees.
    public let flipKernel: Bool
    /// Image row/column read by kernel tap (0, 0) for output (0, 0).
    public let shiftH, shiftW: Int

    /// (outH, outW)
    public var outputShape: [Int] { [outH, outW] }

    /// Validates 2-D image and kernel with sizes >= 1, a kernel no larger than the image in `valid`
    /// mode (where scipy would silently swap the operands) and the output size.
    /// `op` prefixes error messages ("correlate2d", "convolve2d").
    public init(op: String, imageShape: [Int], kernelShape: [Int], mode: CorrelationMode, flipKernel: Bool) throws {
        guard imageShape.count == 2 else {
            throw SwiftCNNError.value("\(op): image must be 2-D (H, W), got shape \(describeShape(imageShape))")
        }
        guard kernelShape.count == 2 else {
            throw SwiftCNNError.value("\(op): kernel must be 2-D (kH, kW), got shape \(describeShape(kernelShape))")
        }
        let (h, w, kh, kw) = (imageShape[0], imageShape[1], kernelShape[0], kernelShape[1])
        guard h >= 1, w >= 1 else {
            throw SwiftCNNError.value("\(op): image must have a size of at least 1x1, got shape \(describeShape(imageShape))")
        }
        guard kh >= 1, kw >= 1 else {
            throw SwiftCNNError.value("\(op): kernel must have a size of at least 1x1, got shape \(describeShape(kernelShape))")
        }
        _ = try checkedElementCount(imageShape, what: "\(op): image")
        _ = try checkedElementCount(kernelShape, what: "\(op): kernel")
        switch mode {
        case .valid:
            guard kh <= h, kw <= w else {
                throw SwiftCNNError.value(
                    "\(op): kernel \(describeShape(kernelShape)) must not be larger than image \(describeShape(imageShape)) in 'valid' mode")
            }
            (outH, outW) = (h - kh + 1, w - kw + 1)
            (shiftH, shiftW) = (0, 0)
        case .same:
            (outH, outW) = (h, w)
            (shiftH, shiftW) = flipKernel ? ((kh - 1) / 2 - (kh - 1), (kw - 1) / 2 - (kw - 1))
                                          : (kh / 2 - (kh - 1), kw / 2 - (kw - 1))
        case .full:
            outH = try checkedAdd(h, kh - 1, what: "\(op): output height")
            outW = try checkedAdd(w, kw - 1, what: "\(op): output width")
            _ = try checkedElementCount([outH, outW], what: "\(op): output")
            (shiftH, shiftW) = (-(kh - 1), -(kw - 1))
        }
        self.height = h; self.width = w; self.kernelH = kh; self.kernelW = kw
        self.mode = mode; self.flipKernel = flipKernel
    }
}

// MARK: - The primitive

/// out[i, j] = sum_{r,c} image[i + shiftH + r, j + shiftW + c] * k[r, c], zero outside the image,
/// where k is `kernel` or, if `flip`, `kernel` rotated by 180 degrees.
///
///     image (height, width)   kernel (kernelH, kernelW)   out (outH, outW), overwritten
///
/// Loop order: each output row accumulates kernel taps (r, c) in row-major order, and for one tap
/// runs along a contiguous stretch of the output row and of an image row (the clipped range where the
/// tap lands inside the image). So the inner loop is an axpy that vectorizes and has no bounds tests,
/// and each output element sums its taps in the same order as the naive oracle. Output rows are split
/// over threads; each row is written by one thread.
@inlinable
func correlate2dShifted<T: CNNScalar>(image: UnsafePointer<T>, height: Int, width: Int,
                                      kernel: UnsafePointer<T>, kernelH: Int, kernelW: Int, flip: Bool,
                                      shiftH: Int, shiftW: Int,
                                      out: UnsafeMutablePointer<T>, outH: Int, outW: Int) {
    // Multiply-adds, saturated: both factors are validated element counts but their product need not fit.
    let (work, overflow) = (outH * outW).multipliedReportingOverflow(by: kernelH * kernelW)
    let chunks = parallelChunks(work: overflow ? Int.max : work)
    parallelFor(chunks) { chunk in
        for i in chunkRange(chunk, of: chunks, total: outH) {
            let o = out + i * outW
            o.update(repeating: 0, count: outW)
            // Taps r whose image row i + shiftH + r lies in [0, height).
            let rLo = max(0, -(i + shiftH)), rHi = min(kernelH, height - (i + shiftH))
            guard rLo < rHi else { continue }
            for r in rLo..<rHi {
                let imageRow = image + (i + shiftH + r) * width
                for c in 0..<kernelW {
                    let kv = flip ? kernel[(kernelH - 1 - r) * kernelW + (kernelW - 1 - c)] : kernel[r * kernelW + c]
                    // Output columns j whose image column j + shiftW + c lies in [0, width).
                    let offset = shiftW + c
                    let jLo = max(0, -offset), jHi = min(outW, width - offset)
                    guard jLo < jHi else { continue }
                    let src = imageRow + offset
                    for j in jLo..<jHi { o[j] = multiplyAdd(kv, src[j], o[j]) }
                }
            }
        }
    }
}

// MARK: - Pointer level

/// `correlate2d` / `convolve2d` (g.flipKernel) into `out` (g.outputShape), overwritten.
@inlinable
func correlate2dForward<T: CNNScalar>(_ g: Correlation2DGeometry, image: UnsafePointer<T>, kernel: UnsafePointer<T>,
                                      out: UnsafeMutablePointer<T>) {
    correlate2dShifted(image: image, height: g.height, width: g.width,
                       kernel: kernel, kernelH: g.kernelH, kernelW: g.kernelW, flip: g.flipKernel,
                       shiftH: g.shiftH, shiftW: g.shiftW, out: out, outH: g.outH, outW: g.outW)
}

/// Gradients of `correlate2dForward`, given gradOut (g.outputShape):
///
///     gradImage  (H, W)   = corr_{-shift-(k-1)}(gradOut, rot180(k))    full correlation with the flipped
///                                                                     kernel, cropped to the image
///     gradKernel (kH, kW) = corr_{shift}(image, gradOut)               for convolution, rotated back by 180
///
/// Either output may be nil; both are overwritten.
@inlinable
func correlate2dBackward<T: CNNScalar>(_ g: Correlation2DGeometry, gradOut: UnsafePointer<T>,
                                       image: UnsafePointer<T>, kernel: UnsafePointer<T>,
                                       gradImage: UnsafeMutablePointer<T>?, gradKernel: UnsafeMutablePointer<T>?) {
    if let gradImage {
        // Each image pixel (y, x) receives gradOut[i, j] * k[r, c] from every (i, j, r, c) with
        // y = i + shiftH + r: reading gradOut backwards from y is a correlation with k flipped.
        correlate2dShifted(image: gradOut, height: g.outH, width: g.outW,
                           kernel: kernel, kernelH: g.kernelH, kernelW: g.kernelW, flip: !g.flipKernel,
                           shiftH: -g.shiftH - (g.kernelH - 1), shiftW: -g.shiftW - (g.kernelW - 1),
                           out: gradImage, outH: g.height, outW: g.width)
    }
    if let gradKernel {
        // Tap (r, c) met image[i + shiftH + r, j + shiftW + c] at every output (i, j): the image
        // correlated with gradOut as the kernel, sampled at the kH x kW tap positions.
        correlate2dShifted(image: image, height: g.height, width: g.width,
                           kernel: gradOut, kernelH: g.outH, kernelW: g.outW, flip: false,
                           shiftH: g.shiftH, shiftW: g.shiftW,
                           out: gradKernel, outH: g.kernelH, outW: g.kernelW)
        if g.flipKernel {
            // That is the gradient of the rotated kernel; rotating a row-major matrix by 180 degrees
            // reverses its flat order.
            let count = g.kernelH * g.kernelW
            for a in 0..<count / 2 { swap(&gradKernel[a], &gradKernel[count - 1 - a]) }
        }
    }
}

/// The definition, one output element at a time with bounds tests (test oracle):
/// out[i, j] = sum_{r,c} image[i + shiftH + r, j + shiftW + c] * k[r, c] over taps inside the image.
@inlinable
func correlate2dForwardNaive<T: CNNScalar>(_ g: Correlation2DGeometry, image: UnsafePointer<T>,
                                           kernel: UnsafePointer<T>, out: UnsafeMutablePointer<T>) {
    for i in 0..<g.outH {
        for j in 0..<g.outW {
            var sum: T = 0
            for r in 0..<g.kernelH {
                for c in 0..<g.kernelW {
                    let y = i + g.shiftH + r, x = j + g.shiftW + c
                    guard y >= 0, y < g.height, x >= 0, x < g.width else { continue }
                    let k = g.flipKernel ? kernel[(g.kernelH - 1 - r) * g.kernelW + (g.kernelW - 1 - c)]
                                         : kernel[r * g.kernelW + c]
                    sum = multiplyAdd(image[y * g.width + x], k, sum)
                }
            }
            out[i * g.outW + j] = sum
        }
    }
}

// MARK: - Tensor level

/// `correlate2d(image, kernel, mode="valid")`: scipy.signal.correlate2d with zero fill;
/// out[i, j] = sum_{r,c} image[i + r - s_H, j + c - s_W] * kernel[r, c] (s = 0 for valid,
/// kH - 1 for full, kH - 1 - kH/2 for same). A kernel larger than the image in `valid` mode is a
/// value error. Returns a new tensor, or `out`, which must not overlap the inputs.
@inlinable
public func correlate2d<T: CNNScalar>(_ image: Tensor<T>, _ kernel: Tensor<T>, mode: CorrelationMode = .valid,
                                      into out: Tensor<T>? = nil) throws -> Tensor<T> {
    try signal2d(op: "correlate2d", image, kernel, mode: mode, flip: false, into: out)
}

/// `convolve2d(image, kernel, mode="valid")`: scipy.signal.convolve2d with zero fill, the true
/// convolution out[i, j] = sum_{r,c} image[i - r + s_H, j - c + s_W] * kernel[r, c] (the kernel
/// rotated by 180 degrees, then correlated), s = kH - 1 for valid, 0 for full, (kH - 1)/2 for same.
/// Same validation as `correlate2d`.
@inlinable
public func convolve2d<T: CNNScalar>(_ image: Tensor<T>, _ kernel: Tensor<T>, mode: CorrelationMode = .valid,
                                     into out: Tensor<T>? = nil) throws -> Tensor<T> {
    try signal2d(op: "convolve2d", image, kernel, mode: mode, flip: true, into: out)
}

/// Gradients of `correlate2d(image, kernel, mode)` for gradOut = dL/dout: (dL/dimage, dL/dkernel).
@inlinable
public func correlate2dBackward<T: CNNScalar>(gradOut: Tensor<T>, image: Tensor<T>, kernel: Tensor<T>,
                                              mode: CorrelationMode = .valid) throws -> (gradImage: Tensor<T>, gradKernel: Tensor<T>) {
    try signal2dBackward(op: "correlate2d_backward", gradOut: gradOut, image: image, kernel: kernel, mode: mode, flip: false)
}

/// Gradients of `convolve2d(image, kernel, mode)` for gradOut = dL/dout: (dL/dimage, dL/dkernel).
@inlinable
public func convolve2dBackward<T: CNNScalar>(gradOut: Tensor<T>, image: Tensor<T>, kernel: Tensor<T>,
                                             mode: CorrelationMode = .valid) throws -> (gradImage: Tensor<T>, gradKernel: Tensor<T>) {
    try signal2dBackward(op: "convolve2d_backward", gradOut: gradOut, image: image, kernel: kernel, mode: mode, flip: true)
}

@inlinable
func signal2d<T: CNNScalar>(op: String, _ image: Tensor<T>, _ kernel: Tensor<T>, mode: CorrelationMode, flip: Bool,
                            into out: Tensor<T>?) throws -> Tensor<T> {
    let g = try Correlation2DGeometry(op: op, imageShape: image.shape, kernelShape: kernel.shape, mode: mode, flipKernel: flip)
    let result = try makeOutput(out, shape: g.outputShape, op: op, inputs: [("image", image), ("kernel", kernel)])
    correlate2dForward(g, image: image.pointer, kernel: kernel.pointer, out: result.pointer)
    return result
}

@usableFromInline @_specialize(where T == Float) @_specialize(where T == Double)
func signal2dBackward<T: CNNScalar>(op: String, gradOut: Tensor<T>, image: Tensor<T>, kernel: Tensor<T>,
                                    mode: CorrelationMode, flip: Bool) throws -> (gradImage: Tensor<T>, gradKernel: Tensor<T>) {
    let g = try Correlation2DGeometry(op: op, imageShape: image.shape, kernelShape: kernel.shape, mode: mode, flipKernel: flip)
    guard gradOut.shape == g.outputShape else {
        throw SwiftCNNError.value("\(op): grad_out must have shape \(describeShape(g.outputShape)), got \(describeShape(gradOut.shape))")
    }
    let gradImage = try Tensor<T>(zeros: image.shape)
    let gradKernel = try Tensor<T>(zeros: kernel.shape)
    correlate2dBackward(g, gradOut: gradOut.pointer, image: image.pointer, kernel: kernel.pointer,
                        gradImage: gradImage.pointer, gradKernel: gradKernel.pointer)
    return (gradImage, gradKernel)
}

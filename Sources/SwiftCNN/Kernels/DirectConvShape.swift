/// Direct convolution kernels for stride 1 and no dilation, Float, SIMD16 (no im2col matrix).
///
/// The input is zero-padded into planes of Hp × Wp (Hp = H + 2ph, Wp = W + 2pw) and every output
/// position (i, j) is named by its flat offset q = i*Wp + j in those planes, so a tap (c, r, s) of
/// the filter reads the input at q + off(c,r,s), off = c*Hp*Wp + r*Wp + s, a constant:
///
///     y[k, q]  = b[k] + sum_t xpad[q + off(t)] * w[k, t]                 (forward)
///     dw[k, t] = sum_q g[k, q] * xpad[q + off(t)]                         (weight gradient)
///     dx       = the same forward over g padded by kH-1-ph / kW-1-pw with the filter rotated by
///                180 degrees (the lecture's "full cross-correlation"), or the forward's positions
///                scattered back: dxpad[c, q + off(r, s)] += sum_k w[k, c, r, s] * g[k, q]
///
/// q runs over 0..<span, span = (Ho-1)*Wp + Wo: the positions with j >= Wo are wasted work (a
/// fraction (Wp-Wo)/Wp), computed but never stored (forward) or given a zero gradient (dw).
///
/// Four families of register blocks, each a few explicit accumulators (so that they stay in
/// registers) and a tap loop:
/// - lanes over output channels (`channelLaneForward*`): 16 channels × 12 positions, one input
///   value broadcast per multiply-add (x86 folds the broadcast into the FMA's memory operand);
/// - lanes over positions (`positionLaneForward*`): 6 or 8 channels × 48-64 positions (or one
///   channel × 128), one weight broadcast per 3-4 multiply-adds, 10-11 loads per 24 of them;
/// - the weight gradient (`weightGrad*`), lanes over positions: 3 × 8 or 4 × 6 (channel, tap)
///   accumulators of 16 partial sums each, added up once per group of images;
/// - the scattered input gradient (`scatter*`): 6 input channels × 48 positions per kernel tap.
/// Ops/DirectConvDispatch.swift chooses among them by how full their blocks are. The families live in
/// DirectConvChannelLanes, DirectConvPositionLanes, DirectConvWeightGradient and
/// DirectConvScatterGradInput (all in Kernels/); this file holds their shared shape and helpers.
///
/// Each output element is summed by one thread in a fixed order (taps in (c, r, s) order for y,
/// (k, r, s) or (r, s) then k for dx; positions in order, images in order within a chunk, chunks in
/// order for dw): results are deterministic for a given thread count.

@usableFromInline typealias Lanes = SIMD16<Float>

/// Readable elements every kernel here needs past an input's last plane: the last block of
/// positions reads up to a block's width (at most 128) beyond the span; those results are dropped
/// (or, for the weight gradient, multiplied by zeros).
@usableFromInline let directConvSlack = 128

/// The shapes of one direct convolution over zero-padded input planes.
@usableFromInline
struct DirectConvShape {
    @usableFromInline let inChannels: Int, paddedH: Int, paddedW: Int
    @usableFromInline let outChannels: Int, kernelH: Int, kernelW: Int
    @usableFromInline let outH: Int, outW: Int

    @usableFromInline
    init(inChannels: Int, paddedH: Int, paddedW: Int, outChannels: Int, kernelH: Int, kernelW: Int) {
        (self.inChannels, self.paddedH, self.paddedW) = (inChannels, paddedH, paddedW)
        (self.outChannels, self.kernelH, self.kernelW) = (outChannels, kernelH, kernelW)
        outH = paddedH - kernelH + 1
        outW = paddedW - kernelW + 1
    }

    @usableFromInline var taps: Int { inChannels * kernelH * kernelW }
    @usableFromInline var paddedPlane: Int { paddedH * paddedW }
    /// Flat output positions computed: q in 0..<span.
    @usableFromInline var span: Int { (outH - 1) * paddedW + outW }
    /// Whether every offset into a padded buffer fits in Int32.
    @usableFromInline var fitsInt32Offsets: Bool {
        Double(inChannels) * Double(paddedH) * Double(paddedW) + Double(directConvSlack) < Double(Int32.max)
    }
    /// Elements of a padded input buffer, for every kernel here: the planes plus `directConvSlack`.
    @usableFromInline var paddedCount: Int { inChannels * paddedPlane + directConvSlack }
}

/// Copies C planes of h × w (at `src`, contiguous) into `dst`'s zero-bordered planes of
/// s.paddedH × s.paddedW at offset (top, left). The borders and slack must already be zero.
@usableFromInline
func directConvCopyPadded(_ s: DirectConvShape, src: UnsafePointer<Float>, height h: Int, width w: Int,
                           top: Int, left: Int, dst: UnsafeMutablePointer<Float>) {
    for c in 0..<s.inChannels {
        let plane = dst + c * s.paddedPlane + top * s.paddedW + left
        let from = src + c * h * w
        for row in 0..<h { copyShortRow(from + row * w, to: plane + row * s.paddedW, count: w) }
    }
}

/// dst[0 ..< count] = src[0 ..< count] for the short rows of small images (14 or 28 floats in
/// LeNet), where a memmove call per row cost more than the copy: 16 floats per step, the last
/// step overlapping the previous one (the ranges must not overlap each other).
@inline(__always) @usableFromInline
func copyShortRow(_ src: UnsafePointer<Float>, to dst: UnsafeMutablePointer<Float>, count: Int) {
    if count < 16 {
        for i in 0..<count { dst[i] = src[i] }
        return
    }
    let from = UnsafeRawPointer(src), to = UnsafeMutableRawPointer(dst)
    var i = 0
    while i + 16 < count {
        to.storeBytes(of: from.loadUnaligned(fromByteOffset: 4 * i, as: Lanes.self), toByteOffset: 4 * i, as: Lanes.self)
        i += 16
    }
    let last = 4 * (count - 16)
    to.storeBytes(of: from.loadUnaligned(fromByteOffset: last, as: Lanes.self), toByteOffset: last, as: Lanes.self)
}

/// Tap offsets off(c, r, s) = c*Hp*Wp + r*Wp + s, in (c, r, s) order (Int32: callers check
/// `fitsInt32Offsets`, which halves the offset table's share of the cache).
@usableFromInline
func directConvOffsets(_ s: DirectConvShape, into offsets: UnsafeMutablePointer<Int32>) {
    var t = 0
    for c in 0..<s.inChannels {
        for r in 0..<s.kernelH {
            for col in 0..<s.kernelW { offsets[t] = Int32(truncatingIfNeeded: c * s.paddedPlane + r * s.paddedW + col); t += 1 }
        }
    }
}

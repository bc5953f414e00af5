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
/// Ops/Conv2DChannelLanes.swift chooses among them by how full their blocks are.
///
/// Each output element is summed by one thread in a fixed order (taps in (c, r, s) order for y,
/// (k, r, s) or (r, s) then k for dx; positions in order, images in order within a chunk, chunks in
/// order for dw): results are deterministic for a given thread count.

@usableFromInline typealias Lanes = SIMD16<Float>

/// Readable elements every kernel here needs past an input's last plane: the last block of
/// positions reads up to a block's width (at most 128) beyond the span; those results are dropped
/// (or, for the weight gradient, multiplied by zeros).
@usableFromInline let directConvSlack = 128

/// Output positions per forward micro-kernel call (12 accumulators of 16 channels each).
@usableFromInline let channelLanePixels = 12
/// The shapes of one channel-lane convolution over zero-padded input planes.
@usableFromInline
struct ChannelLaneShape {
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
    /// Groups of 16 output channels.
    @usableFromInline var groups: Int { (outChannels + 15) / 16 }
    /// Elements of a padded input buffer, for every kernel here: the planes plus `directConvSlack`.
    @usableFromInline var paddedCount: Int { inChannels * paddedPlane + directConvSlack }
    /// Elements of the pixel-major forward scratch (span rounded up to whole calls, × 16 lanes).
    @usableFromInline var scratchCount: Int { (span + channelLanePixels - 1) / channelLanePixels * channelLanePixels * 16 }
    /// Elements of the packed weights: per group, taps × 16 lanes.
    @usableFromInline var packedWeightCount: Int { groups * taps * 16 }
}

/// The fraction of SIMD lanes doing useful work when `channels` are spread over groups of 16.
@inlinable
func channelLaneUse(_ channels: Int) -> Double {
    channels <= 0 ? 0 : Double(channels) / Double((channels + 15) / 16 * 16)
}

// MARK: - packing

/// Packs weights w[k, t] (row k at `w + k * kStride + t * tStride`) into [group][t][16 lanes],
/// lanes past K zero. Forward: kStride = taps, tStride = 1.
@usableFromInline
func channelLanePackWeights(_ s: ChannelLaneShape, w: (Int, Int) -> Float, into packed: UnsafeMutablePointer<Float>) {
    let taps = s.taps
    for group in 0..<s.groups {
        for t in 0..<taps {
            let dst = packed + (group * taps + t) * 16
            for lane in 0..<16 {
                let k = group * 16 + lane
                dst[lane] = k < s.outChannels ? w(k, t) : 0
            }
        }
    }
}

/// Copies C planes of h × w (at `src`, contiguous) into `dst`'s zero-bordered planes of
/// s.paddedH × s.paddedW at offset (top, left). The borders and slack must already be zero.
@usableFromInline
func channelLaneCopyPadded(_ s: ChannelLaneShape, src: UnsafePointer<Float>, height h: Int, width w: Int,
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

// MARK: - forward

/// out[p][lanes] = initial + sum_t xpad[q0 + p + off(t)] * packed[t][lanes] for p in 0..<12.
@inline(__always) @usableFromInline
func channelLaneForwardBlock(taps: Int, offsets: UnsafePointer<Int32>, x: UnsafePointer<Float>,
                             packed: UnsafePointer<Float>, initial: Lanes, out: UnsafeMutablePointer<Float>) {
    var a0 = initial, a1 = initial, a2 = initial, a3 = initial, a4 = initial, a5 = initial
    var a6 = initial, a7 = initial, a8 = initial, a9 = initial, a10 = initial, a11 = initial
    var wp = UnsafeRawPointer(packed)
    for t in 0..<taps {
        let xp = x + Int(offsets[t])
        let w = wp.load(as: Lanes.self)
        a0 = multiplyAdd(Lanes(repeating: xp[0]), w, a0)
        a1 = multiplyAdd(Lanes(repeating: xp[1]), w, a1)
        a2 = multiplyAdd(Lanes(repeating: xp[2]), w, a2)
        a3 = multiplyAdd(Lanes(repeating: xp[3]), w, a3)
        a4 = multiplyAdd(Lanes(repeating: xp[4]), w, a4)
        a5 = multiplyAdd(Lanes(repeating: xp[5]), w, a5)
        a6 = multiplyAdd(Lanes(repeating: xp[6]), w, a6)
        a7 = multiplyAdd(Lanes(repeating: xp[7]), w, a7)
        a8 = multiplyAdd(Lanes(repeating: xp[8]), w, a8)
        a9 = multiplyAdd(Lanes(repeating: xp[9]), w, a9)
        a10 = multiplyAdd(Lanes(repeating: xp[10]), w, a10)
        a11 = multiplyAdd(Lanes(repeating: xp[11]), w, a11)
        wp += 64
    }
    let o = UnsafeMutableRawPointer(out)
    o.storeBytes(of: a0, toByteOffset: 0, as: Lanes.self)
    o.storeBytes(of: a1, toByteOffset: 64, as: Lanes.self)
    o.storeBytes(of: a2, toByteOffset: 128, as: Lanes.self)
    o.storeBytes(of: a3, toByteOffset: 192, as: Lanes.self)
    o.storeBytes(of: a4, toByteOffset: 256, as: Lanes.self)
    o.storeBytes(of: a5, toByteOffset: 320, as: Lanes.self)
    o.storeBytes(of: a6, toByteOffset: 384, as: Lanes.self)
    o.storeBytes(of: a7, toByteOffset: 448, as: Lanes.self)
    o.storeBytes(of: a8, toByteOffset: 512, as: Lanes.self)
    o.storeBytes(of: a9, toByteOffset: 576, as: Lanes.self)
    o.storeBytes(of: a10, toByteOffset: 640, as: Lanes.self)
    o.storeBytes(of: a11, toByteOffset: 704, as: Lanes.self)
}

/// One image: y (outChannels planes of outH × outW, overwritten) from xpad (padded planes, with
/// slack), packed weights and optional bias. `scratch` holds `s.scratchCount` floats, `offsets`
/// the s.taps tap offsets.
@usableFromInline
func channelLaneForwardImage(_ s: ChannelLaneShape, xpad: UnsafePointer<Float>, packed: UnsafePointer<Float>,
                             offsets: UnsafePointer<Int32>, bias: UnsafePointer<Float>?,
                             y: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
    let taps = s.taps, span = s.span, outPlane = s.outH * s.outW
    for group in 0..<s.groups {
        let k0 = group * 16, lanes = min(16, s.outChannels - k0)
        var initial = Lanes(repeating: 0)
        if let bias { for lane in 0..<lanes { initial[lane] = bias[k0 + lane] } }
        let wg = packed + group * taps * 16
        var q0 = 0
        while q0 < span {
            channelLaneForwardBlock(taps: taps, offsets: offsets, x: xpad + q0, packed: wg, initial: initial,
                                    out: scratch + q0 * 16)
            q0 += channelLanePixels
        }
        // Pixel-major scratch -> channel planes, skipping the wasted positions j >= outW: one
        // vector load per position, its lanes stored to the channels' planes.
        let yk = y + k0 * outPlane
        for i in 0..<s.outH {
            for j in 0..<s.outW {
                let v = UnsafeRawPointer(scratch + (i * s.paddedW + j) * 16).load(as: Lanes.self)
                let dst = yk + i * s.outW + j
                for lane in 0..<lanes { dst[lane * outPlane] = v[lane] }
            }
        }
    }
}

/// Tap offsets off(c, r, s) = c*Hp*Wp + r*Wp + s, in (c, r, s) order (Int32: callers check
/// `fitsInt32Offsets`, which halves the offset table's share of the cache).
@usableFromInline
func channelLaneOffsets(_ s: ChannelLaneShape, into offsets: UnsafeMutablePointer<Int32>) {
    var t = 0
    for c in 0..<s.inChannels {
        for r in 0..<s.kernelH {
            for col in 0..<s.kernelW { offsets[t] = Int32(truncatingIfNeeded: c * s.paddedPlane + r * s.paddedW + col); t += 1 }
        }
    }
}

// MARK: - weight gradient (lanes over positions)

/// Vectors of 16 positions covering the span (the weight gradient's q loop).
extension ChannelLaneShape {
    @usableFromInline var spanVectors: Int { (span + 15) / 16 }
    /// Elements per channel of the spread output gradient gq: enough for the weight gradient's
    /// vectors and the scatter's blocks (both read zeros past the span).
    @usableFromInline var gradRow: Int { max(spanVectors * 16, (span + 47) / 48 * 48) }
    /// Elements of the spread output gradient gq.
    @usableFromInline var gradRowsCount: Int { outChannels * gradRow }
}

/// acc_i[t] += (16 lanes of) sum over vectors v of g_i[16v ..< 16v+16] * p_t[16v ..< 16v+16], for
/// three output channels i (rows `g0`, `g1`, `g2`, accumulators `acc0`, `acc1`, `acc2` of
/// [taps][16]) and the 8 taps at `p` (slots past `count` repeat a tap and are dropped), over
/// `images` images whose buffers follow each other at the given byte strides.
///
/// 24 independent accumulators and 11 loads per 24 multiply-adds: the machine issues two 64-byte
/// loads and two FMAs per cycle, so a block of 2 channels x 8 taps (10 loads per 16) was bound by
/// its loads at about 60% of the FMA rate. The accumulators stay in registers across the images.
@inline(__always) @usableFromInline
func weightGradBlock(images: Int, vectors: Int, xImageBytes: Int, gImageBytes: Int,
                     g0: UnsafePointer<Float>, g1: UnsafePointer<Float>, g2: UnsafePointer<Float>,
                     p: UnsafePointer<UnsafePointer<Float>>, acc0: UnsafeMutablePointer<Float>,
                     acc1: UnsafeMutablePointer<Float>, acc2: UnsafeMutablePointer<Float>, count: Int) {
    let zero = Lanes(repeating: 0)
    var a0 = zero, a1 = zero, a2 = zero, a3 = zero, a4 = zero, a5 = zero, a6 = zero, a7 = zero
    var b0 = zero, b1 = zero, b2 = zero, b3 = zero, b4 = zero, b5 = zero, b6 = zero, b7 = zero
    var c0 = zero, c1 = zero, c2 = zero, c3 = zero, c4 = zero, c5 = zero, c6 = zero, c7 = zero
    // Byte offsets only (wrapping adds, no overflow checks: every address is inside the caller's
    // buffers), so that the base pointers stay in registers.
    let x0 = UnsafeRawPointer(p[0]), d1 = UnsafeRawPointer(p[1]) - x0, d2 = UnsafeRawPointer(p[2]) - x0
    let d3 = UnsafeRawPointer(p[3]) - x0, d4 = UnsafeRawPointer(p[4]) - x0, d5 = UnsafeRawPointer(p[5]) - x0
    let d6 = UnsafeRawPointer(p[6]) - x0, d7 = UnsafeRawPointer(p[7]) - x0
    let e1 = UnsafeRawPointer(g1) - UnsafeRawPointer(g0), e2 = UnsafeRawPointer(g2) - UnsafeRawPointer(g0)
    // One flat loop over images × vectors (nested loops made LLVM spill accumulators every step).
    let xSkip = xImageBytes &- vectors &* 64, gSkip = gImageBytes &- vectors &* 64
    var x = x0, g = UnsafeRawPointer(g0)
    var left = vectors, imagesLeft = images
    while imagesLeft > 0 && left > 0 {
        let u = g.load(as: Lanes.self)
        let v = g.load(fromByteOffset: e1, as: Lanes.self)
        let w = g.load(fromByteOffset: e2, as: Lanes.self)
        var t = x.loadUnaligned(as: Lanes.self)
        a0 = multiplyAdd(t, u, a0); b0 = multiplyAdd(t, v, b0); c0 = multiplyAdd(t, w, c0)
        t = x.loadUnaligned(fromByteOffset: d1, as: Lanes.self)
        a1 = multiplyAdd(t, u, a1); b1 = multiplyAdd(t, v, b1); c1 = multiplyAdd(t, w, c1)
        t = x.loadUnaligned(fromByteOffset: d2, as: Lanes.self)
        a2 = multiplyAdd(t, u, a2); b2 = multiplyAdd(t, v, b2); c2 = multiplyAdd(t, w, c2)
        t = x.loadUnaligned(fromByteOffset: d3, as: Lanes.self)
        a3 = multiplyAdd(t, u, a3); b3 = multiplyAdd(t, v, b3); c3 = multiplyAdd(t, w, c3)
        t = x.loadUnaligned(fromByteOffset: d4, as: Lanes.self)
        a4 = multiplyAdd(t, u, a4); b4 = multiplyAdd(t, v, b4); c4 = multiplyAdd(t, w, c4)
        t = x.loadUnaligned(fromByteOffset: d5, as: Lanes.self)
        a5 = multiplyAdd(t, u, a5); b5 = multiplyAdd(t, v, b5); c5 = multiplyAdd(t, w, c5)
        t = x.loadUnaligned(fromByteOffset: d6, as: Lanes.self)
        a6 = multiplyAdd(t, u, a6); b6 = multiplyAdd(t, v, b6); c6 = multiplyAdd(t, w, c6)
        t = x.loadUnaligned(fromByteOffset: d7, as: Lanes.self)
        a7 = multiplyAdd(t, u, a7); b7 = multiplyAdd(t, v, b7); c7 = multiplyAdd(t, w, c7)
        x += 64
        g += 64
        left &-= 1
        if left == 0 {
            imagesLeft &-= 1
            left = vectors
            x += xSkip
            g += gSkip
        }
    }
    @inline(__always) func add(_ t: Int, _ a: Lanes, _ b: Lanes, _ c: Lanes) {
        let q0 = UnsafeMutableRawPointer(acc0 + t * 16), q1 = UnsafeMutableRawPointer(acc1 + t * 16)
        let q2 = UnsafeMutableRawPointer(acc2 + t * 16)
        q0.storeBytes(of: q0.load(as: Lanes.self) + a, as: Lanes.self)
        q1.storeBytes(of: q1.load(as: Lanes.self) + b, as: Lanes.self)
        q2.storeBytes(of: q2.load(as: Lanes.self) + c, as: Lanes.self)
    }
    add(0, a0, b0, c0)
    if count > 1 { add(1, a1, b1, c1) }
    if count > 2 { add(2, a2, b2, c2) }
    if count > 3 { add(3, a3, b3, c3) }
    if count > 4 { add(4, a4, b4, c4) }
    if count > 5 { add(5, a5, b5, c5) }
    if count > 6 { add(6, a6, b6, c6) }
    if count > 7 { add(7, a7, b7, c7) }
}

/// `weightGradBlock` for four output channels × 6 taps: 24 accumulators and 10 loads per 24
/// multiply-adds. Used when K is a multiple of 4 and the taps of 6 (LeNet's second layer: 16
/// channels, 150 taps; 3 x 3 layers: 9 taps per input channel), where 3 x 8 blocks would leave
/// rows or taps empty.
@inline(__always) @usableFromInline
func weightGradBlock4x6(images: Int, vectors: Int, xImageBytes: Int, gImageBytes: Int, g: UnsafePointer<Float>,
                        gRowBytes: Int, p: UnsafePointer<UnsafePointer<Float>>, acc: UnsafeMutablePointer<Float>,
                        accRow: Int, count: Int) {
    let zero = Lanes(repeating: 0)
    var a0 = zero, a1 = zero, a2 = zero, a3 = zero, a4 = zero, a5 = zero
    var b0 = zero, b1 = zero, b2 = zero, b3 = zero, b4 = zero, b5 = zero
    var c0 = zero, c1 = zero, c2 = zero, c3 = zero, c4 = zero, c5 = zero
    var e0 = zero, e1 = zero, e2 = zero, e3 = zero, e4 = zero, e5 = zero
    let x0 = UnsafeRawPointer(p[0]), d1 = UnsafeRawPointer(p[1]) - x0, d2 = UnsafeRawPointer(p[2]) - x0
    let d3 = UnsafeRawPointer(p[3]) - x0, d4 = UnsafeRawPointer(p[4]) - x0, d5 = UnsafeRawPointer(p[5]) - x0
    let r1 = gRowBytes, r2 = 2 &* gRowBytes, r3 = 3 &* gRowBytes
    let xSkip = xImageBytes &- vectors &* 64, gSkip = gImageBytes &- vectors &* 64
    var x = x0, gp = UnsafeRawPointer(g)
    var left = vectors, imagesLeft = images
    while imagesLeft > 0 && left > 0 {
        let u = gp.load(as: Lanes.self), v = gp.load(fromByteOffset: r1, as: Lanes.self)
        let w = gp.load(fromByteOffset: r2, as: Lanes.self), z = gp.load(fromByteOffset: r3, as: Lanes.self)
        var t = x.loadUnaligned(as: Lanes.self)
        a0 = multiplyAdd(t, u, a0); b0 = multiplyAdd(t, v, b0); c0 = multiplyAdd(t, w, c0); e0 = multiplyAdd(t, z, e0)
        t = x.loadUnaligned(fromByteOffset: d1, as: Lanes.self)
        a1 = multiplyAdd(t, u, a1); b1 = multiplyAdd(t, v, b1); c1 = multiplyAdd(t, w, c1); e1 = multiplyAdd(t, z, e1)
        t = x.loadUnaligned(fromByteOffset: d2, as: Lanes.self)
        a2 = multiplyAdd(t, u, a2); b2 = multiplyAdd(t, v, b2); c2 = multiplyAdd(t, w, c2); e2 = multiplyAdd(t, z, e2)
        t = x.loadUnaligned(fromByteOffset: d3, as: Lanes.self)
        a3 = multiplyAdd(t, u, a3); b3 = multiplyAdd(t, v, b3); c3 = multiplyAdd(t, w, c3); e3 = multiplyAdd(t, z, e3)
        t = x.loadUnaligned(fromByteOffset: d4, as: Lanes.self)
        a4 = multiplyAdd(t, u, a4); b4 = multiplyAdd(t, v, b4); c4 = multiplyAdd(t, w, c4); e4 = multiplyAdd(t, z, e4)
        t = x.loadUnaligned(fromByteOffset: d5, as: Lanes.self)
        a5 = multiplyAdd(t, u, a5); b5 = multiplyAdd(t, v, b5); c5 = multiplyAdd(t, w, c5); e5 = multiplyAdd(t, z, e5)
        x += 64
        gp += 64
        left &-= 1
        if left == 0 {
            imagesLeft &-= 1
            left = vectors
            x += xSkip
            gp += gSkip
        }
    }
    @inline(__always) func add(_ t: Int, _ a: Lanes, _ b: Lanes, _ c: Lanes, _ e: Lanes) {
        let q0 = UnsafeMutableRawPointer(acc + t * 16), q1 = q0 + 4 * accRow
        let q2 = q0 + 8 * accRow, q3 = q0 + 12 * accRow
        q0.storeBytes(of: q0.load(as: Lanes.self) + a, as: Lanes.self)
        q1.storeBytes(of: q1.load(as: Lanes.self) + b, as: Lanes.self)
        q2.storeBytes(of: q2.load(as: Lanes.self) + c, as: Lanes.self)
        q3.storeBytes(of: q3.load(as: Lanes.self) + e, as: Lanes.self)
    }
    add(0, a0, b0, c0, e0)
    if count > 1 { add(1, a1, b1, c1, e1) }
    if count > 2 { add(2, a2, b2, c2, e2) }
    if count > 3 { add(3, a3, b3, c3, e3) }
    if count > 4 { add(4, a4, b4, c4, e4) }
    if count > 5 { add(5, a5, b5, c5, e5) }
}

/// Whether `weightGradImages` uses 4 × 6 blocks (else 3 × 8): the shape whose blocks are fuller.
extension ChannelLaneShape {
    @usableFromInline var weightGradUses4x6: Bool {
        func fill(_ kb: Int, _ tb: Int) -> Double {
            Double(outChannels) / Double((outChannels + kb - 1) / kb * kb) * Double(taps) / Double((taps + tb - 1) / tb * tb)
        }
        return outChannels % 4 == 0 && fill(4, 6) > fill(3, 8)
    }
}

/// The contribution of `images` consecutive images to dw, kept as 16 partial sums per weight:
/// acc[k][t][16] += gq[k][q] * xpad[q + off(t)] summed over q ≡ lane (mod 16). Image m's padded
/// input is at xpad + m * xImageStride (followed by `directConvSlack` readable floats), its gq
/// (`weightGradSpreadRows`) at gq + m * s.gradRowsCount. Channels go in threes; a last group of
/// one or two repeats its first channel, into `dropped` (2 * taps * 16 elements, results unused).
@usableFromInline
func weightGradImages(_ s: ChannelLaneShape, images: Int, xpad: UnsafePointer<Float>, xImageStride: Int,
                      gq: UnsafePointer<Float>, offsets: UnsafePointer<Int32>, acc: UnsafeMutablePointer<Float>,
                      dropped: UnsafeMutablePointer<Float>) {
    let taps = s.taps, vectors = s.spanVectors, row = s.gradRow, K = s.outChannels
    let xImageBytes = xImageStride * 4, gImageBytes = s.gradRowsCount * 4
    withUnsafeTemporaryAllocation(of: UnsafePointer<Float>.self, capacity: 8) { pointers in
        let p = pointers.baseAddress!
        var t0 = 0
        if s.weightGradUses4x6 {   // K a multiple of 4: no dropped rows
            while t0 < taps {
                let count = min(6, taps - t0)
                for i in 0..<6 { p[i] = xpad + Int(offsets[t0 + (i < count ? i : 0)]) }
                for k in stride(from: 0, to: K, by: 4) {
                    weightGradBlock4x6(images: images, vectors: vectors, xImageBytes: xImageBytes,
                                       gImageBytes: gImageBytes, g: gq + k * row, gRowBytes: row * 4,
                                       p: UnsafePointer(p), acc: acc + (k * taps + t0) * 16, accRow: taps * 16,
                                       count: count)
                }
                t0 += 6
            }
            return
        }
        while t0 < taps {
            let count = min(8, taps - t0)
            for i in 0..<8 { p[i] = xpad + Int(offsets[t0 + (i < count ? i : 0)]) }
            var k = 0
            while k < K {
                let k1 = k + 1 < K ? k + 1 : k, k2 = k + 2 < K ? k + 2 : k
                weightGradBlock(images: images, vectors: vectors, xImageBytes: xImageBytes, gImageBytes: gImageBytes,
                                g0: gq + k * row, g1: gq + k1 * row, g2: gq + k2 * row, p: UnsafePointer(p),
                                acc0: acc + (k * taps + t0) * 16,
                                acc1: k + 1 < K ? acc + ((k + 1) * taps + t0) * 16 : dropped + t0 * 16,
                                acc2: k + 2 < K ? acc + ((k + 2) * taps + t0) * 16 : dropped + (taps + t0) * 16,
                                count: count)
                k += 3
            }
            t0 += 8
        }
    }
}

/// Images per `weightGradImages` call: enough that the accumulators' trips to memory are rare,
/// few enough that the group's padded inputs and gradients stay in a core's L1 data cache (48 KiB
/// here; 40 KiB targeted), since every tap block and channel group re-reads them.
@usableFromInline
func weightGradImagesPerGroup(_ s: ChannelLaneShape) -> Int {
    let bytes = (s.paddedCount + s.gradRowsCount) * 4
    return max(1, min(32, 40 * 1024 / max(bytes, 1)))
}

/// g (outChannels planes of outH × outW) -> gq (outChannels rows of `gradRow`): row i of a
/// plane goes to positions i*Wp ..< i*Wp + Wo. The positions in between and past the span must be
/// zero already (they are never written).
@usableFromInline
func weightGradSpreadRows(_ s: ChannelLaneShape, g: UnsafePointer<Float>, gq: UnsafeMutablePointer<Float>) {
    let row = s.gradRow, outPlane = s.outH * s.outW
    for k in 0..<s.outChannels {
        for i in 0..<s.outH {
            copyShortRow(g + k * outPlane + i * s.outW, to: gq + k * row + i * s.paddedW, count: s.outW)
        }
    }
}

// MARK: - forward with lanes over positions

/// The block shape of the position-lane forward: `rows` output channels (weights broadcast) ×
/// `width` positions. 6 × 64 (`positionLaneForwardBlock`, 10 loads per 24 multiply-adds) unless
/// another shape covers the channels and the span with clearly less waste: 6 × 48 or 8 × 48
/// (`positionLaneForwardBlock3`, `...8x3`; LeNet's second layer, 16 channels over 136 positions,
/// is 100% of two 8-blocks and 94% of three 48-blocks, but 89% of three 6-blocks and 71% of three
/// 64-blocks); 1 × 128 (`positionLaneForwardBlock1`) below 3 channels.
extension ChannelLaneShape {
    /// Whether the blocks hold one channel (outChannels < 3).
    @usableFromInline var positionSingle: Bool { outChannels < 3 }
    @usableFromInline var positionBlockShape: (rows: Int, width: Int) {
        if positionSingle { return (1, 128) }
        func fill(_ rows: Int, _ width: Int) -> Double {
            Double(outChannels) / Double((outChannels + rows - 1) / rows * rows)
                * Double(span) / Double((span + width - 1) / width * width)
        }
        var best = (rows: 6, width: 64), bestFill = fill(6, 64)
        if fill(6, 48) > 1.1 * bestFill { (best, bestFill) = ((6, 48), fill(6, 48)) }
        if fill(8, 48) > 1.1 * bestFill { best = (8, 48) }
        return best
    }
    @usableFromInline var positionRows: Int { positionBlockShape.rows }
    @usableFromInline var positionWidth: Int { positionBlockShape.width }
    /// The fraction of the blocks' multiply-adds doing useful work.
    @usableFromInline var positionFill: Double {
        Double(outChannels) / Double(positionChannelBlocks * positionRows) * Double(span) / Double(positionBlocks * positionWidth)
    }
    /// Blocks of positions covering the span.
    @usableFromInline var positionBlocks: Int { (span + positionWidth - 1) / positionWidth }
    /// Channel blocks.
    @usableFromInline var positionChannelBlocks: Int { (outChannels + positionRows - 1) / positionRows }
    /// Elements of the packed weights: per channel block, taps × rows.
    @usableFromInline var positionPackedCount: Int { positionChannelBlocks * taps * positionRows }
    /// Elements of the position-major output scratch: every channel block's rows of
    /// positionBlocks * positionWidth.
    @usableFromInline var positionScratchCount: Int { positionChannelBlocks * positionRows * positionBlocks * positionWidth }
}

/// The fraction of the channel blocks' rows doing useful work for `channels` output channels
/// (blocks of 6, or of 1 below 3 channels).
@inlinable
func positionLaneUse(_ channels: Int) -> Double {
    if channels <= 0 { return 0 }
    return channels < 3 ? 1 : Double(channels) / Double((channels + 5) / 6 * 6)
}

/// Packs w[m, t] into [block][t][rows], rows past M zero.
@usableFromInline
func positionLanePackWeights(_ s: ChannelLaneShape, w: (Int, Int) -> Float, into packed: UnsafeMutablePointer<Float>) {
    let taps = s.taps, rows = s.positionRows
    for block in 0..<s.positionChannelBlocks {
        for t in 0..<taps {
            for i in 0..<rows {
                let m = block * rows + i
                packed[(block * taps + t) * rows + i] = m < s.outChannels ? w(m, t) : 0
            }
        }
    }
}

/// out[q0 ..< q0+128] = sum_t packed[t] * xpad[q0 + off(t) ..< +128] for one channel: 8
/// accumulators, 8 vector loads and one broadcast per 8 multiply-adds.
@inline(__always) @usableFromInline
func positionLaneForwardBlock1(taps: Int, offsets: UnsafePointer<Int32>, x: UnsafePointer<Float>,
                               packed: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>) {
    let z = Lanes(repeating: 0)
    var a0 = z, a1 = z, a2 = z, a3 = z, a4 = z, a5 = z, a6 = z, a7 = z
    for t in 0..<taps {
        let xp = UnsafeRawPointer(x + Int(offsets[t]))
        let b = Lanes(repeating: packed[t])
        a0 = multiplyAdd(xp.loadUnaligned(as: Lanes.self), b, a0)
        a1 = multiplyAdd(xp.loadUnaligned(fromByteOffset: 64, as: Lanes.self), b, a1)
        a2 = multiplyAdd(xp.loadUnaligned(fromByteOffset: 128, as: Lanes.self), b, a2)
        a3 = multiplyAdd(xp.loadUnaligned(fromByteOffset: 192, as: Lanes.self), b, a3)
        a4 = multiplyAdd(xp.loadUnaligned(fromByteOffset: 256, as: Lanes.self), b, a4)
        a5 = multiplyAdd(xp.loadUnaligned(fromByteOffset: 320, as: Lanes.self), b, a5)
        a6 = multiplyAdd(xp.loadUnaligned(fromByteOffset: 384, as: Lanes.self), b, a6)
        a7 = multiplyAdd(xp.loadUnaligned(fromByteOffset: 448, as: Lanes.self), b, a7)
    }
    let o = UnsafeMutableRawPointer(out)
    o.storeBytes(of: a0, as: Lanes.self); o.storeBytes(of: a1, toByteOffset: 64, as: Lanes.self)
    o.storeBytes(of: a2, toByteOffset: 128, as: Lanes.self); o.storeBytes(of: a3, toByteOffset: 192, as: Lanes.self)
    o.storeBytes(of: a4, toByteOffset: 256, as: Lanes.self); o.storeBytes(of: a5, toByteOffset: 320, as: Lanes.self)
    o.storeBytes(of: a6, toByteOffset: 384, as: Lanes.self); o.storeBytes(of: a7, toByteOffset: 448, as: Lanes.self)
}

/// out[i][q0 ..< q0+64] = sum_t packed[t][i] * xpad[q0 + off(t) ..< +64] for the 6 channels i of a
/// block: 24 accumulators, and per tap 4 vector loads and 6 broadcasts for 24 multiply-adds.
@inline(__always) @usableFromInline
func positionLaneForwardBlock(taps: Int, offsets: UnsafePointer<Int32>, x: UnsafePointer<Float>,
                              packed: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, rowStride: Int) {
    let z = Lanes(repeating: 0)
    var a00 = z, a01 = z, a02 = z, a03 = z, a10 = z, a11 = z, a12 = z, a13 = z
    var a20 = z, a21 = z, a22 = z, a23 = z, a30 = z, a31 = z, a32 = z, a33 = z
    var a40 = z, a41 = z, a42 = z, a43 = z, a50 = z, a51 = z, a52 = z, a53 = z
    var w = packed
    for t in 0..<taps {
        let xp = UnsafeRawPointer(x + Int(offsets[t]))
        let x0 = xp.loadUnaligned(as: Lanes.self), x1 = xp.loadUnaligned(fromByteOffset: 64, as: Lanes.self)
        let x2 = xp.loadUnaligned(fromByteOffset: 128, as: Lanes.self), x3 = xp.loadUnaligned(fromByteOffset: 192, as: Lanes.self)
        var b = Lanes(repeating: w[0])
        a00 = multiplyAdd(x0, b, a00); a01 = multiplyAdd(x1, b, a01); a02 = multiplyAdd(x2, b, a02); a03 = multiplyAdd(x3, b, a03)
        b = Lanes(repeating: w[1])
        a10 = multiplyAdd(x0, b, a10); a11 = multiplyAdd(x1, b, a11); a12 = multiplyAdd(x2, b, a12); a13 = multiplyAdd(x3, b, a13)
        b = Lanes(repeating: w[2])
        a20 = multiplyAdd(x0, b, a20); a21 = multiplyAdd(x1, b, a21); a22 = multiplyAdd(x2, b, a22); a23 = multiplyAdd(x3, b, a23)
        b = Lanes(repeating: w[3])
        a30 = multiplyAdd(x0, b, a30); a31 = multiplyAdd(x1, b, a31); a32 = multiplyAdd(x2, b, a32); a33 = multiplyAdd(x3, b, a33)
        b = Lanes(repeating: w[4])
        a40 = multiplyAdd(x0, b, a40); a41 = multiplyAdd(x1, b, a41); a42 = multiplyAdd(x2, b, a42); a43 = multiplyAdd(x3, b, a43)
        b = Lanes(repeating: w[5])
        a50 = multiplyAdd(x0, b, a50); a51 = multiplyAdd(x1, b, a51); a52 = multiplyAdd(x2, b, a52); a53 = multiplyAdd(x3, b, a53)
        w += 6
    }
    @inline(__always) func store(_ i: Int, _ v0: Lanes, _ v1: Lanes, _ v2: Lanes, _ v3: Lanes) {
        let o = UnsafeMutableRawPointer(out + i * rowStride)
        o.storeBytes(of: v0, as: Lanes.self); o.storeBytes(of: v1, toByteOffset: 64, as: Lanes.self)
        o.storeBytes(of: v2, toByteOffset: 128, as: Lanes.self); o.storeBytes(of: v3, toByteOffset: 192, as: Lanes.self)
    }
    store(0, a00, a01, a02, a03); store(1, a10, a11, a12, a13); store(2, a20, a21, a22, a23)
    store(3, a30, a31, a32, a33); store(4, a40, a41, a42, a43); store(5, a50, a51, a52, a53)
}

/// `positionLaneForwardBlock` for 8 channels × 3 vectors (48 positions): 24 accumulators, per tap
/// 3 loads and 8 broadcasts for 24 multiply-adds.
@inline(__always) @usableFromInline
func positionLaneForwardBlock8x3(taps: Int, offsets: UnsafePointer<Int32>, x: UnsafePointer<Float>,
                                 packed: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, rowStride: Int) {
    let z = Lanes(repeating: 0)
    var a00 = z, a01 = z, a02 = z, a10 = z, a11 = z, a12 = z, a20 = z, a21 = z, a22 = z
    var a30 = z, a31 = z, a32 = z, a40 = z, a41 = z, a42 = z, a50 = z, a51 = z, a52 = z
    var a60 = z, a61 = z, a62 = z, a70 = z, a71 = z, a72 = z
    var w = packed
    for t in 0..<taps {
        let xp = UnsafeRawPointer(x + Int(offsets[t]))
        let x0 = xp.loadUnaligned(as: Lanes.self), x1 = xp.loadUnaligned(fromByteOffset: 64, as: Lanes.self)
        let x2 = xp.loadUnaligned(fromByteOffset: 128, as: Lanes.self)
        var b = Lanes(repeating: w[0])
        a00 = multiplyAdd(x0, b, a00); a01 = multiplyAdd(x1, b, a01); a02 = multiplyAdd(x2, b, a02)
        b = Lanes(repeating: w[1])
        a10 = multiplyAdd(x0, b, a10); a11 = multiplyAdd(x1, b, a11); a12 = multiplyAdd(x2, b, a12)
        b = Lanes(repeating: w[2])
        a20 = multiplyAdd(x0, b, a20); a21 = multiplyAdd(x1, b, a21); a22 = multiplyAdd(x2, b, a22)
        b = Lanes(repeating: w[3])
        a30 = multiplyAdd(x0, b, a30); a31 = multiplyAdd(x1, b, a31); a32 = multiplyAdd(x2, b, a32)
        b = Lanes(repeating: w[4])
        a40 = multiplyAdd(x0, b, a40); a41 = multiplyAdd(x1, b, a41); a42 = multiplyAdd(x2, b, a42)
        b = Lanes(repeating: w[5])
        a50 = multiplyAdd(x0, b, a50); a51 = multiplyAdd(x1, b, a51); a52 = multiplyAdd(x2, b, a52)
        b = Lanes(repeating: w[6])
        a60 = multiplyAdd(x0, b, a60); a61 = multiplyAdd(x1, b, a61); a62 = multiplyAdd(x2, b, a62)
        b = Lanes(repeating: w[7])
        a70 = multiplyAdd(x0, b, a70); a71 = multiplyAdd(x1, b, a71); a72 = multiplyAdd(x2, b, a72)
        w += 8
    }
    @inline(__always) func store(_ i: Int, _ v0: Lanes, _ v1: Lanes, _ v2: Lanes) {
        let o = UnsafeMutableRawPointer(out + i * rowStride)
        o.storeBytes(of: v0, as: Lanes.self); o.storeBytes(of: v1, toByteOffset: 64, as: Lanes.self)
        o.storeBytes(of: v2, toByteOffset: 128, as: Lanes.self)
    }
    store(0, a00, a01, a02); store(1, a10, a11, a12); store(2, a20, a21, a22); store(3, a30, a31, a32)
    store(4, a40, a41, a42); store(5, a50, a51, a52); store(6, a60, a61, a62); store(7, a70, a71, a72)
}

/// `positionLaneForwardBlock` with 3 vectors (48 positions): 18 accumulators, per tap 3 loads and
/// 6 broadcasts for 18 multiply-adds.
@inline(__always) @usableFromInline
func positionLaneForwardBlock3(taps: Int, offsets: UnsafePointer<Int32>, x: UnsafePointer<Float>,
                               packed: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, rowStride: Int) {
    let z = Lanes(repeating: 0)
    var a00 = z, a01 = z, a02 = z, a10 = z, a11 = z, a12 = z, a20 = z, a21 = z, a22 = z
    var a30 = z, a31 = z, a32 = z, a40 = z, a41 = z, a42 = z, a50 = z, a51 = z, a52 = z
    var w = packed
    for t in 0..<taps {
        let xp = UnsafeRawPointer(x + Int(offsets[t]))
        let x0 = xp.loadUnaligned(as: Lanes.self), x1 = xp.loadUnaligned(fromByteOffset: 64, as: Lanes.self)
        let x2 = xp.loadUnaligned(fromByteOffset: 128, as: Lanes.self)
        var b = Lanes(repeating: w[0])
        a00 = multiplyAdd(x0, b, a00); a01 = multiplyAdd(x1, b, a01); a02 = multiplyAdd(x2, b, a02)
        b = Lanes(repeating: w[1])
        a10 = multiplyAdd(x0, b, a10); a11 = multiplyAdd(x1, b, a11); a12 = multiplyAdd(x2, b, a12)
        b = Lanes(repeating: w[2])
        a20 = multiplyAdd(x0, b, a20); a21 = multiplyAdd(x1, b, a21); a22 = multiplyAdd(x2, b, a22)
        b = Lanes(repeating: w[3])
        a30 = multiplyAdd(x0, b, a30); a31 = multiplyAdd(x1, b, a31); a32 = multiplyAdd(x2, b, a32)
        b = Lanes(repeating: w[4])
        a40 = multiplyAdd(x0, b, a40); a41 = multiplyAdd(x1, b, a41); a42 = multiplyAdd(x2, b, a42)
        b = Lanes(repeating: w[5])
        a50 = multiplyAdd(x0, b, a50); a51 = multiplyAdd(x1, b, a51); a52 = multiplyAdd(x2, b, a52)
        w += 6
    }
    @inline(__always) func store(_ i: Int, _ v0: Lanes, _ v1: Lanes, _ v2: Lanes) {
        let o = UnsafeMutableRawPointer(out + i * rowStride)
        o.storeBytes(of: v0, as: Lanes.self); o.storeBytes(of: v1, toByteOffset: 64, as: Lanes.self)
        o.storeBytes(of: v2, toByteOffset: 128, as: Lanes.self)
    }
    store(0, a00, a01, a02); store(1, a10, a11, a12); store(2, a20, a21, a22)
    store(3, a30, a31, a32); store(4, a40, a41, a42); store(5, a50, a51, a52)
}

/// One image: y (outChannels planes of outH × outW, overwritten) = bias + the convolution of xpad
/// (padded planes with `paddedCount` elements) with the `positionLanePackWeights`
/// weights, through a scratch of `positionScratchCount` elements.
@usableFromInline
func positionLaneForwardImage(_ s: ChannelLaneShape, xpad: UnsafePointer<Float>, packed: UnsafePointer<Float>,
                              offsets: UnsafePointer<Int32>, bias: UnsafePointer<Float>?,
                              y: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
    let taps = s.taps, blocks = s.positionBlocks, width = s.positionWidth, rows = s.positionRows
    let rowStride = blocks * width, outPlane = s.outH * s.outW
    // Position blocks outside, channel blocks inside: the input rows a position block reads (all
    // input channels) stay in L1 while every channel block uses them; the packed weights, a few
    // bytes per multiply-add, stream from L2 instead (for 64 -> 64 channels, 3 x 3, the other order
    // re-read ~300 KiB of input per channel block).
    for qb in 0..<blocks {
        for block in 0..<s.positionChannelBlocks {
            let wb = packed + block * taps * rows
            let out = scratch + block * rows * rowStride + qb * width
            if s.positionSingle {
                positionLaneForwardBlock1(taps: taps, offsets: offsets, x: xpad + qb * width, packed: wb, out: out)
            } else if rows == 8 {
                positionLaneForwardBlock8x3(taps: taps, offsets: offsets, x: xpad + qb * width, packed: wb,
                                            out: out, rowStride: rowStride)
            } else if width == 48 {
                positionLaneForwardBlock3(taps: taps, offsets: offsets, x: xpad + qb * width, packed: wb,
                                          out: out, rowStride: rowStride)
            } else {
                positionLaneForwardBlock(taps: taps, offsets: offsets, x: xpad + qb * width, packed: wb,
                                         out: out, rowStride: rowStride)
            }
        }
    }
    // Rows of the padded width -> dense output rows, plus the bias.
    for m in 0..<s.outChannels {
        let b = bias?[m] ?? 0
        let src = scratch + m * rowStride, dst = y + m * outPlane
        for row in 0..<s.outH {
            let from = src + row * s.paddedW, to = dst + row * s.outW
            if bias == nil {
                copyShortRow(from, to: to, count: s.outW)
            } else {
                for j in 0..<s.outW { to[j] = from[j] + b }
            }
        }
    }
}

// MARK: - input gradient by scattering (lanes over positions)

/// The input gradient of a stride-1 convolution computed the other way round from the "full"
/// correlation: every output position q scatters into the padded input positions it was computed
/// from,
///
///     dxpad[c, q + off(r, s)] += sum_k w[k, c, r, s] * g[k, q]        (q over the forward's span)
///
/// which touches only the forward's positions instead of a gradient padded by kH-1 / kW-1 on every
/// side. For LeNet's second layer (10 x 10 outputs, 5 x 5 kernel) the padded correlation spends
/// over half its multiply-adds on that zero border. Blocks of 6 input channels × 48 positions:
/// per (r, s), the k-sum runs in 18 accumulators (3 vector loads and 6 broadcasts per 18
/// multiply-adds), then is added into dxpad once. Each dx element receives its (r, s) terms in a
/// fixed order, each a k-sum in a fixed order: deterministic.
extension ChannelLaneShape {
    /// Blocks of 48 positions covering the span (3 vectors).
    @usableFromInline var scatterBlocks: Int { (span + 47) / 48 }
    /// Elements of the padded input-gradient buffer: input-channel blocks of 6 planes, plus the
    /// slack the last block's positions past the span write (exact zeros added).
    @usableFromInline var scatterPaddedCount: Int { (inChannels + 5) / 6 * 6 * paddedPlane + 64 }
    /// Elements of the packed weights: per block of 6 input channels, per (r, s), per k, 6.
    @usableFromInline var scatterPackedCount: Int { (inChannels + 5) / 6 * kernelH * kernelW * outChannels * 6 }
}

/// Packs w[k, c, r, s] (weight (K, C, kH, kW)) into [c block][r][s][k][6 channels], zero past C.
@usableFromInline
func scatterPackWeights(_ s: ChannelLaneShape, weight: UnsafePointer<Float>, into packed: UnsafeMutablePointer<Float>) {
    let (K, C, kH, kW) = (s.outChannels, s.inChannels, s.kernelH, s.kernelW)
    var o = 0
    for block in 0..<((C + 5) / 6) {
        for r in 0..<kH {
            for col in 0..<kW {
                for k in 0..<K {
                    for i in 0..<6 {
                        let c = block * 6 + i
                        packed[o] = c < C ? weight[((k * C + c) * kH + r) * kW + col] : 0
                        o += 1
                    }
                }
            }
        }
    }
}

/// dx[c][q + 16v] += sum_k packed[k][c] * g[k][16v ..< 16v+16] for 6 channels c (planes `plane`
/// apart) and v in 0..<3.
@inline(__always) @usableFromInline
func scatterBlock(outChannels: Int, g: UnsafePointer<Float>, gRow: Int, packed: UnsafePointer<Float>,
                  dx: UnsafeMutablePointer<Float>, plane: Int) {
    let z = Lanes(repeating: 0)
    var a00 = z, a01 = z, a02 = z, a10 = z, a11 = z, a12 = z, a20 = z, a21 = z, a22 = z
    var a30 = z, a31 = z, a32 = z, a40 = z, a41 = z, a42 = z, a50 = z, a51 = z, a52 = z
    var gp = UnsafeRawPointer(g), w = packed
    let rowBytes = gRow * 4
    for _ in 0..<outChannels {
        let g0 = gp.load(as: Lanes.self), g1 = gp.load(fromByteOffset: 64, as: Lanes.self)
        let g2 = gp.load(fromByteOffset: 128, as: Lanes.self)
        var b = Lanes(repeating: w[0])
        a00 = multiplyAdd(g0, b, a00); a01 = multiplyAdd(g1, b, a01); a02 = multiplyAdd(g2, b, a02)
        b = Lanes(repeating: w[1])
        a10 = multiplyAdd(g0, b, a10); a11 = multiplyAdd(g1, b, a11); a12 = multiplyAdd(g2, b, a12)
        b = Lanes(repeating: w[2])
        a20 = multiplyAdd(g0, b, a20); a21 = multiplyAdd(g1, b, a21); a22 = multiplyAdd(g2, b, a22)
        b = Lanes(repeating: w[3])
        a30 = multiplyAdd(g0, b, a30); a31 = multiplyAdd(g1, b, a31); a32 = multiplyAdd(g2, b, a32)
        b = Lanes(repeating: w[4])
        a40 = multiplyAdd(g0, b, a40); a41 = multiplyAdd(g1, b, a41); a42 = multiplyAdd(g2, b, a42)
        b = Lanes(repeating: w[5])
        a50 = multiplyAdd(g0, b, a50); a51 = multiplyAdd(g1, b, a51); a52 = multiplyAdd(g2, b, a52)
        gp += rowBytes
        w += 6
    }
    @inline(__always) func add(_ i: Int, _ v0: Lanes, _ v1: Lanes, _ v2: Lanes) {
        let d = UnsafeMutableRawPointer(dx + i * plane)
        d.storeBytes(of: d.loadUnaligned(as: Lanes.self) + v0, as: Lanes.self)
        d.storeBytes(of: d.loadUnaligned(fromByteOffset: 64, as: Lanes.self) + v1, toByteOffset: 64, as: Lanes.self)
        d.storeBytes(of: d.loadUnaligned(fromByteOffset: 128, as: Lanes.self) + v2, toByteOffset: 128, as: Lanes.self)
    }
    add(0, a00, a01, a02); add(1, a10, a11, a12); add(2, a20, a21, a22)
    add(3, a30, a31, a32); add(4, a40, a41, a42); add(5, a50, a51, a52)
}

/// One image's input gradient: dx (inChannels planes of H × W, overwritten) from gq (outChannels
/// rows of `gradRow`: g spread to the padded width, zero elsewhere, as `weightGradSpreadRows`), through dxpad
/// (`scatterPaddedCount` elements, any contents). (top, left) is the forward's padding.
@usableFromInline
func scatterGradInputImage(_ s: ChannelLaneShape, gq: UnsafePointer<Float>, packed: UnsafePointer<Float>,
                           dxpad: UnsafeMutablePointer<Float>, dx: UnsafeMutablePointer<Float>,
                           height h: Int, width w: Int, top: Int, left: Int) {
    let (K, kH, kW) = (s.outChannels, s.kernelH, s.kernelW), plane = s.paddedPlane
    let blocks = (s.inChannels + 5) / 6, row = s.gradRow
    dxpad.update(repeating: 0, count: s.scatterPaddedCount)
    for block in 0..<blocks {
        let planes = dxpad + block * 6 * plane
        for r in 0..<kH {
            for col in 0..<kW {
                let wp = packed + ((block * kH + r) * kW + col) * K * 6
                for qb in 0..<s.scatterBlocks {
                    let q0 = qb * 48
                    scatterBlock(outChannels: K, g: gq + q0, gRow: row, packed: wp,
                                 dx: planes + q0 + r * s.paddedW + col, plane: plane)
                }
            }
        }
    }
    for c in 0..<s.inChannels {
        for i in 0..<h {
            copyShortRow(dxpad + c * plane + (i + top) * s.paddedW + left, to: dx + (c * h + i) * w, count: w)
        }
    }
}

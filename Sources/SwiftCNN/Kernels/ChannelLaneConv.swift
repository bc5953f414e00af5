/// Direct convolution with the SIMD lanes across output channels ("channel lanes"), Float.
///
/// For stride 1 and no dilation, with x zero-padded into planes of Hp × Wp (Hp = H + 2ph,
/// Wp = W + 2pw) and every output position (i, j) named by its flat offset q = i*Wp + j in those
/// planes, a tap (c, r, s) of the filter reads the input at q + off(c,r,s), off = c*Hp*Wp + r*Wp + s:
///
///     y[k, q]  = b[k] + sum_t xpad[q + off(t)] * w[k, t]                 (forward)
///     dw[k, t] = sum_q g[k, q] * xpad[q + off(t)]                         (weight gradient)
///
/// Both are computed 16 output channels k at a time, one SIMD16 lane per channel: a multiply-add
/// takes one input value broadcast to all lanes (x86 folds the broadcast into the FMA's memory
/// operand) and one vector of 16 weights (forward) or 16 output gradients (dw). That uses every lane
/// whenever K is a multiple of 16, with no im2col matrix and no packing beyond one copy of each
/// image, which is why it beats im2col + GEMM for small images and few channels (LeNet's second
/// layer, 6 -> 16 channels on 14 x 14) and matches it for large ones.
///
/// q runs over 0..<Q, Q = (Ho-1)*Wp + Wo: the positions with j >= Wo are wasted work (a fraction
/// (Wp-Wo)/Wp), computed but never stored (forward) or given a zero gradient (dw).
///
/// The input gradient of a stride-1 convolution is itself such a convolution (the lecture's "full
/// cross-correlation with the filter rotated by 180 degrees"): dx = conv(gpad, w') with gpad = g
/// zero-padded by kH-1-ph rows and kW-1-pw columns on each side and w'[c, k, r, s] =
/// w[k, c, kH-1-r, kW-1-s]; so the same forward kernel computes dx, 16 input channels at a time.
///
/// Each output element is summed by one thread in a fixed order (taps in (c, r, s) order for y and
/// dx; q in order, images in order within a chunk, chunks in order for dw): results are
/// deterministic for a given thread count.

@usableFromInline typealias Lanes = SIMD16<Float>

/// Output positions per forward micro-kernel call (12 accumulators of 16 channels each).
@usableFromInline let channelLanePixels = 12
/// Taps per weight-gradient micro-kernel call (8 accumulators; 8 input pointers).
@usableFromInline let channelLaneTaps = 8

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
        Double(inChannels) * Double(paddedH) * Double(paddedW) + 16 < Double(Int32.max)
    }
    /// Groups of 16 output channels.
    @usableFromInline var groups: Int { (outChannels + 15) / 16 }
    /// Elements of a padded input buffer: the planes plus slack, because the last micro-kernel call
    /// reads up to `channelLanePixels - 1` positions past the span (results never stored).
    @usableFromInline var paddedCount: Int { inChannels * paddedPlane + channelLanePixels }
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
        for row in 0..<h { (plane + row * s.paddedW).update(from: from + row * w, count: w) }
    }
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
        // Pixel-major scratch -> channel planes, skipping the wasted positions j >= outW.
        for lane in 0..<lanes {
            var dst = y + (k0 + lane) * outPlane
            for i in 0..<s.outH {
                var src = scratch + i * s.paddedW * 16 + lane
                for _ in 0..<s.outW { dst.pointee = src.pointee; dst += 1; src += 16 }
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
    /// Elements of a padded input buffer for the weight gradient: the planes plus 16 of slack (the
    /// last vector reads up to 15 positions past the span, where g is zero).
    @usableFromInline var paddedCountForWeight: Int { inChannels * paddedPlane + 16 }
    /// Elements of the position-major output gradient gq: per channel, spanVectors * 16.
    @usableFromInline var gradRowsCount: Int { outChannels * spanVectors * 16 }
}

/// acc[i][t] += (16 lanes of) sum over vectors v of g_i[16v ..< 16v+16] * p_t[16v ..< 16v+16], for
/// two output channels i (rows `g0`, `g1`, accumulators `acc0`, `acc1` of [taps][16]) and the 8
/// taps at `p` (slots past `count` repeat a tap and are dropped). 16 independent accumulators, and
/// 10 loads per 16 multiply-adds.
@inline(__always) @usableFromInline
func weightGradBlock(vectors: Int, g0: UnsafePointer<Float>, g1: UnsafePointer<Float>,
                     p: UnsafePointer<UnsafePointer<Float>>, acc0: UnsafeMutablePointer<Float>,
                     acc1: UnsafeMutablePointer<Float>, count: Int) {
    let zero = Lanes(repeating: 0)
    var a0 = zero, a1 = zero, a2 = zero, a3 = zero, a4 = zero, a5 = zero, a6 = zero, a7 = zero
    var b0 = zero, b1 = zero, b2 = zero, b3 = zero, b4 = zero, b5 = zero, b6 = zero, b7 = zero
    let p0 = UnsafeRawPointer(p[0]), p1 = UnsafeRawPointer(p[1]), p2 = UnsafeRawPointer(p[2])
    let p3 = UnsafeRawPointer(p[3]), p4 = UnsafeRawPointer(p[4]), p5 = UnsafeRawPointer(p[5])
    let p6 = UnsafeRawPointer(p[6]), p7 = UnsafeRawPointer(p[7])
    let r0 = UnsafeRawPointer(g0), r1 = UnsafeRawPointer(g1)
    var offset = 0
    for _ in 0..<vectors {
        let u = r0.load(fromByteOffset: offset, as: Lanes.self)
        let v = r1.load(fromByteOffset: offset, as: Lanes.self)
        var x = p0.loadUnaligned(fromByteOffset: offset, as: Lanes.self)
        a0 = multiplyAdd(x, u, a0); b0 = multiplyAdd(x, v, b0)
        x = p1.loadUnaligned(fromByteOffset: offset, as: Lanes.self)
        a1 = multiplyAdd(x, u, a1); b1 = multiplyAdd(x, v, b1)
        x = p2.loadUnaligned(fromByteOffset: offset, as: Lanes.self)
        a2 = multiplyAdd(x, u, a2); b2 = multiplyAdd(x, v, b2)
        x = p3.loadUnaligned(fromByteOffset: offset, as: Lanes.self)
        a3 = multiplyAdd(x, u, a3); b3 = multiplyAdd(x, v, b3)
        x = p4.loadUnaligned(fromByteOffset: offset, as: Lanes.self)
        a4 = multiplyAdd(x, u, a4); b4 = multiplyAdd(x, v, b4)
        x = p5.loadUnaligned(fromByteOffset: offset, as: Lanes.self)
        a5 = multiplyAdd(x, u, a5); b5 = multiplyAdd(x, v, b5)
        x = p6.loadUnaligned(fromByteOffset: offset, as: Lanes.self)
        a6 = multiplyAdd(x, u, a6); b6 = multiplyAdd(x, v, b6)
        x = p7.loadUnaligned(fromByteOffset: offset, as: Lanes.self)
        a7 = multiplyAdd(x, u, a7); b7 = multiplyAdd(x, v, b7)
        offset += 64
    }
    @inline(__always) func add(_ t: Int, _ a: Lanes, _ b: Lanes) {
        let d0 = UnsafeMutableRawPointer(acc0 + t * 16), d1 = UnsafeMutableRawPointer(acc1 + t * 16)
        d0.storeBytes(of: d0.load(as: Lanes.self) + a, as: Lanes.self)
        d1.storeBytes(of: d1.load(as: Lanes.self) + b, as: Lanes.self)
    }
    add(0, a0, b0)
    if count > 1 { add(1, a1, b1) }
    if count > 2 { add(2, a2, b2) }
    if count > 3 { add(3, a3, b3) }
    if count > 4 { add(4, a4, b4) }
    if count > 5 { add(5, a5, b5) }
    if count > 6 { add(6, a6, b6) }
    if count > 7 { add(7, a7, b7) }
}

/// One image's contribution to dw, kept as 16 partial sums per weight: acc[k][t][16] +=
/// gq[k][q] * xpad[q + off(t)] summed over q ≡ lane (mod 16). `gq` is g with rows spread to the
/// padded width (`weightGradSpreadRows`), `xpad` has `paddedCountForWeight` elements. An odd last
/// channel pairs with itself (its second result is dropped).
@usableFromInline
func weightGradImage(_ s: ChannelLaneShape, xpad: UnsafePointer<Float>, gq: UnsafePointer<Float>,
                     offsets: UnsafePointer<Int32>, acc: UnsafeMutablePointer<Float>,
                     dropped: UnsafeMutablePointer<Float>) {
    let taps = s.taps, vectors = s.spanVectors, row = vectors * 16
    withUnsafeTemporaryAllocation(of: UnsafePointer<Float>.self, capacity: 8) { pointers in
        let p = pointers.baseAddress!
        var t0 = 0
        while t0 < taps {
            let count = min(8, taps - t0)
            for i in 0..<8 { p[i] = xpad + Int(offsets[t0 + (i < count ? i : 0)]) }
            var k = 0
            while k < s.outChannels {
                let pair = k + 1 < s.outChannels
                weightGradBlock(vectors: vectors, g0: gq + k * row, g1: gq + (pair ? k + 1 : k) * row,
                                p: UnsafePointer(p), acc0: acc + (k * taps + t0) * 16,
                                acc1: pair ? acc + ((k + 1) * taps + t0) * 16 : dropped, count: count)
                k += 2
            }
            t0 += 8
        }
    }
}

/// g (outChannels planes of outH × outW) -> gq (outChannels rows of spanVectors * 16): row i of a
/// plane goes to positions i*Wp ..< i*Wp + Wo. The positions in between and past the span must be
/// zero already (they are never written).
@usableFromInline
func weightGradSpreadRows(_ s: ChannelLaneShape, g: UnsafePointer<Float>, gq: UnsafeMutablePointer<Float>) {
    let row = s.spanVectors * 16, outPlane = s.outH * s.outW
    for k in 0..<s.outChannels {
        for i in 0..<s.outH {
            (gq + k * row + i * s.paddedW).update(from: g + k * outPlane + i * s.outW, count: s.outW)
        }
    }
}

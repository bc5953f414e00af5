/// The weight gradient of a direct convolution (see Kernels/DirectConvShape.swift), lanes over
/// positions: 3 × 8 or 4 × 6 (channel, tap) accumulators of 16 partial sums each, added up once per
/// group of images.

/// Vectors of 16 positions covering the span (the weight gradient's q loop).
extension DirectConvShape {
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
extension DirectConvShape {
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
func weightGradImages(_ s: DirectConvShape, images: Int, xpad: UnsafePointer<Float>, xImageStride: Int,
                      gq: UnsafePointer<Float>, offsets: UnsafePointer<Int32>, acc: UnsafeMutablePointer<Float>,
                      dropped: UnsafeMutablePointer<Float>) {
    if directConvRegisterFile == .narrow {
        weightGradImagesNarrow(s, images: images, xpad: xpad, xImageStride: xImageStride, gq: gq, offsets: offsets, acc: acc)
    } else {
        weightGradImagesWide(s, images: images, xpad: xpad, xImageStride: xImageStride, gq: gq, offsets: offsets,
                             acc: acc, dropped: dropped)
    }
}

/// `weightGradImages` through the AVX-512 blocks (`RegisterFile.wide`).
@usableFromInline
func weightGradImagesWide(_ s: DirectConvShape, images: Int, xpad: UnsafePointer<Float>, xImageStride: Int,
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

/// `weightGradImages` through the narrow blocks (Kernels/DirectConvNarrowBlocks.swift), the same
/// partial sums bit for bit: the same tap and channel blocks, each 8-lane half of a block on its
/// own, 2 channels (4 × 6 blocks) or 1 channel (3 × 8 blocks, channels past K skipped) at a time.
@usableFromInline
func weightGradImagesNarrow(_ s: DirectConvShape, images: Int, xpad: UnsafePointer<Float>, xImageStride: Int,
                            gq: UnsafePointer<Float>, offsets: UnsafePointer<Int32>, acc: UnsafeMutablePointer<Float>) {
    let taps = s.taps, vectors = s.spanVectors, row = s.gradRow, K = s.outChannels
    let xImageBytes = xImageStride * 4, gImageBytes = s.gradRowsCount * 4
    let four = s.weightGradUses4x6, width = four ? 6 : 8
    withUnsafeTemporaryAllocation(of: UnsafePointer<Float>.self, capacity: 8) { pointers in
        let p = pointers.baseAddress!
        var t0 = 0
        while t0 < taps {
            let count = min(width, taps - t0)
            for half in 0..<2 {
                for i in 0..<width { p[i] = xpad + Int(offsets[t0 + (i < count ? i : 0)]) + 8 * half }
                if four {
                    for k in stride(from: 0, to: K, by: 2) {
                        weightGradNarrowBlock2x6(images: images, vectors: vectors, xImageBytes: xImageBytes,
                                                 gImageBytes: gImageBytes, g: gq + k * row + 8 * half, gRowBytes: row * 4,
                                                 p: UnsafePointer(p), acc: acc + (k * taps + t0) * 16 + 8 * half,
                                                 accRow: taps * 16, count: count)
                    }
                } else {
                    for k in 0..<K {
                        weightGradNarrowBlock1x8(images: images, vectors: vectors, xImageBytes: xImageBytes,
                                                 gImageBytes: gImageBytes, g: gq + k * row + 8 * half, p: UnsafePointer(p),
                                                 acc: acc + (k * taps + t0) * 16 + 8 * half, count: count)
                    }
                }
            }
            t0 += width
        }
    }
}

/// Images per `weightGradImages` call: enough that the accumulators' trips to memory are rare,
/// few enough that the group's padded inputs and gradients stay in a core's L1 data cache (48 KiB
/// here; 40 KiB targeted), since every tap block and channel group re-reads them.
@usableFromInline
func weightGradImagesPerGroup(_ s: DirectConvShape) -> Int {
    let bytes = (s.paddedCount + s.gradRowsCount) * 4
    return max(1, min(32, 40 * 1024 / max(bytes, 1)))
}

/// g (outChannels planes of outH × outW) -> gq (outChannels rows of `gradRow`): row i of a
/// plane goes to positions i*Wp ..< i*Wp + Wo. The positions in between and past the span must be
/// zero already (they are never written).
@usableFromInline
func weightGradSpreadRows(_ s: DirectConvShape, g: UnsafePointer<Float>, gq: UnsafeMutablePointer<Float>) {
    let row = s.gradRow, outPlane = s.outH * s.outW
    for k in 0..<s.outChannels {
        for i in 0..<s.outH {
            copyShortRow(g + k * outPlane + i * s.outW, to: gq + k * row + i * s.paddedW, count: s.outW)
        }
    }
}

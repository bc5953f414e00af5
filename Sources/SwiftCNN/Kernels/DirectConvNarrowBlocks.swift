/// The position-lane forward blocks (Kernels/DirectConvPositionLanes.swift) for a narrow register
/// file (`RegisterFile.narrow`: AVX2's 16 registers of 8 floats): each wide block (6 or 8 channels
/// × 48-128 positions, `SIMD16<Float>` accumulators) is computed as sub-blocks of at most 12
/// `SIMD8<Float>` accumulators, which with the input loads and one broadcast fit in 16 registers.
///
/// Each sub-block computes, for its rows i and positions p,
///
///     out[i][p] = sum_t packed[t][i] * xpad[p + off(t)]      (t = 0, 1, ..., taps - 1, from 0)
///
/// one multiply-add per tap in tap order: the same chain as the wide block's, so results are
/// bit-identical to `RegisterFile.wide`'s (checked by DirectConvNarrowBlockTests).
///
/// Arguments of every sub-block: `x` = the input at the sub-block's first position, `w` = the packed
/// weights at its first row (rows of a tap are contiguous, `wStride` = the wide block's rows apart
/// between taps), `out` = the scratch at its first row and position, `rowStride` between rows.

@usableFromInline typealias Lanes8 = SIMD8<Float>



/// 3 rows × 32 positions (4 vectors): 12 accumulators, per tap 4 loads and 3 broadcasts for 12 multiply-adds.
@inline(__always) @usableFromInline
func positionLaneNarrowBlock3x4(taps: Int, offsets: UnsafePointer<Int32>, x: UnsafePointer<Float>,
                                w: UnsafePointer<Float>, wStride: Int, out: UnsafeMutablePointer<Float>, rowStride: Int) {
    let z = Lanes8(repeating: 0)
    var a00 = z, a01 = z, a02 = z, a03 = z, a10 = z, a11 = z, a12 = z, a13 = z
    var a20 = z, a21 = z, a22 = z, a23 = z
    var wp = w
    for t in 0..<taps {
        let xp = UnsafeRawPointer(x + Int(offsets[t]))
        let x0 = xp.loadUnaligned(fromByteOffset: 0, as: Lanes8.self), x1 = xp.loadUnaligned(fromByteOffset: 32, as: Lanes8.self)
        let x2 = xp.loadUnaligned(fromByteOffset: 64, as: Lanes8.self), x3 = xp.loadUnaligned(fromByteOffset: 96, as: Lanes8.self)
        var b = Lanes8(repeating: wp[0])
        a00 = multiplyAdd(x0, b, a00); a01 = multiplyAdd(x1, b, a01); a02 = multiplyAdd(x2, b, a02); a03 = multiplyAdd(x3, b, a03)
        b = Lanes8(repeating: wp[1])
        a10 = multiplyAdd(x0, b, a10); a11 = multiplyAdd(x1, b, a11); a12 = multiplyAdd(x2, b, a12); a13 = multiplyAdd(x3, b, a13)
        b = Lanes8(repeating: wp[2])
        a20 = multiplyAdd(x0, b, a20); a21 = multiplyAdd(x1, b, a21); a22 = multiplyAdd(x2, b, a22); a23 = multiplyAdd(x3, b, a23)
        wp += wStride
    }
    let o0 = UnsafeMutableRawPointer(out + 0 * rowStride)
    o0.storeBytes(of: a00, toByteOffset: 0, as: Lanes8.self); o0.storeBytes(of: a01, toByteOffset: 32, as: Lanes8.self); o0.storeBytes(of: a02, toByteOffset: 64, as: Lanes8.self); o0.storeBytes(of: a03, toByteOffset: 96, as: Lanes8.self)
    let o1 = UnsafeMutableRawPointer(out + 1 * rowStride)
    o1.storeBytes(of: a10, toByteOffset: 0, as: Lanes8.self); o1.storeBytes(of: a11, toByteOffset: 32, as: Lanes8.self); o1.storeBytes(of: a12, toByteOffset: 64, as: Lanes8.self); o1.storeBytes(of: a13, toByteOffset: 96, as: Lanes8.self)
    let o2 = UnsafeMutableRawPointer(out + 2 * rowStride)
    o2.storeBytes(of: a20, toByteOffset: 0, as: Lanes8.self); o2.storeBytes(of: a21, toByteOffset: 32, as: Lanes8.self); o2.storeBytes(of: a22, toByteOffset: 64, as: Lanes8.self); o2.storeBytes(of: a23, toByteOffset: 96, as: Lanes8.self)
}

/// 4 rows × 24 positions (3 vectors): 12 accumulators, per tap 3 loads and 4 broadcasts for 12 multiply-adds.
@inline(__always) @usableFromInline
func positionLaneNarrowBlock4x3(taps: Int, offsets: UnsafePointer<Int32>, x: UnsafePointer<Float>,
                                w: UnsafePointer<Float>, wStride: Int, out: UnsafeMutablePointer<Float>, rowStride: Int) {
    let z = Lanes8(repeating: 0)
    var a00 = z, a01 = z, a02 = z, a10 = z, a11 = z, a12 = z, a20 = z, a21 = z
    var a22 = z, a30 = z, a31 = z, a32 = z
    var wp = w
    for t in 0..<taps {
        let xp = UnsafeRawPointer(x + Int(offsets[t]))
        let x0 = xp.loadUnaligned(fromByteOffset: 0, as: Lanes8.self), x1 = xp.loadUnaligned(fromByteOffset: 32, as: Lanes8.self)
        let x2 = xp.loadUnaligned(fromByteOffset: 64, as: Lanes8.self)
        var b = Lanes8(repeating: wp[0])
        a00 = multiplyAdd(x0, b, a00); a01 = multiplyAdd(x1, b, a01); a02 = multiplyAdd(x2, b, a02)
        b = Lanes8(repeating: wp[1])
        a10 = multiplyAdd(x0, b, a10); a11 = multiplyAdd(x1, b, a11); a12 = multiplyAdd(x2, b, a12)
        b = Lanes8(repeating: wp[2])
        a20 = multiplyAdd(x0, b, a20); a21 = multiplyAdd(x1, b, a21); a22 = multiplyAdd(x2, b, a22)
        b = Lanes8(repeating: wp[3])
        a30 = multiplyAdd(x0, b, a30); a31 = multiplyAdd(x1, b, a31); a32 = multiplyAdd(x2, b, a32)
        wp += wStride
    }
    let o0 = UnsafeMutableRawPointer(out + 0 * rowStride)
    o0.storeBytes(of: a00, toByteOffset: 0, as: Lanes8.self); o0.storeBytes(of: a01, toByteOffset: 32, as: Lanes8.self); o0.storeBytes(of: a02, toByteOffset: 64, as: Lanes8.self)
    let o1 = UnsafeMutableRawPointer(out + 1 * rowStride)
    o1.storeBytes(of: a10, toByteOffset: 0, as: Lanes8.self); o1.storeBytes(of: a11, toByteOffset: 32, as: Lanes8.self); o1.storeBytes(of: a12, toByteOffset: 64, as: Lanes8.self)
    let o2 = UnsafeMutableRawPointer(out + 2 * rowStride)
    o2.storeBytes(of: a20, toByteOffset: 0, as: Lanes8.self); o2.storeBytes(of: a21, toByteOffset: 32, as: Lanes8.self); o2.storeBytes(of: a22, toByteOffset: 64, as: Lanes8.self)
    let o3 = UnsafeMutableRawPointer(out + 3 * rowStride)
    o3.storeBytes(of: a30, toByteOffset: 0, as: Lanes8.self); o3.storeBytes(of: a31, toByteOffset: 32, as: Lanes8.self); o3.storeBytes(of: a32, toByteOffset: 64, as: Lanes8.self)
}

/// 6 rows × 16 positions (2 vectors): 12 accumulators, per tap 2 loads and 6 broadcasts for 12 multiply-adds.
@inline(__always) @usableFromInline
func positionLaneNarrowBlock6x2(taps: Int, offsets: UnsafePointer<Int32>, x: UnsafePointer<Float>,
                                w: UnsafePointer<Float>, wStride: Int, out: UnsafeMutablePointer<Float>, rowStride: Int) {
    let z = Lanes8(repeating: 0)
    var a00 = z, a01 = z, a10 = z, a11 = z, a20 = z, a21 = z, a30 = z, a31 = z
    var a40 = z, a41 = z, a50 = z, a51 = z
    var wp = w
    for t in 0..<taps {
        let xp = UnsafeRawPointer(x + Int(offsets[t]))
        let x0 = xp.loadUnaligned(fromByteOffset: 0, as: Lanes8.self), x1 = xp.loadUnaligned(fromByteOffset: 32, as: Lanes8.self)
        var b = Lanes8(repeating: wp[0])
        a00 = multiplyAdd(x0, b, a00); a01 = multiplyAdd(x1, b, a01)
        b = Lanes8(repeating: wp[1])
        a10 = multiplyAdd(x0, b, a10); a11 = multiplyAdd(x1, b, a11)
        b = Lanes8(repeating: wp[2])
        a20 = multiplyAdd(x0, b, a20); a21 = multiplyAdd(x1, b, a21)
        b = Lanes8(repeating: wp[3])
        a30 = multiplyAdd(x0, b, a30); a31 = multiplyAdd(x1, b, a31)
        b = Lanes8(repeating: wp[4])
        a40 = multiplyAdd(x0, b, a40); a41 = multiplyAdd(x1, b, a41)
        b = Lanes8(repeating: wp[5])
        a50 = multiplyAdd(x0, b, a50); a51 = multiplyAdd(x1, b, a51)
        wp += wStride
    }
    let o0 = UnsafeMutableRawPointer(out + 0 * rowStride)
    o0.storeBytes(of: a00, toByteOffset: 0, as: Lanes8.self); o0.storeBytes(of: a01, toByteOffset: 32, as: Lanes8.self)
    let o1 = UnsafeMutableRawPointer(out + 1 * rowStride)
    o1.storeBytes(of: a10, toByteOffset: 0, as: Lanes8.self); o1.storeBytes(of: a11, toByteOffset: 32, as: Lanes8.self)
    let o2 = UnsafeMutableRawPointer(out + 2 * rowStride)
    o2.storeBytes(of: a20, toByteOffset: 0, as: Lanes8.self); o2.storeBytes(of: a21, toByteOffset: 32, as: Lanes8.self)
    let o3 = UnsafeMutableRawPointer(out + 3 * rowStride)
    o3.storeBytes(of: a30, toByteOffset: 0, as: Lanes8.self); o3.storeBytes(of: a31, toByteOffset: 32, as: Lanes8.self)
    let o4 = UnsafeMutableRawPointer(out + 4 * rowStride)
    o4.storeBytes(of: a40, toByteOffset: 0, as: Lanes8.self); o4.storeBytes(of: a41, toByteOffset: 32, as: Lanes8.self)
    let o5 = UnsafeMutableRawPointer(out + 5 * rowStride)
    o5.storeBytes(of: a50, toByteOffset: 0, as: Lanes8.self); o5.storeBytes(of: a51, toByteOffset: 32, as: Lanes8.self)
}

/// 1 row × 64 positions (8 vectors): 8 accumulators, per tap 8 loads and 1 broadcast for 8 multiply-adds.
@inline(__always) @usableFromInline
func positionLaneNarrowBlock1x8(taps: Int, offsets: UnsafePointer<Int32>, x: UnsafePointer<Float>,
                                w: UnsafePointer<Float>, wStride: Int, out: UnsafeMutablePointer<Float>, rowStride: Int) {
    let z = Lanes8(repeating: 0)
    var a00 = z, a01 = z, a02 = z, a03 = z, a04 = z, a05 = z, a06 = z, a07 = z
    var wp = w
    for t in 0..<taps {
        let xp = UnsafeRawPointer(x + Int(offsets[t]))
        let x0 = xp.loadUnaligned(fromByteOffset: 0, as: Lanes8.self), x1 = xp.loadUnaligned(fromByteOffset: 32, as: Lanes8.self)
        let x2 = xp.loadUnaligned(fromByteOffset: 64, as: Lanes8.self), x3 = xp.loadUnaligned(fromByteOffset: 96, as: Lanes8.self)
        let x4 = xp.loadUnaligned(fromByteOffset: 128, as: Lanes8.self), x5 = xp.loadUnaligned(fromByteOffset: 160, as: Lanes8.self)
        let x6 = xp.loadUnaligned(fromByteOffset: 192, as: Lanes8.self), x7 = xp.loadUnaligned(fromByteOffset: 224, as: Lanes8.self)
        let b = Lanes8(repeating: wp[0])
        a00 = multiplyAdd(x0, b, a00); a01 = multiplyAdd(x1, b, a01); a02 = multiplyAdd(x2, b, a02); a03 = multiplyAdd(x3, b, a03); a04 = multiplyAdd(x4, b, a04); a05 = multiplyAdd(x5, b, a05); a06 = multiplyAdd(x6, b, a06); a07 = multiplyAdd(x7, b, a07)
        wp += wStride
    }
    let o0 = UnsafeMutableRawPointer(out + 0 * rowStride)
    o0.storeBytes(of: a00, toByteOffset: 0, as: Lanes8.self); o0.storeBytes(of: a01, toByteOffset: 32, as: Lanes8.self); o0.storeBytes(of: a02, toByteOffset: 64, as: Lanes8.self); o0.storeBytes(of: a03, toByteOffset: 96, as: Lanes8.self); o0.storeBytes(of: a04, toByteOffset: 128, as: Lanes8.self); o0.storeBytes(of: a05, toByteOffset: 160, as: Lanes8.self); o0.storeBytes(of: a06, toByteOffset: 192, as: Lanes8.self); o0.storeBytes(of: a07, toByteOffset: 224, as: Lanes8.self)
}

/// One wide position block (`rows` × `width` of `DirectConvShape.positionBlockShape`: 1 × 128,
/// 6 × 64, 8 × 48 or 6 × 48) through the narrow sub-blocks. Arguments as the wide blocks'
/// (`packed` = the channel block's packed weights, [t][rows]).
@inline(__always) @usableFromInline
func positionLaneNarrowBlock(rows: Int, width: Int, taps: Int, offsets: UnsafePointer<Int32>, x: UnsafePointer<Float>,
                             packed: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, rowStride: Int) {
    switch (rows, width) {
    case (1, _):
        for p in stride(from: 0, to: width, by: 64) {
            positionLaneNarrowBlock1x8(taps: taps, offsets: offsets, x: x + p, w: packed, wStride: 1,
                                       out: out + p, rowStride: rowStride)
        }
    case (8, _):
        for r in stride(from: 0, to: 8, by: 4) {
            for p in stride(from: 0, to: width, by: 24) {
                positionLaneNarrowBlock4x3(taps: taps, offsets: offsets, x: x + p, w: packed + r, wStride: 8,
                                           out: out + r * rowStride + p, rowStride: rowStride)
            }
        }
    case (6, 64):
        for r in stride(from: 0, to: 6, by: 3) {
            for p in stride(from: 0, to: 64, by: 32) {
                positionLaneNarrowBlock3x4(taps: taps, offsets: offsets, x: x + p, w: packed + r, wStride: 6,
                                           out: out + r * rowStride + p, rowStride: rowStride)
            }
        }
    default:   // 6 rows, a multiple of 16 positions
        for p in stride(from: 0, to: width, by: 16) {
            positionLaneNarrowBlock6x2(taps: taps, offsets: offsets, x: x + p, w: packed, wStride: 6,
                                       out: out + p, rowStride: rowStride)
        }
    }
}

// MARK: - weight gradient

/// The weight-gradient blocks (Kernels/DirectConvWeightGradient.swift) for a narrow register file.
/// The wide blocks keep 16 partial sums per (channel, tap), lane l summing the positions q ≡ l
/// (mod 16) over the images and vectors in order; the two 8-lane halves of those sums are
/// independent chains, so a narrow block computes one half (`x`, `g` and `acc` offset by 8 floats
/// for the upper one) for fewer channels or taps at a time, with the same chain per lane:
/// bit-identical partial sums.

/// 2 channels × 6 taps of one 8-lane half: 12 accumulators, per vector 2 gradient loads and 6 input
/// loads for 12 multiply-adds. `p` holds the 6 taps' input pointers (already offset to the half),
/// `g` channel 0's gradient row (channel 1 `gRowBytes` later), `acc` channel 0's [t][16] sums at the
/// half (channel 1 `accRow` floats later); taps past `count` are computed and dropped.
@inline(__always) @usableFromInline
func weightGradNarrowBlock2x6(images: Int, vectors: Int, xImageBytes: Int, gImageBytes: Int, g: UnsafePointer<Float>,
                              gRowBytes: Int, p: UnsafePointer<UnsafePointer<Float>>, acc: UnsafeMutablePointer<Float>,
                              accRow: Int, count: Int) {
    let zero = Lanes8(repeating: 0)
    var a0 = zero, a1 = zero, a2 = zero, a3 = zero, a4 = zero, a5 = zero
    var b0 = zero, b1 = zero, b2 = zero, b3 = zero, b4 = zero, b5 = zero
    let x0 = UnsafeRawPointer(p[0]), d1 = UnsafeRawPointer(p[1]) - x0, d2 = UnsafeRawPointer(p[2]) - x0
    let d3 = UnsafeRawPointer(p[3]) - x0, d4 = UnsafeRawPointer(p[4]) - x0, d5 = UnsafeRawPointer(p[5]) - x0
    let xSkip = xImageBytes &- vectors &* 64, gSkip = gImageBytes &- vectors &* 64
    var x = x0, gp = UnsafeRawPointer(g)
    var left = vectors, imagesLeft = images
    while imagesLeft > 0 && left > 0 {
        let u = gp.loadUnaligned(as: Lanes8.self), v = gp.loadUnaligned(fromByteOffset: gRowBytes, as: Lanes8.self)
        var t = x.loadUnaligned(as: Lanes8.self)
        a0 = multiplyAdd(t, u, a0); b0 = multiplyAdd(t, v, b0)
        t = x.loadUnaligned(fromByteOffset: d1, as: Lanes8.self)
        a1 = multiplyAdd(t, u, a1); b1 = multiplyAdd(t, v, b1)
        t = x.loadUnaligned(fromByteOffset: d2, as: Lanes8.self)
        a2 = multiplyAdd(t, u, a2); b2 = multiplyAdd(t, v, b2)
        t = x.loadUnaligned(fromByteOffset: d3, as: Lanes8.self)
        a3 = multiplyAdd(t, u, a3); b3 = multiplyAdd(t, v, b3)
        t = x.loadUnaligned(fromByteOffset: d4, as: Lanes8.self)
        a4 = multiplyAdd(t, u, a4); b4 = multiplyAdd(t, v, b4)
        t = x.loadUnaligned(fromByteOffset: d5, as: Lanes8.self)
        a5 = multiplyAdd(t, u, a5); b5 = multiplyAdd(t, v, b5)
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
    @inline(__always) func add(_ t: Int, _ a: Lanes8, _ b: Lanes8) {
        let q0 = UnsafeMutableRawPointer(acc + t * 16), q1 = q0 + 4 * accRow
        q0.storeBytes(of: q0.loadUnaligned(as: Lanes8.self) + a, as: Lanes8.self)
        q1.storeBytes(of: q1.loadUnaligned(as: Lanes8.self) + b, as: Lanes8.self)
    }
    add(0, a0, b0)
    if count > 1 { add(1, a1, b1) }
    if count > 2 { add(2, a2, b2) }
    if count > 3 { add(3, a3, b3) }
    if count > 4 { add(4, a4, b4) }
    if count > 5 { add(5, a5, b5) }
}

/// 1 channel × 8 taps of one 8-lane half (the 3 × 8 wide block's channels one at a time): 8
/// accumulators, per vector 1 gradient load and 8 input loads for 8 multiply-adds. Arguments as
/// `weightGradNarrowBlock2x6` with 8 tap pointers.
@inline(__always) @usableFromInline
func weightGradNarrowBlock1x8(images: Int, vectors: Int, xImageBytes: Int, gImageBytes: Int, g: UnsafePointer<Float>,
                              p: UnsafePointer<UnsafePointer<Float>>, acc: UnsafeMutablePointer<Float>, count: Int) {
    let zero = Lanes8(repeating: 0)
    var a0 = zero, a1 = zero, a2 = zero, a3 = zero, a4 = zero, a5 = zero, a6 = zero, a7 = zero
    let x0 = UnsafeRawPointer(p[0]), d1 = UnsafeRawPointer(p[1]) - x0, d2 = UnsafeRawPointer(p[2]) - x0
    let d3 = UnsafeRawPointer(p[3]) - x0, d4 = UnsafeRawPointer(p[4]) - x0, d5 = UnsafeRawPointer(p[5]) - x0
    let d6 = UnsafeRawPointer(p[6]) - x0, d7 = UnsafeRawPointer(p[7]) - x0
    let xSkip = xImageBytes &- vectors &* 64, gSkip = gImageBytes &- vectors &* 64
    var x = x0, gp = UnsafeRawPointer(g)
    var left = vectors, imagesLeft = images
    while imagesLeft > 0 && left > 0 {
        let u = gp.loadUnaligned(as: Lanes8.self)
        a0 = multiplyAdd(x.loadUnaligned(as: Lanes8.self), u, a0)
        a1 = multiplyAdd(x.loadUnaligned(fromByteOffset: d1, as: Lanes8.self), u, a1)
        a2 = multiplyAdd(x.loadUnaligned(fromByteOffset: d2, as: Lanes8.self), u, a2)
        a3 = multiplyAdd(x.loadUnaligned(fromByteOffset: d3, as: Lanes8.self), u, a3)
        a4 = multiplyAdd(x.loadUnaligned(fromByteOffset: d4, as: Lanes8.self), u, a4)
        a5 = multiplyAdd(x.loadUnaligned(fromByteOffset: d5, as: Lanes8.self), u, a5)
        a6 = multiplyAdd(x.loadUnaligned(fromByteOffset: d6, as: Lanes8.self), u, a6)
        a7 = multiplyAdd(x.loadUnaligned(fromByteOffset: d7, as: Lanes8.self), u, a7)
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
    @inline(__always) func add(_ t: Int, _ a: Lanes8) {
        let q = UnsafeMutableRawPointer(acc + t * 16)
        q.storeBytes(of: q.loadUnaligned(as: Lanes8.self) + a, as: Lanes8.self)
    }
    add(0, a0)
    if count > 1 { add(1, a1) }
    if count > 2 { add(2, a2) }
    if count > 3 { add(3, a3) }
    if count > 4 { add(4, a4) }
    if count > 5 { add(5, a5) }
    if count > 6 { add(6, a6) }
    if count > 7 { add(7, a7) }
}

// MARK: - scattered input gradient

/// `scatterBlock` (Kernels/DirectConvScatterGradInput.swift: 6 input channels × 48 positions) for
/// a narrow register file, 16 positions at a time: 12 accumulators, per output channel 2 gradient
/// loads and 6 broadcasts for 12 multiply-adds. Each position's k-sum is the same chain as the wide
/// block's and is added into dx once, so the results are bit-identical. Arguments as `scatterBlock`
/// with `g` and `dx` at the sub-block's first position.
@inline(__always) @usableFromInline
func scatterNarrowBlock6x2(outChannels: Int, g: UnsafePointer<Float>, gRow: Int, packed: UnsafePointer<Float>,
                           dx: UnsafeMutablePointer<Float>, plane: Int) {
    let z = Lanes8(repeating: 0)
    var a00 = z, a01 = z, a10 = z, a11 = z, a20 = z, a21 = z
    var a30 = z, a31 = z, a40 = z, a41 = z, a50 = z, a51 = z
    var gp = UnsafeRawPointer(g), w = packed
    let rowBytes = gRow * 4
    for _ in 0..<outChannels {
        let g0 = gp.loadUnaligned(as: Lanes8.self), g1 = gp.loadUnaligned(fromByteOffset: 32, as: Lanes8.self)
        var b = Lanes8(repeating: w[0])
        a00 = multiplyAdd(g0, b, a00); a01 = multiplyAdd(g1, b, a01)
        b = Lanes8(repeating: w[1])
        a10 = multiplyAdd(g0, b, a10); a11 = multiplyAdd(g1, b, a11)
        b = Lanes8(repeating: w[2])
        a20 = multiplyAdd(g0, b, a20); a21 = multiplyAdd(g1, b, a21)
        b = Lanes8(repeating: w[3])
        a30 = multiplyAdd(g0, b, a30); a31 = multiplyAdd(g1, b, a31)
        b = Lanes8(repeating: w[4])
        a40 = multiplyAdd(g0, b, a40); a41 = multiplyAdd(g1, b, a41)
        b = Lanes8(repeating: w[5])
        a50 = multiplyAdd(g0, b, a50); a51 = multiplyAdd(g1, b, a51)
        gp += rowBytes
        w += 6
    }
    @inline(__always) func add(_ i: Int, _ v0: Lanes8, _ v1: Lanes8) {
        let d = UnsafeMutableRawPointer(dx + i * plane)
        d.storeBytes(of: d.loadUnaligned(as: Lanes8.self) + v0, as: Lanes8.self)
        d.storeBytes(of: d.loadUnaligned(fromByteOffset: 32, as: Lanes8.self) + v1, toByteOffset: 32, as: Lanes8.self)
    }
    add(0, a00, a01); add(1, a10, a11); add(2, a20, a21)
    add(3, a30, a31); add(4, a40, a41); add(5, a50, a51)
}

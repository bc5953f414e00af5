/// The position-lane forward of a direct convolution (see Kernels/DirectConvShape.swift): 6 or 8
/// output channels × 48-64 positions (or one channel × 128), one weight broadcast per 3-4
/// multiply-adds.

/// The block shape of the position-lane forward: `rows` output channels (weights broadcast) ×
/// `width` positions. 6 × 64 (`positionLaneForwardBlock`, 10 loads per 24 multiply-adds) unless
/// another shape covers the channels and the span with clearly less waste: 6 × 48 or 8 × 48
/// (`positionLaneForwardBlock3`, `...8x3`; LeNet's second layer, 16 channels over 136 positions,
/// is 100% of two 8-blocks and 94% of three 48-blocks, but 89% of three 6-blocks and 71% of three
/// 64-blocks); 1 × 128 (`positionLaneForwardBlock1`) below 3 channels.
extension DirectConvShape {
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
func positionLanePackWeights(_ s: DirectConvShape, w: (Int, Int) -> Float, into packed: UnsafeMutablePointer<Float>) {
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
func positionLaneForwardImage(_ s: DirectConvShape, xpad: UnsafePointer<Float>, packed: UnsafePointer<Float>,
                              offsets: UnsafePointer<Int32>, bias: UnsafePointer<Float>?,
                              y: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
    let taps = s.taps, blocks = s.positionBlocks, width = s.positionWidth, rows = s.positionRows
    let rowStride = blocks * width, outPlane = s.outH * s.outW
    // Position blocks outside, channel blocks inside: the input rows a position block reads (all
    // input channels) stay in L1 while every channel block uses them; the packed weights, a few
    // bytes per multiply-add, stream from L2 instead (for 64 -> 64 channels, 3 x 3, the other order
    // re-read ~300 KiB of input per channel block).
    // A narrow register file (AVX2) computes each block as sub-blocks (bit-identical results).
    let narrow = directConvRegisterFile == .narrow
    for qb in 0..<blocks {
        for block in 0..<s.positionChannelBlocks {
            let wb = packed + block * taps * rows
            let out = scratch + block * rows * rowStride + qb * width
            if narrow {
                positionLaneNarrowBlock(rows: rows, width: width, taps: taps, offsets: offsets, x: xpad + qb * width,
                                        packed: wb, out: out, rowStride: rowStride)
            } else if s.positionSingle {
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

/// Direct convolution in Double for stride 1 without dilation (LeNet's 5x5 layers in float64):
/// forward, input gradient and weight gradient in SIMD4<Double> register blocks sized for AVX2's
/// 16 ymm registers (12 accumulators, the rest for operands). Chosen by `conv2dUsesDoubleDirect`
/// from Ops/Convolution.swift; the generic im2col + GEMM path it replaces ran LeNet's float64
/// convolutions at 1.0-1.3x PyTorch's speed (bench/layers.py --dtype float64), the direct forward
/// at about 2x.
///
/// Each image is first copied into a zero-padded scratch whose rows are wide enough that every
/// output row is a whole number of 4-lane vectors (`DoubleDirectLayout`); the output is computed
/// in a scratch of that padded width and copied out. With the output flattened as vectors
/// v = i * vectorsPerRow + jv, vector v sits at offset 4v of its output plane and reads its
/// input at `inputOffset(v) = i * paddedInW + 4 * jv` (+ the kernel tap's offset).
///
///     forward:   y[k, i, j]  = b[k] + Σ_{c,r,s} xp[c, i + r, j + s] · w[k, c, r, s]
///     dx:        dcol[(c,r,s), i, j] = Σ_k w[k, c, r, s] · g[k, i, j]   (the forward's blocks with a
///                1x1 kernel, K in, C*kH*kW out), then dx[c, i + r - ph, j + s - pw] += dcol[(c,r,s), i, j]
///                (col2im, in place of the full correlation with the rotated filter, which for LeNet's
///                second layer does 2.25x the multiply-adds: 12x12 outputs over a 16x16 padded g)
///     dw:        dw[k, c, r, s] = Σ_{n, i, j} g[n, k, i, j] · xp[n, c, i + r, j + s]
///
/// (xp: x padded by ph, pw.) Deterministic: images run in fixed chunks, each chunk's weight
/// gradient is summed image by image in order, and the chunks' partial sums are added in chunk order.

@usableFromInline typealias DoubleLanes = SIMD4<Double>

/// The scratch layout of one image for the Double direct kernels: input channels padded into rows
/// of `paddedInW`, output planes of `rowsOut` rows of `paddedOutW`, the vector count rounded up to
/// a multiple of 6 so that the 3- and 6-vector blocks need no tail (the extra vectors read zero
/// padding and write scratch rows that are never copied out).
@usableFromInline
struct DoubleDirectLayout {
    @usableFromInline let inChannels, outChannels, kernelH, kernelW, outH, outW: Int
    /// Vectors per output row, ceil(outW / 4), and the padded output row, 4 * vectorsPerRow.
    @usableFromInline let vectorsPerRow, paddedOutW: Int
    /// Real vectors (outH * vectorsPerRow) and the count the kernels compute (a multiple of 6).
    @usableFromInline let vectors, paddedVectors: Int
    /// Rows of an output plane, and of an input plane (rowsOut + kH - 1).
    @usableFromInline let rowsOut, rowsIn: Int
    /// Padded input row: every tap of every padded output vector lies inside it.
    @usableFromInline let paddedInW: Int
    @usableFromInline let planeIn, planeOut: Int
    /// Output channels rounded up to a multiple of 2 for the forward blocks (4 and a last 2), to a
    /// multiple of 4 for the weight gradient's g planes.
    @usableFromInline let forwardChannels, gradChannels: Int

    @inlinable
    init(inChannels: Int, outChannels: Int, kernelH: Int, kernelW: Int, outH: Int, outW: Int) {
        self.inChannels = inChannels; self.outChannels = outChannels
        self.kernelH = kernelH; self.kernelW = kernelW; self.outH = outH; self.outW = outW
        vectorsPerRow = (outW + 3) / 4
        paddedOutW = 4 * vectorsPerRow
        vectors = outH * vectorsPerRow
        paddedVectors = (vectors + 5) / 6 * 6
        rowsOut = (paddedVectors + vectorsPerRow - 1) / vectorsPerRow
        rowsIn = rowsOut + kernelH - 1
        paddedInW = paddedOutW + kernelW - 1
        planeIn = rowsIn * paddedInW
        planeOut = rowsOut * paddedOutW
        forwardChannels = (outChannels + 1) / 2 * 2
        gradChannels = (outChannels + 3) / 4 * 4
    }

    /// Elements of the padded input scratch; the 8 extra cover the weight gradient's discarded taps
    /// past the last row (see `doubleDirectWeightGradImage`).
    @inlinable var inputCount: Int { inChannels * planeIn + 8 }
    @inlinable var outputCount: Int { max(forwardChannels, gradChannels) * planeOut }
    /// Elements of the packed filter (`doubleDirectPackWeight`).
    @inlinable var weightCount: Int { forwardChannels * inChannels * kernelH * kernelW }

    /// Offset of output vector v's first tap in an input plane.
    @inlinable @inline(__always)
    func inputOffset(_ v: Int) -> Int { (v / vectorsPerRow) * paddedInW + (v % vectorsPerRow) * 4 }
}

/// Copies src (C, H, W) into the zeroed padded scratch dst (C, rowsIn, paddedInW) at (top, left).
@inlinable
func doubleDirectPadImage(_ l: DoubleDirectLayout, src: UnsafePointer<Double>, height: Int, width: Int,
                          top: Int, left: Int, dst: UnsafeMutablePointer<Double>) {
    dst.update(repeating: 0, count: l.inputCount)
    for c in 0..<l.inChannels {
        for h in 0..<height {
            (dst + c * l.planeIn + (h + top) * l.paddedInW + left)
                .update(from: src + (c * height + h) * width, count: width)
        }
    }
}

/// Packs a filter wsrc for the forward blocks: for the block of channels starting at k0 (width 4,
/// the last one 2 when forwardChannels % 4 == 2), entries [c][r][s][lane] at k0 * C*kH*kW, lanes
/// beyond outChannels zero. `tap(k, c, r, s)` reads the filter (the forward's weight, or for dx the
/// rotated, transposed one).
@inlinable
func doubleDirectPackWeight(_ l: DoubleDirectLayout, into dst: UnsafeMutablePointer<Double>,
                            tap: (Int, Int, Int, Int) -> Double) {
    let taps = l.inChannels * l.kernelH * l.kernelW
    var k0 = 0
    while k0 < l.forwardChannels {
        let width = l.forwardChannels - k0 >= 4 ? 4 : 2
        var q = dst + k0 * taps
        for c in 0..<l.inChannels {
            for r in 0..<l.kernelH {
                for s in 0..<l.kernelW {
                    for lane in 0..<width {
                        let k = k0 + lane
                        q[lane] = k < l.outChannels ? tap(k, c, r, s) : 0
                    }
                    q += width
                }
            }
        }
        k0 += width
    }
}

/// out[k, v] = Σ_{c,r,s} xp[c, tap] · w[k, c, r, s] over the padded vectors: blocks of 4 channels
/// × 3 vectors (12 accumulators; per tap 3 vector loads and 4 broadcasts for 12 multiply-adds),
/// and for a last pair of channels 2 × 6 vectors.
///
///     xp (C, rowsIn, paddedInW), packed (`doubleDirectPackWeight`) -> out (forwardChannels, planeOut)
@inlinable
func doubleDirectForwardImage(_ l: DoubleDirectLayout, xp: UnsafePointer<Double>, packed: UnsafePointer<Double>,
                              out: UnsafeMutablePointer<Double>) {
    let taps = l.inChannels * l.kernelH * l.kernelW
    var k0 = 0
    while k0 < l.forwardChannels {
        let w0 = packed + k0 * taps
        if l.forwardChannels - k0 >= 4 {
            var v = 0
            while v < l.paddedVectors {
                doubleDirectBlock4x3(l, xp: xp, w: w0, o0: l.inputOffset(v), o1: l.inputOffset(v + 1),
                                     o2: l.inputOffset(v + 2), out: out + k0 * l.planeOut + 4 * v)
                v += 3
            }
            k0 += 4
        } else {
            var v = 0
            while v < l.paddedVectors {
                doubleDirectBlock2x6(l, xp: xp, w: w0, v: v, out: out + k0 * l.planeOut + 4 * v)
                v += 6
            }
            k0 += 2
        }
    }
}

@inlinable @inline(__always)
func loadLanes(_ p: UnsafePointer<Double>) -> DoubleLanes {
    UnsafeRawPointer(p).loadUnaligned(as: DoubleLanes.self)
}

@inlinable @inline(__always)
func storeLanes(_ v: DoubleLanes, _ p: UnsafeMutablePointer<Double>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: DoubleLanes.self)
}

/// 4 output channels × 3 vectors (at input offsets o0, o1, o2; out at 0, 4, 8 of each plane).
@inlinable
func doubleDirectBlock4x3(_ l: DoubleDirectLayout, xp: UnsafePointer<Double>, w: UnsafePointer<Double>,
                          o0: Int, o1: Int, o2: Int, out: UnsafeMutablePointer<Double>) {
    var a00 = DoubleLanes(), a01 = DoubleLanes(), a02 = DoubleLanes()
    var a10 = DoubleLanes(), a11 = DoubleLanes(), a12 = DoubleLanes()
    var a20 = DoubleLanes(), a21 = DoubleLanes(), a22 = DoubleLanes()
    var a30 = DoubleLanes(), a31 = DoubleLanes(), a32 = DoubleLanes()
    var q = w
    for c in 0..<l.inChannels {
        for r in 0..<l.kernelH {
            let row = xp + c * l.planeIn + r * l.paddedInW
            for s in 0..<l.kernelW {
                let x0 = loadLanes(row + o0 + s), x1 = loadLanes(row + o1 + s), x2 = loadLanes(row + o2 + s)
                let b0 = DoubleLanes(repeating: q[0]), b1 = DoubleLanes(repeating: q[1])
                a00 = multiplyAdd(x0, b0, a00); a01 = multiplyAdd(x1, b0, a01); a02 = multiplyAdd(x2, b0, a02)
                a10 = multiplyAdd(x0, b1, a10); a11 = multiplyAdd(x1, b1, a11); a12 = multiplyAdd(x2, b1, a12)
                let b2 = DoubleLanes(repeating: q[2]), b3 = DoubleLanes(repeating: q[3])
                a20 = multiplyAdd(x0, b2, a20); a21 = multiplyAdd(x1, b2, a21); a22 = multiplyAdd(x2, b2, a22)
                a30 = multiplyAdd(x0, b3, a30); a31 = multiplyAdd(x1, b3, a31); a32 = multiplyAdd(x2, b3, a32)
                q += 4
            }
        }
    }
    let p = l.planeOut
    storeLanes(a00, out); storeLanes(a01, out + 4); storeLanes(a02, out + 8)
    storeLanes(a10, out + p); storeLanes(a11, out + p + 4); storeLanes(a12, out + p + 8)
    storeLanes(a20, out + 2 * p); storeLanes(a21, out + 2 * p + 4); storeLanes(a22, out + 2 * p + 8)
    storeLanes(a30, out + 3 * p); storeLanes(a31, out + 3 * p + 4); storeLanes(a32, out + 3 * p + 8)
}

/// 2 output channels × 6 vectors v ..< v+6 (per tap 6 vector loads and 2 broadcasts for 12
/// multiply-adds): the last pair of channels of the forward blocks.
@inlinable
func doubleDirectBlock2x6(_ l: DoubleDirectLayout, xp: UnsafePointer<Double>, w: UnsafePointer<Double>,
                          v: Int, out: UnsafeMutablePointer<Double>) {
    let o0 = l.inputOffset(v), o1 = l.inputOffset(v + 1), o2 = l.inputOffset(v + 2)
    let o3 = l.inputOffset(v + 3), o4 = l.inputOffset(v + 4), o5 = l.inputOffset(v + 5)
    var a00 = DoubleLanes(), a01 = DoubleLanes(), a02 = DoubleLanes()
    var a03 = DoubleLanes(), a04 = DoubleLanes(), a05 = DoubleLanes()
    var a10 = DoubleLanes(), a11 = DoubleLanes(), a12 = DoubleLanes()
    var a13 = DoubleLanes(), a14 = DoubleLanes(), a15 = DoubleLanes()
    var q = w
    for c in 0..<l.inChannels {
        for r in 0..<l.kernelH {
            let row = xp + c * l.planeIn + r * l.paddedInW
            for s in 0..<l.kernelW {
                let b0 = DoubleLanes(repeating: q[0]), b1 = DoubleLanes(repeating: q[1])
                let x0 = loadLanes(row + o0 + s), x1 = loadLanes(row + o1 + s), x2 = loadLanes(row + o2 + s)
                a00 = multiplyAdd(x0, b0, a00); a01 = multiplyAdd(x1, b0, a01); a02 = multiplyAdd(x2, b0, a02)
                a10 = multiplyAdd(x0, b1, a10); a11 = multiplyAdd(x1, b1, a11); a12 = multiplyAdd(x2, b1, a12)
                let x3 = loadLanes(row + o3 + s), x4 = loadLanes(row + o4 + s), x5 = loadLanes(row + o5 + s)
                a03 = multiplyAdd(x3, b0, a03); a04 = multiplyAdd(x4, b0, a04); a05 = multiplyAdd(x5, b0, a05)
                a13 = multiplyAdd(x3, b1, a13); a14 = multiplyAdd(x4, b1, a14); a15 = multiplyAdd(x5, b1, a15)
                q += 2
            }
        }
    }
    let p = l.planeOut
    storeLanes(a00, out); storeLanes(a01, out + 4); storeLanes(a02, out + 8)
    storeLanes(a03, out + 12); storeLanes(a04, out + 16); storeLanes(a05, out + 20)
    storeLanes(a10, out + p); storeLanes(a11, out + p + 4); storeLanes(a12, out + p + 8)
    storeLanes(a13, out + p + 12); storeLanes(a14, out + p + 16); storeLanes(a15, out + p + 20)
}

/// Copies the real part of the output scratch (forwardChannels, rowsOut, paddedOutW) to
/// dst (outChannels, outH, outW), adding bias[k] when given.
@inlinable
func doubleDirectCopyOut(_ l: DoubleDirectLayout, out: UnsafePointer<Double>, bias: UnsafePointer<Double>?,
                         dst: UnsafeMutablePointer<Double>) {
    for k in 0..<l.outChannels {
        let b = bias?[k] ?? 0
        for i in 0..<l.outH {
            let from = out + k * l.planeOut + i * l.paddedOutW, to = dst + (k * l.outH + i) * l.outW
            for j in 0..<l.outW { to[j] = from[j] + b }
        }
    }
}

/// Spreads g (K, outH, outW) into gs (gradChannels, rowsOut, paddedOutW) with zeros in the padded
/// columns and the extra channels (only the first `vectors` of each plane are read).
@inlinable
func doubleDirectSpreadGrad(_ l: DoubleDirectLayout, g: UnsafePointer<Double>, gs: UnsafeMutablePointer<Double>) {
    for k in 0..<l.gradChannels {
        let plane = gs + k * l.planeOut
        if k >= l.outChannels { plane.update(repeating: 0, count: l.vectors * 4); continue }
        for i in 0..<l.outH {
            let row = plane + i * l.paddedOutW
            row.update(from: g + (k * l.outH + i) * l.outW, count: l.outW)
            (row + l.outW).update(repeating: 0, count: l.paddedOutW - l.outW)
        }
    }
}

/// dw[k, c, r, s] += Σ_{i,j} g[k, i, j] · xp[c, i + r, j + s] for one image: blocks of 4 channels ×
/// 3 taps s (12 accumulators over the 4 position lanes; per vector 4 g loads and 3 x loads for 12
/// multiply-adds), each accumulator summed across its lanes at the end. Taps s >= kW of the last
/// block of 3 are computed on whatever lies right of the row (zero padding, the next row, or the
/// 8-element slack after the last plane) and discarded.
///
///     xp (C, rowsIn, paddedInW), gs (`doubleDirectSpreadGrad`) -> dw (K, C, kH, kW), added to
@inlinable
func doubleDirectWeightGradImage(_ l: DoubleDirectLayout, xp: UnsafePointer<Double>, gs: UnsafePointer<Double>,
                                 dw: UnsafeMutablePointer<Double>) {
    for k0 in stride(from: 0, to: l.gradChannels, by: 4) {
        let g0 = gs + k0 * l.planeOut, p = l.planeOut
        for c in 0..<l.inChannels {
            for r in 0..<l.kernelH {
                var s0 = 0
                while s0 < l.kernelW {
                    var a00 = DoubleLanes(), a01 = DoubleLanes(), a02 = DoubleLanes()
                    var a10 = DoubleLanes(), a11 = DoubleLanes(), a12 = DoubleLanes()
                    var a20 = DoubleLanes(), a21 = DoubleLanes(), a22 = DoubleLanes()
                    var a30 = DoubleLanes(), a31 = DoubleLanes(), a32 = DoubleLanes()
                    let base = xp + c * l.planeIn + r * l.paddedInW + s0
                    for i in 0..<l.outH {
                        let xrow = base + i * l.paddedInW
                        let grow = g0 + i * l.paddedOutW
                        for jv in 0..<l.vectorsPerRow {
                            let xo = xrow + 4 * jv, go = grow + 4 * jv
                            let x0 = loadLanes(xo), x1 = loadLanes(xo + 1), x2 = loadLanes(xo + 2)
                            let gA = loadLanes(go), gB = loadLanes(go + p)
                            a00 = multiplyAdd(gA, x0, a00); a01 = multiplyAdd(gA, x1, a01); a02 = multiplyAdd(gA, x2, a02)
                            a10 = multiplyAdd(gB, x0, a10); a11 = multiplyAdd(gB, x1, a11); a12 = multiplyAdd(gB, x2, a12)
                            let gC = loadLanes(go + 2 * p), gD = loadLanes(go + 3 * p)
                            a20 = multiplyAdd(gC, x0, a20); a21 = multiplyAdd(gC, x1, a21); a22 = multiplyAdd(gC, x2, a22)
                            a30 = multiplyAdd(gD, x0, a30); a31 = multiplyAdd(gD, x1, a31); a32 = multiplyAdd(gD, x2, a32)
                        }
                    }
                    let d = dw + ((k0 * l.inChannels + c) * l.kernelH + r) * l.kernelW + s0
                    let kStride = l.inChannels * l.kernelH * l.kernelW, taps = min(3, l.kernelW - s0)
                    let live = min(4, l.outChannels - k0)
                    doubleDirectAddSums(d, taps: taps, a00, a01, a02)
                    if live > 1 { doubleDirectAddSums(d + kStride, taps: taps, a10, a11, a12) }
                    if live > 2 { doubleDirectAddSums(d + 2 * kStride, taps: taps, a20, a21, a22) }
                    if live > 3 { doubleDirectAddSums(d + 3 * kStride, taps: taps, a30, a31, a32) }
                    s0 += 3
                }
            }
        }
    }
}

/// d[t] += (lane sum of u_t) for the first `taps` of the three accumulators.
@inlinable @inline(__always)
func doubleDirectAddSums(_ d: UnsafeMutablePointer<Double>, taps: Int, _ u0: DoubleLanes, _ u1: DoubleLanes,
                         _ u2: DoubleLanes) {
    d[0] += u0.sum()
    if taps > 1 { d[1] += u1.sum() }
    if taps > 2 { d[2] += u2.sum() }
}

// MARK: - dispatch

/// Whether conv2d in Double runs on these kernels: stride 1, no dilation, not 1x1 (the GEMM reads
/// x directly there), and few enough taps per output (C*kH*kW and K*kH*kW <= 400, LeNet's layers:
/// one image's padded input, dcol and output scratch then stay in L2 while the channel blocks sweep
/// them; larger layers keep the im2col + GEMM path, whose packing amortizes over their many channels).
@inlinable
func conv2dUsesDoubleDirect(_ g: Conv2DGeometry) -> Bool {
    g.strideH == 1 && g.strideW == 1 && g.dilationH == 1 && g.dilationW == 1
        && g.kernelH * g.kernelW > 1
        && g.inChannels * g.kernelH * g.kernelW <= 400 && g.outChannels * g.kernelH * g.kernelW <= 400
}

/// Image chunks for the Double direct kernels: one per thread once there is at least a million
/// multiply-adds per thread, never more than the batch.
@inlinable
func doubleDirectChunks(_ g: Conv2DGeometry) -> Int {
    let work = min(Double(g.batch) * Double(g.outChannels) * Double(g.colCount), 1e15)
    return min(g.batch, parallelChunks(work: Int(work), minPerThread: 1_000_000))
}

/// The forward's layout: C in, K out, output (Ho, Wo).
@inlinable
func doubleDirectForwardLayout(_ g: Conv2DGeometry) -> DoubleDirectLayout {
    DoubleDirectLayout(inChannels: g.inChannels, outChannels: g.outChannels, kernelH: g.kernelH,
                       kernelW: g.kernelW, outH: g.outH, outW: g.outW)
}

/// dx's dcol layout: K in, C*kH*kW out, a 1x1 kernel over g's (Ho, Wo).
@inlinable
func doubleDirectGradInputLayout(_ g: Conv2DGeometry) -> DoubleDirectLayout {
    DoubleDirectLayout(inChannels: g.outChannels, outChannels: g.colRows, kernelH: 1, kernelW: 1,
                       outH: g.outH, outW: g.outW)
}

/// dx (C, H, W) = col2im(dcol): dx[c, i + r - ph, j + s - pw] += dcol[(c*kH + r)*kW + s, i, j] over
/// the taps that land inside the image, dcol in the scratch layout `l` (rows of paddedOutW).
/// Overwrites dx. Each (c, r, s, i) adds one contiguous run of j: vectorized by the compiler.
@inlinable
func doubleDirectCol2Im(_ g: Conv2DGeometry, _ l: DoubleDirectLayout, dcol: UnsafePointer<Double>,
                        dx: UnsafeMutablePointer<Double>) {
    dx.update(repeating: 0, count: g.inChannels * g.height * g.width)
    for c in 0..<g.inChannels {
        for r in 0..<g.kernelH {
            for s in 0..<g.kernelW {
                let q = (c * g.kernelH + r) * g.kernelW + s
                let jLo = max(0, g.padW - s), jHi = min(g.outW, g.width + g.padW - s)
                if jLo >= jHi { continue }
                for i in 0..<g.outH {
                    let h = i + r - g.padH
                    if h < 0 || h >= g.height { continue }
                    let src = dcol + q * l.planeOut + i * l.paddedOutW
                    let dst = dx + (c * g.height + h) * g.width + s - g.padW
                    for j in jLo..<jHi { dst[j] += src[j] }
                }
            }
        }
    }
}

/// y = conv2d(x, weight, bias) for `conv2dUsesDoubleDirect` geometries, then the epilogue.
/// Throws `.memory` (scratch, from `workspace`).
///
///     x (N, C, H, W), weight (K, C, kH, kW), bias (K) or nil  ->  y (N, K, Ho, Wo), overwritten
@inlinable
func conv2dForwardDoubleDirect(_ g: Conv2DGeometry, x: UnsafePointer<Double>, weight: UnsafePointer<Double>,
                               bias: UnsafePointer<Double>?, y: UnsafeMutablePointer<Double>,
                               epilogue: ConvEpilogue, workspace: ScratchSlots<Double>) throws {
    let l = doubleDirectForwardLayout(g)
    let chunks = doubleDirectChunks(g)
    let packed = try workspace.buffer(0, count: l.weightCount)
    let (kc, c, kh, kw) = (g.inChannels * g.kernelH * g.kernelW, g.inChannels, g.kernelH, g.kernelW)
    doubleDirectPackWeight(l, into: packed) { k, ci, r, s in weight[k * kc + (ci * kh + r) * kw + s] }
    var xps: [UnsafeMutablePointer<Double>] = [], outs: [UnsafeMutablePointer<Double>] = []
    for t in 0..<chunks {
        xps.append(try workspace.buffer(1 + 2 * t, count: l.inputCount))
        outs.append(try workspace.buffer(2 + 2 * t, count: l.outputCount))
    }
    let xStride = c * g.height * g.width, yStride = g.outChannels * g.outH * g.outW
    parallelFor(chunks) { chunk in
        for n in chunkRange(chunk, of: chunks, total: g.batch) {
            doubleDirectPadImage(l, src: x + n * xStride, height: g.height, width: g.width,
                                 top: g.padH, left: g.padW, dst: xps[chunk])
            doubleDirectForwardImage(l, xp: xps[chunk], packed: packed, out: outs[chunk])
            doubleDirectCopyOut(l, out: outs[chunk], bias: bias, dst: y + n * yStride)
            applyEpilogue(epilogue, y + n * yStride, count: yStride)
        }
    }
}

/// dw and dx of conv2d for `conv2dUsesDoubleDirect` geometries (the bias gradient is the caller's).
/// Throws `.memory`.
///
///     gradOut (N, K, Ho, Wo), x (N, C, H, W), weight (K, C, kH, kW)
///     -> gradWeight (K, C, kH, kW) overwritten or added to (`accumulate`); gradX (N, C, H, W) overwritten
@inlinable
func conv2dBackwardDoubleDirect(_ g: Conv2DGeometry, gradOut: UnsafePointer<Double>, x: UnsafePointer<Double>,
                                weight: UnsafePointer<Double>, gradX: UnsafeMutablePointer<Double>?,
                                gradWeight: UnsafeMutablePointer<Double>?, accumulate: Bool,
                                workspace: ScratchSlots<Double>) throws {
    let lf = doubleDirectForwardLayout(g), lx = doubleDirectGradInputLayout(g)
    let chunks = doubleDirectChunks(g)
    let kc = g.colRows
    let wCount = g.outChannels * kc
    // Slot 0: dx's filter, Wᵀ: "output channel" q = (c, r, s), "input channel" k, w[k, q].
    let packed = try workspace.buffer(0, count: lx.weightCount)
    if gradX != nil {
        doubleDirectPackWeight(lx, into: packed) { q, k, _, _ in weight[k * kc + q] }
    }
    // Per chunk: padded x, spread g, g in dcol's input layout, dcol, partial dw.
    var xps: [UnsafeMutablePointer<Double>] = [], gss: [UnsafeMutablePointer<Double>] = []
    var gps: [UnsafeMutablePointer<Double>] = [], outs: [UnsafeMutablePointer<Double>] = []
    var dws: [UnsafeMutablePointer<Double>] = []
    for t in 0..<chunks {
        let base = 1 + 5 * t
        if gradWeight != nil {
            xps.append(try workspace.buffer(base, count: lf.inputCount))
            gss.append(try workspace.buffer(base + 1, count: lf.outputCount))
            dws.append(try workspace.buffer(base + 4, count: wCount))
        }
        if gradX != nil {
            gps.append(try workspace.buffer(base + 2, count: lx.inputCount))
            outs.append(try workspace.buffer(base + 3, count: lx.outputCount))
        }
    }
    let xStride = g.inChannels * g.height * g.width, yStride = g.outChannels * g.outH * g.outW
    parallelFor(chunks) { chunk in
        if gradWeight != nil { dws[chunk].update(repeating: 0, count: wCount) }
        for n in chunkRange(chunk, of: chunks, total: g.batch) {
            let gn = gradOut + n * yStride
            if gradWeight != nil {
                doubleDirectPadImage(lf, src: x + n * xStride, height: g.height, width: g.width,
                                     top: g.padH, left: g.padW, dst: xps[chunk])
                doubleDirectSpreadGrad(lf, g: gn, gs: gss[chunk])
                doubleDirectWeightGradImage(lf, xp: xps[chunk], gs: gss[chunk], dw: dws[chunk])
            }
            if let gradX {
                doubleDirectPadImage(lx, src: gn, height: g.outH, width: g.outW, top: 0, left: 0, dst: gps[chunk])
                doubleDirectForwardImage(lx, xp: gps[chunk], packed: packed, out: outs[chunk])
                doubleDirectCol2Im(g, lx, dcol: outs[chunk], dx: gradX + n * xStride)
            }
        }
    }
    if let gradWeight {
        // dw (+)= Σ_chunks partial_chunk, chunks in order.
        for q in 0..<wCount {
            var sum = accumulate ? gradWeight[q] : 0
            for t in 0..<chunks { sum += dws[t][q] }
            gradWeight[q] = sum
        }
    }
}

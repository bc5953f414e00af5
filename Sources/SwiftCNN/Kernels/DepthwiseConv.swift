/// Depthwise convolution: groups == in_channels == out_channels (one kH × kW filter per channel),
/// stride 1, no dilation, any padding; Float and Double.
///
///     x (N, C, H, W), weight (C, 1, kH, kW), bias (C)?  ->  y (N, C, Ho, Wo)
///     y[n,c,i,j]   = b[c] + sum_{r,s} w[c,r,s] * xp[n,c,i+r,j+s]         (xp: x zero-padded by ph, pw)
///
/// Backward, with g = dL/dy:
///
///     dL/db[c]     = sum_{n,i,j} g[n,c,i,j]
///     dL/dw[c,r,s] = sum_{n,i,j} g[n,c,i,j] * xp[n,c,i+r,j+s]
///     dL/dx[n,c,h,w] = sum_{r,s} w[c,r,s] * g[n,c,h+ph-r,w+pw-s]  (g zero outside its bounds)
///                    = sum_{r',s'} w[c,kH-1-r',kW-1-s'] * gp[n,c,h+ph+r',w+pw+s']
///
/// with gp = g zero-padded by kH-1 rows and kW-1 columns on every side (the last line: r' = kH-1-r;
/// h+ph+r' stays inside gp for every h < H because H+ph < Ho+kH). So all three are one primitive:
/// a single-channel correlation of a zero-padded plane with a small filter
/// (`depthwisePlaneCorrelate`), and a per-plane tap sum (`depthwisePlaneWeightGrad`).
///
/// The grouped path (Ops/GroupedConv2D.swift) gathers each group's channels into a copy and runs
/// the general kernels on one channel at a time: C calls, each a convolution with one input and
/// one output channel, where the blocked kernels' register tiles are nearly empty. Here every plane
/// is padded once and swept by 8-wide vectors.
///
/// Threads: the forward and dx run whole (n, c) planes in parallel chunks; dw and db run channels
/// in parallel chunks, each channel summing its images in order (`n = 0, 1, ...`), so every output
/// element is the same chain of operations whatever the thread count (bit-identical across thread
/// counts). The naive loops at the end are the test oracle.

/// Whether the depthwise kernels compute this grouped convolution.
@inlinable
func depthwiseConvApplies(_ g: GroupedConv2DGeometry) -> Bool {
    let gi = g.group
    return g.groups > 1 && g.groups == g.inChannels && g.outChannels == g.inChannels
        && gi.strideH == 1 && gi.strideW == 1 && gi.dilationH == 1 && gi.dilationW == 1
        && g.extraBottom == 0 && g.extraRight == 0 && gi.batch > 0 && gi.outH > 0 && gi.outW > 0
        && gi.height > 0 && gi.width > 0
}

/// Positions per block of the plane sweep: 4 vectors of 8 (4 independent multiply-add chains).
@usableFromInline let depthwiseBlock = 32

/// The zero-padded plane layout of one correlation: `rows` × `stride` elements plus slack for the
/// last block's reads past the row (up to `depthwiseBlock` + kW elements).
@usableFromInline
struct DepthwisePlane {
    @usableFromInline let rows: Int, stride: Int, kernelW: Int
    @inlinable init(rows: Int, stride: Int, kernelW: Int) { (self.rows, self.stride, self.kernelW) = (rows, stride, kernelW) }
    @inlinable var count: Int { rows * stride + depthwiseBlock + kernelW + 8 }
}

/// Copies an h × w plane into `dst` (a `DepthwisePlane` of `stride`, zeroed borders) at (top, left).
@inlinable
func depthwiseCopyPadded<T: CNNScalar>(_ src: UnsafePointer<T>, height h: Int, width w: Int, top: Int, left: Int,
                                       stride: Int, dst: UnsafeMutablePointer<T>) {
    for row in 0..<h { (dst + (top + row) * stride + left).update(from: src + row * w, count: w) }
}

/// out[i, j] = initial + sum_{r,s} filter[r*kW + s] * plane[(i + r0 + r) * stride + j + c0 + s]
/// for i < outH, j < outW (out rows `outW` apart). Each output is one chain of multiply-adds in
/// (r, s) order starting from `initial`. `row` is scratch of `depthwiseBlock` elements.
@inlinable
func depthwisePlaneCorrelate<T: CNNScalar>(plane: UnsafePointer<T>, stride: Int, r0: Int, c0: Int,
                                           filter: UnsafePointer<T>, kH: Int, kW: Int, initial: T,
                                           out: UnsafeMutablePointer<T>, outH: Int, outW: Int,
                                           row: UnsafeMutablePointer<T>) {
    typealias V = SIMD8<T>
    let size = MemoryLayout<T>.stride
    let full = outW / depthwiseBlock * depthwiseBlock
    for i in 0..<outH {
        var j0 = 0
        while j0 < outW {
            let base = UnsafeRawPointer(plane + (i + r0) * stride + c0 + j0)
            var a0 = V(repeating: initial), a1 = a0, a2 = a0, a3 = a0
            for r in 0..<kH {
                let p = base + r * stride * size
                for s in 0..<kW {
                    let w = V(repeating: filter[r * kW + s])
                    let q = p + s * size
                    a0 = multiplyAdd(q.loadUnaligned(as: V.self), w, a0)
                    a1 = multiplyAdd(q.loadUnaligned(fromByteOffset: 8 * size, as: V.self), w, a1)
                    a2 = multiplyAdd(q.loadUnaligned(fromByteOffset: 16 * size, as: V.self), w, a2)
                    a3 = multiplyAdd(q.loadUnaligned(fromByteOffset: 24 * size, as: V.self), w, a3)
                }
            }
            // A full block stores straight into the output row; the last partial one goes through
            // `row` (its lanes past outW read the padding or the next row and are dropped).
            let dst = j0 < full ? UnsafeMutableRawPointer(out + i * outW + j0) : UnsafeMutableRawPointer(row)
            dst.storeBytes(of: a0, as: V.self)
            dst.storeBytes(of: a1, toByteOffset: 8 * size, as: V.self)
            dst.storeBytes(of: a2, toByteOffset: 16 * size, as: V.self)
            dst.storeBytes(of: a3, toByteOffset: 24 * size, as: V.self)
            if j0 >= full { (out + i * outW + j0).update(from: row, count: outW - j0) }
            j0 += depthwiseBlock
        }
    }
}

/// acc[t] += sum_{i,j} gq[i * gStride + j] * plane[(i + r) * stride + j + s] for every tap t = (r, s),
/// i < outH, j < gStride, as 8 lanes: per tap, four interleaved vector chains (each row's
/// vectors 4 at a time, the rest into the first chain), added lane-wise. `gq` holds g with rows `gStride` (a multiple of 8) apart, zero
/// past outW, so the lanes past the row contribute zeros (times the finite padding or the next row).
@inlinable
func depthwisePlaneWeightGrad<T: CNNScalar>(plane: UnsafePointer<T>, stride: Int, gq: UnsafePointer<T>, gStride: Int,
                                            outH: Int, kH: Int, kW: Int, acc: UnsafeMutablePointer<SIMD8<T>>) {
    typealias V = SIMD8<T>
    let size = MemoryLayout<T>.stride
    let vectors = gStride / 8
    let graw = UnsafeRawPointer(gq)
    for r in 0..<kH {
        for s in 0..<kW {
            let xraw = UnsafeRawPointer(plane + r * stride + s)
            var a = (V(repeating: 0), V(repeating: 0), V(repeating: 0), V(repeating: 0))
            for i in 0..<outH {
                let gi = graw + i * gStride * size, xi = xraw + i * stride * size
                var v = 0
                while v + 4 <= vectors {
                    a.0 = multiplyAdd(gi.loadUnaligned(fromByteOffset: 8 * v * size, as: V.self),
                                      xi.loadUnaligned(fromByteOffset: 8 * v * size, as: V.self), a.0)
                    a.1 = multiplyAdd(gi.loadUnaligned(fromByteOffset: 8 * (v + 1) * size, as: V.self),
                                      xi.loadUnaligned(fromByteOffset: 8 * (v + 1) * size, as: V.self), a.1)
                    a.2 = multiplyAdd(gi.loadUnaligned(fromByteOffset: 8 * (v + 2) * size, as: V.self),
                                      xi.loadUnaligned(fromByteOffset: 8 * (v + 2) * size, as: V.self), a.2)
                    a.3 = multiplyAdd(gi.loadUnaligned(fromByteOffset: 8 * (v + 3) * size, as: V.self),
                                      xi.loadUnaligned(fromByteOffset: 8 * (v + 3) * size, as: V.self), a.3)
                    v += 4
                }
                while v < vectors {
                    a.0 = multiplyAdd(gi.loadUnaligned(fromByteOffset: 8 * v * size, as: V.self),
                                      xi.loadUnaligned(fromByteOffset: 8 * v * size, as: V.self), a.0)
                    v += 1
                }
            }
            acc[r * kW + s] += (a.0 + a.1) + (a.2 + a.3)
        }
    }
}

/// Forward: y = depthwise conv2d(x, weight, bias). Throws `.memory` (scratch).
///
///     x (N, C, H, W), weight (C, 1, kH, kW), bias (C)?  ->  y (N, C, Ho, Wo), overwritten
@inlinable
func depthwiseConv2dForward<T: CNNScalar>(_ g: GroupedConv2DGeometry, x: UnsafePointer<T>, weight: UnsafePointer<T>,
                                          bias: UnsafePointer<T>?, y: UnsafeMutablePointer<T>,
                                          workspace: ScratchSlots<T>) throws {
    let gi = g.group
    let (C, H, W, kH, kW) = (g.inChannels, g.height, g.width, gi.kernelH, gi.kernelW)
    let (Ho, Wo) = (gi.outH, gi.outW)
    let layout = DepthwisePlane(rows: H + 2 * gi.padH, stride: W + 2 * gi.padW, kernelW: kW)
    let planes = g.batch * C
    let work = Int(min(2 * Double(planes) * Double(Ho * Wo) * Double(kH * kW), 1e15))
    let chunks = min(planes, parallelChunks(work: work, minPerThread: 200_000))
    var pads: [UnsafeMutablePointer<T>] = [], rows: [UnsafeMutablePointer<T>] = []
    for chunk in 0..<chunks {
        pads.append(try workspace.buffer(2 * chunk, count: layout.count))
        rows.append(try workspace.buffer(2 * chunk + 1, count: depthwiseBlock))
    }
    parallelFor(chunks) { chunk in
        let pad = pads[chunk]
        pad.update(repeating: 0, count: layout.count)   // borders and slack stay zero
        for p in chunkRange(chunk, of: chunks, total: planes) {
            let c = p % C
            depthwiseCopyPadded(x + p * H * W, height: H, width: W, top: gi.padH, left: gi.padW,
                                stride: layout.stride, dst: pad)
            depthwisePlaneCorrelate(plane: pad, stride: layout.stride, r0: 0, c0: 0, filter: weight + c * kH * kW,
                                    kH: kH, kW: kW, initial: bias?[c] ?? 0, out: y + p * Ho * Wo,
                                    outH: Ho, outW: Wo, row: rows[chunk])
        }
    }
}

/// Backward: any of gradX, gradWeight, gradBias may be nil. gradWeight and gradBias are added into
/// with `accumulate`, else overwritten; gradX is overwritten. Throws `.memory` (scratch).
///
///     gradOut (N, C, Ho, Wo), x (N, C, H, W), weight (C, 1, kH, kW)
///     -> gradX (N, C, H, W)?, gradWeight (C, 1, kH, kW)?, gradBias (C)?
///
/// Formulas in the file comment. dx: per (n, c) plane, the correlation of g padded by (kH-1, kW-1)
/// with the rotated filter, read from offset (ph, pw). dw, db: per channel, images in order.
@inlinable
func depthwiseConv2dBackward<T: CNNScalar>(_ g: GroupedConv2DGeometry, gradOut: UnsafePointer<T>, x: UnsafePointer<T>,
                                           weight: UnsafePointer<T>, gradX: UnsafeMutablePointer<T>?,
                                           gradWeight: UnsafeMutablePointer<T>?, gradBias: UnsafeMutablePointer<T>?,
                                           accumulate: Bool, workspace: ScratchSlots<T>) throws {
    let gi = g.group
    let (C, H, W, kH, kW) = (g.inChannels, g.height, g.width, gi.kernelH, gi.kernelW)
    let (Ho, Wo, taps) = (gi.outH, gi.outW, gi.kernelH * gi.kernelW)
    let planes = g.batch * C
    let work = Int(min(4 * Double(planes) * Double(Ho * Wo) * Double(taps), 1e15))
    if let gradX {
        // dx planes: g padded by (kH-1, kW-1), the filter rotated by 180 degrees.
        let layout = DepthwisePlane(rows: Ho + 2 * (kH - 1), stride: Wo + 2 * (kW - 1), kernelW: kW)
        let rotated = try workspace.buffer(0, count: C * taps)
        for c in 0..<C {
            for t in 0..<taps { rotated[c * taps + t] = weight[c * taps + (taps - 1 - t)] }
        }
        let chunks = min(planes, parallelChunks(work: work / 2, minPerThread: 200_000))
        var pads: [UnsafeMutablePointer<T>] = [], rows: [UnsafeMutablePointer<T>] = []
        for chunk in 0..<chunks {
            pads.append(try workspace.buffer(1 + 2 * chunk, count: layout.count))
            rows.append(try workspace.buffer(2 + 2 * chunk, count: depthwiseBlock))
        }
        parallelFor(chunks) { chunk in
            let pad = pads[chunk]
            pad.update(repeating: 0, count: layout.count)
            for p in chunkRange(chunk, of: chunks, total: planes) {
                let c = p % C
                depthwiseCopyPadded(gradOut + p * Ho * Wo, height: Ho, width: Wo, top: kH - 1, left: kW - 1,
                                    stride: layout.stride, dst: pad)
                depthwisePlaneCorrelate(plane: pad, stride: layout.stride, r0: gi.padH, c0: gi.padW,
                                        filter: rotated + c * taps, kH: kH, kW: kW, initial: 0,
                                        out: gradX + p * H * W, outH: H, outW: W, row: rows[chunk])
            }
        }
    }
    if gradWeight == nil && gradBias == nil { return }
    // dw and db: channels in parallel chunks; per channel, images in order.
    let layout = DepthwisePlane(rows: H + 2 * gi.padH, stride: W + 2 * gi.padW, kernelW: kW)
    let gStride = (Wo + 7) / 8 * 8
    let chunks = min(C, parallelChunks(work: work / 2, minPerThread: 200_000))
    var pads: [UnsafeMutablePointer<T>] = [], gqs: [UnsafeMutablePointer<T>] = []
    var accs: [UnsafeMutablePointer<SIMD8<T>>] = []
    // Slots (dx's scratch is free again): the accumulators, then a padded plane and a g copy per
    // chunk. SIMD8<T> needs its alignment: the buffer is 64-byte aligned, chunks taps * 8 elements apart.
    let base = 0
    let accBuffer = try workspace.buffer(base, count: chunks * taps * 8 + 8)
    for chunk in 0..<chunks {
        pads.append(try workspace.buffer(base + 1 + 2 * chunk, count: layout.count))
        gqs.append(try workspace.buffer(base + 2 + 2 * chunk, count: Ho * gStride + 8))
        accs.append(UnsafeMutableRawPointer(accBuffer + chunk * taps * 8).bindMemory(to: SIMD8<T>.self, capacity: taps))
    }
    parallelFor(chunks) { chunk in
        let pad = pads[chunk], gq = gqs[chunk], acc = accs[chunk]
        pad.update(repeating: 0, count: layout.count)
        gq.update(repeating: 0, count: Ho * gStride + 8)
        for c in chunkRange(chunk, of: chunks, total: C) {
            acc.update(repeating: SIMD8<T>(repeating: 0), count: taps)
            var biasSum: T = 0
            for n in 0..<g.batch {
                let plane = n * C + c
                let gn = gradOut + plane * Ho * Wo
                if gradBias != nil { biasSum += contiguousSum(gn, count: Ho * Wo) }
                guard gradWeight != nil else { continue }
                depthwiseCopyPadded(x + plane * H * W, height: H, width: W, top: gi.padH, left: gi.padW,
                                    stride: layout.stride, dst: pad)
                for i in 0..<Ho { (gq + i * gStride).update(from: gn + i * Wo, count: Wo) }
                depthwisePlaneWeightGrad(plane: pad, stride: layout.stride, gq: gq, gStride: gStride, outH: Ho,
                                         kH: kH, kW: kW, acc: acc)
            }
            if let gradBias { gradBias[c] = (accumulate ? gradBias[c] : 0) + biasSum }
            if let gradWeight {
                for t in 0..<taps {
                    let i = c * taps + t
                    gradWeight[i] = (accumulate ? gradWeight[i] : 0) + acc[t].sum()
                }
            }
        }
    }
}

// MARK: - naive reference (test oracle)

/// The forward's formula as plain loops (test oracle).
func depthwiseConv2dForwardNaive<T: CNNScalar>(_ g: GroupedConv2DGeometry, x: UnsafePointer<T>, weight: UnsafePointer<T>,
                                               bias: UnsafePointer<T>?, y: UnsafeMutablePointer<T>) {
    let gi = g.group
    let (C, H, W, kH, kW, Ho, Wo) = (g.inChannels, g.height, g.width, gi.kernelH, gi.kernelW, gi.outH, gi.outW)
    for n in 0..<g.batch {
        for c in 0..<C {
            for i in 0..<Ho {
                for j in 0..<Wo {
                    var sum: T = bias?[c] ?? 0
                    for r in 0..<kH {
                        for s in 0..<kW {
                            let h = i - gi.padH + r, w = j - gi.padW + s
                            if h < 0 || h >= H || w < 0 || w >= W { continue }
                            sum += x[((n * C + c) * H + h) * W + w] * weight[(c * kH + r) * kW + s]
                        }
                    }
                    y[((n * C + c) * Ho + i) * Wo + j] = sum
                }
            }
        }
    }
}

/// The backward's formulas as plain loops (test oracle); accumulate as `depthwiseConv2dBackward`.
func depthwiseConv2dBackwardNaive<T: CNNScalar>(_ g: GroupedConv2DGeometry, gradOut: UnsafePointer<T>, x: UnsafePointer<T>,
                                                weight: UnsafePointer<T>, gradX: UnsafeMutablePointer<T>?,
                                                gradWeight: UnsafeMutablePointer<T>?, gradBias: UnsafeMutablePointer<T>?,
                                                accumulate: Bool) {
    let gi = g.group
    let (C, H, W, kH, kW, Ho, Wo) = (g.inChannels, g.height, g.width, gi.kernelH, gi.kernelW, gi.outH, gi.outW)
    gradX?.update(repeating: 0, count: g.batch * C * H * W)
    if !accumulate {
        gradWeight?.update(repeating: 0, count: C * kH * kW)
        gradBias?.update(repeating: 0, count: C)
    }
    for n in 0..<g.batch {
        for c in 0..<C {
            for i in 0..<Ho {
                for j in 0..<Wo {
                    let gv = gradOut[((n * C + c) * Ho + i) * Wo + j]
                    gradBias?[c] += gv
                    for r in 0..<kH {
                        for s in 0..<kW {
                            let h = i - gi.padH + r, w = j - gi.padW + s
                            if h < 0 || h >= H || w < 0 || w >= W { continue }
                            let xi = ((n * C + c) * H + h) * W + w, wi = (c * kH + r) * kW + s
                            gradWeight?[wi] += gv * x[xi]
                            gradX?[xi] += gv * weight[wi]
                        }
                    }
                }
            }
        }
    }
}

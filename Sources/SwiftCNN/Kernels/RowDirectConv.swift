/// Row-direct convolution kernels, Float, stride 1, no dilation: each output row computed 16
/// columns at a time from a zero-padded copy of the image, with no im2col packing. Chosen by
/// `conv2dForward` / `conv2dBackwardNonEmpty` (Ops/Convolution.swift) for small first layers.

/// Whether `conv2dForwardRowDirectFloat` handles this geometry: stride 1, no dilation, few taps per
/// output (C*kH*kW <= 64) and output rows at least 16 wide.
///
/// Why: for a first layer such as LeNet's Conv2d(1, 6, 5, padding=2) the GEMM is 6 x 25 x 784 per
/// image. Packing its 25 x 784 im2col panel (plus the memmove of each row) cost more than the
/// multiply-adds and was the largest item of the network's inference profile; the 6-row weight
/// matrix also fills only one 6x64 register tile per panel. Sliding 16-wide rows of a zero-padded
/// copy of the image needs no packing at all.
@inlinable
func conv2dUsesRowDirect(_ g: Conv2DGeometry) -> Bool {
    g.strideH == 1 && g.strideW == 1 && g.dilationH == 1 && g.dilationW == 1 && g.outW >= 16
        && g.inChannels * g.kernelH * g.kernelW <= 64 && g.batch > 0
}

/// y = conv2d(x, weight, bias) for `conv2dUsesRowDirect` geometries, Float: per image, the input is
/// copied into a zero-padded buffer, then each output row is computed 16 columns at a time as
/// bias + sum over (c, r, s) of weight[k,c,r,s] * (16 consecutive padded pixels), taps in (c, r, s)
/// order. A row's last block starts at Wo - 16 and may overlap the previous one; the overlapping
/// outputs are recomputed identically. Images run in parallel chunks (claimed dynamically; each output is
/// computed by one thread in a fixed order, so results do not depend on the thread count).
/// Throws `.memory` (or `.overflow`) if the padded copies cannot be allocated.
@inlinable
func conv2dForwardRowDirectFloat(_ g: Conv2DGeometry, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                                 bias: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>) throws {
    typealias V = SIMD16<Float>
    let (C, K, kH, kW) = (g.inChannels, g.outChannels, g.kernelH, g.kernelW)
    let paddedH = g.height + 2 * g.padH, paddedW = g.width + 2 * g.padW
    let paddedPlane = paddedH * paddedW, taps = C * kH * kW
    let xStride = C * g.height * g.width, yPlane = g.outH * g.outW
    let work = Int(min(2 * Double(g.batch) * Double(K) * Double(taps) * Double(yPlane), 1e15))
    let chunks = parallelFineChunks(work: work, units: g.batch, minPerChunk: 1_000_000)
    // One zeroed padded copy per thread, taken before the threads start; the borders stay zero.
    let workers = parallelWorkers(chunks)
    let paddedCopies = try AlignedBuffer<Float>(copies: workers, of: C * paddedPlane, what: "conv2d: padded input")
    parallelForWorkers(chunks, workers: workers) { chunk, worker in
        let padded = paddedCopies.pointer + worker * C * paddedPlane
        for n in chunkRange(chunk, of: chunks, total: g.batch) {
            let xn = x + n * xStride
            for c in 0..<C {
                for h in 0..<g.height {
                    (padded + c * paddedPlane + (h + g.padH) * paddedW + g.padW)
                        .update(from: xn + (c * g.height + h) * g.width, count: g.width)
                }
            }
            for k in 0..<K {
                let wk = weight + k * taps
                let b = V(repeating: bias?[k] ?? 0)
                let yk = y + (n * K + k) * yPlane
                // Four output rows at a time: four independent multiply-add chains share each weight
                // broadcast (one chain alone is bound by the FMA latency). Per output the taps are
                // still summed in (c, r, s) order, so grouping does not change results.
                var i = 0
                while i < g.outH {
                    let rows = min(4, g.outH - i)
                    var j0 = 0
                    while true {
                        var acc0 = b, acc1 = b, acc2 = b, acc3 = b
                        var t = 0
                        for c in 0..<C {
                            for r in 0..<kH {
                                let row = padded + c * paddedPlane + (i + r) * paddedW + j0
                                for s in 0..<kW {
                                    let w = V(repeating: wk[t])
                                    acc0 = multiplyAdd(UnsafeRawPointer(row + s).loadUnaligned(as: V.self), w, acc0)
                                    if rows == 4 {
                                        acc1 = multiplyAdd(UnsafeRawPointer(row + paddedW + s).loadUnaligned(as: V.self), w, acc1)
                                        acc2 = multiplyAdd(UnsafeRawPointer(row + 2 * paddedW + s).loadUnaligned(as: V.self), w, acc2)
                                        acc3 = multiplyAdd(UnsafeRawPointer(row + 3 * paddedW + s).loadUnaligned(as: V.self), w, acc3)
                                    }
                                    t += 1
                                }
                            }
                        }
                        let out = yk + i * g.outW + j0
                        UnsafeMutableRawPointer(out).storeBytes(of: acc0, as: V.self)
                        if rows == 4 {
                            UnsafeMutableRawPointer(out + g.outW).storeBytes(of: acc1, as: V.self)
                            UnsafeMutableRawPointer(out + 2 * g.outW).storeBytes(of: acc2, as: V.self)
                            UnsafeMutableRawPointer(out + 3 * g.outW).storeBytes(of: acc3, as: V.self)
                        }
                        if j0 == g.outW - 16 { break }
                        j0 = min(j0 + 16, g.outW - 16)
                    }
                    i += rows == 4 ? 4 : 1
                }
            }
        }
    }
}

/// dx and dw of conv2d for `conv2dUsesRowDirect` geometries with W >= 16, Float (same contract as
/// `conv2dBackward`, minus the bias, which the caller has done).
///
/// Why: for LeNet's first layer the GEMM route is dWᵀ = col · gᵀ with only 6 columns (a 64-wide
/// register tile 90% empty) and dcol = Wᵀ · g with a depth of 6, then col2im; together with their
/// packing these were the largest items of the training profile. Here, per image, 16-wide rows:
///
///     dw[k,c,r,s] += sum_{i,j} g[k,i,j] * xpad[c, i+r, j+s]           (a row's overlapping last
///                                                                       block masks its repeated lanes)
///     dx[c,h,w]    = sum_{k,r,s} gpad[k, h+ph+kH-1-r, w+pw+kW-1-s] * w[k,c,r,s]
///
/// with xpad the zero-padded image and gpad g zero-padded by kH-1 rows and kW-1 columns on each side
/// (the "full" correlation with the flipped filter: no scatter, no col2im). dw is summed per image
/// chunk and the chunks added in order; each dx element is computed by one thread in a fixed order:
/// deterministic for a given thread count. Throws `.memory` (or `.overflow`) if its buffers cannot
/// be allocated.
@inlinable
func conv2dBackwardRowDirectFloat(_ g: Conv2DGeometry, gradOut: UnsafePointer<Float>, x: UnsafePointer<Float>,
                                  weight: UnsafePointer<Float>, gradX: UnsafeMutablePointer<Float>?,
                                  gradWeight: UnsafeMutablePointer<Float>?, accumulate: Bool) throws {
    typealias V = SIMD16<Float>
    let (C, K, kH, kW) = (g.inChannels, g.outChannels, g.kernelH, g.kernelW)
    let (H, W, Ho, Wo) = (g.height, g.width, g.outH, g.outW)
    let paddedH = H + 2 * g.padH, paddedW = W + 2 * g.padW, paddedPlane = paddedH * paddedW
    let gpadH = Ho + 2 * (kH - 1), gpadW = Wo + 2 * (kW - 1), gpadPlane = gpadH * gpadW
    let taps = C * kH * kW, wCount = K * taps
    let xStride = C * H * W, yPlane = Ho * Wo
    let work = Int(min(4 * Double(g.batch) * Double(K) * Double(taps) * Double(yPlane), 1e15))
    let chunks = parallelFineChunks(work: work, units: g.batch, minPerChunk: 1_000_000)
    let workers = parallelWorkers(chunks)
    // Zeroed buffers, taken before the threads start: partial dw sums per chunk, and padded copies
    // of x and g per thread (their borders stay zero).
    let partials = try AlignedBuffer<Float>(copies: chunks, of: wCount, what: "conv2d_backward: partial weight gradients")
    let xpads = try AlignedBuffer<Float>(copies: workers, of: C * paddedPlane, what: "conv2d_backward: padded input")
    let gpads = try AlignedBuffer<Float>(copies: workers, of: K * gpadPlane, what: "conv2d_backward: padded output gradient")
    // Lane numbers, to mask the lanes of a row's last block that the previous block already covered.
    let lane = V(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
    parallelForWorkers(chunks, workers: workers) { chunk, worker in
        let xpad = xpads.pointer + worker * C * paddedPlane
        let gpad = gpads.pointer + worker * K * gpadPlane
        let partial = partials.pointer + chunk * wCount
        for n in chunkRange(chunk, of: chunks, total: g.batch) {
            let xn = x + n * xStride, gn = gradOut + n * K * yPlane
            if gradWeight != nil {
                for c in 0..<C {
                    for h in 0..<H {
                        (xpad + c * paddedPlane + (h + g.padH) * paddedW + g.padW).update(from: xn + (c * H + h) * W, count: W)
                    }
                }
                for k in 0..<K {
                    let gk = gn + k * yPlane
                    for c in 0..<C {
                        for r in 0..<kH {
                            for s in 0..<kW {
                                // Rows i go to four accumulators by i % 4 (independent FMA chains),
                                // added in a fixed order at the end.
                                var acc = (V(repeating: 0), V(repeating: 0), V(repeating: 0), V(repeating: 0))
                                for i in 0..<Ho {
                                    let grow = gk + i * Wo, xrow = xpad + c * paddedPlane + (i + r) * paddedW + s
                                    var j0 = 0, covered = 0
                                    var rowSum = V(repeating: 0)
                                    while true {
                                        var gv = UnsafeRawPointer(grow + j0).loadUnaligned(as: V.self)
                                        // Lanes below `covered` were summed by the previous block.
                                        gv = gv.replacing(with: 0, where: lane .< Float(covered - j0))
                                        let xv = UnsafeRawPointer(xrow + j0).loadUnaligned(as: V.self)
                                        rowSum = multiplyAdd(gv, xv, rowSum)
                                        covered = j0 + 16
                                        if j0 == Wo - 16 { break }
                                        j0 = min(j0 + 16, Wo - 16)
                                    }
                                    switch i & 3 {
                                    case 0: acc.0 += rowSum
                                    case 1: acc.1 += rowSum
                                    case 2: acc.2 += rowSum
                                    default: acc.3 += rowSum
                                    }
                                }
                                partial[((k * C + c) * kH + r) * kW + s] += ((acc.0 + acc.1) + (acc.2 + acc.3)).sum()
                            }
                        }
                    }
                }
            }
            if let gradX {
                for k in 0..<K {
                    for i in 0..<Ho {
                        (gpad + k * gpadPlane + (i + kH - 1) * gpadW + (kW - 1)).update(from: gn + k * yPlane + i * Wo, count: Wo)
                    }
                }
                let gxn = gradX + n * xStride
                for c in 0..<C {
                    // Four rows h at a time, as in the forward: independent chains, same tap order.
                    var h = 0
                    while h < H {
                        let rows = min(4, H - h)
                        var w0 = 0
                        while true {
                            let zero = V(repeating: 0)
                            var acc0 = zero, acc1 = zero, acc2 = zero, acc3 = zero
                            for k in 0..<K {
                                let wkc = weight + (k * C + c) * kH * kW
                                for r in 0..<kH {
                                    let row = gpad + k * gpadPlane + (h + g.padH + kH - 1 - r) * gpadW + w0 + g.padW + kW - 1
                                    for s in 0..<kW {
                                        let w = V(repeating: wkc[r * kW + s])
                                        acc0 = multiplyAdd(UnsafeRawPointer(row - s).loadUnaligned(as: V.self), w, acc0)
                                        if rows == 4 {
                                            acc1 = multiplyAdd(UnsafeRawPointer(row + gpadW - s).loadUnaligned(as: V.self), w, acc1)
                                            acc2 = multiplyAdd(UnsafeRawPointer(row + 2 * gpadW - s).loadUnaligned(as: V.self), w, acc2)
                                            acc3 = multiplyAdd(UnsafeRawPointer(row + 3 * gpadW - s).loadUnaligned(as: V.self), w, acc3)
                                        }
                                    }
                                }
                            }
                            let out = gxn + (c * H + h) * W + w0
                            UnsafeMutableRawPointer(out).storeBytes(of: acc0, as: V.self)
                            if rows == 4 {
                                UnsafeMutableRawPointer(out + W).storeBytes(of: acc1, as: V.self)
                                UnsafeMutableRawPointer(out + 2 * W).storeBytes(of: acc2, as: V.self)
                                UnsafeMutableRawPointer(out + 3 * W).storeBytes(of: acc3, as: V.self)
                            }
                            if w0 == W - 16 { break }
                            w0 = min(w0 + 16, W - 16)
                        }
                        h += rows == 4 ? 4 : 1
                    }
                }
            }
        }
    }
    if let gradWeight {
        for q in 0..<wCount {
            var sum: Float = accumulate ? gradWeight[q] : 0
            for t in 0..<chunks { sum += partials.pointer[t * wCount + q] }
            gradWeight[q] = sum
        }
    }
}

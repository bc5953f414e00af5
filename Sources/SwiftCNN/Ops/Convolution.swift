/// 2-D convolution (cross-correlation, as every deep-learning framework): forward and backward.
///
///     x      (N, C, H, W)        weight (K, C, kH, kW)        bias (K)        y (N, K, Ho, Wo)
///
///     y[n,k,i,j] = b[k] + sum_{c,r,s} x[n, c, i*sh - ph + r*dh, j*sw - pw + s*dw] * w[k,c,r,s]
///
/// (x is zero outside its bounds: the padding). Backward, with g = dL/dy:
///
///     dL/db[k]       = sum_{n,i,j} g[n,k,i,j]
///     dL/dw[k,c,r,s] = sum_{n,i,j} g[n,k,i,j] * x[n, c, i*sh - ph + r*dh, j*sw - pw + s*dw]
///     dL/dx[n,c,h,w] = sum over every (k,i,j,r,s) with i*sh - ph + r*dh = h, j*sw - pw + s*dw = w
///                      of g[n,k,i,j] * w[k,c,r,s]
///
/// For stride 1, no padding and no dilation the last line is the "full" cross-correlation of g with
/// the 180°-rotated filter (the lecture's identity). For stride 1 without dilation in Float, direct
/// kernels compute all three (Kernels/ChannelLaneConv.swift, chosen in Conv2DChannelLanes.swift);
/// otherwise the fast path computes them as GEMMs over the im2col matrix of each image (see Kernels/Im2Col.swift; the matrix is packed into the GEMM
/// straight from the image, never stored whole):
///
///     y_n = W · col_n        dW += g_n · col_nᵀ        dX_n = col2im(Wᵀ · g_n)
///
/// with W the weight viewed as K × (C*kH*kW) and g_n as K × (Ho*Wo) (dW is computed as its
/// transpose, dWᵀ += col_n · g_nᵀ, for cheaper packing). The `Naive` functions are the direct loops
/// above, kept as the test oracle.

// MARK: - pointer level, fast path

/// True when col_n is x_n itself (1x1 kernel, stride 1, no padding): the GEMMs read x directly.
@inlinable
func conv2dIsPointwise(_ g: Conv2DGeometry) -> Bool {
    g.kernelH == 1 && g.kernelW == 1 && g.strideH == 1 && g.strideW == 1 && g.padH == 0 && g.padW == 0
}

/// How many chunks of images to run at once on separate threads (each image's GEMMs then run on
/// one thread), or 1 (images in turn, each image's GEMMs split across the threads).
///
/// Whole images per thread is the cheaper split (one fork-join per call instead of per GEMM, no
/// operand packed twice), used whenever the images divide well among the threads; a few large
/// images (batch 1, or 3 on 2 threads) split each GEMM instead, to keep every thread busy.
@inlinable
func conv2dImageChunks(_ g: Conv2DGeometry) -> Int {
    let threads = Threading.numThreads
    if g.batch < 2 || threads < 2 { return 1 }
    // In Double: K * C*kH*kW * Ho*Wo is not among the counts the geometry checked against overflow.
    let flopsPerImage = 2 * Double(g.outChannels) * Double(g.colCount)
    let work = Int(min(flopsPerImage * Double(g.batch), 1e15))
    let chunks = min(g.batch, parallelChunks(work: work, minPerThread: 1_000_000))
    if flopsPerImage < 4e6 || g.batch % chunks == 0 || g.batch >= 4 * chunks { return chunks }
    return 1
}

/// y = conv2d(x, weight, bias): per image, the GEMM y_n = W · col_n with col_n packed straight from
/// x_n (Kernels/Im2Col.swift). The geometry must come from a successful `Conv2DGeometry.init` for
/// these buffers. Throws only `.memory` (packing buffers, from `workspace`).
///
///     x (N, C, H, W), weight (K, C, kH, kW), bias (K) or nil  ->  y (N, K, Ho, Wo), overwritten
@inlinable
public func conv2dForward<T: CNNScalar>(_ g: Conv2DGeometry, x: UnsafePointer<T>, weight: UnsafePointer<T>,
                                        bias: UnsafePointer<T>?, y: UnsafeMutablePointer<T>,
                                        epilogue: ConvEpilogue = .none, workspace: Workspace<T>) throws {
    let (kdim, hw) = (g.colRows, g.colCols)           // GEMM: (K × kdim) · (kdim × hw)
    // A tiny problem (a functional call on a small input) is cheaper as direct loops: packing
    // im2col panels padded to the 16/64-wide register tile costs many times the few multiply-adds.
    // (In Double: the product of the sizes is not one the geometry checked.)
    if Double(g.batch) * Double(g.outChannels) * Double(kdim) * Double(hw) <= Double(conv2dDirectMaxWork) {
        conv2dForwardDirect(g, x: x, weight: weight, bias: bias, y: y)
        applyEpilogue(epilogue, y, count: g.batch * g.outChannels * g.outH * g.outW)
        return
    }
    if T.self == Float.self && conv2dForwardKernel(g) != .other {
        try conv2dForwardChannelLanes(g, x: UnsafeRawPointer(x).assumingMemoryBound(to: Float.self),
                                      weight: UnsafeRawPointer(weight).assumingMemoryBound(to: Float.self),
                                      bias: bias.map { UnsafeRawPointer($0).assumingMemoryBound(to: Float.self) },
                                      y: UnsafeMutableRawPointer(y).assumingMemoryBound(to: Float.self),
                                      epilogue: epilogue, workspace: unsafeDowncast(workspace, to: Workspace<Float>.self))
        return
    }
    if T.self == Float.self && conv2dUsesRowDirect(g) {
        conv2dForwardRowDirectFloat(g, x: UnsafeRawPointer(x).assumingMemoryBound(to: Float.self),
                                    weight: UnsafeRawPointer(weight).assumingMemoryBound(to: Float.self),
                                    bias: bias.map { UnsafeRawPointer($0).assumingMemoryBound(to: Float.self) },
                                    y: UnsafeMutableRawPointer(y).assumingMemoryBound(to: Float.self))
        applyEpilogueInParallel(epilogue, y, count: g.batch * g.outChannels * g.outH * g.outW)
        return
    }
    let xStride = g.inChannels * g.height * g.width   // elements per image
    let yStride = g.outChannels * hw
    let pointwise = conv2dIsPointwise(g)
    let chunks = conv2dImageChunks(g)
    let plan = GEMMPlan(T.self, m: g.outChannels, n: hw, k: kdim, threads: chunks == 1 ? Threading.numThreads : 1)
    func image(_ n: Int, _ buffer: (Int) -> UnsafeMutablePointer<T>) {
            let xn = x + n * xStride, yn = y + n * yStride
            // Start from the bias (beta = 1) so the GEMM adds onto it: one pass over y fewer.
            if let bias {
                for k in 0..<g.outChannels { (yn + k * hw).update(repeating: bias[k], count: hw) }
            }
            let beta: T = bias == nil ? 0 : 1
            if pointwise {
                gemmRun(plan, m: g.outChannels, n: hw, k: kdim, alpha: 1, a: GEMMDenseA(a: weight, lda: kdim, trans: false),
                        b: GEMMDenseB(b: xn, ldb: hw, trans: false), beta: beta, c: yn, ldc: hw, buffer: buffer)
            } else {
                gemmRun(plan, m: g.outChannels, n: hw, k: kdim, alpha: 1, a: GEMMDenseA(a: weight, lda: kdim, trans: false),
                        b: Im2ColB(g, x: xn), beta: beta, c: yn, ldc: hw, buffer: buffer)
            }
            applyEpilogue(epilogue, yn, count: yStride)
    }
    // A small single-threaded problem (a functional call on a small input) packs on the stack: a
    // fresh workspace would cost a posix_memalign, a memset and a free per call, more than the GEMM.
    let scratchBytes = plan.bufferCount * MemoryLayout<T>.stride
    if chunks == 1 && plan.chunks == 1 && scratchBytes <= convStackScratchBytes {
        withUnsafeTemporaryAllocation(byteCount: scratchBytes, alignment: 64) { raw in
            let buffer = raw.baseAddress!.bindMemory(to: T.self, capacity: plan.bufferCount)
            for n in 0..<g.batch { image(n) { _ in buffer } }
        }
        return
    }
    // One packing buffer per image chunk and GEMM chunk (one of the two counts is 1), taken before
    // the threads start: Workspace is single-threaded.
    var buffers: [UnsafeMutablePointer<T>] = []
    for t in 0..<(chunks * plan.chunks) { buffers.append(try workspace.buffer(t, count: plan.bufferCount)) }
    parallelFor(chunks) { chunk in
        for n in chunkRange(chunk, of: chunks, total: g.batch) {
            image(n) { t in buffers[chunk * plan.chunks + t] }
        }
    }
}

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
/// outputs are recomputed identically. Images run in parallel chunks (static split; each output is
/// computed by one thread in a fixed order, so results do not depend on the thread count).
@inlinable
func conv2dForwardRowDirectFloat(_ g: Conv2DGeometry, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                                 bias: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>) {
    typealias V = SIMD16<Float>
    let (C, K, kH, kW) = (g.inChannels, g.outChannels, g.kernelH, g.kernelW)
    let paddedH = g.height + 2 * g.padH, paddedW = g.width + 2 * g.padW
    let paddedPlane = paddedH * paddedW, taps = C * kH * kW
    let xStride = C * g.height * g.width, yPlane = g.outH * g.outW
    let work = Int(min(2 * Double(g.batch) * Double(K) * Double(taps) * Double(yPlane), 1e15))
    let chunks = min(g.batch, parallelChunks(work: work, minPerThread: 1_000_000))
    parallelFor(chunks) { chunk in
        let padded = UnsafeMutablePointer<Float>.allocate(capacity: C * paddedPlane)
        defer { padded.deallocate() }
        padded.initialize(repeating: 0, count: C * paddedPlane)   // the border stays zero
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
/// deterministic for a given thread count.
@inlinable
func conv2dBackwardRowDirectFloat(_ g: Conv2DGeometry, gradOut: UnsafePointer<Float>, x: UnsafePointer<Float>,
                                  weight: UnsafePointer<Float>, gradX: UnsafeMutablePointer<Float>?,
                                  gradWeight: UnsafeMutablePointer<Float>?, accumulate: Bool) {
    typealias V = SIMD16<Float>
    let (C, K, kH, kW) = (g.inChannels, g.outChannels, g.kernelH, g.kernelW)
    let (H, W, Ho, Wo) = (g.height, g.width, g.outH, g.outW)
    let paddedH = H + 2 * g.padH, paddedW = W + 2 * g.padW, paddedPlane = paddedH * paddedW
    let gpadH = Ho + 2 * (kH - 1), gpadW = Wo + 2 * (kW - 1), gpadPlane = gpadH * gpadW
    let taps = C * kH * kW, wCount = K * taps
    let xStride = C * H * W, yPlane = Ho * Wo
    let work = Int(min(4 * Double(g.batch) * Double(K) * Double(taps) * Double(yPlane), 1e15))
    let chunks = min(g.batch, parallelChunks(work: work, minPerThread: 1_000_000))
    let partials = UnsafeMutablePointer<Float>.allocate(capacity: chunks * wCount)
    defer { partials.deallocate() }
    partials.initialize(repeating: 0, count: chunks * wCount)
    // Lane numbers, to mask the lanes of a row's last block that the previous block already covered.
    let lane = V(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
    parallelFor(chunks) { chunk in
        let xpad = UnsafeMutablePointer<Float>.allocate(capacity: C * paddedPlane)
        let gpad = UnsafeMutablePointer<Float>.allocate(capacity: K * gpadPlane)
        defer { xpad.deallocate(); gpad.deallocate() }
        xpad.initialize(repeating: 0, count: C * paddedPlane)   // borders stay zero
        gpad.initialize(repeating: 0, count: K * gpadPlane)
        let partial = partials + chunk * wCount
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
            for t in 0..<chunks { sum += partials[t * wCount + q] }
            gradWeight[q] = sum
        }
    }
}

/// The most multiply-adds (N*K*C*kH*kW*Ho*Wo) `conv2dForward` computes with direct loops instead of
/// the packed GEMM. Kept low so that the tests' small shapes still exercise the GEMM path.
@usableFromInline let conv2dDirectMaxWork = 1024

/// conv2dForward's direct loops for tiny problems: each output is the bias plus the taps of its
/// window clipped to the input (rows and columns clipped once per output, not tested per tap).
/// Same contract as `conv2dForward`. Not the oracle (`conv2dForwardNaive` stays independent).
@inlinable
func conv2dForwardDirect<T: CNNScalar>(_ g: Conv2DGeometry, x: UnsafePointer<T>, weight: UnsafePointer<T>,
                                       bias: UnsafePointer<T>?, y: UnsafeMutablePointer<T>) {
    let plane = g.height * g.width, kArea = g.kernelH * g.kernelW
    var out = y
    for n in 0..<g.batch {
        let xn = x + n * g.inChannels * plane
        for k in 0..<g.outChannels {
            let wk = weight + k * g.inChannels * kArea
            let b: T = bias?[k] ?? 0
            for i in 0..<g.outH {
                // Kernel rows r with 0 <= i*sh - ph + r*dh < H.
                let h0 = i * g.strideH - g.padH
                var r0 = 0, r1 = g.kernelH
                while r0 < r1 && h0 + r0 * g.dilationH < 0 { r0 += 1 }
                while r1 > r0 && h0 + (r1 - 1) * g.dilationH >= g.height { r1 -= 1 }
                var j = 0
                // Four outputs at a time where their windows need no column clipping: four
                // independent multiply-add chains (one chain alone waits on the FMA latency at every
                // tap; that wait was half the per-call cost of a tiny conv2d from Python). Each
                // output still sums its taps in the order of `conv2dForwardDirectOne`.
                while j < g.outW {
                    let w0 = j * g.strideW - g.padW, w3 = (j + 3) * g.strideW - g.padW
                    if j + 4 > g.outW || w0 < 0 || w3 + (g.kernelW - 1) * g.dilationW >= g.width {
                        conv2dForwardDirectOne(g, xn: xn, wk: wk, bias: b, h0: h0, r0: r0, r1: r1, j: j, out: out)
                        out += 1
                        j += 1
                        continue
                    }
                    var sum0 = b, sum1 = b, sum2 = b, sum3 = b
                    let step = g.strideW
                    for c in 0..<g.inChannels {
                        let xc = xn + c * plane, wc = wk + c * kArea
                        for r in r0..<r1 {
                            let xr = xc + (h0 + r * g.dilationH) * g.width + w0, wr = wc + r * g.kernelW
                            for s in 0..<g.kernelW {
                                let wv = wr[s], xs = xr + s * g.dilationW
                                sum0 = multiplyAdd(xs[0], wv, sum0)
                                sum1 = multiplyAdd(xs[step], wv, sum1)
                                sum2 = multiplyAdd(xs[2 * step], wv, sum2)
                                sum3 = multiplyAdd(xs[3 * step], wv, sum3)
                            }
                        }
                    }
                    out[0] = sum0; out[1] = sum1; out[2] = sum2; out[3] = sum3
                    out += 4
                    j += 4
                }
            }
        }
    }
}

/// One output of `conv2dForwardDirect`, its window's columns clipped to the input.
@inlinable @inline(__always)
func conv2dForwardDirectOne<T: CNNScalar>(_ g: Conv2DGeometry, xn: UnsafePointer<T>, wk: UnsafePointer<T>, bias b: T,
                                          h0: Int, r0: Int, r1: Int, j: Int, out: UnsafeMutablePointer<T>) {
    let plane = g.height * g.width, kArea = g.kernelH * g.kernelW
    let w0 = j * g.strideW - g.padW
    var s0 = 0, s1 = g.kernelW
    while s0 < s1 && w0 + s0 * g.dilationW < 0 { s0 += 1 }
    while s1 > s0 && w0 + (s1 - 1) * g.dilationW >= g.width { s1 -= 1 }
    var sum = b
    for c in 0..<g.inChannels {
        let xc = xn + c * plane, wc = wk + c * kArea
        for r in r0..<r1 {
            let xr = xc + (h0 + r * g.dilationH) * g.width + w0, wr = wc + r * g.kernelW
            for s in s0..<s1 { sum = multiplyAdd(xr[s * g.dilationW], wr[s], sum) }
        }
    }
    out.pointee = sum
}

/// p[0] + ... + p[count-1], summed 16 wide (two independent SIMD8 accumulators, then the lanes,
/// then the tail: a fixed order, so deterministic; a scalar loop would be one long dependency chain).
@inlinable
func contiguousSum<T: CNNScalar>(_ p: UnsafePointer<T>, count: Int) -> T {
    var a = SIMD8<T>(repeating: 0), b = SIMD8<T>(repeating: 0)
    let raw = UnsafeRawPointer(p), size = MemoryLayout<T>.stride
    var i = 0
    while i + 16 <= count {
        a += raw.loadUnaligned(fromByteOffset: i * size, as: SIMD8<T>.self)
        b += raw.loadUnaligned(fromByteOffset: (i + 8) * size, as: SIMD8<T>.self)
        i += 16
    }
    var sum = (a + b).sum()
    while i < count { sum += p[i]; i += 1 }
    return sum
}

/// The most packing scratch `conv2dForward` takes from the stack instead of its workspace (bytes).
/// Small enough for any thread's stack (Dispatch workers get 512 KiB).
@usableFromInline let convStackScratchBytes = 32 * 1024

/// Gradients of conv2d: any of gradX, gradWeight, gradBias may be nil to skip it.
///
///     gradOut (N, K, Ho, Wo), x (N, C, H, W), weight (K, C, kH, kW)
///     -> gradX (N, C, H, W) overwritten; gradWeight (K, C, kH, kW) and gradBias (K) overwritten,
///        or added to when `accumulate` (layers: parameter gradients accumulate, as PyTorch)
///
/// Per image: dWᵀ += col_n · g_nᵀ (col_n packed straight from x_n), dcol = Wᵀ · g_n, dx_n = col2im(dcol).
/// Throws only `.memory`. Deterministic: for a fixed thread count each output element is summed in
/// a fixed order.
@inlinable
public func conv2dBackward<T: CNNScalar>(_ g: Conv2DGeometry, gradOut: UnsafePointer<T>, x: UnsafePointer<T>,
                                         weight: UnsafePointer<T>, gradX: UnsafeMutablePointer<T>?,
                                         gradWeight: UnsafeMutablePointer<T>?, gradBias: UnsafeMutablePointer<T>?,
                                         accumulate: Bool, workspace: Workspace<T>) throws {
    // One exit on each side of the branch: with an early `return` for the empty batch, `-O` builds
    // that specialize this function in another module (the tests) returned from the Tensor-level
    // conv2dBackward with a garbage error (a crash in swift_getErrorValue); pinned by
    // Conv2DTests.testEmptyBatch and testOutputCombinations in release-mode test runs.
    if g.batch == 0 {
        // Empty sums: the parameter gradients are zero (unchanged when accumulating); gradX is empty.
        if !accumulate {
            gradWeight?.update(repeating: 0, count: g.outChannels * g.colRows)
            gradBias?.update(repeating: 0, count: g.outChannels)
        }
    } else {
        try conv2dBackwardNonEmpty(g, gradOut: gradOut, x: x, weight: weight, gradX: gradX, gradWeight: gradWeight,
                                   gradBias: gradBias, accumulate: accumulate, workspace: workspace)
    }
}

/// `conv2dBackward` for a batch of at least one image.
@inlinable
func conv2dBackwardNonEmpty<T: CNNScalar>(_ g: Conv2DGeometry, gradOut: UnsafePointer<T>, x: UnsafePointer<T>,
                                          weight: UnsafePointer<T>, gradX: UnsafeMutablePointer<T>?,
                                          gradWeight: UnsafeMutablePointer<T>?, gradBias: UnsafeMutablePointer<T>?,
                                          accumulate: Bool, workspace: Workspace<T>) throws {
    let (kdim, hw) = (g.colRows, g.colCols)
    let xStride = g.inChannels * g.height * g.width
    let yStride = g.outChannels * hw
    let wCount = g.outChannels * kdim
    let pointwise = conv2dIsPointwise(g)

    // The channel-lane path sums the bias gradient itself, while each image's g is in cache.
    let lanes = T.self == Float.self && conv2dChannelLanesApply(g) && (gradWeight != nil || gradX != nil)
    if let gradBias, !lanes {
        // db[k] = sum_{n,i,j} g[n,k,i,j]
        for k in 0..<g.outChannels {
            var sum: T = accumulate ? gradBias[k] : 0
            for n in 0..<g.batch { sum += contiguousSum(gradOut + n * yStride + k * hw, count: hw) }
            gradBias[k] = sum
        }
    }
    if gradWeight == nil && gradX == nil { return }
    var gradWeight = gradWeight   // nil once a path below has computed it
    if lanes {
        // dw always through the channel-lane kernel (lanes over K); dx too when its lanes (over C)
        // are well used, otherwise by the row-direct or GEMM path below.
        let lanesX = gradX != nil && conv2dGradInputKernel(g) != .other
        try conv2dBackwardChannelLanes(g, gradOut: UnsafeRawPointer(gradOut).assumingMemoryBound(to: Float.self),
                                       x: UnsafeRawPointer(x).assumingMemoryBound(to: Float.self),
                                       weight: UnsafeRawPointer(weight).assumingMemoryBound(to: Float.self),
                                       gradX: lanesX ? gradX.map { UnsafeMutableRawPointer($0).assumingMemoryBound(to: Float.self) } : nil,
                                       gradWeight: gradWeight.map { UnsafeMutableRawPointer($0).assumingMemoryBound(to: Float.self) },
                                       gradBias: gradBias.map { UnsafeMutableRawPointer($0).assumingMemoryBound(to: Float.self) },
                                       accumulate: accumulate, workspace: unsafeDowncast(workspace, to: Workspace<Float>.self))
        if gradX == nil || lanesX { return }
        gradWeight = nil
    }
    if T.self == Float.self && conv2dUsesRowDirect(g) && g.width >= 16 {
        conv2dBackwardRowDirectFloat(g, gradOut: UnsafeRawPointer(gradOut).assumingMemoryBound(to: Float.self),
                                     x: UnsafeRawPointer(x).assumingMemoryBound(to: Float.self),
                                     weight: UnsafeRawPointer(weight).assumingMemoryBound(to: Float.self),
                                     gradX: gradX.map { UnsafeMutableRawPointer($0).assumingMemoryBound(to: Float.self) },
                                     gradWeight: gradWeight.map { UnsafeMutableRawPointer($0).assumingMemoryBound(to: Float.self) },
                                     accumulate: accumulate)
        return
    }

    let chunks = conv2dImageChunks(g)
    let threads = chunks == 1 ? Threading.numThreads : 1
    // dW is computed transposed, dWᵀ (kdim × K) = Σ_n col_n · g_nᵀ, so that col_n is the A operand
    // (packed straight from x_n; see Im2ColA) and only the small g_n needs a transposing pack.
    let planW = GEMMPlan(T.self, m: kdim, n: g.outChannels, k: hw, threads: threads)
    let planX = GEMMPlan(T.self, m: kdim, n: hw, k: g.outChannels, threads: threads)   // dcol = Wᵀ · g_n
    // Workspace slots: packing buffers (shared by the two GEMMs, which run one after the other),
    // then per image chunk a dcol and a dWᵀ (the chunks' dWᵀ are summed in chunk order at the end:
    // deterministic for a given thread count).
    let perChunk = max(planW.chunks, planX.chunks)
    let packCount = max(gradWeight != nil ? planW.bufferCount : 0, gradX != nil ? planX.bufferCount : 0)
    var buffers: [UnsafeMutablePointer<T>] = [], dcols: [UnsafeMutablePointer<T>] = []
    var partialWt: [UnsafeMutablePointer<T>] = []
    for t in 0..<(chunks * perChunk) { buffers.append(try workspace.buffer(t, count: packCount)) }
    var slot = chunks * perChunk
    if gradX != nil && !pointwise {
        for _ in 0..<chunks { dcols.append(try workspace.buffer(slot, count: g.colCount)); slot += 1 }
    }
    if gradWeight != nil {
        for _ in 0..<chunks { partialWt.append(try workspace.buffer(slot, count: wCount)); slot += 1 }
    }
    parallelFor(chunks) { chunk in
        let buffer = { (t: Int) in buffers[chunk * perChunk + t] }
        let images = chunkRange(chunk, of: chunks, total: g.batch)
        for n in images {
            let xn = x + n * xStride, gn = gradOut + n * yStride
            if gradWeight != nil {
                // dWᵀ (kdim × K) (+)= col_n (kdim × hw) · g_nᵀ (hw × K); a chunk's first image overwrites.
                let beta: T = n == images.lowerBound ? 0 : 1
                let gT = GEMMDenseB(b: gn, ldb: hw, trans: true)
                if pointwise {
                    gemmRun(planW, m: kdim, n: g.outChannels, k: hw, alpha: 1, a: GEMMDenseA(a: xn, lda: hw, trans: false),
                            b: gT, beta: beta, c: partialWt[chunk], ldc: g.outChannels, buffer: buffer)
                } else {
                    gemmRun(planW, m: kdim, n: g.outChannels, k: hw, alpha: 1, a: Im2ColA(g, x: xn),
                            b: gT, beta: beta, c: partialWt[chunk], ldc: g.outChannels, buffer: buffer)
                }
            }
            if let gradX {
                let gxn = gradX + n * xStride
                // dcol (kdim × hw) = Wᵀ (kdim × K) · g_n (K × hw), then fold back onto the image.
                let dcol = pointwise ? gxn : dcols[chunk]
                gemmRun(planX, m: kdim, n: hw, k: g.outChannels, alpha: 1,
                        a: GEMMDenseA(a: weight, lda: kdim, trans: true), b: GEMMDenseB(b: gn, ldb: hw, trans: false),
                        beta: 0, c: dcol, ldc: hw, buffer: buffer)
                if !pointwise { col2im(g, col: dcol, x: gxn, threads: threads) }
            }
        }
    }
    if let gradWeight {
        // dW[k, q] (+)= Σ_chunks dWᵀ_chunk[q, k], chunks in order.
        for k in 0..<g.outChannels {
            let row = gradWeight + k * kdim
            for q in 0..<kdim {
                var sum: T = accumulate ? row[q] : 0
                for t in 0..<chunks { sum += partialWt[t][q * g.outChannels + k] }
                row[q] = sum
            }
        }
    }
}

// MARK: - pointer level, naive oracle

/// The direct 7-loop definition of y = conv2d(x, weight, bias) (test oracle; same contract as
/// `conv2dForward`).
@inlinable
public func conv2dForwardNaive<T: CNNScalar>(_ g: Conv2DGeometry, x: UnsafePointer<T>, weight: UnsafePointer<T>,
                                             bias: UnsafePointer<T>?, y: UnsafeMutablePointer<T>) {
    for n in 0..<g.batch {
        for k in 0..<g.outChannels {
            for i in 0..<g.outH {
                for j in 0..<g.outW {
                    var sum: T = bias?[k] ?? 0
                    for c in 0..<g.inChannels {
                        for r in 0..<g.kernelH {
                            let h = i * g.strideH - g.padH + r * g.dilationH
                            if h < 0 || h >= g.height { continue }
                            for s in 0..<g.kernelW {
                                let w = j * g.strideW - g.padW + s * g.dilationW
                                if w < 0 || w >= g.width { continue }
                                let xv = x[((n * g.inChannels + c) * g.height + h) * g.width + w]
                                let wv = weight[((k * g.inChannels + c) * g.kernelH + r) * g.kernelW + s]
                                sum = multiplyAdd(xv, wv, sum)
                            }
                        }
                    }
                    y[((n * g.outChannels + k) * g.outH + i) * g.outW + j] = sum
                }
            }
        }
    }
}

/// The direct loops of conv2d's gradients (test oracle; same contract as `conv2dBackward`): every
/// product x[..] * w[..] of the forward sends g[n,k,i,j] * w to dx and g[n,k,i,j] * x to dw.
@inlinable
public func conv2dBackwardNaive<T: CNNScalar>(_ g: Conv2DGeometry, gradOut: UnsafePointer<T>, x: UnsafePointer<T>,
                                              weight: UnsafePointer<T>, gradX: UnsafeMutablePointer<T>?,
                                              gradWeight: UnsafeMutablePointer<T>?, gradBias: UnsafeMutablePointer<T>?,
                                              accumulate: Bool) {
    let wCount = g.outChannels * g.colRows
    gradX?.update(repeating: 0, count: g.batch * g.inChannels * g.height * g.width)
    if !accumulate {
        gradWeight?.update(repeating: 0, count: wCount)
        gradBias?.update(repeating: 0, count: g.outChannels)
    }
    for n in 0..<g.batch {
        for k in 0..<g.outChannels {
            for i in 0..<g.outH {
                for j in 0..<g.outW {
                    let go = gradOut[((n * g.outChannels + k) * g.outH + i) * g.outW + j]
                    gradBias?[k] += go
                    for c in 0..<g.inChannels {
                        for r in 0..<g.kernelH {
                            let h = i * g.strideH - g.padH + r * g.dilationH
                            if h < 0 || h >= g.height { continue }
                            for s in 0..<g.kernelW {
                                let w = j * g.strideW - g.padW + s * g.dilationW
                                if w < 0 || w >= g.width { continue }
                                let xi = ((n * g.inChannels + c) * g.height + h) * g.width + w
                                let wi = ((k * g.inChannels + c) * g.kernelH + r) * g.kernelW + s
                                if let gradX { gradX[xi] = multiplyAdd(go, weight[wi], gradX[xi]) }
                                if let gradWeight { gradWeight[wi] = multiplyAdd(go, x[xi], gradWeight[wi]) }
                            }
                        }
                    }
                }
            }
        }
    }
}

// MARK: - Tensor level

/// Throws a value error if the memory of `out` overlaps that of `input` (named `name`).
@usableFromInline
func checkNoOverlap<T>(op: String, _ out: Tensor<T>, _ input: Tensor<T>, _ name: String) throws {
    if out.count == 0 || input.count == 0 { return }
    let o = UnsafeRawPointer(out.pointer), i = UnsafeRawPointer(input.pointer)
    let size = MemoryLayout<T>.stride
    if o < i + input.count * size && i < o + out.count * size {
        throw SwiftCNNError.value("\(op): out must not overlap \(name)")
    }
}

/// Throws a value error unless `out` has `shape`.
@usableFromInline
func checkOutShape<T>(op: String, _ out: Tensor<T>, _ shape: [Int]) throws {
    guard out.shape == shape else {
        throw SwiftCNNError.value("\(op): out must have shape \(describeShape(shape)), got \(describeShape(out.shape))")
    }
}

/// y = conv2d(x, weight, bias), validated (see `Conv2DGeometry.init`).
///
///     x (N, C, H, W), weight (K, C, kH, kW), bias (K)  ->  y (N, K, Ho, Wo)
///     y[n,k,i,j] = b[k] + sum_{c,r,s} x[n, c, i*sh - ph + r*dh, j*sw - pw + s*dw] * w[k,c,r,s]
///
/// With `into:` the result is written into `out` (which must have y's shape and not overlap the
/// inputs) and `out` is returned; otherwise a new tensor.
@inlinable
public func conv2d<T: CNNScalar>(_ x: Tensor<T>, weight: Tensor<T>, bias: Tensor<T>? = nil,
                                 stride: (Int, Int) = (1, 1), padding: (Int, Int) = (0, 0),
                                 dilation: (Int, Int) = (1, 1), into out: Tensor<T>? = nil) throws -> Tensor<T> {
    let op = "conv2d"
    let g = try Conv2DGeometry(op: op, xShape: x.shape, weightShape: weight.shape, biasShape: bias?.shape,
                               stride: stride, padding: padding, dilation: dilation)
    let y: Tensor<T>
    if let out {
        try checkOutShape(op: op, out, g.outputShape)
        try checkNoOverlap(op: op, out, x, "x")
        try checkNoOverlap(op: op, out, weight, "weight")
        if let bias { try checkNoOverlap(op: op, out, bias, "bias") }
        y = out
    } else {
        y = try Tensor(zeros: g.outputShape)
    }
    try conv2dForward(g, x: x.pointer, weight: weight.pointer, bias: bias.map { UnsafePointer($0.pointer) },
                      y: y.pointer, workspace: Workspace<T>())
    return y
}

/// The gradients of conv2d, validated: grad_out must have the forward output's shape.
///
///     gradOut (N, K, Ho, Wo), x (N, C, H, W), weight (K, C, kH, kW)
///     -> gradX (N, C, H, W), gradWeight (K, C, kH, kW), gradBias (K) = gradOut summed over N, Ho, Wo
@inlinable
public func conv2dBackward<T: CNNScalar>(gradOut: Tensor<T>, x: Tensor<T>, weight: Tensor<T>,
                                         stride: (Int, Int) = (1, 1), padding: (Int, Int) = (0, 0),
                                         dilation: (Int, Int) = (1, 1))
    throws -> (gradX: Tensor<T>, gradWeight: Tensor<T>, gradBias: Tensor<T>) {
    let op = "conv2d_backward"
    let g = try Conv2DGeometry(op: op, xShape: x.shape, weightShape: weight.shape, biasShape: nil,
                               stride: stride, padding: padding, dilation: dilation)
    try g.checkGradOut(op: op, gradOut.shape)
    let gradX = try Tensor<T>(zeros: g.inputShape)
    let gradWeight = try Tensor<T>(zeros: g.weightShape)
    let gradBias = try Tensor<T>(zeros: g.biasShape)
    try conv2dBackward(g, gradOut: gradOut.pointer, x: x.pointer, weight: weight.pointer, gradX: gradX.pointer,
                       gradWeight: gradWeight.pointer, gradBias: gradBias.pointer, accumulate: false,
                       workspace: Workspace<T>())
    return (gradX, gradWeight, gradBias)
}

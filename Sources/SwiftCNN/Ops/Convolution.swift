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
/// the 180°-rotated filter (the lecture's identity). This file holds the op's semantics and its
/// dispatch among the paths: tiny problems run direct loops (Kernels/TinyConv.swift); for stride 1
/// without dilation in Float, direct kernels compute all three (Kernels/DirectConv*.swift, chosen in
/// Ops/DirectConvDispatch.swift) or, for small first layers, row-direct kernels
/// (Kernels/RowDirectConv.swift); otherwise the fast path computes them as GEMMs over the im2col
/// matrix of each image (see Kernels/Im2Col.swift; the matrix is packed into the GEMM straight from
/// the image, never stored whole):
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
func conv2dForward<T: CNNScalar>(_ g: Conv2DGeometry, x: UnsafePointer<T>, weight: UnsafePointer<T>,
                                 bias: UnsafePointer<T>?, y: UnsafeMutablePointer<T>,
                                 epilogue: ConvEpilogue = .none, workspace: ScratchSlots<T>) throws {
    #if DEBUG
    if debugUsesScalarKernels {   // unoptimized builds: plain loops (Ops/DebugScalarKernels.swift)
        debugConv2dForward(g, x: x, weight: weight, bias: bias, y: y)
        applyEpilogue(epilogue, y, count: g.batch * g.outChannels * g.outH * g.outW)
        return
    }
    #endif
    let (kdim, hw) = (g.colRows, g.colCols)           // GEMM: (K × kdim) · (kdim × hw)
    // A tiny problem (a functional call on a small input) is cheaper as direct loops: packing
    // im2col panels padded to the 16/64-wide register tile costs many times the few multiply-adds.
    if conv2dUsesDirectLoops(g) {
        conv2dForwardDirect(g, x: x, weight: weight, bias: bias, y: y)
        applyEpilogue(epilogue, y, count: g.batch * g.outChannels * g.outH * g.outW)
        return
    }
    let kernel = conv2dForwardKernel(g)
    if kernel == .winograd {
        try winogradConv2dForward(g, x: x, weight: weight, bias: bias, y: y, workspace: workspace)
        applyEpilogueInParallel(epilogue, y, count: g.batch * g.outChannels * g.outH * g.outW)
        return
    }
    if T.self == Float.self && kernel != .other {
        try conv2dForwardChannelLanes(g, x: UnsafeRawPointer(x).assumingMemoryBound(to: Float.self),
                                      weight: UnsafeRawPointer(weight).assumingMemoryBound(to: Float.self),
                                      bias: bias.map { UnsafeRawPointer($0).assumingMemoryBound(to: Float.self) },
                                      y: UnsafeMutableRawPointer(y).assumingMemoryBound(to: Float.self),
                                      epilogue: epilogue, workspace: unsafeDowncast(workspace, to: ScratchSlots<Float>.self))
        return
    }
    if T.self == Double.self && conv2dUsesDoubleDirect(g) {   // Kernels/DirectConvDouble.swift
        try conv2dForwardDoubleDirect(g, x: UnsafeRawPointer(x).assumingMemoryBound(to: Double.self),
                                      weight: UnsafeRawPointer(weight).assumingMemoryBound(to: Double.self),
                                      bias: bias.map { UnsafeRawPointer($0).assumingMemoryBound(to: Double.self) },
                                      y: UnsafeMutableRawPointer(y).assumingMemoryBound(to: Double.self),
                                      epilogue: epilogue, workspace: unsafeDowncast(workspace, to: ScratchSlots<Double>.self))
        return
    }
    if T.self == Float.self && conv2dUsesRowDirect(g) {
        try conv2dForwardRowDirectFloat(g, x: UnsafeRawPointer(x).assumingMemoryBound(to: Float.self),
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

/// The most multiply-adds (N*K*C*kH*kW*Ho*Wo) `conv2dForward` computes with direct loops instead of
/// the packed GEMM. Kept low so that the tests' small shapes still exercise the GEMM path.
@usableFromInline let conv2dDirectMaxWork = 1024

/// Whether `conv2dForward` computes `g` with the direct loops (Kernels/TinyConv.swift): at most
/// `conv2dDirectMaxWork` multiply-adds. (In Double: the product of the sizes is not one the
/// geometry checked.)
@inlinable
func conv2dUsesDirectLoops(_ g: Conv2DGeometry) -> Bool {
    Double(g.batch) * Double(g.outChannels) * Double(g.colRows) * Double(g.colCols) <= Double(conv2dDirectMaxWork)
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
func conv2dBackward<T: CNNScalar>(_ g: Conv2DGeometry, gradOut: UnsafePointer<T>, x: UnsafePointer<T>,
                                  weight: UnsafePointer<T>, gradX: UnsafeMutablePointer<T>?,
                                  gradWeight: UnsafeMutablePointer<T>?, gradBias: UnsafeMutablePointer<T>?,
                                  accumulate: Bool, workspace: ScratchSlots<T>) throws {
    #if DEBUG
    if debugUsesScalarKernels {   // unoptimized builds: plain loops (Ops/DebugScalarKernels.swift)
        debugConv2dBackward(g, gradOut: gradOut, x: x, weight: weight, gradX: gradX, gradWeight: gradWeight,
                            gradBias: gradBias, accumulate: accumulate)
        return
    }
    #endif
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
                                          accumulate: Bool, workspace: ScratchSlots<T>) throws {
    let (kdim, hw) = (g.colRows, g.colCols)
    let xStride = g.inChannels * g.height * g.width
    let yStride = g.outChannels * hw
    let wCount = g.outChannels * kdim
    let pointwise = conv2dIsPointwise(g)

    if conv2dUsesWinograd(g) && (gradX == nil || conv2dGradInputKernel(g) == .winograd) {
        try conv2dBackwardWinograd(g, gradOut: gradOut, x: x, weight: weight, gradX: gradX, gradWeight: gradWeight,
                                   gradBias: gradBias, accumulate: accumulate, workspace: workspace)
        return
    }
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
    if T.self == Double.self && conv2dUsesDoubleDirect(g) {   // Kernels/DirectConvDouble.swift
        try conv2dBackwardDoubleDirect(g, gradOut: UnsafeRawPointer(gradOut).assumingMemoryBound(to: Double.self),
                                       x: UnsafeRawPointer(x).assumingMemoryBound(to: Double.self),
                                       weight: UnsafeRawPointer(weight).assumingMemoryBound(to: Double.self),
                                       gradX: gradX.map { UnsafeMutableRawPointer($0).assumingMemoryBound(to: Double.self) },
                                       gradWeight: gradWeight.map { UnsafeMutableRawPointer($0).assumingMemoryBound(to: Double.self) },
                                       accumulate: accumulate, workspace: unsafeDowncast(workspace, to: ScratchSlots<Double>.self))
        return
    }
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
                                       accumulate: accumulate, workspace: unsafeDowncast(workspace, to: ScratchSlots<Float>.self))
        if gradX == nil || lanesX { return }
        gradWeight = nil
    }
    if T.self == Float.self && conv2dUsesRowDirect(g) && g.width >= 16 {
        try conv2dBackwardRowDirectFloat(g, gradOut: UnsafeRawPointer(gradOut).assumingMemoryBound(to: Float.self),
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

// MARK: - the C ABI's entry points

/// `conv2dForward` for the C ABI, with a fresh `Workspace` per call (same contract, no epilogue).
@_spi(Engine) @inlinable
public func conv2dForward<T: CNNScalar>(_ g: Conv2DGeometry, x: UnsafePointer<T>, weight: UnsafePointer<T>,
                                        bias: UnsafePointer<T>?, y: UnsafeMutablePointer<T>,
                                        workspace: Workspace<T>) throws {
    try conv2dForward(g, x: x, weight: weight, bias: bias, y: y, workspace: workspace.slots)
}

/// `conv2dForward` for the C ABI without a workspace argument: a tiny problem runs the direct loops
/// and allocates nothing (a fresh `Workspace` is a class instance: an allocation and a release per
/// call, a visible share of a sub-microsecond call); any other gets a fresh `Workspace`.
@_spi(Engine) @inlinable
public func conv2dForward<T: CNNScalar>(_ g: Conv2DGeometry, x: UnsafePointer<T>, weight: UnsafePointer<T>,
                                        bias: UnsafePointer<T>?, y: UnsafeMutablePointer<T>) throws {
    #if DEBUG
    let direct = !debugUsesScalarKernels && conv2dUsesDirectLoops(g)
    #else
    let direct = conv2dUsesDirectLoops(g)
    #endif
    if direct {
        conv2dForwardDirect(g, x: x, weight: weight, bias: bias, y: y)
        return
    }
    try conv2dForward(g, x: x, weight: weight, bias: bias, y: y, workspace: ScratchSlots<T>())
}

/// `conv2dBackward` for the C ABI, with a fresh `Workspace` per call (same contract).
@_spi(Engine) @inlinable
public func conv2dBackward<T: CNNScalar>(_ g: Conv2DGeometry, gradOut: UnsafePointer<T>, x: UnsafePointer<T>,
                                         weight: UnsafePointer<T>, gradX: UnsafeMutablePointer<T>?,
                                         gradWeight: UnsafeMutablePointer<T>?, gradBias: UnsafeMutablePointer<T>?,
                                         accumulate: Bool, workspace: Workspace<T>) throws {
    try conv2dBackward(g, gradOut: gradOut, x: x, weight: weight, gradX: gradX, gradWeight: gradWeight,
                       gradBias: gradBias, accumulate: accumulate, workspace: workspace.slots)
}

// MARK: - pointer level, naive oracle

/// The direct 7-loop definition of y = conv2d(x, weight, bias) (test oracle; same contract as
/// `conv2dForward`).
@inlinable
func conv2dForwardNaive<T: CNNScalar>(_ g: Conv2DGeometry, x: UnsafePointer<T>, weight: UnsafePointer<T>,
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
func conv2dBackwardNaive<T: CNNScalar>(_ g: Conv2DGeometry, gradOut: UnsafePointer<T>, x: UnsafePointer<T>,
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
                      y: y.pointer, workspace: ScratchSlots<T>())
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
                       workspace: ScratchSlots<T>())
    return (gradX, gradWeight, gradBias)
}

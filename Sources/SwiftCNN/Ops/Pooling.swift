/// 2-D max and average pooling: forward and backward.
///
///     x (N, C, H, W)  ->  y (N, C, Ho, Wo),   Ho = (H + 2*ph - kH) / sh + 1   (same for Wo)
///
/// Window (i, j) covers rows i*sh - ph ..< i*sh - ph + kH and columns j*sw - pw ..< j*sw - pw + kW.
///
///     max:      y[n,c,i,j] = max over the window, padding counting as -inf
///               dx gets g[n,c,i,j] at the window's FIRST maximum in row-major order (PyTorch's
///               rule; a NaN counts as a maximum, as PyTorch); overlapping windows accumulate.
///     average:  y[n,c,i,j] = (sum over the window's real pixels) / (kH*kW)
///               dx gets g[n,c,i,j] / (kH*kW) at every real pixel of the window.
///
/// Average pooling counts the padded zeros in the divisor (PyTorch's count_include_pad=True). PyTorch
/// divides by the window clipped to the *padded* input; since padding <= kernel/2 and there is no
/// ceil_mode, every window lies inside the padded input, so that is always kH*kW.
///
/// Each (n, c) plane is independent: the fast path runs planes in parallel chunks with disjoint
/// outputs (deterministic); within a plane it clips each window to the input once instead of testing
/// every tap. The `Naive` functions loop over every tap of the unclipped window (the oracle).

// MARK: - pointer level, fast path

/// Plane chunks worth running in parallel for this geometry.
@inlinable
func poolPlaneChunks(_ g: Pool2DGeometry) -> Int {
    let planes = g.batch * g.channels
    // In Double: output count times window area is not a count the geometry checked for overflow.
    let work = Int(min(Double(planes) * Double(g.outH * g.outW) * Double(g.kernelH) * Double(g.kernelW), 1e15))
    return min(max(planes, 1), parallelChunks(work: work, minPerThread: 50_000))
}

/// The window of output (i, j) clipped to the input: rows h0..<h1, columns w0..<w1 (never empty,
/// because padding <= kernel/2).
@inlinable @inline(__always)
func poolWindow(_ g: Pool2DGeometry, _ i: Int, _ j: Int) -> (h0: Int, h1: Int, w0: Int, w1: Int) {
    let hs = i * g.strideH - g.padH, ws = j * g.strideW - g.padW
    return (max(hs, 0), min(hs + g.kernelH, g.height), max(ws, 0), min(ws + g.kernelW, g.width))
}

/// y = pool(x). For max pooling, `argmax` (optional, N*C*Ho*Wo entries) receives for each output the
/// flat index h*W + w, within its (n, c) input plane, of the window's first maximum.
///
///     x (N, C, H, W) -> y (N, C, Ho, Wo) overwritten; argmax (N, C, Ho, Wo) Int32 (max only)
@_spi(Engine) @inlinable
public func pool2dForward<T: CNNScalar>(_ g: Pool2DGeometry, kind: PoolKind, x: UnsafePointer<T>,
                                        y: UnsafeMutablePointer<T>, argmax: UnsafeMutablePointer<Int32>?) {
    let inPlane = g.height * g.width, outPlane = g.outH * g.outW
    let chunks = poolPlaneChunks(g)
    let divisor = T(g.kernelH * g.kernelW)
    // Pass-1 scratch of pool2x2Plane: 2*Ho*Wo + 32 values and as many indices per chunk (not per
    // plane), one block taken before the threads start: per chunk its values, then after all the
    // values the indices. This function does not throw: if the scratch cannot be had, the general
    // loop below (same results, no scratch) runs instead.
    let scratchCount = 2 * outPlane + 32
    let (values, overflow) = chunks.multipliedReportingOverflow(by: scratchCount)
    if poolIs2x2Stride2(g), !overflow,
       let block = try? allocateAligned(UInt8.self, count: values * (MemoryLayout<T>.stride + 4), what: "pool2d: scratch") {
        defer { deallocateAligned(block) }
        let scratch = UnsafeMutableRawPointer(block).bindMemory(to: T.self, capacity: values)
        let scratchIndex = UnsafeMutableRawPointer(block + values * MemoryLayout<T>.stride)
            .bindMemory(to: Int32.self, capacity: values)
        parallelFor(chunks) { chunk in
            for p in chunkRange(chunk, of: chunks, total: g.batch * g.channels) {
                pool2x2Plane(g, kind: kind, x: x + p * inPlane, y: y + p * outPlane, argmax: argmax.map { $0 + p * outPlane },
                             scratch: scratch + chunk * scratchCount, scratchIndex: scratchIndex + chunk * scratchCount)
            }
        }
        return
    }
    parallelFor(chunks) { chunk in
        for p in chunkRange(chunk, of: chunks, total: g.batch * g.channels) {
            let xp = x + p * inPlane, yp = y + p * outPlane
            for i in 0..<g.outH {
                for j in 0..<g.outW {
                    let win = poolWindow(g, i, j)
                    switch kind {
                    case .max:
                        var best = -T.infinity, bestIndex = win.h0 * g.width + win.w0
                        for h in win.h0..<win.h1 {
                            for w in win.w0..<win.w1 {
                                let v = xp[h * g.width + w]
                                // Strict > keeps the first maximum; NaN wins (propagates) as in PyTorch.
                                // Written as selects, not an `if`: on real data the comparison is a
                                // coin flip, and the mispredicted branch made this loop the largest
                                // item of the lecture network's inference profile.
                                let take = v > best || v.isNaN
                                best = take ? v : best
                                bestIndex = take ? h * g.width + w : bestIndex
                            }
                        }
                        yp[i * g.outW + j] = best
                        argmax?[p * outPlane + i * g.outW + j] = Int32(truncatingIfNeeded: bestIndex)
                    case .average:
                        var sum: T = 0
                        for h in win.h0..<win.h1 {
                            for w in win.w0..<win.w1 { sum += xp[h * g.width + w] }
                        }
                        yp[i * g.outW + j] = sum / divisor
                    }
                }
            }
        }
    }
}

/// True for the ubiquitous 2x2 window, stride 2, no padding (LeNet's pools): `pool2x2Plane` applies.
@inlinable
func poolIs2x2Stride2(_ g: Pool2DGeometry) -> Bool {
    g.kernelH == 2 && g.kernelW == 2 && g.strideH == 2 && g.strideW == 2 && g.padH == 0 && g.padW == 0
}

/// One (n, c) plane of a 2x2 stride-2 unpadded pool: the same results as the general loop above
/// (same tie and NaN rule, same summation order), specialized because the general loop's per-output
/// window clipping, inner loop bounds, `kind` switch and optional argmax store made pooling the
/// largest item of the lecture network's inference profile (over a third of it).
/// Every window lies inside the input (Ho = floor(H/2), Wo = floor(W/2)).
///
/// Max pooling runs in two passes: first the horizontal pairs (x[2j], x[2j+1]) of each used row,
/// 16 pairs per SIMD step (even/odd lanes of a 32-wide load), into `scratch`; then the vertical pairs
/// of those results.
/// The max rule "take v if v > best or v is NaN", folded left over a, b, c, d, gives the first
/// maximum, or the last NaN if any; fold(fold(a, b), fold(c, d)) gives exactly the same value and
/// index, so the pairwise order is not a change of result.
/// `scratch` and `scratchIndex` hold at least 2 * Ho * Wo + 32 elements each.
@inlinable
func pool2x2Plane<T: CNNScalar>(_ g: Pool2DGeometry, kind: PoolKind, x: UnsafePointer<T>, y: UnsafeMutablePointer<T>,
                                argmax: UnsafeMutablePointer<Int32>?, scratch: UnsafeMutablePointer<T>,
                                scratchIndex: UnsafeMutablePointer<Int32>) {
    let width = g.width, outW = g.outW, outH = g.outH
    // "v replaces best": v > best, or v is NaN (v != v), branch-free.
    @inline(__always) func takes(_ v: T, _ best: T) -> Bool { v > best || v != v }
    if kind == .max {
        // Pass 1: horizontal pairs of every used row r (0 ..< 2*Ho; an odd last row is unused).
        // Even rows go to `top`, odd rows to `bottom`, each Ho x Wo, so that pass 2 pairs top[o] with
        // bottom[o] over one contiguous run (vectorizable even though Wo = 14 or 5 is narrower than
        // a vector). Each region has 16 spare slots: a vector step may write up to 15 values past
        // its row, into the next row of the same parity (rewritten later) or the spare slots.
        let outCount = outH * outW, plane = g.height * width
        let top = scratch, bottom = scratch + outCount + 16
        let topIndex = scratchIndex, bottomIndex = scratchIndex + outCount + 16
        for r in 0..<(2 * outH) {
            let src = x + r * width, rowBase = r * width
            let dst = (r & 1 == 0 ? top : bottom) + (r >> 1) * outW
            let dstIndex = (r & 1 == 0 ? topIndex : bottomIndex) + (r >> 1) * outW
            var j = 0
            if T.self == Float.self {
                // Float only: its comparison mask converts to the Int32 index lanes (resolved at compile time).
                j = pool2x2RowPairsFloat16(pairs: outW, readable: plane - rowBase,
                                           x: UnsafeRawPointer(src).assumingMemoryBound(to: Float.self),
                                           out: UnsafeMutableRawPointer(dst).assumingMemoryBound(to: Float.self),
                                           outIndex: argmax == nil ? nil : dstIndex, indexBase: rowBase)
            }
            while j < outW {
                let a = src[2 * j], b = src[2 * j + 1]
                let takeB = takes(b, a)
                dst[j] = takeB ? b : a
                dstIndex[j] = Int32(truncatingIfNeeded: rowBase + 2 * j) &+ (takeB ? 1 : 0)
                j += 1
            }
        }
        // Pass 2: vertical pairs (top[o], bottom[o]).
        var o = 0
        if T.self == Float.self {
            o = pool2x2VerticalFloat16(count: outCount, top: UnsafeRawPointer(top).assumingMemoryBound(to: Float.self),
                                       bottom: UnsafeRawPointer(bottom).assumingMemoryBound(to: Float.self),
                                       topIndex: topIndex, bottomIndex: bottomIndex,
                                       y: UnsafeMutableRawPointer(y).assumingMemoryBound(to: Float.self), argmax: argmax)
        }
        while o < outCount {
            let take = takes(bottom[o], top[o])
            y[o] = take ? bottom[o] : top[o]
            argmax?[o] = take ? bottomIndex[o] : topIndex[o]
            o += 1
        }
        return
    }
    for i in 0..<outH {
        let r0 = x + 2 * i * width, r1 = r0 + width, yr = y + i * outW
        switch kind {
        case .max:
            // Odd W: the left fold over a, b, c, d directly. Starting from best = a equals starting
            // from -inf (a is always taken unless a == -inf, and then best is -inf either way).
            let base = Int32(truncatingIfNeeded: 2 * i * width), stride = Int32(truncatingIfNeeded: width)
            for j in 0..<outW {
                let w = 2 * j, wi = base &+ Int32(truncatingIfNeeded: w)
                var best = r0[w], index = wi
                if takes(r0[w + 1], best) { best = r0[w + 1]; index = wi &+ 1 }
                if takes(r1[w], best) { best = r1[w]; index = wi &+ stride }
                if takes(r1[w + 1], best) { best = r1[w + 1]; index = wi &+ stride &+ 1 }
                yr[j] = best
                argmax?[i * outW + j] = index
            }
        case .average:
            // Same summation order as the general loop: 0 + row 0 left to right, then row 1.
            for j in 0..<outW {
                let w = 2 * j
                var sum: T = 0
                sum += r0[w]; sum += r0[w + 1]; sum += r1[w]; sum += r1[w + 1]
                yr[j] = sum / 4
            }
        }
    }
}

/// Pass 1 of `pool2x2Plane` for one row, Float, 16 pairs per step: out[j] = the winner of
/// (x[2j], x[2j+1]) and outIndex[j] its flat index in the plane (indexBase + 2j or + 1). A step may
/// write up to 15 values past `pairs` (see the caller) but reads only the `readable` elements from
/// x on. Returns how many pairs it did, leaving the rest to the scalar loop.
@inlinable
func pool2x2RowPairsFloat16(pairs: Int, readable: Int, x: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                            outIndex: UnsafeMutablePointer<Int32>?, indexBase: Int) -> Int {
    let lane = SIMD16<Int32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
    var j = 0
    while j < pairs && 2 * j + 32 <= readable {
        let v = UnsafeRawPointer(x + 2 * j).loadUnaligned(as: SIMD32<Float>.self)
        let a = v.evenHalf, b = v.oddHalf
        let takeB = (b .> a) .| (b .!= b)             // b > a, or b is NaN
        UnsafeMutableRawPointer(out + j).storeBytes(of: a.replacing(with: b, where: takeB), as: SIMD16<Float>.self)
        if let outIndex {
            let index = ((lane &+ Int32(truncatingIfNeeded: j)) &<< 1) &+ Int32(truncatingIfNeeded: indexBase)
            let chosen = index.replacing(with: index &+ 1, where: takeB)
            UnsafeMutableRawPointer(outIndex + j).storeBytes(of: chosen, as: SIMD16<Int32>.self)
        }
        j += 16
    }
    return min(j, pairs)
}

/// Pass 2 of `pool2x2Plane`, Float, 16 outputs per step: y[o] = bottom[o] if it wins over top[o]
/// (greater, or NaN), else top[o], and the matching index. Returns how many it did (a multiple of 16).
@inlinable
func pool2x2VerticalFloat16(count: Int, top: UnsafePointer<Float>, bottom: UnsafePointer<Float>,
                            topIndex: UnsafePointer<Int32>, bottomIndex: UnsafePointer<Int32>,
                            y: UnsafeMutablePointer<Float>, argmax: UnsafeMutablePointer<Int32>?) -> Int {
    var o = 0
    while o + 16 <= count {
        let t = UnsafeRawPointer(top + o).loadUnaligned(as: SIMD16<Float>.self)
        let b = UnsafeRawPointer(bottom + o).loadUnaligned(as: SIMD16<Float>.self)
        let take = (b .> t) .| (b .!= b)
        UnsafeMutableRawPointer(y + o).storeBytes(of: t.replacing(with: b, where: take), as: SIMD16<Float>.self)
        if let argmax {
            let ti = UnsafeRawPointer(topIndex + o).loadUnaligned(as: SIMD16<Int32>.self)
            let bi = UnsafeRawPointer(bottomIndex + o).loadUnaligned(as: SIMD16<Int32>.self)
            UnsafeMutableRawPointer(argmax + o).storeBytes(of: ti.replacing(with: bi, where: take), as: SIMD16<Int32>.self)
        }
        o += 16
    }
    return o
}

/// dx for max pooling from saved argmax indices (layers keep them from the forward).
///
///     gradOut (N, C, Ho, Wo), argmax (N, C, Ho, Wo) from `pool2dForward` -> gradX (N, C, H, W) overwritten
@usableFromInline @_specialize(where T == Float) @_specialize(where T == Double)
func maxPool2dBackward<T: CNNScalar>(_ g: Pool2DGeometry, gradOut: UnsafePointer<T>,
                                     argmax: UnsafePointer<Int32>, gradX: UnsafeMutablePointer<T>,
                                     then activation: ActivationBackward<T> = .none) {
    let inPlane = g.height * g.width, outPlane = g.outH * g.outW
    let chunks = poolPlaneChunks(g)
    parallelFor(chunks) { chunk in
        for p in chunkRange(chunk, of: chunks, total: g.batch * g.channels) {
            let gx = gradX + p * inPlane, go = gradOut + p * outPlane, am = argmax + p * outPlane
            gx.update(repeating: 0, count: inPlane)
            for o in 0..<outPlane {
                // The index was produced for this geometry; a corrupted one must not write out of bounds.
                let idx = Int(am[o])
                if idx >= 0 && idx < inPlane { gx[idx] += go[o] }
            }
            // The preceding activation's backward on this plane while it is in cache (the same
            // per-element formulas as its own backward, so the result is identical).
            switch activation {
            case .none:
                break
            case .relu(let x):
                reluBackward(count: inPlane, gradOut: UnsafePointer(gx), x: x + p * inPlane, gradX: gx)
            case .sigmoid(let y):
                sigmoidBackward(count: inPlane, gradOut: UnsafePointer(gx), y: y + p * inPlane, gradX: gx)
            }
        }
    }
}

/// The backward of an activation that precedes a max pool, fused into the pool's backward by
/// `Sequential`: the activation's saved tensor (ReLU's input, Sigmoid's output), laid out as the
/// pool's input.
@usableFromInline
enum ActivationBackward<T: CNNScalar> {
    case none
    case relu(x: UnsafePointer<T>)
    case sigmoid(y: UnsafePointer<T>)
}

/// dx of pooling, recomputing max pooling's argmax from x.
///
///     gradOut (N, C, Ho, Wo), x (N, C, H, W) -> gradX (N, C, H, W) overwritten
@_spi(Engine) @inlinable
public func pool2dBackward<T: CNNScalar>(_ g: Pool2DGeometry, kind: PoolKind, gradOut: UnsafePointer<T>,
                                         x: UnsafePointer<T>, gradX: UnsafeMutablePointer<T>) {
    let inPlane = g.height * g.width, outPlane = g.outH * g.outW
    let chunks = poolPlaneChunks(g)
    let divisor = T(g.kernelH * g.kernelW)
    if kind == .max && poolIs2x2Stride2(g) && outPlane <= 4096 {
        // The argmax recomputed by the forward's vectorized 2x2 kernel (same winners, same tie and
        // NaN rule), then routed: ~10x faster than the general loop below, which made the
        // functional max_pool2d_backward (and the Python MaxPool2d layer) the slowest op of a
        // LeNet step. Scratch on the stack (at most ~150 KiB).
        parallelFor(chunks) { chunk in
            withUnsafeTemporaryAllocation(of: T.self, capacity: 3 * outPlane + 32) { values in
                withUnsafeTemporaryAllocation(of: Int32.self, capacity: 3 * outPlane + 32) { indices in
                    let y = values.baseAddress!, winners = indices.baseAddress!
                    for p in chunkRange(chunk, of: chunks, total: g.batch * g.channels) {
                        let gx = gradX + p * inPlane, go = gradOut + p * outPlane
                        pool2x2Plane(g, kind: .max, x: x + p * inPlane, y: y, argmax: winners,
                                     scratch: y + outPlane, scratchIndex: winners + outPlane)
                        gx.update(repeating: 0, count: inPlane)
                        for o in 0..<outPlane { gx[Int(winners[o])] += go[o] }
                    }
                }
            }
        }
        return
    }
    parallelFor(chunks) { chunk in
        for p in chunkRange(chunk, of: chunks, total: g.batch * g.channels) {
            let xp = x + p * inPlane, gx = gradX + p * inPlane, go = gradOut + p * outPlane
            gx.update(repeating: 0, count: inPlane)
            for i in 0..<g.outH {
                for j in 0..<g.outW {
                    let win = poolWindow(g, i, j)
                    let gv = go[i * g.outW + j]
                    switch kind {
                    case .max:
                        var best = -T.infinity, bestIndex = win.h0 * g.width + win.w0
                        for h in win.h0..<win.h1 {
                            for w in win.w0..<win.w1 {
                                let v = xp[h * g.width + w]
                                if v > best || v.isNaN { best = v; bestIndex = h * g.width + w }
                            }
                        }
                        gx[bestIndex] += gv
                    case .average:
                        let share = gv / divisor
                        for h in win.h0..<win.h1 {
                            for w in win.w0..<win.w1 { gx[h * g.width + w] += share }
                        }
                    }
                }
            }
        }
    }
}

// MARK: - pointer level, naive oracle

/// The definition, tap by tap over the unclipped window (test oracle; same contract as
/// `pool2dForward`).
@inlinable
func pool2dForwardNaive<T: CNNScalar>(_ g: Pool2DGeometry, kind: PoolKind, x: UnsafePointer<T>,
                                      y: UnsafeMutablePointer<T>, argmax: UnsafeMutablePointer<Int32>?) {
    for p in 0..<(g.batch * g.channels) {
        for i in 0..<g.outH {
            for j in 0..<g.outW {
                var best = -T.infinity, bestIndex = -1, sum: T = 0
                for r in 0..<g.kernelH {
                    for s in 0..<g.kernelW {
                        let h = i * g.strideH - g.padH + r, w = j * g.strideW - g.padW + s
                        let inside = h >= 0 && h < g.height && w >= 0 && w < g.width
                        let v = inside ? x[(p * g.height + h) * g.width + w] : (kind == .max ? -T.infinity : 0)
                        sum += v
                        if inside && (bestIndex < 0 || v > best || v.isNaN) { best = v; bestIndex = h * g.width + w }
                    }
                }
                let o = (p * g.outH + i) * g.outW + j
                if kind == .max {
                    y[o] = best
                    argmax?[o] = Int32(truncatingIfNeeded: bestIndex)
                } else {
                    y[o] = sum / T(g.kernelH * g.kernelW)
                }
            }
        }
    }
}

/// The definition of pooling's dx (test oracle; same contract as `pool2dBackward`).
@inlinable
func pool2dBackwardNaive<T: CNNScalar>(_ g: Pool2DGeometry, kind: PoolKind, gradOut: UnsafePointer<T>,
                                       x: UnsafePointer<T>, gradX: UnsafeMutablePointer<T>) {
    gradX.update(repeating: 0, count: g.batch * g.channels * g.height * g.width)
    for p in 0..<(g.batch * g.channels) {
        for i in 0..<g.outH {
            for j in 0..<g.outW {
                let gv = gradOut[(p * g.outH + i) * g.outW + j]
                var best = -T.infinity, bestIndex = -1
                for r in 0..<g.kernelH {
                    for s in 0..<g.kernelW {
                        let h = i * g.strideH - g.padH + r, w = j * g.strideW - g.padW + s
                        guard h >= 0 && h < g.height && w >= 0 && w < g.width else { continue }
                        let xi = (p * g.height + h) * g.width + w
                        if kind == .average {
                            gradX[xi] += gv / T(g.kernelH * g.kernelW)
                        } else if bestIndex < 0 || x[xi] > best || x[xi].isNaN {
                            best = x[xi]; bestIndex = xi
                        }
                    }
                }
                if kind == .max { gradX[bestIndex] += gv }
            }
        }
    }
}

// MARK: - Tensor level

/// Builds the geometry for a Tensor-level pooling call (stride nil -> kernel size).
@usableFromInline
func poolGeometry(op: String, kind: PoolKind, xShape: [Int], kernelSize: (Int, Int), stride: (Int, Int)?,
                  padding: (Int, Int)) throws -> Pool2DGeometry {
    try Pool2DGeometry(op: op, kind: kind, xShape: xShape, kernelSize: kernelSize, stride: stride ?? kernelSize,
                       padding: padding)
}

@usableFromInline @_specialize(where T == Float) @_specialize(where T == Double)
func pool2dTensor<T: CNNScalar>(op: String, kind: PoolKind, _ x: Tensor<T>, kernelSize: (Int, Int),
                                stride: (Int, Int)?, padding: (Int, Int), into out: Tensor<T>?) throws -> Tensor<T> {
    let g = try poolGeometry(op: op, kind: kind, xShape: x.shape, kernelSize: kernelSize, stride: stride, padding: padding)
    let y: Tensor<T>
    if let out {
        try checkOutShape(op: op, out, g.outputShape)
        try checkNoOverlap(op: op, out, x, "x")
        y = out
    } else {
        y = try Tensor(zeros: g.outputShape)
    }
    pool2dForward(g, kind: kind, x: x.pointer, y: y.pointer, argmax: nil)
    return y
}

@usableFromInline @_specialize(where T == Float) @_specialize(where T == Double)
func pool2dBackwardTensor<T: CNNScalar>(op: String, kind: PoolKind, gradOut: Tensor<T>, x: Tensor<T>,
                                        kernelSize: (Int, Int), stride: (Int, Int)?, padding: (Int, Int)) throws -> Tensor<T> {
    let g = try poolGeometry(op: op, kind: kind, xShape: x.shape, kernelSize: kernelSize, stride: stride, padding: padding)
    try g.checkGradOut(op: op, gradOut.shape)
    let gradX = try Tensor<T>(zeros: g.inputShape)
    pool2dBackward(g, kind: kind, gradOut: gradOut.pointer, x: x.pointer, gradX: gradX.pointer)
    return gradX
}

/// y = max_pool2d(x), validated: y[n,c,i,j] = max of x over window (i, j), padding as -inf.
/// `stride` nil means the kernel size; padding must be <= kernel_size / 2.
///
///     x (N, C, H, W) -> y (N, C, Ho, Wo),  Ho = (H + 2*ph - kH) / sh + 1
@inlinable
public func maxPool2d<T: CNNScalar>(_ x: Tensor<T>, kernelSize: (Int, Int), stride: (Int, Int)? = nil,
                                    padding: (Int, Int) = (0, 0), into out: Tensor<T>? = nil) throws -> Tensor<T> {
    try pool2dTensor(op: "max_pool2d", kind: .max, x, kernelSize: kernelSize, stride: stride, padding: padding, into: out)
}

/// y = avg_pool2d(x), validated: y[n,c,i,j] = (sum of x over window (i, j)) / (kH*kW), padded
/// zeros counting in the divisor. `stride` nil means the kernel size; padding must be <= kernel_size / 2.
///
///     x (N, C, H, W) -> y (N, C, Ho, Wo),  Ho = (H + 2*ph - kH) / sh + 1
@inlinable
public func avgPool2d<T: CNNScalar>(_ x: Tensor<T>, kernelSize: (Int, Int), stride: (Int, Int)? = nil,
                                    padding: (Int, Int) = (0, 0), into out: Tensor<T>? = nil) throws -> Tensor<T> {
    try pool2dTensor(op: "avg_pool2d", kind: .average, x, kernelSize: kernelSize, stride: stride, padding: padding, into: out)
}

/// dx of max_pool2d, validated: each window's gradient goes to its first maximum (row-major);
/// overlapping windows accumulate.
///
///     gradOut (N, C, Ho, Wo), x (N, C, H, W) -> gradX (N, C, H, W)
@inlinable
public func maxPool2dBackward<T: CNNScalar>(gradOut: Tensor<T>, x: Tensor<T>, kernelSize: (Int, Int),
                                            stride: (Int, Int)? = nil, padding: (Int, Int) = (0, 0)) throws -> Tensor<T> {
    try pool2dBackwardTensor(op: "max_pool2d_backward", kind: .max, gradOut: gradOut, x: x,
                             kernelSize: kernelSize, stride: stride, padding: padding)
}

/// dx of avg_pool2d, validated: dx[n,c,h,w] = sum over the windows containing (h, w) of g / (kH*kW).
///
///     gradOut (N, C, Ho, Wo), x (N, C, H, W) -> gradX (N, C, H, W)
@inlinable
public func avgPool2dBackward<T: CNNScalar>(gradOut: Tensor<T>, x: Tensor<T>, kernelSize: (Int, Int),
                                            stride: (Int, Int)? = nil, padding: (Int, Int) = (0, 0)) throws -> Tensor<T> {
    try pool2dBackwardTensor(op: "avg_pool2d_backward", kind: .average, gradOut: gradOut, x: x,
                             kernelSize: kernelSize, stride: stride, padding: padding)
}

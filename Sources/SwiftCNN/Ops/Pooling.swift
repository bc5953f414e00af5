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
@inlinable
public func pool2dForward<T: CNNScalar>(_ g: Pool2DGeometry, kind: PoolKind, x: UnsafePointer<T>,
                                        y: UnsafeMutablePointer<T>, argmax: UnsafeMutablePointer<Int32>?) {
    let inPlane = g.height * g.width, outPlane = g.outH * g.outW
    let chunks = poolPlaneChunks(g)
    let divisor = T(g.kernelH * g.kernelW)
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

/// dx for max pooling from saved argmax indices (layers keep them from the forward).
///
///     gradOut (N, C, Ho, Wo), argmax (N, C, Ho, Wo) from `pool2dForward` -> gradX (N, C, H, W) overwritten
@inlinable
public func maxPool2dBackward<T: CNNScalar>(_ g: Pool2DGeometry, gradOut: UnsafePointer<T>,
                                            argmax: UnsafePointer<Int32>, gradX: UnsafeMutablePointer<T>) {
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
        }
    }
}

/// dx of pooling, recomputing max pooling's argmax from x.
///
///     gradOut (N, C, Ho, Wo), x (N, C, H, W) -> gradX (N, C, H, W) overwritten
@inlinable
public func pool2dBackward<T: CNNScalar>(_ g: Pool2DGeometry, kind: PoolKind, gradOut: UnsafePointer<T>,
                                         x: UnsafePointer<T>, gradX: UnsafeMutablePointer<T>) {
    let inPlane = g.height * g.width, outPlane = g.outH * g.outW
    let chunks = poolPlaneChunks(g)
    let divisor = T(g.kernelH * g.kernelW)
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
public func pool2dForwardNaive<T: CNNScalar>(_ g: Pool2DGeometry, kind: PoolKind, x: UnsafePointer<T>,
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
public func pool2dBackwardNaive<T: CNNScalar>(_ g: Pool2DGeometry, kind: PoolKind, gradOut: UnsafePointer<T>,
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

@inlinable
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

@inlinable
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

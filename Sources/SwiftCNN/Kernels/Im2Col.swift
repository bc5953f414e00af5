/// im2col / col2im: the unfolding that turns a convolution into one matrix product.
///
/// For one image x (C, H, W) and the geometry's kernel, stride, padding and dilation, the column
/// matrix `col` has C*kH*kW rows and Ho*Wo columns:
///
///     col[(c*kH + r)*kW + s, oh*Wo + ow] = x[c, oh*sh - ph + r*dh, ow*sw - pw + s*dw]   (0 in the padding)
///
/// so that, with the weight viewed as a K × (C*kH*kW) matrix,
///
///     y_n  = W · col_n                  (K × Ho*Wo)             forward
///     dW  += dY_n · col_nᵀ              (K × C*kH*kW)           weight gradient
///     dcol = Wᵀ · dY_n, dX_n = col2im(dcol)                     input gradient
///
/// `col2im` is the adjoint of `im2col`: it scatters each column entry back to the input pixel it was
/// read from, summing where kernel windows overlap.
///
/// The convolution's GEMMs never materialize `col`: `Im2ColB` and `Im2ColA` pack blocks of col
/// straight from the image into the GEMM's panel layouts, one pass instead of an
/// im2col pass (writing C*kH*kW*Ho*Wo elements, often more than L2) plus a packing pass. `im2col`
/// itself is kept for tests and callers that want the matrix.

/// The output positions o in 0..<outSize whose input coordinate o*stride + offset lies in 0..<size.
/// They form one contiguous range because the coordinate increases with o.
@inlinable @inline(__always)
func validOutputRange(outSize: Int, stride: Int, offset: Int, size: Int) -> Range<Int> {
    // lo: smallest o with o*stride + offset >= 0
    let lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride
    // hi: smallest o with o*stride + offset >= size
    let hi = size - offset <= 0 ? 0 : (size - offset + stride - 1) / stride
    let l = min(lo, outSize), h = min(max(hi, l), outSize)
    return l..<h
}

/// Row q = (c*kH + r)*kW + s of one image's column matrix, decoded once: where its entries come
/// from and which output positions fall inside the image.
@usableFromInline
struct Im2ColRow<T: CNNScalar> {
    /// src[oh * sh * W + ow * sw] = x[c, oh*sh - ph + r*dh, ow*sw - pw + s*dw] (when inside).
    @usableFromInline let src: UnsafePointer<T>
    /// Output rows / columns whose input row / column is inside the image.
    @usableFromInline let rowsH: Range<Int>, colsW: Range<Int>

    @inlinable @inline(__always)
    init(_ g: Conv2DGeometry, x: UnsafePointer<T>, row q: Int) {
        let kk = g.kernelH * g.kernelW
        let c = q / kk, r = (q % kk) / g.kernelW, s = q % g.kernelW
        let offH = r * g.dilationH - g.padH, offW = s * g.dilationW - g.padW
        rowsH = validOutputRange(outSize: g.outH, stride: g.strideH, offset: offH, size: g.height)
        colsW = validOutputRange(outSize: g.outW, stride: g.strideW, offset: offW, size: g.width)
        // Only an address: it may point outside x, but every read through it is inside.
        src = x + c * g.height * g.width + offH * g.width + offW
    }

    /// Writes col[q, j0 ..< j1] (output positions j = oh*Wo + ow) to dst[t * dstStride], t = j - j0.
    @inlinable @inline(__always)
    func copy(_ g: Conv2DGeometry, from j0: Int, to j1: Int, into dst: UnsafeMutablePointer<T>, dstStride: Int) {
        var j = j0
        while j < j1 {
            // One run along output row oh: ow = ow0 ..< ow0 + len.
            let oh = j / g.outW, ow0 = j % g.outW
            let len = min(g.outW - ow0, j1 - j)
            let out = dst + (j - j0) * dstStride - ow0 * dstStride   // out[ow * dstStride]
            if !rowsH.contains(oh) {
                for ow in ow0..<(ow0 + len) { out[ow * dstStride] = 0 }
            } else {
                let line = src + oh * g.strideH * g.width
                let lo = min(max(colsW.lowerBound, ow0), ow0 + len), hi = max(min(colsW.upperBound, ow0 + len), lo)
                for ow in ow0..<lo { out[ow * dstStride] = 0 }
                if dstStride == 1 && g.strideW == 1 {
                    (out + lo).update(from: line + lo, count: hi - lo)
                } else {
                    for ow in lo..<hi { out[ow * dstStride] = line[ow * g.strideW] }
                }
                for ow in hi..<(ow0 + len) { out[ow * dstStride] = 0 }
            }
            j += len
        }
    }
}

/// Unfolds one image x (C, H, W) into col (C*kH*kW, Ho*Wo); see the file comment for the formula.
@inlinable
func im2col<T: CNNScalar>(_ g: Conv2DGeometry, x: UnsafePointer<T>, col: UnsafeMutablePointer<T>) {
    let hw = g.colCols
    for q in 0..<g.colRows { Im2ColRow(g, x: x, row: q).copy(g, from: 0, to: hw, into: col + q * hw, dstStride: 1) }
}

/// Folds col (C*kH*kW, Ho*Wo) back into one image x (C, H, W), the adjoint of `im2col`:
/// x is overwritten with x[c, ih, iw] = sum of the col entries that im2col read from (c, ih, iw).
///
/// Row (c, r, s) of col only touches channel c, so channels run in parallel chunks with disjoint
/// outputs, each summing in a fixed order (deterministic).
@inlinable
func col2im<T: CNNScalar>(_ g: Conv2DGeometry, col: UnsafePointer<T>, x: UnsafeMutablePointer<T>) {
    col2im(g, col: col, x: x, threads: Threading.numThreads)
}

@inlinable
func col2im<T: CNNScalar>(_ g: Conv2DGeometry, col: UnsafePointer<T>, x: UnsafeMutablePointer<T>, threads: Int) {
    let chunks = threads <= 1 ? 1 : min(g.inChannels, parallelChunks(work: g.colCount, minPerThread: 1 << 17))
    parallelFor(chunks) { chunk in
        for c in chunkRange(chunk, of: chunks, total: g.inChannels) {
            col2imChannel(g, c: c, col: col, x: x)
        }
    }
}

/// col2im for channel c: zero the plane, then add its kH*kW rows in order.
@inlinable
func col2imChannel<T: CNNScalar>(_ g: Conv2DGeometry, c: Int, col: UnsafePointer<T>, x: UnsafeMutablePointer<T>) {
    let (oh, ow) = (g.outH, g.outW)
    let plane = x + c * g.height * g.width
    plane.update(repeating: 0, count: g.height * g.width)
    for r in 0..<g.kernelH {
        let offH = r * g.dilationH - g.padH
        let rowsH = validOutputRange(outSize: oh, stride: g.strideH, offset: offH, size: g.height)
        for s in 0..<g.kernelW {
            let offW = s * g.dilationW - g.padW
            let colsW = validOutputRange(outSize: ow, stride: g.strideW, offset: offW, size: g.width)
            let row = col + ((c * g.kernelH + r) * g.kernelW + s) * oh * ow
            for i in rowsH {
                let src = row + i * ow
                let dst = plane + (i * g.strideH + offH) * g.width + offW
                if g.strideW == 1 {
                    for j in colsW { dst[j] += src[j] }
                } else {
                    for j in colsW { dst[j * g.strideW] += src[j] }
                }
            }
        }
    }
}

// MARK: - GEMM operands packed straight from the image

/// op(B) = col (C*kH*kW × Ho*Wo) of one image, for the forward GEMM y_n = W · col_n.
@usableFromInline
struct Im2ColB<Scalar: CNNScalar>: GEMMPackableB {
    @usableFromInline let g: Conv2DGeometry
    @usableFromInline let x: UnsafePointer<Scalar>

    @inlinable init(_ g: Conv2DGeometry, x: UnsafePointer<Scalar>) { self.g = g; self.x = x }

    /// bp[panel][p][j] = col[row + p, col + panel*nr + j]: row (row + p) of col, cut into panels.
    @inlinable
    func pack(nr: Int, kc: Int, nc: Int, row: Int, col: Int, into bp: UnsafeMutablePointer<Scalar>,
              scratch: UnsafeMutablePointer<Scalar>) {
        for p in 0..<kc {
            let source = Im2ColRow(g, x: x, row: row + p)
            var j = 0
            while j < nc {
                let cols = min(nr, nc - j)
                let dst = bp + j * kc + p * nr
                source.copy(g, from: col + j, to: col + j + cols, into: dst, dstStride: 1)
                if cols < nr { (dst + cols).update(repeating: 0, count: nr - cols) }
                j += nr
            }
        }
    }
}

/// op(A) = col (C*kH*kW × Ho*Wo) of one image, for the weight-gradient GEMM computed transposed,
/// dWᵀ (C*kH*kW × K) += col_n · g_nᵀ; only g_n (K × Ho*Wo, small) then needs a transposing pack.
/// The block is packed row-major (each col row segment written contiguously, mostly by memcpy),
/// which is several times cheaper than MR-interleaving it; each packed element is used only K/NR
/// times, so the packing cost matters as much as the micro-kernel's access pattern.
@usableFromInline
struct Im2ColA<Scalar: CNNScalar>: GEMMPackableA {
    @usableFromInline let g: Conv2DGeometry
    @usableFromInline let x: UnsafePointer<Scalar>

    @inlinable init(_ g: Conv2DGeometry, x: UnsafePointer<Scalar>) { self.g = g; self.x = x }

    /// col is never stored: always packed.
    @inlinable var inPlace: (base: UnsafePointer<Scalar>, rowStride: Int, kStride: Int)? { nil }

    @inlinable
    func pack(mc: Int, kc: Int, row: Int, col: Int, alpha: Scalar, into ap: UnsafeMutablePointer<Scalar>)
        -> (rs: Int, ks: Int) {
        for i in 0..<mc {
            let dst = ap + i * kc
            Im2ColRow(g, x: x, row: row + i).copy(g, from: col, to: col + kc, into: dst, dstStride: 1)
            if alpha != 1 {
                for p in 0..<kc { dst[p] *= alpha }
            }
        }
        let padded = (mc + gemmMR - 1) / gemmMR * gemmMR
        (ap + mc * kc).update(repeating: 0, count: (padded - mc) * kc)
        return (kc, 1)
    }
}

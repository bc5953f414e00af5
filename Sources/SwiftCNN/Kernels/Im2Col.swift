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
/// read from, summing where kernel windows overlap. Row (c, r, s) of `col` reads only channel c, so
/// both run in parallel over channel chunks with disjoint outputs (deterministic).

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

/// Unfolds one image x (C, H, W) into col (C*kH*kW, Ho*Wo); see the file comment for the formula.
@inlinable
public func im2col<T: CNNScalar>(_ g: Conv2DGeometry, x: UnsafePointer<T>, col: UnsafeMutablePointer<T>) {
    let chunks = parallelChunks(work: g.colCount, minPerThread: 1 << 18)
    parallelFor(chunks) { chunk in
        for c in chunkRange(chunk, of: chunks, total: g.inChannels) {
            im2colChannel(g, c: c, x: x, col: col)
        }
    }
}

/// im2col for the kH*kW rows of channel c.
@inlinable
func im2colChannel<T: CNNScalar>(_ g: Conv2DGeometry, c: Int, x: UnsafePointer<T>, col: UnsafeMutablePointer<T>) {
    let (oh, ow) = (g.outH, g.outW)
    let plane = x + c * g.height * g.width
    for r in 0..<g.kernelH {
        let offH = r * g.dilationH - g.padH
        let rowsH = validOutputRange(outSize: oh, stride: g.strideH, offset: offH, size: g.height)
        for s in 0..<g.kernelW {
            let offW = s * g.dilationW - g.padW
            let colsW = validOutputRange(outSize: ow, stride: g.strideW, offset: offW, size: g.width)
            let row = col + ((c * g.kernelH + r) * g.kernelW + s) * oh * ow
            for i in 0..<oh {
                let dst = row + i * ow
                guard rowsH.contains(i) else {
                    dst.update(repeating: 0, count: ow)
                    continue
                }
                let src = plane + (i * g.strideH + offH) * g.width
                dst.update(repeating: 0, count: colsW.lowerBound)
                if g.strideW == 1 {
                    (dst + colsW.lowerBound).update(from: src + colsW.lowerBound + offW, count: colsW.count)
                } else {
                    for j in colsW { dst[j] = src[j * g.strideW + offW] }
                }
                (dst + colsW.upperBound).update(repeating: 0, count: ow - colsW.upperBound)
            }
        }
    }
}

/// Folds col (C*kH*kW, Ho*Wo) back into one image x (C, H, W), the adjoint of `im2col`:
/// x is overwritten with x[c, ih, iw] = sum of the col entries that im2col read from (c, ih, iw).
@inlinable
public func col2im<T: CNNScalar>(_ g: Conv2DGeometry, col: UnsafePointer<T>, x: UnsafeMutablePointer<T>) {
    let chunks = parallelChunks(work: g.colCount, minPerThread: 1 << 18)
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
                for j in colsW { dst[j * g.strideW] += src[j] }
            }
        }
    }
}

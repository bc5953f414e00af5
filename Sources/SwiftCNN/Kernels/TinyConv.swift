/// Direct loops for tiny convolutions (at most `conv2dDirectMaxWork` multiply-adds), any stride,
/// padding, dilation and scalar type: cheaper than packing GEMM panels for a few multiply-adds.

/// conv2dForward's direct loops for tiny problems: each output is the bias plus the taps of its
/// window clipped to the input, summed in (c, r, s) order with one multiply-add per tap, exactly as
/// `conv2dForwardNaive` (which stays the independent oracle; the results are bit-identical).
/// Same contract as `conv2dForward`.
///
/// Outputs are computed in tiles of two rows x two blocks of four columns: four SIMD4
/// multiply-add chains in flight. A single chain waits on the multiply-add latency at every tap,
/// and that wait was most of the Swift-side cost of a tiny conv2d from Python (an 8x8 * 3x3 call:
/// 108 dependent 4-wide multiply-adds, ~0.25 us of ~0.75). Rows whose window needs clipping
/// (padding) take one row at a time; blocks whose window needs column clipping fall back to one
/// output at a time (`conv2dForwardDirectOne`). A row's last block ends at the row's end,
/// recomputing up to three outputs of the block before it (bit for bit: same taps, same order);
/// a tile with one row or one block computes it twice rather than reading past the input.
@inlinable
func conv2dForwardDirect<T: CNNScalar>(_ g: Conv2DGeometry, x: UnsafePointer<T>, weight: UnsafePointer<T>,
                                       bias: UnsafePointer<T>?, y: UnsafeMutablePointer<T>) {
    let plane = g.height * g.width, kArea = g.kernelH * g.kernelW
    let rowSpan = (g.kernelH - 1) * g.dilationH, colSpan = (g.kernelW - 1) * g.dilationW
    let unit = g.strideW == 1 && g.dilationW == 1
    // The first output of the 4-wide block that covers output column j: j itself, or the row's
    // last four outputs when fewer than four remain.
    func blockStart(_ j: Int) -> Int { j + 4 > g.outW && g.outW >= 4 ? g.outW - 4 : j }
    // Whether the block starting at jb is whole and its windows need no column clipping.
    func blockFits(_ jb: Int) -> Bool {
        jb + 4 <= g.outW && jb * g.strideW - g.padW >= 0 && (jb + 3) * g.strideW - g.padW + colSpan < g.width
    }
    var out = y
    for n in 0..<g.batch {
        let xn = x + n * g.inChannels * plane
        for k in 0..<g.outChannels {
            let wk = weight + k * g.inChannels * kArea
            let b: T = bias?[k] ?? 0
            var i = 0
            while i < g.outH {
                // Kernel rows r with 0 <= i*sh - ph + r*dh < H; rows i and i+1 go together when
                // neither needs clipping.
                let h0 = i * g.strideH - g.padH
                let pair = i + 1 < g.outH && h0 >= 0 && h0 + g.strideH + rowSpan < g.height
                var r0 = 0, r1 = g.kernelH
                while r0 < r1 && h0 + r0 * g.dilationH < 0 { r0 += 1 }
                while r1 > r0 && h0 + (r1 - 1) * g.dilationH >= g.height { r1 -= 1 }
                let h0B = pair ? h0 + g.strideH : h0
                let rowA = out, rowB = pair ? out + g.outW : out
                var j = 0
                while j < g.outW {
                    let ja = blockStart(j)
                    guard blockFits(ja) else {
                        conv2dForwardDirectOne(g, xn: xn, wk: wk, bias: b, h0: h0, r0: r0, r1: r1, j: j, out: rowA + j)
                        if pair {
                            conv2dForwardDirectOne(g, xn: xn, wk: wk, bias: b, h0: h0B, r0: r0, r1: r1, j: j,
                                                   out: rowB + j)
                        }
                        j += 1
                        continue
                    }
                    let second = ja + 4 < g.outW && blockFits(blockStart(ja + 4))
                    let jb = second ? blockStart(ja + 4) : ja
                    if unit {
                        conv2dForwardDirectTile(g, xn: xn, wk: wk, bias: b, h0A: h0, h0B: h0B, r0: r0, r1: r1,
                                                ja: ja, jb: jb, rowA: rowA, rowB: rowB, unitStride: true)
                    } else {
                        conv2dForwardDirectTile(g, xn: xn, wk: wk, bias: b, h0A: h0, h0B: h0B, r0: r0, r1: r1,
                                                ja: ja, jb: jb, rowA: rowA, rowB: rowB, unitStride: false)
                    }
                    j = jb + 4
                }
                let rows = pair ? 2 : 1
                out += rows * g.outW
                i += rows
            }
        }
    }
}

/// Four outputs x[p], x[p + step], x[p + 2*step], x[p + 3*step] (one vector load when step is 1).
@inlinable @inline(__always)
func tinyConvLoad4<T: CNNScalar>(_ p: UnsafePointer<T>, _ step: Int) -> SIMD4<T> {
    SIMD4(p[0], p[step], p[2 * step], p[3 * step])
}

@inlinable @inline(__always)
func tinyConvStore4<T: CNNScalar>(_ v: SIMD4<T>, _ p: UnsafeMutablePointer<T>) {
    p[0] = v[0]; p[1] = v[1]; p[2] = v[2]; p[3] = v[3]
}

/// One tile of `conv2dForwardDirect`: output rows A and B (input rows from h0A, h0B; kernel rows
/// r0..<r1) x the 4-wide blocks starting at columns ja and jb, whose windows lie inside the row.
/// B may equal A and jb may equal ja (then the same outputs are computed twice, identically).
/// `unitStride` (stride 1, dilation 1 along the width, a constant at each call) makes each
/// block's four inputs one contiguous load.
@inlinable @inline(__always)
func conv2dForwardDirectTile<T: CNNScalar>(_ g: Conv2DGeometry, xn: UnsafePointer<T>, wk: UnsafePointer<T>,
                                           bias b: T, h0A: Int, h0B: Int, r0: Int, r1: Int, ja: Int, jb: Int,
                                           rowA: UnsafeMutablePointer<T>, rowB: UnsafeMutablePointer<T>,
                                           unitStride: Bool) {
    let plane = g.height * g.width, kArea = g.kernelH * g.kernelW
    let step = unitStride ? 1 : g.strideW, dw = unitStride ? 1 : g.dilationW
    let wa = ja * step - g.padW, wb = jb * step - g.padW
    var s0 = SIMD4<T>(repeating: b), s1 = s0, s2 = s0, s3 = s0
    for c in 0..<g.inChannels {
        let xc = xn + c * plane, wc = wk + c * kArea
        for r in r0..<r1 {
            let xA = xc + (h0A + r * g.dilationH) * g.width, xB = xc + (h0B + r * g.dilationH) * g.width
            let wr = wc + r * g.kernelW
            for s in 0..<g.kernelW {
                let wv = SIMD4<T>(repeating: wr[s]), o = s * dw
                s0 = multiplyAdd(tinyConvLoad4(xA + (wa + o), step), wv, s0)
                s1 = multiplyAdd(tinyConvLoad4(xA + (wb + o), step), wv, s1)
                s2 = multiplyAdd(tinyConvLoad4(xB + (wa + o), step), wv, s2)
                s3 = multiplyAdd(tinyConvLoad4(xB + (wb + o), step), wv, s3)
            }
        }
    }
    tinyConvStore4(s0, rowA + ja); tinyConvStore4(s1, rowA + jb)
    tinyConvStore4(s2, rowB + ja); tinyConvStore4(s3, rowB + jb)
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

/// Direct loops for tiny convolutions (at most `conv2dDirectMaxWork` multiply-adds), any stride,
/// padding, dilation and scalar type: cheaper than packing GEMM panels for a few multiply-adds.

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
                // Four outputs at a time where their windows need no column clipping: four
                // independent multiply-add chains (one chain alone waits on the FMA latency at every
                // tap; that wait was half the per-call cost of a tiny conv2d from Python). Each
                // output still sums its taps in the order of `conv2dForwardDirectOne`. A row's last
                // block ends at the row's end, recomputing up to three outputs of the block before
                // it (bit for bit: same taps, same order) rather than leaving them to one chain each.
                let row = out
                var j = 0
                while j < g.outW {
                    let jb = j + 4 > g.outW && g.outW >= 4 ? g.outW - 4 : j
                    let w0 = jb * g.strideW - g.padW, w3 = (jb + 3) * g.strideW - g.padW
                    if jb + 4 > g.outW || w0 < 0 || w3 + (g.kernelW - 1) * g.dilationW >= g.width {
                        conv2dForwardDirectOne(g, xn: xn, wk: wk, bias: b, h0: h0, r0: r0, r1: r1, j: j, out: row + j)
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
                    row[jb] = sum0; row[jb + 1] = sum1; row[jb + 2] = sum2; row[jb + 3] = sum3
                    j = jb + 4
                }
                out += g.outW
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

/// The input gradient of a direct convolution by scattering (see Kernels/DirectConvShape.swift),
/// lanes over positions.

/// The input gradient of a stride-1 convolution computed the other way round from the "full"
/// correlation: every output position q scatters into the padded input positions it was computed
/// from,
///
///     dxpad[c, q + off(r, s)] += sum_k w[k, c, r, s] * g[k, q]        (q over the forward's span)
///
/// which touches only the forward's positions instead of a gradient padded by kH-1 / kW-1 on every
/// side. For LeNet's second layer (10 x 10 outputs, 5 x 5 kernel) the padded correlation spends
/// over half its multiply-adds on that zero border. Blocks of 6 input channels × 48 positions:
/// per (r, s), the k-sum runs in 18 accumulators (3 vector loads and 6 broadcasts per 18
/// multiply-adds), then is added into dxpad once. Each dx element receives its (r, s) terms in a
/// fixed order, each a k-sum in a fixed order: deterministic.
extension DirectConvShape {
    /// Blocks of 48 positions covering the span (3 vectors).
    @usableFromInline var scatterBlocks: Int { (span + 47) / 48 }
    /// Elements of the padded input-gradient buffer: input-channel blocks of 6 planes, plus the
    /// slack the last block's positions past the span write (exact zeros added).
    @usableFromInline var scatterPaddedCount: Int { (inChannels + 5) / 6 * 6 * paddedPlane + 64 }
    /// Elements of the packed weights: per block of 6 input channels, per (r, s), per k, 6.
    @usableFromInline var scatterPackedCount: Int { (inChannels + 5) / 6 * kernelH * kernelW * outChannels * 6 }
}

/// Packs w[k, c, r, s] (weight (K, C, kH, kW)) into [c block][r][s][k][6 channels], zero past C.
@usableFromInline
func scatterPackWeights(_ s: DirectConvShape, weight: UnsafePointer<Float>, into packed: UnsafeMutablePointer<Float>) {
    let (K, C, kH, kW) = (s.outChannels, s.inChannels, s.kernelH, s.kernelW)
    var o = 0
    for block in 0..<((C + 5) / 6) {
        for r in 0..<kH {
            for col in 0..<kW {
                for k in 0..<K {
                    for i in 0..<6 {
                        let c = block * 6 + i
                        packed[o] = c < C ? weight[((k * C + c) * kH + r) * kW + col] : 0
                        o += 1
                    }
                }
            }
        }
    }
}

/// dx[c][q + 16v] += sum_k packed[k][c] * g[k][16v ..< 16v+16] for 6 channels c (planes `plane`
/// apart) and v in 0..<3.
@inline(__always) @usableFromInline
func scatterBlock(outChannels: Int, g: UnsafePointer<Float>, gRow: Int, packed: UnsafePointer<Float>,
                  dx: UnsafeMutablePointer<Float>, plane: Int) {
    let z = Lanes(repeating: 0)
    var a00 = z, a01 = z, a02 = z, a10 = z, a11 = z, a12 = z, a20 = z, a21 = z, a22 = z
    var a30 = z, a31 = z, a32 = z, a40 = z, a41 = z, a42 = z, a50 = z, a51 = z, a52 = z
    var gp = UnsafeRawPointer(g), w = packed
    let rowBytes = gRow * 4
    for _ in 0..<outChannels {
        let g0 = gp.load(as: Lanes.self), g1 = gp.load(fromByteOffset: 64, as: Lanes.self)
        let g2 = gp.load(fromByteOffset: 128, as: Lanes.self)
        var b = Lanes(repeating: w[0])
        a00 = multiplyAdd(g0, b, a00); a01 = multiplyAdd(g1, b, a01); a02 = multiplyAdd(g2, b, a02)
        b = Lanes(repeating: w[1])
        a10 = multiplyAdd(g0, b, a10); a11 = multiplyAdd(g1, b, a11); a12 = multiplyAdd(g2, b, a12)
        b = Lanes(repeating: w[2])
        a20 = multiplyAdd(g0, b, a20); a21 = multiplyAdd(g1, b, a21); a22 = multiplyAdd(g2, b, a22)
        b = Lanes(repeating: w[3])
        a30 = multiplyAdd(g0, b, a30); a31 = multiplyAdd(g1, b, a31); a32 = multiplyAdd(g2, b, a32)
        b = Lanes(repeating: w[4])
        a40 = multiplyAdd(g0, b, a40); a41 = multiplyAdd(g1, b, a41); a42 = multiplyAdd(g2, b, a42)
        b = Lanes(repeating: w[5])
        a50 = multiplyAdd(g0, b, a50); a51 = multiplyAdd(g1, b, a51); a52 = multiplyAdd(g2, b, a52)
        gp += rowBytes
        w += 6
    }
    @inline(__always) func add(_ i: Int, _ v0: Lanes, _ v1: Lanes, _ v2: Lanes) {
        let d = UnsafeMutableRawPointer(dx + i * plane)
        d.storeBytes(of: d.loadUnaligned(as: Lanes.self) + v0, as: Lanes.self)
        d.storeBytes(of: d.loadUnaligned(fromByteOffset: 64, as: Lanes.self) + v1, toByteOffset: 64, as: Lanes.self)
        d.storeBytes(of: d.loadUnaligned(fromByteOffset: 128, as: Lanes.self) + v2, toByteOffset: 128, as: Lanes.self)
    }
    add(0, a00, a01, a02); add(1, a10, a11, a12); add(2, a20, a21, a22)
    add(3, a30, a31, a32); add(4, a40, a41, a42); add(5, a50, a51, a52)
}

/// One image's input gradient: dx (inChannels planes of H × W, overwritten) from gq (outChannels
/// rows of `gradRow`: g spread to the padded width, zero elsewhere, as `weightGradSpreadRows`), through dxpad
/// (`scatterPaddedCount` elements, any contents). (top, left) is the forward's padding.
@usableFromInline
func scatterGradInputImage(_ s: DirectConvShape, gq: UnsafePointer<Float>, packed: UnsafePointer<Float>,
                           dxpad: UnsafeMutablePointer<Float>, dx: UnsafeMutablePointer<Float>,
                           height h: Int, width w: Int, top: Int, left: Int) {
    let (K, kH, kW) = (s.outChannels, s.kernelH, s.kernelW), plane = s.paddedPlane
    let blocks = (s.inChannels + 5) / 6, row = s.gradRow
    let narrow = directConvRegisterFile == .narrow   // AVX2: 16-position sub-blocks, the same bits
    dxpad.update(repeating: 0, count: s.scatterPaddedCount)
    for block in 0..<blocks {
        let planes = dxpad + block * 6 * plane
        for r in 0..<kH {
            for col in 0..<kW {
                let wp = packed + ((block * kH + r) * kW + col) * K * 6
                for qb in 0..<s.scatterBlocks {
                    let q0 = qb * 48
                    if narrow {
                        for p in stride(from: 0, to: 48, by: 16) {
                            scatterNarrowBlock6x2(outChannels: K, g: gq + q0 + p, gRow: row, packed: wp,
                                                  dx: planes + q0 + p + r * s.paddedW + col, plane: plane)
                        }
                    } else {
                        scatterBlock(outChannels: K, g: gq + q0, gRow: row, packed: wp,
                                     dx: planes + q0 + r * s.paddedW + col, plane: plane)
                    }
                }
            }
        }
    }
    for c in 0..<s.inChannels {
        for i in 0..<h {
            copyShortRow(dxpad + c * plane + (i + top) * s.paddedW + left, to: dx + (c * h + i) * w, count: w)
        }
    }
}

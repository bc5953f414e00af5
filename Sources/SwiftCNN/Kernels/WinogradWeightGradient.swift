/// The weight gradient of Winograd F(2x2, 3x3) (Kernels/Winograd.swift): the transpose of the
/// forward's linear maps. With y_t = Aᵀ [ Σ_c U[·][k][c] ⊙ V[·][c][t] ] A and U = G w Gᵀ, for an
/// output gradient g:
///
///     dM[ξ][k][t] = (A g[k, t] Aᵀ)[ξ]                  (g's 2x2 tile t; zero past Ho, Wo)
///     dU[ξ][k][c] = Σ_{n,t} dM[ξ][k][t] · V[ξ][c][t]    (16 GEMMs reducing over the tiles)
///     dw[k, c]    = Gᵀ dU[·][k][c] G                    (3x3)
///
///     A (a 2-vector p to 4): (p0, p0 + p1, p0 - p1, -p1)
///     Gᵀ (a 4-vector q to 3): (q0 + (q1 + q2)/2, (q1 - q2)/2, (q1 + q2)/2 + q3)
///
/// The tiles run in blocks as in the forward; each chunk of blocks keeps its own dU as vectors of
/// tile lanes (4 output x 3 input channels per register block), and the chunks' lane sums are added
/// in chunk order, lanes in order: deterministic for a given thread count.

/// dM[ξ][k][t] = (A g[k, t] Aᵀ)[ξ] for tiles t0 ..< t1 of one image's output gradient; lanes past t1
/// and rows k >= K are zero.
///
///     g (K, Ho, Wo) of the image  ->  m (16, kPad, blockTiles), overwritten
@inlinable
func winogradGradOutputTransform<V: SIMD & BitwiseCopyable>(_: V.Type, _ s: WinogradShape, g: UnsafePointer<V.Scalar>,
                                                            t0: Int, t1: Int, m: UnsafeMutablePointer<V.Scalar>)
    where V.Scalar: CNNScalar {
    let L = V.scalarCount, BT = s.blockTiles, Ho = s.outH, Wo = s.outW, K = s.outChannels
    let xiBytes = s.kPad * BT * MemoryLayout<V.Scalar>.stride
    @inline(__always) func a4(_ p0: V, _ p1: V) -> (V, V, V, V) { (p0, p0 + p1, p0 - p1, V() - p1) }
    for k in 0..<s.kPad {
        let gk = g + k * Ho * Wo
        for vi in 0..<(s.groupsPerBlock * 3) {
            let first = t0 + vi * L
            var g00 = V(), g01 = V(), g10 = V(), g11 = V()
            let ty = first / s.tilesW, tx = first % s.tilesW
            if k >= K || first >= t1 {
                // zero
            } else if first + L <= t1 && tx + L <= s.tilesW && 2 * (tx + L) <= Wo && 2 * ty + 1 < Ho {
                let row0 = gk + 2 * ty * Wo + 2 * tx, row1 = row0 + Wo
                for l in 0..<L {
                    g00[l] = row0[2 * l]; g01[l] = row0[2 * l + 1]
                    g10[l] = row1[2 * l]; g11[l] = row1[2 * l + 1]
                }
            } else {
                for l in 0..<min(L, t1 - first) {
                    let t = first + l
                    let (i, j) = (2 * (t / s.tilesW), 2 * (t % s.tilesW))
                    let row0 = gk + i * Wo + j
                    g00[l] = row0[0]
                    if j + 1 < Wo { g01[l] = row0[1] }
                    if i + 1 < Ho {
                        g10[l] = row0[Wo]
                        if j + 1 < Wo { g11[l] = row0[Wo + 1] }
                    }
                }
            }
            // Columns (b) first: each output row a gives 4 values; then the rows (a) for each column j.
            let r0 = a4(g00, g01), r1 = a4(g10, g11)
            let dst = UnsafeMutableRawPointer(m + k * BT + vi * L)
            @inline(__always) func put(_ j: Int, _ p0: V, _ p1: V) {
                let q = a4(p0, p1)
                dst.storeBytes(of: q.0, toByteOffset: (0 + j) * xiBytes, as: V.self)
                dst.storeBytes(of: q.1, toByteOffset: (4 + j) * xiBytes, as: V.self)
                dst.storeBytes(of: q.2, toByteOffset: (8 + j) * xiBytes, as: V.self)
                dst.storeBytes(of: q.3, toByteOffset: (12 + j) * xiBytes, as: V.self)
            }
            put(0, r0.0, r1.0); put(1, r0.1, r1.1); put(2, r0.2, r1.2); put(3, r0.3, r1.3)
        }
    }
}

/// acc[ξ][k group][c group][4][3] (vectors of tile lanes) += dM[ξ][k][t] · V[ξ][c][t] over the block's
/// tile vectors (`vectors` of them), in register blocks of 4 output x 3 input channels (12
/// accumulators, 4 + 3 loads per 12 multiply-adds). Input channels past C read channel C - 1 into
/// accumulators that are never summed.
@inlinable
func winogradWeightGradMultiply<V: SIMD & BitwiseCopyable>(_: V.Type, _ s: WinogradShape, m: UnsafePointer<V.Scalar>,
                                                           v: UnsafePointer<V.Scalar>, vectors: Int,
                                                           acc: UnsafeMutablePointer<V.Scalar>) where V.Scalar: CNNScalar {
    let L = V.scalarCount, C = s.inChannels, GW = s.groupWidth, BT = s.blockTiles
    let size = MemoryLayout<V.Scalar>.stride, cGroups = (C + 2) / 3
    let vecBytes = L * size
    for xi in 0..<16 {
        let vXi = UnsafeRawPointer(v + xi * s.groupsPerBlock * C * GW)
        for kg in 0..<s.kGroups {
            let mRows = UnsafeRawPointer(m + (xi * s.kPad + 4 * kg) * BT)
            let rowBytes = BT * size
            for cg in 0..<cGroups {
                let a = UnsafeMutableRawPointer(acc + ((xi * s.kGroups + kg) * cGroups + cg) * 12 * L)
                var a00 = a.load(fromByteOffset: 0 * vecBytes, as: V.self)
                var a01 = a.load(fromByteOffset: 1 * vecBytes, as: V.self)
                var a02 = a.load(fromByteOffset: 2 * vecBytes, as: V.self)
                var a10 = a.load(fromByteOffset: 3 * vecBytes, as: V.self)
                var a11 = a.load(fromByteOffset: 4 * vecBytes, as: V.self)
                var a12 = a.load(fromByteOffset: 5 * vecBytes, as: V.self)
                var a20 = a.load(fromByteOffset: 6 * vecBytes, as: V.self)
                var a21 = a.load(fromByteOffset: 7 * vecBytes, as: V.self)
                var a22 = a.load(fromByteOffset: 8 * vecBytes, as: V.self)
                var a30 = a.load(fromByteOffset: 9 * vecBytes, as: V.self)
                var a31 = a.load(fromByteOffset: 10 * vecBytes, as: V.self)
                var a32 = a.load(fromByteOffset: 11 * vecBytes, as: V.self)
                let c0 = min(3 * cg, C - 1) * GW * size, c1 = min(3 * cg + 1, C - 1) * GW * size
                let c2 = min(3 * cg + 2, C - 1) * GW * size
                for tv in 0..<vectors {
                    let vb = vXi + ((tv / 3) * C * GW + (tv % 3) * L) * size
                    let x0 = vb.loadUnaligned(fromByteOffset: c0, as: V.self)
                    let x1 = vb.loadUnaligned(fromByteOffset: c1, as: V.self)
                    let x2 = vb.loadUnaligned(fromByteOffset: c2, as: V.self)
                    let mb = mRows + tv * vecBytes
                    let g0 = mb.loadUnaligned(as: V.self)
                    a00 = multiplyAdd(g0, x0, a00); a01 = multiplyAdd(g0, x1, a01); a02 = multiplyAdd(g0, x2, a02)
                    let g1 = mb.loadUnaligned(fromByteOffset: rowBytes, as: V.self)
                    a10 = multiplyAdd(g1, x0, a10); a11 = multiplyAdd(g1, x1, a11); a12 = multiplyAdd(g1, x2, a12)
                    let g2 = mb.loadUnaligned(fromByteOffset: 2 * rowBytes, as: V.self)
                    a20 = multiplyAdd(g2, x0, a20); a21 = multiplyAdd(g2, x1, a21); a22 = multiplyAdd(g2, x2, a22)
                    let g3 = mb.loadUnaligned(fromByteOffset: 3 * rowBytes, as: V.self)
                    a30 = multiplyAdd(g3, x0, a30); a31 = multiplyAdd(g3, x1, a31); a32 = multiplyAdd(g3, x2, a32)
                }
                a.storeBytes(of: a00, toByteOffset: 0 * vecBytes, as: V.self)
                a.storeBytes(of: a01, toByteOffset: 1 * vecBytes, as: V.self)
                a.storeBytes(of: a02, toByteOffset: 2 * vecBytes, as: V.self)
                a.storeBytes(of: a10, toByteOffset: 3 * vecBytes, as: V.self)
                a.storeBytes(of: a11, toByteOffset: 4 * vecBytes, as: V.self)
                a.storeBytes(of: a12, toByteOffset: 5 * vecBytes, as: V.self)
                a.storeBytes(of: a20, toByteOffset: 6 * vecBytes, as: V.self)
                a.storeBytes(of: a21, toByteOffset: 7 * vecBytes, as: V.self)
                a.storeBytes(of: a22, toByteOffset: 8 * vecBytes, as: V.self)
                a.storeBytes(of: a30, toByteOffset: 9 * vecBytes, as: V.self)
                a.storeBytes(of: a31, toByteOffset: 10 * vecBytes, as: V.self)
                a.storeBytes(of: a32, toByteOffset: 11 * vecBytes, as: V.self)
            }
        }
    }
}

/// dw (K, C, 3, 3) = Gᵀ dU G with dU the lane sums of every chunk's accumulators (chunks in order),
/// overwritten or added to (`accumulate`).
///
///     x (N, C, H, W), gradOut (N, K, Ho, Wo)  ->  gradWeight (K, C, 3, 3)
@inlinable
func winogradWeightGradient<V: SIMD & BitwiseCopyable>(_: V.Type, _ s: WinogradShape, x: UnsafePointer<V.Scalar>,
                                                       gradOut: UnsafePointer<V.Scalar>,
                                                       gradWeight: UnsafeMutablePointer<V.Scalar>, accumulate: Bool,
                                                       workspace: ScratchSlots<V.Scalar>) throws where V.Scalar: CNNScalar {
    typealias T = V.Scalar
    let L = V.scalarCount, C = s.inChannels, K = s.outChannels, cGroups = (C + 2) / 3
    let blocks = s.blocks
    let accCount = 16 * s.kGroups * cGroups * 12 * L
    // One chunk per thread: each carries a full set of accumulators. Fixed by the sizes and the
    // thread count, so the summation order (and the result) is too.
    let chunks = Threading.numThreads <= 1 || s.directWork < 2e6 ? 1 : min(blocks, Threading.numThreads)
    var slabs: [UnsafeMutablePointer<T>] = [], vs: [UnsafeMutablePointer<T>] = []
    var ms: [UnsafeMutablePointer<T>] = [], accs: [UnsafeMutablePointer<T>] = []
    for chunk in 0..<chunks {
        slabs.append(try workspace.buffer(1 + 4 * chunk, count: s.slabCount))
        vs.append(try workspace.buffer(2 + 4 * chunk, count: s.transformedCount))
        ms.append(try workspace.buffer(3 + 4 * chunk, count: s.productCount))
        accs.append(try workspace.buffer(4 + 4 * chunk, count: accCount))
    }
    parallelFor(chunks) { chunk in
        accs[chunk].update(repeating: 0, count: accCount)
        for block in chunkRange(chunk, of: chunks, total: blocks) {
            let n = block / s.blocksPerImage, b = block % s.blocksPerImage
            let t0 = b * s.blockTiles, t1 = min(s.tilesPerImage, t0 + s.blockTiles)
            if t0 >= t1 { continue }
            let firstRow = t0 / s.tilesW
            winogradFillSlab(s, image: x + n * C * s.height * s.width, firstTileRow: firstRow,
                             lastTileRow: (t1 - 1) / s.tilesW, slab: slabs[chunk])
            winogradInputTransform(V.self, s, slab: UnsafePointer(slabs[chunk]), firstTileRow: firstRow,
                                   t0: t0, t1: t1, v: vs[chunk])
            winogradGradOutputTransform(V.self, s, g: gradOut + n * K * s.outH * s.outW, t0: t0, t1: t1, m: ms[chunk])
            winogradWeightGradMultiply(V.self, s, m: UnsafePointer(ms[chunk]), v: UnsafePointer(vs[chunk]),
                                       vectors: (t1 - t0 + L - 1) / L, acc: accs[chunk])
        }
    }
    let half: T = 0.5
    // Gᵀ applied to four values.
    @inline(__always) func gt(_ q0: T, _ q1: T, _ q2: T, _ q3: T) -> (T, T, T) {
        (q0 + half * (q1 + q2), half * (q1 - q2), half * (q1 + q2) + q3)
    }
    withUnsafeTemporaryAllocation(of: T.self, capacity: 16) { du in
        for k in 0..<K {
            for c in 0..<C {
                // dU[ξ][k][c]: chunks in order, each chunk's lanes in order.
                let (kg, kr, cg, cj) = (k / 4, k % 4, c / 3, c % 3)
                for xi in 0..<16 {
                    let offset = (((xi * s.kGroups + kg) * cGroups + cg) * 12 + kr * 3 + cj) * L
                    var sum: T = 0
                    for chunk in 0..<chunks {
                        let p = accs[chunk] + offset
                        var lanes: T = 0
                        for l in 0..<L { lanes += p[l] }
                        sum += lanes
                    }
                    du[xi] = sum
                }
                // Gᵀ dU G: the rows (i) combined for each column j, then the columns.
                let c0 = gt(du[0], du[4], du[8], du[12]), c1 = gt(du[1], du[5], du[9], du[13])
                let c2 = gt(du[2], du[6], du[10], du[14]), c3 = gt(du[3], du[7], du[11], du[15])
                let rows = [gt(c0.0, c1.0, c2.0, c3.0), gt(c0.1, c1.1, c2.1, c3.1), gt(c0.2, c1.2, c2.2, c3.2)]
                let dw = gradWeight + (k * C + c) * 9
                for r in 0..<3 {
                    let row = [rows[r].0, rows[r].1, rows[r].2]
                    for q in 0..<3 { dw[r * 3 + q] = accumulate ? dw[r * 3 + q] + row[q] : row[q] }
                }
            }
        }
    }
}

/// dw of conv2d by Winograd F(2x2, 3x3) for `conv2dUsesWinograd` geometries (see
/// `winogradWeightGradient`): Float through SIMD8<Float>, Double through SIMD4<Double>. Throws `.memory`.
///
///     gradOut (N, K, Ho, Wo), x (N, C, H, W)  ->  gradWeight (K, C, 3, 3), overwritten or added to
@inlinable
func winogradConv2dGradWeight<T: CNNScalar>(_ g: Conv2DGeometry, gradOut: UnsafePointer<T>, x: UnsafePointer<T>,
                                            gradWeight: UnsafeMutablePointer<T>, accumulate: Bool,
                                            workspace: ScratchSlots<T>) throws {
    let size = MemoryLayout<T>.stride
    // Larger blocks than the forward's: each block reloads every accumulator once.
    let s = WinogradShape(batch: g.batch, inChannels: g.inChannels, height: g.height, width: g.width,
                          outChannels: g.outChannels, padH: g.padH, padW: g.padW, lanes: size == 4 ? 8 : 4,
                          scalarSize: size, blockBytes: winogradWeightGradBlockBytes, maxGroupsPerBlock: 16)
    if T.self == Float.self {
        try winogradWeightGradient(SIMD8<Float>.self, s, x: UnsafeRawPointer(x).assumingMemoryBound(to: Float.self),
                                   gradOut: UnsafeRawPointer(gradOut).assumingMemoryBound(to: Float.self),
                                   gradWeight: UnsafeMutableRawPointer(gradWeight).assumingMemoryBound(to: Float.self),
                                   accumulate: accumulate, workspace: unsafeDowncast(workspace, to: ScratchSlots<Float>.self))
    } else if T.self == Double.self {
        try winogradWeightGradient(SIMD4<Double>.self, s, x: UnsafeRawPointer(x).assumingMemoryBound(to: Double.self),
                                   gradOut: UnsafeRawPointer(gradOut).assumingMemoryBound(to: Double.self),
                                   gradWeight: UnsafeMutableRawPointer(gradWeight).assumingMemoryBound(to: Double.self),
                                   accumulate: accumulate, workspace: unsafeDowncast(workspace, to: ScratchSlots<Double>.self))
    } else {   // (CNNScalar has no other conformer in this library)
        throw SwiftCNNError.runtime("conv2d_backward: internal error: no Winograd kernel for \(T.self)")
    }
}

/// The V + dM bytes of one weight-gradient block (see `WinogradShape.init`).
@usableFromInline let winogradWeightGradBlockBytes = 1024 * 1024

/// Winograd F(2x2, 3x3) convolution (Lavin & Gray, "Fast Algorithms for Convolutional Neural
/// Networks", 2016): a 3x3, stride-1, undilated correlation computed over 4x4 input tiles taken with
/// stride 2, each giving a 2x2 output tile, with 16 multiplies per tile and channel pair instead of 36.
///
/// For one tile d (4x4, rows 2ty.., columns 2tx.. of the zero-padded input) and one filter g (3x3):
///
///     y (2x2) = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A
///
///     Bᵀ = | 1  0 -1  0 |     G = | 1    0    0   |     Aᵀ = | 1  1  1  0 |
///          | 0  1  1  0 |         | 1/2  1/2  1/2 |          | 0  1 -1 -1 |
///          | 0 -1  1  0 |         | 1/2 -1/2  1/2 |
///          | 0  1  0 -1 |         | 0    0    1   |
///
/// Every coefficient is 0, ±1 or ±1/2, so the transforms are exact in binary floating point apart from
/// the rounding of their sums. Summed over channels, with ξ = (i, j) one of the 16 components:
///
///     U[ξ][k][c] = (G w[k,c] Gᵀ)[ξ]                      (weight transform, once per call)
///     V[ξ][c][t] = (Bᵀ d[c,t] B)[ξ]                      (input transform, per tile t)
///     M[ξ][k][t] = Σ_c U[ξ][k][c] · V[ξ][c][t]            (16 independent GEMMs)
///     y[k, t]    = Aᵀ M[·][k][t] A  (+ bias[k])            (output transform)
///
/// The tiles of an image are processed in blocks (a few tile groups of 3 SIMD vectors each) so that a
/// block's V and M stay in L2; blocks of all images run in parallel chunks. Each output element is
/// computed by one fixed sequence of operations whatever the chunking, so results are deterministic
/// and independent of the thread count.
///
/// Memory layouts (per block; `GW` = 3 vector widths of tiles, `kPad` = K rounded up to 4):
///
///     U    [ξ][k group of 4][c][4]            (rows k >= K are zero)
///     V    [ξ][tile group][c][GW]             (lanes past the block's tiles are zero)
///     M    [ξ][k < kPad][block tiles]
///     slab [c][slab rows][paddedW]            (the zero-padded input rows the block reads)

/// The sizes of one Winograd F(2x2, 3x3) convolution: `batch` images of `inChannels` x `height` x
/// `width`, zero-padded by (padH, padW), correlated with `outChannels` 3x3 filters.
@usableFromInline
struct WinogradShape {
    @usableFromInline let batch, inChannels, height, width, outChannels, padH, padW: Int
    @usableFromInline let outH, outW, tilesH, tilesW, tilesPerImage: Int
    /// Vector lanes (8 floats or 4 doubles per 256-bit register) and tiles per group (3 vectors).
    @usableFromInline let lanes, groupWidth: Int
    @usableFromInline let kGroups, kPad: Int
    /// Tile groups per block, blocks per image, tiles per (full) block.
    @usableFromInline let groupsPerBlock, blocksPerImage, blockTiles: Int
    /// The padded slab: its width, and its most rows (a block spans at most this many tile rows + 1).
    @usableFromInline let paddedW, slabRows: Int

    @inlinable
    init(batch: Int, inChannels: Int, height: Int, width: Int, outChannels: Int, padH: Int, padW: Int,
         lanes: Int, scalarSize: Int, blockBytes: Int = 320 * 1024, maxGroupsPerBlock: Int = 4) {
        self.batch = batch; self.inChannels = inChannels; self.height = height; self.width = width
        self.outChannels = outChannels; self.padH = padH; self.padW = padW
        outH = height + 2 * padH - 2; outW = width + 2 * padW - 2
        tilesH = (outH + 1) / 2; tilesW = (outW + 1) / 2; tilesPerImage = tilesH * tilesW
        self.lanes = lanes; groupWidth = 3 * lanes
        kGroups = (outChannels + 3) / 4; kPad = 4 * kGroups
        // Blocks: V + M of a block within `blockBytes` (the forward: 320 KiB; L2 is 512 KiB on Zen 3,
        // 1-2 MiB elsewhere), at most `maxGroupsPerBlock` groups (the forward: 4; U[ξ] is reused
        // across the groups of a block), at least one; the image's
        // groups split evenly among its blocks so that only the last group may be partly empty.
        let groupsPerImage = (tilesPerImage + groupWidth - 1) / groupWidth
        let bytesPerGroup = 16 * (inChannels + kPad) * groupWidth * scalarSize
        let maxGroups = max(1, min(maxGroupsPerBlock, blockBytes / max(1, bytesPerGroup)))
        blocksPerImage = (groupsPerImage + maxGroups - 1) / maxGroups
        groupsPerBlock = (groupsPerImage + blocksPerImage - 1) / blocksPerImage
        blockTiles = groupsPerBlock * groupWidth
        paddedW = 2 * tilesW + 2
        slabRows = 2 * min(tilesH, (blockTiles - 1) / max(1, tilesW) + 2) + 2
    }

    @inlinable var blocks: Int { batch * blocksPerImage }
    @inlinable var packedWeightCount: Int { 16 * kPad * inChannels }
    @inlinable var transformedCount: Int { 16 * inChannels * blockTiles }
    @inlinable var productCount: Int { 16 * kPad * blockTiles }
    @inlinable var slabCount: Int { inChannels * slabRows * paddedW }
    /// Multiply-adds of the direct convolution (for the chunking).
    @inlinable var directWork: Double {
        Double(batch) * Double(outChannels) * Double(inChannels) * 9 * Double(outH) * Double(outW)
    }
}

// MARK: - weight transform

/// U[ξ][k group][c][4] = (G w[k,c] Gᵀ)[ξ] for the filters `w(k, c, r, s)` (k < K, c < C), rows k >= K zero.
///
///     w: K x C x 3 x 3 (by the closure)  ->  u (16 * kPad * C), overwritten
@inlinable
func winogradTransformWeights<T: CNNScalar>(_ s: WinogradShape, w: (Int, Int, Int, Int) -> T,
                                            into u: UnsafeMutablePointer<T>) {
    let C = s.inChannels, kGroups = s.kGroups
    u.update(repeating: 0, count: s.packedWeightCount)
    let half: T = 0.5
    // G applied to a column or row (a, b, d) of three: (a, (a + b + d)/2, (a - b + d)/2, d).
    func g4(_ a: T, _ b: T, _ d: T) -> (T, T, T, T) { (a, half * (a + b + d), half * (a - b + d), d) }
    for k in 0..<s.outChannels {
        for c in 0..<C {
            // t = G g (4 x 3, by columns), then u = t Gᵀ (4 x 4, by rows).
            let c0 = g4(w(k, c, 0, 0), w(k, c, 1, 0), w(k, c, 2, 0))
            let c1 = g4(w(k, c, 0, 1), w(k, c, 1, 1), w(k, c, 2, 1))
            let c2 = g4(w(k, c, 0, 2), w(k, c, 1, 2), w(k, c, 2, 2))
            let rows = [g4(c0.0, c1.0, c2.0), g4(c0.1, c1.1, c2.1), g4(c0.2, c1.2, c2.2), g4(c0.3, c1.3, c2.3)]
            for i in 0..<4 {
                let row = [rows[i].0, rows[i].1, rows[i].2, rows[i].3]
                for j in 0..<4 {
                    u[(((i * 4 + j) * kGroups + k / 4) * C + c) * 4 + k % 4] = row[j]
                }
            }
        }
    }
}

// MARK: - the convolution

/// y = the 3x3 correlation of x with the filters transformed in `u` (+ bias), for every image.
/// Throws `.memory` (scratch from `workspace`, slots 1 ... 3 * chunks; slot 0 is the caller's U).
///
///     x (N, C, H, W), u (winogradTransformWeights), bias (K) or nil  ->  y (N, K, Ho, Wo), overwritten
///
/// `V` is the vector type of the tile lanes (SIMD8<Float> or SIMD4<Double> on AVX2); `s.lanes` must
/// be its lane count.
@inlinable
func winogradConvolve<V: SIMD & BitwiseCopyable>(_: V.Type, _ s: WinogradShape, x: UnsafePointer<V.Scalar>,
                                                 u: UnsafePointer<V.Scalar>, bias: UnsafePointer<V.Scalar>?,
                                                 y: UnsafeMutablePointer<V.Scalar>,
                                                 workspace: ScratchSlots<V.Scalar>) throws where V.Scalar: CNNScalar {
    let blocks = s.blocks
    if blocks == 0 || s.outChannels == 0 { return }
    // Chunks of whole blocks, a fixed function of the sizes and the thread count: more chunks than
    // threads (Dispatch balances them); the result does not depend on the split.
    let threads = Threading.numThreads
    let chunks = threads <= 1 || s.directWork < 2e6 ? 1 : min(blocks, 4 * threads)
    var slabs: [UnsafeMutablePointer<V.Scalar>] = [], vs: [UnsafeMutablePointer<V.Scalar>] = []
    var ms: [UnsafeMutablePointer<V.Scalar>] = []
    for chunk in 0..<chunks {
        slabs.append(try workspace.buffer(1 + 3 * chunk, count: s.slabCount))
        vs.append(try workspace.buffer(2 + 3 * chunk, count: s.transformedCount))
        ms.append(try workspace.buffer(3 + 3 * chunk, count: s.productCount))
    }
    parallelFor(chunks) { chunk in
        for block in chunkRange(chunk, of: chunks, total: blocks) {
            let n = block / s.blocksPerImage, b = block % s.blocksPerImage
            let t0 = b * s.blockTiles, t1 = min(s.tilesPerImage, t0 + s.blockTiles)
            if t0 >= t1 { continue }
            let image = x + n * s.inChannels * s.height * s.width
            let firstRow = t0 / s.tilesW
            winogradFillSlab(s, image: image, firstTileRow: firstRow, lastTileRow: (t1 - 1) / s.tilesW, slab: slabs[chunk])
            winogradInputTransform(V.self, s, slab: UnsafePointer(slabs[chunk]), firstTileRow: firstRow,
                                   t0: t0, t1: t1, v: vs[chunk])
            winogradMultiply(V.self, s, u: u, v: UnsafePointer(vs[chunk]), m: ms[chunk])
            winogradOutputTransform(V.self, s, m: UnsafePointer(ms[chunk]), t0: t0, t1: t1, bias: bias,
                                    y: y + n * s.outChannels * s.outH * s.outW)
        }
    }
}

/// Copies the input rows that tile rows firstTileRow...lastTileRow read into `slab`, zero-padded:
/// slab[c][r][q] = x[c, 2 firstTileRow + r - padH, q - padW], zero outside x.
///
///     image (C, H, W)  ->  slab (C, slabRows, paddedW), the first 2 (last - first + 1) + 2 rows overwritten
@inlinable
func winogradFillSlab<T: CNNScalar>(_ s: WinogradShape, image: UnsafePointer<T>, firstTileRow: Int, lastTileRow: Int,
                                    slab: UnsafeMutablePointer<T>) {
    let rows = 2 * (lastTileRow - firstTileRow + 1) + 2
    let (H, W, Wp) = (s.height, s.width, s.paddedW)
    let right = Wp - s.padW - W   // >= 0: 2 tilesW + 2 >= W + 2 padW
    for c in 0..<s.inChannels {
        let plane = image + c * H * W, dst = slab + c * s.slabRows * Wp
        for r in 0..<rows {
            let h = 2 * firstTileRow + r - s.padH
            let row = dst + r * Wp
            if h < 0 || h >= H {
                row.update(repeating: 0, count: Wp)
                continue
            }
            row.update(repeating: 0, count: s.padW)
            (row + s.padW).update(from: plane + h * W, count: W)
            (row + s.padW + W).update(repeating: 0, count: right)
        }
    }
}

/// Bᵀ applied to four values (a row or a column of a tile): (d0 - d2, d1 + d2, d2 - d1, d1 - d3).
@inlinable @inline(__always)
func winogradB<V: SIMD>(_ d0: V, _ d1: V, _ d2: V, _ d3: V) -> (V, V, V, V) where V.Scalar: FloatingPoint {
    (d0 - d2, d1 + d2, d2 - d1, d1 - d3)
}

/// V[ξ][group][c][GW] = (Bᵀ d B)[ξ] for tiles t0 ..< t1 of the image, d read from the slab (whose
/// first row is input row 2 firstTileRow - padH); lanes past t1 are zero.
@inlinable
func winogradInputTransform<V: SIMD & BitwiseCopyable>(_: V.Type, _ s: WinogradShape, slab: UnsafePointer<V.Scalar>,
                                                       firstTileRow: Int, t0: Int, t1: Int,
                                                       v: UnsafeMutablePointer<V.Scalar>) where V.Scalar: CNNScalar {
    typealias T = V.Scalar
    let L = V.scalarCount, C = s.inChannels, Wp = s.paddedW, GW = s.groupWidth
    let size = MemoryLayout<T>.stride
    let xiBytes = s.groupsPerBlock * C * GW * size
    // Lane l of a contiguous run of tiles (one tile row): input column 2l + j of the run's first tile.
    @inline(__always) func gather(_ row: UnsafePointer<T>, _ j: Int) -> V {
        var lane = V()
        for l in 0..<L { lane[l] = row[2 * l + j] }
        return lane
    }
    withUnsafeTemporaryAllocation(of: Int.self, capacity: L) { offsets in
        for vi in 0..<(s.groupsPerBlock * 3) {
            let first = t0 + vi * L
            let group = vi / 3, laneOffset = (vi % 3) * L
            let ty = first / s.tilesW, tx = first % s.tilesW
            let contiguous = first + L <= t1 && tx + L <= s.tilesW
            // Otherwise the slab offset of each lane's tile, or -1 for a lane past t1.
            if !contiguous {
                for l in 0..<L {
                    let t = first + l
                    offsets[l] = t < t1 ? 2 * (t / s.tilesW - firstTileRow) * Wp + 2 * (t % s.tilesW) : -1
                }
            }
            let base = 2 * (ty - firstTileRow) * Wp + 2 * tx
            for c in 0..<C {
                let plane = slab + c * s.slabRows * Wp
                // Rows r = 0 ..< 4 of every lane's tile, each transformed: e_r = Bᵀ-combination of its columns.
                var e0 = (V(), V(), V(), V()), e1 = e0, e2 = e0, e3 = e0
                if contiguous {
                    var row = plane + base
                    e0 = winogradB(gather(row, 0), gather(row, 1), gather(row, 2), gather(row, 3)); row += Wp
                    e1 = winogradB(gather(row, 0), gather(row, 1), gather(row, 2), gather(row, 3)); row += Wp
                    e2 = winogradB(gather(row, 0), gather(row, 1), gather(row, 2), gather(row, 3)); row += Wp
                    e3 = winogradB(gather(row, 0), gather(row, 1), gather(row, 2), gather(row, 3))
                } else {
                    var d = [[V]](repeating: [V](repeating: V(), count: 4), count: 4)
                    for l in 0..<L where offsets[l] >= 0 {
                        let p = plane + offsets[l]
                        for r in 0..<4 { for j in 0..<4 { d[r][j][l] = p[r * Wp + j] } }
                    }
                    e0 = winogradB(d[0][0], d[0][1], d[0][2], d[0][3])
                    e1 = winogradB(d[1][0], d[1][1], d[1][2], d[1][3])
                    e2 = winogradB(d[2][0], d[2][1], d[2][2], d[2][3])
                    e3 = winogradB(d[3][0], d[3][1], d[3][2], d[3][3])
                }
                // Then the rows combined, column j by column j: v[i][j] = Bᵀ-combination of e_0..3 [j].
                let dst = UnsafeMutableRawPointer(v + (group * C + c) * GW + laneOffset)
                @inline(__always) func put(_ j: Int, _ a: V, _ b: V, _ c: V, _ d: V) {
                    let q = winogradB(a, b, c, d)
                    dst.storeBytes(of: q.0, toByteOffset: (0 + j) * xiBytes, as: V.self)
                    dst.storeBytes(of: q.1, toByteOffset: (4 + j) * xiBytes, as: V.self)
                    dst.storeBytes(of: q.2, toByteOffset: (8 + j) * xiBytes, as: V.self)
                    dst.storeBytes(of: q.3, toByteOffset: (12 + j) * xiBytes, as: V.self)
                }
                put(0, e0.0, e1.0, e2.0, e3.0)
                put(1, e0.1, e1.1, e2.1, e3.1)
                put(2, e0.2, e1.2, e2.2, e3.2)
                put(3, e0.3, e1.3, e2.3, e3.3)
            }
        }
    }
}

/// M[ξ][k][t] = Σ_c U[ξ][k][c] V[ξ][c][t] for the block: 16 GEMMs (kPad x C) · (C x blockTiles), each
/// in register blocks of 4 output channels x 3 vectors of tiles (12 accumulators, 3 tile loads and 4
/// broadcasts per channel: 19 of AVX2's 16 ymm registers counting the broadcasts, which the compiler
/// folds into the multiply-adds' memory operands). c runs in order from zero: deterministic.
@inlinable
func winogradMultiply<V: SIMD & BitwiseCopyable>(_: V.Type, _ s: WinogradShape, u: UnsafePointer<V.Scalar>,
                                                 v: UnsafePointer<V.Scalar>, m: UnsafeMutablePointer<V.Scalar>)
    where V.Scalar: CNNScalar {
    typealias T = V.Scalar
    let L = V.scalarCount, C = s.inChannels, GW = s.groupWidth, BT = s.blockTiles
    let size = MemoryLayout<T>.stride
    for xi in 0..<16 {
        let uXi = u + xi * s.kGroups * C * 4
        for group in 0..<s.groupsPerBlock {
            let vg = UnsafeRawPointer(v + (xi * s.groupsPerBlock + group) * C * GW)
            for kg in 0..<s.kGroups {
                var pu = uXi + kg * C * 4
                var pv = vg
                var a00 = V(), a01 = V(), a02 = V(), a10 = V(), a11 = V(), a12 = V()
                var a20 = V(), a21 = V(), a22 = V(), a30 = V(), a31 = V(), a32 = V()
                for _ in 0..<C {
                    let v0 = pv.loadUnaligned(as: V.self)
                    let v1 = pv.loadUnaligned(fromByteOffset: L * size, as: V.self)
                    let v2 = pv.loadUnaligned(fromByteOffset: 2 * L * size, as: V.self)
                    let w0 = V(repeating: pu[0])
                    a00 = multiplyAdd(w0, v0, a00); a01 = multiplyAdd(w0, v1, a01); a02 = multiplyAdd(w0, v2, a02)
                    let w1 = V(repeating: pu[1])
                    a10 = multiplyAdd(w1, v0, a10); a11 = multiplyAdd(w1, v1, a11); a12 = multiplyAdd(w1, v2, a12)
                    let w2 = V(repeating: pu[2])
                    a20 = multiplyAdd(w2, v0, a20); a21 = multiplyAdd(w2, v1, a21); a22 = multiplyAdd(w2, v2, a22)
                    let w3 = V(repeating: pu[3])
                    a30 = multiplyAdd(w3, v0, a30); a31 = multiplyAdd(w3, v1, a31); a32 = multiplyAdd(w3, v2, a32)
                    pu += 4
                    pv += GW * size
                }
                let out = UnsafeMutableRawPointer(m + (xi * s.kPad + kg * 4) * BT + group * GW)
                let row = BT * size, vec = L * size
                out.storeBytes(of: a00, as: V.self)
                out.storeBytes(of: a01, toByteOffset: vec, as: V.self)
                out.storeBytes(of: a02, toByteOffset: 2 * vec, as: V.self)
                out.storeBytes(of: a10, toByteOffset: row, as: V.self)
                out.storeBytes(of: a11, toByteOffset: row + vec, as: V.self)
                out.storeBytes(of: a12, toByteOffset: row + 2 * vec, as: V.self)
                out.storeBytes(of: a20, toByteOffset: 2 * row, as: V.self)
                out.storeBytes(of: a21, toByteOffset: 2 * row + vec, as: V.self)
                out.storeBytes(of: a22, toByteOffset: 2 * row + 2 * vec, as: V.self)
                out.storeBytes(of: a30, toByteOffset: 3 * row, as: V.self)
                out.storeBytes(of: a31, toByteOffset: 3 * row + vec, as: V.self)
                out.storeBytes(of: a32, toByteOffset: 3 * row + 2 * vec, as: V.self)
            }
        }
    }
}

/// Aᵀ applied to four values: (m0 + m1 + m2, m1 - m2 - m3).
@inlinable @inline(__always)
func winogradA<V: SIMD>(_ m0: V, _ m1: V, _ m2: V, _ m3: V) -> (V, V) where V.Scalar: FloatingPoint {
    (m0 + m1 + m2, m1 - m2 - m3)
}

/// y[k][2ty + a][2tx + b] = (Aᵀ M[·][k][t] A)[a][b] (+ bias[k]) for tiles t0 ..< t1 of the image,
/// dropping the outputs past Ho or Wo (odd output sizes).
///
///     m (16, kPad, blockTiles)  ->  y (K, Ho, Wo) of the image, the block's tiles overwritten
@inlinable
func winogradOutputTransform<V: SIMD & BitwiseCopyable>(_: V.Type, _ s: WinogradShape, m: UnsafePointer<V.Scalar>,
                                                        t0: Int, t1: Int, bias: UnsafePointer<V.Scalar>?,
                                                        y: UnsafeMutablePointer<V.Scalar>) where V.Scalar: CNNScalar {
    typealias T = V.Scalar
    let L = V.scalarCount, BT = s.blockTiles, Ho = s.outH, Wo = s.outW
    let xiBytes = s.kPad * BT * MemoryLayout<T>.stride
    for k in 0..<s.outChannels {
        let b = V(repeating: bias?[k] ?? 0)
        let yk = y + k * Ho * Wo
        var first = t0
        while first < t1 {
            let p = UnsafeRawPointer(m + k * BT + (first - t0))
            @inline(__always) func ld(_ xi: Int) -> V { p.loadUnaligned(fromByteOffset: xi * xiBytes, as: V.self) }
            // Rows of Aᵀ M, then their columns by A.
            let r0 = winogradA(ld(0), ld(4), ld(8), ld(12)), r1 = winogradA(ld(1), ld(5), ld(9), ld(13))
            let r2 = winogradA(ld(2), ld(6), ld(10), ld(14)), r3 = winogradA(ld(3), ld(7), ld(11), ld(15))
            let top = winogradA(r0.0, r1.0, r2.0, r3.0), bottom = winogradA(r0.1, r1.1, r2.1, r3.1)
            let y00 = top.0 + b, y01 = top.1 + b, y10 = bottom.0 + b, y11 = bottom.1 + b
            let ty = first / s.tilesW, tx = first % s.tilesW
            if first + L <= t1 && tx + L <= s.tilesW && 2 * (tx + L) <= Wo && 2 * ty + 1 < Ho {
                let row0 = yk + 2 * ty * Wo + 2 * tx, row1 = row0 + Wo
                for l in 0..<L {
                    row0[2 * l] = y00[l]; row0[2 * l + 1] = y01[l]
                    row1[2 * l] = y10[l]; row1[2 * l + 1] = y11[l]
                }
            } else {
                for l in 0..<min(L, t1 - first) {
                    let t = first + l
                    let (i, j) = (2 * (t / s.tilesW), 2 * (t % s.tilesW))
                    let row0 = yk + i * Wo + j
                    row0[0] = y00[l]
                    if j + 1 < Wo { row0[1] = y01[l] }
                    if i + 1 < Ho {
                        row0[Wo] = y10[l]
                        if j + 1 < Wo { row0[Wo + 1] = y11[l] }
                    }
                }
            }
            first += L
        }
    }
}

// MARK: - conv2d's entry points

/// The Winograd shape of a convolution of `T` (8 float or 4 double lanes: one 256-bit register).
@inlinable
func winogradShape<T: CNNScalar>(_: T.Type, batch: Int, inChannels: Int, height: Int, width: Int, outChannels: Int,
                                 padH: Int, padW: Int) -> WinogradShape {
    let size = MemoryLayout<T>.stride
    return WinogradShape(batch: batch, inChannels: inChannels, height: height, width: width, outChannels: outChannels,
                         padH: padH, padW: padW, lanes: size == 4 ? 8 : 4, scalarSize: size)
}

/// The transformed weights `u` applied to x: Float through SIMD8<Float>, Double through SIMD4<Double>
/// (one 256-bit register each).
@inlinable
func winogradRun<T: CNNScalar>(_ s: WinogradShape, x: UnsafePointer<T>, u: UnsafePointer<T>, bias: UnsafePointer<T>?,
                               y: UnsafeMutablePointer<T>, workspace: ScratchSlots<T>) throws {
    if T.self == Float.self {
        precondition(s.lanes == 8)   // internal: winogradShape chose the lanes
        try winogradConvolve(SIMD8<Float>.self, s, x: UnsafeRawPointer(x).assumingMemoryBound(to: Float.self),
                             u: UnsafeRawPointer(u).assumingMemoryBound(to: Float.self),
                             bias: bias.map { UnsafeRawPointer($0).assumingMemoryBound(to: Float.self) },
                             y: UnsafeMutableRawPointer(y).assumingMemoryBound(to: Float.self),
                             workspace: unsafeDowncast(workspace, to: ScratchSlots<Float>.self))
    } else if T.self == Double.self {
        precondition(s.lanes == 4)
        try winogradConvolve(SIMD4<Double>.self, s, x: UnsafeRawPointer(x).assumingMemoryBound(to: Double.self),
                             u: UnsafeRawPointer(u).assumingMemoryBound(to: Double.self),
                             bias: bias.map { UnsafeRawPointer($0).assumingMemoryBound(to: Double.self) },
                             y: UnsafeMutableRawPointer(y).assumingMemoryBound(to: Double.self),
                             workspace: unsafeDowncast(workspace, to: ScratchSlots<Double>.self))
    } else {   // (CNNScalar has no other conformer in this library)
        throw SwiftCNNError.runtime("conv2d: internal error: no Winograd kernel for \(T.self)")
    }
}

/// y = conv2d(x, weight, bias) by Winograd F(2x2, 3x3), for 3x3 kernels, stride 1, no dilation
/// (`conv2dUsesWinograd`). Throws `.memory`.
///
///     x (N, C, H, W), weight (K, C, 3, 3), bias (K) or nil  ->  y (N, K, Ho, Wo), overwritten
@inlinable
func winogradConv2dForward<T: CNNScalar>(_ g: Conv2DGeometry, x: UnsafePointer<T>, weight: UnsafePointer<T>,
                                         bias: UnsafePointer<T>?, y: UnsafeMutablePointer<T>,
                                         workspace: ScratchSlots<T>) throws {
    let s = winogradShape(T.self, batch: g.batch, inChannels: g.inChannels, height: g.height, width: g.width,
                          outChannels: g.outChannels, padH: g.padH, padW: g.padW)
    let C = g.inChannels
    let u = try workspace.buffer(0, count: s.packedWeightCount)
    winogradTransformWeights(s, w: { k, c, r, q in weight[((k * C + c) * 3 + r) * 3 + q] }, into: u)
    try winogradRun(s, x: x, u: u, bias: bias, y: y, workspace: workspace)
}

/// dx of conv2d by Winograd F(2x2, 3x3): for stride 1 without dilation, dx is the "full" correlation
/// of g with the 180°-rotated filter, input and output channels swapped:
///
///     dx[n,c,h,w] = Σ_{k,r,s} g[n, k, h - (2 - ph) + r, w - (2 - pw) + s] · w[k, c, 2 - r, 2 - s]
///
/// i.e. the forward over g (K channels) with filters w'[c][k] = rot180(w[k][c]) and padding
/// (2 - ph, 2 - pw) (needs ph, pw <= 2). Throws `.memory`.
///
///     gradOut (N, K, Ho, Wo), weight (K, C, 3, 3)  ->  gradX (N, C, H, W), overwritten
@inlinable
func winogradConv2dGradInput<T: CNNScalar>(_ g: Conv2DGeometry, gradOut: UnsafePointer<T>, weight: UnsafePointer<T>,
                                           gradX: UnsafeMutablePointer<T>, workspace: ScratchSlots<T>) throws {
    let s = winogradShape(T.self, batch: g.batch, inChannels: g.outChannels, height: g.outH, width: g.outW,
                          outChannels: g.inChannels, padH: 2 - g.padH, padW: 2 - g.padW)
    let C = g.inChannels
    let u = try workspace.buffer(0, count: s.packedWeightCount)
    winogradTransformWeights(s, w: { c, k, r, q in weight[((k * C + c) * 3 + 2 - r) * 3 + 2 - q] }, into: u)
    try winogradRun(s, x: gradOut, u: u, bias: nil, y: gradX, workspace: workspace)
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// General matrix multiply: C[m×n] = alpha * op(A) * op(B) + beta * C, row-major.
///
/// `op(A)` is m×k: A itself (m×k, row stride lda) or, if `transA`, the transpose of A (k×m, row
/// stride lda). Likewise `op(B)` is k×n: B (k×n, ldb) or, if `transB`, Bᵀ with B n×k.
/// As BLAS, `beta == 0` overwrites C without reading it (NaNs in C do not propagate).
///
/// The fast path is the Goto/BLIS scheme (as OpenBLAS and BLIS):
///
///     for jc in columns of C, NC at a time:
///       for pc in the k dimension, KC at a time:
///         pack op(B)[pc.., jc..] into NR-wide panels          Bp: KC × NC (L2), zero-padded
///         for ic in rows of C, MC at a time:
///           pack alpha*op(A)[ic.., pc..] into MR-tall panels  Ap: MC × KC, zero-padded
///           for each NR-wide panel of Bp (KC × NR: L1), for each MR-tall panel of Ap:
///             micro-kernel: C tile (MR × NR) (+)= Ap panel · Bp panel
///
/// The micro-kernel keeps an MR × NR tile of C in registers (6 × 4 SIMD vectors: 24 of the 32
/// AVX-512 registers); per k step it loads 4 vectors of B, broadcasts 6 scalars of A and issues 24
/// multiply-adds. On a narrow register file (AVX2; `directConvRegisterFile`) the tile is 6 × 2
/// vectors of 32 bytes instead (Kernels/GEMMNarrow.swift), with the same sums bit for bit.
/// Packing makes every load of the micro-kernel contiguous whatever the transposes
/// and leading dimensions, and pads the edges with zeros so one kernel serves every tile. When C is
/// narrow (one or two NR panels) a dense A is read in place instead: each of its elements is then
/// used only once or twice, and packing it would cost about as much as the multiply.
///
/// The operands are anything that can pack itself (`GEMMPackableA`, `GEMMPackableB`): a dense
/// matrix here, or, for convolutions, the im2col matrix of an image, packed straight from the image
/// (Im2Col.swift) so the column matrix is never materialized.
///
/// Determinism: every element of C is summed in the same order (KC blocks in turn, each summed
/// p = 0, 1, ... in one accumulator) whatever the thread count or partition, so results are
/// bit-identical across runs and thread counts.

/// Rows of the register tile.
@usableFromInline let gemmMR = 6
/// Depth of a packed block: k values per pass over C. 128 keeps a KC × NR panel of B at 32 KB, in L1.
@usableFromInline let gemmKC = 128
/// Rows of a packed A block (a multiple of gemmMR).
@usableFromInline let gemmMC = 144
/// Columns of a packed B block (a multiple of every NR).
@usableFromInline let gemmNC = 1024
/// Up to this many multiply-adds the packing costs more than it saves: use the simple loops.
@usableFromInline let gemmSmallWork = 8 * 8 * 64
/// Multiply-adds per thread below which another thread does not pay for its start-up (~10 µs).
@usableFromInline let gemmWorkPerThread = 500_000

// MARK: - public entry points

/// C = alpha * op(A) * op(B) + beta * C.
///
///     op(A): (m, k)   op(B): (k, n)   C: (m, n), leading dimensions lda, ldb, ldc (in elements)
///
/// Runs on up to `Threading.numThreads` threads when the problem is big enough.
@inlinable
func gemm<T: CNNScalar>(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: T,
                        a: UnsafePointer<T>, lda: Int, b: UnsafePointer<T>, ldb: Int,
                        beta: T, c: UnsafeMutablePointer<T>, ldc: Int) {
    #if DEBUG
    if debugUsesScalarKernels {   // unoptimized builds: plain loops (Ops/DebugScalarKernels.swift)
        debugGEMM(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
                  beta: beta, c: c, ldc: ldc)
        return
    }
    #endif
    gemmDispatch(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
                 beta: beta, c: c, ldc: ldc, threads: Threading.numThreads)
}

/// `gemm` on at most `threads` threads (1: the calling thread only).
@inlinable
func gemmDispatch<T: CNNScalar>(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: T,
                                a: UnsafePointer<T>, lda: Int, b: UnsafePointer<T>, ldb: Int,
                                beta: T, c: UnsafeMutablePointer<T>, ldc: Int, threads: Int) {
    if m <= 0 || n <= 0 { return }
    // (m*n*k in Double: the product of three sizes need not fit in Int.)
    if k <= 0 || alpha == 0 || Double(m) * Double(n) * Double(k) <= Double(gemmSmallWork) || m == 1 || n == 1 {
        gemmSmall(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                  b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
        return
    }
    let plan = GEMMPlan(T.self, m: m, n: n, k: k, threads: threads)
    // gemm does not throw and must not trap: if the packing buffers cannot be had, use the simple loops.
    let (total, overflow) = plan.bufferCount.multipliedReportingOverflow(by: plan.chunks)
    guard !overflow, let base = try? allocateAligned(T.self, count: total, what: "gemm: packing buffers") else {
        gemmSmall(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                  b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
        return
    }
    defer { deallocateAligned(base) }
    gemmRun(plan, m: m, n: n, k: k, alpha: alpha, a: GEMMDenseA(a: a, lda: lda, trans: transA),
            b: GEMMDenseB(b: b, ldb: ldb, trans: transB), beta: beta, c: c, ldc: ldc,
            buffer: { base + $0 * plan.bufferCount })
}

// MARK: - plan and threads

/// How a GEMM is split across threads, and the packing memory each part needs.
///
/// C is cut into `chunks` disjoint blocks: column ranges in whole NR panels when C has enough of
/// them, else row ranges in whole MR panels. The split depends only on (m, n, k, threads).
@usableFromInline
struct GEMMPlan {
    /// Columns of the register tile: 4 SIMD vectors of 64 bytes (64 floats or 32 doubles) for the
    /// wide (AVX-512) register file, 2 vectors of 32 bytes (16 floats or 8 doubles) for the narrow one
    /// (Kernels/GEMMNarrow.swift).
    @usableFromInline let nr: Int
    /// Which micro-kernel runs the tiles (`directConvRegisterFile` unless a test pins it).
    @usableFromInline let registerFile: RegisterFile
    @usableFromInline let chunks: Int
    @usableFromInline let splitColumns: Bool
    /// Elements of packing memory per chunk: Ap (MC×KC), Bp (KC×NC), an MR×NR edge tile, KC scratch.
    @usableFromInline let bufferCount: Int

    @inlinable
    init<T: CNNScalar>(_: T.Type, m: Int, n: Int, k: Int, threads: Int,
                       registerFile: RegisterFile = directConvRegisterFile) {
        let nr = registerFile == .wide ? 4 * (64 / MemoryLayout<T>.stride) : gemmNarrowVectors * (32 / MemoryLayout<T>.stride)
        let colPanels = (n + nr - 1) / nr, rowPanels = (m + gemmMR - 1) / gemmMR
        var chunks = 1
        if threads > 1 {
            // m*n*k as Double: the product of three user sizes may not fit in Int.
            let work = Double(m) * Double(n) * Double(k)
            chunks = max(1, min(threads, Int(min(work / Double(gemmWorkPerThread), 1e9))))
        }
        let splitColumns = colPanels >= 2 * chunks || colPanels >= rowPanels
        chunks = max(1, min(chunks, splitColumns ? colPanels : rowPanels))
        let mc = min(gemmMC, (m + gemmMR - 1) / gemmMR * gemmMR)
        let kc = min(gemmKC, k)
        let nc = min(gemmNC, colPanels * nr)
        self.nr = nr
        self.registerFile = registerFile
        self.chunks = chunks
        self.splitColumns = splitColumns
        self.bufferCount = mc * kc + kc * nc + gemmMR * nr + kc
    }
}

/// Runs the plan: each chunk multiplies its block of C on its own thread with its own packing
/// buffer (`buffer(chunk)`, `plan.bufferCount` elements, 64-byte aligned).
@inlinable
func gemmRun<T: CNNScalar, A: GEMMPackableA, B: GEMMPackableB>(
    _ plan: GEMMPlan, m: Int, n: Int, k: Int, alpha: T, a: A, b: B, beta: T, c: UnsafeMutablePointer<T>, ldc: Int,
    buffer: (Int) -> UnsafeMutablePointer<T>
) where A.Scalar == T, B.Scalar == T {
    if m <= 0 || n <= 0 { return }
    if k <= 0 || alpha == 0 {
        gemmScaleC(m: m, n: n, beta: beta, c: c, ldc: ldc)
        return
    }
    func run(_ t: Int, _ buffer: UnsafeMutablePointer<T>) {
        var rows = 0..<m, cols = 0..<n
        if plan.splitColumns {
            let panels = chunkRange(t, of: plan.chunks, total: (n + plan.nr - 1) / plan.nr)
            cols = panels.lowerBound * plan.nr ..< min(panels.upperBound * plan.nr, n)
        } else {
            let panels = chunkRange(t, of: plan.chunks, total: (m + gemmMR - 1) / gemmMR)
            rows = panels.lowerBound * gemmMR ..< min(panels.upperBound * gemmMR, m)
        }
        // Wide: one SIMD vector is 64 bytes (one AVX-512 register, one cache line), 4 per tile row.
        // Narrow: 32 bytes (one AVX2 register), 2 per tile row (Kernels/GEMMNarrow.swift).
        switch (plan.registerFile, MemoryLayout<T>.stride == 4) {
        case (.wide, true):
            gemmBlocked(SIMD16<T>.self, vectors: 4, rows: rows, cols: cols, k: k, alpha: alpha, a: a, b: b,
                        beta: beta, c: c, ldc: ldc, buffer: buffer)
        case (.wide, false):
            gemmBlocked(SIMD8<T>.self, vectors: 4, rows: rows, cols: cols, k: k, alpha: alpha, a: a, b: b,
                        beta: beta, c: c, ldc: ldc, buffer: buffer)
        case (.narrow, true):
            gemmBlocked(SIMD8<T>.self, vectors: gemmNarrowVectors, rows: rows, cols: cols, k: k, alpha: alpha,
                        a: a, b: b, beta: beta, c: c, ldc: ldc, buffer: buffer)
        case (.narrow, false):
            gemmBlocked(SIMD4<T>.self, vectors: gemmNarrowVectors, rows: rows, cols: cols, k: k, alpha: alpha,
                        a: a, b: b, beta: beta, c: c, ldc: ldc, buffer: buffer)
        }
    }
    // One chunk: run it here, without the buffer array and the parallelFor closure (a heap array
    // per GEMM, noticeable on small problems).
    if plan.chunks == 1 {
        run(0, buffer(0))
        return
    }
    var buffers: [UnsafeMutablePointer<T>] = []
    for t in 0..<plan.chunks { buffers.append(buffer(t)) }
    parallelFor(plan.chunks) { t in run(t, buffers[t]) }
}

// MARK: - the B operand

/// The B operand of the blocked GEMM: something that packs blocks of op(B) (k × n) into panels.
@usableFromInline
protocol GEMMPackableB {
    associatedtype Scalar: CNNScalar
    /// bp[panel*kc*nr + p*nr + j] = op(B)[row + p, col + panel*nr + j] for p < kc, panel*nr + j < nc;
    /// zero for panel*nr + j >= nc (up to the next multiple of nr). `scratch` holds kc elements.
    func pack(nr: Int, kc: Int, nc: Int, row: Int, col: Int, into bp: UnsafeMutablePointer<Scalar>,
              scratch: UnsafeMutablePointer<Scalar>)
}

/// A dense row-major B (k × n, or n × k when `trans`), row stride ldb.
@usableFromInline
struct GEMMDenseB<Scalar: CNNScalar>: GEMMPackableB {
    @usableFromInline let b: UnsafePointer<Scalar>
    @usableFromInline let ldb: Int
    @usableFromInline let trans: Bool

    @inlinable
    init(b: UnsafePointer<Scalar>, ldb: Int, trans: Bool) {
        self.b = b
        self.ldb = ldb
        self.trans = trans
    }

    @inlinable
    func pack(nr: Int, kc: Int, nc: Int, row: Int, col: Int, into bp: UnsafeMutablePointer<Scalar>,
              scratch: UnsafeMutablePointer<Scalar>) {
        var j = 0
        while j < nc {
            let cols = min(nr, nc - j)
            let panel = bp + j * kc
            if trans {
                // op(B)[p, j] = B[j, p]: a transpose. Read rows of B contiguously, 16 values at a
                // time, and scatter them with stride NR; 16 p's at a time keep the written part of the
                // panel (16 × NR) in L1 instead of sweeping the whole panel once per row of B.
                var p0 = 0
                while p0 < kc {
                    let pn = min(16, kc - p0)
                    for jj in 0..<cols {
                        let src = b + (col + j + jj) * ldb + row + p0, dst = panel + p0 * nr + jj
                        for p in 0..<pn { dst[p * nr] = src[p] }
                    }
                    p0 += 16
                }
                if cols < nr {
                    for p in 0..<kc { (panel + p * nr + cols).update(repeating: 0, count: nr - cols) }
                }
            } else {
                for p in 0..<kc {
                    let src = b + (row + p) * ldb + col + j, dst = panel + p * nr
                    dst.update(from: src, count: cols)
                    if cols < nr { (dst + cols).update(repeating: 0, count: nr - cols) }
                }
            }
            j += nr
        }
    }
}

// MARK: - the blocked kernel

/// The single-threaded blocked GEMM (see the file comment) on rows × cols of C (absolute indices
/// into op(A), op(B) and C). `buffer` holds `GEMMPlan.bufferCount` elements. The tile is MR rows ×
/// `vectors` SIMD vectors: 4 (`gemmMicroKernel`) or `gemmNarrowVectors` (`gemmMicroKernelNarrow`).
@inlinable
func gemmBlocked<V: SIMD, A: GEMMPackableA, B: GEMMPackableB>(
    _: V.Type, vectors: Int, rows: Range<Int>, cols: Range<Int>, k: Int, alpha: V.Scalar, a: A, b: B, beta: V.Scalar,
    c: UnsafeMutablePointer<V.Scalar>, ldc: Int, buffer: UnsafeMutablePointer<V.Scalar>
) where V.Scalar: CNNScalar, A.Scalar == V.Scalar, B.Scalar == V.Scalar {
    typealias T = V.Scalar
    let nr = vectors * V.scalarCount
    let wide = vectors == 4
    let m = rows.count, n = cols.count
    if m <= 0 || n <= 0 { return }
    let mcMax = min(gemmMC, (m + gemmMR - 1) / gemmMR * gemmMR)
    let kcMax = min(gemmKC, k)
    let ncMax = min(gemmNC, (n + nr - 1) / nr * nr)
    let ap = buffer, bp = ap + mcMax * kcMax
    let tile = bp + kcMax * ncMax, scratch = tile + gemmMR * nr

    var jc = cols.lowerBound
    while jc < cols.upperBound {
        let nc = min(ncMax, cols.upperBound - jc)
        var pc = 0
        while pc < k {
            let kc = min(kcMax, k - pc)
            // beta applies once, in the first k block; later blocks add onto C.
            let betaBlock: T = pc == 0 ? beta : 1
            b.pack(nr: nr, kc: kc, nc: nc, row: pc, col: jc, into: bp, scratch: scratch)
            var ic = rows.lowerBound
            while ic < rows.upperBound {
                let mc = min(mcMax, rows.upperBound - ic)
                // When C is narrow (up to two wide NR panels: 128 floats, 64 doubles) each element
                // of A is used only a few times, and packing A would cost about as much as the
                // multiply: a dense A is then read in place, and only a partial last panel is packed
                // (zero-padded). Otherwise packing pays (contiguous, L2-resident panels). The bound
                // is the wide tile's for both tiles: the narrow tile's own (32 floats) made the
                // Linear layers of LeNet (n = 84, 120) pack their whole input per call and thread.
                // (Packed or in place, the sums are the same.)
                let direct = alpha == 1 && nc <= 8 * (64 / MemoryLayout<T>.stride) ? a.inPlace : nil
                let fullPanels = direct == nil ? 0 : mc / gemmMR * gemmMR
                var packed = (rs: 1, ks: gemmMR)
                if fullPanels < mc {
                    packed = a.pack(mc: mc - fullPanels, kc: kc, row: ic + fullPanels, col: pc, alpha: alpha,
                                    into: ap + fullPanels * kc)
                }
                var jr = 0
                while jr < nc {
                    let nrValid = min(nr, nc - jr)
                    let bPanel = bp + jr * kc
                    var ir = 0
                    while ir < mc {
                        let mrValid = min(gemmMR, mc - ir)
                        // op(A)[i, p] of this panel is aPanel[i * rs + p * ks].
                        var (aPanel, rs, ks) = (UnsafePointer(ap + ir * kc), packed.rs, packed.ks)
                        if let direct, ir < fullPanels {
                            (rs, ks) = (direct.rowStride, direct.kStride)
                            aPanel = direct.base + (ic + ir) * rs + pc * ks
                        }
                        let cTile = c + (ic + ir) * ldc + jc + jr
                        let full = mrValid == gemmMR && nrValid == nr
                        // Edge tile: compute the full tile into scratch, then merge the valid part
                        // exactly as the kernel would have.
                        let (kBeta, kC, kLdc) = full ? (betaBlock, cTile, ldc) : (0, tile, nr)
                        if wide {
                            gemmMicroKernel(V.self, kc: kc, a: aPanel, rs: rs, ks: ks, b: bPanel, beta: kBeta,
                                            c: kC, ldc: kLdc)
                        } else {
                            gemmMicroKernelNarrow(V.self, kc: kc, a: aPanel, rs: rs, ks: ks, b: bPanel, beta: kBeta,
                                                  c: kC, ldc: kLdc)
                        }
                        if !full {
                            for r in 0..<mrValid {
                                let cr = cTile + r * ldc, tr = tile + r * nr
                                for j in 0..<nrValid {
                                    cr[j] = betaBlock == 0 ? tr[j]
                                        : (betaBlock == 1 ? cr[j] + tr[j] : multiplyAdd(betaBlock, cr[j], tr[j]))
                                }
                            }
                        }
                        ir += gemmMR
                    }
                    jr += nr
                }
                ic += mc
            }
            pc += kc
        }
        jc += nc
    }
}

// MARK: - the A operand

/// The A operand of the blocked GEMM: something that packs blocks of alpha * op(A) (m × k) into
/// MR-tall panels.
@usableFromInline
protocol GEMMPackableA {
    associatedtype Scalar: CNNScalar
    /// Packs alpha * op(A)[row ..< row+mc, col ..< col+kc] (rows zero-padded up to the next multiple
    /// of MR) and returns the layout written: element (i, p) at ap[(i / MR) * MR*kc + (i % MR) * rs + p * ks].
    /// The usual layout is MR-interleaved panels (rs 1, ks MR: the micro-kernel reads one stream);
    /// row-major (rs kc, ks 1) is also fine when it is much cheaper to produce.
    func pack(mc: Int, kc: Int, row: Int, col: Int, alpha: Scalar, into ap: UnsafeMutablePointer<Scalar>)
        -> (rs: Int, ks: Int)
    /// If op(A) can be read where it is: op(A)[i, p] = base[i * rowStride + p * kStride].
    var inPlace: (base: UnsafePointer<Scalar>, rowStride: Int, kStride: Int)? { get }
}

/// A dense row-major A (m × k, or k × m when `trans`), row stride lda.
@usableFromInline
struct GEMMDenseA<Scalar: CNNScalar>: GEMMPackableA {
    @usableFromInline let a: UnsafePointer<Scalar>
    @usableFromInline let lda: Int
    @usableFromInline let trans: Bool

    @inlinable
    init(a: UnsafePointer<Scalar>, lda: Int, trans: Bool) {
        self.a = a
        self.lda = lda
        self.trans = trans
    }

    @inlinable
    var inPlace: (base: UnsafePointer<Scalar>, rowStride: Int, kStride: Int)? {
        trans ? (a, 1, lda) : (a, lda, 1)
    }

    @inlinable
    func pack(mc: Int, kc: Int, row: Int, col: Int, alpha: Scalar, into ap: UnsafeMutablePointer<Scalar>)
        -> (rs: Int, ks: Int) {
        var i = 0
        while i < mc {
            let rows = min(gemmMR, mc - i)
            let panel = ap + i * kc
            if trans {
                // op(A)[r, p] = A[p, r]: for each p the MR values are contiguous in A.
                for p in 0..<kc {
                    let src = a + (col + p) * lda + row + i, dst = panel + p * gemmMR
                    if alpha == 1 {
                        for r in 0..<rows { dst[r] = src[r] }
                    } else {
                        for r in 0..<rows { dst[r] = alpha * src[r] }
                    }
                    for r in rows..<gemmMR { dst[r] = 0 }
                }
            } else {
                // Row by row: contiguous reads; the strided writes stay in one MR × kc panel (L1).
                for r in 0..<rows {
                    let src = a + (row + i + r) * lda + col
                    if alpha == 1 {
                        for p in 0..<kc { panel[p * gemmMR + r] = src[p] }
                    } else {
                        for p in 0..<kc { panel[p * gemmMR + r] = alpha * src[p] }
                    }
                }
                gemmZeroPanelRows(panel, rows: rows, kc: kc)
            }
            i += gemmMR
        }
        return (1, gemmMR)
    }
}

/// Zeroes rows rows..<MR of an MR-tall packed panel (the padding of a partial panel).
@inlinable
func gemmZeroPanelRows<T: CNNScalar>(_ panel: UnsafeMutablePointer<T>, rows: Int, kc: Int) {
    if rows == gemmMR { return }
    for p in 0..<kc {
        for r in rows..<gemmMR { panel[p * gemmMR + r] = 0 }
    }
}

/// The register tile: C[0..<MR, 0..<NR] = A_panel · Bp_panel + beta * C (beta 0: C not read),
/// NR = 4 vectors. A_panel[i, p] = a[i * rs + p * ks] (packed: rs 1, ks MR; in place: the matrix's
/// strides), b: kc × NR (packed), c: row stride ldc.
///
/// The 24 accumulators are separate variables (not an array) so that the compiler keeps them in
/// registers for the whole k loop.
@inlinable @inline(__always)
func gemmMicroKernel<V: SIMD>(_: V.Type, kc: Int, a: UnsafePointer<V.Scalar>, rs: Int, ks: Int,
                              b: UnsafePointer<V.Scalar>, beta: V.Scalar, c: UnsafeMutablePointer<V.Scalar>, ldc: Int)
where V.Scalar: CNNScalar {
    let w = V.scalarCount, nr = 4 * w
    #if DEBUG
    // Unoptimized builds (swift build / swift test in debug) run SIMD code lane by lane through
    // generic witnesses, ~100x slower than scalar code; the scalar twin sums in the same order, so
    // debug and release give bit-identical results. Release builds run (and test) the SIMD code.
    gemmMicroKernelScalar(kc: kc, nr: nr, a: a, rs: rs, ks: ks, b: b, beta: beta, c: c, ldc: ldc)
    return
    #else
    var c00 = V(), c01 = V(), c02 = V(), c03 = V()
    var c10 = V(), c11 = V(), c12 = V(), c13 = V()
    var c20 = V(), c21 = V(), c22 = V(), c23 = V()
    var c30 = V(), c31 = V(), c32 = V(), c33 = V()
    var c40 = V(), c41 = V(), c42 = V(), c43 = V()
    var c50 = V(), c51 = V(), c52 = V(), c53 = V()
    let vbytes = w * MemoryLayout<V.Scalar>.stride, rowBytes = nr * MemoryLayout<V.Scalar>.stride
    var ai = a
    var bi = UnsafeRawPointer(b)
    for _ in 0..<kc {
        let b0 = bi.loadUnaligned(as: V.self)
        let b1 = bi.loadUnaligned(fromByteOffset: vbytes, as: V.self)
        let b2 = bi.loadUnaligned(fromByteOffset: 2 * vbytes, as: V.self)
        let b3 = bi.loadUnaligned(fromByteOffset: 3 * vbytes, as: V.self)
        var av = V(repeating: ai[0])
        c00 = multiplyAdd(av, b0, c00); c01 = multiplyAdd(av, b1, c01)
        c02 = multiplyAdd(av, b2, c02); c03 = multiplyAdd(av, b3, c03)
        av = V(repeating: ai[rs])
        c10 = multiplyAdd(av, b0, c10); c11 = multiplyAdd(av, b1, c11)
        c12 = multiplyAdd(av, b2, c12); c13 = multiplyAdd(av, b3, c13)
        av = V(repeating: ai[2 * rs])
        c20 = multiplyAdd(av, b0, c20); c21 = multiplyAdd(av, b1, c21)
        c22 = multiplyAdd(av, b2, c22); c23 = multiplyAdd(av, b3, c23)
        av = V(repeating: ai[3 * rs])
        c30 = multiplyAdd(av, b0, c30); c31 = multiplyAdd(av, b1, c31)
        c32 = multiplyAdd(av, b2, c32); c33 = multiplyAdd(av, b3, c33)
        av = V(repeating: ai[4 * rs])
        c40 = multiplyAdd(av, b0, c40); c41 = multiplyAdd(av, b1, c41)
        c42 = multiplyAdd(av, b2, c42); c43 = multiplyAdd(av, b3, c43)
        av = V(repeating: ai[5 * rs])
        c50 = multiplyAdd(av, b0, c50); c51 = multiplyAdd(av, b1, c51)
        c52 = multiplyAdd(av, b2, c52); c53 = multiplyAdd(av, b3, c53)
        ai += ks
        bi += rowBytes
    }
    gemmStoreRow(c, w: w, beta: beta, c00, c01, c02, c03)
    gemmStoreRow(c + ldc, w: w, beta: beta, c10, c11, c12, c13)
    gemmStoreRow(c + 2 * ldc, w: w, beta: beta, c20, c21, c22, c23)
    gemmStoreRow(c + 3 * ldc, w: w, beta: beta, c30, c31, c32, c33)
    gemmStoreRow(c + 4 * ldc, w: w, beta: beta, c40, c41, c42, c43)
    gemmStoreRow(c + 5 * ldc, w: w, beta: beta, c50, c51, c52, c53)
    #endif
}

/// The micro-kernel's scalar twin (debug builds): the same sums in the same order.
@inlinable
func gemmMicroKernelScalar<T: CNNScalar>(kc: Int, nr: Int, a: UnsafePointer<T>, rs: Int, ks: Int,
                                         b: UnsafePointer<T>, beta: T, c: UnsafeMutablePointer<T>, ldc: Int) {
    for r in 0..<gemmMR {
        let cr = c + r * ldc
        for j in 0..<nr {
            var sum: T = 0
            for p in 0..<kc { sum = multiplyAdd(a[r * rs + p * ks], b[p * nr + j], sum) }
            cr[j] = beta == 0 ? sum : (beta == 1 ? cr[j] + sum : multiplyAdd(beta, cr[j], sum))
        }
    }
}

/// One vector of a tile row: c[offset] = acc + beta * c (beta 0: c not read; beta 1: no multiply).
/// Shared by the wide (`gemmStoreRow`) and narrow (`gemmStoreRowNarrow`) tiles.
@inlinable @inline(__always)
func gemmMergeVector<V: SIMD>(_ raw: UnsafeMutableRawPointer, byteOffset offset: Int, beta: V.Scalar, _ v: V)
    where V.Scalar: CNNScalar {
    var r = v
    if beta == 1 {
        r = raw.loadUnaligned(fromByteOffset: offset, as: V.self) + v
    } else if beta != 0 {
        r = multiplyAdd(V(repeating: beta), raw.loadUnaligned(fromByteOffset: offset, as: V.self), v)
    }
    raw.storeBytes(of: r, toByteOffset: offset, as: V.self)
}

/// One row of the tile: c[0..<4w] = acc + beta * c (beta 0: c not read; beta 1: no multiply).
@inlinable @inline(__always)
func gemmStoreRow<V: SIMD>(_ c: UnsafeMutablePointer<V.Scalar>, w: Int, beta: V.Scalar,
                           _ v0: V, _ v1: V, _ v2: V, _ v3: V) where V.Scalar: CNNScalar {
    let raw = UnsafeMutableRawPointer(c)
    let vbytes = w * MemoryLayout<V.Scalar>.stride
    gemmMergeVector(raw, byteOffset: 0, beta: beta, v0)
    gemmMergeVector(raw, byteOffset: vbytes, beta: beta, v1)
    gemmMergeVector(raw, byteOffset: 2 * vbytes, beta: beta, v2)
    gemmMergeVector(raw, byteOffset: 3 * vbytes, beta: beta, v3)
}

// MARK: - small problems and the oracle

/// Simple loops for small or degenerate problems (and the fallback when packing memory is not
/// available): C = beta * C, then row i of C accumulates alpha * op(A)[i, p] * op(B)[p, :] over p,
/// so the inner loop runs along contiguous rows of C and (when !transB) of B.
@inlinable
func gemmSmall<T: CNNScalar>(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: T,
                             a: UnsafePointer<T>, lda: Int, b: UnsafePointer<T>, ldb: Int,
                             beta: T, c: UnsafeMutablePointer<T>, ldc: Int) {
    gemmScaleC(m: m, n: n, beta: beta, c: c, ldc: ldc)
    if k <= 0 || alpha == 0 { return }
    for i in 0..<m {
        let ci = c + i * ldc
        if transB {
            // C[i, j] += alpha * dot(op(A)[i, :], B[j, :]): contiguous rows of B.
            for j in 0..<n {
                let bj = b + j * ldb
                var sum: T = 0
                for p in 0..<k { sum = multiplyAdd(transA ? a[p * lda + i] : a[i * lda + p], bj[p], sum) }
                ci[j] = multiplyAdd(alpha, sum, ci[j])
            }
        } else {
            for p in 0..<k {
                let aip = alpha * (transA ? a[p * lda + i] : a[i * lda + p])
                let bp = b + p * ldb
                for j in 0..<n { ci[j] = multiplyAdd(aip, bp[j], ci[j]) }
            }
        }
    }
}

/// C = beta * C, with beta == 0 writing exact zeros.
@inlinable
func gemmScaleC<T: CNNScalar>(m: Int, n: Int, beta: T, c: UnsafeMutablePointer<T>, ldc: Int) {
    if beta == 1 { return }
    for i in 0..<m {
        let ci = c + i * ldc
        if beta == 0 {
            ci.update(repeating: 0, count: n)
        } else {
            for j in 0..<n { ci[j] *= beta }
        }
    }
}

/// The textbook triple loop, the test oracle of `gemm`:
/// C[i,j] = alpha * sum_p op(A)[i,p] * op(B)[p,j] + beta * C[i,j]  (beta == 0: C is not read).
@inlinable
func gemmNaive<T: CNNScalar>(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: T,
                             a: UnsafePointer<T>, lda: Int, b: UnsafePointer<T>, ldb: Int,
                             beta: T, c: UnsafeMutablePointer<T>, ldc: Int) {
    for i in 0..<max(m, 0) {
        for j in 0..<max(n, 0) {
            var sum: T = 0
            for p in 0..<max(k, 0) {
                let aip = transA ? a[p * lda + i] : a[i * lda + p]
                let bpj = transB ? b[j * ldb + p] : b[p * ldb + j]
                sum = multiplyAdd(aip, bpj, sum)
            }
            let old = beta == 0 ? 0 : beta * c[i * ldc + j]
            c[i * ldc + j] = alpha * sum + old
        }
    }
}

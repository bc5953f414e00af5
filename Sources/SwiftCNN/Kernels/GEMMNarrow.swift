/// The GEMM micro-kernel for the narrow register file (AVX2: 16 registers of 8 floats / 4 doubles).
///
/// The wide micro-kernel (GEMM.swift) keeps a 6 × 4-vector tile of C in registers: with 64-byte
/// vectors that is 24 of AVX-512's 32 registers. Compiled for AVX2, each `SIMD16<Float>` (or
/// `SIMD8<Double>`) takes two 32-byte registers, so its 24 accumulators need 48 of the 16 registers
/// and most of them live on the stack, reloaded and stored around every multiply-add. The narrow
/// tile is 6 rows × 2 vectors of 32 bytes (6 × 16 floats or 6 × 8 doubles, the Haswell-class sgemm
/// and dgemm shape): 12 accumulators, 2 loads of B and 6 broadcasts of A per k step, 3 registers to
/// spare. 12 independent accumulators cover the 2 FMA pipes × 4-cycle latency of Zen 3 / Haswell.
///
/// Determinism and bit identity: every element of C is still one accumulator summed from zero over
/// p = 0 ..< kc in order, merged with the same beta rule, and the blocking (KC, MC, NC, the edge-tile
/// scratch) is the same; only the number of columns per tile (NR) differs. So the narrow and the wide
/// GEMM give the same bits for every element (pinned by NarrowGEMMTests).

/// SIMD vectors per row of the narrow tile.
@usableFromInline let gemmNarrowVectors = 2

/// The narrow register tile: C[0..<MR, 0..<NR] = A_panel · Bp_panel + beta * C (beta 0: C not read),
/// NR = 2 vectors (`V` is 32 bytes: `SIMD8<Float>` or `SIMD4<Double>`). Arguments as `gemmMicroKernel`:
/// A_panel[i, p] = a[i * rs + p * ks], b: kc × NR (packed), c: row stride ldc.
@inlinable @inline(__always)
func gemmMicroKernelNarrow<V: SIMD>(_: V.Type, kc: Int, a: UnsafePointer<V.Scalar>, rs: Int, ks: Int,
                                    b: UnsafePointer<V.Scalar>, beta: V.Scalar, c: UnsafeMutablePointer<V.Scalar>,
                                    ldc: Int) where V.Scalar: CNNScalar {
    let w = V.scalarCount, nr = gemmNarrowVectors * w
    #if DEBUG
    // As the wide kernel: the scalar twin in unoptimized builds (same sums, same order).
    gemmMicroKernelScalar(kc: kc, nr: nr, a: a, rs: rs, ks: ks, b: b, beta: beta, c: c, ldc: ldc)
    return
    #else
    var c00 = V(), c01 = V()
    var c10 = V(), c11 = V()
    var c20 = V(), c21 = V()
    var c30 = V(), c31 = V()
    var c40 = V(), c41 = V()
    var c50 = V(), c51 = V()
    let vbytes = w * MemoryLayout<V.Scalar>.stride, rowBytes = nr * MemoryLayout<V.Scalar>.stride
    var ai = a
    var bi = UnsafeRawPointer(b)
    for _ in 0..<kc {
        let b0 = bi.loadUnaligned(as: V.self)
        let b1 = bi.loadUnaligned(fromByteOffset: vbytes, as: V.self)
        var av = V(repeating: ai[0])
        c00 = multiplyAdd(av, b0, c00); c01 = multiplyAdd(av, b1, c01)
        av = V(repeating: ai[rs])
        c10 = multiplyAdd(av, b0, c10); c11 = multiplyAdd(av, b1, c11)
        av = V(repeating: ai[2 * rs])
        c20 = multiplyAdd(av, b0, c20); c21 = multiplyAdd(av, b1, c21)
        av = V(repeating: ai[3 * rs])
        c30 = multiplyAdd(av, b0, c30); c31 = multiplyAdd(av, b1, c31)
        av = V(repeating: ai[4 * rs])
        c40 = multiplyAdd(av, b0, c40); c41 = multiplyAdd(av, b1, c41)
        av = V(repeating: ai[5 * rs])
        c50 = multiplyAdd(av, b0, c50); c51 = multiplyAdd(av, b1, c51)
        ai += ks
        bi += rowBytes
    }
    gemmStoreRowNarrow(c, w: w, beta: beta, c00, c01)
    gemmStoreRowNarrow(c + ldc, w: w, beta: beta, c10, c11)
    gemmStoreRowNarrow(c + 2 * ldc, w: w, beta: beta, c20, c21)
    gemmStoreRowNarrow(c + 3 * ldc, w: w, beta: beta, c30, c31)
    gemmStoreRowNarrow(c + 4 * ldc, w: w, beta: beta, c40, c41)
    gemmStoreRowNarrow(c + 5 * ldc, w: w, beta: beta, c50, c51)
    #endif
}

/// One row of the narrow tile: c[0..<2w] = acc + beta * c (beta 0: c not read; beta 1: no multiply),
/// the same merge as `gemmStoreRow`.
@inlinable @inline(__always)
func gemmStoreRowNarrow<V: SIMD>(_ c: UnsafeMutablePointer<V.Scalar>, w: Int, beta: V.Scalar,
                                 _ v0: V, _ v1: V) where V.Scalar: CNNScalar {
    let raw = UnsafeMutableRawPointer(c)
    gemmMergeVector(raw, byteOffset: 0, beta: beta, v0)
    gemmMergeVector(raw, byteOffset: w * MemoryLayout<V.Scalar>.stride, beta: beta, v1)
}

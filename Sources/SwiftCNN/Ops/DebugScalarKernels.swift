/// Scalar kernels for debug builds: the convolution and the GEMM as plain loop nests, which
/// `conv2dForward`, `conv2dBackward` and `gemm` route to when the library is compiled without
/// optimization (`#if DEBUG`, which SwiftPM sets for the debug configuration, also when building
/// SwiftCNN as a dependency of another package).
///
/// Why: the fast kernels are written with SIMD vector types and generic code that the optimizer
/// turns into register-blocked vector loops. Unoptimized (-Onone), every vector operation is a call
/// into generic standard-library code and every arithmetic operation on a generic `T` is a witness
/// call: a debug LeNet training step took 10-12 s. These loops are written so that -Onone code is
/// still reasonable: the generic bodies are `@_transparent`, so each is inlined (even at -Onone)
/// into a concrete Float or Double entry point and works on concrete scalars; the innermost loops
/// are `while` loops unrolled by four with wrapping index arithmetic. Measured in a dependent
/// package's debug build, the lecture's network trains a batch of 64 in a fraction of a second
/// (README, "Swift").
///
/// Release builds never see this file's code. Set `SWIFTCNN_DEBUG_SIMD=1` in the environment to
/// keep the SIMD kernels in a debug build (to debug or test them unoptimized).
///
/// The formulas are conv2d's and gemm's (Ops/Convolution.swift, Kernels/GEMM.swift); the tests
/// compare these loops with the naive oracles (DebugScalarKernelTests, debug builds only).
#if DEBUG
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// True unless `SWIFTCNN_DEBUG_SIMD` is set: debug builds then use the scalar kernels below.
/// (A global `let`: read once, thread-safely, at first use.)
@usableFromInline let debugUsesScalarKernels: Bool = getenv("SWIFTCNN_DEBUG_SIMD") == nil

// MARK: - Convolution

/// y = conv2d(x, weight, bias), any stride, padding and dilation; the contract of `conv2dForward`
/// (without the epilogue, which the caller applies).
///
///     x (N, C, H, W), weight (K, C, kH, kW), bias (K) or nil  ->  y (N, K, Ho, Wo), overwritten
@usableFromInline
func debugConv2dForward<T: CNNScalar>(_ g: Conv2DGeometry, x: UnsafePointer<T>, weight: UnsafePointer<T>,
                                      bias: UnsafePointer<T>?, y: UnsafeMutablePointer<T>) {
    if T.self == Float.self {
        debugConv2dForwardFloat(g, x: debugCast(x), weight: debugCast(weight), bias: bias.map { debugCast($0) }, y: debugCast(y))
    } else {
        debugConv2dForwardDouble(g, x: debugCast(x), weight: debugCast(weight), bias: bias.map { debugCast($0) }, y: debugCast(y))
    }
}

/// dx, dw, db of conv2d (any may be nil); the contract of `conv2dBackward`: gradX overwritten,
/// gradWeight and gradBias overwritten or added to (`accumulate`).
///
///     gradOut (N, K, Ho, Wo), x (N, C, H, W), weight (K, C, kH, kW)
///     -> gradX (N, C, H, W), gradWeight (K, C, kH, kW), gradBias (K)
@usableFromInline
func debugConv2dBackward<T: CNNScalar>(_ g: Conv2DGeometry, gradOut: UnsafePointer<T>, x: UnsafePointer<T>,
                                       weight: UnsafePointer<T>, gradX: UnsafeMutablePointer<T>?,
                                       gradWeight: UnsafeMutablePointer<T>?, gradBias: UnsafeMutablePointer<T>?,
                                       accumulate: Bool) {
    if T.self == Float.self {
        debugConv2dBackwardFloat(g, gradOut: debugCast(gradOut), x: debugCast(x), weight: debugCast(weight),
                                 gradX: gradX.map { debugCast($0) }, gradWeight: gradWeight.map { debugCast($0) },
                                 gradBias: gradBias.map { debugCast($0) }, accumulate: accumulate)
    } else {
        debugConv2dBackwardDouble(g, gradOut: debugCast(gradOut), x: debugCast(x), weight: debugCast(weight),
                                  gradX: gradX.map { debugCast($0) }, gradWeight: gradWeight.map { debugCast($0) },
                                  gradBias: gradBias.map { debugCast($0) }, accumulate: accumulate)
    }
}

func debugConv2dForwardFloat(_ g: Conv2DGeometry, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                             bias: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>) {
    scalarConv2dForward(g, x: x, weight: weight, bias: bias, y: y)
}

func debugConv2dForwardDouble(_ g: Conv2DGeometry, x: UnsafePointer<Double>, weight: UnsafePointer<Double>,
                              bias: UnsafePointer<Double>?, y: UnsafeMutablePointer<Double>) {
    scalarConv2dForward(g, x: x, weight: weight, bias: bias, y: y)
}

func debugConv2dBackwardFloat(_ g: Conv2DGeometry, gradOut: UnsafePointer<Float>, x: UnsafePointer<Float>,
                              weight: UnsafePointer<Float>, gradX: UnsafeMutablePointer<Float>?,
                              gradWeight: UnsafeMutablePointer<Float>?, gradBias: UnsafeMutablePointer<Float>?,
                              accumulate: Bool) {
    scalarConv2dBackward(g, gradOut: gradOut, x: x, weight: weight, gradX: gradX, gradWeight: gradWeight,
                         gradBias: gradBias, accumulate: accumulate)
}

func debugConv2dBackwardDouble(_ g: Conv2DGeometry, gradOut: UnsafePointer<Double>, x: UnsafePointer<Double>,
                               weight: UnsafePointer<Double>, gradX: UnsafeMutablePointer<Double>?,
                               gradWeight: UnsafeMutablePointer<Double>?, gradBias: UnsafeMutablePointer<Double>?,
                               accumulate: Bool) {
    scalarConv2dBackward(g, gradOut: gradOut, x: x, weight: weight, gradX: gradX, gradWeight: gradWeight,
                         gradBias: gradBias, accumulate: accumulate)
}

/// The indices i in 0..<count with 0 <= i*stride + offset < size, as a half-open range (lo, hi):
/// the output rows (columns) whose tap at `offset` falls inside the input rather than the padding.
@_transparent
func scalarValidRange(offset: Int, stride: Int, size: Int, count: Int) -> (Int, Int) {
    let lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride
    let last = size - 1 - offset
    let hi = last < 0 ? 0 : min(count, last / stride + 1)
    return (lo, max(lo, hi))
}

/// y[n,k,i,j] = b[k] + sum_{c,r,s} x[n, c, i*sh - ph + r*dh, j*sw - pw + s*dw] * w[k,c,r,s]:
/// per (n, k), y's plane starts at the bias, then each tap (c, r, s) adds w[k,c,r,s] times the
/// input rows it sees (an axpy along j, clipped to the input: the padding contributes nothing).
@_transparent
func scalarConv2dForward<T: CNNScalar>(_ g: Conv2DGeometry, x: UnsafePointer<T>, weight: UnsafePointer<T>,
                                       bias: UnsafePointer<T>?, y: UnsafeMutablePointer<T>) {
    let (C, H, W, K, Ho, Wo) = (g.inChannels, g.height, g.width, g.outChannels, g.outH, g.outW)
    let (kH, kW, sh, sw) = (g.kernelH, g.kernelW, g.strideH, g.strideW)
    var n = 0
    while n < g.batch {
        var k = 0
        while k < K {
            let yk = y + (n * K + k) * Ho * Wo
            let b: T = bias.map { $0[k] } ?? 0
            var q = 0
            while q < Ho * Wo { yk[q] = b; q &+= 1 }
            var c = 0
            while c < C {
                let xc = x + (n * C + c) * H * W, wc = weight + (k * C + c) * kH * kW
                var r = 0
                while r < kH {
                    let rowOffset = r * g.dilationH - g.padH
                    let (i0, i1) = scalarValidRange(offset: rowOffset, stride: sh, size: H, count: Ho)
                    var s = 0
                    while s < kW {
                        let wv = wc[r * kW + s], colOffset = s * g.dilationW - g.padW
                        let (j0, j1) = scalarValidRange(offset: colOffset, stride: sw, size: W, count: Wo)
                        var i = i0
                        while i < i1 {
                            // y row i, columns j0..<j1  +=  wv * x row (i*sh + rowOffset), columns j*sw + colOffset
                            let xr = xc + (i * sh + rowOffset) * W + colOffset, yr = yk + i * Wo
                            var j = j0
                            while j &+ 4 <= j1 {
                                yr[j] += wv * xr[j &* sw]
                                yr[j &+ 1] += wv * xr[(j &+ 1) &* sw]
                                yr[j &+ 2] += wv * xr[(j &+ 2) &* sw]
                                yr[j &+ 3] += wv * xr[(j &+ 3) &* sw]
                                j &+= 4
                            }
                            while j < j1 { yr[j] += wv * xr[j &* sw]; j &+= 1 }
                            i &+= 1
                        }
                        s &+= 1
                    }
                    r &+= 1
                }
                c &+= 1
            }
            k &+= 1
        }
        n &+= 1
    }
}

/// The three gradients of conv2d by their definitions (Ops/Convolution.swift):
///
///     dL/db[k]       = sum_{n,i,j} g[n,k,i,j]
///     dL/dw[k,c,r,s] = sum_{n,i,j} g[n,k,i,j] * x[n, c, i*sh - ph + r*dh, j*sw - pw + s*dw]
///     dL/dx[n,c,h,w] = sum of g[n,k,i,j] * w[k,c,r,s] over the (k,i,j,r,s) whose tap reads x[n,c,h,w]
///
/// dw as dot products along j (four partial sums, added in a fixed order), dx as axpys along j
/// (each tap's weight times a g row, added into the x row it read). Single-threaded, fixed order:
/// deterministic.
@_transparent
func scalarConv2dBackward<T: CNNScalar>(_ g: Conv2DGeometry, gradOut: UnsafePointer<T>, x: UnsafePointer<T>,
                                        weight: UnsafePointer<T>, gradX: UnsafeMutablePointer<T>?,
                                        gradWeight: UnsafeMutablePointer<T>?, gradBias: UnsafeMutablePointer<T>?,
                                        accumulate: Bool) {
    let (N, C, H, W, K, Ho, Wo) = (g.batch, g.inChannels, g.height, g.width, g.outChannels, g.outH, g.outW)
    let (kH, kW, sh, sw) = (g.kernelH, g.kernelW, g.strideH, g.strideW)
    if let gradBias {
        var k = 0
        while k < K {
            var sum: T = accumulate ? gradBias[k] : 0
            var n = 0
            while n < N {
                let gk = gradOut + (n * K + k) * Ho * Wo
                var q = 0
                while q < Ho * Wo { sum += gk[q]; q &+= 1 }
                n &+= 1
            }
            gradBias[k] = sum
            k &+= 1
        }
    }
    if let gradX {
        var q = 0
        while q < N * C * H * W { gradX[q] = 0; q &+= 1 }
    }
    if gradX == nil && gradWeight == nil { return }
    var k = 0
    while k < K {
        var c = 0
        while c < C {
            var r = 0
            while r < kH {
                let rowOffset = r * g.dilationH - g.padH
                let (i0, i1) = scalarValidRange(offset: rowOffset, stride: sh, size: H, count: Ho)
                var s = 0
                while s < kW {
                    let colOffset = s * g.dilationW - g.padW
                    let (j0, j1) = scalarValidRange(offset: colOffset, stride: sw, size: W, count: Wo)
                    let widx = ((k * C + c) * kH + r) * kW + s
                    let wv = weight[widx]
                    var s0: T = 0, s1: T = 0, s2: T = 0, s3: T = 0
                    var n = 0
                    while n < N {
                        let gk = gradOut + (n * K + k) * Ho * Wo
                        let xc = x + (n * C + c) * H * W
                        var i = i0
                        while i < i1 {
                            let gr = gk + i * Wo, xoff = (i * sh + rowOffset) * W + colOffset
                            let xr = xc + xoff
                            if gradWeight != nil {
                                var j = j0
                                while j &+ 4 <= j1 {
                                    s0 += gr[j] * xr[j &* sw]
                                    s1 += gr[j &+ 1] * xr[(j &+ 1) &* sw]
                                    s2 += gr[j &+ 2] * xr[(j &+ 2) &* sw]
                                    s3 += gr[j &+ 3] * xr[(j &+ 3) &* sw]
                                    j &+= 4
                                }
                                while j < j1 { s0 += gr[j] * xr[j &* sw]; j &+= 1 }
                            }
                            if let gradX {
                                let dxr = gradX + (n * C + c) * H * W + xoff
                                var j = j0
                                while j &+ 4 <= j1 {
                                    dxr[j &* sw] += wv * gr[j]
                                    dxr[(j &+ 1) &* sw] += wv * gr[j &+ 1]
                                    dxr[(j &+ 2) &* sw] += wv * gr[j &+ 2]
                                    dxr[(j &+ 3) &* sw] += wv * gr[j &+ 3]
                                    j &+= 4
                                }
                                while j < j1 { dxr[j &* sw] += wv * gr[j]; j &+= 1 }
                            }
                            i &+= 1
                        }
                        n &+= 1
                    }
                    if let gradWeight {
                        let sum = (s0 + s1) + (s2 + s3)
                        gradWeight[widx] = accumulate ? gradWeight[widx] + sum : sum
                    }
                    s &+= 1
                }
                r &+= 1
            }
            c &+= 1
        }
        k &+= 1
    }
}

// MARK: - GEMM

/// C = alpha * op(A) * op(B) + beta * C, the contract of `gemm` (beta = 0 overwrites C, NaNs in it
/// included, as BLAS does).
///
///     op(A): (m, k)   op(B): (k, n)   C: (m, n), leading dimensions lda, ldb, ldc (in elements)
@usableFromInline
func debugGEMM<T: CNNScalar>(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: T,
                             a: UnsafePointer<T>, lda: Int, b: UnsafePointer<T>, ldb: Int,
                             beta: T, c: UnsafeMutablePointer<T>, ldc: Int) {
    if T.self == Float.self {
        debugGEMMFloat(transA: transA, transB: transB, m: m, n: n, k: k, alpha: unsafeBitCast(alpha, to: Float.self), a: debugCast(a), lda: lda,
                       b: debugCast(b), ldb: ldb, beta: unsafeBitCast(beta, to: Float.self), c: debugCast(c), ldc: ldc)
    } else {
        debugGEMMDouble(transA: transA, transB: transB, m: m, n: n, k: k, alpha: unsafeBitCast(alpha, to: Double.self), a: debugCast(a), lda: lda,
                        b: debugCast(b), ldb: ldb, beta: unsafeBitCast(beta, to: Double.self), c: debugCast(c), ldc: ldc)
    }
}

func debugGEMMFloat(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                    beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
    scalarGEMM(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
               beta: beta, c: c, ldc: ldc)
}

func debugGEMMDouble(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Double,
                     a: UnsafePointer<Double>, lda: Int, b: UnsafePointer<Double>, ldb: Int,
                     beta: Double, c: UnsafeMutablePointer<Double>, ldc: Int) {
    scalarGEMM(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
               beta: beta, c: c, ldc: ldc)
}

/// C[i,j] = beta * C[i,j] + alpha * sum_p op(A)[i,p] * op(B)[p,j]. C is first scaled by beta (set
/// to zero when beta = 0); then, when op(B) rows are contiguous (B not transposed), each A entry
/// adds alpha * A[i,p] times row p of B into row i of C (an axpy along j); when B is transposed,
/// each C entry adds alpha times the dot product of A's row (or column) i with B's row j.
@_transparent
func scalarGEMM<T: CNNScalar>(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: T,
                              a: UnsafePointer<T>, lda: Int, b: UnsafePointer<T>, ldb: Int,
                              beta: T, c: UnsafeMutablePointer<T>, ldc: Int) {
    if m <= 0 || n <= 0 { return }
    var i = 0
    while i < m {
        let ci = c + i * ldc
        var j = 0
        while j < n { ci[j] = beta == 0 ? 0 : beta * ci[j]; j &+= 1 }
        i &+= 1
    }
    if k <= 0 || alpha == 0 { return }
    // A[i,p] of op(A): a[i*lda + p], or a[p*lda + i] when transposed.
    let aRow = transA ? 1 : lda, aCol = transA ? lda : 1
    i = 0
    while i < m {
        let ci = c + i * ldc
        if !transB {
            var p = 0
            while p < k {
                let av = alpha * a[i * aRow + p * aCol], bp = b + p * ldb
                var j = 0
                while j &+ 4 <= n {
                    ci[j] += av * bp[j]
                    ci[j &+ 1] += av * bp[j &+ 1]
                    ci[j &+ 2] += av * bp[j &+ 2]
                    ci[j &+ 3] += av * bp[j &+ 3]
                    j &+= 4
                }
                while j < n { ci[j] += av * bp[j]; j &+= 1 }
                p &+= 1
            }
        } else {
            // op(B)[p,j] = b[j*ldb + p]: row j of B, contiguous in p.
            var j = 0
            while j < n {
                let bj = b + j * ldb, ai = a + i * aRow
                var s0: T = 0, s1: T = 0, s2: T = 0, s3: T = 0
                var p = 0
                while p &+ 4 <= k {
                    s0 += ai[p &* aCol] * bj[p]
                    s1 += ai[(p &+ 1) &* aCol] * bj[p &+ 1]
                    s2 += ai[(p &+ 2) &* aCol] * bj[p &+ 2]
                    s3 += ai[(p &+ 3) &* aCol] * bj[p &+ 3]
                    p &+= 4
                }
                while p < k { s0 += ai[p &* aCol] * bj[p]; p &+= 1 }
                ci[j] += alpha * ((s0 + s1) + (s2 + s3))
                j &+= 1
            }
        }
        i &+= 1
    }
}

/// The same memory as another element type (callers have checked that T is that type).
@_transparent
func debugCast<T, U>(_ p: UnsafePointer<T>) -> UnsafePointer<U> {
    UnsafeRawPointer(p).assumingMemoryBound(to: U.self)
}

@_transparent
func debugCast<T, U>(_ p: UnsafeMutablePointer<T>) -> UnsafeMutablePointer<U> {
    UnsafeMutableRawPointer(p).assumingMemoryBound(to: U.self)
}
#endif

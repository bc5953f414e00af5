import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport

/// The debug builds' scalar kernels (Ops/DebugScalarKernels.swift) against the naive oracles. They
/// exist only in debug builds, as does this test; in debug builds the Conv2D and GEMM tests also
/// run through them (via conv2dForward / conv2dBackward / gemm), and release test runs cover the
/// SIMD kernels they stand in for.
#if DEBUG
final class DebugScalarKernelTests: XCTestCase {
    /// (x shape, weight shape, stride, padding, dilation): LeNet's two layers, strides, padding
    /// wider than the kernel's reach on one side, dilation, 1x1, a single output column.
    let geometries: [([Int], [Int], (Int, Int), (Int, Int), (Int, Int))] = [
        ([3, 1, 28, 28], [6, 1, 5, 5], (1, 1), (2, 2), (1, 1)),
        ([2, 6, 14, 14], [16, 6, 5, 5], (1, 1), (0, 0), (1, 1)),
        ([2, 3, 9, 11], [4, 3, 3, 2], (2, 3), (1, 2), (1, 1)),
        ([1, 2, 10, 9], [3, 2, 3, 3], (1, 2), (3, 1), (2, 3)),
        ([2, 5, 6, 7], [3, 5, 1, 1], (1, 1), (0, 0), (1, 1)),
        ([1, 1, 4, 5], [2, 1, 4, 5], (1, 1), (0, 0), (1, 1)),
    ]

    private func checkConvolution<T: CNNScalar>(_: T.Type, tolerance: Double) throws {
        for (index, (xs, ws, stride, padding, dilation)) in geometries.enumerated() {
            let seed = UInt64(10 * index)
            let g = try Conv2DGeometry(op: "test", xShape: xs, weightShape: ws, biasShape: [ws[0]],
                                       stride: stride, padding: padding, dilation: dilation)
            let x: Tensor<T> = randomTensor(xs, seed: seed), w: Tensor<T> = randomTensor(ws, seed: seed + 1)
            let b: Tensor<T> = randomTensor([ws[0]], seed: seed + 2)
            let y = try Tensor<T>(zeros: g.outputShape), yRef = try Tensor<T>(zeros: g.outputShape)
            debugConv2dForward(g, x: x.pointer, weight: w.pointer, bias: b.pointer, y: y.pointer)
            conv2dForwardNaive(g, x: x.pointer, weight: w.pointer, bias: b.pointer, y: yRef.pointer)
            assertRelativeError(y.scalars, yRef.scalars, tolerance, "forward \(index)")

            let gy: Tensor<T> = randomTensor(g.outputShape, seed: seed + 3)
            for accumulate in [false, true] {
                // Start the parameter gradients from values (kept when accumulating, else overwritten)
                // and dx from garbage (always overwritten).
                let dx: Tensor<T> = randomTensor(xs, seed: seed + 4), dxRef: Tensor<T> = randomTensor(xs, seed: seed + 5)
                let dw: Tensor<T> = randomTensor(ws, seed: seed + 6), dwRef = try dw.copy()
                let db: Tensor<T> = randomTensor([ws[0]], seed: seed + 7), dbRef = try db.copy()
                debugConv2dBackward(g, gradOut: gy.pointer, x: x.pointer, weight: w.pointer, gradX: dx.pointer,
                                    gradWeight: dw.pointer, gradBias: db.pointer, accumulate: accumulate)
                conv2dBackwardNaive(g, gradOut: gy.pointer, x: x.pointer, weight: w.pointer, gradX: dxRef.pointer,
                                    gradWeight: dwRef.pointer, gradBias: dbRef.pointer, accumulate: accumulate)
                assertRelativeError(dx.scalars, dxRef.scalars, tolerance, "dx \(index) accumulate \(accumulate)")
                assertRelativeError(dw.scalars, dwRef.scalars, tolerance, "dw \(index) accumulate \(accumulate)")
                assertRelativeError(db.scalars, dbRef.scalars, tolerance, "db \(index) accumulate \(accumulate)")
            }
            // Each gradient alone (the others nil) gives the same values.
            let dwOnly = try Tensor<T>(zeros: ws)
            debugConv2dBackward(g, gradOut: gy.pointer, x: x.pointer, weight: w.pointer, gradX: nil,
                                gradWeight: dwOnly.pointer, gradBias: nil, accumulate: false)
            let dwRef = try Tensor<T>(zeros: ws)
            conv2dBackwardNaive(g, gradOut: gy.pointer, x: x.pointer, weight: w.pointer, gradX: nil,
                                gradWeight: dwRef.pointer, gradBias: nil, accumulate: false)
            assertRelativeError(dwOnly.scalars, dwRef.scalars, tolerance, "dw alone \(index)")
        }
    }

    func testConvolutionMatchesNaiveDouble() throws { try checkConvolution(Double.self, tolerance: 1e-13) }
    func testConvolutionMatchesNaiveFloat() throws { try checkConvolution(Float.self, tolerance: 1e-5) }

    private func checkGEMM<T: CNNScalar>(_: T.Type, tolerance: Double) {
        var seed: UInt64 = 100
        for transA in [false, true] {
            for transB in [false, true] {
                for (m, n, k, alpha, beta) in [(7, 9, 5, 1.0, 0.0), (3, 13, 17, 0.5, 1.0), (1, 4, 3, -2.0, 0.25),
                                               (5, 6, 0, 1.0, 0.5)] as [(Int, Int, Int, Double, Double)] {
                    seed += 3
                    let pad = 2
                    let (aRows, aCols) = transA ? (k, m) : (m, k)
                    let (bRows, bCols) = transB ? (n, k) : (k, n)
                    let (lda, ldb, ldc) = (aCols + pad, bCols + pad, n + pad)
                    let a: Tensor<T> = randomTensor([max(aRows * lda, 1)], seed: seed)
                    let b: Tensor<T> = randomTensor([max(bRows * ldb, 1)], seed: seed + 1)
                    let c: Tensor<T> = randomTensor([m * ldc], seed: seed + 2)
                    if beta == 0 { for i in stride(from: 0, to: c.count, by: 3) { c[flat: i] = .nan } }  // not read
                    let cRef = try! c.copy()
                    debugGEMM(transA: transA, transB: transB, m: m, n: n, k: k, alpha: T(alpha), a: a.pointer, lda: lda,
                              b: b.pointer, ldb: ldb, beta: T(beta), c: c.pointer, ldc: ldc)
                    gemmNaive(transA: transA, transB: transB, m: m, n: n, k: k, alpha: T(alpha), a: a.pointer, lda: lda,
                              b: b.pointer, ldb: ldb, beta: T(beta), c: cRef.pointer, ldc: ldc)
                    var inner: [T] = [], innerRef: [T] = []
                    for i in 0..<m {
                        for j in 0..<ldc {
                            let v = c[flat: i * ldc + j], ref = cRef[flat: i * ldc + j]
                            if j < n { inner.append(v); innerRef.append(ref) }
                            else { XCTAssertTrue(v == ref || (v.isNaN && ref.isNaN), "padding of C changed") }
                        }
                    }
                    XCTAssertFalse(inner.contains { $0.isNaN }, "transA \(transA) transB \(transB) m \(m) n \(n) k \(k)")
                    assertRelativeError(inner, innerRef, tolerance, "transA \(transA) transB \(transB) m \(m) n \(n) k \(k)")
                }
            }
        }
    }

    func testGEMMMatchesNaiveDouble() { checkGEMM(Double.self, tolerance: 1e-13) }
    func testGEMMMatchesNaiveFloat() { checkGEMM(Float.self, tolerance: 1e-5) }
}
#endif

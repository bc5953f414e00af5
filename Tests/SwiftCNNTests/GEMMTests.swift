import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport

final class GEMMTests: XCTestCase {
    /// gemm vs gemmNaive for one problem; lda/ldb/ldc get `pad` extra columns to test strides.
    private func check<T: CNNScalar>(_: T.Type, transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                                     alpha: T, beta: T, pad: Int, seed: UInt64, tolerance: Double,
                                     file: StaticString = #filePath, line: UInt = #line) {
        let (aRows, aCols) = transA ? (k, m) : (m, k)
        let (bRows, bCols) = transB ? (n, k) : (k, n)
        let (lda, ldb, ldc) = (aCols + pad, bCols + pad, n + pad)
        let a: [T] = randomArray(aRows * lda, seed: seed)
        let b: [T] = randomArray(bRows * ldb, seed: seed + 1)
        var c: [T] = randomArray(m * ldc, seed: seed + 2)
        if beta == 0 { for i in stride(from: 0, to: c.count, by: 3) { c[i] = .nan } }  // beta 0 must not read C
        var cRef = c
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                c.withUnsafeMutableBufferPointer { c in
                    gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a.baseAddress!, lda: lda,
                         b: b.baseAddress!, ldb: ldb, beta: beta, c: c.baseAddress!, ldc: ldc)
                }
                cRef.withUnsafeMutableBufferPointer { c in
                    gemmNaive(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a.baseAddress!, lda: lda,
                              b: b.baseAddress!, ldb: ldb, beta: beta, c: c.baseAddress!, ldc: ldc)
                }
            }
        }
        // Only the m×n block may change; the padding columns of C must be untouched.
        var inner: [T] = [], innerRef: [T] = []
        for i in 0..<m {
            for j in 0..<ldc {
                if j < n { inner.append(c[i * ldc + j]); innerRef.append(cRef[i * ldc + j]) }
                else { XCTAssertTrue(c[i * ldc + j] == cRef[i * ldc + j] || (c[i * ldc + j].isNaN && cRef[i * ldc + j].isNaN),
                                     "padding of C changed", file: file, line: line) }
            }
        }
        let e = relativeError(inner, innerRef)
        XCTAssertLessThanOrEqual(e, tolerance,
                                 "\(T.self) transA \(transA) transB \(transB) m \(m) n \(n) k \(k) alpha \(alpha) beta \(beta)",
                                 file: file, line: line)
    }

    private func checkAll<T: CNNScalar>(_: T.Type, tolerance: Double) {
        var seed: UInt64 = 1
        // Odd sizes around the micro-kernel tile edges, degenerate dimensions, and sizes over the
        // cache blocks and the threading threshold.
        let sizes: [(Int, Int, Int)] = [
            (1, 1, 1), (1, 7, 3), (5, 1, 9), (3, 5, 1), (7, 13, 11), (6, 64, 8), (13, 65, 17), (12, 33, 129),
            (31, 129, 70), (65, 47, 300), (97, 200, 259), (130, 70, 5), (4, 1000, 3), (200, 3, 600),
        ]
        let scalings: [(T, T)] = [(1, 0), (1, 1), (-0.5, 2.5), (0, 0.5), (2, 0)]
        var index = 0
        for (m, n, k) in sizes {
            for transA in [false, true] {
                for transB in [false, true] {
                    // Cycle through the (alpha, beta) cases rather than trying every one per shape.
                    let (alpha, beta) = scalings[index % scalings.count]
                    check(T.self, transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, beta: beta,
                          pad: Int(seed % 3), seed: seed, tolerance: tolerance)
                    seed += 3
                    index += 1
                }
            }
            index += 1
        }
    }

    func testGemmMatchesNaiveDouble() { checkAll(Double.self, tolerance: 1e-13) }
    func testGemmMatchesNaiveFloat() { checkAll(Float.self, tolerance: 2e-5) }

    /// Sizes over every cache block (k > KC, m > MC, n > NC) so that C is revisited per k block
    /// (beta applied once) and the jc / ic loops wrap.
    func testGemmMultipleBlocks() {
        for (transA, transB) in [(false, false), (true, true)] {
            check(Float.self, transA: transA, transB: transB, m: 151, n: 1037, k: 133, alpha: 1.5, beta: -1,
                  pad: 1, seed: 77, tolerance: 2e-5)
        }
        check(Double.self, transA: false, transB: true, m: 145, n: 1030, k: 131, alpha: 1, beta: 0.5,
              pad: 0, seed: 78, tolerance: 1e-13)
    }

    func testDegenerateSizes() {
        // k = 0: C = beta * C; m or n = 0: nothing happens.
        var c: [Double] = [1, 2, 3, 4]
        let a: [Double] = [0], b: [Double] = [0]
        gemm(transA: false, transB: false, m: 2, n: 2, k: 0, alpha: 1, a: a, lda: 1, b: b, ldb: 2, beta: 2, c: &c, ldc: 2)
        XCTAssertEqual(c, [2, 4, 6, 8])
        gemm(transA: false, transB: false, m: 0, n: 2, k: 3, alpha: 1, a: a, lda: 3, b: b, ldb: 2, beta: 0, c: &c, ldc: 2)
        XCTAssertEqual(c, [2, 4, 6, 8])
    }

    /// Fixed thread count: bit-identical; the k order never depends on the partition, so 1 and 2
    /// threads agree too.
    func testDeterministicAcrossThreadCounts() {
        let saved = Threading.numThreads
        defer { Threading.numThreads = saved }
        let (m, n, k) = (150, 260, 333)
        let a: [Float] = randomArray(m * k, seed: 11), b: [Float] = randomArray(k * n, seed: 12)
        func run() -> [Float] {
            var c = [Float](repeating: 0, count: m * n)
            gemm(transA: false, transB: false, m: m, n: n, k: k, alpha: 1, a: a, lda: k, b: b, ldb: n, beta: 0, c: &c, ldc: n)
            return c
        }
        Threading.numThreads = 2
        let r1 = run(), r2 = run()
        Threading.numThreads = 1
        let r3 = run()
        XCTAssertEqual(r1, r2)
        XCTAssertEqual(r1, r3)
    }
}

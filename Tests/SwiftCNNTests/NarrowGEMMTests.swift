import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport

/// The narrow GEMM micro-kernel (Kernels/GEMMNarrow.swift, 6 × 2 vectors of 32 bytes) against the
/// wide one (GEMM.swift, 6 × 4 vectors of 64 bytes) and the naive oracle, Float and Double.
///
/// Debug builds run both kernels' scalar twins; to test the SIMD code itself run
/// `swift test -c release -Xswiftc -enable-testing -Xswiftc -target-cpu -Xswiftc native -Xswiftc -DSWIFTCNN_FMA --filter NarrowGEMMTests`.
final class NarrowGEMMTests: XCTestCase {
    /// C from `gemmRun` with the given register file and thread count (`trans`, alpha, beta as BLAS).
    private func run<T: CNNScalar>(_ file: RegisterFile, threads: Int, transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                                   alpha: T, beta: T, a: [T], lda: Int, b: [T], ldb: Int, c: [T], ldc: Int) -> [T] {
        var c = c
        let plan = GEMMPlan(T.self, m: m, n: n, k: k, threads: threads, registerFile: file)
        let buffer = UnsafeMutablePointer<T>.allocate(capacity: plan.bufferCount * plan.chunks)
        defer { buffer.deallocate() }
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                c.withUnsafeMutableBufferPointer { c in
                    gemmRun(plan, m: m, n: n, k: k, alpha: alpha, a: GEMMDenseA(a: a.baseAddress!, lda: lda, trans: transA),
                            b: GEMMDenseB(b: b.baseAddress!, ldb: ldb, trans: transB), beta: beta,
                            c: c.baseAddress!, ldc: ldc, buffer: { buffer + $0 * plan.bufferCount })
                }
            }
        }
        return c
    }

    /// Narrow == wide bit for bit (1 and 2 threads), and both within `tolerance` of gemmNaive.
    private func check<T: CNNScalar>(_: T.Type, transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: T, beta: T,
                                     seed: UInt64, tolerance: Double, line: UInt = #line) {
        let (aRows, aCols) = transA ? (k, m) : (m, k)
        let (bRows, bCols) = transB ? (n, k) : (k, n)
        let (lda, ldb, ldc) = (aCols + 3, bCols + 1, n + 2)
        let a: [T] = randomArray(aRows * lda, seed: seed)
        let b: [T] = randomArray(bRows * ldb, seed: seed + 1)
        var c: [T] = randomArray(m * ldc, seed: seed + 2)
        if beta == 0 { for i in stride(from: 0, to: c.count, by: 3) { c[i] = .nan } }  // beta 0 must not read C
        let what = "\(T.self) transA \(transA) transB \(transB) m \(m) n \(n) k \(k) alpha \(alpha) beta \(beta)"
        let wide = run(.wide, threads: 1, transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, beta: beta,
                       a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: ldc)
        for threads in [1, 2] {
            let narrow = run(.narrow, threads: threads, transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
                             beta: beta, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: ldc)
            var mismatches = 0
            for i in 0..<c.count where !(narrow[i] == wide[i] || (narrow[i].isNaN && wide[i].isNaN)) { mismatches += 1 }
            XCTAssertEqual(mismatches, 0, "narrow vs wide, \(threads) threads: " + what, line: line)
        }
        var ref = c
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                ref.withUnsafeMutableBufferPointer { r in
                    gemmNaive(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a.baseAddress!, lda: lda,
                              b: b.baseAddress!, ldb: ldb, beta: beta, c: r.baseAddress!, ldc: ldc)
                }
            }
        }
        var inner: [T] = [], innerRef: [T] = []
        for i in 0..<m {
            for j in 0..<ldc {
                if j < n {
                    inner.append(wide[i * ldc + j]); innerRef.append(ref[i * ldc + j])
                } else {   // the padding columns of C are untouched
                    XCTAssertTrue(wide[i * ldc + j] == c[i * ldc + j] || c[i * ldc + j].isNaN, what, line: line)
                }
            }
        }
        XCTAssertLessThanOrEqual(relativeError(inner, innerRef), tolerance, what, line: line)
    }

    private func checkAll<T: CNNScalar>(_: T.Type, tolerance: Double) {
        // Edges of both tiles (NR 16/64 floats, 8/32 doubles; MR 6), k over the KC block (128),
        // n over NC (1024), LeNet's Linear shapes, and rows-split / columns-split plans.
        let sizes: [(Int, Int, Int)] = [
            (6, 16, 8), (7, 17, 5), (13, 9, 130), (64, 120, 400), (64, 84, 120), (64, 10, 84), (25, 33, 257),
            (12, 1030, 3), (300, 40, 20), (5, 70, 129),
        ]
        let scalings: [(T, T)] = [(1, 0), (1, 1), (-0.5, 2.5), (2, 0)]
        var index = 0, seed: UInt64 = 11
        for (m, n, k) in sizes {
            for transA in [false, true] {
                for transB in [false, true] {
                    let (alpha, beta) = scalings[index % scalings.count]
                    check(T.self, transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, beta: beta,
                          seed: seed, tolerance: tolerance)
                    index += 1
                    seed += 3
                }
            }
        }
    }

    func testNarrowMatchesWideFloat() { checkAll(Float.self, tolerance: 1e-5) }
    func testNarrowMatchesWideDouble() { checkAll(Double.self, tolerance: 1e-13) }

    /// The plan takes the process's register file: 6 × 16 floats / 6 × 8 doubles when narrow,
    /// 6 × 64 / 6 × 32 when wide; and `gemm` itself (which builds its own plan) agrees with the oracle.
    func testPlanFollowsRegisterFile() {
        let f = GEMMPlan(Float.self, m: 64, n: 120, k: 400, threads: 1)
        let d = GEMMPlan(Double.self, m: 64, n: 120, k: 400, threads: 1)
        XCTAssertEqual(f.registerFile, directConvRegisterFile)
        XCTAssertEqual(d.registerFile, directConvRegisterFile)
        XCTAssertEqual(f.nr, directConvRegisterFile == .wide ? 64 : 16)
        XCTAssertEqual(d.nr, directConvRegisterFile == .wide ? 32 : 8)
        XCTAssertEqual(GEMMPlan(Float.self, m: 6, n: 6, k: 6, threads: 1, registerFile: .narrow).nr, 16)
        XCTAssertEqual(GEMMPlan(Double.self, m: 6, n: 6, k: 6, threads: 1, registerFile: .wide).nr, 32)
        // Columns-split plans cut C in whole NR panels: 120 columns are 8 narrow panels, 2 wide ones.
        let split = GEMMPlan(Float.self, m: 64, n: 120, k: 4000, threads: 2, registerFile: .narrow)
        XCTAssertEqual(split.chunks, 2)
        XCTAssertTrue(split.splitColumns)
    }
}

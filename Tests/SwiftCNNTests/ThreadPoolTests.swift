import XCTest
import Synchronization
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The persistent worker pool behind `parallelFor` (Kernels/Threading.swift): every chunk runs
/// exactly once, on a worker slot no other chunk uses at the same time; nested calls, calls from
/// several threads at once, thread-count changes and fork() neither deadlock nor lose chunks; and
/// the kernels that moved to finer, dynamically claimed chunks give bit-identical results.
final class ThreadPoolTests: XCTestCase {
    private var saved = 0
    override func setUp() { saved = Threading.numThreads }
    override func tearDown() { Threading.numThreads = saved }

    /// Runs `parallelForWorkers(count, workers: parallelWorkers(count))` and checks: each index ran
    /// once; `worker` stayed below the slot count; no two chunks held the same slot at once.
    private func checkOnce(count: Int, spin: Int = 0, file: StaticString = #filePath, line: UInt = #line) {
        let runs = UnsafeMutablePointer<Int>.allocate(capacity: max(count, 1))
        runs.initialize(repeating: 0, count: max(count, 1))
        let slots = parallelWorkers(count)
        let busy = UnsafeMutablePointer<Int>.allocate(capacity: slots)
        busy.initialize(repeating: 0, count: slots)
        let badWorker = Atomic<Int>(0), overlap = Atomic<Int>(0)
        defer { runs.deallocate(); busy.deallocate() }
        parallelForWorkers(count, workers: slots) { chunk, worker in
            guard worker >= 0 && worker < slots else { badWorker.add(1, ordering: .relaxed); return }
            // Only the thread holding slot `worker` writes busy[worker]: a second chunk on the same
            // slot at the same time would find it set.
            if busy[worker] != 0 { overlap.add(1, ordering: .relaxed) }
            busy[worker] = 1
            var x = UInt64(chunk)
            for _ in 0..<spin { x = x &* 6364136223846793005 &+ 1442695040888963407 }
            runs[chunk] += 1 + Int(x & 0)
            busy[worker] = 0
        }
        XCTAssertEqual(badWorker.load(ordering: .relaxed), 0, "worker index out of range", file: file, line: line)
        XCTAssertEqual(overlap.load(ordering: .relaxed), 0, "two chunks on one worker slot at once", file: file, line: line)
        for i in 0..<count where runs[i] != 1 {
            XCTFail("count \(count), threads \(Threading.numThreads): index \(i) ran \(runs[i]) times", file: file, line: line)
            return
        }
    }

    func testEveryIndexRunsExactlyOnce() {
        for threads in [1, 2, 3, 8] {
            Threading.numThreads = threads
            for count in [0, 1, 2, 3, 5, 8, 17, 64, 1000] {
                checkOnce(count: count)
                checkOnce(count: count, spin: 2000)
            }
        }
    }

    /// Many short jobs back to back (the pattern of a training step), with the thread count
    /// changing between calls: a worker that wakes late must not run a chunk of the wrong job.
    func testManyJobsAndThreadCountChanges() {
        for i in 0..<3000 {
            Threading.numThreads = [2, 3, 1, 8, 2][i % 5]
            checkOnce(count: 1 + i % 13, spin: i % 3 == 0 ? 500 : 0)
        }
    }

    /// The worker index stays below the caller's slot count even when the thread setting is larger
    /// (another thread may raise it between the caller's allocation and its parallel call).
    func testWorkerIndexStaysBelowTheCallersSlots() {
        Threading.numThreads = 8
        let bad = Atomic<Int>(0), runs = Atomic<Int>(0)
        for _ in 0..<200 {
            parallelForWorkers(16, workers: 2) { _, worker in
                if worker < 0 || worker >= 2 { bad.add(1, ordering: .relaxed) }
                runs.add(1, ordering: .relaxed)
            }
        }
        XCTAssertEqual(bad.load(ordering: .relaxed), 0)
        XCTAssertEqual(runs.load(ordering: .relaxed), 200 * 16)
    }

    /// The pool's threads persist: once it has grown to a thread setting, more calls (and going
    /// down and back up) start no new threads.
    func testNoThreadStartedPerCall() throws {
        func threadCount() -> Int {
            guard let dir = opendir("/proc/self/task") else { return -1 }
            defer { closedir(dir) }
            var n = 0
            while let entry = readdir(dir) {
                if entry.pointee.d_name.0 != 0x2E { n += 1 }   // skip "." and ".."
            }
            return n
        }
        try XCTSkipIf(threadCount() < 0, "no /proc/self/task")
        Threading.numThreads = 4
        checkOnce(count: 32, spin: 1000)   // grows the pool to 3 workers
        let before = threadCount()
        for i in 0..<500 {
            Threading.numThreads = [4, 2, 3][i % 3]
            checkOnce(count: 1 + i % 9)
        }
        XCTAssertEqual(threadCount(), before, "threads were started by parallel calls on a grown pool")
    }

    /// A parallelFor inside a chunk runs inline (the pool is taken): all inner indices run once.
    func testNestedCallsRunEveryIndexOnce() {
        Threading.numThreads = 3
        let outer = 6, inner = 7
        let runs = UnsafeMutablePointer<Int>.allocate(capacity: outer * inner)
        runs.initialize(repeating: 0, count: outer * inner)
        defer { runs.deallocate() }
        parallelFor(outer) { i in
            parallelFor(inner) { j in
                parallelFor(2) { k in if k == 0 { runs[i * inner + j] += 1 } }
            }
        }
        XCTAssertEqual((0..<(outer * inner)).map { runs[$0] }, Array(repeating: 1, count: outer * inner))
    }

    /// Several threads calling parallelFor at once (as Python threads do with the GIL released):
    /// one gets the pool, the others run inline; nothing deadlocks and every call is complete.
    func testConcurrentCallersFromSeveralThreads() {
        Threading.numThreads = 2
        let failures = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 4) { caller in
            let count = 16 + caller
            let runs = UnsafeMutablePointer<Int>.allocate(capacity: count)
            defer { runs.deallocate() }
            for _ in 0..<500 {
                runs.initialize(repeating: 0, count: count)
                parallelForWorkers(count, workers: 2) { chunk, _ in runs[chunk] += 1 }
                if (0..<count).contains(where: { runs[$0] != 1 }) { failures.add(1, ordering: .relaxed) }
            }
        }
        XCTAssertEqual(failures.load(ordering: .relaxed), 0)
    }

    /// fork() after the pool has started: the child (which has no workers) still completes its
    /// parallel calls, with every index once, and exits normally.
    func testForkAfterThePoolStarted() {
        Threading.numThreads = 2
        checkOnce(count: 64, spin: 100)   // the pool and its worker exist now
        let pid = fork()
        if pid == 0 {
            let count = 64
            let runs = UnsafeMutablePointer<Int>.allocate(capacity: count)
            runs.initialize(repeating: 0, count: count)
            for _ in 0..<100 { parallelFor(count) { runs[$0] += 1 } }
            let ok = (0..<count).allSatisfy { runs[$0] == 100 }
            _exit(ok ? 0 : 3)
        }
        XCTAssertGreaterThan(pid, 0, "fork failed")
        var status: Int32 = 0
        // A deadlocked child would hang here: give it 20 s, then kill it and fail.
        var waited = 0
        while waitpid(pid, &status, WNOHANG) == 0 {
            waited += 1
            if waited > 2000 { kill(pid, SIGKILL); waitpid(pid, &status, 0); XCTFail("child hung"); return }
            usleep(10_000)
        }
        XCTAssertEqual(status, 0, "child exit status \(status)")
        checkOnce(count: 64, spin: 100)   // the parent's pool still works
    }

    // MARK: - kernels on the finer chunks

    /// The direct kernels (position and channel lanes, weight gradient, scatter) and the row-direct
    /// ones, which now split images into finer, dynamically claimed chunks with per-thread scratch:
    /// forwards and dx bit-identical across 1/2/3/8 threads and run to run; dw bit-identical run
    /// to run and within 1e-5 of the naive oracle at every thread count.
    func testFineChunkedKernelsAreDeterministic() throws {
        // (x shape, w shape, padding): figure 3's layer (5x5), the same on 9 images, a padded 3x3
        // (copied into the per-thread padded buffer; 12 input channels keep it below Winograd's 16),
        // and LeNet's first layer (row direct).
        let cases: [([Int], [Int], Int)] = [([20, 6, 14, 14], [16, 6, 5, 5], 0), ([9, 6, 14, 14], [16, 6, 5, 5], 0),
                                            ([5, 12, 12, 12], [16, 12, 3, 3], 1), ([21, 1, 28, 28], [6, 1, 5, 5], 2)]
        for (xs, ws, pad) in cases {
            let x: Tensor<Float> = randomTensor(xs, seed: 21)
            let w: Tensor<Float> = randomTensor(ws, seed: 22)
            let b: Tensor<Float> = randomTensor([ws[0]], seed: 23)
            let g = try Conv2DGeometry(op: "conv2d", xShape: xs, weightShape: ws, biasShape: [ws[0]],
                                       stride: (1, 1), padding: (pad, pad), dilation: (1, 1))
            let gy: Tensor<Float> = randomTensor(g.outputShape, seed: 24)
            let rowDirect = xs[1] == 1   // the last case: the row-direct kernels
            if rowDirect { XCTAssertTrue(conv2dUsesRowDirect(g), "\(xs): not a row-direct geometry") }
            else { XCTAssertNotEqual(conv2dForwardKernel(g), .other, "\(xs): no direct kernel") }
            let reference = try Tensor<Float>(zeros: g.outputShape)
            conv2dForwardNaive(g, x: x.pointer, weight: w.pointer, bias: b.pointer, y: reference.pointer)
            let dxRef = try Tensor<Float>(zeros: xs), dwRef = try Tensor<Float>(zeros: ws)
            conv2dBackwardNaive(g, gradOut: gy.pointer, x: x.pointer, weight: w.pointer, gradX: dxRef.pointer,
                                gradWeight: dwRef.pointer, gradBias: nil, accumulate: false)
            let workspace = ScratchSlots<Float>()
            func forward() throws -> [Float] {
                let y = try Tensor<Float>(zeros: g.outputShape)
                if rowDirect {
                    try conv2dForwardRowDirectFloat(g, x: x.pointer, weight: w.pointer, bias: b.pointer, y: y.pointer)
                } else {
                    try conv2dForwardChannelLanes(g, x: x.pointer, weight: w.pointer, bias: b.pointer, y: y.pointer,
                                                  workspace: workspace)
                }
                return y.scalars
            }
            var forwards: [[Float]] = [], dxs: [[Float]] = []
            for threads in [1, 2, 3, 8] {
                Threading.numThreads = threads
                let y1 = try forward(), y2 = try forward()
                XCTAssertEqual(y1, y2, "\(xs) threads \(threads): forward not bit-identical run to run")
                assertRelativeError(y1, reference.scalars, 1e-5, "\(xs) threads \(threads) forward")
                forwards.append(y1)
                var grads: [[Float]] = []
                for _ in 0..<2 {
                    let dx = try Tensor<Float>(zeros: xs), dw = try Tensor<Float>(zeros: ws)
                    if rowDirect {
                        try conv2dBackwardRowDirectFloat(g, gradOut: gy.pointer, x: x.pointer, weight: w.pointer,
                                                         gradX: dx.pointer, gradWeight: dw.pointer, accumulate: false)
                    } else {
                        XCTAssertNotEqual(conv2dGradInputKernel(g), .other, "\(xs): no direct dx kernel")
                        try conv2dBackwardChannelLanes(g, gradOut: gy.pointer, x: x.pointer, weight: w.pointer,
                                                       gradX: dx.pointer, gradWeight: dw.pointer, gradBias: nil,
                                                       accumulate: false, workspace: workspace)
                    }
                    grads.append(dx.scalars + dw.scalars)
                    assertRelativeError(dx.scalars, dxRef.scalars, 1e-5, "\(xs) threads \(threads) dx")
                    assertRelativeError(dw.scalars, dwRef.scalars, 1e-5, "\(xs) threads \(threads) dw")
                    dxs.append(dx.scalars)
                }
                XCTAssertEqual(grads[0], grads[1], "\(xs) threads \(threads): backward not bit-identical run to run")
            }
            for (i, y) in forwards.enumerated() {
                XCTAssertEqual(y, forwards[0], "\(xs): forward at thread setting #\(i) differs from 1 thread")
            }
            for dx in dxs { XCTAssertEqual(dx, dxs.first ?? [], "\(xs): dx differs across thread counts") }
        }
    }

    /// The fine chunk rule: one chunk on one thread, at most `perThread` per thread, never more
    /// than the units, never chunks below the minimum work.
    func testFineChunkRule() {
        Threading.numThreads = 1
        XCTAssertEqual(parallelFineChunks(work: 1 << 30, units: 64, minPerChunk: 1000), 1)
        Threading.numThreads = 2
        XCTAssertEqual(parallelFineChunks(work: 1 << 30, units: 64, minPerChunk: 1000), 8)
        XCTAssertEqual(parallelFineChunks(work: 1 << 30, units: 5, minPerChunk: 1000), 5)
        XCTAssertEqual(parallelFineChunks(work: 3000, units: 64, minPerChunk: 1000), 3)
        XCTAssertEqual(parallelFineChunks(work: 1999, units: 64, minPerChunk: 1000), 1)
        Threading.numThreads = 3
        XCTAssertEqual(parallelWorkers(8), 3)
        XCTAssertEqual(parallelWorkers(2), 2)
    }
}

import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The worker-thread setting shared by every compute call.
///
/// Kernels split their work into `Threading.numThreads` (or fewer) chunks by a fixed rule that
/// depends only on the problem size and the thread count, never on timing, and each output element
/// is computed by exactly one chunk in a fixed order. So a result is bit-identical run to run for a
/// given thread count (and, for most kernels, across thread counts too).
public enum Threading {
    /// 0 means "not set yet": the first read resolves it to the number of online cores.
    @usableFromInline
    static let storage = Atomic<Int>(0)

    /// Worker threads compute calls may use; defaults to the number of online cores.
    /// Values below 1 are stored as 1 (the C ABI rejects them before they get here).
    public static var numThreads: Int {
        get {
            let n = storage.load(ordering: .relaxed)
            if n > 0 { return n }
            // (sched_getaffinity, which would honour taskset, is not visible through Glibc's module.)
            let cores = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
            // Only if still unset: a concurrent `numThreads = k` wins over the default.
            let (exchanged, current) = storage.compareExchange(expected: 0, desired: cores, ordering: .relaxed)
            return exchanged ? cores : current
        }
        set { storage.store(max(1, newValue), ordering: .relaxed) }
    }
}

/// Runs `body(i)` for every `i` in `0..<count`, on up to `Threading.numThreads` threads, and returns
/// when all have finished.
///
/// `count` is the number of chunks the caller has already decided on (usually <= numThreads); which
/// thread runs which chunk is unspecified, so each chunk must write its own disjoint outputs.
/// With one chunk, or one thread, the chunks run in order on the calling thread.
@inlinable
func parallelFor(_ count: Int, _ body: (Int) -> Void) {
    if count <= 0 { return }
    if count == 1 || Threading.numThreads == 1 {
        for i in 0..<count { body(i) }
        return
    }
    // Dispatch wants a @Sendable body; ours captures raw pointers (not Sendable), and what makes
    // sharing them sound is this function's contract (each chunk writes its own disjoint outputs,
    // and every chunk has finished when concurrentPerform returns), which the compiler cannot see.
    withoutActuallyEscaping(body) { body in
        let chunk = ChunkBody(run: body)
        DispatchQueue.concurrentPerform(iterations: count) { chunk.run($0) }
    }
}

/// `parallelFor`'s body, declared Sendable on the strength of `parallelFor`'s contract (disjoint
/// writes per chunk; all chunks joined before it returns).
@usableFromInline
struct ChunkBody: @unchecked Sendable {
    @usableFromInline let run: (Int) -> Void
    @usableFromInline init(run: @escaping (Int) -> Void) { self.run = run }
}

/// The number of chunks worth running in parallel for `work` units of work (flops or element
/// operations), when each chunk should get at least `minPerThread` units: between 1 and
/// `Threading.numThreads`. Depends only on its arguments and the thread setting (deterministic).
@inlinable
func parallelChunks(work: Int, minPerThread: Int = 100_000) -> Int {
    let threads = Threading.numThreads
    if threads <= 1 || work < 2 * minPerThread { return 1 }
    return max(1, min(threads, work / minPerThread))
}

/// The half-open range of chunk `index` when `total` items are split as evenly as possible into
/// `chunks` contiguous chunks (the first `total % chunks` chunks get one more item).
@inlinable
func chunkRange(_ index: Int, of chunks: Int, total: Int) -> Range<Int> {
    let base = total / chunks, extra = total % chunks
    let start = index * base + min(index, extra)
    return start..<(start + base + (index < extra ? 1 : 0))
}

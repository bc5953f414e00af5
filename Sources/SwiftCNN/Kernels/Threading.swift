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
/// Kernels split their work into chunks by a fixed rule that depends only on the problem size and
/// the thread setting, never on timing, and each output element is computed by exactly one chunk in
/// a fixed order. Which thread runs which chunk is decided at run time (`parallelFor` hands chunks
/// out dynamically), but that does not change any result: a result is bit-identical run to run for a
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

/// Runs `body(i)` for every `i` in `0..<count`, on up to `Threading.numThreads` threads (the
/// calling thread and the persistent workers of `ThreadPool`), and returns when all have finished.
///
/// `count` is the number of chunks the caller has decided on, from the problem size (and the thread
/// setting), never from timing; chunks are handed out dynamically, in index order, to whichever
/// thread asks next, so each chunk must write its own disjoint outputs. With one chunk, one thread,
/// inside another `parallelFor` (nested), or while another thread's `parallelFor` holds the pool,
/// the chunks run in order on the calling thread.
@inlinable
func parallelFor(_ count: Int, _ body: (Int) -> Void) {
    if count <= 0 { return }
    if count == 1 || Threading.numThreads == 1 {
        for i in 0..<count { body(i) }
        return
    }
    parallelForWorkers(count, workers: count) { chunk, _ in body(chunk) }
}

/// `parallelFor` that also tells each chunk which of the participating threads runs it:
/// `body(chunk, worker)` with `worker` in `0..<workers` (the slots the caller allocated, usually
/// `parallelWorkers(count)`), and no two chunks with the same `worker` at the same time. So
/// per-thread scratch (a padded copy, a packing buffer) can be indexed by `worker` and need not be
/// allocated per chunk; anything summed across chunks must still be kept per chunk (and combined
/// in chunk order) to stay deterministic. `workers` is passed in, not read again from
/// `Threading.numThreads`, so another thread changing the setting mid-call cannot push `worker`
/// past the caller's slots.
@inlinable
func parallelForWorkers(_ count: Int, workers: Int, _ body: (_ chunk: Int, _ worker: Int) -> Void) {
    if count <= 0 { return }
    let threads = min(count, workers, Threading.numThreads)
    if threads <= 1 {
        for i in 0..<count { body(i, 0) }
        return
    }
    withoutActuallyEscaping(body) { body in
        ThreadPool.run(count: count, threads: threads, body)
    }
}

/// The number of worker slots to allocate for `parallelForWorkers(count, workers:)`: one per
/// thread that can take part, at most one per chunk.
@inlinable
func parallelWorkers(_ count: Int) -> Int {
    max(1, min(count, Threading.numThreads))
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

/// Finer chunks for the dynamic split of `parallelFor`: up to `perThread` chunks per thread (and at
/// most `units`, the count of indivisible items such as images), each of at least `minPerChunk`
/// units of work; 1 on one thread. Several chunks per thread let a thread that finishes early, or
/// was not descheduled, take over the remaining ones, instead of everyone waiting for the slowest
/// of `numThreads` equal static shares. Depends only on its arguments and the thread setting.
@inlinable
func parallelFineChunks(work: Int, units: Int, minPerChunk: Int, perThread: Int = 4) -> Int {
    let threads = Threading.numThreads
    if threads <= 1 || units <= 1 || work < 2 * minPerChunk { return 1 }
    return max(1, min(units, threads * perThread, work / minPerChunk))
}

/// The half-open range of chunk `index` when `total` items are split as evenly as possible into
/// `chunks` contiguous chunks (the first `total % chunks` chunks get one more item).
@inlinable
func chunkRange(_ index: Int, of chunks: Int, total: Int) -> Range<Int> {
    let base = total / chunks, extra = total % chunks
    let start = index * base + min(index, extra)
    return start..<(start + base + (index < extra ? 1 : 0))
}

// MARK: - the worker pool

/// A persistent pool of worker threads for `parallelFor` (pthreads; no Foundation, no Dispatch).
///
/// One job at a time: a caller takes the pool (`owner`, a try-lock), publishes the job (chunk
/// count, body, how many workers may join) and bumps `generation`; workers that see the new
/// generation claim chunk indices from `ticket` while the caller does the same, and the caller
/// returns when `pending` (chunks not yet finished) reaches zero. A caller that finds the pool
/// taken (a nested call from inside a chunk, or another thread's call) runs its chunks inline
/// instead, so nothing ever waits for the pool.
///
/// Claims are dynamic: a thread takes the next unclaimed index when it is free, so a worker that
/// is descheduled (another process busy on its core) holds up at most the one chunk it has, while
/// the others take the rest. `ticket` holds the job's generation in its high 32 bits and the next
/// index in its low 32, so a worker that wakes late (after its job ended and the next began) cannot
/// claim an index of the wrong job: its compare-exchange fails on the generation.
///
/// Waiting: after a job a worker spins on `generation` for `spinNanoseconds` (the gap between two
/// parallel regions of a training step is usually shorter), yielding the core after the first few
/// thousand checks so that a spinning worker gives way on an oversubscribed machine; then it sleeps
/// on a condition variable. The caller wakes sleepers only when `sleepers` says there are any (a
/// sequentially consistent store/load pair on both sides rules out a lost wakeup; the broadcast is
/// made under the mutex the sleeper checks the generation under). The caller waits for the last
/// chunks the same way it spins (the remaining chunks are running, they finish soon), yielding
/// after a while so that a descheduled worker gets the core.
///
/// fork(): the child has only the forking thread. A `pthread_atfork` child handler abandons the
/// parent's pool (its workers do not exist in the child; its memory is leaked on purpose, its
/// mutex may be held) so the child's first parallel call starts a fresh pool. Process exit: the
/// workers are detached and die with the process; nothing joins them.
@usableFromInline
final class ThreadPool: @unchecked Sendable {
    /// The most threads `Threading.numThreads` may ask for (the pool never grows beyond this).
    @usableFromInline static let maxThreads = 256

    /// How long a worker spins (and yields) after its last job before it sleeps.
    static let spinNanoseconds: Int = {
        if let s = getenv("SWIFTCNN_SPIN_US"), let us = Int(String(cString: s)), us >= 0 { return us * 1000 }
        return 100_000
    }()

    /// The current pool (an unretained `ThreadPool`, as raw bits; 0 before the first parallel call
    /// and in a forked child).
    static let current = Atomic<UInt>(0)
    static let atforkRegistered = Atomic<Bool>(false)

    /// Taken by the caller that runs a job (try-lock: a caller that fails runs inline).
    let owner = Atomic<Bool>(false)
    /// Bumped once per job; workers wait for it to change.
    let generation = Atomic<UInt32>(0)
    /// generation << 32 | next unclaimed chunk index.
    let ticket = Atomic<UInt64>(0)
    /// Chunks of the current job not yet finished.
    let pending = Atomic<Int>(0)
    /// Workers asleep on `cond` (or about to be).
    let sleepers = Atomic<Int>(0)
    /// Workers between noticing a job and leaving its claim loop. The caller waits for 0 after the
    /// last chunk: then no worker still holds a reference to the body (see `parallelForWorkers`'s
    /// `withoutActuallyEscaping`), and a worker that notices the job later claims nothing.
    let active = Atomic<Int>(0)
    /// The job: chunk count, body (the address of a `PoolJob`), and how many workers (besides the
    /// caller) may take part. Atomics only because a late worker may read them while the next job
    /// is being published; it reads a job's fields only to try a claim, which then fails.
    let jobCount = Atomic<Int>(0)
    let jobBody = Atomic<UInt>(0)
    let jobWorkers = Atomic<Int>(0)
    /// Workers started so far (only the owner starts more).
    var started = 0

    let mutex: UnsafeMutablePointer<pthread_mutex_t>
    let cond: UnsafeMutablePointer<pthread_cond_t>

    init() {
        mutex = .allocate(capacity: 1)
        cond = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(cond, nil)
    }

    /// The pool of this process, created on first use.
    static func shared() -> ThreadPool {
        let bits = current.load(ordering: .acquiring)
        if bits != 0 {
            return Unmanaged<ThreadPool>.fromOpaque(UnsafeRawPointer(bitPattern: bits)!).takeUnretainedValue()
        }
        if !atforkRegistered.exchange(true, ordering: .relaxed) {
            pthread_atfork(nil, nil, { ThreadPool.current.store(0, ordering: .releasing) })
        }
        // Retained forever (workers hold its address).
        let pool = Unmanaged.passRetained(ThreadPool())
        let mine = UInt(bitPattern: pool.toOpaque())
        let (won, existing) = current.compareExchange(expected: 0, desired: mine, ordering: .acquiringAndReleasing)
        if won { return pool.takeUnretainedValue() }
        pool.release()   // another thread made one first: no workers started on ours yet
        return Unmanaged<ThreadPool>.fromOpaque(UnsafeRawPointer(bitPattern: existing)!).takeUnretainedValue()
    }

    /// Runs `body(chunk, worker)` for chunk in 0..<count on the caller and up to `threads - 1`
    /// workers (see `parallelForWorkers`).
    @usableFromInline
    static func run(count: Int, threads: Int, _ body: @escaping (Int, Int) -> Void) {
        let threads = min(threads, maxThreads)
        let pool = shared()
        if count > Int(UInt32.max) || !pool.owner.compareExchange(expected: false, desired: true,
                                                                  ordering: .acquiring).exchanged {
            for i in 0..<count { body(i, 0) }   // nested, or another thread has the pool
            return
        }
        pool.runOwned(count: count, workers: threads - 1, body)
        pool.owner.store(false, ordering: .releasing)
    }

    func runOwned(count: Int, workers: Int, _ body: @escaping (Int, Int) -> Void) {
        while started < workers {
            if !startWorker(index: started + 1) { break }
            started += 1
        }
        let workers = min(workers, started)
        if workers == 0 {
            for i in 0..<count { body(i, 0) }
            return
        }
        var job = PoolJob(body: body)
        withUnsafeMutablePointer(to: &job) { jobPointer in
            let next = generation.load(ordering: .relaxed) &+ 1
            // Close the previous job's ticket first: a worker still holding the previous
            // generation could otherwise read this job's count and body below and claim an index
            // past the previous count under the old generation, which this job then hands out again
            // (a chunk run twice). The fields are released after the close and acquired by the
            // workers, so a worker that reads a new field also sees the closed ticket.
            ticket.store(UInt64(next &- 1) << 32 | 0xFFFF_FFFF, ordering: .sequentiallyConsistent)
            jobCount.store(count, ordering: .releasing)
            jobBody.store(UInt(bitPattern: jobPointer), ordering: .releasing)
            jobWorkers.store(workers, ordering: .releasing)
            pending.store(count, ordering: .relaxed)
            ticket.store(UInt64(next) << 32, ordering: .releasing)
            generation.store(next, ordering: .sequentiallyConsistent)
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                pthread_mutex_lock(mutex)
                pthread_cond_broadcast(cond)
                pthread_mutex_unlock(mutex)
            }
            // The caller is worker 0 and claims chunks like the others.
            work(generation: next, count: count, body: jobPointer, worker: 0)
            var spins = 0
            while pending.load(ordering: .acquiring) > 0 || active.load(ordering: .acquiring) > 0 {
                spins += 1
                if spins > 2000 { sched_yield() }
            }
        }
    }

    /// Claims and runs chunks of job `generation` until none are left (or the job is over).
    @inline(__always)
    func work(generation: UInt32, count: Int, body: UnsafeMutablePointer<PoolJob>, worker: Int) {
        let high = UInt64(generation) << 32
        var t = ticket.load(ordering: .acquiring)
        while true {
            if t & ~0xFFFF_FFFF != high { return }     // a later job: ours is over
            let index = Int(t & 0xFFFF_FFFF)
            if index >= count { return }
            let (claimed, seen) = ticket.compareExchange(expected: t, desired: t + 1, ordering: .acquiring)
            if !claimed { t = seen; continue }
            body.pointee.body(index, worker)
            pending.subtract(1, ordering: .releasing)
            t = ticket.load(ordering: .acquiring)
        }
    }

    /// Starts worker `index` (1-based; the caller is 0), detached. False if the system refuses.
    func startWorker(index: Int) -> Bool {
        let context = UnsafeMutablePointer<WorkerStart>.allocate(capacity: 1)
        context.initialize(to: WorkerStart(pool: Unmanaged.passUnretained(self).toOpaque(), index: index))
        var attr = pthread_attr_t()
        pthread_attr_init(&attr)
        pthread_attr_setdetachstate(&attr, Int32(PTHREAD_CREATE_DETACHED))
        pthread_attr_setstacksize(&attr, 8 << 20)   // kernels keep scratch on the stack
        var thread = pthread_t()
        let rc = pthread_create(&thread, &attr, { raw in
            let start = raw!.assumingMemoryBound(to: WorkerStart.self)
            let (poolBits, index) = (start.pointee.pool, start.pointee.index)
            start.deinitialize(count: 1)
            start.deallocate()
            Unmanaged<ThreadPool>.fromOpaque(poolBits).takeUnretainedValue().workerLoop(index: index)
        }, context)
        pthread_attr_destroy(&attr)
        if rc != 0 {
            context.deinitialize(count: 1)
            context.deallocate()
            return false
        }
        return true
    }

    func workerLoop(index: Int) -> Never {
        var seen = generation.load(ordering: .acquiring)
        while true {
            // Wait for the next job: spin, then spin yielding, then sleep.
            var current = generation.load(ordering: .acquiring)
            if current == seen {
                let deadline = monotonicNanoseconds() + ThreadPool.spinNanoseconds
                var spins = 0
                while current == seen {
                    spins += 1
                    if spins & 255 == 0 {
                        if spins > 4096 { sched_yield() }
                        if monotonicNanoseconds() > deadline { break }
                    }
                    current = generation.load(ordering: .acquiring)
                }
                if current == seen {
                    pthread_mutex_lock(mutex)
                    sleepers.add(1, ordering: .sequentiallyConsistent)
                    current = generation.load(ordering: .sequentiallyConsistent)
                    while current == seen {
                        pthread_cond_wait(cond, mutex)
                        current = generation.load(ordering: .sequentiallyConsistent)
                    }
                    sleepers.subtract(1, ordering: .sequentiallyConsistent)
                    pthread_mutex_unlock(mutex)
                }
            }
            seen = current
            // Take part only if this job wants this many workers; the fields may already belong to
            // a later job, in which case `work` claims nothing.
            active.add(1, ordering: .sequentiallyConsistent)
            if index <= jobWorkers.load(ordering: .acquiring) {
                let body = UnsafeMutablePointer<PoolJob>(bitPattern: jobBody.load(ordering: .acquiring))
                if let body {
                    work(generation: current, count: jobCount.load(ordering: .acquiring), body: body, worker: index)
                }
            }
            active.subtract(1, ordering: .releasing)
        }
    }
}

/// A job's body, on the caller's stack for the duration of the job.
@usableFromInline
struct PoolJob {
    let body: (Int, Int) -> Void
}

struct WorkerStart {
    let pool: UnsafeMutableRawPointer
    let index: Int
}

@inline(__always)
func monotonicNanoseconds() -> Int {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

import Dispatch
import Foundation
import Synchronization

/// The CPU backend's worker threads, behind `parallelFor` and `parallelSingleThreadedGemms`.
///
/// A training step runs thousands of parallel ops back to back, separated by a few microseconds of graph
/// bookkeeping. `DispatchQueue.concurrentPerform` parks its workers in the kernel after each op and wakes them
/// with a futex for the next, which cost training runs 5–14 % of their user time as system time. These workers
/// instead spin on an atomic for `spinNanoseconds` after a job and park only when none comes, so back-to-back
/// ops hand over without a system call. The calling thread takes iterations too. A call made while the pool runs
/// another job (from a worker's body, or from a second thread such as a data loader's) runs inline: the cores are
/// busy anyway.
public final class WorkerPool: @unchecked Sendable {
    public static let shared = WorkerPool(threads: CPUThreads.count - 1)

    /// How long an idle worker spins before it parks (the gaps inside a training step are shorter).
    static let spinNanoseconds: UInt64 = 200_000

    private let threads: Int
    /// Held by the one caller whose job the workers may join.
    private let taken = Atomic<Bool>(false)
    /// Bumped for every job: what idle workers watch.
    private let generation = Atomic<Int>(0)
    /// The job's fields below are valid while `open` is true; the caller changes them only when no worker has
    /// entered (`entered` is 0 after `open` went false). A worker claims iterations only while entered, so that
    /// wait is also the wait for the job's last iteration.
    private let open = Atomic<Bool>(false)
    private let entered = Atomic<Int>(0)
    private let nextIteration = Atomic<Int>(0)
    private var iterations = 0
    private var body: ((Int) -> Void)?
    private let parking: [Parking]

    /// A worker's parked flag and semaphore: whoever clears the flag owns the wake-up.
    private final class Parking {
        let parked = Atomic<Bool>(false)
        let wakeUp = DispatchSemaphore(value: 0)
    }

    init(threads: Int) {
        self.threads = max(0, threads)
        parking = (0..<self.threads).map { _ in Parking() }
        for worker in 0..<self.threads {
            // The workers hold their pool: a pool lives as long as its process (`shared` does anyway).
            let thread = Thread { self.serve(worker) }
            thread.name = "histodiff-worker-\(worker)"
            thread.stackSize = 8 << 20
            thread.start()
        }
    }

    /// Runs body(i) for i in 0..<iterations on the caller and the workers; returns when all have run.
    public func perform(iterations: Int, _ body: (Int) -> Void) {
        guard iterations > 1, threads > 0,
              taken.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            for i in 0..<iterations { body(i) }
            return
        }
        withoutActuallyEscaping(body) { body in
            self.body = body
            self.iterations = iterations
            nextIteration.store(0, ordering: .relaxed)
            open.store(true, ordering: .sequentiallyConsistent)
            generation.wrappingAdd(1, ordering: .sequentiallyConsistent)
            for worker in parking where worker.parked.exchange(false, ordering: .sequentiallyConsistent) {
                worker.wakeUp.signal()
            }
            runIterations()
            // Every iteration is claimed; those still running belong to workers that have entered.
            open.store(false, ordering: .sequentiallyConsistent)
            waitUntil { entered.load(ordering: .sequentiallyConsistent) == 0 }
            self.body = nil
        }
        taken.store(false, ordering: .releasing)
    }

    /// Claims iterations until none is left.
    @inline(never) private func runIterations() {
        guard let body else { return }
        while true {
            let i = nextIteration.wrappingAdd(1, ordering: .relaxed).oldValue
            guard i < iterations else { return }
            body(i)
        }
    }

    /// Spins on `done`; after a millisecond, yields the core now and then in case the thread it waits for was
    /// preempted. (Yielding sooner costs a system call every few microseconds of a worker's longer last block.)
    private func waitUntil(_ done: () -> Bool) {
        var spins = 0
        var start: UInt64 = 0
        while !done() {
            spins += 1
            guard spins & 0xFFF == 0 else { continue }
            let now = DispatchTime.now().uptimeNanoseconds
            if start == 0 { start = now } else if now - start > 1_000_000 { sched_yield() }
        }
    }

    private func serve(_ worker: Int) {
        var seen = 0
        while true {
            seen = waitForJob(worker, after: seen)
            entered.wrappingAdd(1, ordering: .sequentiallyConsistent)
            if open.load(ordering: .sequentiallyConsistent) { runIterations() }
            entered.wrappingSubtract(1, ordering: .sequentiallyConsistent)
        }
    }

    /// The generation of the next job after `seen`: spun for, then parked for.
    private func waitForJob(_ worker: Int, after seen: Int) -> Int {
        var spins = 0
        var deadline: UInt64 = 0
        while true {
            let current = generation.load(ordering: .acquiring)
            if current != seen { return current }
            spins += 1
            guard spins & 0xFFF == 0 else { continue }
            let now = DispatchTime.now().uptimeNanoseconds
            if deadline == 0 { deadline = now + Self.spinNanoseconds; continue }
            guard now >= deadline else { continue }
            let parking = parking[worker]
            parking.parked.store(true, ordering: .sequentiallyConsistent)
            let latest = generation.load(ordering: .sequentiallyConsistent)
            // A job came meanwhile: if its caller already cleared the flag, its signal must be taken.
            if latest == seen || !parking.parked.exchange(false, ordering: .sequentiallyConsistent) {
                parking.wakeUp.wait()
            }
            spins = 0
            deadline = 0
        }
    }
}

import Dispatch
import Synchronization
import XCTest
@testable import HistoCore

final class WorkerPoolTests: XCTestCase {
    /// Every iteration of every job runs exactly once, for jobs back to back (workers spinning) and after pauses
    /// longer than the spin (workers parked and woken).
    func testEveryIterationRunsOnceWhetherWorkersSpinOrPark() {
        let pool = WorkerPool(threads: 3)
        var generator = SystemRandomNumberGenerator()
        for job in 0..<3000 {
            let iterations = Int.random(in: 1...40, using: &generator)
            let counts = Mutex([Int](repeating: 0, count: iterations))
            pool.perform(iterations: iterations) { i in counts.withLock { $0[i] += 1 } }
            let wrong = counts.withLock { c in c.indices.first { c[$0] != 1 } }
            XCTAssertNil(wrong, "job \(job): iteration \(wrong ?? -1) of \(iterations)")
            if job % 500 == 499 { usleep(UInt32(3 * WorkerPool.spinNanoseconds / 1000)) }
        }
    }

    /// A call from inside a job, and calls from two threads at once, run every iteration (inline when the pool
    /// is taken).
    func testNestedAndConcurrentCallsRunEveryIteration() {
        let pool = WorkerPool(threads: 2)
        let total = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for _ in 0..<200 {
                pool.perform(iterations: 8) { _ in
                    pool.perform(iterations: 3) { _ in total.wrappingAdd(1, ordering: .relaxed) }
                }
            }
        }
        XCTAssertEqual(total.load(ordering: .relaxed), 4 * 200 * 8 * 3)
    }
}

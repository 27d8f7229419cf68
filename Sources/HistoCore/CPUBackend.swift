import Dispatch
import CBLAS
import Foundation
import Synchronization

/// The reference backend: runs every op's CPU forward on host memory. It supports every op by definition.
public final class CPUBackend: Backend {
    public static let shared = CPUBackend()
    public let name = "cpu"
    public let pool = HostBufferPool()

    private init() {}

    public func supports(_ op: any Operation) -> Bool { true }

    public func allocate(elementCount: Int) throws -> any BackendBuffer { pool.take(elementCount) }

    public func read(_ buffer: any BackendBuffer, offset: Int, count: Int,
                     into destination: UnsafeMutablePointer<Float>) throws {
        let host = buffer as! HostBuffer
        destination.update(from: host.pointer + offset, count: count)
    }

    public func upload(_ source: UnsafePointer<Float>, count: Int) throws -> any BackendBuffer {
        let buffer = pool.take(count)
        buffer.pointer.update(from: source, count: count)
        return buffer
    }

    public func execute(_ split: GraphSplit) throws {
        for step in split.steps {
            let node = step.node
            let inputShapes = node.inputs.map(\.shape)
            if let offset = node.op.viewOffset(inputShapes) {
                realizeView(node, offset: offset)
            } else {
                try node.allocateOutput(on: self)
                let start = OpProfile.shared.isEnabled ? DispatchTime.now().uptimeNanoseconds : 0
                node.op.cpuForward(CPUArgs(
                    inputs: node.inputs.map { $0.hostPointer },
                    inputShapes: inputShapes,
                    output: node.hostMutablePointer,
                    outputShape: node.shape))
                if start != 0 { OpProfile.shared.record(node.op.name, nanoseconds: DispatchTime.now().uptimeNanoseconds - start) }
            }
            for dead in step.release { dead.release() }
        }
    }
}

/// Wall time and call count per op name of the CPU backend's ops while enabled (`bench --profile`). Off by
/// default: then the backend reads no clock.
public final class OpProfile: @unchecked Sendable {
    public static let shared = OpProfile()
    public struct Entry: Sendable { public var seconds: Double; public var calls: Int }
    private let lock = NSLock()
    private var entries: [String: Entry] = [:]
    public var isEnabled = false

    func record(_ name: String, nanoseconds: UInt64) {
        lock.lock()
        entries[name, default: Entry(seconds: 0, calls: 0)].seconds += Double(nanoseconds) / 1e9
        entries[name, default: Entry(seconds: 0, calls: 0)].calls += 1
        lock.unlock()
    }

    /// The entries recorded since the last reset, most time first.
    public var totals: [(name: String, entry: Entry)] {
        lock.lock(); defer { lock.unlock() }
        return entries.map { ($0.key, $0.value) }.sorted { $0.entry.seconds > $1.entry.seconds }
    }
    public func reset() { lock.lock(); entries = [:]; lock.unlock() }
}

extension Node {
    /// The realised value as host memory (only for nodes realised on the CPU backend).
    public var hostPointer: UnsafeBufferPointer<Float> {
        let host = buffer as! HostBuffer
        return UnsafeBufferPointer(start: host.pointer + offset, count: count)
    }
    var hostMutablePointer: UnsafeMutableBufferPointer<Float> {
        let host = buffer as! HostBuffer
        return UnsafeMutableBufferPointer(start: host.pointer + offset, count: count)
    }
}

/// Splits `0..<count` into chunks of at least `grain` items and runs them on all cores.
/// Small ranges run inline: the dispatch costs more than the work.
@inlinable public func parallelFor(_ count: Int, grain: Int = 4096, _ body: (Range<Int>) -> Void) {
    let chunks = min(CPUThreads.count * 4, max(1, count / max(grain, 1)))
    if chunks <= 1 { body(0..<count); return }
    let size = (count + chunks - 1) / chunks
    WorkerPool.shared.perform(iterations: chunks) { c in
        let start = c * size
        let end = min(count, start + size)
        if start < end { body(start..<end) }
    }
}

/// Runs body(item) for item < `count` spread over the cores (dynamically: a core slowed by other processes takes
/// fewer items): thin GEMMs (a UNet conv's 32–64 output channels) run faster one per core than each split across
/// the cores. With fewer items than cores they run in turn, and each GEMM splits itself (`openBLASGemm`, `gemm`).
public func parallelSingleThreadedGemms(_ count: Int, _ body: (Int) -> Void) {
    parallelSingleThreadedGemms(count, scratch: {}) { item, _ in body(item) }
}

/// The same, with one `scratch` per worker made before any item runs, in worker order: the pool then sees the same
/// takes every call, however the items were scheduled (so a training step's buffers settle after its first step).
public func parallelSingleThreadedGemms<Scratch>(_ count: Int, scratch makeScratch: () -> Scratch,
                                                 _ body: (_ item: Int, _ scratch: Scratch) -> Void) {
    guard count > 0 else { return }
    let workers = count < CPUThreads.count ? 1 : CPUThreads.count
    let scratches = (0..<workers).map { _ in makeScratch() }
    if workers == 1 { for item in 0..<count { body(item, scratches[0]) }; return }
    let nextItem = Atomic<Int>(0)
    WorkerPool.shared.perform(iterations: workers) { worker in
        while true {
            let item = nextItem.wrappingAdd(1, ordering: .relaxed).oldValue
            guard item < count else { return }
            body(item, scratches[worker])
        }
    }
}

/// The cores the CPU backend computes on: OpenBLAS's thread count when first asked (`OPENBLAS_NUM_THREADS`, else
/// the machine's cores). OpenBLAS itself is then made single-threaded for good, and its large GEMMs are split over
/// `WorkerPool` (`openBLASGemm`): OpenBLAS's threaded GEMM waits for its threads in a `sched_yield` loop, which
/// made GenSelfDiff's training spend 6 % of its user time in the kernel on a quiet machine and 23 % beside another
/// job (issue 20).
public enum CPUThreads {
    public static let count: Int = {
        let threads = max(1, Int(openblas_get_num_threads()))
        openblas_set_num_threads(1)
        return threads
    }()
}

/// Row-major C = alpha·op(A)·op(B) + beta·C by OpenBLAS, single-threaded (`CPUThreads`), in bands of C's rows or
/// columns (its longer side) spread over the worker pool, each of at least `bandProducts` multiply-adds. The bands
/// depend on the shape only, so a product has the same bits wherever it runs; from inside a parallel loop they run
/// in turn (`WorkerPool`). Below 2²² products per band (a conv's per-image weight gradient, run one image per core)
/// a second band's repacking costs more than it saves.
public func openBLASGemm(_ transposeA: Bool, _ transposeB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
                         _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                         _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
    let bandProducts = 1 << 22
    func run(_ rows: Range<Int>, _ columns: Range<Int>) {
        let a = transposeA ? a + rows.lowerBound : a + rows.lowerBound * lda
        let b = transposeB ? b + columns.lowerBound * ldb : b + columns.lowerBound
        cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                    Int32(rows.count), Int32(columns.count), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta,
                    c + rows.lowerBound * ldc + columns.lowerBound, Int32(ldc))
    }
    let threads = CPUThreads.count  // before the first cblas call: OpenBLAS single-threaded from then on
    // Split the larger side: each band packs all of the other operand again.
    let splitRows = m >= n, side = splitRows ? m : n
    let bands = min(2 * threads, side / 32, m * n * k / bandProducts)
    guard bands > 1 else { return run(0..<m, 0..<n) }
    // Whole 32-row (or column) blocks per band; the last band takes the remainder.
    let blocks = side / 32
    WorkerPool.shared.perform(iterations: bands) { band in
        let start = band * blocks / bands * 32, end = band == bands - 1 ? side : (band + 1) * blocks / bands * 32
        if splitRows { run(start..<end, 0..<n) } else { run(0..<m, start..<end) }
    }
}

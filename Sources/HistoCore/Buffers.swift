import Foundation

/// Memory owned by one backend. Buffers are reference-counted: a buffer returns to its backend's pool when
/// the last node (or view) holding it lets go, so a training step reuses the previous step's memory.
public protocol BackendBuffer: AnyObject {
    var backend: any Backend { get }
    /// Capacity in float32 elements.
    var elementCount: Int { get }
}

/// Host memory for the CPU backend, taken from and given back to a size-keyed pool.
public final class HostBuffer: BackendBuffer {
    public let pointer: UnsafeMutablePointer<Float>
    public let elementCount: Int
    private let pool: HostBufferPool
    public var backend: any Backend { CPUBackend.shared }

    init(pool: HostBufferPool, pointer: UnsafeMutablePointer<Float>, elementCount: Int) {
        self.pool = pool; self.pointer = pointer; self.elementCount = elementCount
    }
    deinit { pool.giveBack(pointer, count: elementCount) }
}

/// Free host blocks keyed by element count (ggml-alloc reuses by liveness; this pool adds reuse across steps).
/// `freshAllocations` counts the blocks that had to come from the system allocator.
public final class HostBufferPool: @unchecked Sendable {
    private var free: [Int: [UnsafeMutablePointer<Float>]] = [:]
    /// When each size was last taken or given back: the pool evicts the stalest sizes first, so blocks left over
    /// from an earlier, larger job (an evaluation pass, another test) make room for the sizes in use now.
    private var lastUse: [Int: Int] = [:]
    private var clock = 0
    private var freeElements = 0
    private let lock = NSLock()
    /// Free memory kept for reuse beyond the most ever live at once, in elements (1 GiB).
    public var retainLimit = 1 << 28
    /// The most elements ever live at once; unlike `peakLiveElements` never reset.
    private var highWater = 0
    /// Free blocks kept: `retainLimit` on top of the most ever live (up to a quarter of the machine's memory). A
    /// step's blocks are all free at its end, plus those of other sizes freed before its peak, so with a fixed 1 GiB
    /// a step that outgrew it (UAMT's eight teacher passes, CCT's decoders: 1.3 GB live) gave 32 MB blocks back every
    /// step and faulted fresh pages into the next (measured: 100 000 page faults per step, 12–18 % system time).
    private var retained: Int { retainLimit + min(highWater, Self.quarterOfMemory) }
    private static let quarterOfMemory = Int(ProcessInfo.processInfo.physicalMemory / 16)
    public private(set) var freshAllocations = 0
    /// Elements held by live buffers now, and the most held at once since `resetPeak()`: what a computation
    /// needs at its peak, for checks that memory follows the tile rather than the image.
    public private(set) var liveElements = 0
    public private(set) var peakLiveElements = 0

    public func resetPeak() {
        lock.lock(); defer { lock.unlock() }
        peakLiveElements = liveElements
    }

    public func take(_ count: Int) -> HostBuffer {
        let n = max(count, 1)
        lock.lock()
        clock += 1
        lastUse[n] = clock
        let reused = free[n]?.popLast()
        if reused != nil { freeElements -= n } else { freshAllocations += 1 }
        liveElements += n
        peakLiveElements = max(peakLiveElements, liveElements)
        highWater = max(highWater, liveElements)
        lock.unlock()
        let pointer = reused ?? {
            // 64-byte alignment suits AVX-512 loads and OpenBLAS.
            let raw = UnsafeMutableRawPointer.allocate(byteCount: n * 4, alignment: 64)
            return raw.bindMemory(to: Float.self, capacity: n)
        }()
        return HostBuffer(pool: self, pointer: pointer, elementCount: n)
    }

    func giveBack(_ pointer: UnsafeMutablePointer<Float>, count: Int) {
        lock.lock()
        liveElements -= count
        let retained = retained
        guard count <= retained else {
            lock.unlock()
            UnsafeMutableRawPointer(pointer).deallocate()
            return
        }
        clock += 1
        lastUse[count] = clock
        var evicted: [UnsafeMutablePointer<Float>] = []
        while freeElements + count > retained, let stalest = stalestOtherSize(than: count) {
            let blocks = free.removeValue(forKey: stalest) ?? []
            freeElements -= stalest * blocks.count
            evicted += blocks
        }
        if freeElements + count <= retained {
            free[count, default: []].append(pointer)
            freeElements += count
        } else {
            evicted.append(pointer)
        }
        lock.unlock()
        for p in evicted { UnsafeMutableRawPointer(p).deallocate() }
    }

    /// The least recently used size other than `count` that has free blocks.
    private func stalestOtherSize(than count: Int) -> Int? {
        free.filter { $0.key != count && !$0.value.isEmpty }.keys.min { lastUse[$0, default: 0] < lastUse[$1, default: 0] }
    }

    /// Returns every pooled block to the system.
    public func trim() {
        lock.lock(); defer { lock.unlock() }
        for (_, blocks) in free { for p in blocks { UnsafeMutableRawPointer(p).deallocate() } }
        free = [:]; lastUse = [:]; freeElements = 0
    }
}

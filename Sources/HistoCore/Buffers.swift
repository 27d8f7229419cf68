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
    private var freeElements = 0
    private let lock = NSLock()
    /// Free memory kept for reuse, in elements, before blocks go back to the system (1 GiB).
    public var retainLimit = 1 << 28
    public private(set) var freshAllocations = 0

    public func take(_ count: Int) -> HostBuffer {
        let n = max(count, 1)
        lock.lock()
        let reused = free[n]?.popLast()
        if reused != nil { freeElements -= n } else { freshAllocations += 1 }
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
        if freeElements + count <= retainLimit {
            free[count, default: []].append(pointer)
            freeElements += count
            lock.unlock()
        } else {
            lock.unlock()
            UnsafeMutableRawPointer(pointer).deallocate()
        }
    }

    /// Returns every pooled block to the system.
    public func trim() {
        lock.lock(); defer { lock.unlock() }
        for (_, blocks) in free { for p in blocks { UnsafeMutableRawPointer(p).deallocate() } }
        free = [:]; freeElements = 0
    }
}

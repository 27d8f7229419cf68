import HistoCore

/// The processes that train one model together by data parallelism (MPI ranks: one per GPU or share of the
/// cores), as the training loops see them. Every rank builds the same model from the same seed, takes its shard
/// of each global batch and averages its gradients with the others' before every optimizer step, so the ranks
/// stay identical. Training code calls this protocol; the command line injects the MPI group (module HistoMPI)
/// when launched by `mpirun`, `SingleProcess` otherwise.
public protocol ProcessGroup: AnyObject {
    /// This process's index in 0..<size. Rank 0 alone writes run files and progress.
    var rank: Int { get }
    var size: Int { get }
    /// Sums `values` elementwise over the ranks, in place, on every rank.
    func sumInPlace(_ values: UnsafeMutableBufferPointer<Float>) throws
    /// Whether every rank passed the same `value`.
    func agree(on value: UInt64) throws -> Bool
}

extension ProcessGroup {
    public var isRoot: Bool { rank == 0 }

    /// This rank's shard of every batch, for `LoaderOptions.shard` and `RandomGenerator.batchShard`; nil alone.
    public var batchShard: (index: Int, count: Int)? { size > 1 ? (rank, size) : nil }

    /// Refuses to start when the ranks disagree on `fingerprint` (a hash of the options, the model's parameter
    /// names and shapes and its initial weights): they would train different models and exchange nonsense.
    public func checkSameOnEveryRank(_ fingerprint: @autoclosure () throws -> UInt64, what: String) throws {
        guard size > 1 else { return }
        guard try agree(on: fingerprint()) else {
            throw EngineError.invalidValue(op: "data-parallel training", message:
                "the \(size) ranks do not agree on \(what): launch every rank with the same command, data and build")
        }
    }

    /// Refuses a global batch (given by `option`) that the ranks cannot split into equal shards: only then is
    /// the mean of the ranks' gradients (each the mean over its shard) the gradient of the global batch's mean.
    public func checkShards(ofBatch globalBatch: Int, option: String) throws {
        guard globalBatch % size == 0 else {
            throw EngineError.invalidValue(op: "data-parallel training", message:
                "\(option) \(globalBatch) is not divisible by the \(size) ranks; give a multiple of \(size)")
        }
    }
}

/// One process training alone: nothing to exchange.
public final class SingleProcess: ProcessGroup {
    public static let shared = SingleProcess()
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func sumInPlace(_ values: UnsafeMutableBufferPointer<Float>) throws {}
    public func agree(on value: UInt64) throws -> Bool { true }
}

extension Gradients {
    /// Bytes of gradients summed by one allreduce (PyTorch DDP's default bucket, 25 MiB): large enough that the
    /// per-call latency is amortised, small enough that the staging buffer stays small next to the model.
    public static let bucketBytes = 25 << 20

    /// Replaces every gradient, and `values` (e.g. the loss, which then logs the global batch's), by its mean
    /// over the ranks of `group`. Gradients are packed in parameter order into buckets of `bucketBytes` (a larger
    /// gradient gets a bucket of its own), each summed in place by one allreduce; `values` go in the last.
    /// Runs after the whole backward pass: the executor evaluates the step's graph as one run and hands gradients
    /// to the host only when it returns, so no bucket can be sent while earlier layers are still differentiated.
    public mutating func average(across group: any ProcessGroup, with values: inout [Float],
                                 bucketBytes: Int = Gradients.bucketBytes) throws {
        guard group.size > 1 else { return }
        let scale = 1 / Float(group.size)
        let capacity = bucketBytes / MemoryLayout<Float>.stride
        var bucket = [Float]()
        bucket.reserveCapacity(min(capacity, entries.reduce(values.count) { $0 + $1.values.count }))
        var members: [Int] = []
        // Sums the bucket; its first values belong to `members`, the rest (the last bucket's) to `values`.
        func flush() throws {
            try bucket.withUnsafeMutableBufferPointer { try group.sumInPlace($0) }
            var position = 0
            for i in members {
                for j in entries[i].values.indices { entries[i].values[j] = bucket[position + j] * scale }
                position += entries[i].values.count
            }
            for j in position..<bucket.count { values[j - position] = bucket[j] * scale }
            bucket.removeAll(keepingCapacity: true)
            members.removeAll()
        }
        for i in entries.indices {
            if !bucket.isEmpty && bucket.count + entries[i].values.count > capacity { try flush() }
            bucket += entries[i].values
            members.append(i)
        }
        bucket += values
        try flush()
    }
}

extension Module {
    /// A 64-bit FNV-1a hash of `settings` and of the name, shape and values of every parameter and buffer: equal
    /// on two ranks only if they were given the same options and built the same model from the same seed.
    /// (Swift's `Hasher` is seeded per process, so it cannot compare processes.)
    public func fingerprint(settings: [String: String]) throws -> UInt64 {
        var hash = FNV1a()
        for key in settings.keys.sorted() { hash.add("\(key)=\(settings[key]!)\n".utf8) }
        let tensors = parameters().map { ($0.name, $0.parameter as ModuleTensor) }
            + buffers().map { ($0.name, $0.buffer as ModuleTensor) }
        for (name, tensor) in tensors {
            hash.add("\(name)\(tensor.shape)".utf8)
            hash.add(values: try tensor.values())
        }
        return hash.value
    }
}

import Foundation
import HistoCore

/// Which windows a loader cuts from its images in each epoch.
public enum PatchSampling: Equatable, Sendable {
    /// `perImage` windows of `size × size` from each image per epoch, at uniformly random positions inside the image
    /// (centred, and padded by reflection, where the image is smaller).
    case randomCrops(size: Int, perImage: Int)
    /// The windows `Planes.patches(size:stride:padding:)` cuts: offsets 0, stride, … until the image is covered.
    case grid(size: Int, stride: Int)

    public var size: Int {
        switch self {
        case let .randomCrops(size, _), let .grid(size, _): return size
        }
    }
}

/// The image views a batch carries.
public enum BatchViews: Sendable {
    /// Geometry only.
    case weak
    /// Geometry and photometric changes.
    case strong
    /// Both, sharing their geometry (`images` weak, `strongImages` strong).
    case weakAndStrong
}

public struct LoaderOptions: Sendable {
    public var batchSize: Int
    public var patches: PatchSampling
    /// Batches carry labels (class ids); every image must then have a mask.
    public var labelled: Bool
    public var augmentation = Augmentation()
    /// Random crops start at multiples of this in both axes, so that the same tiles recur from epoch to epoch
    /// (PathSegDiff's feature cache); 1: any position.
    public var cropAlignment = 1
    public var views = BatchViews.weak
    /// A fresh random order of the epoch's windows in every epoch; otherwise image order, windows row-major.
    public var shuffle = true
    /// Passes over the images; nil for an endless stream. The last batch of a finite stream may be smaller.
    public var epochs: Int?
    /// Batches at the start of the stream that are not prepared (a resumed run continues where it stopped): the
    /// first batch is the one a fresh loader would give after this many.
    public var skippedBatches = 0
    public var seed: UInt64 = 0
    /// Data-parallel training: this loader yields shard `index` of `count` of every batch, the contiguous
    /// elements index·b/count ..< (index+1)·b/count of the batch b a whole loader would yield, so that the global
    /// batch and the data order do not depend on the number of shards. nil: whole batches.
    public var shard: (index: Int, count: Int)?
    public var range = PixelRange.minusOneToOne
    /// Batches prepared ahead of the consumer: memory holds at most this many plus the one in preparation.
    public var prefetch = 3
    /// Decoded images kept for reuse, in bytes; the least recently used are dropped beyond it.
    public var cacheBytes = 2 << 30

    public init(batchSize: Int, patches: PatchSampling, labelled: Bool) {
        self.batchSize = batchSize
        self.patches = patches
        self.labelled = labelled
    }
}

/// Where a batch element came from.
public struct BatchItem: Equatable, Sendable {
    public let name: String
    /// The image's index in the dataset.
    public let datasetIndex: Int
    public let epoch: Int
    /// The element's position in its epoch's order.
    public let position: Int
    /// The window's top-left corner in the image, before augmentation.
    public let y: Int
    public let x: Int
}

public struct Batch {
    /// `[N, 3, S, S]` in the options' pixel range: the weak view, or the strong one when the views are `.strong`.
    public let images: Tensor
    /// `[N, 3, S, S]`: the strong views, when the views are `.weakAndStrong`.
    public let strongImages: Tensor?
    /// `[N, S, S]` class ids, for a labelled stream.
    public let labels: Tensor?
    public let items: [BatchItem]

    public var count: Int { items.count }

    public init(images: Tensor, strongImages: Tensor? = nil, labels: Tensor?, items: [BatchItem]) {
        self.images = images
        self.strongImages = strongImages
        self.labels = labels
        self.items = items
    }
}

/// Batches of augmented patches from some images of a dataset, prepared on a background thread while the consumer
/// trains. The stream is a sequence of epochs, each a (shuffled) pass over every window of every image; batches take
/// consecutive elements and may span two epochs. Element p of epoch e is fully determined by (seed, stream kind,
/// e, p): the epoch's order comes from its own Philox stream and each element's window and augmentation from another,
/// so contents never depend on timing or threads. Labelled and unlabelled streams with one seed draw from unrelated
/// streams.
///
/// Images are decoded once and cached. An error while preparing a batch (e.g. a file that can no longer be read) is
/// thrown by `next()`, and by every later call. `close()` (or releasing the loader) stops the thread.
public final class BatchLoader {
    public let options: LoaderOptions
    private let producer: Producer
    private var failure: Error?
    private var closed = false

    /// A loader over `indices` of `dataset` (e.g. `DataSplit.Indices.labelled`).
    public init(dataset: Dataset, indices: [Int], options: LoaderOptions) throws {
        func invalid(_ message: String) -> EngineError { .invalidValue(op: "BatchLoader", message: message) }
        guard options.batchSize > 0 else { throw invalid("batch size \(options.batchSize) must be positive") }
        guard options.prefetch > 0 else { throw invalid("prefetch \(options.prefetch) must be positive") }
        guard options.cropAlignment > 0 else {
            throw invalid("crop alignment \(options.cropAlignment) must be positive")
        }
        if let (index, count) = options.shard, !(0..<count).contains(index) {
            throw invalid("shard \(index) of \(count) does not exist")
        }
        guard options.skippedBatches >= 0 else { throw invalid("\(options.skippedBatches) skipped batches; must not be negative") }
        if let epochs = options.epochs, epochs <= 0 { throw invalid("\(epochs) epochs; use nil for an endless stream") }
        switch options.patches {
        case let .randomCrops(size, perImage):
            guard size > 0, perImage > 0 else { throw invalid("random crops of size \(size), \(perImage) per image: both must be positive") }
        case let .grid(size, stride):
            guard size > 0, stride > 0, stride <= size else {
                throw invalid("grid of size \(size) and stride \(stride): both must be positive with stride ≤ size")
            }
        }
        guard !indices.isEmpty else { throw invalid("no images") }
        if let bad = indices.first(where: { !dataset.items.indices.contains($0) }) {
            throw invalid("index \(bad) outside 0..<\(dataset.count) in \(dataset.root)")
        }
        if options.labelled {
            let unlabelled = indices.filter { dataset.items[$0].maskPath == nil }.map { dataset.items[$0].name }
            guard unlabelled.isEmpty else {
                throw invalid("a labelled stream needs masks; \(unlabelled.count) image\(unlabelled.count == 1 ? " has" : "s have") none: " + unlabelled.prefix(20).joined(separator: ", "))
            }
        }
        self.options = options
        producer = Producer(dataset: dataset, indices: indices, options: options)
        let thread = Thread { [producer] in producer.run() }
        thread.name = "HistoData.BatchLoader"
        thread.start()
    }

    deinit { close() }

    /// The next batch; nil after the last epoch of a finite stream, or after `close()`.
    public func next() throws -> Batch? {
        if let failure { throw failure }
        guard !closed, let result = producer.take() else { return nil }
        switch result {
        case let .failure(error):
            failure = error
            throw error
        case let .success(prepared):
            let s = options.patches.size, n = prepared.items.count
            return Batch(images: Tensor(prepared.images, shape: [n, 3, s, s]),
                         strongImages: prepared.strongImages.map { Tensor($0, shape: [n, 3, s, s]) },
                         labels: prepared.labels.map { Tensor($0, shape: [n, s, s]) }, items: prepared.items)
        }
    }

    /// Stops the background thread and waits for it to finish (at most the batch it is preparing). Idempotent.
    public func close() {
        guard !closed else { return }
        closed = true
        producer.cancel()
    }
}

/// A batch as host arrays (tensors are made on the consumer's thread).
private struct PreparedBatch: Sendable {
    let images: [Float]
    let strongImages: [Float]?
    let labels: [Float]?
    let items: [BatchItem]
}

/// The background side: the element sequence, the bounded queue and the image cache.
private final class Producer: @unchecked Sendable {
    private let options: LoaderOptions
    /// The windows of one epoch before shuffling: dataset index and, for a grid, the window's origin.
    private let windows: [(index: Int, y: Int, x: Int)]
    private let cache: SourceCache
    /// Separates the streams of labelled and unlabelled loaders that share a seed.
    private let kind: UInt64
    private var orders: [Int: [Int]] = [:]

    private let condition = NSCondition()
    private var queue: [Result<PreparedBatch, Error>] = []
    private var finished = false
    private var cancelled = false
    private let stopped = DispatchSemaphore(value: 0)

    init(dataset: Dataset, indices: [Int], options: LoaderOptions) {
        self.options = options
        kind = options.labelled ? 1 : 2
        switch options.patches {
        case let .randomCrops(_, perImage):
            windows = indices.flatMap { index in repeatElement((index: index, y: 0, x: 0), count: perImage) }
        case let .grid(size, stride):
            windows = indices.flatMap { index in
                let item = dataset.items[index]
                let rows = Planes.patchOrigins(length: item.height, size: size, stride: stride)
                let columns = Planes.patchOrigins(length: item.width, size: size, stride: stride)
                return rows.flatMap { y in columns.map { x in (index: index, y: y, x: x) } }
            }
        }
        cache = SourceCache(dataset: dataset, keepMasks: options.labelled, limit: options.cacheBytes)
    }

    func run() {
        let total = options.epochs.map { $0 * windows.count }
        var start = options.skippedBatches * options.batchSize
        while start < total ?? .max {
            condition.lock()
            while queue.count >= options.prefetch && !cancelled { condition.wait() }
            let stop = cancelled
            condition.unlock()
            if stop { break }
            let end = min(start + options.batchSize, total ?? .max)
            let result = Result { try prepare(shard(of: start..<end)) }
            condition.lock()
            queue.append(result)
            condition.broadcast()
            condition.unlock()
            if case .failure = result { break }
            start = end
        }
        condition.lock()
        finished = true
        condition.broadcast()
        condition.unlock()
        stopped.signal()
    }

    /// This loader's part of the stream elements `batch`.
    private func shard(of batch: Range<Int>) -> Range<Int> {
        guard let (index, count) = options.shard else { return batch }
        return batch.lowerBound + batch.count * index / count ..< batch.lowerBound + batch.count * (index + 1) / count
    }

    /// The next result, waiting for it; nil when the producer has finished and the queue is empty.
    func take() -> Result<PreparedBatch, Error>? {
        condition.lock()
        defer { condition.unlock() }
        while queue.isEmpty && !finished { condition.wait() }
        guard !queue.isEmpty else { return nil }
        condition.broadcast()
        return queue.removeFirst()
    }

    func cancel() {
        condition.lock()
        cancelled = true
        queue.removeAll()
        condition.broadcast()
        condition.unlock()
        stopped.wait()
    }

    /// Elements `range` of the stream; elements are prepared in parallel, each from its own random stream.
    private func prepare(_ range: Range<Int>) throws -> PreparedBatch {
        let n = range.count, size = options.patches.size
        let imageCount = 3 * size * size, labelCount = size * size
        let strong = options.views != .weak, both = options.views == .weakAndStrong
        let pixelRange = options.range
        let orders = (range.lowerBound / windows.count...(range.upperBound - 1) / windows.count).map { ($0, order(epoch: $0)) }
        var images = [Float](repeating: 0, count: n * imageCount)
        var strongImages = [Float](repeating: 0, count: both ? n * imageCount : 0)
        var labels = [Float](repeating: 0, count: options.labelled ? n * labelCount : 0)
        var items = [BatchItem?](repeating: nil, count: n)
        var errors = [Error?](repeating: nil, count: n)
        images.withUnsafeMutableBufferPointer { images in
            strongImages.withUnsafeMutableBufferPointer { strongImages in
                labels.withUnsafeMutableBufferPointer { labels in
                    items.withUnsafeMutableBufferPointer { items in
                        errors.withUnsafeMutableBufferPointer { errors in
                            DispatchQueue.concurrentPerform(iterations: n) { k in
                                do {
                                    let element = range.lowerBound + k
                                    let epoch = element / windows.count, position = element % windows.count
                                    let order = orders.first { $0.0 == epoch }!.1
                                    let (item, views) = try self.element(epoch: epoch, position: position, window: windows[order[position]],
                                                                         strong: strong)
                                    items[k] = item
                                    let shown = options.views == .strong ? views.strong! : views.weak
                                    Self.copy(shown.values, to: images, at: k * imageCount, range: pixelRange)
                                    if both, let second = views.strong {
                                        Self.copy(second.values, to: strongImages, at: k * imageCount,
                                                  range: pixelRange)
                                    }
                                    if let mask = views.mask {
                                        for i in 0..<labelCount { labels[k * labelCount + i] = mask.values[i] }
                                    }
                                } catch {
                                    errors[k] = error
                                }
                            }
                        }
                    }
                }
            }
        }
        if let error = errors.lazy.compactMap({ $0 }).first { throw error }
        return PreparedBatch(images: images, strongImages: both ? strongImages : nil,
                             labels: options.labelled ? labels : nil, items: items.map { $0! })
    }

    /// Copies image values `[3, S, S]` in [0, 1] into a batch, mapped to `range` (for −1…1, 2x − 1 equals
    /// colorPlanes' x/(max/2) − 1).
    private static func copy(_ values: [Float], to batch: UnsafeMutableBufferPointer<Float>, at offset: Int,
                             range: PixelRange) {
        switch range {
        case .minusOneToOne: for i in values.indices { batch[offset + i] = values[i] * 2 - 1 }
        case .zeroToOne: for i in values.indices { batch[offset + i] = values[i] }
        case .standardized:
            let plane = values.count / 3
            for i in values.indices { batch[offset + i] = range.standardized(values[i], channel: i / plane)! }
        }
    }

    /// One element: its window placed (random crops) and augmented, from the element's own stream.
    private func element(epoch: Int, position: Int, window: (index: Int, y: Int, x: Int), strong: Bool) throws -> (BatchItem, AugmentedViews) {
        let sample = try cache.sample(window.index)
        let size = options.patches.size
        var stream = PhiloxStream(seed: options.seed, path: [kind, 1, UInt64(epoch), UInt64(position)])
        // Two draws always, so the augmentation's stream positions do not depend on the patch mode.
        let a = options.cropAlignment
        let y = stream.integer(0, max(1, (sample.image.height - size) / a + 1)) * a
        let x = stream.integer(0, max(1, (sample.image.width - size) / a + 1)) * a
        let origin: (y: Int, x: Int)
        if case .grid = options.patches {
            origin = (window.y, window.x)
        } else {
            origin = (sample.image.height >= size ? y : (sample.image.height - size) / 2,
                      sample.image.width >= size ? x : (sample.image.width - size) / 2)
        }
        let parameters = options.augmentation.parameters(drawingFrom: &stream)
        let views = try sample.augmented(window: .window(y: origin.y, x: origin.x, height: size, width: size),
                                         parameters: parameters, strong: strong)
        let item = BatchItem(name: sample.name, datasetIndex: window.index, epoch: epoch, position: position, y: origin.y, x: origin.x)
        return (item, views)
    }

    /// The epoch's order of `windows`, remembered until two epochs later. Called by the producer thread alone.
    private func order(epoch: Int) -> [Int] {
        if let order = orders[epoch] { return order }
        var stream = PhiloxStream(seed: options.seed, path: [kind, 0, UInt64(epoch)])
        let order = options.shuffle ? stream.permutation(windows.count) : Array(windows.indices)
        orders = orders.filter { $0.key >= epoch - 1 }
        orders[epoch] = order
        return order
    }
}

/// Decoded samples by dataset index, each decoded once (by the first thread to ask), dropped least recently used
/// beyond a byte budget.
private final class SourceCache: @unchecked Sendable {
    private final class Entry {
        let lock = NSLock()
        var sample: Sample?
        var bytes = 0
        var lastUse = 0
    }

    private let dataset: Dataset
    private let keepMasks: Bool
    private let limit: Int
    private let lock = NSLock()
    private var entries: [Int: Entry] = [:]
    private var bytes = 0
    private var clock = 0

    init(dataset: Dataset, keepMasks: Bool, limit: Int) {
        self.dataset = dataset
        self.keepMasks = keepMasks
        self.limit = limit
    }

    func sample(_ index: Int) throws -> Sample {
        lock.lock()
        let entry = entries[index] ?? Entry()
        entries[index] = entry
        clock += 1
        entry.lastUse = clock
        lock.unlock()

        entry.lock.lock()
        defer { entry.lock.unlock() }
        if let sample = entry.sample { return sample }
        let decoded = try dataset.sample(at: index)
        // Batches carry no instance maps, and unlabelled streams no masks: they are not kept.
        let sample = Sample(name: decoded.name, image: decoded.image, mask: keepMasks ? decoded.mask : nil, instances: nil)
        entry.sample = sample

        lock.lock()
        entry.bytes = sample.image.samples.count * 2 + (sample.mask?.values.count ?? 0) * 4
        bytes += entry.bytes
        while bytes > limit, let (oldest, victim) = entries.filter({ $0.value.bytes > 0 && $0.value !== entry })
            .min(by: { $0.value.lastUse < $1.value.lastUse }) {
            entries[oldest] = nil
            bytes -= victim.bytes
        }
        lock.unlock()
        return sample
    }
}

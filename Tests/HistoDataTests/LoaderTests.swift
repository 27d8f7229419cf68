import Foundation
import HistoCore
import HistoData
import XCTest

final class LoaderTests: XCTestCase {
    private func options(_ batchSize: Int, _ patches: PatchSampling, labelled: Bool = true, epochs: Int? = nil,
                         seed: UInt64 = 3, views: BatchViews = .weak) -> LoaderOptions {
        var options = LoaderOptions(batchSize: batchSize, patches: patches, labelled: labelled)
        options.epochs = epochs
        options.seed = seed
        options.views = views
        return options
    }

    private func drain(_ loader: BatchLoader, limit: Int = .max) throws -> [Batch] {
        var batches: [Batch] = []
        while batches.count < limit, let batch = try loader.next() { batches.append(batch) }
        return batches
    }

    /// With no augmentation and no shuffling, a grid stream is the images' `patches(size:stride:)` in order, exactly.
    func testGridWithoutAugmentationIsThePatchGrid() throws {
        let dataset = try Support.syntheticDataset(self, count: 3, width: 40, height: 30)
        var options = options(4, .grid(size: 16, stride: 12), epochs: 1)
        options.augmentation = .none
        options.shuffle = false
        let loader = try BatchLoader(dataset: dataset, indices: [2, 0], options: options)
        let batches = try drain(loader)
        var expected: [(Patch, Patch, String)] = []
        for index in [2, 0] {
            let sample = try dataset.sample(at: index)
            let images = try sample.image.colorPlanes().patches(size: 16, stride: 12, padding: .reflect)
            let masks = try XCTUnwrap(sample.mask).patches(size: 16, stride: 12, padding: .reflect)
            expected += zip(images, masks).map { ($0, $1, sample.name) }
        }
        XCTAssertEqual(expected.count, 2 * 3 * 3)
        XCTAssertEqual(batches.map(\.count), [4, 4, 4, 4, 2], "the last batch of a finite stream is partial")
        let items = batches.flatMap(\.items)
        XCTAssertEqual(items.map(\.name), expected.map(\.2))
        XCTAssertEqual(items.map { [$0.y, $0.x] }, expected.map { [$0.0.y, $0.0.x] })
        XCTAssertEqual(items.map(\.position), Array(0..<18))
        var images: [Float] = [], labels: [Float] = []
        for batch in batches {
            XCTAssertEqual(batch.images.shape, [batch.count, 3, 16, 16])
            XCTAssertEqual(batch.labels?.shape, [batch.count, 16, 16])
            XCTAssertNil(batch.strongImages)
            images += try batch.images.toArray()
            labels += try XCTUnwrap(batch.labels).toArray()
        }
        XCTAssertEqual(images, expected.flatMap(\.0.planes.values), "pixel range −1…1 like colorPlanes()")
        XCTAssertEqual(labels, expected.flatMap(\.1.planes.values))
        XCTAssertNil(try loader.next())
        XCTAssertNil(try loader.next())
    }

    /// Each epoch is a fresh order of every window; the content of element (epoch, position) depends on the seed only,
    /// not on prefetching or on how fast the consumer takes batches.
    func testShufflingPerEpochAndDeterminismRegardlessOfTiming() throws {
        let dataset = try Support.syntheticDataset(self, count: 5, width: 40, height: 30)
        var fast = options(3, .randomCrops(size: 12, perImage: 2), views: .weakAndStrong)
        fast.prefetch = 4
        var slow = fast
        slow.prefetch = 1
        let a = try BatchLoader(dataset: dataset, indices: [0, 1, 2, 3, 4], options: fast)
        let b = try BatchLoader(dataset: dataset, indices: [0, 1, 2, 3, 4], options: slow)
        let first = try drain(a, limit: 12)
        var second: [Batch] = []
        for k in 0..<12 {
            if k % 3 == 0 { Thread.sleep(forTimeInterval: 0.02) }
            second.append(try XCTUnwrap(try b.next()))
        }
        for (x, y) in zip(first, second) {
            XCTAssertEqual(x.items, y.items)
            XCTAssertEqual(try x.images.toArray(), try y.images.toArray())
            XCTAssertEqual(try x.strongImages?.toArray(), try y.strongImages?.toArray())
            XCTAssertEqual(try x.labels?.toArray(), try y.labels?.toArray())
        }
        // 10 windows per epoch; batches of 3 span epochs.
        let items = first.flatMap(\.items)
        XCTAssertEqual(items.map(\.epoch), (0..<36).map { $0 / 10 })
        XCTAssertEqual(items.map(\.position), (0..<36).map { $0 % 10 })
        var orders: [[String]] = []
        for epoch in 0..<3 {
            let names = items.filter { $0.epoch == epoch }.map(\.name)
            XCTAssertEqual(names.sorted(), (0..<5).flatMap { i in [String(format: "img%02d", i), String(format: "img%02d", i)] })
            orders.append(names)
        }
        XCTAssertEqual(Set(orders).count, 3, "each epoch has its own order")

        // A resumed stream (batches skipped, not prepared) continues with the batches an uninterrupted one gives.
        var resumed = fast
        resumed.skippedBatches = 7
        let continued = try BatchLoader(dataset: dataset, indices: [0, 1, 2, 3, 4], options: resumed)
        for x in first[7...] {
            let y = try XCTUnwrap(try continued.next())
            XCTAssertEqual(x.items, y.items)
            XCTAssertEqual(try x.images.toArray(), try y.images.toArray())
            XCTAssertEqual(try x.strongImages?.toArray(), try y.strongImages?.toArray())
        }
        XCTAssertTrue(items.allSatisfy { (0...(30 - 12)).contains($0.y) && (0...(40 - 12)).contains($0.x) })
        XCTAssertGreaterThan(Set(items.map { [$0.y, $0.x] }).count, 25, "random windows")

        let weak = try first[0].images.toArray(), strong = try XCTUnwrap(first[0].strongImages).toArray()
        XCTAssertNotEqual(weak, strong)
        XCTAssertTrue((weak + strong).allSatisfy { (-1...1).contains($0) })
        XCTAssertTrue(try XCTUnwrap(first[0].labels).toArray().allSatisfy { $0 == 0 || $0 == 1 })

        // Another seed, or the unlabelled stream with the same seed, draws differently.
        var reseeded = fast
        reseeded.seed = 4
        let c = try BatchLoader(dataset: dataset, indices: [0, 1, 2, 3, 4], options: reseeded)
        XCTAssertNotEqual(try drain(c, limit: 4).flatMap(\.items), Array(items.prefix(12)))
        var unlabelled = fast
        unlabelled.labelled = false
        let d = try BatchLoader(dataset: dataset, indices: [0, 1, 2, 3, 4], options: unlabelled)
        let other = try drain(d, limit: 4)
        XCTAssertNil(other[0].labels)
        XCTAssertNotEqual(other.flatMap(\.items).map(\.name), items.prefix(12).map(\.name))
    }

    /// Labels stay aligned with the augmented images: the masks are a function of the images (red above 127), and the
    /// weak view with its labels keeps that relation wherever the geometry maps pixels to pixels.
    func testLabelsStayAlignedWithAugmentedImages() throws {
        let dataset = try Support.syntheticDataset(self, count: 2, width: 40, height: 30)
        var options = options(8, .randomCrops(size: 16, perImage: 4), epochs: 1)
        options.augmentation.maxRotationDegrees = 0
        options.augmentation.scaleRange = 1...1
        let batches = try drain(try BatchLoader(dataset: dataset, indices: [0, 1], options: options))
        XCTAssertEqual(batches.map(\.count), [8])
        let images = try batches[0].images.toArray(), labels = try XCTUnwrap(batches[0].labels).toArray()
        for n in 0..<8 {
            for p in 0..<256 {
                let red = (images[n * 768 + p] + 1) * 127.5
                XCTAssertEqual(labels[n * 256 + p], red.rounded() > 127 ? 1 : 0, "element \(n) pixel \(p)")
            }
        }
    }

    /// The dtseg preset draws from the loader's seeded streams: one seed gives the same batches, another seed others;
    /// labels stay class ids through its zoom.
    func testDTSegAugmentationIsReproducible() throws {
        let dataset = try Support.syntheticDataset(self, count: 2, width: 40, height: 30)
        var options = options(8, .randomCrops(size: 16, perImage: 4), epochs: 1)
        options.augmentation = .dtseg
        func stream(seed: UInt64) throws -> (images: [Float], labels: [Float]) {
            options.seed = seed
            let batches = try drain(try BatchLoader(dataset: dataset, indices: [0, 1], options: options))
            return (try batches[0].images.toArray(), try XCTUnwrap(batches[0].labels).toArray())
        }
        let (first, again, other) = (try stream(seed: 3), try stream(seed: 3), try stream(seed: 4))
        XCTAssertEqual(first.images, again.images)
        XCTAssertEqual(first.labels, again.labels)
        XCTAssertNotEqual(first.images, other.images)
        XCTAssertTrue(first.labels.allSatisfy { $0 == 0 || $0 == 1 })
    }

    func testReadErrorsReachTheConsumerNamingTheFile() throws {
        let dataset = try Support.syntheticDataset(self, count: 3, width: 20, height: 20)
        let broken = dataset.items[1].imagePath
        try Data("not a png".utf8).write(to: URL(fileURLWithPath: broken))
        let loader = try BatchLoader(dataset: dataset, indices: [0, 1, 2], options: options(2, .randomCrops(size: 8, perImage: 1)))
        var thrown: (path: String, message: String)?
        for _ in 0..<3 {
            do { _ = try loader.next() } catch let EngineError.file(path, message) {
                thrown = (path, message)
                break
            }
        }
        XCTAssertEqual(thrown?.path, broken)
        XCTAssertEqual(Support.fileError { _ = try loader.next() }?.path, broken, "later calls throw the same error")
        loader.close()
    }

    /// close() returns while the producer waits on a full queue, and releasing a loader stops it too.
    func testCleanShutdown() throws {
        let dataset = try Support.syntheticDataset(self, count: 2, width: 20, height: 20)
        var options = options(2, .randomCrops(size: 8, perImage: 1))
        options.prefetch = 1
        let loader = try BatchLoader(dataset: dataset, indices: [0, 1], options: options)
        XCTAssertNotNil(try loader.next())
        Thread.sleep(forTimeInterval: 0.05) // the producer fills the queue and waits
        let start = Date()
        loader.close()
        loader.close()
        XCTAssertLessThan(Date().timeIntervalSince(start), 1)
        XCTAssertNil(try loader.next())
        for _ in 0..<20 { _ = try BatchLoader(dataset: dataset, indices: [0, 1], options: options).next() }
    }

    func testInvalidOptionsAreErrors() throws {
        let dataset = try Support.syntheticDataset(self, count: 2, unmasked: 2, width: 20, height: 20)
        let good = options(2, .randomCrops(size: 8, perImage: 1))
        func message(_ indices: [Int], _ change: (inout LoaderOptions) -> Void) -> String {
            var options = good
            change(&options)
            do { _ = try BatchLoader(dataset: dataset, indices: indices, options: options) } catch { return "\(error)" }
            return "no error"
        }
        XCTAssertTrue(message([0, 2, 3]) { _ in }.contains("2 images have none: raw00, raw01"))
        XCTAssertEqual(message([0, 2, 3]) { $0.labelled = false }, "no error")
        XCTAssertTrue(message([0, 9]) { _ in }.contains("index 9 outside 0..<4"))
        XCTAssertTrue(message([]) { _ in }.contains("no images"))
        XCTAssertTrue(message([0]) { $0.batchSize = 0 }.contains("batch size 0"))
        XCTAssertTrue(message([0]) { $0.prefetch = 0 }.contains("prefetch 0"))
        XCTAssertTrue(message([0]) { $0.epochs = 0 }.contains("0 epochs"))
        XCTAssertTrue(message([0]) { $0.patches = .grid(size: 8, stride: 9) }.contains("stride ≤ size"))
        XCTAssertTrue(message([0]) { $0.patches = .randomCrops(size: 8, perImage: 0) }.contains("both must be positive"))
        XCTAssertTrue(message([0]) { $0.cropAlignment = 0 }.contains("crop alignment 0 must be positive"))
    }

    /// Aligned random crops start at multiples of the alignment (PathSegDiff's tiles recur) and still reach every
    /// aligned origin, up to the last one that fits.
    func testAlignedRandomCropsStartOnTheGrid() throws {
        let dataset = try Support.syntheticDataset(self, count: 2, width: 61, height: 45)
        var options = options(8, .randomCrops(size: 16, perImage: 40), epochs: 3)
        options.cropAlignment = 8
        let items = try drain(try BatchLoader(dataset: dataset, indices: [0, 1], options: options)).flatMap(\.items)
        XCTAssertEqual(items.count, 3 * 2 * 40)
        XCTAssertEqual(Set(items.map(\.y)), [0, 8, 16, 24], "45 − 16 = 29: origins 0…24")
        XCTAssertEqual(Set(items.map(\.x)), [0, 8, 16, 24, 32, 40], "61 − 16 = 45: origins 0…40")
    }

    /// MoNuSeg through a split: 256² patches of the right shapes, and each stream only sees its role's images.
    func testRealMoNuSegStreamsFollowTheSplit() throws {
        guard let data = Support.realData else {
            throw XCTSkip("real data not found: set HISTODIFF_DATA or provide <package root>/../shared/data")
        }
        let dataset = try Dataset.open(path: data.appendingPathComponent("monuseg-train").path, requireMasks: true)
        let split = try DataSplit.make(dataset: dataset, labelRatio: try Ratio("1/8"), validationRatio: try Ratio("20%"), seed: 2)
        let indices = try split.indices(in: dataset)
        let labelled = try BatchLoader(dataset: dataset, indices: indices.labelled,
                                       options: options(4, .randomCrops(size: 256, perImage: 4), views: .weakAndStrong))
        var unlabelledOptions = options(4, .randomCrops(size: 256, perImage: 4), labelled: false, views: .weakAndStrong)
        unlabelledOptions.prefetch = 2
        let unlabelled = try BatchLoader(dataset: dataset, indices: indices.unlabelled, options: unlabelledOptions)
        for _ in 0..<3 {
            let batch = try XCTUnwrap(try labelled.next())
            XCTAssertEqual(batch.images.shape, [4, 3, 256, 256])
            XCTAssertEqual(batch.strongImages?.shape, [4, 3, 256, 256])
            XCTAssertEqual(batch.labels?.shape, [4, 256, 256])
            XCTAssertTrue(Set(batch.items.map(\.name)).isSubset(of: split.labelled))
            let foreground = try XCTUnwrap(batch.labels).toArray().reduce(0, +) / Float(4 * 256 * 256)
            XCTAssertTrue((0.02...0.6).contains(foreground), "foreground fraction \(foreground)")
            let other = try XCTUnwrap(try unlabelled.next())
            XCTAssertNil(other.labels)
            XCTAssertTrue(Set(other.items.map(\.name)).isSubset(of: split.unlabelled))
        }
    }
}

final class LoaderBenchmarkTests: XCTestCase {
    func testPatchesPerSecondRunsTheFullPipeline() throws {
        let dataset = try Support.syntheticDataset(self, count: 3, width: 40, height: 30)
        let rate = try LoaderBenchmark.patchesPerSecond(dataset: dataset, patchSize: 16, seconds: 0.2)
        XCTAssertGreaterThan(rate, 0)
        XCTAssertTrue(rate.isFinite)
    }
}

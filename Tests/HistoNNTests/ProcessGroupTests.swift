import Foundation
import XCTest
import HistoCore
import HistoData
import HistoNN

/// Rank 0 of two, in one process: the other rank's contributions are `other`, consumed in call order.
final class TwoRankEmulation: ProcessGroup {
    var rank: Int { 0 }
    var size: Int { 2 }
    let other: [Float]
    private(set) var bucketSizes: [Int] = []

    init(other: [Float]) { self.other = other }

    func sumInPlace(_ values: UnsafeMutableBufferPointer<Float>) throws {
        let start = bucketSizes.reduce(0, +)
        for i in values.indices { values[i] += other[start + i] }
        bucketSizes.append(values.count)
    }

    func agree(on value: UInt64) throws -> Bool { true }
}

/// The pieces of data-parallel training that need no second process: bucketed averaging, sharded draws and
/// batches, the start-up checks. `DataParallelTests` runs the whole on two MPI ranks.
final class ProcessGroupTests: XCTestCase {
    func testGradientsAreAveragedInBucketsWithTheValuesInTheLast() throws {
        let parameters = [3, 5, 2].map { Parameter([Float](repeating: 0, count: $0), shape: [$0]) }
        var gradients = Gradients()
        for (i, p) in parameters.enumerated() {
            try gradients.set((0..<p.count).map { Float(10 * i + $0) }, for: p)
        }
        let group = TwoRankEmulation(other: (0..<11).map { Float(100 + $0) })
        var values: [Float] = [1]
        // Six floats a bucket: 3 | 5 (larger than what is left) | 2 + the value.
        try gradients.average(across: group, with: &values, bucketBytes: 6 * MemoryLayout<Float>.stride)
        XCTAssertEqual(group.bucketSizes, [3, 5, 3])
        XCTAssertEqual(gradients[parameters[0]], [50, 51, 52])
        XCTAssertEqual(gradients[parameters[1]], [56.5, 57.5, 58.5, 59.5, 60.5])
        XCTAssertEqual(gradients[parameters[2]], [64, 65])
        XCTAssertEqual(values, [55.5])
    }

    func testShardedDrawsAreTheRowsOfTheWholeBatchsDraw() throws {
        let whole = try RandomGenerator(seed: 7, offset: 4).normal([6, 3]).toArray()
        var shards: [Float] = []
        var offsets: [UInt64] = []
        for index in 0..<3 {
            let generator = RandomGenerator(seed: 7, offset: 4)
            generator.batchShard = (index, 3)
            shards += try generator.normal([2, 3]).toArray()
            offsets.append(generator.offset)
        }
        XCTAssertEqual(bits(shards), bits(whole))
        XCTAssertEqual(offsets, [UInt64](repeating: 4 + 20, count: 3), "every shard advances as the whole draw")
    }

    func testShardedLoadersYieldTheSlicesOfTheWholeBatch() throws {
        let root = try temporaryDirectory()
        try SyntheticHistology.makeDataset(at: root + "/data", count: 3, size: 48, seed: 1)
        let dataset = try Dataset.open(path: root + "/data")
        func batch(_ shard: (index: Int, count: Int)?) throws -> Batch {
            var options = LoaderOptions(batchSize: 4, patches: .randomCrops(size: 32, perImage: 2), labelled: true)
            options.seed = 5
            options.skippedBatches = 1
            options.shard = shard
            let loader = try BatchLoader(dataset: dataset, indices: [0, 1, 2], options: options)
            defer { loader.close() }
            return try XCTUnwrap(loader.next())
        }
        let whole = try batch(nil), first = try batch((0, 2)), second = try batch((1, 2))
        XCTAssertEqual(first.items + second.items, whole.items)
        XCTAssertEqual(bits(try first.images.toArray() + second.images.toArray()), bits(try whole.images.toArray()))
        XCTAssertEqual(try first.labels!.toArray() + second.labels!.toArray(), try whole.labels!.toArray())
    }

    func testUnevenBatchesAndDifferentModelsAreRefused() throws {
        XCTAssertThrowsError(try TwoRankEmulation(other: []).checkShards(ofBatch: 5, option: "--batch")) {
            XCTAssertTrue("\($0)".contains("--batch 5 is not divisible by the 2 ranks; give a multiple of 2"), "\($0)")
        }
        func model(seed: UInt64) -> Linear { Linear(4, 2, generator: RandomGenerator(seed: seed)) }
        let same = try model(seed: 1).fingerprint(settings: ["--lr": "0.1"])
        XCTAssertEqual(same, try model(seed: 1).fingerprint(settings: ["--lr": "0.1"]))
        XCTAssertNotEqual(same, try model(seed: 1).fingerprint(settings: ["--lr": "0.2"]))
        XCTAssertNotEqual(same, try model(seed: 2).fingerprint(settings: ["--lr": "0.1"]))
    }
}

import Foundation
import XCTest
import HistoCore
import HistoNN
@testable import HistoDiffusion

private func temporaryDirectory(_ name: String = #function) -> String {
    let safe = name.filter { $0.isLetter || $0.isNumber }
    return FileManager.default.temporaryDirectory.appendingPathComponent("histodiffusion-\(safe)-\(UUID().uuidString)").path
}

/// Random weights everywhere (a fresh guided UNet's zero-initialised output convolutions hide the timestep).
private func randomize(_ model: Module, _ g: RandomGenerator) {
    for (_, p) in model.parameters() { p.value = try! g.normal(p.shape, std: 0.1).materialized() }
}

final class FeatureExtractionTests: XCTestCase {
    /// The CPU guided preset keeps the reference's 4 levels × 2 ResBlocks indexing; on 32² inputs (levels at 32,
    /// 16, 8, 4 px) DTSeg's blocks are output_blocks.7 (level 1, 16²), .8 (level 1 ending with the upsample, 32²)
    /// and .9 (level 0, 32²), all 32 channels.
    func testGuidedBlockShapesAndTimestepConcatenation() throws {
        let g = RandomGenerator(seed: 1)
        let model = try GuidedUNet(.cpu, generator: g)
        randomize(model, g)
        let images = try g.normal([2, 3, 32, 32]).materialized()
        let blocks = ["output_blocks.7", "output_blocks.8", "output_blocks.9"]
        XCTAssertEqual(model.featureShapes(blocks + ["middle_block", "output_blocks.2"], for: images), [
            "output_blocks.7": [2, 32, 16, 16], "output_blocks.8": [2, 32, 32, 32], "output_blocks.9": [2, 32, 32, 32],
            "middle_block": [2, 32, 4, 4], "output_blocks.2": [2, 32, 8, 8],
        ])
        let raw = try FeatureExtractor(model: model, blocks: blocks, timesteps: [50, 150, 250])(images)
        XCTAssertEqual(raw.maps["output_blocks.7"]?.map(\.shape), Array(repeating: [2, 32, 16, 16], count: 3))
        XCTAssertEqual(raw.block("output_blocks.9").shape, [2, 96, 32, 32])

        let upsampled = try FeatureExtractor(model: model, blocks: blocks, timesteps: [50, 150, 250], outputSize: [64, 64])(images)
        for block in blocks { XCTAssertEqual(upsampled.block(block).shape, [2, 96, 64, 64], block) }
        XCTAssertEqual(upsampled.stacked().shape, [2, 288, 64, 64])
        // The resize is bilinear with align_corners false, timestep by timestep.
        let expected = try raw.maps["output_blocks.7"]![1].interpolateBilinear(size: [64, 64], alignCorners: false).toArray()
        XCTAssertEqual(try upsampled.maps["output_blocks.7"]![1].toArray(), expected)
        // Clean input: only the timestep embedding varies, and it changes the maps.
        XCTAssertTrue(try raw.maps["output_blocks.9"]![0].toArray() != raw.maps["output_blocks.9"]![2].toArray())
    }

    /// A recorded block is what the forward pass computes: `out` equals the prediction.
    func testRecordedOutputIsThePrediction() throws {
        let g = RandomGenerator(seed: 2)
        let model = try GuidedUNet(.bench828k, generator: g)
        randomize(model, g)
        model.train(false)
        let images = try g.normal([1, 3, 16, 16]).materialized()
        let features = try FeatureExtractor(model: model, blocks: ["out"], timesteps: [7])(images)
        let prediction = try model(images, timesteps: Tensor([7], shape: [1]), context: nil).toArray()
        XCTAssertEqual(try features.block("out").toArray(), prediction)
    }

    /// Noised input: ᾱ ≡ 1 gives the clean features; a fixed seed gives the same features on every call and for an
    /// image alone or in a batch.
    func testNoisedInput() throws {
        let g = RandomGenerator(seed: 3)
        let model = try AttentionUNet(.cpu, generator: g)
        let images = try g.normal([2, 3, 16, 16]).materialized()
        let blocks = ["downs.1.2", "mid_block2", "ups.1.3"]
        let clean = try FeatureExtractor(model: model, blocks: blocks, timesteps: [50])(images)
        let unit = try FeatureExtractor(model: model, blocks: blocks, timesteps: [50], input: .noised(seed: 5, alphaBar: { _ in 1 }))(images)
        XCTAssertEqual(try unit.stacked(for: "mid_block2"), try clean.stacked(for: "mid_block2"))

        let noised = try FeatureExtractor(model: model, blocks: blocks, timesteps: [50, 250],
                                          input: .noised(seed: 5, alphaBar: { 1 - Double($0) / 1000 }))
        let first = try noised(images), again = try noised(images)
        let single = try noised(images.slice(axis: 0, start: 1, end: 2))
        for block in blocks {
            let batch = try first.block(block).toArray()
            XCTAssertEqual(batch, try again.block(block).toArray(), block)
            // Alone or in a batch, the convolutions may split their GEMMs differently over the cores: equal to
            // rounding, not bit for bit (the same noise either way, which a wrong draw would break by far more).
            let alone = try single.block(block).toArray()
            let largest = zip(batch[(batch.count / 2)...], alone).map { abs($0 - $1) / max(1, abs($1)) }.max() ?? 0
            XCTAssertLessThan(largest, 1e-5, block)
        }
        XCTAssertTrue(try first.maps["mid_block2"]![0].toArray() != clean.maps["mid_block2"]![0].toArray())
        XCTAssertEqual(first.block("downs.1.2").shape, [2, 64, 8, 8])
        XCTAssertEqual(first.block("ups.1.3").shape, [2, 32, 16, 16])
    }

    /// The conditional UNet's blocks, with the conditioner passed as the context.
    func testConditionalUNetFeatures() throws {
        let g = RandomGenerator(seed: 4)
        let model = try ConditionalUNet(.cpuMask(), generator: g)
        let masks = try g.normal([1, 2, 32, 32]).materialized(), images = try g.normal([1, 3, 32, 32]).materialized()
        let features = try FeatureExtractor(model: model, blocks: ["downs.3.0", "ups.1.0", "final_conv"], timesteps: [10])(masks, context: images)
        XCTAssertEqual(features.block("downs.3.0").shape, [1, 128, 2, 2])
        XCTAssertEqual(features.block("ups.1.0").shape, [1, 32, 8, 8])
        XCTAssertEqual(features.block("final_conv").shape, [1, 2, 32, 32])
    }

    /// Cached features are read back instead of recomputed while the signature matches; a new tag recomputes.
    func testCacheReusesMatchingFiles() throws {
        let g = RandomGenerator(seed: 6)
        let model = try GuidedUNet(.bench828k, generator: g)
        randomize(model, g)
        let images = try g.normal([3, 3, 16, 16]).materialized()
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let extract = try FeatureExtractor(model: model, blocks: ["middle_block", "output_blocks.1"], timesteps: [20, 40],
                                           outputSize: [16, 16])
        let direct = try extract(images)
        let cache = FeatureCache(directory: directory, tag: "weights-1")
        let firstTwo = try extract(images.slice(axis: 0, start: 0, end: 2), ids: ["a", "b"], cache: cache)
        XCTAssertTrue(FileManager.default.fileExists(atPath: directory + "/a.safetensors"))
        // Batches of other sizes spread the GEMMs over the cores differently (one image per core, or OpenBLAS's
        // threads for a single image), so values agree to rounding; features of other weights differ by O(1).
        func assertSame(_ a: [Float], _ b: [Float], _ what: String, line: UInt = #line) {
            assertClose(a, b, atol: 1e-4, rtol: 1e-5, what, line: line)
        }
        assertSame(try firstTwo.stacked().toArray(), try direct.stacked().slice(axis: 0, start: 0, end: 2).toArray(), "a, b computed")

        // Change the weights: image b comes from its file, image c is computed with the new weights.
        randomize(model, g)
        let mixed = try extract(images.slice(axis: 0, start: 1, end: 3), ids: ["b", "c"], cache: cache)
        let fresh = try extract(images)
        let mixedValues = try mixed.stacked().toArray(), half = mixedValues.count / 2
        assertSame(Array(mixedValues[..<half]), try direct.stacked().slice(axis: 0, start: 1, end: 2).toArray(), "b from its file")
        assertSame(Array(mixedValues[half...]), try fresh.stacked().slice(axis: 0, start: 2, end: 3).toArray(), "c computed anew")
        XCTAssertGreaterThan(zip(mixedValues[..<half], try fresh.stacked().slice(axis: 0, start: 1, end: 2).toArray())
            .map { abs($0 - $1) }.max() ?? 0, 0.01, "the new weights change b's features, so b did come from the file")

        let retagged = try extract(images.slice(axis: 0, start: 1, end: 2), ids: ["b"], cache: FeatureCache(directory: directory, tag: "weights-2"))
        assertSame(try retagged.stacked().toArray(), try fresh.stacked().slice(axis: 0, start: 1, end: 2).toArray(), "b under a new tag")
    }

    func testBadRequestsAreReported() throws {
        let model = try GuidedUNet(.bench828k, generator: RandomGenerator(seed: 7))
        XCTAssertThrowsError(try FeatureExtractor(model: model, blocks: ["middle", "output_blocks.2"], timesteps: [1])) {
            XCTAssertTrue("\($0)".contains("unknown block(s) middle"), "\($0)")
            XCTAssertTrue("\($0)".contains("middle_block"), "the message lists the known names: \($0)")
        }
        XCTAssertThrowsError(try FeatureExtractor(model: model, blocks: ["out"], timesteps: [5], input: .noised(seed: 1, alphaBar: { _ in 0 }))) {
            XCTAssertTrue("\($0)".contains("t = [5]"), "\($0)")
        }
        let extractor = try FeatureExtractor(model: model, blocks: ["out"], timesteps: [5])
        XCTAssertThrowsError(try extractor(Tensor.zeros([1, 4, 16, 16]))) {
            XCTAssertTrue("\($0)".contains("[N, 3, H, W]"), "\($0)")
        }
        XCTAssertThrowsError(try extractor(Tensor.zeros([1, 3, 16, 16]), ids: ["../x"], cache: FeatureCache(directory: "/tmp", tag: ""))) {
            XCTAssertTrue("\($0)".contains("plain file names"), "\($0)")
        }
    }
}

private extension DiffusionFeatures {
    func stacked(for block: String) throws -> [Float] { try self.block(block).toArray() }
}

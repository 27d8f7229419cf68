import Foundation
import XCTest
import HistoCore
import HistoData
import HistoNN
@testable import HistoMethods

/// Ciampi et al.'s (XNet's) GlaS protocol: `--resize` and `--normalize dataset` from training to inference.
final class GlaSProtocolTests: XCTestCase {
    /// Two steps of supervised training on 32² patches of 6 synthetic `size`² images under `root/data` (4
    /// labelled, 2 validating) into `root/run`.
    func tinyRun(in root: String, size: Int, seed: UInt64) throws -> TrainingRequest {
        try SyntheticHistology.makeDataset(at: root + "/data", count: 6, size: size, seed: seed)
        var request = TrainingRequest(method: "supervised", data: root + "/data", directory: root + "/run")
        request.labels = "4"
        request.validation = "2"
        request.patch = 32
        request.batch = 2
        request.cropsPerImage = 1
        request.iterations = 2
        request.progress = .none
        return request
    }

    /// PyTorch's `F.interpolate(torch.tensor([[[[0., 255.]]]]), size=(1, 4), mode="bilinear")` is
    /// [0, 63.75, 191.25, 255]; 8-bit samples round it.
    func testImageResizeIsBilinearRoundedToSamples() throws {
        let image = try Image(width: 2, height: 1, channels: 1, bitDepth: 8, samples: [0, 255])
        XCTAssertEqual(try image.resized(height: 1, width: 4).samples, [0, 64, 191, 255])
        let rgb = try Image(width: 2, height: 1, channels: 3, bitDepth: 8, samples: [0, 10, 20, 255, 110, 220])
        XCTAssertEqual(try rgb.resized(height: 1, width: 4).samples,
                       [0, 10, 20, 64, 35, 70, 191, 85, 170, 255, 110, 220])
    }

    /// A resized dataset's samples and items have the side; masks keep their classes (nearest neighbour).
    func testResizedDatasetResizesImagesAndMasksAlike() throws {
        let root = try temporaryFolder().path
        try SyntheticHistology.makeDataset(at: root + "/data", count: 2, size: 48, seed: 1)
        let stored = try Dataset.open(path: root + "/data")
        let dataset = try stored.resized(to: 20)
        XCTAssertEqual(dataset.items.map(\.width), [20, 20])
        let sample = try dataset.sample(at: 0), original = try stored.sample(at: 0)
        XCTAssertEqual([sample.image.width, sample.image.height], [20, 20])
        XCTAssertEqual(sample.image, try original.image.resized(height: 20, width: 20))
        XCTAssertEqual(sample.mask, try original.mask!.resized(height: 20, width: 20, filter: .nearest))
        XCTAssertEqual(Set(sample.mask!.values), [0, 1])
        XCTAssertThrowsError(try stored.resized(to: 0)) { XCTAssert("\($0)".contains("side 0 must be positive")) }
    }

    /// A run trained with `resize` records it in training.json and model.json; segmenting resizes each image to
    /// it and writes outputs at the image's own size.
    func testResizedRunRecordsItsSideAndSegmentsAtTheImageSize() throws {
        let root = try temporaryFolder().path
        var request = try tinyRun(in: root, size: 48, seed: 2)
        request.resize = 32
        let dataset = try request.openDataset()
        XCTAssertEqual(try MethodTraining.run(request, dataset: dataset).outcome, .completed)
        let settings = try JSONDecoder().decode([String: String].self, from: Data(contentsOf: URL(
            fileURLWithPath: root + "/run/" + MethodTrainer.settingsFileName)))
        XCTAssertEqual(settings["resize"], "32")
        let model = try TrainedModel(path: root + "/run")
        XCTAssertEqual(model.card.resize, 32)

        let segmenter = try ImageSegmenter(model: model, window: SlidingWindow(tile: 32))
        let path = root + "/data/images/synth0000.png"
        try segmenter.segment([path], to: root + "/out")
        for folder in ["masks", "probabilities", "overlays"] {
            let header = try PNG.readHeader(path: "\(root)/out/\(folder)/synth0000.png")
            XCTAssertEqual([header.width, header.height], [48, 48], folder)
        }
        let image = try PNG.read(path: path)
        let small = try SlidingWindow(tile: 32).infer(image.resized(height: 32, width: 32)
            .colorPlanes(range: model.card.range)) { model.network($0).softmax(axis: 1) }
        // Planes compared as a Bool: a failure would print every probability.
        XCTAssertTrue(try segmenter.probabilities(of: image) == small.resized(height: 48, width: 48, filter: .bilinear))

        // Resuming with another side is refused, naming the setting.
        request.resize = 40
        XCTAssertThrowsError(try MethodTraining.run(request, dataset: request.openDataset())) { error in
            XCTAssert("\(error)".contains("resize: 32 then, 40 now"), "\(error)")
        }
    }

    /// Cards written before `resize` existed still read, without it.
    func testACardWithoutResizeReads() throws {
        let old = Data(#"{"architecture": "unet", "classes": 2, "pixelRange": "zero_to_one", "preset": "cpu"}"#.utf8)
        XCTAssertNil(try JSONDecoder().decode(ModelCard.self, from: old).resize)
    }

    /// numpy on the same images: `a = concatenate([asarray(Image.open(f).convert("RGB")) / 255 …].reshape(-1, 3))`,
    /// `a.mean(0)`, `a.std(0)` for `histodiff synth --count 3 --size 40 --seed 7`.
    func testColorStatisticsEqualNumpys() throws {
        let root = try temporaryFolder().path
        try SyntheticHistology.makeDataset(at: root, count: 3, size: 40, seed: 7)
        let statistics = try Dataset.open(path: root).colorStatistics(indices: [0, 1, 2])
        for (value, expected) in zip(statistics.mean + statistics.std,
                                     [0.67135948, 0.42152941, 0.56070343, 0.17435574, 0.14388501, 0.13345012]) {
            XCTAssertEqual(Double(value), expected, accuracy: 1e-5)
        }
        let image = try Image(width: 1, height: 1, channels: 3, bitDepth: 8, samples: [255, 0, 51])
        let planes = image.colorPlanes(range: .standardized(mean: [0.5, 0.5, 0.1], std: [0.5, 0.25, 0.5]))
        for (value, expected) in zip(planes.values, [Float(1), -2, 0.2]) {
            XCTAssertEqual(value, expected, accuracy: 1e-6)
        }
    }

    /// `normalizesByDataset` measures the split's training images, records the statistics in training.json and
    /// model.json, and the segmenter feeds the network the standardized image.
    func testNormalizedRunRecordsTheSplitsStatisticsAndSegmentsWithThem() throws {
        let root = try temporaryFolder().path
        var request = try tinyRun(in: root, size: 32, seed: 3)
        request.normalizesByDataset = true
        let dataset = try request.openDataset()
        let result = try MethodTraining.run(request, dataset: dataset)
        let training = try result.split.indices(in: dataset)
        let expected = try dataset.colorStatistics(indices: training.labelled + training.unlabelled)
        let model = try TrainedModel(path: root + "/run")
        XCTAssertEqual(model.card.pixelRange, "dataset")
        XCTAssertEqual(model.card.statistics, ModelCard.ColorStatistics(mean: expected.mean, std: expected.std))
        XCTAssertNotEqual(expected.mean, try dataset.colorStatistics(indices: Array(0..<6)).mean,
                          "validation images are not measured")
        let settings = try JSONDecoder().decode([String: String].self, from: Data(contentsOf: URL(
            fileURLWithPath: root + "/run/" + MethodTrainer.settingsFileName)))
        let recorded = settings["pixel_range"]!
        XCTAssert(recorded.hasPrefix("standardized(mean: [\(expected.mean[0])"), recorded)

        let image = try PNG.read(path: root + "/data/images/synth0000.png")
        let window = try SlidingWindow(tile: 32)
        let standardized = try window.infer(image.colorPlanes(range: .standardized(mean: expected.mean,
                                                                                   std: expected.std))) {
            model.network($0).softmax(axis: 1)
        }
        XCTAssertTrue(try ImageSegmenter(model: model, window: window).probabilities(of: image) == standardized)
    }

    /// Bad values of the new options are one clear line each.
    func testBadResizeOrNormalizeValuesAreOneLine() throws {
        let tool = try commandLineTool()
        let root = try temporaryFolder().path
        for (option, value, expected) in [
            ("--resize", "0", "--resize 0 must be a positive side"),
            ("--normalize", "imagenet", "unknown --normalize 'imagenet' (range, dataset)")] {
            let run = try launch(tool, ["train", "--data", root, "--out", root + "/run", option, value])
            XCTAssertNotEqual(run.status, 0)
            XCTAssert(run.output.contains(expected), run.output)
        }
    }

    /// A jaccard-sweep run writes the threshold of its best validation to threshold.json, which `TrainedModel`
    /// reads.
    func testAJaccardSweepRunRecordsItsBestThreshold() throws {
        let root = try temporaryFolder().path
        var request = try tinyRun(in: root, size: 32, seed: 4)
        request.validateEvery = 1
        request.metric = .jaccardSweep
        let result = try MethodTraining.run(request, dataset: request.openDataset())
        let best = try XCTUnwrap(result.best)
        let chosen = try JSONDecoder().decode(ChosenThreshold.self, from: Data(contentsOf: URL(
            fileURLWithPath: root + "/run/" + ChosenThreshold.fileName)))
        XCTAssertEqual(chosen, ChosenThreshold(threshold: try XCTUnwrap(best.threshold),
                                               validationJaccard: best.score, step: best.step))
        XCTAssertEqual(try TrainedModel(path: root + "/run").threshold, best.threshold)
    }

    /// The recorded threshold, not the argmax, makes the written mask (0.3 turns pixels of p(foreground) in
    /// (0.3, 0.5] foreground).
    func testTheRecordedThresholdMakesTheWrittenMask() throws {
        let root = try temporaryFolder().path
        try SyntheticHistology.makeDataset(at: root + "/data", count: 1, size: 32, seed: 5)
        try writeRun(ModelCard(architecture: "unet", preset: "cpu", classes: 2, pixelRange: .minusOneToOne),
                     seed: 6, to: root + "/run")
        try MethodTrainer.writeJSON(ChosenThreshold(threshold: 0.3, validationJaccard: 0.5, step: 1),
                                    to: root + "/run/" + ChosenThreshold.fileName)
        let segmenter = try ImageSegmenter(model: TrainedModel(path: root + "/run"), window: SlidingWindow(tile: 32))
        let path = root + "/data/images/synth0000.png"
        try segmenter.segment([path], to: root + "/out")
        let probabilities = try segmenter.probabilities(of: PNG.read(path: path))
        let written = try PNG.read(path: root + "/out/masks/synth0000.png").samples.map { Int($0 / 255) }
        let thresholded = SegmentationOutputs.labels(probabilities, threshold: 0.3)
        XCTAssertTrue(written == thresholded)
        XCTAssertTrue(written != SegmentationOutputs.labels(probabilities), "the crafted case separates the two")
    }
}

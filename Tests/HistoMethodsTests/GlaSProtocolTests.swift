import Foundation
import XCTest
import HistoCore
import HistoData
import HistoNN
@testable import HistoMethods

/// Ciampi et al.'s (XNet's) GlaS protocol: `--resize` from training to inference.
final class GlaSProtocolTests: XCTestCase {
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
        try SyntheticHistology.makeDataset(at: root + "/data", count: 6, size: 48, seed: 2)
        var request = TrainingRequest(method: "supervised", data: root + "/data", directory: root + "/run")
        request.labels = "4"
        request.validation = "2"
        request.patch = 32
        request.batch = 2
        request.cropsPerImage = 1
        request.iterations = 2
        request.resize = 32
        request.progress = .none
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
}

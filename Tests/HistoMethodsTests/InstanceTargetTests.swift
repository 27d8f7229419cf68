import Foundation
import XCTest
import HistoCore
import HistoData
import HistoMetrics
import HistoNN
@testable import HistoMethods

/// Boundary-aware nuclei targets through training, instance post-processing chosen on validation images, and
/// instance maps out of `segment` and `eval --model`.
final class InstanceTargetTests: XCTestCase {
    func testBoundaryTargetComesFromInstanceMapsElseFromComponents() throws {
        let root = try temporaryFolder().path
        try SyntheticHistology.makeDataset(at: root, count: 2, size: 48, seed: 4)
        // The second image loses its instance map: its target comes from the mask's 8-connected components.
        try FileManager.default.removeItem(atPath: root + "/instances/synth0001.png")
        let dataset = try Dataset.open(path: root, classes: .boundary(width: 2))
        XCTAssertEqual(dataset.classes.count, 3)
        for (index, name) in ["synth0000", "synth0001"].enumerated() {
            let sample = try dataset.sample(at: index)
            let mask = try LabelMap(PNG.read(path: root + "/masks/\(name).png"))
            let objects = try index == 0 ? LabelMap(PNG.read(path: root + "/instances/\(name).png")).labels
                : mask.connectedComponents().map.labels
            let expected = InstanceGrid.boundaryClasses(objects, width: 48, height: 48, boundaryWidth: 2)
            XCTAssertEqual(sample.mask!.values, expected.map(Float.init), name)
            XCTAssertEqual(Set(sample.mask!.values), [0, 1, 2], name)
        }
        XCTAssertThrowsError(try Dataset.open(path: root, classes: .boundary(width: 0))) { error in
            XCTAssert("\(error)".contains("boundary width 0"), "\(error)")
        }
    }

    func testSixteenBitInstanceMapsRoundTripExactly() throws {
        let path = try temporaryFolder().path + "/ids.png"
        let ids: [UInt16] = [0, 1, 2, 255, 256, 4097, 32768, 65534, 65535]
        try PNG.write(try Image(width: 3, height: 3, channels: 1, bitDepth: 16, samples: ids), to: path)
        XCTAssertEqual(try PNG.read(path: path).samples, ids)
    }

    /// Every method of the registry trains on the 3-class target (2 steps), records it, and its run then chooses a
    /// post-processing on the validation images and segments into instance maps.
    func testEveryMethodTrainsOnTheBoundaryTargetAndSegmentsInstances() throws {
        let root = try temporaryFolder().path
        try SyntheticHistology.makeDataset(at: root + "/data", count: 8, size: 32, seed: 2)
        // pathsegdiff and dtseg train on a frozen latent diffusion run's features of 64² crops, dtseg-collab on
        // one-step dtseg and FPN runs of them.
        try SyntheticHistology.makeDataset(at: root + "/data64", count: 8, size: 64, seed: 2)
        let latentRun = try PathSegDiffTests.writeLatentRun(to: root + "/ldm")
        let frozen: [String: [String: String]] = [
            "pathsegdiff": ["model": latentRun], "dtseg": ["model": latentRun],
            "dtseg-collab": try DTSegTests.writeFrozenRuns(data: root + "/data64", to: root + "/frozen")]
        for method in MethodRegistry.methods.map(\.name) {
            let tiled = frozen[method] != nil
            var request = TrainingRequest(method: method, data: root + (tiled ? "/data64" : "/data"),
                                          directory: root + "/" + method)
            request.methodOptions = frozen[method] ?? [:]
            request.target = .boundary(width: 2)
            request.labels = "3"
            request.validation = "2"
            request.patch = tiled ? 64 : 32
            request.batch = 2
            request.cropsPerImage = 1
            request.iterations = 2
            request.progress = .none
            let dataset = try request.openDataset()
            let result = try MethodTraining.run(request, dataset: dataset)
            XCTAssertEqual(result.outcome, .completed, method)
            XCTAssertEqual(result.model.classes, 3, method)
            XCTAssert(result.history.allSatisfy { $0.dice.isFinite }, method)
            let settings = try JSONDecoder().decode([String: String].self, from: Data(contentsOf: URL(
                fileURLWithPath: request.directory + "/" + MethodTrainer.settingsFileName)))
            XCTAssertEqual(settings["target"], "boundary", method)
            XCTAssertEqual(settings["boundary_width"], "2", method)
            let trained = try TrainedModel(path: request.directory)
            XCTAssertEqual(trained.card.boundaryWidth, 2, method)
            guard method == "supervised" else { continue }
            let record = try InstanceTuning.run(after: result, request: request, dataset: dataset)
            XCTAssertEqual(record.candidates, 36)
            XCTAssertEqual(record.images, result.split.validation)
            XCTAssertEqual(try TrainedModel(path: request.directory).postprocessing, record.chosen)
            let segmenter = try ImageSegmenter(model: TrainedModel(path: request.directory),
                                               window: SlidingWindow(tile: 32))
            let evaluation = try ModelEvaluation.run(segmenter, dataset: dataset, names: result.split.validation,
                                                     output: root + "/eval")
            XCTAssertEqual(evaluation.predictionInstanceFolder, root + "/eval/instances")
            for name in result.split.validation {
                let instances = try PNG.read(path: root + "/eval/instances/\(name).png")
                XCTAssertEqual(instances.bitDepth, 16)
                let mask = try PNG.read(path: root + "/eval/masks/\(name).png")
                XCTAssertEqual(instances.width, mask.width)
            }
            XCTAssert(evaluation.pooled.detectionF1.isFinite)
        }
    }

    func testOverlaysOutlineEachInstanceInItsOwnColour() throws {
        let image = try Image(width: 4, height: 1, channels: 3, bitDepth: 8,
                              samples: [UInt16](repeating: 128, count: 12))
        let overlay = try SegmentationOutputs.overlay(image: image, labels: [1, 1, 2, 2], coloured: true)
        let pixels = stride(from: 0, to: 12, by: 3).map { Array(overlay.samples[$0..<($0 + 3)]) }
        XCTAssertEqual(pixels[0], pixels[1])
        XCTAssertEqual(pixels[2], pixels[3])
        XCTAssertNotEqual(pixels[1], pixels[2])
    }
}

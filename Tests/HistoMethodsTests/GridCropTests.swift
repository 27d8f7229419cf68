import Foundation
import XCTest
import HistoCore
import HistoData
import HistoMetrics
import HistoNN
@testable import HistoMethods

/// CDCL's MoNuSeg crop protocol (`--grid-crops`): images cut into a grid of crops from the dataset to the split,
/// the trainer, the model card and inference.
final class GridCropTests: XCTestCase {
    /// The crops of `dataset`'s stored image `source`, in grid order, with the whole sample.
    func crops(of source: String,
               in dataset: Dataset) throws -> (whole: Sample, crops: [Sample], cells: [GridCrops.Cell]) {
        let whole = try dataset.wholeImages.sample(at: dataset.storedImages.firstIndex { $0.name == source }!)
        let indices = dataset.items.indices.filter { dataset.items[$0].source == source }
        return (whole, try indices.map(dataset.sample(at:)), indices.map { dataset.items[$0].region! })
    }

    /// A 50² image in a 4 × 4 grid: 16 crops named `NAME@row,column`, of 12 pixels and 14 in the last row and
    /// column (the remainder); the crops' images, masks and instance maps stitched back are the stored ones.
    func testCropsTileTheImageExactly() throws {
        let root = try temporaryFolder().path
        try SyntheticHistology.makeDataset(at: root, count: 2, size: 50, seed: 1)
        let dataset = try Dataset.open(path: root).gridCropped(GridCrops(4))
        XCTAssertEqual(dataset.count, 32)
        XCTAssertEqual(Array(dataset.items.map(\.name).prefix(5)),
                       ["synth0000@0,0", "synth0000@0,1", "synth0000@0,2", "synth0000@0,3", "synth0000@1,0"])
        XCTAssertEqual(dataset.items.prefix(4).map(\.width), [12, 12, 12, 14])
        XCTAssertEqual(dataset.items[12].height, 14)
        XCTAssertEqual(Set(dataset.items.map(\.source)), ["synth0000", "synth0001"])

        let (whole, crops, cells) = try crops(of: "synth0001", in: dataset)
        XCTAssertEqual(crops.map(\.name).last, "synth0001@3,3")
        func stitched(_ planes: [Planes]) throws -> Planes {
            try GridCrops.stitch(planes, cells: cells, height: 50, width: 50)
        }
        // Compared as Bools: a failure would print every pixel.
        XCTAssertTrue(try stitched(crops.map { $0.image.colorPlanes(range: .zeroToOne) })
                      == whole.image.colorPlanes(range: .zeroToOne))
        XCTAssertTrue(try stitched(crops.map { $0.mask! }) == whole.mask!)
        XCTAssertTrue(try stitched(crops.map { $0.instances! }) == whole.instances!)
        XCTAssertEqual([cells[5].row, cells[5].column, cells[5].y, cells[5].x, cells[15].y, cells[15].height],
                       [1, 1, 12, 12, 36, 14])
        XCTAssertEqual(crops[5].image, whole.image.cropped(to: cells[5]))
    }

    /// Validation takes whole source images (all their crops, none in training); the label share counts the
    /// training crops; split.json records the grid and does not fit the whole images.
    func testSplitKeepsAnImagesCropsTogetherAndCountsLabelledCrops() throws {
        let root = try temporaryFolder().path
        try SyntheticHistology.makeDataset(at: root + "/data", count: 6, size: 32, seed: 2)
        let stored = try Dataset.open(path: root + "/data")
        let dataset = try stored.gridCropped(GridCrops(2))
        let split = try DataSplit.make(dataset: dataset, labelRatio: Ratio("1/4"), validationRatio: Ratio("2"),
                                       seed: 3)
        XCTAssertEqual(split.gridCrops, 2)
        let validationImages = dataset.sources(of: split.validation)
        XCTAssertEqual(validationImages.count, 2)
        XCTAssertEqual(split.validation.count, 8, "every crop of the 2 validation images")
        XCTAssertTrue(Set(dataset.sources(of: split.labelled + split.unlabelled)).isDisjoint(with: validationImages))
        XCTAssertEqual(split.labelled.count, 4, "1/4 of the 16 training crops")
        XCTAssertGreaterThan(dataset.sources(of: split.labelled).count, 1, "drawn among all training crops")
        XCTAssertEqual(split.unlabelled.count, 12)
        XCTAssertEqual(validationImages,
                       try DataSplit.make(dataset: stored, labelRatio: Ratio("1/4"), validationRatio: Ratio("2"),
                                          seed: 3).validation, "the whole-image split's validation images")

        let path = root + "/split.json"
        try split.write(to: path)
        XCTAssertEqual(try DataSplit.read(path: path, dataset: dataset), split)
        XCTAssertThrowsError(try DataSplit.read(path: path, dataset: stored)) {
            XCTAssert("\($0)".contains("made on 2 crops per side (--grid-crops), the dataset is cut into 1"), "\($0)")
        }
    }

    /// A run on grid crops of 40² resized to 32² records the grid in training.json, model.json and split.json,
    /// measures object sizes on its labelled crops, tunes on whole validation images, and segments an 80² image as
    /// crop → resize → infer → resize back → stitch; resuming with another grid is refused.
    func testGridRunRecordsItsGridAndSegmentsCropByCrop() throws {
        let root = try temporaryFolder().path
        try SyntheticHistology.makeDataset(at: root + "/data", count: 4, size: 80, seed: 4)
        var request = TrainingRequest(method: "supervised", data: root + "/data", directory: root + "/run")
        request.labels = "1/3"
        request.validation = "1"
        request.gridCrops = 2
        request.resize = 32
        request.patch = 32
        request.batch = 2
        request.cropsPerImage = 1
        request.iterations = 2
        request.progress = .none
        let dataset = try request.openDataset()
        XCTAssertEqual(dataset.items.map(\.width), [Int](repeating: 32, count: 16))
        let result = try MethodTraining.run(request, dataset: dataset)
        XCTAssertEqual(result.outcome, .completed)
        XCTAssertEqual([result.split.labelled.count, result.split.unlabelled.count, result.split.validation.count],
                       [4, 8, 4])
        let settings = try JSONDecoder().decode([String: String].self, from: Data(contentsOf: URL(
            fileURLWithPath: root + "/run/" + MethodTrainer.settingsFileName)))
        XCTAssertEqual(settings["grid_crops"], "2")
        let model = try TrainedModel(path: root + "/run")
        XCTAssertEqual(model.card.gridCrops, 2)
        XCTAssertEqual(try DataSplit.read(path: model.splitPath, dataset: dataset), result.split)
        let objects = try JSONDecoder().decode(ObjectSizes.self, from: Data(contentsOf: URL(
            fileURLWithPath: root + "/run/" + MethodTrainer.objectsFileName)))
        let labelled = try result.split.indices(in: dataset).labelled
        XCTAssertEqual(objects, try ObjectSizes.measure(dataset, indices: labelled), "the crops at 32²")
        XCTAssertEqual(objects.images, 4)
        let tuned = try InstanceTuning.run(after: result, request: request, dataset: dataset)
        XCTAssertEqual(tuned.images, dataset.sources(of: result.split.validation))

        let window = try SlidingWindow(tile: 32)
        let segmenter = try ImageSegmenter(model: model, window: window)
        let path = root + "/data/images/synth0001.png"
        try segmenter.segment([path], to: root + "/out")
        for folder in ["masks", "probabilities", "overlays"] {
            let header = try PNG.readHeader(path: "\(root)/out/\(folder)/synth0001.png")
            XCTAssertEqual([header.width, header.height], [80, 80], folder)
        }
        let image = try PNG.read(path: path)
        let cells = try GridCrops(2).cells(height: 80, width: 80, image: path)
        let byHand = try cells.map { cell in
            let input = try image.cropped(to: cell).resized(height: 32, width: 32)
            return try window.infer(input.colorPlanes(range: model.card.range)) { model.network($0).softmax(axis: 1) }
                .resized(height: 40, width: 40, filter: .bilinear)
        }
        XCTAssertTrue(try segmenter.probabilities(of: image) == GridCrops.stitch(byHand, cells: cells, height: 80,
                                                                                 width: 80))

        request.gridCrops = 1
        XCTAssertThrowsError(try MethodTraining.run(request, dataset: request.openDataset())) { error in
            XCTAssert("\(error)".contains("grid_crops: 2 then, (unset) now"), "\(error)")
        }
    }

    /// Cards written before grid crops existed still read, without a grid.
    func testACardWithoutGridCropsReads() throws {
        let old = Data(#"{"architecture": "unet", "classes": 2, "pixelRange": "zero_to_one", "preset": "cpu"}"#.utf8)
        XCTAssertNil(try JSONDecoder().decode(ModelCard.self, from: old).gridCrops)
    }

    /// A grid below 1, or one with more crops per side than an image has pixels, is one line naming the option.
    func testBadGridValuesAreOneLine() throws {
        let tool = try commandLineTool()
        let root = try temporaryFolder().path
        try SyntheticHistology.makeDataset(at: root + "/data", count: 3, size: 24, seed: 5)
        for (value, expected) in [("0", "--grid-crops 0 must be at least 1 (1: whole images)"),
                                  ("25", "--grid-crops: 25 crops per side do not fit " + root
                                    + "/data/images/synth0000.png (24×24): at most 24")] {
            let run = try launch(tool, ["train", "--data", root + "/data", "--out", root + "/run",
                                        "--grid-crops", value])
            XCTAssertNotEqual(run.status, 0)
            XCTAssert(run.output.contains(expected), run.output)
        }
    }
}

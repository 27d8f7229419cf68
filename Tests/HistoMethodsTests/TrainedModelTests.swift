import Foundation
import XCTest
import HistoCore
import HistoData
import HistoDiffusion
import HistoMetrics
import HistoNN
@testable import HistoMethods

/// The command-line slice: model cards, segmenting images with a trained run, `eval --model`, and GenSelfDiff
/// training from a pretrained checkpoint.
final class TrainedModelTests: XCTestCase {
    func card(_ architecture: String, range: PixelRange = .minusOneToOne) -> ModelCard {
        ModelCard(architecture: architecture, preset: "cpu", classes: 2, pixelRange: range)
    }

    func testEveryArchitectureRoundTripsThroughItsCard() throws {
        let root = try temporaryFolder().path
        let x = RandomGenerator(seed: 9).uniform([1, 3, 32, 32], -1, 1)
        for architecture in ["unet", "fpn", "genselfdiff"] {
            let directory = root + "/" + architecture
            let saved = try writeRun(card(architecture), seed: 5, to: directory)
            let expected = try saved(x).toArray()
            XCTAssertEqual(try ModelCard.read(from: directory), card(architecture))
            for path in [directory, directory + "/best.safetensors"] {
                let loaded = try TrainedModel(path: path)
                XCTAssertEqual(loaded.card, card(architecture))
                XCTAssertEqual(loaded.directory, directory)
                XCTAssertEqual(try loaded.network(x).toArray(), expected, "\(architecture) from \(path)")
            }
            let fresh = try card(architecture).makeModel(generator: RandomGenerator(seed: 0))
            fresh.train(false)
            XCTAssertNotEqual(try fresh(x).toArray(), expected, "\(architecture): the loaded weights are not the initial ones")
        }
        XCTAssertTrue(try TrainedModel(path: root + "/genselfdiff").network is GenSelfDiffSegmenter)
    }

    /// A card written before the training patch was recorded still reads, and tiles at 256 as before.
    func testACardWithoutATrainingPatchTilesAt256() throws {
        let old = Data(#"{"architecture": "unet", "classes": 2, "pixelRange": "zero_to_one", "preset": "cpu"}"#.utf8)
        let card = try JSONDecoder().decode(ModelCard.self, from: old)
        XCTAssertNil(card.trainingPatch)
        XCTAssertEqual(card.defaultTile, 256)
    }

    func testMissingOrUnknownCardsAreClearErrors() throws {
        let directory = try temporaryFolder().path
        try card("unet").makeModel(generator: RandomGenerator(seed: 1)).save(to: directory + "/best.safetensors")
        XCTAssertThrowsError(try TrainedModel(path: directory)) { error in
            XCTAssertTrue("\(error)".contains(directory + "/model.json") && "\(error)".contains("no model card"), "\(error)")
        }
        var unknown = card("unet")
        unknown.architecture = "vit"
        try unknown.write(to: directory)
        XCTAssertThrowsError(try TrainedModel(path: directory)) { error in
            XCTAssertTrue("\(error)".contains(directory + "/model.json") && "\(error)".contains("unknown architecture/preset vit/cpu"), "\(error)")
        }
        XCTAssertThrowsError(try TrainedModel(path: directory + "/absent")) { error in
            XCTAssertTrue("\(error)".contains(directory + "/absent") && "\(error)".contains("no such model"), "\(error)")
        }
    }

    func testSegmentingWritesEveryOutputAtTheImageSize() throws {
        let root = try temporaryFolder().path
        try SyntheticHistology.makeDataset(at: root + "/data", count: 2, size: 56, seed: 1)
        try writeRun(card("unet"), seed: 3, to: root + "/run")
        let segmenter = try ImageSegmenter(model: TrainedModel(path: root + "/run"), window: SlidingWindow(tile: 32, overlap: 0.25))
        let images = ["synth0000", "synth0001"].map { root + "/data/images/\($0).png" }
        var reported: [String] = []
        XCTAssertEqual(try segmenter.segment(images, to: root + "/out") { reported.append("\($0) \($1)") }, ["synth0000", "synth0001"])
        XCTAssertEqual(reported, ["1 synth0000", "2 synth0001"])
        for name in ["synth0000", "synth0001"] {
            for (folder, channels) in [("masks", 1), ("probabilities", 1), ("overlays", 3)] {
                let header = try PNG.readHeader(path: "\(root)/out/\(folder)/\(name).png")
                XCTAssertEqual([header.width, header.height, header.channels], [56, 56, channels], "\(folder)/\(name)")
            }
        }
        XCTAssertThrowsError(try segmenter.segment([images[0], images[0]], to: root + "/out")) { error in
            XCTAssertTrue("\(error)".contains("share a name"), "\(error)")
        }
        XCTAssertThrowsError(try ImageSegmenter(model: TrainedModel(path: root + "/run"), window: SlidingWindow(tile: 40))) { error in
            XCTAssertTrue("\(error)".contains("not a multiple of 16"), "\(error)")
        }
    }

    /// The card's pixel range is what the network sees.
    func testSegmenterHonoursTheCardsPixelRange() throws {
        let root = try temporaryFolder().path
        try SyntheticHistology.makeDataset(at: root + "/data", count: 1, size: 32, seed: 2)
        let image = try PNG.read(path: root + "/data/images/synth0000.png")
        let window = try SlidingWindow(tile: 32)
        var outputs: [[Float]] = []
        for range in [PixelRange.zeroToOne, .minusOneToOne] {
            try writeRun(card("genselfdiff", range: range), seed: 4, to: root + "/run")
            let model = try TrainedModel(path: root + "/run")
            let expected = try window.infer(image.colorPlanes(range: range)) { model.network($0).softmax(axis: 1) }
            let probabilities = try ImageSegmenter(model: model, window: window).probabilities(of: image)
            XCTAssertEqual(probabilities.values, expected.values, "\(range)")
            outputs.append(probabilities.values)
        }
        XCTAssertNotEqual(outputs[0], outputs[1])
    }

    func assertSameScores(_ a: ImageEvaluation, _ b: ImageEvaluation, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.name, b.name, file: file, line: line)
        XCTAssertEqual(a.counts, b.counts, a.name, file: file, line: line)
        XCTAssertEqual(a.aji, b.aji, a.name, file: file, line: line)
        XCTAssertEqual(a.ajiPlus, b.ajiPlus, a.name, file: file, line: line)
        XCTAssertTrue(a.hausdorff95 == b.hausdorff95 || (a.hausdorff95.isNaN && b.hausdorff95.isNaN), a.name, file: file, line: line)
    }

    /// `eval --model`: the scores are `FolderEvaluation`'s on the written masks against the dataset's; a smaller
    /// selection into the same folder scores that selection only.
    func testEvaluationScoresTheWrittenMasksAgainstTheDataset() throws {
        let root = try temporaryFolder().path
        let data = root + "/data"
        try SyntheticHistology.makeDataset(at: data, count: 4, size: 48, seed: 5)
        let dataset = try Dataset.open(path: data, requireMasks: true)
        try writeRun(card("unet"), seed: 6, to: root + "/run")
        let segmenter = try ImageSegmenter(model: TrainedModel(path: root + "/run"), window: SlidingWindow(tile: 32))
        let output = root + "/run/eval"

        let all = try ModelEvaluation.run(segmenter, dataset: dataset, names: dataset.items.map(\.name), output: output)
        let reference = try FolderEvaluation(predictionFolder: output + "/masks", truthFolder: data + "/masks",
                                             instanceFolder: data + "/instances",
                                             predictionInstanceFolder: output + "/instances")
        XCTAssertEqual(all.images.count, 4)
        XCTAssertEqual(all.instanceFolder, output + "/truth/instances")
        XCTAssertEqual(all.json(), reference.json())

        let subset = ["synth0001", "synth0003"]
        let some = try ModelEvaluation.run(segmenter, dataset: dataset, names: subset, output: output)
        XCTAssertEqual(some.images.map(\.name), subset)
        for folder in ModelEvaluation.imageFolders {
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: output + "/" + folder).sorted(),
                           subset.map { $0 + ".png" }, folder)
        }
        for image in some.images {
            assertSameScores(image, try ImageEvaluation(
                name: image.name, prediction: LabelMap(PNG.read(path: "\(output)/masks/\(image.name).png")),
                truth: LabelMap(PNG.read(path: "\(data)/masks/\(image.name).png")),
                truthInstances: LabelMap(PNG.read(path: "\(data)/instances/\(image.name).png"))))
            assertSameScores(image, all.images.first { $0.name == image.name }!)
        }

        XCTAssertThrowsError(try ModelEvaluation.run(segmenter, dataset: dataset, names: ["synth0009"], output: output)) { error in
            XCTAssertTrue("\(error)".contains("synth0009"), "\(error)")
        }
        XCTAssertThrowsError(try ModelEvaluation.run(segmenter, dataset: dataset, names: subset, output: data)) { error in
            XCTAssertTrue("\(error)".contains("is the dataset folder"), "\(error)")
        }
    }

    /// A pretrained file whose body is not the preset's fails before any training, naming the file.
    func testGenSelfDiffFromAPretrainedFileOfAnotherBodyFailsNamingTheFile() throws {
        let root = try temporaryFolder().path
        try SyntheticHistology.makeDataset(at: root + "/data", count: 4, size: 32, seed: 7)
        var request = TrainingRequest(method: "genselfdiff", data: root + "/data", directory: root + "/run")
        request.labels = "100%"
        request.validation = "1/4"
        request.patch = 32
        request.progress = .none
        let bodies: [(String, Module)] = [
            ("guided", try GuidedUNet(.cpu, generator: RandomGenerator(seed: 1))),
            ("narrow", try AttentionUNet(AttentionUNet.Configuration(dim: 8, dimMults: [1, 2]), generator: RandomGenerator(seed: 1))),
        ]
        for (name, denoiser) in bodies {
            let pretrainRun = root + "/pretrain-" + name
            try FileManager.default.createDirectory(atPath: pretrainRun, withIntermediateDirectories: true)
            try denoiser.save(to: pretrainRun + "/ema.safetensors")
            let weights = try GenSelfDiffFineTuning.pretrainedWeights(at: pretrainRun)
            XCTAssertEqual(weights, pretrainRun + "/ema.safetensors")
            request.methodOptions = ["pretrained": pretrainRun]
            XCTAssertThrowsError(try MethodTraining.run(request)) { error in
                XCTAssertTrue("\(error)".contains(weights) && "\(error)".contains("cannot be imported"), "\(name): \(error)")
            }
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: root + "/run/best.safetensors"))
        XCTAssertThrowsError(try GenSelfDiffFineTuning.pretrainedWeights(at: root + "/data")) { error in
            XCTAssertTrue("\(error)".contains(root + "/data/ema.safetensors"), "\(error)")
        }
        XCTAssertThrowsError(try GenSelfDiffFineTuning.pretrainedWeights(at: root + "/absent")) { error in
            XCTAssertTrue("\(error)".contains(root + "/absent"), "\(error)")
        }
    }

    /// `train --method genselfdiff --pretrained`, `segment` and `eval --model` on a tiny synthetic dataset.
    func testCommandLineTrainsSegmentsAndEvaluatesAGenSelfDiffRun() throws {
        let tool = try commandLineTool()
        let root = try temporaryFolder().path
        let data = root + "/data", run = root + "/run"
        try SyntheticHistology.makeDataset(at: data, count: 8, size: 64, seed: 8)
        try FileManager.default.createDirectory(atPath: root + "/pretrain", withIntermediateDirectories: true)
        try AttentionUNet(.cpu, generator: RandomGenerator(seed: 1)).save(to: root + "/pretrain/ema.safetensors")
        try AttentionUNet(.genSelfDiff, generator: RandomGenerator(seed: 1)).save(to: root + "/paper.safetensors")
        let common = ["--method", "genselfdiff", "--data", data, "--labels", "100%", "--validation", "1/4",
                      "--epochs", "1", "--batch", "4"]

        let wrong = try launch(tool, ["train", "--out", root + "/wrong", "--pretrained", root + "/paper.safetensors"] + common)
        XCTAssertNotEqual(wrong.status, 0, wrong.output)
        XCTAssertTrue(wrong.output.contains(root + "/paper.safetensors") && wrong.output.contains("cannot be imported"), wrong.output)

        let train = try launch(tool, ["train", "--out", run, "--pretrained", root + "/pretrain"] + common)
        XCTAssertEqual(train.status, 0, train.output)
        XCTAssertTrue(try String(contentsOfFile: run + "/training.json", encoding: .utf8)
            .contains("\"option.pretrained\" : \"\(root)/pretrain\""), train.output)
        XCTAssertTrue(train.output.contains("epoch 1: loss"), train.output)
        var card = ModelCard(architecture: "genselfdiff", preset: "cpu", classes: 2, pixelRange: .minusOneToOne)
        card.trainingPatch = 64
        XCTAssertEqual(try ModelCard.read(from: run), card)
        XCTAssertEqual(card.defaultTile, 64, "segment tiles as the network was trained")
        let objects = try JSONDecoder().decode(ObjectSizes.self, from: Data(contentsOf: URL(fileURLWithPath:
            run + "/" + MethodTrainer.objectsFileName)))
        XCTAssertGreaterThan(objects.objects, 0)
        XCTAssertGreaterThan(objects.medianDiameter, 0)
        let split = try DataSplit.read(path: run + "/split.json", dataset: Dataset.open(path: data))

        let segment = try launch(tool, ["segment", "--model", run, "--out", root + "/segmented",
                                     data + "/images/synth0000.png"])
        XCTAssertEqual(segment.status, 0, segment.output)
        XCTAssertEqual(try PNG.readHeader(path: root + "/segmented/overlays/synth0000.png").width, 64)

        let eval = try launch(tool, ["eval", "--model", run, "--data", data, "--tile", "64"])
        XCTAssertEqual(eval.status, 0, eval.output)
        XCTAssertTrue(eval.output.contains("pooled"), eval.output)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: run + "/eval/masks").sorted(),
                       split.validation.map { $0 + ".png" })
        let scores = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: run + "/eval/scores.json"))) as? [String: Any]
        XCTAssertEqual(scores?["images"] as? Int, split.validation.count)

        let mixed = try launch(tool, ["eval", "--model", run, "--pred", root, "--gt", root])
        XCTAssertNotEqual(mixed.status, 0)
        XCTAssertTrue(mixed.output.contains("cannot be combined with --model"), mixed.output)
    }

    /// `histodiff train` killed with SIGKILL after its first checkpoint: the same command again resumes from that
    /// checkpoint, says so, and finishes with one metrics row per step.
    func testTrainKilledWithSigkillResumesFromItsLastCheckpoint() throws {
        let tool = try commandLineTool()
        let root = try temporaryFolder().path
        try SyntheticHistology.makeDataset(at: root + "/data", count: 8, size: 32, seed: 9)
        let arguments = ["train", "--method", "supervised", "--data", root + "/data", "--out", root + "/run",
                         "--labels", "100%", "--validation", "1/4", "--patch", "32", "--batch", "2",
                         "--crops-per-image", "2", "--epochs", "6",
                         "--checkpoint-every", "1", "--patience", "0"]
        let process = Process()
        process.executableURL = tool
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(120)
        while TrainingCheckpoint.existing(root + "/run/checkpoint") == nil && process.isRunning && Date() < deadline {
            usleep(20_000)
        }
        XCTAssertTrue(process.isRunning, "the run ended before it could be killed")
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationReason, .uncaughtSignal)
        // The folder is usable from the first checkpoint on: its card and split were written at the start.
        XCTAssertEqual(try ModelCard.read(from: root + "/run").architecture, "unet")
        XCTAssertNoThrow(try DataSplit.read(path: root + "/run/split.json",
                                            dataset: Dataset.open(path: root + "/data")))
        let saved = try XCTUnwrap(TrainingCheckpoint.existing(root + "/run/checkpoint"))
        let weights = try SafeTensors.read(saved + "/" + TrainingCheckpoint.weightsFileName)
        let step = try XCTUnwrap(weights.metadata["histodiff.step"])

        let rerun = try launch(tool, arguments)
        XCTAssertEqual(rerun.status, 0, rerun.output)
        XCTAssertTrue(rerun.output.contains("resuming from step \(step) of 36") || Int(step)! >= 36, rerun.output)
        let steps = try MetricsLog.read(path: root + "/run/metrics.csv").rows.map { Int($0[0]!) }
        XCTAssertEqual(steps, Array(1...36))
    }
}

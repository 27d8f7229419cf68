import Foundation
import XCTest
import HistoCore
import HistoData
import HistoMetrics
import HistoNN
@testable import HistoMethods

final class SupervisedTrainingTests: XCTestCase {
    /// The real datasets: `$HISTODIFF_DATA`, else `<package root>/../shared/data`.
    static var dataRoot: URL {
        if let env = ProcessInfo.processInfo.environment["HISTODIFF_DATA"] { return URL(fileURLWithPath: env) }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/data")
    }

    /// Writes the `size × size` window at (`y`, `x`) of `image` (and of its mask) as `NAME.png` under `root`.
    func writeCrop(_ sample: Sample, mask: Image, y: Int, x: Int, size: Int, to root: URL) throws {
        func window(_ image: Image) throws -> Image {
            var samples: [UInt16] = []
            for row in y..<(y + size) {
                let start = (row * image.width + x) * image.channels
                samples += image.samples[start..<(start + size * image.channels)]
            }
            return try Image(width: size, height: size, channels: image.channels, bitDepth: image.bitDepth, samples: samples)
        }
        try PNG.write(try window(sample.image), to: root.appendingPathComponent("images/\(sample.name).png").path)
        try PNG.write(try window(mask), to: root.appendingPathComponent("masks/\(sample.name).png").path)
    }

    /// A U-Net trained for a few seconds on random 64×64 crops of 9 MoNuSeg images beats predicting every pixel as
    /// nucleus (the majority-class baseline of the Dice score) on 128×128 crops of 3 held-out images; the best
    /// checkpoint reproduces the best validation Dice.
    func testShortRunOnMoNuSegCropsBeatsTheAllForegroundDice() throws {
        let source = Self.dataRoot.appendingPathComponent("monuseg-train")
        guard FileManager.default.fileExists(atPath: source.path) else {
            throw XCTSkip("real data not found at \(source.path) (set HISTODIFF_DATA or place ../shared/data beside the repository)")
        }
        let full = try Dataset.open(path: source.path, requireMasks: true)
        let root = try temporaryFolder()
        for folder in ["images", "masks"] {
            try FileManager.default.createDirectory(at: root.appendingPathComponent(folder), withIntermediateDirectories: true)
        }
        for index in 0..<12 {
            let sample = try full.sample(at: index)
            try writeCrop(sample, mask: try PNG.read(path: full.items[index].maskPath!), y: 436, x: 436, size: 128, to: root)
        }
        let dataset = try Dataset.open(path: root.path, requireMasks: true)

        var configuration = SupervisedTraining.Configuration(
            architecture: .unet(.cpu(classes: 2)), labelRatio: try Ratio("100%"),
            validationRatio: try Ratio("1/4"))
        configuration.patchSize = 64
        configuration.cropsPerImage = 4
        configuration.batchSize = 8
        configuration.maxEpochs = 10
        configuration.optimizer = .adam(learningRate: 3e-3)
        configuration.seed = 7
        configuration.checkpointDirectory = try temporaryFolder().path
        var steps: [SupervisedTraining.StepProgress] = []
        var epochs: [SupervisedTraining.EpochReport] = []
        let result = try SupervisedTraining.run(configuration, dataset: dataset, callbacks: .init(
            step: { steps.append($0) }, epoch: { epochs.append($0) }))

        XCTAssertEqual(result.split.validation.count, 3)
        XCTAssertEqual(result.split.labelled.count, 9)
        XCTAssertEqual(steps.count, result.steps)
        XCTAssertEqual(result.steps, 10 * 5, "⌈9 images × 4 crops / 8⌉ = 5 steps per epoch")
        XCTAssertEqual(steps.last?.totalSteps, 50)
        XCTAssertEqual(epochs.count, result.epochsRun)
        XCTAssertTrue(steps.allSatisfy { $0.loss.isFinite && $0.iterationsPerSecond >= 0 })

        var foreground = 0, pixels = 0
        for name in result.split.validation {
            let mask = try dataset.sample(at: dataset.items.firstIndex { $0.name == name }!).mask!
            foreground += mask.values.filter { $0 > 0 }.count
            pixels += mask.values.count
        }
        let allForegroundDice = 2 * Double(foreground) / Double(foreground + pixels)
        let summary = epochs.map { String(format: "%.3f", $0.validationDice) }.joined(separator: " ")
        let message = String(format: "best validation Dice %.3f (epoch %d; per epoch: %@) vs all-foreground Dice %.3f (foreground %.1f%% of %d held-out pixels); loss %.3f → %.3f; %.1f it/s; %.1f s",
                             result.bestValidationDice, result.bestEpoch, summary, allForegroundDice,
                             100 * Double(foreground) / Double(pixels), pixels, steps.first!.loss, steps.last!.loss,
                             steps.last!.iterationsPerSecond, result.wallSeconds)
        print(message)
        XCTAssertGreaterThan(result.bestValidationDice, allForegroundDice + 0.05, message)

        // The checkpoint holds the best epoch's weights: reloaded into a fresh model it scores the same.
        let path = try XCTUnwrap(result.checkpointPath)
        let reloaded = configuration.architecture.makeModel(generator: RandomGenerator(seed: 99))
        try reloaded.load(from: path)
        let held = try result.split.indices(in: dataset).validation.map { index -> (image: Planes, truth: LabelMap) in
            let sample = try dataset.sample(at: index)
            return (sample.image.colorPlanes(range: configuration.pixelRange), try LabelMap(sample.mask!))
        }
        XCTAssertEqual(try SupervisedTraining.validate(reloaded, on: held).dice, result.bestValidationDice, accuracy: 1e-9)
    }

    /// A width-4 U-Net trained on every labelled image (a quarter held back) in 32² crops.
    func tinyUNetOn32PixelImages() throws -> SupervisedTraining.Configuration {
        var configuration = SupervisedTraining.Configuration(
            architecture: .unet(.init(classes: 2, width: 4)), labelRatio: try Ratio("100%"), validationRatio: try Ratio("1/4"))
        configuration.patchSize = 32
        return configuration
    }

    /// A synthetic dataset: noisy images with bright squares, masks marking the squares.
    func syntheticDataset(count: Int, size: Int) throws -> Dataset {
        let root = try temporaryFolder()
        for folder in ["images", "masks"] {
            try FileManager.default.createDirectory(at: root.appendingPathComponent(folder), withIntermediateDirectories: true)
        }
        for i in 0..<count {
            let noise = try RandomGenerator(seed: UInt64(i)).uniform([size * size], 0, 60).toArray()
            var mask = [UInt16](repeating: 0, count: size * size)
            for y in (4 + i % 5)..<(size / 2) { for x in 6..<(size / 2 + i % 7) { mask[y * size + x] = 255 } }
            let rgb = (0..<(size * size)).flatMap { p in [UInt16](repeating: UInt16(noise[p]) + (mask[p] > 0 ? 150 : 40), count: 3) }
            try PNG.write(try Image(width: size, height: size, channels: 3, bitDepth: 8, samples: rgb),
                          to: root.appendingPathComponent("images/s\(i).png").path)
            try PNG.write(try Image(width: size, height: size, channels: 1, bitDepth: 8, samples: mask),
                          to: root.appendingPathComponent("masks/s\(i).png").path)
        }
        return try Dataset.open(path: root.path, requireMasks: true)
    }

    func testStopRequestEndsTrainingAtOnceKeepingTheModel() throws {
        let dataset = try syntheticDataset(count: 4, size: 32)
        var configuration = SupervisedTraining.Configuration(
            architecture: .resnetFPN(.init(classes: 2, depth: .resnet18, width: 8, pyramidChannels: 16, segmentationChannels: 8,
                                           groupNormGroups: 4)),
            labelRatio: try Ratio("100%"), validationRatio: try Ratio("1/4"))
        configuration.patchSize = 32
        configuration.batchSize = 2
        configuration.optimizer = .lookaheadRAdam()
        configuration.loss = .dice
        configuration.diceVariant = .toolbelt
        var stepCount = 0
        let result = try SupervisedTraining.run(configuration, dataset: dataset, callbacks: .init(
            step: { _ in stepCount += 1 }, shouldStop: { stepCount == 3 }))
        XCTAssertEqual(result.stopReason, .cancelled)
        XCTAssertEqual(result.steps, 3)
        XCTAssertEqual(result.epochsRun, 0)
        XCTAssertNil(result.checkpointPath)
        XCTAssertEqual(result.bestEpoch, 0)
    }

    /// A run stopped mid-epoch and resumed ends with the weights, history and best epoch of an uninterrupted run
    /// (same batches, dropout masks and optimizer state); a stopped run is not overwritten without `resume`, and
    /// resuming a finished run returns its result without training.
    func testStoppedRunResumesToTheUninterruptedResult() throws {
        let dataset = try syntheticDataset(count: 4, size: 32)
        func configuration(_ folder: URL, resume: Bool = false) throws -> SupervisedTraining.Configuration {
            // The U-Net has dropout in its encoder, so the dropout draws must resume too.
            var configuration = try tinyUNetOn32PixelImages()
            configuration.batchSize = 2
            configuration.cropsPerImage = 2
            configuration.maxEpochs = 3
            configuration.patience = nil
            configuration.checkpointDirectory = folder.path
            configuration.resume = resume
            return configuration
        }
        let whole = try SupervisedTraining.run(configuration(temporaryFolder()), dataset: dataset)
        XCTAssertEqual(whole.steps, 9)

        let folder = try temporaryFolder()
        var steps = 0
        let stopped = try SupervisedTraining.run(configuration(folder), dataset: dataset, callbacks: .init(
            step: { _ in steps += 1 }, shouldStop: { steps == 4 }))  // the first step of epoch 2
        XCTAssertEqual(stopped.stopReason, .cancelled)
        XCTAssertEqual(stopped.epochsRun, 1)
        XCTAssertThrowsError(try SupervisedTraining.run(configuration(folder), dataset: dataset)) { error in
            XCTAssert("\(error)".contains("resume it"), "\(error)")
        }
        var resumedSteps: [Int] = []
        let resumed = try SupervisedTraining.run(configuration(folder, resume: true), dataset: dataset, callbacks: .init(
            step: { resumedSteps.append($0.step) }))
        XCTAssertEqual(resumedSteps, Array(5...9))
        XCTAssertEqual(resumed.stopReason, .completed)
        XCTAssertEqual(resumed.steps, whole.steps)
        XCTAssertEqual(resumed.history.map(\.meanLoss), whole.history.map(\.meanLoss))
        XCTAssertEqual(resumed.history.map(\.validationDice), whole.history.map(\.validationDice))
        XCTAssertEqual(resumed.bestEpoch, whole.bestEpoch)
        let resumedWeights = try resumed.model.checkpointState().tensors, wholeWeights = try whole.model.checkpointState().tensors
        XCTAssertEqual(Set(resumedWeights.keys), Set(wholeWeights.keys))
        XCTAssertEqual(wholeWeights.keys.filter { resumedWeights[$0] != wholeWeights[$0] }.sorted(), [], "tensors that differ")

        let again = try SupervisedTraining.run(configuration(folder, resume: true), dataset: dataset, callbacks: .init(
            step: { _ in XCTFail("a finished run trained again") }))
        XCTAssertEqual(again.history.map(\.validationDice), whole.history.map(\.validationDice))
        XCTAssertEqual(again.bestValidationDice, whole.bestValidationDice)
    }

    func testPatienceStopsAfterEpochsWithoutImprovement() throws {
        let dataset = try syntheticDataset(count: 4, size: 32)
        var configuration = try tinyUNetOn32PixelImages()
        configuration.batchSize = 3
        configuration.maxEpochs = 50
        configuration.patience = 2
        configuration.loss = .crossEntropy
        // A zero learning rate never changes the weights; only BN statistics move, so improvements soon stop.
        configuration.optimizer = .sgdPoly(learningRate: 0)
        let result = try SupervisedTraining.run(configuration, dataset: dataset)
        XCTAssertEqual(result.stopReason, .earlyStopped)
        XCTAssertEqual(result.epochsRun, result.bestEpoch + 2, "history: \(result.history.map(\.validationDice))")
        XCTAssertEqual(result.history.last?.epochsWithoutImprovement, 2)
    }

    /// With `validationCrop`, an epoch's validation Dice is the model's score on the centred crops of the held-back
    /// images (here 12×12 of 32×32, the centre starting at row and column 10).
    func testValidationScoresTheCentredCrop() throws {
        let dataset = try syntheticDataset(count: 4, size: 32)
        var configuration = try tinyUNetOn32PixelImages()
        configuration.batchSize = 2
        configuration.maxEpochs = 1
        configuration.validationCrop = 12
        let result = try SupervisedTraining.run(configuration, dataset: dataset)
        let held = try result.split.indices(in: dataset).validation.map { index -> (image: Planes, truth: LabelMap) in
            let sample = try dataset.sample(at: index)
            return (try sample.image.colorPlanes().crop(y: 10, x: 10, height: 12, width: 12, padding: .zero),
                    try LabelMap(sample.mask!.crop(y: 10, x: 10, height: 12, width: 12, padding: .zero)))
        }
        XCTAssertEqual(try SupervisedTraining.validate(result.model, on: held).dice, result.history[0].validationDice, accuracy: 1e-12)

        configuration.validationCrop = 0
        XCTAssertThrowsError(try SupervisedTraining.run(configuration, dataset: dataset)) { error in
            XCTAssertTrue("\(error)".contains("validation crop 0"), "\(error)")
        }
    }

    func testConfigurationErrorsNameTheProblem() throws {
        let dataset = try syntheticDataset(count: 3, size: 32)
        var configuration = SupervisedTraining.Configuration(
            architecture: .unet(.cpu(classes: 2)), labelRatio: try Ratio("100%"), validationRatio: try Ratio("1/3"))
        configuration.patchSize = 40
        XCTAssertThrowsError(try SupervisedTraining.run(configuration, dataset: dataset)) { error in
            XCTAssertTrue("\(error)".contains("patch size 40") && "\(error)".contains("16"), "\(error)")
        }
        configuration.patchSize = 32
        configuration.architecture = .unet(.cpu(classes: 3))
        XCTAssertThrowsError(try SupervisedTraining.run(configuration, dataset: dataset)) { error in
            XCTAssertTrue("\(error)".contains("3 classes") && "\(error)".contains("has 2"), "\(error)")
        }
    }

    func testLossesOnPerfectAndWrongLogits() throws {
        let labels = Tensor([0, 1, 1, 0], shape: [1, 2, 2])
        let perfect = Tensor([20, -20, -20, 20, -20, 20, 20, -20], shape: [1, 2, 2, 2])
        for loss in SupervisedLoss.allCases {
            XCTAssertEqual(try loss.value(logits: perfect, labels: labels, diceVariant: .ssl4mis).item(), 0, accuracy: 1e-4, "\(loss)")
            let wrong = try loss.value(logits: 0 - perfect, labels: labels, diceVariant: .ssl4mis).item()
            XCTAssertGreaterThan(wrong, 0.9, "\(loss)")
        }
        let ce = try Loss.crossEntropy(logits: 0 - perfect, labels: labels).item()
        let dice = try Loss.dice(probabilities: (0 - perfect).softmax(axis: 1), labels: labels, variant: .ssl4mis).item()
        XCTAssertEqual(try SupervisedLoss.crossEntropyDice.value(logits: 0 - perfect, labels: labels, diceVariant: .ssl4mis).item(),
                       (ce + dice) / 2, accuracy: 1e-5)
    }
}

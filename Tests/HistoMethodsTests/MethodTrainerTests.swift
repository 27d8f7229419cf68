import Foundation
import XCTest
import HistoCore
import HistoData
import HistoMetrics
import HistoNN
@testable import HistoMethods

final class MethodTrainerTests: XCTestCase {
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
            return try Image(width: size, height: size, channels: image.channels, bitDepth: image.bitDepth,
                             samples: samples)
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
            throw XCTSkip("real data not found at \(source.path) "
                          + "(set HISTODIFF_DATA or place ../shared/data beside the repository)")
        }
        let full = try Dataset.open(path: source.path, requireMasks: true)
        let root = try temporaryFolder()
        for folder in ["images", "masks"] {
            try FileManager.default.createDirectory(at: root.appendingPathComponent(folder),
                                                    withIntermediateDirectories: true)
        }
        for index in 0..<12 {
            let sample = try full.sample(at: index)
            try writeCrop(sample, mask: try PNG.read(path: full.items[index].maskPath!), y: 436, x: 436, size: 128,
                          to: root)
        }
        let dataset = try Dataset.open(path: root.path, requireMasks: true)

        var plan = TrainingPlan(labelRatio: try Ratio("100%"), validationRatio: try Ratio("1/4"))
        plan.patchSize = 64
        plan.cropsPerImage = 4
        plan.batchSize = 8
        plan.length = .epochs(10)
        plan.optimizer = .adam(learningRate: 3e-3)
        plan.seed = 7
        var session = TrainingSession(directory: try temporaryFolder().path)
        session.progress = .none
        let result = try MethodTrainer.train(plan: plan, dataset: dataset, session: session) { setup in
            SupervisedMethod(SegmentationUNet(.cpu(classes: 2), generator: RandomGenerator(seed: 7)),
                             loss: .crossEntropyDice, setup: setup)
        }

        XCTAssertEqual(result.split.validation.count, 3)
        XCTAssertEqual(result.split.labelled.count, 9)
        XCTAssertEqual(result.steps, 10 * 5, "⌈9 images × 4 crops / 8⌉ = 5 steps per epoch")
        XCTAssertEqual(result.history.count, 10)
        let log = try MetricsLog.read(path: session.directory + "/metrics.csv")
        let losses = try log.series("loss").map(\.value)
        XCTAssertEqual(losses.count, 50)
        XCTAssertTrue(losses.allSatisfy(\.isFinite))
        XCTAssertEqual(try log.series("val_dice").map(\.step), Array(stride(from: 5, through: 50, by: 5)))

        var foreground = 0, pixels = 0
        for name in result.split.validation {
            let mask = try dataset.sample(at: dataset.items.firstIndex { $0.name == name }!).mask!
            foreground += mask.values.filter { $0 > 0 }.count
            pixels += mask.values.count
        }
        let allForegroundDice = 2 * Double(foreground) / Double(foreground + pixels)
        let best = try XCTUnwrap(result.best)
        let summary = result.history.map { String(format: "%.3f", $0.dice) }.joined(separator: " ")
        let message = String(format: "best validation Dice %.3f (step %d; per epoch: %@) vs all-foreground Dice %.3f "
                             + "(foreground %.1f%% of %d held-out pixels); loss %.3f → %.3f; %.1f s",
                             best.dice, best.step, summary, allForegroundDice,
                             100 * Double(foreground) / Double(pixels), pixels, losses.first!, losses.last!,
                             result.wallSeconds)
        print(message)
        XCTAssertGreaterThan(best.dice, allForegroundDice + 0.05, message)

        // best.safetensors holds the best validation's weights: reloaded into a fresh model it scores the same.
        let path = try XCTUnwrap(result.bestWeights)
        let reloaded = SegmentationUNet(.cpu(classes: 2), generator: RandomGenerator(seed: 99))
        try reloaded.load(from: path)
        let held = try MethodTrainer.validationImages(try result.split.indices(in: dataset).validation,
                                                      dataset: dataset, plan: plan)
        let tiling = InferenceTiling(size: 64, stride: 64)
        XCTAssertEqual(try MethodTrainer.validate(reloaded, on: held, tiling: tiling).dice, best.dice, accuracy: 1e-9)
    }

    /// Every labelled image but a quarter held back, 32² crops, batch 2, two crops per image and epoch.
    func tinyPlan(epochs: Int = 3, labels: String = "100%") throws -> TrainingPlan {
        var plan = TrainingPlan(labelRatio: try Ratio(labels), validationRatio: try Ratio("1/4"))
        plan.patchSize = 32
        plan.batchSize = 2
        plan.cropsPerImage = 2
        plan.length = .epochs(epochs)
        plan.patience = nil
        plan.optimizer = .adam(learningRate: 1e-3)
        return plan
    }

    func session(_ folder: URL? = nil) throws -> TrainingSession {
        var session = TrainingSession(directory: try (folder ?? temporaryFolder()).path)
        session.progress = .none
        return session
    }

    /// A width-4 U-Net (it has dropout, so its draws must resume too).
    func tinyUNet(seed: UInt64 = 0) -> SegmentationUNet {
        SegmentationUNet(.init(classes: 2, width: 4), generator: RandomGenerator(seed: seed))
    }

    /// A run stopped by SIGINT mid-epoch and resumed ends with the weights, teacher, second network, optimizer
    /// states and history of an uninterrupted run: the test method uses both streams, an EMA teacher and a second
    /// network with its own optimizer. A resumed finished run returns its result without training.
    func testInterruptedRunOfATwoStreamMethodResumesBitForBit() throws {
        let dataset = try syntheticDataset(count: 4, size: 32, unlabelled: 3)
        var plan = try tinyPlan(labels: "2")
        plan.checkpointEvery = 2
        var stopAt: Int?
        var stepsSeen: [Int] = []
        func train(_ session: TrainingSession) throws -> (TrainingResult, TwoStreamTestMethod) {
            var method: TwoStreamTestMethod!
            let result = try MethodTrainer.train(plan: plan, dataset: dataset, session: session) { setup in
                method = TwoStreamTestMethod(student: self.tinyUNet(seed: 1), teacher: self.tinyUNet(seed: 1),
                                             second: self.tinyUNet(seed: 2), setup: setup) { step in
                    stepsSeen.append(step)
                    if step == stopAt { raise(SIGINT) }
                }
                return method
            }
            return (result, method)
        }
        let (whole, wholeMethod) = try train(session())
        XCTAssertEqual(whole.steps, 6, "2 labelled images × 2 crops / batch 2 = 2 steps per epoch, 3 epochs")
        XCTAssertEqual(whole.outcome, .completed)

        let folder = try temporaryFolder()
        stopAt = 2  // the first step of epoch 2; the signal is seen after it
        stepsSeen = []
        let (stopped, _) = try train(session(folder))
        XCTAssertEqual(stopped.outcome, .interrupted(signal: SIGINT))
        XCTAssertEqual(stopped.steps, 3)
        stopAt = nil
        stepsSeen = []
        let (resumed, resumedMethod) = try train(session(folder))
        XCTAssertEqual(stepsSeen, [3, 4, 5])
        XCTAssertEqual(resumed.outcome, .completed)
        XCTAssertEqual(resumed.history, whole.history)
        for (name, a, b) in [("student", wholeMethod.student.model, resumedMethod.student.model),
                             ("teacher", wholeMethod.teacher, resumedMethod.teacher),
                             ("second", wholeMethod.second.model, resumedMethod.second.model)]
             as [(String, Module, Module)] {
            let x = try a.checkpointState().tensors, y = try b.checkpointState().tensors
            XCTAssertEqual(x.keys.filter { x[$0] != y[$0] }.sorted(), [], "\(name): tensors that differ")
        }
        let optimizerA = try wholeMethod.second.optimizer.checkpointState().tensors
        let optimizerB = try resumedMethod.second.optimizer.checkpointState().tensors
        XCTAssertEqual(optimizerA, optimizerB, "the second network's optimizer state")
        XCTAssertEqual(try MetricsLog.read(path: folder.path + "/metrics.csv").series("consistency").map(\.value),
                       try MetricsLog.read(path: whole.bestWeights!.replacingOccurrences(of: "best.safetensors",
                                                                                         with: "metrics.csv"))
                        .series("consistency").map(\.value))

        stepsSeen = []
        let (again, _) = try train(session(folder))
        XCTAssertEqual(stepsSeen, [], "a finished run trains no more")
        XCTAssertEqual(again.history, whole.history)
    }

    func testPatienceStopsAfterValidationsWithoutImprovement() throws {
        let dataset = try syntheticDataset(count: 4, size: 32)
        var plan = try tinyPlan(epochs: 50)
        plan.batchSize = 3
        plan.patience = 2
        // A zero learning rate never changes the weights; only BN statistics move, so improvements soon stop.
        plan.optimizer = .sgdPoly(learningRate: 1e-30)
        let result = try MethodTrainer.train(plan: plan, dataset: dataset, session: session()) { setup in
            SupervisedMethod(self.tinyUNet(), loss: .crossEntropy, setup: setup)
        }
        XCTAssertEqual(result.outcome, .stoppedEarly)
        let bestIndex = try XCTUnwrap(result.history.lastIndex(where: \.isBest))
        XCTAssertEqual(result.history.count, bestIndex + 3, "history: \(result.history.map(\.dice))")
    }

    /// With `validationCrop`, a validation scores the model on the centred crops of the held-back images (here
    /// 12×12 of 32×32, the centre starting at row and column 10).
    func testValidationScoresTheCentredCrop() throws {
        let dataset = try syntheticDataset(count: 4, size: 32)
        var plan = try tinyPlan(epochs: 1)
        plan.validationCrop = 12
        plan.validationTiling = InferenceTiling(size: 16, stride: 8)
        let result = try MethodTrainer.train(plan: plan, dataset: dataset, session: session()) { setup in
            SupervisedMethod(self.tinyUNet(), loss: .crossEntropyDice, setup: setup)
        }
        let held = try result.split.indices(in: dataset).validation.map { index -> (image: Planes, truth: LabelMap) in
            let sample = try dataset.sample(at: index)
            return (try sample.image.colorPlanes().crop(y: 10, x: 10, height: 12, width: 12, padding: .zero),
                    try LabelMap(sample.mask!.crop(y: 10, x: 10, height: 12, width: 12, padding: .zero)))
        }
        XCTAssertEqual(try MethodTrainer.validate(result.model, on: held, tiling: plan.validationTiling!).dice,
                       result.history[0].dice, accuracy: 1e-12)

        plan.validationCrop = 0
        XCTAssertThrowsError(try MethodTrainer.train(plan: plan, dataset: dataset, session: session()) { setup in
            SupervisedMethod(self.tinyUNet(), loss: .crossEntropyDice, setup: setup)
        }) { error in XCTAssertTrue("\(error)".contains("validation crop 0"), "\(error)") }
    }

    /// Validation goes through tiles: the engine memory it needs at its peak is that of a tile, whatever the
    /// image's size (a 2048² image needs no more than a 256² one, where whole-image inference needed 64 times more).
    func testValidationMemoryFollowsTheTileNotTheImage() throws {
        let model = tinyUNet()
        model.train(false)
        let tiling = InferenceTiling(size: 64, stride: 64)
        func peak(side: Int) throws -> Int {
            let image = try Planes(channels: 3, height: side, width: side,
                                   values: try RandomGenerator(seed: 1).uniform([3 * side * side], -1, 1).toArray())
            let truth = try LabelMap(width: side, height: side, labels: [Int32](repeating: 1, count: side * side))
            let pool = CPUBackend.shared.pool
            pool.resetPeak()
            let before = pool.liveElements
            _ = try MethodTrainer.validate(model, on: [(image, truth)], tiling: tiling)
            return pool.peakLiveElements - before
        }
        let small = try peak(side: 256), large = try peak(side: 2048)
        XCTAssertGreaterThan(small, 0)
        XCTAssertLessThan(large, 2 * small, "peak engine elements: \(large) for 2048², \(small) for 256²")
    }

    func testConfigurationErrorsNameTheProblem() throws {
        let dataset = try syntheticDataset(count: 3, size: 32)
        var plan = try tinyPlan()
        plan.patchSize = 40
        XCTAssertThrowsError(try MethodTrainer.train(plan: plan, dataset: dataset, session: session()) { setup in
            SupervisedMethod(SegmentationUNet(.cpu(classes: 2), generator: RandomGenerator(seed: 0)), loss: .dice,
                             setup: setup)
        }) { error in XCTAssertTrue("\(error)".contains("patch size 40") && "\(error)".contains("16"), "\(error)") }
        plan.patchSize = 32
        XCTAssertThrowsError(try MethodTrainer.train(plan: plan, dataset: dataset, session: session()) { setup in
            SupervisedMethod(SegmentationUNet(.cpu(classes: 3), generator: RandomGenerator(seed: 0)), loss: .dice,
                             setup: setup)
        }) { error in XCTAssertTrue("\(error)".contains("3 classes") && "\(error)".contains("has 2"), "\(error)") }
        plan.patchSize = 64
        XCTAssertThrowsError(try MethodTrainer.train(plan: plan, dataset: dataset, session: session()) { setup in
            SupervisedMethod(self.tinyUNet(), loss: .dice, setup: setup)
        }) { error in XCTAssertTrue("\(error)".contains("use a patch of at most 32"), "\(error)") }
        plan.patchSize = 32
        plan.batchSize = 1 << 20
        XCTAssertThrowsError(try MethodTrainer.train(plan: plan, dataset: dataset, session: session()) { setup in
            SupervisedMethod(self.tinyUNet(), loss: .dice, setup: setup)
        }) { error in XCTAssertTrue("\(error)".contains("the largest batch that fits is"), "\(error)") }
        plan.batchSize = 2
        plan.optimizer = .adam(learningRate: .nan)
        XCTAssertThrowsError(try MethodTrainer.train(plan: plan, dataset: dataset, session: session()) { setup in
            SupervisedMethod(self.tinyUNet(), loss: .dice, setup: setup)
        }) { error in XCTAssertTrue("\(error)".contains("learning rate nan must be positive and finite"), "\(error)") }
        var semi = try tinyPlan()
        semi.labelRatio = try Ratio("100%")
        XCTAssertThrowsError(try MethodTrainer.train(plan: semi, dataset: dataset, session: session()) { setup in
            TwoStreamTestMethod(student: self.tinyUNet(), teacher: self.tinyUNet(), second: self.tinyUNet(seed: 2),
                                setup: setup)
        }) { error in XCTAssertTrue("\(error)".contains("unlabelled"), "\(error)") }
    }

    /// A loss that turns NaN stops the run naming the step and the term; the last good checkpoint stays and
    /// nothing of the bad step is saved.
    func testNonFiniteLossTermStopsTheRunKeepingTheLastCheckpoint() throws {
        let dataset = try syntheticDataset(count: 4, size: 32, unlabelled: 3)
        var plan = try tinyPlan(labels: "2")
        plan.checkpointEvery = 2
        let folder = try temporaryFolder()
        XCTAssertThrowsError(try MethodTrainer.train(plan: plan, dataset: dataset, session: session(folder)) { setup in
            let method = TwoStreamTestMethod(student: self.tinyUNet(), teacher: self.tinyUNet(),
                                             second: self.tinyUNet(seed: 2),
                                             setup: setup)
            method.poisonStep = 3
            return method
        }) { error in
            XCTAssertTrue("\(error)".contains("step 4: consistency is nan"), "\(error)")
            XCTAssertTrue("\(error)".contains("checkpoint of step 2"), "\(error)")
        }
        let saved = try XCTUnwrap(TrainingCheckpoint.existing(folder.path + "/checkpoint"))
        let weights = try SafeTensors.read(saved + "/" + TrainingCheckpoint.weightsFileName)
        XCTAssertEqual(weights.metadata["histodiff.step"], "2")
        XCTAssertEqual(try MetricsLog.read(path: folder.path + "/metrics.csv").rows.count, 3, "steps 1-3 logged, not 4")
    }

    /// A second run on a folder in use stops naming the holder; the folder is free again once the run ends.
    func testOneRunPerFolder() throws {
        let dataset = try syntheticDataset(count: 4, size: 32)
        let folder = try temporaryFolder()
        let holder = try RunLock.acquire(directory: folder.path)
        let plan = try tinyPlan(epochs: 1)
        XCTAssertThrowsError(try MethodTrainer.train(plan: plan, dataset: dataset, session: session(folder)) { setup in
            SupervisedMethod(self.tinyUNet(), loss: .dice, setup: setup)
        }) { error in XCTAssertTrue("\(error)".contains("is in use by the run of process \(getpid())"), "\(error)") }
        holder.release()
        _ = try MethodTrainer.train(plan: plan, dataset: dataset, session: session(folder)) { setup in
            SupervisedMethod(self.tinyUNet(), loss: .dice, setup: setup)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.path + "/" + RunLock.fileName),
                       "released at the end")
    }

    /// A folder holding a run resumes only with the settings it was started with, naming those that differ.
    func testResumeWithOtherSettingsIsRefused() throws {
        let dataset = try syntheticDataset(count: 4, size: 32)
        let folder = try temporaryFolder()
        let plan = try tinyPlan(epochs: 1)
        _ = try MethodTrainer.train(plan: plan, dataset: dataset, session: session(folder)) { setup in
            SupervisedMethod(self.tinyUNet(), loss: .dice, setup: setup)
        }
        var other = plan
        other.batchSize = 4
        XCTAssertThrowsError(try MethodTrainer.train(plan: other, dataset: dataset, session: session(folder)) { setup in
            SupervisedMethod(self.tinyUNet(), loss: .dice, setup: setup)
        }) { error in XCTAssertTrue("\(error)".contains("batch: 2 then, 4 now"), "\(error)") }
    }

    /// Runs recorded before the MONAI transforms existed (their augmentation without those fields) and runs that
    /// spelled the fields out at their defaults both resume; a run with a MONAI transform on does not match either.
    func testRecordedAugmentationsOfEveryFormResume() throws {
        let plan = try tinyPlan(epochs: 1)
        let path = try temporaryFolder().appendingPathComponent(MethodTrainer.settingsFileName).path
        let current = plan.settings["augmentation"]!
        XCTAssertFalse(current.contains("axisFlipProbability"), current)
        let spelledOut = String(describing: plan.augmentation)
        XCTAssertTrue(spelledOut.hasSuffix("keepSizeZoom: ClosedRange(0.9...1.1))"), spelledOut)
        var dtseg = plan
        dtseg.augmentation = .dtseg
        for (recorded, resumes) in [(current, true), (spelledOut, true), (dtseg.settings["augmentation"]!, false)] {
            var settings = plan.settings
            settings["augmentation"] = recorded
            try MethodTrainer.writeJSON(settings, to: path)
            if resumes {
                XCTAssertNoThrow(try MethodTrainer.checkResumable(settings: plan.settings, path: path))
            } else {
                XCTAssertThrowsError(try MethodTrainer.checkResumable(settings: plan.settings, path: path)) {
                    XCTAssertTrue("\($0)".contains("augmentation: "), "\($0)")
                }
            }
        }
    }

    func testLossesOnPerfectAndWrongLogits() throws {
        let labels = Tensor([0, 1, 1, 0], shape: [1, 2, 2])
        let perfect = Tensor([20, -20, -20, 20, -20, 20, 20, -20], shape: [1, 2, 2, 2])
        for loss in SupervisedLoss.allCases {
            XCTAssertEqual(try loss.value(logits: perfect, labels: labels, diceVariant: .ssl4mis).item(), 0,
                           accuracy: 1e-4, "\(loss)")
            let wrong = try loss.value(logits: 0 - perfect, labels: labels, diceVariant: .ssl4mis).item()
            XCTAssertGreaterThan(wrong, 0.9, "\(loss)")
        }
        let ce = try Loss.crossEntropy(logits: 0 - perfect, labels: labels).item()
        let dice = try Loss.dice(probabilities: (0 - perfect).softmax(axis: 1), labels: labels, variant: .ssl4mis)
            .item()
        XCTAssertEqual(try SupervisedLoss.crossEntropyDice.value(logits: 0 - perfect, labels: labels,
                                                                 diceVariant: .ssl4mis).item(),
                       (ce + dice) / 2, accuracy: 1e-5)
    }
}

import Foundation
import HistoCore
import HistoData
import HistoMetrics
import HistoNN

/// The supervised loss on logits [N, K, H, W] and class ids [N, H, W].
public enum SupervisedLoss: String, Equatable, Sendable, CaseIterable {
    case crossEntropy = "ce"
    /// Soft Dice of softmax(logits), in the configured variant.
    case dice
    /// ½(CE + Dice): SSL4MIS's supervised loss.
    case crossEntropyDice = "ce+dice"

    public func value(logits: Tensor, labels: Tensor, diceVariant: Loss.DiceVariant) -> Tensor {
        let dice = { Loss.dice(probabilities: logits.softmax(axis: 1), labels: labels, variant: diceVariant) }
        switch self {
        case .crossEntropy: return Loss.crossEntropy(logits: logits, labels: labels)
        case .dice: return dice()
        case .crossEntropyDice: return 0.5 * (Loss.crossEntropy(logits: logits, labels: labels) + dice())
        }
    }
}

/// The optimizer and learning-rate rule of a supervised run.
public enum SupervisedOptimizer: Equatable, Sendable {
    /// SSL4MIS: SGD with momentum and weight decay on every parameter, lr·(1 − step/total)^power over the run.
    case sgdPoly(learningRate: Float = 0.01, momentum: Float = 0.9, weightDecay: Float = 1e-4, power: Float = 0.9)
    /// Adam (weight decay added to the gradient), constant learning rate.
    case adam(learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999, weightDecay: Float = 0)
    /// DTSeg's FPN baseline (SPEC §1): Lookahead (k 6, α 0.5) around RAdam with decoupled weight decay on weights
    /// of rank > 1, constant learning rate.
    case lookaheadRAdam(learningRate: Float = 1e-3, weightDecay: Float = 1e-5)

    func make(for parameters: [Parameter], totalSteps: Int) -> (any Optimizer, any LearningRateSchedule) {
        switch self {
        case let .sgdPoly(lr, momentum, weightDecay, power):
            return (SGD([ParameterGroup(parameters, weightDecay: weightDecay)], learningRate: lr, momentum: momentum),
                    PolySchedule(base: lr, totalSteps: totalSteps, power: power))
        case let .adam(lr, beta1, beta2, weightDecay):
            return (Adam([ParameterGroup(parameters, weightDecay: weightDecay)], learningRate: lr, beta1: beta1, beta2: beta2),
                    ConstantSchedule(lr))
        case let .lookaheadRAdam(lr, weightDecay):
            let radam = RAdam(ParameterGroup.weightDecaySplit(parameters, weightDecay: weightDecay), learningRate: lr,
                              decoupledWeightDecay: true)
            return (Lookahead(radam, k: 6, alpha: 0.5, slowStart: .firstSync), ConstantSchedule(lr))
        }
    }
}

/// Training a segmentation network on the labelled images of a dataset only (SPEC §8 "SupOnly"; with a label ratio of
/// 100% the fully supervised baseline), validating on held-back images after every epoch.
///
/// An epoch is ⌈labelled images × crops per image / batch size⌉ steps of random augmented crops. After each epoch the
/// model predicts every validation image whole (see `SegmentationModel.logits(of:tiling:)`) in eval mode; the score
/// is the Dice over the validation pixels pooled (`ClassScoreSummary`, `.pooled`), averaged over the foreground
/// classes (for a binary task, the nucleus/gland Dice). The best epoch's weights are kept (and written, when a
/// checkpoint directory is given); training stops after `maxEpochs`, after `patience` epochs without a better
/// score, or when `Callbacks.shouldStop` says so. Independent of any CLI: a configuration, a dataset and callbacks in,
/// a `Result` out.
public enum SupervisedTraining {
    /// Everything of a run but the network and the loss: which images train and validate, the crops and batches,
    /// the optimizer, the epochs and early stopping, validation and the best checkpoint. Every method trained by
    /// `train(_:plan:dataset:split:callbacks:loss:)` shares it; its fields read and write through the methods'
    /// configurations (`configuration.patchSize = 128`).
    public struct Plan: Sendable {
        public var labelRatio: Ratio
        public var validationRatio: Ratio
        /// Orders the split (`DataSplit.make`).
        public var splitSeed: UInt64 = 0
        /// Weights, dropout and the batch stream.
        public var seed: UInt64 = 0
        /// Side of the square training crops; a multiple of the model's `inputMultiple`.
        public var patchSize = 256
        public var cropsPerImage = 8
        public var batchSize = 24
        public var maxEpochs = 200
        /// Epochs without a better validation score before stopping; nil never stops early.
        public var patience: Int? = 30
        public var optimizer = SupervisedOptimizer.sgdPoly()
        public var augmentation = Augmentation()
        /// Train on the strong view (geometry and colour changes) instead of geometry alone.
        public var photometric = false
        public var pixelRange = PixelRange.minusOneToOne
        /// Whole-image validation in one pass when nil, else in tiles.
        public var validationTiling: InferenceTiling?
        /// Validation scores the centred square of this side of each validation image (the whole image where it is
        /// smaller; whole images when nil): on a CPU, whole 1000² images make every epoch's validation outlast its
        /// training steps.
        public var validationCrop: Int?
        /// Where `best.safetensors` and the resume state (`resume/`, saved after every epoch and when
        /// `Callbacks.shouldStop` ends the run) are written; nil keeps everything in memory only.
        public var checkpointDirectory: String?
        /// Continue from `<checkpointDirectory>/resume/` when it holds a saved state: the same weights, optimizer
        /// state, dropout draws, batches, best epoch and history as if the run had not stopped. Without it a
        /// directory holding a resume state is an error (nothing is overwritten by accident).
        public var resume = false

        public init(labelRatio: Ratio, validationRatio: Ratio) {
            self.labelRatio = labelRatio
            self.validationRatio = validationRatio
        }
    }

    /// A supervised run: the network, the loss and the plan, whose fields read and write through the configuration.
    @dynamicMemberLookup
    public struct Configuration: Sendable {
        public var architecture: SegmentationArchitecture
        public var loss = SupervisedLoss.crossEntropyDice
        public var diceVariant = Loss.DiceVariant.ssl4mis
        public var plan: Plan

        public init(architecture: SegmentationArchitecture, labelRatio: Ratio, validationRatio: Ratio) {
            self.architecture = architecture
            plan = Plan(labelRatio: labelRatio, validationRatio: validationRatio)
        }

        public subscript<Value>(dynamicMember field: WritableKeyPath<Plan, Value>) -> Value {
            get { plan[keyPath: field] }
            set { plan[keyPath: field] = newValue }
        }

        /// The SSL4MIS supervised baseline: the Ciampi/SSL4MIS U-Net, ½(CE + Dice), SGD 0.01 with poly decay, batch 24
        /// of 256² crops.
        public static func ssl4mis(classes: Int, labelRatio: Ratio, validationRatio: Ratio) -> Configuration {
            Configuration(architecture: .unet(.paper(classes: classes)), labelRatio: labelRatio, validationRatio: validationRatio)
        }

        /// DTSeg's supervised ResNet34-FPN (randomly initialised: no ImageNet weights offline): toolbelt Dice,
        /// Lookahead-RAdam 1e-3, batch 24, photometric augmentation, patience 30.
        public static func resnet34FPN(classes: Int, labelRatio: Ratio, validationRatio: Ratio) -> Configuration {
            var configuration = Configuration(architecture: .resnetFPN(.paper(classes: classes)), labelRatio: labelRatio,
                                              validationRatio: validationRatio)
            configuration.loss = .dice
            configuration.diceVariant = .toolbelt
            configuration.optimizer = .lookaheadRAdam()
            configuration.photometric = true
            return configuration
        }

        /// For a 2-core CPU: the half-width U-Net on 128² crops, batch 8, Adam 1e-3, ½(CE + Dice), 40 epochs.
        public static func cpu(classes: Int, labelRatio: Ratio, validationRatio: Ratio) -> Configuration {
            var configuration = Configuration(architecture: .unet(.cpu(classes: classes)), labelRatio: labelRatio,
                                              validationRatio: validationRatio)
            configuration.patchSize = 128
            configuration.batchSize = 8
            configuration.cropsPerImage = 4
            configuration.maxEpochs = 40
            configuration.patience = 10
            configuration.optimizer = .adam()
            return configuration
        }
    }

    /// Reported after every optimizer step.
    public struct StepProgress: Sendable {
        public let epoch: Int
        /// Optimizer steps so far (1 after the first).
        public let step: Int
        /// Steps at `maxEpochs` (the end unless training stops early).
        public let totalSteps: Int
        public let loss: Float
        public let learningRate: Float
        /// Over the last (up to) 20 steps.
        public let iterationsPerSecond: Double
    }

    /// Reported after every epoch's validation.
    public struct EpochReport: Sendable, Codable {
        /// 1-based.
        public let epoch: Int
        public let meanLoss: Float
        /// Pooled foreground Dice and IoU over the validation images.
        public let validationDice: Double
        public let validationIoU: Double
        public let isBest: Bool
        public let epochsWithoutImprovement: Int
        /// Training and validation time of the epoch.
        public let seconds: Double
    }

    public struct Callbacks {
        public var step: ((StepProgress) -> Void)?
        public var epoch: ((EpochReport) -> Void)?
        /// Asked after every step; true ends training there (the best weights so far are kept).
        public var shouldStop: (() -> Bool)?

        public init(step: ((StepProgress) -> Void)? = nil, epoch: ((EpochReport) -> Void)? = nil,
                    shouldStop: (() -> Bool)? = nil) {
            self.step = step
            self.epoch = epoch
            self.shouldStop = shouldStop
        }
    }

    public enum StopReason: String, Sendable, Codable {
        case completed, earlyStopped, cancelled
    }

    public struct Result {
        /// The trained network holding the best epoch's weights, in eval mode.
        public let model: any SegmentationModel
        public let split: DataSplit
        /// -infinity when no epoch finished.
        public let bestValidationDice: Double
        public let bestValidationIoU: Double
        /// 0 when no epoch finished.
        public let bestEpoch: Int
        public let epochsRun: Int
        public let steps: Int
        public let wallSeconds: Double
        /// `<checkpointDirectory>/best.safetensors` (model weights and BN statistics), when written.
        public let checkpointPath: String?
        public let stopReason: StopReason
        public let history: [EpochReport]
    }

    public static let checkpointFileName = "best.safetensors"
    public static let resumeDirectoryName = "resume"

    /// Trains `model` (default: a fresh `configuration.architecture` seeded with `configuration.seed`) on the labelled
    /// images of `split` (default: `DataSplit.make` with the configured ratios and split seed) with the configured loss.
    public static func run(_ configuration: Configuration, dataset: Dataset, split: DataSplit? = nil,
                           model: (any SegmentationModel)? = nil, callbacks: Callbacks = Callbacks()) throws -> Result {
        let model = model ?? configuration.architecture.makeModel(generator: RandomGenerator(seed: configuration.seed))
        return try train(model, plan: configuration.plan, dataset: dataset, split: split, callbacks: callbacks) { images, labels in
            configuration.loss.value(logits: model(images), labels: labels, diceVariant: configuration.diceVariant)
        }
    }

    /// The loop of every supervised method (see the type's doc): trains `model` as `plan` says on the labelled
    /// images of `split` (default: `DataSplit.make` with the plan's ratios and split seed), minimising
    /// `loss(images, labels)` — images [N, 3, S, S] in the plan's pixel range, class ids [N, S, S] — which runs the
    /// model in training mode.
    public static func train(_ model: any SegmentationModel, plan: Plan, dataset: Dataset, split: DataSplit? = nil,
                             callbacks: Callbacks = Callbacks(),
                             loss: (_ images: Tensor, _ labels: Tensor) -> Tensor) throws -> Result {
        let started = Date()
        try check(plan, model: model, dataset: dataset)
        let split = try split ?? DataSplit.make(dataset: dataset, labelRatio: plan.labelRatio,
                                                validationRatio: plan.validationRatio, seed: plan.splitSeed)
        let indices = try split.indices(in: dataset)
        guard !indices.validation.isEmpty else {
            throw EngineError.invalidValue(op: "SupervisedTraining", message: "the split has no validation images")
        }
        let validation = try indices.validation.map { index -> (image: Planes, truth: LabelMap) in
            let sample = try dataset.sample(at: index)
            let image = sample.image.colorPlanes(range: plan.pixelRange), mask = sample.mask!
            guard let side = plan.validationCrop else { return (image, try LabelMap(mask)) }
            let height = min(side, image.height), width = min(side, image.width)
            let y = (image.height - height) / 2, x = (image.width - width) / 2
            return (try image.crop(y: y, x: x, height: height, width: width, padding: .zero),
                    try LabelMap(mask.crop(y: y, x: x, height: height, width: width, padding: .zero)))
        }

        let stepsPerEpoch = (indices.labelled.count * plan.cropsPerImage + plan.batchSize - 1) / plan.batchSize
        let totalSteps = stepsPerEpoch * plan.maxEpochs
        let parameters = model.trainableParameters()
        let (optimizer, schedule) = plan.optimizer.make(for: parameters, totalSteps: totalSteps)

        let loop = LoopState()
        var components: [String: any CheckpointableState] = ["optimizer": optimizer, "loop": loop]
        for (i, generator) in dropoutGenerators(of: model).enumerated() { components["dropout\(i)"] = generator }
        let resumeDirectory = plan.checkpointDirectory.map { URL(fileURLWithPath: $0).appendingPathComponent(resumeDirectoryName).path }
        if let resumeDirectory, let saved = TrainingCheckpoint.existing(resumeDirectory) {
            guard plan.resume else {
                throw EngineError.file(path: saved, message: "holds the saved state of an earlier run: resume it, or choose another folder to start over")
            }
            let restored = try TrainingCheckpoint.load(from: saved, model: model, components: components)
            guard restored.metadata[stepsPerEpochKey] == String(stepsPerEpoch) else {
                throw EngineError.file(path: saved, message: "was saved with \(restored.metadata[stepsPerEpochKey] ?? "?") steps per epoch, "
                                       + "this run has \(stepsPerEpoch): resume with the options it was started with")
            }
        }
        var step: Int { (loop.epoch - 1) * stepsPerEpoch + loop.stepInEpoch }
        func saveResumeState() throws {
            guard let resumeDirectory else { return }
            try TrainingCheckpoint.replace(resumeDirectory, model: model, step: step, components: components,
                                           metadata: [stepsPerEpochKey: String(stepsPerEpoch)])
        }

        var options = LoaderOptions(batchSize: plan.batchSize,
                                    patches: .randomCrops(size: plan.patchSize, perImage: plan.cropsPerImage),
                                    labelled: true)
        options.augmentation = plan.augmentation
        options.views = plan.photometric ? .strong : .weak
        options.seed = plan.seed
        options.range = plan.pixelRange
        options.skippedBatches = step
        let loader = try BatchLoader(dataset: dataset, indices: indices.labelled, options: options)
        defer { loader.close() }

        var checkpointPath = plan.checkpointDirectory.flatMap { directory -> String? in
            let path = URL(fileURLWithPath: directory).appendingPathComponent(checkpointFileName).path
            return loop.best.epoch > 0 && FileManager.default.fileExists(atPath: path) ? path : nil
        }
        var stepTimes: [Date] = []
        model.train(true)
        while loop.finished == nil && loop.epoch <= plan.maxEpochs {
            let epoch = loop.epoch
            let epochStarted = Date()
            while loop.stepInEpoch < stepsPerEpoch {
                guard let batch = try loader.next(), let labels = batch.labels else {
                    throw EngineError.invalidValue(op: "SupervisedTraining", message: "the labelled batch stream ended")
                }
                optimizer.learningRate = schedule.learningRate(at: optimizer.stepCount)
                let (value, gradients) = try Gradients.of(loss(batch.images, labels), wrt: parameters,
                                                          alongside: model.pendingBufferUpdates())
                try model.commitBufferUpdates()
                try optimizer.step(gradients)
                loop.stepInEpoch += 1
                loop.lossSum += value

                stepTimes.append(Date())
                if stepTimes.count > 21 { stepTimes.removeFirst() }
                let window = stepTimes.count > 1 ? stepTimes.last!.timeIntervalSince(stepTimes.first!) : 0
                callbacks.step?(StepProgress(epoch: epoch, step: step, totalSteps: totalSteps, loss: value,
                                             learningRate: optimizer.learningRate,
                                             iterationsPerSecond: window > 0 ? Double(stepTimes.count - 1) / window : 0))
                if callbacks.shouldStop?() == true {
                    // Saved where it stopped: a resumed run goes on with the next step (no finished flag).
                    try saveResumeState()
                    return try result(stoppedBy: .cancelled)
                }
            }

            let scores = try validate(model, on: validation, tiling: plan.validationTiling)
            model.train(true)
            let improved = scores.dice > loop.best.dice
            if improved {
                loop.best = (scores.dice, scores.iou, epoch, try model.checkpointState())
                if let directory = plan.checkpointDirectory {
                    checkpointPath = try save(model, in: directory, epoch: epoch, dice: scores.dice)
                }
            }
            let report = EpochReport(epoch: epoch, meanLoss: loop.lossSum / Float(stepsPerEpoch), validationDice: scores.dice,
                                     validationIoU: scores.iou, isBest: improved,
                                     epochsWithoutImprovement: epoch - loop.best.epoch,
                                     seconds: Date().timeIntervalSince(epochStarted))
            loop.history.append(report)
            loop.epoch += 1
            loop.stepInEpoch = 0
            loop.lossSum = 0
            if let patience = plan.patience, report.epochsWithoutImprovement >= patience {
                loop.finished = .earlyStopped
            } else if loop.epoch > plan.maxEpochs {
                loop.finished = .completed
            }
            try saveResumeState()
            callbacks.epoch?(report)
        }
        return try result(stoppedBy: loop.finished ?? .completed)

        func result(stoppedBy reason: StopReason) throws -> Result {
            if loop.best.epoch > 0 { try model.restore(from: loop.best.state, source: "best epoch \(loop.best.epoch)") }
            model.train(false)
            return Result(model: model, split: split, bestValidationDice: loop.best.dice, bestValidationIoU: loop.best.iou,
                          bestEpoch: loop.best.epoch, epochsRun: loop.history.count, steps: step,
                          wallSeconds: Date().timeIntervalSince(started), checkpointPath: checkpointPath,
                          stopReason: reason, history: loop.history)
        }
    }

    static let stepsPerEpochKey = "steps_per_epoch"

    /// The random generators of the model's dropout layers, each once, in module order: a resumed run draws
    /// the same masks as an uninterrupted one.
    static func dropoutGenerators(of model: Module) -> [RandomGenerator] {
        var seen = Set<ObjectIdentifier>()
        return model.modules().compactMap { ($0.module as? Dropout)?.generator }.filter { seen.insert(ObjectIdentifier($0)).inserted }
    }

    /// The loop's own part of the resume state: the position (epoch in progress, its steps done and their summed
    /// loss), the best epoch with its weights, the epoch history, and how the run ended once it has.
    final class LoopState: CheckpointableState {
        var epoch = 1
        var stepInEpoch = 0
        var lossSum: Float = 0
        var best = (dice: -Double.infinity, iou: -Double.infinity, epoch: 0, state: CheckpointState())
        var history: [EpochReport] = []
        var finished: StopReason?

        func checkpointState() throws -> CheckpointState {
            var state = CheckpointState(tensors: best.state.tensors, metadata: [
                "epoch": String(epoch), "step_in_epoch": String(stepInEpoch), "loss_sum": String(lossSum),
                "best_dice": String(best.dice), "best_iou": String(best.iou), "best_epoch": String(best.epoch),
                "history": try encodeJSON(history)])
            if let finished { state.metadata["finished"] = finished.rawValue }
            return state
        }

        func restore(from state: CheckpointState, source: String) throws {
            let m = state.metadata
            guard let epoch = m["epoch"].flatMap(Int.init), let stepInEpoch = m["step_in_epoch"].flatMap(Int.init),
                  let lossSum = m["loss_sum"].flatMap(Float.init), let bestDice = m["best_dice"].flatMap(Double.init),
                  let bestIoU = m["best_iou"].flatMap(Double.init), let bestEpoch = m["best_epoch"].flatMap(Int.init),
                  let history = m["history"].flatMap({ try? decodeJSON([EpochReport].self, $0) }) else {
                throw EngineError.file(path: source, message: "the training loop's state is missing or malformed")
            }
            let finished = try m["finished"].map { text in
                guard let reason = StopReason(rawValue: text) else {
                    throw EngineError.file(path: source, message: "unknown end of run \"\(text)\"")
                }
                return reason
            }
            (self.epoch, self.stepInEpoch, self.lossSum, self.history, self.finished) = (epoch, stepInEpoch, lossSum, history, finished)
            best = (bestDice, bestIoU, bestEpoch, CheckpointState(tensors: state.tensors))
        }
    }

    /// Pooled Dice and IoU, averaged over the foreground classes, of `model`'s whole-image predictions (eval mode).
    public static func validate(_ model: any SegmentationModel, on images: [(image: Planes, truth: LabelMap)],
                                tiling: InferenceTiling? = nil) throws -> (dice: Double, iou: Double) {
        model.train(false)
        let matrices = try images.map { image, truth in
            let logits = try model.logits(of: image, tiling: tiling)
            let prediction = try LabelMap(try Planes(channels: 1, height: logits.height, width: logits.width,
                                                     values: try logits.tensor().argmax(axis: 0).toArray()))
            return try ConfusionMatrix(prediction: prediction, truth: truth, classes: model.classes)
        }
        let scores = try ClassScoreSummary(matrices, aggregation: .pooled).mean(includeBackground: false)
        return (scores.dice, scores.iou)
    }

    private static func check(_ plan: Plan, model: any SegmentationModel, dataset: Dataset) throws {
        func invalid(_ message: String) -> EngineError { .invalidValue(op: "SupervisedTraining", message: message) }
        let datasetClasses: Int
        switch dataset.classes {
        case .binary: datasetClasses = 2
        case .ids(let count): datasetClasses = count
        }
        guard model.classes == datasetClasses else {
            throw invalid("the model predicts \(model.classes) classes but \(dataset.root) has \(datasetClasses)")
        }
        guard plan.patchSize > 0, plan.patchSize % model.inputMultiple == 0 else {
            throw invalid("patch size \(plan.patchSize) is not a positive multiple of \(model.inputMultiple), the model's downsampling")
        }
        guard plan.batchSize > 0, plan.cropsPerImage > 0, plan.maxEpochs > 0 else {
            throw invalid("batch size \(plan.batchSize), crops per image \(plan.cropsPerImage) and epochs \(plan.maxEpochs) must be positive")
        }
        if let side = plan.validationCrop, side <= 0 { throw invalid("validation crop \(side) must be positive") }
        if let patience = plan.patience, patience <= 0 {
            throw invalid("patience \(patience) must be positive (nil never stops early)")
        }
    }

    /// Writes the model's weights and buffers to `<directory>/best.safetensors`; returns the path.
    private static func save(_ model: Module, in directory: String, epoch: Int, dice: Double) throws -> String {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw EngineError.file(path: directory, message: "cannot create the checkpoint directory: \(error.localizedDescription)")
        }
        let path = URL(fileURLWithPath: directory).appendingPathComponent(checkpointFileName).path
        try model.save(to: path, metadata: ["epoch": String(epoch), "validation_dice": String(dice)])
        return path
    }
}

import Foundation
import HistoCore
import HistoData
import HistoMetrics
import HistoNN

/// Everything of a run but the method: which images train and validate, crops and batches, the length of the
/// run, validation, early stopping, the optimizer recipe the method builds its optimizers from, checkpoints.
public struct TrainingPlan: Sendable {
    /// Epoch-based (a pass over the labelled crops is ⌈labelled images × crops per image / batch⌉ steps) or
    /// iteration-based (SSL4MIS counts iterations; epochs then only pace validation and ramps).
    public enum Length: Equatable, Sendable {
        case epochs(Int)
        case iterations(Int)
    }

    /// The score that picks the kept weights and drives early stopping.
    public enum ValidationMetric: String, Equatable, Sendable, CaseIterable {
        /// Dice of the argmax over the validation pixels pooled, averaged over the foreground classes.
        case dice
        /// IoU pooled per class, averaged over every class, background included (DTSeg's mIoU).
        case meanIoU = "miou"
        /// The best foreground Jaccard over Ciampi's thresholds 0, 0.02, …, 0.88 of p(foreground) (binary only).
        case jaccardSweep = "jaccard-sweep"

        /// The `metrics.csv` column.
        public var column: String {
            switch self {
            case .dice: return "val_dice"
            case .meanIoU: return "val_miou"
            case .jaccardSweep: return "val_jaccard_sweep"
            }
        }
    }

    public var labelRatio: Ratio
    public var rounding = Rounding.nearest
    public var validationRatio: Ratio
    /// Validate on the label share of the validation images only (DTSeg).
    public var validationFollowsLabels = false
    /// Orders the split (`DataSplit.make`).
    public var splitSeed: UInt64 = 0
    /// Weights, dropout, noise and the batch streams.
    public var seed: UInt64 = 0
    /// Side of the square training crops; a multiple of the model's `inputMultiple`.
    public var patchSize = 256
    /// Random crops start at multiples of this (`LoaderOptions.cropAlignment`): PathSegDiff's tiles then recur
    /// from epoch to epoch and its feature cache hits.
    public var cropAlignment = 1
    public var cropsPerImage = 8
    public var batchSize = 24
    /// The unlabelled batch of methods that take one; nil: `batchSize`.
    public var unlabelledBatchSize: Int?
    public var length = Length.epochs(200)
    /// Validate every this many steps; nil: after every epoch.
    public var validateEvery: Int?
    public var metric = ValidationMetric.dice
    /// Validations without a better score before stopping; nil never stops early.
    public var patience: Int? = 30
    public var optimizer = OptimizerRecipe.sgdPoly()
    public var augmentation = Augmentation()
    /// Train on the strong view (geometry and colour changes) instead of geometry alone (labelled batches of
    /// methods that ask for one view).
    public var photometric = false
    public var pixelRange = PixelRange.minusOneToOne
    /// Replace `pixelRange` by the colour statistics of the split's training images, labelled and unlabelled
    /// (`--normalize dataset`, XNet's protocol): measured when the run starts.
    public var normalizesByDataset = false
    /// How validation covers an image; nil: tiles of the patch size side by side, so that memory follows the
    /// patch, not the image.
    public var validationTiling: InferenceTiling?
    /// Validation scores the centred square of this side of each validation image (whole images when nil).
    public var validationCrop: Int?
    /// Save the resume checkpoint every this many steps; nil: after every epoch. Interrupts and the end save too.
    public var checkpointEvery: Int?
    /// The side every image is resized to when the request gives no `--resize`: a preset's input scale (e.g.
    /// genselfdiff's `gland`). Recorded as `--resize` is (`TrainingSession.record(resize:dataset:)`).
    public var resize: Int?

    public init(labelRatio: Ratio, validationRatio: Ratio) {
        self.labelRatio = labelRatio
        self.validationRatio = validationRatio
    }

    /// The plan's settings as text, recorded in `training.json`: a resumed run must have the same.
    public var settings: [String: String] {
        var settings: [String: String] = [
            "labels": labelRatio.description, "rounding": rounding.rawValue, "validation": validationRatio.description,
            "validation_follows_labels": String(validationFollowsLabels), "split_seed": String(splitSeed),
            "seed": String(seed), "patch": String(patchSize), "crops_per_image": String(cropsPerImage),
            "batch": String(batchSize), "unlabelled_batch": String(unlabelledBatchSize ?? batchSize),
            "metric": metric.rawValue, "patience": patience.map(String.init) ?? "none",
            "optimizer": "\(optimizer)", "augmentation": augmentation.recordedDescription,
            "photometric": String(photometric),
            "pixel_range": "\(pixelRange)", "validation_crop": validationCrop.map(String.init) ?? "none",
            "validate_every": validateEvery.map(String.init) ?? "epoch"]
        switch length {
        case .epochs(let n): settings["epochs"] = String(n)
        case .iterations(let n): settings["iterations"] = String(n)
        }
        // Recorded only when set, so runs from before the setting resume.
        if cropAlignment != 1 { settings["crop_alignment"] = String(cropAlignment) }
        if let tiling = validationTiling { settings["validation_tiling"] = "\(tiling.size)/\(tiling.stride)" }
        return settings
    }
}

/// What a method's factory gets to build its networks and optimizers.
public struct MethodSetup {
    public let plan: TrainingPlan
    public let classes: Int
    public let totalSteps: Int
    public let stepsPerEpoch: Int

    public init(plan: TrainingPlan, classes: Int, totalSteps: Int, stepsPerEpoch: Int) {
        self.plan = plan
        self.classes = classes
        self.totalSteps = totalSteps
        self.stepsPerEpoch = stepsPerEpoch
    }
}

/// One validation of the evaluated model.
public struct ValidationRecord: Codable, Equatable, Sendable {
    /// Steps done when it ran.
    public let step: Int
    /// Epochs done when it ran (fractional for mid-epoch validation).
    public let epoch: Double
    /// Mean training loss since the previous validation.
    public let meanLoss: Double
    public let dice: Double
    public let iou: Double
    /// The plan's metric (equal to `dice` for `.dice`).
    public let score: Double
    public let isBest: Bool
    /// With the jaccard-sweep metric: the threshold of p(foreground) whose Jaccard is `score`.
    public var threshold: Double?
}

/// `threshold.json` of a jaccard-sweep run: the threshold chosen on validation for the kept weights, which
/// `segment`, `eval --model` and `experiment` apply to p(foreground) instead of the argmax (`TrainedModel`).
public struct ChosenThreshold: Codable, Equatable, Sendable {
    public static let fileName = "threshold.json"
    /// Foreground where p(foreground) exceeds it (`ThresholdSweep`).
    public let threshold: Double
    public let validationJaccard: Double
    public let step: Int
}

/// How a run ended and what it kept.
public struct TrainingResult {
    /// The evaluated network holding the best validation's weights (the last ones when none validated), eval mode.
    public let model: any SegmentationModel
    public let split: DataSplit
    public let best: ValidationRecord?
    public let history: [ValidationRecord]
    public let steps: Int
    public let totalSteps: Int
    public let outcome: TrainingOutcome
    /// Seconds of this process's training.
    public let wallSeconds: Double
    /// `<directory>/best.safetensors`, when a validation was best.
    public let bestWeights: String?
}

/// A run stopped by SIGINT or SIGTERM after saving its checkpoint, as an error for callers that run several.
public struct TrainingInterrupted: Error {
    public let signal: Int32
    public init(signal: Int32) { self.signal = signal }
}

/// Where and how a run executes: its folder, backend and progress output.
public struct TrainingSession {
    /// The run folder: `checkpoint/`, `best.safetensors`, `metrics.csv`, `loss_curve.png`, `training.json`,
    /// `split.json`, `objects.json` and, when given, `model.json`.
    public var directory: String
    public var backend: any Backend = CPUBackend.shared
    public var progress = ProgressOutput.standardError
    /// Prefix of progress lines.
    public var label = ""
    /// The split to use (`--split FILE`); nil: made from the plan.
    public var split: DataSplit?
    /// Written as `model.json` when the run starts, so that the folder can segment from its first best weights.
    public var modelCard: ModelCard?
    /// Settings of the method beside the plan's (its name and options), recorded and compared on resume.
    public var methodSettings: [String: String] = [:]
    public var resumeHint = "run the same command again to resume"
    /// The ranks training together (data parallelism): each takes its shard of every batch, gradients are
    /// averaged, rank 0 alone validates and writes the folder's files.
    public var group: any ProcessGroup = SingleProcess.shared

    public init(directory: String) { self.directory = directory }
}

/// The one training loop of every segmentation method (`TrainingMethod`), on a `TrainingRun`: labelled and
/// unlabelled loaders, epoch- or iteration-based plans, validation of the evaluated model with the plan's metric,
/// the best weights, early stopping, `metrics.csv` with every loss term and validation score, the loss curve,
/// progress, periodic atomic checkpoints and a bit-exact resume (a run folder holding a checkpoint resumes; its
/// recorded settings must match), a clean stop on SIGINT/SIGTERM and on a non-finite loss term.
public enum MethodTrainer {
    public static let settingsFileName = "training.json"
    public static let splitFileName = "split.json"
    public static let lossCurveFileName = "loss_curve.png"
    /// The labelled objects' sizes (`ObjectSizes`), written when a run starts.
    public static let objectsFileName = "objects.json"

    /// Trains the method `makeMethod` builds on `dataset` as `plan` says, in `session.directory`.
    public static func train(plan: TrainingPlan, dataset: Dataset, session: TrainingSession,
                             makeMethod: (MethodSetup) throws -> any TrainingMethod) throws -> TrainingResult {
        let started = Date()
        var plan = plan
        try check(plan)
        let group = session.group, writes = group.isRoot
        try group.checkShards(ofBatch: plan.batchSize, option: "the batch")
        try group.checkShards(ofBatch: plan.unlabelledBatchSize ?? plan.batchSize, option: "the unlabelled batch")
        let split = try session.split ?? DataSplit.make(
            dataset: dataset, labelRatio: plan.labelRatio, validationRatio: plan.validationRatio, seed: plan.splitSeed,
            rounding: plan.rounding, validationFollowsLabels: plan.validationFollowsLabels)
        let indices = try split.indices(in: dataset)
        guard !indices.validation.isEmpty else {
            throw EngineError.invalidValue(op: "training", message: "the split has no validation images")
        }
        if plan.normalizesByDataset {
            let statistics = try dataset.colorStatistics(indices: indices.labelled + indices.unlabelled)
            plan.pixelRange = .standardized(mean: statistics.mean, std: statistics.std)
        }
        let classes = dataset.classes.count
        let stepsPerEpoch = (indices.labelled.count * plan.cropsPerImage + plan.batchSize - 1) / plan.batchSize
        let totalSteps: Int
        switch plan.length {
        case .epochs(let n): totalSteps = n * stepsPerEpoch
        case .iterations(let n): totalSteps = n
        }
        let method = try makeMethod(MethodSetup(plan: plan, classes: classes, totalSteps: totalSteps,
                                                stepsPerEpoch: stepsPerEpoch))
        let model = method.evaluatedModel
        try checkModel(model, plan: plan, classes: classes, dataset: dataset)
        let needs = method.dataNeeds
        try dataset.checkPatchFits(plan.patchSize)
        try checkMemory(model, plan: plan, samples: plan.batchSize
                        + (needs.unlabelledViews == nil ? 0 : plan.unlabelledBatchSize ?? plan.batchSize))
        if needs.unlabelledViews != nil && indices.unlabelled.isEmpty {
            throw EngineError.invalidValue(op: "training", message: "the method trains on unlabelled images too, but "
                                           + "the split leaves none: lower --labels or add --unlabelled folders")
        }

        let loop = LoopState()
        var components = method.components
        components["loop"] = loop
        let modules = [model as Module] + components.keys.sorted().compactMap { components[$0] as? Module }
        for (i, generator) in dropoutGenerators(of: modules).enumerated() { components["dropout\(i)"] = generator }
        for case let generator as RandomGenerator in components.values { generator.batchShard = group.batchShard }

        var options = TrainingRun.Options(totalSteps: totalSteps,
                                          checkpointEvery: plan.checkpointEvery ?? stepsPerEpoch)
        let terms = method.lossTerms
        let validationColumns = ["val_dice", "val_iou"] + (plan.metric == .dice ? [] : [plan.metric.column])
        options.columns = ["epoch"] + terms.dropFirst() + validationColumns
        options.finiteColumns = Array(terms.dropFirst())
        options.best = TrainingRun.BestCheckpoint(column: plan.metric.column, higherIsBetter: true)
        options.label = session.label
        options.progress = session.progress
        options.resumeHint = session.resumeHint
        options.group = group
        let run = try TrainingRun(directory: session.directory, model: model, components: components, options: options)
        // One run per folder: a second run on it stops here, naming the first (released when this returns).
        let lock = try writes ? RunLock.acquire(directory: session.directory) : nil
        defer { lock?.release() }
        if let notice = lock?.takenOver { message(session, notice) }

        let settings = plan.settings.merging(session.methodSettings) { _, method in method }
        try group.checkSameOnEveryRank(model.fingerprint(settings: settings), what: "the settings and initial model")
        let settingsPath = (session.directory as NSString).appendingPathComponent(settingsFileName)
        if run.latestCheckpoint != nil {
            try checkResumable(settings: settings, path: settingsPath)
            try run.resume()
            if run.step > 0 {
                message(session, "resuming from step \(run.step) of \(totalSteps) (\(run.latestCheckpoint!))")
            }
        } else if writes {
            try writeJSON(settings, to: settingsPath)
            // Items are grid crops when the run cuts images (`--grid-crops`): labels count crops then.
            let validationItems = dataset.gridCrops == nil ? "images"
                : "crops (of \(dataset.sources(of: split.validation).count) images)"
            message(session, "split: \(indices.labelled.count) labelled, \(indices.unlabelled.count) unlabelled, "
                    + "\(indices.validation.count) validation \(validationItems)")
            for notice in method.notices { message(session, notice) }
            // Whether the patch sees whole objects (issue 21), measured on the labelled masks, once per run.
            if let objects = try ObjectSizes.measure(dataset, indices: indices.labelled) {
                try writeJSON(objects, to: (session.directory as NSString).appendingPathComponent(objectsFileName))
                if let notice = objects.notice(patch: plan.patchSize, multiple: model.inputMultiple) {
                    message(session, notice)
                }
            }
        }
        if writes {
            try split.write(to: (session.directory as NSString).appendingPathComponent(splitFileName))
            var card = session.modelCard
            card?.trainingPatch = plan.patchSize
            card?.record(range: plan.pixelRange)
            try card?.write(to: session.directory)
        }

        let validation = try validationImages(indices.validation, dataset: dataset, plan: plan)
        let tiling = plan.validationTiling ?? InferenceTiling(size: plan.patchSize, stride: plan.patchSize)
        // A finished run's folder answers with its result at once.
        var outcome: TrainingOutcome = run.step >= totalSteps ? .completed : .stoppedEarly
        if !loop.finished {
            let labelled = try loader(dataset, indices.labelled, plan: plan, views: needs.labelledViews,
                                      batch: plan.batchSize, labelled: true, skipping: run.step, group: group)
            defer { labelled.close() }
            let unlabelled = try needs.unlabelledViews.map { views in
                try loader(dataset, indices.unlabelled, plan: plan, views: views,
                           batch: plan.unlabelledBatchSize ?? plan.batchSize, labelled: false, skipping: run.step,
                           group: group)
            }
            defer { unlabelled?.close() }
            let validateEvery = plan.validateEvery ?? stepsPerEpoch
            outcome = try run.train { step in
                guard let labelledBatch = try labelled.next() else {
                    throw EngineError.invalidValue(op: "training", message: "the labelled batch stream ended")
                }
                let unlabelledBatch = try unlabelled.map { loader in
                    guard let batch = try loader.next() else {
                        throw EngineError.invalidValue(op: "training", message: "the unlabelled batch stream ended")
                    }
                    return batch
                }
                let context = StepContext(step: step, totalSteps: totalSteps, stepsPerEpoch: stepsPerEpoch,
                                          backend: session.backend, group: group)
                let values = try method.step(MethodBatch(labelled: labelledBatch, unlabelled: unlabelledBatch),
                                             context: context)
                let missing = terms.filter { values[$0] == nil }
                guard missing.isEmpty else {
                    throw EngineError.invalidValue(op: "training", message: "the method reported no \(missing)")
                }
                loop.lossSum += Double(values[terms[0]]!)
                loop.lossCount += 1
                var report = StepReport(loss: values[terms[0]]!, learningRate: method.learningRate)
                for term in terms.dropFirst() { report.values[term] = Double(values[term]!) }
                let done = step + 1
                report.values["epoch"] = Double(done) / Double(stepsPerEpoch)
                if done % validateEvery == 0 || done == totalSteps {
                    let scores = try validateOnRoot(model, on: validation, tiling: tiling, plan: plan,
                                                    scoringNuclei: dataset.classes.isBoundary, session: session)
                    let record = loop.record(step: done, epoch: report.values["epoch"]!, scores: scores)
                    if writes, record.isBest, let threshold = record.threshold {
                        try writeJSON(ChosenThreshold(threshold: threshold, validationJaccard: record.score,
                                                      step: done),
                                      to: (session.directory as NSString).appendingPathComponent(
                                        ChosenThreshold.fileName))
                    }
                    report.values["val_dice"] = scores.dice
                    report.values["val_iou"] = scores.iou
                    report.values[plan.metric.column] = scores.score
                    report.message = String(
                        format: "epoch %.4g: loss %.4f, validation %@ %.4f (Dice %.4f, IoU %.4f)%@", record.epoch,
                        record.meanLoss, plan.metric.rawValue, record.score, record.dice, record.iou,
                        record.isBest ? " (best)" : "")
                    if let patience = plan.patience, loop.validationsWithoutImprovement >= patience {
                        loop.finished = true
                        report.stop = true
                    }
                }
                if done == totalSteps { loop.finished = true }
                return report
            }
        }
        // The other ranks are done: the folder's files are rank 0's, still being written.
        guard writes else {
            return TrainingResult(model: model, split: split, best: nil, history: loop.history, steps: run.step,
                                  totalSteps: totalSteps, outcome: outcome,
                                  wallSeconds: Date().timeIntervalSince(started), bestWeights: nil)
        }
        try writeLossCurve(in: session.directory)
        let bestWeights = run.bestWeights
        if let bestWeights { try model.load(from: bestWeights) }
        model.train(false)
        return TrainingResult(model: model, split: split, best: loop.history.last { $0.isBest },
                              history: loop.history, steps: run.step, totalSteps: totalSteps, outcome: outcome,
                              wallSeconds: Date().timeIntervalSince(started), bestWeights: bestWeights)
    }

    // MARK: validation

    /// `validate` on rank 0, whose BatchNorm statistics are the ones saved, with its scores handed to every rank
    /// (the others add zeros), so that the best step and early stopping are decided alike everywhere.
    static func validateOnRoot(_ model: any SegmentationModel, on images: [(image: Planes, truth: LabelMap)],
                               tiling: InferenceTiling, plan: TrainingPlan, scoringNuclei: Bool,
                               session: TrainingSession) throws -> ValidationScores {
        var scores: [Float] = [0, 0, 0, 0]
        if session.group.isRoot {
            let root = try validate(model, on: images, tiling: tiling, metric: plan.metric,
                                    scoringNuclei: scoringNuclei, on: session.backend)
            guard session.group.size > 1 else { return root }
            scores = [Float(root.dice), Float(root.iou), Float(root.score), Float(root.threshold ?? .nan)]
        }
        try scores.withUnsafeMutableBufferPointer { try session.group.sumInPlace($0) }
        return (Double(scores[0]), Double(scores[1]), Double(scores[2]), scores[3].isNaN ? nil : Double(scores[3]))
    }

    /// Pooled foreground Dice and IoU, the plan's metric, and the threshold a jaccard-sweep chose.
    public typealias ValidationScores = (dice: Double, iou: Double, score: Double, threshold: Double?)

    /// Pooled Dice and IoU (averaged over the foreground classes) and the plan's metric of `model`'s tiled
    /// predictions (eval mode; the model's mode is restored afterwards). `scoringNuclei` scores a boundary-aware
    /// model (`MaskClasses.boundary`) on the nucleus, interior ∪ boundary, as one class: the kept weights are then
    /// chosen by the same Dice as a binary model's, not by how well a 2-pixel boundary is placed.
    public static func validate(_ model: any SegmentationModel, on images: [(image: Planes, truth: LabelMap)],
                                tiling: InferenceTiling, metric: TrainingPlan.ValidationMetric = .dice,
                                scoringNuclei: Bool = false, on backend: (any Backend)? = nil)
        throws -> ValidationScores {
        let wasTraining = model.isTraining
        model.train(false)
        defer { model.train(wasTraining) }
        var matrices: [ConfusionMatrix] = []
        var sweep = try ThresholdSweep()
        for (image, truth) in images {
            let logits = try model.logits(of: image, tiling: tiling, on: backend)
            // The argmax on the host: an image-sized tensor would tie memory to the image, not the tile.
            let prediction = try LabelMap(width: logits.width, height: logits.height,
                                          labels: SegmentationOutputs.labels(logits).map(Int32.init))
            matrices.append(scoringNuclei
                ? try ConfusionMatrix(prediction: prediction.binarized(), truth: truth.binarized(), classes: 2)
                : try ConfusionMatrix(prediction: prediction, truth: truth, classes: model.classes))
            if metric == .jaccardSweep {
                let probabilities = try logits.softmaxOverChannels()
                let plane = probabilities.height * probabilities.width
                try sweep.add(scores: Array(probabilities.values[plane..<2 * plane]), truth: truth)
            }
        }
        let summary = try ClassScoreSummary(matrices, aggregation: .pooled)
        let foreground = summary.mean(includeBackground: false)
        switch metric {
        case .dice: return (foreground.dice, foreground.iou, foreground.dice, nil)
        case .meanIoU: return (foreground.dice, foreground.iou, summary.mean(includeBackground: true).iou, nil)
        case .jaccardSweep: return (foreground.dice, foreground.iou, sweep.best.jaccard, sweep.best.threshold)
        }
    }

    /// The validation images in the plan's pixel range with their masks, centre-cropped when the plan says so.
    static func validationImages(_ indices: [Int], dataset: Dataset,
                                 plan: TrainingPlan) throws -> [(image: Planes, truth: LabelMap)] {
        try indices.map { index in
            let sample = try dataset.sample(at: index)
            let image = sample.image.colorPlanes(range: plan.pixelRange), mask = sample.mask!
            guard let side = plan.validationCrop else { return (image, try LabelMap(mask)) }
            let height = min(side, image.height), width = min(side, image.width)
            let y = (image.height - height) / 2, x = (image.width - width) / 2
            return (try image.crop(y: y, x: x, height: height, width: width, padding: .zero),
                    try LabelMap(mask.crop(y: y, x: x, height: height, width: width, padding: .zero)))
        }
    }

    // MARK: run files

    /// Writes `loss_curve.png` from the run's `metrics.csv` (nothing when it has no rows yet).
    public static func writeLossCurve(in directory: String) throws {
        let folder = directory as NSString
        let log = try MetricsLog.read(path: folder.appendingPathComponent(TrainingRun.metricsFileName))
        let series = try log.series("loss")
        guard !series.isEmpty else { return }
        let image = try Charts.lossCurve(steps: series.map(\.step), values: series.map(\.value))
        try PNG.write(image, to: folder.appendingPathComponent(lossCurveFileName))
    }

    /// Refuses to resume a run whose recorded settings differ from these, listing the differences.
    static func checkResumable(settings: [String: String], path: String) throws {
        guard let data = FileManager.default.contents(atPath: path),
              var saved = try? JSONDecoder().decode([String: String].self, from: data) else {
            throw EngineError.file(path: path, message: "the run folder holds a checkpoint but no readable "
                                   + "\(settingsFileName): it was not made by this trainer")
        }
        // Runs recorded between the MONAI transforms' arrival and this form spelled their default fields out.
        saved["augmentation"] = saved["augmentation"].map(Augmentation.recorded)
        let keys = Set(saved.keys).union(settings.keys).sorted()
        let differences = keys.filter { saved[$0] != settings[$0] }.map {
            "\($0): \(saved[$0] ?? "(unset)") then, \(settings[$0] ?? "(unset)") now"
        }
        guard differences.isEmpty else {
            throw EngineError.file(path: path, message: "the run in this folder was started with other settings, so it "
                                   + "cannot resume with these (only --device may change): "
                                   + differences.joined(separator: "; ") + "; use another --out to start a new run")
        }
    }

    /// The encoder of the run files: sorted, indented, and non-finite numbers as the strings "Infinity",
    /// "-Infinity" and "NaN" (a run that predicts no foreground has an infinite HD95; plain JSON has no
    /// infinity, and the encoder would refuse the whole file). `jsonDecoder` reads them back.
    static var jsonEncoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity",
                                                                      negativeInfinity: "-Infinity", nan: "NaN")
        return encoder
    }

    static var jsonDecoder: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "Infinity",
                                                                        negativeInfinity: "-Infinity", nan: "NaN")
        return decoder
    }

    /// `value` as `jsonEncoder` writes it, atomically.
    static func writeJSON(_ value: some Encodable, to path: String) throws {
        do { try jsonEncoder.encode(value).write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
            throw EngineError.file(path: path, message: "cannot be written: \(FileSystem.reason(of: error))")
        }
    }

    static func message(_ session: TrainingSession, _ text: String) {
        guard session.group.isRoot else { return }
        ProgressReporter(total: 0, label: session.label, output: session.progress).message(text)
    }

    // MARK: helpers

    static func loader(_ dataset: Dataset, _ indices: [Int], plan: TrainingPlan, views: BatchViews, batch: Int,
                       labelled: Bool, skipping steps: Int, group: any ProcessGroup) throws -> BatchLoader {
        var options = LoaderOptions(batchSize: batch, patches: .randomCrops(size: plan.patchSize,
                                                                             perImage: plan.cropsPerImage),
                                    labelled: labelled)
        options.augmentation = plan.augmentation
        options.cropAlignment = plan.cropAlignment
        options.views = views == .weak && plan.photometric ? .strong : views
        options.seed = plan.seed
        options.range = plan.pixelRange
        options.skippedBatches = steps
        options.shard = group.batchShard
        return try BatchLoader(dataset: dataset, indices: indices, options: options)
    }

    /// The random generators of the modules' dropout layers, each once, in module order: a resumed run draws
    /// the same masks as an uninterrupted one.
    static func dropoutGenerators(of modules: [Module]) -> [RandomGenerator] {
        var seen = Set<ObjectIdentifier>()
        return modules.flatMap { $0.modules().compactMap { ($0.module as? Dropout)?.generator } }
            .filter { seen.insert(ObjectIdentifier($0)).inserted }
    }

    static func check(_ plan: TrainingPlan) throws {
        var problems: [String] = []
        if plan.patchSize <= 0 { problems.append("patch size \(plan.patchSize) must be positive") }
        if plan.batchSize <= 0 { problems.append("batch size \(plan.batchSize) must be positive") }
        if let n = plan.unlabelledBatchSize, n <= 0 { problems.append("unlabelled batch size \(n) must be positive") }
        if plan.cropsPerImage <= 0 { problems.append("crops per image \(plan.cropsPerImage) must be positive") }
        switch plan.length {
        case .epochs(let n) where n <= 0: problems.append("epochs \(n) must be positive")
        case .iterations(let n) where n <= 0: problems.append("iterations \(n) must be positive")
        default: break
        }
        if let n = plan.validateEvery, n <= 0 { problems.append("validation interval \(n) must be positive") }
        if let n = plan.checkpointEvery, n <= 0 { problems.append("checkpoint interval \(n) must be positive") }
        if let n = plan.patience, n <= 0 { problems.append("patience \(n) must be positive (nil never stops early)") }
        if let n = plan.validationCrop, n <= 0 { problems.append("validation crop \(n) must be positive") }
        let lr = plan.optimizer.learningRate
        if !(lr.isFinite && lr > 0) { problems.append("learning rate \(lr) must be positive and finite") }
        guard problems.isEmpty else {
            throw EngineError.invalidValue(op: "training", message: problems.joined(separator: "; "))
        }
    }

    static func checkModel(_ model: any SegmentationModel, plan: TrainingPlan, classes: Int, dataset: Dataset) throws {
        guard model.classes == classes else {
            throw EngineError.invalidValue(op: "training", message:
                "the model predicts \(model.classes) classes but \(dataset.root) has \(classes)")
        }
        guard plan.patchSize % model.inputMultiple == 0 else {
            throw EngineError.invalidValue(op: "training", message:
                "patch size \(plan.patchSize) is not a multiple of \(model.inputMultiple), the model's downsampling")
        }
        if plan.metric == .jaccardSweep && classes != 2 {
            throw EngineError.invalidValue(op: "training", message: "the threshold-sweep Jaccard needs a binary task")
        }
        if let tiling = plan.validationTiling, tiling.size % model.inputMultiple != 0 || tiling.stride <= 0 {
            throw EngineError.invalidValue(op: "training", message:
                "validation tiles of \(tiling.size) (stride \(tiling.stride)) must be a multiple of "
                + "\(model.inputMultiple) with a positive stride")
        }
    }

    /// Refuses a plan whose step cannot fit the machine's memory, before anything is allocated: the evaluated
    /// network's forward graph on the step's labelled and unlabelled crops, recorded on shape-only inputs
    /// (`StepMemoryEstimate`). A lower bound for methods with several networks or passes; it stops the runs that
    /// cannot fit instead of letting them allocate until the kernel kills them.
    static func checkMemory(_ model: any SegmentationModel, plan: TrainingPlan, samples: Int) throws {
        let wasTraining = model.isTraining
        model.train(false)  // a training-mode forward would record BatchNorm updates into the model's buffers
        defer { model.train(wasTraining) }
        let input = StepMemoryEstimate.input(shape: [samples, 3, plan.patchSize, plan.patchSize])
        try StepMemoryEstimate(model: model, batch: samples, loss: model(input).mean())
            .check(patch: plan.patchSize, patchMultiple: model.inputMultiple)
    }

    /// The trainer's own part of the resume state: the loss summed since the last validation, the validation
    /// history (from which the best and the patience count follow) and whether the run has ended.
    final class LoopState: CheckpointableState {
        var lossSum = 0.0
        var lossCount = 0
        var history: [ValidationRecord] = []
        var finished = false

        var validationsWithoutImprovement: Int {
            guard let best = history.lastIndex(where: \.isBest) else { return history.count }
            return history.count - 1 - best
        }

        func record(step: Int, epoch: Double, scores: ValidationScores) -> ValidationRecord {
            let best = history.filter(\.isBest).last?.score ?? -.infinity
            let record = ValidationRecord(step: step, epoch: epoch, meanLoss: lossSum / Double(max(lossCount, 1)),
                                          dice: scores.dice, iou: scores.iou, score: scores.score,
                                          isBest: scores.score.isFinite && scores.score > best,
                                          threshold: scores.threshold)
            history.append(record)
            lossSum = 0
            lossCount = 0
            return record
        }

        func checkpointState() throws -> CheckpointState {
            CheckpointState(metadata: ["loss_sum": String(lossSum), "loss_count": String(lossCount),
                                       "history": try encodeJSON(history), "finished": String(finished)])
        }

        func restore(from state: CheckpointState, source: String) throws {
            let m = state.metadata
            guard let lossSum = m["loss_sum"].flatMap(Double.init), let lossCount = m["loss_count"].flatMap(Int.init),
                  let history = m["history"].flatMap({ try? decodeJSON([ValidationRecord].self, $0) }),
                  let finished = m["finished"].flatMap(Bool.init) else {
                throw EngineError.file(path: source, message: "the training loop's state is missing or malformed")
            }
            (self.lossSum, self.lossCount, self.history, self.finished) = (lossSum, lossCount, history, finished)
        }
    }
}

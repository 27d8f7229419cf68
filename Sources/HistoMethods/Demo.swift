import Foundation
import HistoCore
import HistoData
import HistoDiffusion
import HistoMetrics
import HistoNN

/// The main job: pretrain a `cpu` diffusion model on the unlabelled images, fine-tune it with GenSelfDiff on a few
/// labelled ones, train the supervised baseline on the same labels, and evaluate both on held-back images, writing
/// overlays and a Markdown report. Without a dataset it generates a synthetic H&E one first.
public enum Demo {
    public struct Configuration {
        /// A dataset folder (images/, masks/); nil: a synthetic dataset written under `output`.
        public var data: String?
        public var output: String
        /// A reduced run for CI: a small dataset and few steps.
        public var quick = false
        public var seed: UInt64 = 0
        public var backend: any Backend = CPUBackend.shared
        public var labelRatio = "1/8"
        public var validationRatio = "1/5"
        /// Also fine-tune GenSelfDiff from random initialisation (does pretraining help?).
        public var includeRandomInit = false

        /// Diffusion pretraining steps (nil: 250, 20 in quick mode).
        public var pretrainSteps: Int?
        /// Epochs of fine-tuning and of the supervised baseline (nil: 15, 2 in quick mode).
        public var epochs: Int?
        /// A `cpu` GenSelfDiff denoiser's weights (the `ema.safetensors` of `histodiff pretrain --model genselfdiff
        /// --preset cpu`) to fine-tune instead of pretraining here; it must not have seen the held-back images.
        public var pretrained: String?

        public init(data: String?, output: String) { self.data = data; self.output = output }

        // Sized so that the full demo takes a few minutes on a 2-core CPU.
        var syntheticTiles: Int { quick ? 16 : 32 }
        var syntheticSize: Int { quick ? 96 : 192 }
        var patch: Int { 64 }
        var pretrainStepCount: Int { pretrainSteps ?? (quick ? 20 : 250) }
        var epochCount: Int { epochs ?? (quick ? 2 : 15) }
        /// Validation during training looks at the centre of each held-back image; the final scores use all of it.
        var validationCrop: Int { 256 }
    }

    public struct MethodResult {
        public let method: String
        public let summary: EvaluationSummary
        public let seconds: Double
    }

    public struct Outcome {
        public let results: [MethodResult]
        /// The Markdown report (also written to `<output>/report.md`).
        public let report: String
        public let reportPath: String
    }

    public static func run(_ c: Configuration, log: (String) -> Void = { print($0) }) throws -> Outcome {
        let fm = FileManager.default
        try fm.createDirectory(atPath: c.output, withIntermediateDirectories: true)
        let dataPath: String
        if let data = c.data {
            dataPath = data
        } else {
            dataPath = c.output + "/synthetic-data"
            if !fm.fileExists(atPath: dataPath + "/images") {
                log("generating \(c.syntheticTiles) synthetic H&E tiles (\(c.syntheticSize)²) in \(dataPath)")
                try SyntheticHistology.makeDataset(at: dataPath, count: c.syntheticTiles, size: c.syntheticSize, seed: c.seed)
            }
        }
        let dataset = try Dataset.open(path: dataPath, requireMasks: true)
        let split = try DataSplit.make(dataset: dataset, labelRatio: try Ratio(c.labelRatio),
                                       validationRatio: try Ratio(c.validationRatio), seed: c.seed)
        try split.write(to: c.output + "/split.json")
        log("data: \(dataset.count) images from \(dataPath); \(split.labelled.count) labelled, \(split.unlabelled.count) unlabelled, "
            + "\(split.validation.count) held back for evaluation")

        // 1. Diffusion pretraining on every training image (labels unused), unless weights are given.
        let pretrainStart = Date()
        let indices = try split.indices(in: dataset)
        let pretrained: String
        if let given = c.pretrained {
            pretrained = given
            log("pretraining: skipped, fine-tuning \(given)")
        } else {
            pretrained = c.output + "/pretrain-ema.safetensors"
            try pretrain(dataset: dataset, indices: indices.labelled + indices.unlabelled, to: pretrained, c, log: log)
        }
        let pretrainSeconds = Date().timeIntervalSince(pretrainStart)

        // 2. Methods on the labelled subset, scored against the held-back masks.
        try writeHeldBackMasks(dataset: dataset, split: split, c)
        let crops = try cropsPerImage(dataset: dataset, labelled: indices.labelled, c)
        var results: [MethodResult] = []
        func train(_ method: String, folder: String, options: [String: String] = [:]) throws -> any SegmentationModel {
            try Demo.train(method, folder: folder, options: options, crops: crops, dataset: dataset, split: split, c)
        }
        let supervised = try timed { try train("supervised", folder: "supervised-unet") }
        results.append(try evaluate("supervised U-Net", supervised.value, seconds: supervised.seconds,
                                    dataset: dataset, split: split, c))
        // Real nuclei data with instance maps: the same U-Net on the boundary-aware target (issue 18), so the
        // report shows what separating touching nuclei does to AJI and detection F1. Synthetic runs skip it.
        if c.data != nil && dataset.items.contains(where: { $0.instancePath != nil }) {
            let nuclei = try Dataset.open(path: dataPath, requireMasks: true, classes: .boundary(width: 2))
            let boundary = try timed {
                try Demo.train("supervised", folder: "supervised-unet-boundary", target: nuclei.classes,
                               crops: crops, dataset: nuclei, split: split, c)
            }
            results.append(try evaluate("supervised U-Net (boundary-aware)", boundary.value,
                                        seconds: boundary.seconds, dataset: dataset, split: split, c))
        }
        let genSelfDiff = try timed {
            try train("genselfdiff", folder: "genselfdiff-pretrained", options: ["pretrained": pretrained])
        }
        results.append(try evaluate("GenSelfDiff (pretrained)", genSelfDiff.value,
                                    seconds: genSelfDiff.seconds + pretrainSeconds, dataset: dataset, split: split, c))
        if c.includeRandomInit {
            let random = try timed { try train("genselfdiff", folder: "genselfdiff-random-init") }
            results.append(try evaluate("GenSelfDiff (random init)", random.value, seconds: random.seconds,
                                        dataset: dataset, split: split, c))
        }

        let report = self.report(results, dataPath: dataPath, split: split, crops: crops, c)
        let reportPath = c.output + "/report.md"
        try report.write(toFile: reportPath, atomically: true, encoding: .utf8)
        log(table(results))
        log("outputs: \(reportPath), overlays in \(c.output)/<method>/overlays/")
        return Outcome(results: results, report: report, reportPath: reportPath)
    }

    static func timed<T>(_ body: () throws -> T) rethrows -> (value: T, seconds: Double) {
        let start = Date()
        let value = try body()
        return (value, Date().timeIntervalSince(start))
    }

    /// Random crops per labelled image and epoch: enough that an epoch covers about a quarter of the labelled
    /// images' area (at least 4), so that large images (MoNuSeg's 1000²) are not trained on a handful of crops.
    static func cropsPerImage(dataset: Dataset, labelled: [Int], _ c: Configuration) throws -> Int {
        let area = try labelled.reduce(0) { total, index in
            let image = try dataset.sample(at: index).image
            return total + image.width * image.height
        }
        return max(4, area / max(labelled.count, 1) / (c.patch * c.patch * 4))
    }

    /// Pretrains in `<output>/runs/pretrain` through the loop of `histodiff pretrain` (checkpoints, resume) and
    /// writes the EMA weights to `path`.
    static func pretrain(dataset: Dataset, indices: [Int], to path: String, _ c: Configuration, log: (String) -> Void) throws {
        let model = try AttentionUNet(.cpu, generator: RandomGenerator(seed: c.seed))
        let pretraining = DiffusionPretraining(.genSelfDiff)
        let optimizer = Adam([ParameterGroup(model.trainableParameters())], learningRate: 2e-4)
        let ema = DiffusionPretraining.movingAverage(of: model, decay: 0.995)
        let noise = RandomGenerator(seed: c.seed &+ 1)
        var options = TrainingRun.Options(totalSteps: c.pretrainStepCount, checkpointEvery: 50)
        options.columns = [DiffusionPretraining.gradientNormColumn]
        options.label = "pretrain (GenSelfDiff cpu UNet)"
        let run = try TrainingRun(directory: c.output + "/runs/pretrain", model: model,
                                  components: ["optimizer": optimizer, "ema": ema, "noise": noise], options: options)
        var loaderOptions = DiffusionPretraining.loaderOptions(patch: c.patch, batch: 8, seed: c.seed)
        loaderOptions.skippedBatches = try run.resume()
        let loader = try BatchLoader(dataset: dataset, indices: indices, options: loaderOptions)
        let outcome = try pretraining.train(model, run: run, loader: loader, optimizer: optimizer, ema: ema,
                                            noise: noise, on: c.backend)
        if case let .interrupted(signal) = outcome { throw TrainingInterrupted(signal: signal) }
        try ema.copy(to: model)
        try model.save(to: path)
        log("pretraining: \(run.step) steps in \(c.output)/runs/pretrain; EMA weights in \(path)")
    }

    /// Whole-image predictions of `model` on the held-back images, written as masks, instance maps (the untuned
    /// `InstancePostprocessing.defaults`) and overlays, then scored.
    static func evaluate(_ method: String, _ model: any SegmentationModel, seconds: Double, dataset: Dataset, split: DataSplit,
                         _ c: Configuration) throws -> MethodResult {
        let folder = c.output + "/" + folderName(method)
        model.train(false)
        for index in try split.indices(in: dataset).validation {
            let sample = try dataset.sample(at: index)
            let probabilities = try model.logits(of: sample.image.colorPlanes(), tiling: InferenceTiling(size: c.patch, stride: c.patch / 2))
                .softmaxOverChannels()
            let instances = try InstancePostprocessing.defaults(classes: model.classes).instances(of: probabilities)
            try SegmentationOutputs.write(image: sample.image, probabilities: probabilities, instances: instances,
                                          to: folder, name: sample.name)
        }
        let truthInstances = heldBackMasks(c) + "/instances"
        let evaluation = try FolderEvaluation(
            predictionFolder: folder + "/masks", truthFolder: heldBackMasks(c),
            instanceFolder: FileManager.default.fileExists(atPath: truthInstances) ? truthInstances : nil,
            predictionInstanceFolder: folder + "/instances")
        return MethodResult(method: method, summary: evaluation.pooled, seconds: seconds)
    }

    static func heldBackMasks(_ c: Configuration) -> String { c.output + "/held-back-masks" }

    /// Writes the held-back images' masks (0/255) once, as the ground truth every method is scored against, and
    /// their instance maps to `instances/` there when every one has one (else AJI uses the masks' components).
    static func writeHeldBackMasks(dataset: Dataset, split: DataSplit, _ c: Configuration) throws {
        let truth = heldBackMasks(c)
        let held = try split.indices(in: dataset).validation
        let withInstances = held.allSatisfy { dataset.items[$0].instancePath != nil }
        try FileManager.default.createDirectory(atPath: truth + (withInstances ? "/instances" : ""),
                                                withIntermediateDirectories: true)
        for index in held {
            let sample = try dataset.sample(at: index)
            let mask = try Image(width: sample.image.width, height: sample.image.height, channels: 1, bitDepth: 8,
                                 samples: sample.mask!.values.map { $0 > 0 ? 255 : 0 })
            try PNG.write(mask, to: truth + "/" + sample.name + ".png")
            if withInstances, let instances = sample.instances {
                try PNG.write(Image(width: instances.width, height: instances.height, channels: 1, bitDepth: 16,
                                    samples: instances.values.map { UInt16($0) }),
                              to: truth + "/instances/" + sample.name + ".png")
            }
        }
    }

    /// "GenSelfDiff (pretrained)" → "genselfdiff-pretrained".
    static func folderName(_ method: String) -> String {
        method.lowercased().filter { $0.isLetter || $0.isNumber || $0 == " " }.split(separator: " ").joined(separator: "-")
    }

    static func table(_ results: [MethodResult]) -> String {
        var lines = ["| method | Dice | IoU | AJI | detection F1 | HD95 (px) | wall time |",
                     "|---|---|---|---|---|---|---|"]
        for r in results {
            lines.append(String(format: "| %@ | %.4f | %.4f | %.4f | %.4f | %.2f | %.0f s |", r.method as NSString,
                                r.summary.scores.dice, r.summary.scores.iou, r.summary.aji, r.summary.detectionF1,
                                r.summary.hausdorff95, r.seconds))
        }
        return lines.joined(separator: "\n")
    }

    static func pretrainingLine(_ c: Configuration) -> String {
        if let given = c.pretrained { return "not run here; fine-tuned the weights in `\(given)`." }
        return "GenSelfDiff recipe (quadratic β, P2 k = 1, γ = 1), `cpu` Attention U-Net, \(c.pretrainStepCount) steps on "
            + "\(c.patch)² crops of every training image."
    }

    static func report(_ results: [MethodResult], dataPath: String, split: DataSplit, crops: Int, _ c: Configuration) -> String {
        """
        # HistoDiff demo

        Data: `\(dataPath)` — \(split.labelled.count) labelled and \(split.unlabelled.count) unlabelled training images, \
        \(split.validation.count) held back (split seed \(split.seed), labels \(c.labelRatio)).\(c.quick ? " Quick mode." : "")

        Diffusion pretraining: \(pretrainingLine(c))

        Fine-tuning and the supervised U-Net: \(c.epochCount) epochs of \(crops) random \(c.patch)² crops per labelled image; \
        the kept weights are those of the epoch with the best Dice on the centred \(c.validationCrop)² of the held-back images.

        Held-back images, scores pooled over their pixels (Dice, IoU) and instances (AJI; detection F1: \
        one-to-one matches at IoU ≥ 0.5), HD95 averaged. Predicted instances: the 8-connected components of a binary \
        model's mask; for the boundary-aware model (classes background, nucleus interior, 2-pixel boundary, from \
        the instance maps), seeds where p(interior) > 0.5 flooded over the foreground by a watershed \
        (`InstancePostprocessing` defaults, not tuned here). True instances: the instance maps when every held-back \
        image has one, else the masks' 8-connected components.

        \(table(results))

        Overlays (each instance outlined in its own colour) are in each method's `overlays/` folder; masks in \
        `masks/`, 16-bit instance maps in `instances/`.

        """
    }
}


extension Demo {
    /// Trains `method` (preset `cpu`, the demo's crops, epochs and split) in `<output>/runs/<folder>` through the
    /// shared trainer; a rerun of the demo resumes or reuses that run.
    static func train(_ method: String, folder: String, options: [String: String] = [:],
                      target: MaskClasses = .binary, crops: Int, dataset: Dataset, split: DataSplit,
                      _ c: Configuration) throws -> any SegmentationModel {
        var request = TrainingRequest(method: method, data: "", directory: c.output + "/runs/" + folder)
        request.methodOptions = options
        request.target = target
        request.labels = c.labelRatio
        request.validation = c.validationRatio
        request.seed = c.seed
        request.patch = c.patch
        request.cropsPerImage = crops
        request.epochs = c.epochCount
        request.validationCrop = c.validationCrop
        request.backend = c.backend
        // Short demo runs of GenSelfDiff need a larger step than the paper's 1e-4 (which assumes 150 epochs of 256²).
        if method == "genselfdiff" { request.learningRate = 2e-3 }
        let result = try MethodTraining.run(request, dataset: dataset, split: split)
        if case let .interrupted(signal) = result.outcome { throw TrainingInterrupted(signal: signal) }
        return result.model
    }
}

import ArgumentParser
import Foundation
import HistoCore
import HistoData
import HistoMethods
import HistoNN

/// `histodiff train`: a segmentation method on the labelled subset of a dataset, validated on held-back images.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a segmentation method on a dataset folder (labelled subset by ratio, validation by image).",
        discussion: """
        supervised: the U-Net or ResNet-FPN with --loss. genselfdiff: GenSelfDiff fine-tuning (L_SS + L_FL) of the \
        Attention U-Net segmenter, initialised from a diffusion pretraining run (--pretrained; every weight but the \
        head) or at random. Options left out take the method's defaults: supervised patch 128, batch 8, 50 epochs, \
        patience 10, Adam 1e-3; genselfdiff the preset's recipe (cpu: patch 64, batch 8, 40 epochs, patience 10; \
        paper: patch 256, batch 8, 150 epochs, no early stopping; both Adam 1e-4 with betas 0.5/0.999).
        """)

    @Option(help: "Method: supervised or genselfdiff.") var method = "supervised"
    @Option(help: "Dataset folder with images/ and masks/.") var data: String
    @Option(help: "Output folder: best.safetensors, model.json, split.json.") var out: String
    @Option(help: "supervised: unet (SSL4MIS/Ciampi U-Net, the default) or fpn (ResNet-FPN).") var arch: String?
    @Option(help: "Model size: cpu or paper.") var preset = "cpu"
    @Option(help: "genselfdiff: the pretrained denoiser, a `histodiff pretrain` run folder or its ema.safetensors (same preset).")
    var pretrained: String?
    @Option(help: "Labelled fraction of the training images: 1/8, 12.5%, …") var labels = "1/8"
    @Option(help: "Validation fraction of the images.") var validation = "1/5"
    @Option(help: "supervised: loss ce, dice or ce+dice (the default).") var loss: String?
    @Option(help: "Patch size.") var patch: Int?
    @Option(help: "Batch size.") var batch: Int?
    @Option(help: "Maximum epochs.") var epochs: Int?
    @Option(help: "Early-stopping patience in epochs (0: never stop early).") var patience: Int?
    @Option(help: "Adam learning rate (genselfdiff keeps the recipe's betas 0.5/0.999).") var lr: Float?
    @Option(help: "Seed of the split, the weights and the batches.") var seed: UInt64 = 0
    @Flag(help: "Continue the run stopped in --out (by Ctrl-C or SIGTERM) where it stopped; give the options it was started with.")
    var resume = false

    func validate() throws {
        guard ["cpu", "paper"].contains(preset) else { throw ValidationError("unknown preset '\(preset)' (cpu, paper)") }
        switch method {
        case "supervised":
            guard pretrained == nil else { throw ValidationError("--pretrained applies to --method genselfdiff only") }
        case "genselfdiff":
            guard arch == nil, loss == nil else {
                throw ValidationError("--arch and --loss apply to --method supervised only (genselfdiff trains its Attention U-Net with L_SS + L_FL)")
            }
        default:
            throw ValidationError("unknown method '\(method)' (supervised, genselfdiff)")
        }
    }

    func run() throws {
        let signals = StopSignalHandlers()
        defer { signals.restore() }
        let labelRatio = try Ratio(labels), validationRatio = try Ratio(validation)
        let dataset = try Dataset.open(path: data, requireMasks: true)
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let card: ModelCard
        let result: SupervisedTraining.Result
        if method == "genselfdiff" {
            var configuration: GenSelfDiffFineTuning.Configuration = preset == "paper"
                ? .paper(classes: 2, labelRatio: labelRatio, validationRatio: validationRatio)
                : .cpu(classes: 2, labelRatio: labelRatio, validationRatio: validationRatio)
            apply(to: &configuration.plan)
            if let lr { configuration.optimizer = .adam(learningRate: lr, beta1: 0.5, beta2: 0.999) }
            let weights = try pretrained.map(GenSelfDiffFineTuning.pretrainedWeights(at:))
            print(weights.map { "initialising every weight but the head from \($0)" }
                  ?? "training from random initialisation (no --pretrained)")
            card = ModelCard(architecture: "genselfdiff", preset: preset, classes: 2, pixelRange: configuration.pixelRange)
            result = try GenSelfDiffFineTuning.run(configuration, dataset: dataset, pretrained: weights,
                                                   callbacks: callbacks(label: "genselfdiff \(preset)", signals: signals))
        } else {
            let arch = self.arch ?? "unet"
            guard case .supervised(let architecture) = try ModelCard.network(architecture: arch, preset: preset, classes: 2) else {
                throw ValidationError("--arch \(arch) is not a supervised architecture (unet, fpn)")
            }
            var configuration = SupervisedTraining.Configuration(architecture: architecture, labelRatio: labelRatio,
                                                                 validationRatio: validationRatio)
            configuration.patchSize = 128
            configuration.batchSize = 8
            configuration.maxEpochs = 50
            configuration.patience = 10
            apply(to: &configuration.plan)
            configuration.optimizer = .adam(learningRate: lr ?? 1e-3)
            guard let loss = SupervisedLoss(rawValue: self.loss ?? SupervisedLoss.crossEntropyDice.rawValue) else {
                throw ValidationError("unknown loss '\(self.loss!)' (\(SupervisedLoss.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            configuration.loss = loss
            card = ModelCard(architecture: arch, preset: preset, classes: 2, pixelRange: configuration.pixelRange)
            result = try SupervisedTraining.run(configuration, dataset: dataset,
                                                callbacks: callbacks(label: "supervised \(arch)", signals: signals))
        }
        try card.write(to: out)
        try result.split.write(to: (out as NSString).appendingPathComponent("split.json"))
        if result.stopReason == .cancelled {
            print("stopped by \(signalName(signals.pending)) after step \(result.steps) (epoch \(result.epochsRun + 1) in progress); "
                  + "state saved in \((out as NSString).appendingPathComponent(SupervisedTraining.resumeDirectoryName)); "
                  + "rerun the same command with --resume")
            throw TrainingOutcome.interrupted(signal: signals.pending).exitCode
        }
        print(String(format: "best validation Dice %.4f (IoU %.4f) at epoch %d of %d, %.0f s; weights %@",
                     result.bestValidationDice, result.bestValidationIoU, result.bestEpoch, result.epochsRun,
                     result.wallSeconds, result.checkpointPath ?? "not written"))
    }

    /// The options shared by every method, over the method's defaults.
    func apply(to plan: inout SupervisedTraining.Plan) {
        plan.seed = seed
        plan.splitSeed = seed
        plan.checkpointDirectory = out
        plan.resume = resume
        if let patch { plan.patchSize = patch }
        if let batch { plan.batchSize = batch }
        if let epochs { plan.maxEpochs = epochs }
        if let patience { plan.patience = patience == 0 ? nil : patience }
    }

    /// Progress over the run's optimizer steps (loss, it/s, ETA), a line per epoch with its validation scores, and
    /// a stop after the step during which SIGINT or SIGTERM arrived.
    func callbacks(label: String, signals: StopSignalHandlers) -> SupervisedTraining.Callbacks {
        var progress: ProgressReporter?
        return SupervisedTraining.Callbacks(step: { step in
            // The total is known from the first step; timing starts there.
            let reporter = progress ?? ProgressReporter(total: step.totalSteps, label: label, startStep: step.step)
            progress = reporter
            reporter.update(step: step.step, values: [("epoch", Double(step.epoch)), ("loss", Double(step.loss))])
        }, epoch: { report in
            let line = String(format: "epoch %d: loss %.4f, validation Dice %.4f, IoU %.4f, %.0f s%@", report.epoch,
                              report.meanLoss, report.validationDice, report.validationIoU, report.seconds,
                              report.isBest ? " (best)" : "")
            progress?.message(line)
        }, shouldStop: { signals.pending != 0 })
    }
}

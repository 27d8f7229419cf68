import ArgumentParser
import Foundation
import HistoCore
import HistoData
import HistoMethods
import HistoNN

/// `histodiff train --method supervised`: a segmentation network on the labelled subset of a dataset.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a segmentation method on a dataset folder (labelled subset by ratio, validation by image).")

    @Option(help: "Method: supervised.") var method = "supervised"
    @Option(help: "Dataset folder with images/ and masks/.") var data: String
    @Option(help: "Output folder: best.safetensors, model.json, split.json, report.") var out: String
    @Option(help: "Architecture: unet (SSL4MIS/Ciampi U-Net) or fpn (ResNet-FPN).") var arch = "unet"
    @Option(help: "Model size: cpu or paper.") var preset = "cpu"
    @Option(help: "Labelled fraction of the training images: 1/8, 12.5%, …") var labels = "1/8"
    @Option(help: "Validation fraction of the images.") var validation = "1/5"
    @Option(help: "Loss: ce, dice or ce+dice.") var loss = "ce+dice"
    @Option(help: "Patch size.") var patch = 128
    @Option(help: "Batch size.") var batch = 8
    @Option(help: "Maximum epochs.") var epochs = 50
    @Option(help: "Early-stopping patience in epochs.") var patience = 10
    @Option(help: "Adam learning rate.") var lr: Float = 1e-3
    @Option(help: "Seed.") var seed: UInt64 = 0

    func run() throws {
        guard method == "supervised" else { throw ValidationError("unknown method '\(method)' (this build: supervised)") }
        let card = ModelCard(architecture: arch, preset: preset, classes: 2)
        var configuration = SupervisedTraining.Configuration(architecture: try card.segmentationArchitecture,
                                                             labelRatio: try Ratio(labels), validationRatio: try Ratio(validation))
        configuration.seed = seed
        configuration.splitSeed = seed
        configuration.patchSize = patch
        configuration.batchSize = batch
        configuration.maxEpochs = epochs
        configuration.patience = patience
        configuration.optimizer = .adam(learningRate: lr)
        switch loss {
        case "ce": configuration.loss = .crossEntropy
        case "dice": configuration.loss = .dice
        case "ce+dice": configuration.loss = .crossEntropyDice
        default: throw ValidationError("unknown loss '\(loss)' (ce, dice, ce+dice)")
        }
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        configuration.checkpointDirectory = out
        let dataset = try Dataset.open(path: data, requireMasks: true)
        let progress = ProgressReporter(total: epochs, label: "supervised \(arch)")
        let result = try SupervisedTraining.run(configuration, dataset: dataset, callbacks: .init(epoch: { report in
            progress.update(step: report.epoch, values: [("loss", Double(report.meanLoss)), ("val dice", Double(report.validationDice))])
        }))
        try card.write(to: out)
        try result.split.write(to: (out as NSString).appendingPathComponent("split.json"))
        print(String(format: "best validation Dice %.4f (IoU %.4f) at epoch %d of %d, %.0f s; weights %@",
                     result.bestValidationDice, result.bestValidationIoU, result.bestEpoch, result.epochsRun,
                     result.wallSeconds, result.checkpointPath ?? "not written"))
    }
}

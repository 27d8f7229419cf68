import ArgumentParser
import Foundation
import HistoCore
import HistoData
import HistoDiffusion
import HistoMethods
import HistoNN

/// `histodiff train-autoencoder`: the KL autoencoder (f4, 3 latent channels) of latent diffusion.
struct TrainAutoencoder: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train-autoencoder",
        abstract: "Train the KL-regularised autoencoder (L1 or L2 reconstruction + β·KL) on a folder of images.")

    @Option(help: "Dataset folder (images/, masks optional).") var data: String
    @OptionGroup var runOptions: RunOptions
    @OptionGroup var device: DeviceOptions
    @Option(help: "Preset: cpu or paper (LDM kl-f4).") var preset = "cpu"
    @Option(help: "Patch size.") var patch = 64
    @Option(help: "Batch size.") var batch = 4
    @Option(help: "Adam learning rate (LDM: base 4.5e-6 × batch × GPUs).") var lr: Float = 4.5e-4
    @Option(help: "KL weight β.") var klWeight: Float = 1e-6
    @Flag(help: "L2 instead of L1 reconstruction.") var l2 = false

    func validate() throws {
        try OptionCheck.positive(patch, "--patch")
        try OptionCheck.positive(batch, "--batch")
        try OptionCheck.positive(lr, "--lr")
        try OptionCheck.nonNegative(klWeight, "--kl-weight")
    }

    func run() throws {
        guard let configuration = AutoencoderKL.Configuration.presets[preset] else {
            throw ValidationError("unknown preset '\(preset)' (\(AutoencoderKL.Configuration.presets.keys.sorted().joined(separator: ", ")))")
        }
        let group = Parallel.group
        try group.checkShards(ofBatch: batch, option: "--batch")
        let lock = try runOptions.lockRunFolder()
        defer { lock?.release() }
        // Masks are not read. Every image is decoded now, so that a damaged one stops the run before it starts.
        let dataset = try Dataset.open(path: data, ignoringMasks: true, decodingImages: true)
        try dataset.checkPatchFits(patch)
        let backend = try device.backend()
        let model = try AutoencoderKL(configuration, generator: RandomGenerator(seed: runOptions.seed))
        let optimizer = Adam([ParameterGroup(model.trainableParameters())], learningRate: lr, beta1: 0.5, beta2: 0.9)
        let noise = RandomGenerator(seed: runOptions.seed &+ 1)
        noise.batchShard = group.batchShard
        var options = TrainingRun.Options(totalSteps: runOptions.steps, checkpointEvery: runOptions.checkpointEvery)
        options.columns = ["reconstruction", "kl"]
        options.label = "autoencoder"
        // Names the preset in the checkpoint's weights, so that `pretrain --autoencoder RUN` can rebuild the network.
        options.metadata = [AutoencoderKL.presetMetadataKey: preset]
        let recorded = RecordedOptions(
            values: ["--preset": preset, "--patch": String(patch), "--batch": String(batch), "--lr": String(lr),
                     "--kl-weight": String(klWeight), "--l2": String(l2), "--seed": String(runOptions.seed)],
            changeable: "--steps may grow; --checkpoint-every and --device may change, as they do not change what a "
                + "step computes")
        options.metadata.merge(try recorded.metadata()) { a, _ in a }
        options.group = group
        try Parallel.checkSameOnEveryRank(model, settings: options.metadata)
        let training = try TrainingRun(directory: runOptions.out, model: model,
                                       components: ["optimizer": optimizer, "noise": noise], options: options)
        let done = try training.resume()
        try recorded.checkResumed(from: training.resumedMetadata, run: runOptions.out)
        try runOptions.announceResume(done: done)
        var loaderOptions = LoaderOptions(batchSize: batch, patches: .randomCrops(size: patch, perImage: 1), labelled: false)
        loaderOptions.seed = runOptions.seed
        loaderOptions.skippedBatches = done  // a resumed run sees the batches an uninterrupted one would
        loaderOptions.shard = group.batchShard
        let loader = try BatchLoader(dataset: dataset, indices: Array(0..<dataset.count), options: loaderOptions)
        let stepOptions = AutoencoderTraining.Options(steps: 1, klWeight: klWeight, reconstruction: l2 ? .l2 : .l1)
        let outcome = try training.train { _ in
            guard let images = try loader.next()?.images else { return StepReport(loss: .nan, learningRate: lr, stop: true) }
            let record = try AutoencoderTraining.step(model: model, images: images, optimizer: optimizer, options: stepOptions,
                                                      generator: noise, on: backend, across: group)
            return StepReport(loss: record.loss, learningRate: record.learningRate,
                              values: ["reconstruction": Double(record.reconstruction), "kl": Double(record.kl)])
        }
        guard group.isRoot else { throw outcome.exitCode }
        try MethodTrainer.writeLossCurve(in: runOptions.out)
        print("autoencoder run in \(runOptions.out): model in checkpoint/model.safetensors, loss curve in loss_curve.png")
        throw outcome.exitCode
    }
}

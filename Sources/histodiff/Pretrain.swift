import ArgumentParser
import Foundation
import HistoCore
import HistoData
import HistoDiffusion
import HistoMethods
import HistoNN

/// `histodiff pretrain`: denoising diffusion pretraining on a folder of (unlabelled) images.
struct Pretrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "DDPM pretraining with P2 weighting on unlabelled images: EMA weights, checkpoints, resume, sample grids.")

    @Option(help: "Folder of images (images/; masks are ignored).") var data: String
    @OptionGroup var runOptions: RunOptions
    @OptionGroup var device: DeviceOptions
    @Option(help: "Model family: genselfdiff or guided.") var model = "genselfdiff"
    @Option(help: "Model preset: cpu, paper (guided also bench828k, pathsegdiff, dtseg).") var preset = "cpu"
    @Option(help: """
        Recipe: genselfdiff (quadratic β, P2 k=1 γ=1, loss summed over the batch), ddpm (linear β, mean), \
        v-cosine (cosine ᾱ, v-prediction, mean, clip 1; for the cpu presets) or ldm (LDM linear β, ε, mean, AdamW, \
        EMA 0.9999; DTSeg's).
        """)
    var recipe = "genselfdiff"
    @Option(help: "Patch size.") var patch = 64
    @Option(help: ArgumentHelp("Resize every image (bilinear) to SIDE×SIDE first, as `train --resize` (gland scale: "
                               + "128, for `train --method genselfdiff --preset gland`).", valueName: "side"))
    var resize: Int?
    @Option(help: "Batch size.") var batch = 8
    @Option(help: """
        Learning rate (default: the recipe's: 1e-4 for genselfdiff and ddpm, 1e-3 for v-cosine, 2e-6 × --batch for \
        ldm).
        """) var lr: Float?
    @Option(help: "EMA decay of the weights used for samples (default: the recipe's: 0.9999 for ldm, else 0.999).")
    var emaDecay: Float?
    @Option(help: "Write a sample grid (DDIM, 50 steps) every N steps (0: only at the end).") var sampleEvery = 0
    @Option(help: "Images in each sample grid.") var samples = 16
    @Option(help: "Latent diffusion: train on the latents of this autoencoder (a train-autoencoder run folder or its .safetensors); --patch stays in pixels.")
    var autoencoder: String?
    @Option(help: "Latents to train on: sample (a posterior draw, as LDM) or mean.") var latent = "sample"
    @Option(help: ArgumentHelp("""
        Condition on the frozen HIPT ViT's CLS embedding of each training patch (PathSegDiff's SSL-guided LDM; \
        --model guided; a tools/hipt_export.py file; the cpu preset gains cross-attention to 512-wide tokens). \
        Default: unconditional.
        """, valueName: "weights.safetensors"))
    var hipt: String?

    func validate() throws {
        try OptionCheck.positive(patch, "--patch")
        if let resize { try OptionCheck.positive(resize, "--resize") }
        try OptionCheck.positive(batch, "--batch")
        if let lr { try OptionCheck.positive(lr, "--lr") }
        if let emaDecay { try OptionCheck.fraction(emaDecay, "--ema-decay") }
        try OptionCheck.nonNegative(sampleEvery, "--sample-every", zero: "only at the end")
        try OptionCheck.positive(samples, "--samples")
        if hipt != nil, model != "guided" { throw ValidationError("--hipt needs --model guided (cross-attention)") }
    }

    func run() throws {
        guard let recipe = DiffusionRecipe(rawValue: recipe) else {
            throw ValidationError("unknown recipe '\(recipe)' (\(DiffusionRecipe.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        guard let posterior = LatentSpace.Posterior(rawValue: latent) else { throw ValidationError("unknown --latent '\(latent)' (sample, mean)") }
        let group = Parallel.group, writes = group.isRoot
        try group.checkShards(ofBatch: batch, option: "--batch")
        let lock = try runOptions.lockRunFolder()
        defer { lock?.release() }
        // Masks are not read. Every image is decoded now, so that a damaged one stops the run before it starts.
        let stored = try Dataset.open(path: data, ignoringMasks: true, decodingImages: true)
        let dataset = try resize.map { try stored.resized(to: $0) } ?? stored
        try dataset.checkPatchFits(patch)
        let backend = try device.backend()
        let hiptPath = hipt.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
        let hiptModel = try hiptPath.map { (path: $0, encoder: try VisionTransformer.load(from: $0)) }
        let encoder = hiptModel?.encoder
        let conditioning = hiptModel.map {
            DiffusionModelSpec.Conditioning(hipt: $0.path, embeddingDim: $0.encoder.configuration.embedDim)
        }
        let pixelSpec = DiffusionModelSpec(family: model, preset: preset, recipe: recipe, conditioning: conditioning)
        let network = try pixelSpec.makeModel(generator: RandomGenerator(seed: runOptions.seed))
        let shadow = try pixelSpec.makeModel(generator: RandomGenerator(seed: runOptions.seed))
        var pretraining = DiffusionPretraining(recipe.configuration)
        pretraining.group = group
        let learningRate = lr ?? recipe.learningRate(batch: batch)
        let optimizer = recipe.optimizer(network.trainableParameters(), learningRate: learningRate)
        let emaDecay = emaDecay ?? recipe.emaDecay
        let ema = DiffusionPretraining.movingAverage(of: network, decay: emaDecay)
        let noise = RandomGenerator(seed: runOptions.seed &+ 1)
        let latentNoise = RandomGenerator(seed: runOptions.seed &+ 2)
        for generator in [noise, latentNoise] { generator.batchShard = group.batchShard }
        var components: [String: any CheckpointableState] = ["optimizer": optimizer, "ema": ema, "noise": noise]
        if autoencoder != nil { components["latent_noise"] = latentNoise }
        var options = TrainingRun.Options(totalSteps: runOptions.steps, checkpointEvery: runOptions.checkpointEvery)
        options.columns = [DiffusionPretraining.gradientNormColumn]
        options.label = "pretrain \(model)"
        let recorded = RecordedOptions(
            values: ["--patch": String(patch), "--batch": String(batch), "--lr": String(learningRate),
                     "--ema-decay": String(emaDecay), "--seed": String(runOptions.seed),
                     "--resize": resize.map(String.init) ?? "none"],
            changeable: "--steps may grow; --checkpoint-every, --sample-every, --samples and --device may change, "
                + "as they do not change what a step computes")
        options.metadata = ["diffusion.family": model, "diffusion.preset": preset, "diffusion.recipe": recipe.rawValue]
            .merging(try recorded.metadata()) { a, _ in a }
        options.group = group
        try Parallel.checkSameOnEveryRank(network, settings: options.metadata)
        let training = try TrainingRun(directory: runOptions.out, model: network, components: components, options: options)
        // A run resumes with the model, recipe and latent space it was started with.
        let specPath = (runOptions.out as NSString).appendingPathComponent(DiffusionModelSpec.fileName)
        let resuming = training.latestCheckpoint != nil && FileManager.default.fileExists(atPath: specPath)
        let previous = try resuming ? DiffusionModelSpec.read(specPath) : nil
        if let previous, previous.family != model || previous.preset != preset || previous.recipe != recipe
            || (previous.latent == nil) != (autoencoder == nil)
            || (previous.latent.map { $0.posterior != posterior } ?? false)
            || previous.conditioning?.hipt != hiptPath {
            throw CommandError("\(runOptions.out) holds a run of \(previous.family)/\(previous.preset), "
                               + "recipe \(previous.recipe.rawValue), "
                                  + (previous.latent.map { "on \($0.posterior.rawValue) latents of \($0.source)" } ?? "on pixels")
                                  + (previous.conditioning.map { ", conditioned on --hipt \($0.hipt)" }
                                     ?? ", unconditional")
                                  + "; resume it with the options it was started with, or choose another --out")
        }
        // A resumed latent run keeps its copy of the autoencoder (and its scale factor), so that it trains on the
        // same latents.
        let autoencoderCopy = (runOptions.out as NSString).appendingPathComponent(DiffusionRun.autoencoderFileName)
        let frozen = try autoencoder.map {
            try LatentSpace.loadFirstStage(from: previous?.latent != nil ? autoencoderCopy : $0)
        }
        try checkMemory(network, pretraining: pretraining, autoencoder: frozen,
                        embeddingDim: conditioning?.embeddingDim)
        let done = try training.resume()
        try recorded.checkResumed(from: training.resumedMetadata, run: runOptions.out)
        try runOptions.announceResume(done: done)

        var loaderOptions = DiffusionPretraining.loaderOptions(patch: patch, batch: batch, seed: runOptions.seed)
        var latent: (space: LatentSpace, settings: DiffusionModelSpec.Latent)?
        if let autoencoder, let frozen {
            latent = try latentSpace(frozen, source: autoencoder, copy: autoencoderCopy, posterior: posterior,
                                     previous: previous?.latent,
                                     firstBatch: { try BatchLoader(dataset: dataset, indices: Array(0..<dataset.count), options: loaderOptions).next() },
                                     on: backend)
        }
        let spec = DiffusionModelSpec(family: model, preset: preset, recipe: recipe, latent: latent?.settings,
                                      conditioning: conditioning)
        let diffusion = try DiffusionRun(spec: spec, model: shadow, latentSpace: latent?.space, hipt: encoder)
        try diffusion.checkImageSize(height: patch, width: patch, "--patch")
        if writes { try spec.write(toDirectory: runOptions.out) }
        // A resumed run sees the batches an uninterrupted one would.
        loaderOptions.skippedBatches = done
        loaderOptions.shard = group.batchShard
        let loader = try BatchLoader(dataset: dataset, indices: Array(0..<dataset.count), options: loaderOptions)

        // A conditioned run samples on the HIPT embeddings of the first `samples` patches the loader draws.
        let sampleContext = try (writes ? encoder : nil).map { _ in
            let options = DiffusionPretraining.loaderOptions(patch: patch, batch: samples, seed: runOptions.seed)
            let loader = try BatchLoader(dataset: dataset, indices: Array(0..<dataset.count), options: options)
            guard let first = try loader.next(), let context = try diffusion.context(first.images, on: backend) else {
                throw ValidationError("\(data) holds no images")
            }
            return context
        }
        func writeSamples(after step: Int) throws {
            try ema.copy(to: shadow)
            try diffusion.writeSamples(count: samples, size: patch, sampler: .ddim(steps: 50, eta: 0), seed: 1234,
                                       context: sampleContext,
                                       grid: runOptions.out + String(format: "/samples_%06d.png", step), on: backend)
        }

        let outcome = try pretraining.train(
            network, run: training, loader: loader, optimizer: optimizer, ema: ema, noise: noise, on: backend,
            encode: latent.map { latent in { try latent.space.encode($0, drawingFrom: latentNoise, on: backend) } },
            condition: { try diffusion.context($0, on: backend) },
            afterStep: { done in
                if writes, sampleEvery > 0, done % sampleEvery == 0 { try writeSamples(after: done) }
            })
        guard writes else { throw outcome.exitCode }
        try writeSamples(after: training.step)
        try MethodTrainer.writeLossCurve(in: runOptions.out)
        try ema.copy(to: shadow)
        var metadata = options.metadata
        if let latent { metadata["diffusion.latent_scale_factor"] = String(latent.settings.scaleFactor) }
        try shadow.save(to: (runOptions.out as NSString).appendingPathComponent(DiffusionRun.weightsFileName), metadata: metadata)
        print("pretraining run in \(runOptions.out): EMA weights \(DiffusionRun.weightsFileName), loss curve loss_curve.png, sample grids samples_*.png")
        throw outcome.exitCode
    }

    /// Refuses a step too large for this machine's memory before anything is allocated (`StepMemoryEstimate`):
    /// the loss of one batch is recorded, not run, on a shape-only input of the model's input size (the latents'
    /// for a latent run, with a shape-only context of `embeddingDim`-wide embeddings for a conditioned one), in
    /// evaluation mode so that recording draws no dropout numbers. The weights are counted six times: weights,
    /// gradients, Adam's two moments, the EMA and the copy samples are drawn with. The frozen autoencoder's
    /// encoding and the frozen HIPT's are not counted.
    func checkMemory(_ network: any FeatureExtractingModel, pretraining: DiffusionPretraining,
                     autoencoder: (any FirstStage)?, embeddingDim: Int?) throws {
        let factor = autoencoder?.downsamplingFactor ?? 1
        let input = StepMemoryEstimate.input(shape: [batch, network.imageChannels, patch / factor, patch / factor])
        let context = embeddingDim.map { StepMemoryEstimate.input(shape: [batch, $0]) }
        network.train(false)
        let loss = pretraining.loss(network, x0: input, context: context, generator: RandomGenerator(seed: 0))
        try StepMemoryEstimate(model: network, extraWeightCopies: 2, batch: batch, loss: loss)
            .check(patch: patch, patchMultiple: network.inputMultiple * factor)
    }

    /// The latent space of a run on `autoencoder`'s latents (loaded from `source`, or from the run's `copy` when
    /// resumed). A fresh run saves the autoencoder to `copy` and sets the scale factor as LDM does: 1/std of the first
    /// batch's latents (scale_by_std) for a KL autoencoder, 1 for VQ; a resumed run keeps its factor, so that it
    /// trains on the same latents.
    func latentSpace(_ autoencoder: any FirstStage, source: String, copy: String, posterior: LatentSpace.Posterior,
                     previous: DiffusionModelSpec.Latent?, firstBatch: () throws -> Batch?,
                     on backend: any Backend) throws -> (space: LatentSpace, settings: DiffusionModelSpec.Latent) {
        if let previous {
            let space = LatentSpace(autoencoder: autoencoder, scaleFactor: previous.scaleFactor, posterior: posterior)
            return (space, previous)
        }
        guard let first = try firstBatch() else { throw ValidationError("\(data) holds no images") }
        let space = try LatentSpace.ldmScaled(autoencoder: autoencoder, firstBatch: first.images, posterior: posterior,
                                              generator: RandomGenerator(seed: runOptions.seed &+ 3), on: backend)
        let weights = AutoencoderKL.weightsFile(source)
        if Parallel.group.isRoot {
            try autoencoder.saveWithPreset(to: copy)
            let origin = autoencoder.fixedScaleFactor == nil ? "1/std of the first batch's latents" : "LDM's for VQ"
            print("latent diffusion on \(weights) (copied to \(copy)): scale factor \(space.scaleFactor), " + origin)
        }
        return (space, DiffusionModelSpec.Latent(scaleFactor: space.scaleFactor, posterior: posterior, source: weights))
    }
}

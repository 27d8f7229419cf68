import ArgumentParser
import Foundation
import HistoCore
import HistoData
import HistoDiffusion
import HistoNN

/// `histodiff pretrain`: denoising diffusion pretraining on a folder of (unlabelled) images.
struct Pretrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "DDPM pretraining with P2 weighting on unlabelled images: EMA weights, checkpoints, resume, sample grids.")

    @Option(help: "Folder of images (images/; masks are ignored).") var data: String
    @OptionGroup var runOptions: RunOptions
    @OptionGroup var device: DeviceOptions
    @Option(help: "Model family: genselfdiff or guided.") var model = "genselfdiff"
    @Option(help: "Model preset: cpu, paper (guided also bench828k).") var preset = "cpu"
    @Option(help: "Recipe: genselfdiff (quadratic β, P2 k=1 γ=1, loss summed over the batch) or ddpm (linear β, mean).")
    var recipe = "genselfdiff"
    @Option(help: "Patch size.") var patch = 64
    @Option(help: "Batch size.") var batch = 8
    @Option(help: "Adam learning rate.") var lr: Float = 1e-4
    @Option(help: "EMA decay of the weights used for samples.") var emaDecay: Float = 0.999
    @Option(help: "Write a sample grid (DDIM, 50 steps) every N steps (0: only at the end).") var sampleEvery = 0
    @Option(help: "Images in each sample grid.") var samples = 16

    func run() throws {
        let backend = try device.backend()
        let spec = DiffusionModelSpec(family: model, preset: preset)
        let network = try spec.makeModel(generator: RandomGenerator(seed: runOptions.seed))
        let shadow = try spec.makeModel(generator: RandomGenerator(seed: runOptions.seed))
        let pretraining: DiffusionPretraining
        switch recipe {
        case "genselfdiff": pretraining = DiffusionPretraining(.genSelfDiff)
        case "ddpm": pretraining = DiffusionPretraining(.init())
        default: throw ValidationError("unknown recipe '\(recipe)' (genselfdiff, ddpm)")
        }
        let optimizer = Adam([ParameterGroup(network.trainableParameters())], learningRate: lr)
        let ema = ExponentialMovingAverage(tracking: network, decay: emaDecay, warmup: .meanTeacher)
        let noise = RandomGenerator(seed: runOptions.seed &+ 1)
        var options = TrainingRun.Options(totalSteps: runOptions.steps, checkpointEvery: runOptions.checkpointEvery)
        options.columns = ["grad_norm"]
        options.label = "pretrain \(model)"
        options.metadata = ["diffusion.family": model, "diffusion.preset": preset, "diffusion.recipe": recipe]
        let training = try TrainingRun(directory: runOptions.out, model: network,
                                       components: ["optimizer": optimizer, "ema": ema, "noise": noise], options: options)
        let done = try training.resume()
        try JSONEncoder().encode(spec).write(to: URL(fileURLWithPath: runOptions.out).appendingPathComponent(DiffusionModelSpec.fileName))

        let dataset = try Dataset.open(path: data)
        let loaderOptions = DiffusionPretraining.loaderOptions(patch: patch, batch: batch, seed: runOptions.seed)
        let loader = try RunFiles.loader(dataset, indices: Array(0..<dataset.count), options: loaderOptions, skipping: done)

        func writeSamples(after step: Int) throws {
            try ema.copy(to: shadow)
            shadow.train(false)
            let sampler = try DDIMSampler(schedule: pretraining.schedule, steps: 50)
            let images = try sampler.sample(shadow, shape: [samples, 3, patch, patch], target: pretraining.configuration.target,
                                            generator: RandomGenerator(seed: 1234), on: backend)
            let path = runOptions.out + String(format: "/samples_%06d.png", step)
            try PNG.write(Charts.imageGrid(images, columns: nil, padding: 2, range: .minusOneToOne, paddingColor: RGB(255, 255, 255)), to: path)
        }

        let outcome = try training.train { step in
            guard let batch = try loader.next() else { return StepReport(loss: .nan, learningRate: lr, stop: true) }
            let (loss, norm) = try pretraining.step(network, x0: batch.images, optimizer: optimizer, ema: ema,
                                                    generator: noise, on: backend)
            if sampleEvery > 0, (step + 1) % sampleEvery == 0 { try writeSamples(after: step + 1) }
            return StepReport(loss: loss, learningRate: optimizer.learningRate, values: ["grad_norm": Double(norm)])
        }
        try writeSamples(after: training.step)
        try RunFiles.writeLossCurve(in: runOptions.out)
        try ema.copy(to: shadow)
        try shadow.save(to: runOptions.out + "/ema.safetensors", metadata: options.metadata)
        print("pretraining run in \(runOptions.out): EMA weights ema.safetensors, loss curve loss_curve.png, sample grids samples_*.png")
        throw outcome.exitCode
    }
}

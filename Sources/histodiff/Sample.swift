import ArgumentParser
import Foundation
import HistoCore
import HistoData
import HistoDiffusion
import HistoNN

/// `histodiff sample`: images from a pretrained diffusion model.
struct SampleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sample",
        abstract: "Sample images from a `histodiff pretrain` run (decoded for latent runs): a grid PNG, optionally one PNG each.")

    @Option(help: "A pretrain run folder (its ema.safetensors), or a .safetensors file in one.") var model: String
    @Option(help: "ddim or ddpm.") var sampler = "ddim"
    @Option(help: "Sampling steps, strided over the schedule's 1000.") var steps = 50
    @Option(help: "DDIM η: 0 is deterministic given the initial noise, 1 has DDPM's variance.") var eta: Float = 0
    @Option(help: "Number of samples.") var count = 16
    @Option(help: "Sample height and width in pixels.") var size = 64
    @Option(help: "Seed of the initial noise (and of the per-step noise of ddpm or η > 0).") var seed: UInt64 = 0
    @Option(help: "Grid PNG.") var out = "grid.png"
    @Option(help: "Folder for one PNG per sample (sample_000.png, …).") var individual: String?
    @Option(parsing: .upToNextOption, help: ArgumentHelp("""
        A run pretrained with --hipt: condition sample i on the HIPT embedding of image i (PNG files, cycled to \
        --count).
        """, valueName: "image"))
    var condition: [String] = []
    @OptionGroup var device: DeviceOptions

    func validate() throws {
        try OptionCheck.positive(steps, "--steps")
        try OptionCheck.nonNegative(eta, "--eta")
        try OptionCheck.positive(count, "--count")
        try OptionCheck.positive(size, "--size")
    }

    func run() throws {
        let choice: SamplerChoice
        switch sampler {
        case "ddim": choice = .ddim(steps: steps, eta: eta)
        case "ddpm":
            guard eta == 0 else { throw ValidationError("--eta applies to the ddim sampler only") }
            choice = .ddpm(steps: steps)
        default: throw ValidationError("unknown sampler '\(sampler)' (ddim, ddpm)")
        }
        let backend = try device.backend()
        let diffusion = try DiffusionRun.load(model)
        let context = try conditioningContext(diffusion, on: backend)
        let progress = ProgressReporter(total: choice.steps, label: "sample \(sampler)")
        try diffusion.writeSamples(count: count, size: size, sampler: choice, seed: seed, context: context, grid: out,
                                   individual: individual, on: backend) { progress.update(step: $0.index + 1) }
        progress.message("\(progress.summary(step: choice.steps)); \(count) samples in \(out)"
                         + (individual.map { " and \($0)/sample_*.png" } ?? ""))
    }

    /// The HIPT embeddings [count, E] of the --condition images, cycled, for a conditioned run; nil otherwise.
    func conditioningContext(_ diffusion: DiffusionRun, on backend: any Backend) throws -> Tensor? {
        guard diffusion.hipt != nil else {
            if !condition.isEmpty { throw ValidationError("--condition applies to runs pretrained with --hipt") }
            return nil
        }
        guard !condition.isEmpty else {
            throw ValidationError("\(model) is conditioned on HIPT embeddings (pretrained with --hipt): give "
                                  + "--condition IMAGE… to condition the samples on")
        }
        let embeddings = try condition.map {
            try diffusion.context(Planes.batch([PNG.read(path: $0).colorPlanes()]), on: backend)!
        }
        return Tensor.concat((0..<count).map { embeddings[$0 % embeddings.count] }, axis: 0)
    }
}

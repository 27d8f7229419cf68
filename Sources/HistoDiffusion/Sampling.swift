import Foundation
import HistoCore
import HistoData
import HistoNN

/// One finished step of a sampler, as reported to its progress callback.
public struct SamplingStep {
    /// 0 for the first (noisiest) step, `count − 1` for the last.
    public let index: Int
    public let count: Int
    /// The model timestep this step denoised from.
    public let timestep: Int
    /// The sample after this step (evaluated), x₀ after the last.
    public let sample: Tensor
}

/// The reverse-process loop shared by the samplers: starting from x_T ~ N(0, I), for each kept timestep from the
/// last, the model's output at that timestep and one fused step op. A strided sampler steps through the rows of the
/// respaced schedule while the model sees the original timesteps (guided-diffusion's timestep map).
struct ReverseProcess {
    let timesteps: [Int]
    let spaced: NoiseSchedule

    init(schedule: NoiseSchedule, steps: Int?, spacing: TimestepSpacing) throws {
        timesteps = try spacing.timesteps(steps ?? schedule.steps, of: schedule.steps)
        spaced = try schedule.respaced(keeping: timesteps)
    }

    /// `step(x_t, model output, table rows [N])` gives x at the previous kept timestep.
    func run(_ sampler: String, model: some NoisePredictor, shape: [Int], context: Tensor?, generator: RandomGenerator,
             backend: (any Backend)?, progress: ((SamplingStep) -> Void)?,
             step: (Tensor, Tensor, Tensor) -> Tensor) throws -> Tensor {
        guard shape.count >= 2, shape[0] >= 1, shape[1] == model.imageChannels, shape.allSatisfy({ $0 >= 1 }) else {
            throw EngineError.invalidOp(op: sampler, message:
                "sample shape \(describe(shape)) must be [N, \(model.imageChannels), …] with positive sizes for this model")
        }
        let backend = backend ?? Engine.defaultBackend, n = shape[0]
        var x = generator.normal(shape)
        for (index, row) in timesteps.indices.reversed().enumerated() {
            let timestep = timesteps[row]
            let output = model(x, timesteps: .full([n], Float(timestep)), context: context)
            x = try detached(step(x, output, .full([n], Float(row))), on: backend)
            progress?(SamplingStep(index: index, count: timesteps.count, timestep: timestep, sample: x))
        }
        return x
    }
}

/// `x` evaluated and cut from the graph that produced it, its buffer left where it is (no copy to the host), so
/// that a later graph does not hold on to the one that computed it (the previous sampling steps, a frozen encoder).
func detached(_ x: Tensor, on backend: any Backend) throws -> Tensor {
    try x.eval(on: backend)
    guard let buffer = x.node.buffer, x.node.offset == 0 else { return try x.materialized(on: backend) }
    return Tensor(buffer: buffer, shape: x.shape, label: "detached")
}

/// Ancestral DDPM sampling (Ho et al.; guided-diffusion `p_sample_loop`) over all T steps or a strided subset
/// (guided-diffusion's timestep respacing). Each step draws fresh noise from the generator.
public struct DDPMSampler {
    /// The kept timesteps, increasing.
    public var timesteps: [Int] { process.timesteps }
    public let variance: DDPMVariance
    /// Whether x̂₀ is clamped to [−1, 1] before the posterior mean (guided-diffusion `clip_denoised`).
    public let clipDenoised: Bool
    let process: ReverseProcess

    /// `steps` nil: all of the schedule's steps.
    public init(schedule: NoiseSchedule, steps: Int? = nil, spacing: TimestepSpacing = .even,
                variance: DDPMVariance = .posterior, clipDenoised: Bool = true) throws {
        process = try ReverseProcess(schedule: schedule, steps: steps, spacing: spacing)
        self.variance = variance
        self.clipDenoised = clipDenoised
    }

    /// x₀ for samples of `shape` ([N, C, …], C the model's image channels). The model is called as it is (put it in
    /// evaluation mode first); `progress` sees every step.
    public func sample(_ model: some NoisePredictor, shape: [Int], target: DiffusionTarget = .epsilon, context: Tensor? = nil,
                       generator: RandomGenerator, on backend: (any Backend)? = nil,
                       progress: ((SamplingStep) -> Void)? = nil) throws -> Tensor {
        let table = process.spaced.table
        return try process.run("DDPMSampler", model: model, shape: shape, context: context, generator: generator,
                               backend: backend, progress: progress) { x, output, rows in
            DiffusionOps.ddpmStep(xt: x, output: output, noise: generator.normal(shape), table: table, timesteps: rows,
                                  prediction: target.denoiserOutput, clip: clipDenoised, variance: variance)
        }
    }
}

/// DDIM sampling (Song et al.; guided-diffusion `ddim_sample_loop`) over `steps` strided timesteps; η = 0 is
/// deterministic given x_T, η = 1 has DDPM's posterior variance.
public struct DDIMSampler {
    public var timesteps: [Int] { process.timesteps }
    public let eta: Float
    public let clipDenoised: Bool
    let process: ReverseProcess

    public init(schedule: NoiseSchedule, steps: Int, eta: Float = 0, spacing: TimestepSpacing = .ddim,
                clipDenoised: Bool = true) throws {
        guard eta >= 0 else { throw EngineError.invalidOp(op: "DDIMSampler", message: "η = \(eta) must be non-negative") }
        process = try ReverseProcess(schedule: schedule, steps: steps, spacing: spacing)
        self.eta = eta
        self.clipDenoised = clipDenoised
    }

    /// x₀ for samples of `shape` ([N, C, …]); see `DDPMSampler.sample`.
    public func sample(_ model: some NoisePredictor, shape: [Int], target: DiffusionTarget = .epsilon, context: Tensor? = nil,
                       generator: RandomGenerator, on backend: (any Backend)? = nil,
                       progress: ((SamplingStep) -> Void)? = nil) throws -> Tensor {
        let table = process.spaced.table
        return try process.run("DDIMSampler", model: model, shape: shape, context: context, generator: generator,
                               backend: backend, progress: progress) { x, output, rows in
            DiffusionOps.ddimStep(xt: x, output: output, noise: eta == 0 ? nil : generator.normal(shape), table: table,
                                  timesteps: rows, prediction: target.denoiserOutput, clip: clipDenoised, eta: eta)
        }
    }
}

/// Which sampler `DiffusionRun.sample` runs.
public enum SamplerChoice: Sendable {
    /// DDIM over `steps` strided timesteps (DDIM spacing), η = `eta`.
    case ddim(steps: Int, eta: Float)
    /// Ancestral DDPM over `steps` evenly spaced timesteps (all of them when `steps` is the schedule's length).
    case ddpm(steps: Int)

    public var steps: Int {
        switch self {
        case .ddim(let steps, _), .ddpm(let steps): return steps
        }
    }
}

extension DiffusionRun {
    /// `count` images [count, 3, size, size] in [−1, 1] sampled from x_T drawn with `seed` (the same seed gives the
    /// same images); a latent run samples latents and decodes them. A conditioned run needs `context`, the
    /// [count, E] embeddings of `context(_:on:)` to condition each sample on. The model runs in evaluation mode and
    /// is put back in the mode it was in; `progress` sees every sampling step.
    public func sample(count: Int, size: Int, sampler: SamplerChoice, seed: UInt64, context: Tensor? = nil,
                       on backend: (any Backend)? = nil, progress: ((SamplingStep) -> Void)? = nil) throws -> Tensor {
        guard count >= 1 else { throw EngineError.invalidValue(op: "sample", message: "count \(count) must be at least 1") }
        guard (context == nil) == (hipt == nil) else {
            throw EngineError.invalidValue(op: "sample", message: hipt == nil
                ? "this run is unconditional; it takes no context"
                : "this run is conditioned on HIPT embeddings: give the embeddings of the images to condition on")
        }
        try checkImageSize(height: size, width: size, "the sample size")
        let backend = backend ?? Engine.defaultBackend
        let side = size / (latentSpace?.downsamplingFactor ?? 1)
        let shape = [count, model.imageChannels, side, side]
        // x̂₀ is clipped to [−1, 1] on pixels only: latents have unit variance, not a range (LDM samples them unclipped).
        let clip = latentSpace == nil
        let wasTraining = model.isTraining
        model.train(false)
        defer { model.train(wasTraining) }
        let generator = RandomGenerator(seed: seed)
        let x0: Tensor
        switch sampler {
        case let .ddim(steps, eta):
            x0 = try DDIMSampler(schedule: schedule, steps: steps, eta: eta, clipDenoised: clip)
                .sample(model, shape: shape, target: target, context: context, generator: generator, on: backend,
                        progress: progress)
        case let .ddpm(steps):
            x0 = try DDPMSampler(schedule: schedule, steps: steps, clipDenoised: clip)
                .sample(model, shape: shape, target: target, context: context, generator: generator, on: backend,
                        progress: progress)
        }
        guard let latentSpace else { return x0 }
        return try detached(latentSpace.decode(x0), on: backend)
    }

    /// Samples as `sample` does and writes them as one grid PNG at `gridPath` (⌈√N⌉ columns, 2 white pixels
    /// between images) and, when `individualDirectory` is given, each as `sample_000.png`, … there. Returns the
    /// samples.
    @discardableResult
    public func writeSamples(count: Int, size: Int, sampler: SamplerChoice, seed: UInt64, context: Tensor? = nil,
                             grid gridPath: String, individual individualDirectory: String? = nil,
                             on backend: (any Backend)? = nil,
                             progress: ((SamplingStep) -> Void)? = nil) throws -> Tensor {
        let images = try sample(count: count, size: size, sampler: sampler, seed: seed, context: context, on: backend,
                                progress: progress)
        let values = try images.toArray(on: backend)
        let (channels, height, width) = (images.shape[1], images.shape[2], images.shape[3])
        let perImage = channels * height * width
        let planes = try (0..<count).map {
            try Planes(channels: channels, height: height, width: width, values: Array(values[($0 * perImage)..<(($0 + 1) * perImage)]))
        }
        let white = RGB(255, 255, 255)
        let gridFolder = (gridPath as NSString).deletingLastPathComponent
        if !gridFolder.isEmpty { try FileSystem.createFolder(gridFolder, purpose: "sample grid") }
        try PNG.write(Charts.imageGrid(planes, padding: 2, range: .minusOneToOne, paddingColor: white), to: gridPath)
        if let individualDirectory {
            try FileSystem.createFolder(individualDirectory, purpose: "samples")
            for (index, image) in planes.enumerated() {
                let path = (individualDirectory as NSString).appendingPathComponent(String(format: "sample_%03d.png", index))
                try PNG.write(Charts.imageGrid([image], columns: 1, padding: 0, range: .minusOneToOne, paddingColor: white), to: path)
            }
        }
        return images
    }
}

import HistoCore
import HistoData
import HistoNN

/// A pretraining recipe by name, as `histodiff pretrain --recipe` takes it and a run's `diffusion_model.json`
/// records it: sampling and feature extraction rebuild the schedule and target from it.
public enum DiffusionRecipe: String, Codable, Sendable, CaseIterable {
    /// GenSelfDiff: quadratic β, P2 k = 1 γ = 1, loss summed over the batch (`Configuration.genSelfDiff`).
    case genselfdiff
    /// DDPM: linear β, unweighted loss, batch mean.
    case ddpm
    /// For the small `cpu` networks: cosine ᾱ, v-prediction, unweighted batch mean, gradients clipped at norm 1.
    case vCosine = "v-cosine"
    /// Latent diffusion as DTSeg trains it (SPEC §1 step 1): LDM linear β (0.0015 → 0.0195), ε-prediction,
    /// L_simple (batch mean), no clipping, AdamW, LitEma 0.9999, learning rate 2e-6 × batch (LDM's `scale_lr`).
    case ldm

    public var configuration: DiffusionPretraining.Configuration {
        switch self {
        case .genselfdiff: return .genSelfDiff
        case .ddpm: return .init()
        case .vCosine: return .vCosine
        case .ldm: return .ldm
        }
    }

    /// The learning rate `histodiff pretrain` uses unless told, for a global batch of `batch` images. LDM scales
    /// its base rate 2e-6 by GPUs × batch × accumulation (`scale_lr`, SPEC §9.4), i.e. by the global batch.
    public func learningRate(batch: Int) -> Float {
        switch self {
        case .genselfdiff, .ddpm: return 1e-4
        case .vCosine: return 1e-3
        case .ldm: return 2e-6 * Float(batch)
        }
    }

    /// The optimizer of the recipe: AdamW (PyTorch's default weight decay 0.01) for LDM, Adam otherwise.
    public func optimizer(_ parameters: [Parameter], learningRate: Float) -> any Optimizer {
        switch self {
        case .genselfdiff, .ddpm, .vCosine: return Adam([ParameterGroup(parameters)], learningRate: learningRate)
        case .ldm: return AdamW([ParameterGroup(parameters, weightDecay: 0.01)], learningRate: learningRate)
        }
    }

    /// The decay of the EMA weights that are sampled from and saved: LDM's LitEma 0.9999; 0.999 otherwise.
    public var emaDecay: Float { self == .ldm ? 0.9999 : 0.999 }
}

/// Denoising pretraining (SPEC §0.1–0.4, §2): t ~ U{0..T−1}, ε ~ N(0, I), x_t = q(x_t | x₀), loss = P2-weighted
/// mean-squared error to the target of the model's parametrisation, reduced over the batch by mean or sum.
public struct DiffusionPretraining {
    public struct Configuration: Sendable {
        public var schedule: NoiseSchedule.Kind
        public var steps: Int
        public var target: DiffusionTarget
        /// P2 weighting λ_t = 1/(k + SNR)^γ; nil: unweighted (L_simple).
        public var p2: (k: Float, gamma: Float)?
        public var batchReduction: DiffusionLoss.BatchReduction
        /// Gradient clipping by global norm (nil: none).
        public var clipNorm: Float?

        public init(schedule: NoiseSchedule.Kind = .linear, steps: Int = 1000, target: DiffusionTarget = .epsilon,
                    p2: (k: Float, gamma: Float)? = nil, batchReduction: DiffusionLoss.BatchReduction = .mean,
                    clipNorm: Float? = 1) {
            self.schedule = schedule; self.steps = steps; self.target = target; self.p2 = p2
            self.batchReduction = batchReduction; self.clipNorm = clipNorm
        }

        /// GenSelfDiff's pretraining (SPEC §2, code): quadratic β, T = 1000, ε-prediction, P2 with k = 1, γ = 1,
        /// loss summed over the batch.
        public static let genSelfDiff = Configuration(schedule: .quadratic, p2: (1, 1), batchReduction: .sum, clipNorm: nil)

        /// Cosine ᾱ (Nichol & Dhariwal) with v-prediction (Salimans & Ho), unweighted. Why, for a short CPU run: with
        /// ε-prediction the sample's colours are set at the noisiest steps, where x̂₀ = (x_t − √(1−ᾱ)·ε̂)/√ᾱ
        /// multiplies ε̂'s error by 1/√ᾱ (≈ 35 at t = 980 of the quadratic schedule); v keeps x̂₀ well conditioned at
        /// every t. On MoNuSeg 64² crops with the `cpu` Attention U-Net (PyTorch reference, same data, lr 1e-3 here
        /// vs 2e-4 there) this sampled H&E colours after 500 steps, where the GenSelfDiff recipe still sampled green
        /// and blue blotches after 1,800.
        public static let vCosine = Configuration(schedule: .cosine, target: .v)

        /// LDM's `DDPM` defaults (SPEC §1 step 1): LDM linear β, ε-prediction, L_simple as a batch mean, no
        /// gradient clipping.
        public static let ldm = Configuration(schedule: .ldmLinear, clipNorm: nil)
    }

    public let configuration: Configuration
    public let schedule: NoiseSchedule
    /// The ranks training the model together: each steps on its shard of the batch (loader and noise
    /// generator sharded by the caller) and gradients and loss are averaged over them before the update.
    public var group: any ProcessGroup = SingleProcess.shared

    public init(_ configuration: Configuration) {
        self.configuration = configuration
        schedule = NoiseSchedule(configuration.schedule, steps: configuration.steps)
    }

    /// Loader settings for pretraining: `perImage` random crops per image, flips and quarter turns only (colour
    /// augmentation would teach the denoiser colours that the data does not have).
    public static func loaderOptions(patch: Int, batch: Int, seed: UInt64, perImage: Int = 4) -> LoaderOptions {
        var options = LoaderOptions(batchSize: batch, patches: .randomCrops(size: patch, perImage: perImage), labelled: false)
        options.seed = seed
        options.augmentation = .none
        options.augmentation.flipProbability = 0.5
        options.augmentation.quarterTurns = true
        return options
    }

    /// The EMA of `model`'s weights that pretraining samples from and saves, warmed up as LDM's `LitEma`: the
    /// mean-teacher warm-up averages every step's weights equally for the first 1/(1 − decay) steps, and that average
    /// of a fast-moving early trajectory samples pure noise.
    public static func movingAverage(of model: Module, decay: Float) -> ExponentialMovingAverage {
        ExponentialMovingAverage(tracking: model, decay: decay, warmup: .litEma)
    }

    /// The loss of `model` on clean images x₀ [N, C, H, W] in [−1, 1], with t and ε drawn from `generator`;
    /// `context` conditions a conditioned model (`DiffusionRun.context`).
    public func loss(_ model: some NoisePredictor, x0: Tensor, context: Tensor? = nil,
                     generator: RandomGenerator) -> Tensor {
        let n = x0.shape.first ?? 0
        let t = generator.integers([n], 0, schedule.steps)
        let noise = generator.normal(x0.shape)
        let output = model(schedule.qSample(x0: x0, noise: noise, t: t), timesteps: t, context: context)
        let target = schedule.trainingTarget(configuration.target, x0: x0, noise: noise, t: t)
        let weights = configuration.p2.map { schedule.p2Weight(t: t, k: $0.k, gamma: $0.gamma) }
        return DiffusionLoss.simple(predicted: output, target: target, weights: weights,
                                    batchReduction: configuration.batchReduction)
    }

    /// The pretraining loop of `histodiff pretrain` and the demo, on `run` (progress, `metrics.csv` with the
    /// gradient norm, checkpoints, resume, signals): one `step` per batch of `loader`, whose images `encode` maps to
    /// the x₀ the model learns (latents; the images themselves when nil) and `condition` to the model's context
    /// (the HIPT embeddings of a conditioned run; nil: none); `afterStep` gets the steps done.
    public func train(_ model: some NoisePredictor, run: TrainingRun, loader: BatchLoader, optimizer: any Optimizer,
                      ema: ExponentialMovingAverage?, noise: RandomGenerator, on backend: (any Backend)? = nil,
                      encode: ((Tensor) throws -> Tensor)? = nil, condition: ((Tensor) throws -> Tensor?)? = nil,
                      afterStep: ((Int) throws -> Void)? = nil) throws -> TrainingOutcome {
        try run.train { step in
            guard let batch = try loader.next() else {
                return StepReport(loss: .nan, learningRate: optimizer.learningRate, stop: true)
            }
            let x0 = try encode?(batch.images) ?? batch.images
            let (loss, norm) = try self.step(model, x0: x0, context: try condition?(batch.images), optimizer: optimizer,
                                             ema: ema, generator: noise, on: backend)
            try afterStep?(step + 1)
            return StepReport(loss: loss, learningRate: optimizer.learningRate,
                              values: [Self.gradientNormColumn: Double(norm)])
        }
    }

    /// The `metrics.csv` column `train` logs the gradient norm in (declare it in the run's options).
    public static let gradientNormColumn = "grad_norm"

    /// One optimizer step; updates `ema` (when given) after it. Returns the loss and the gradient norm.
    public func step(_ model: some NoisePredictor, x0: Tensor, context: Tensor? = nil, optimizer: any Optimizer,
                     ema: ExponentialMovingAverage?, generator: RandomGenerator,
                     on backend: (any Backend)? = nil) throws -> (loss: Float, gradientNorm: Float) {
        model.train(true)
        // A rank's loss covers its shard; a loss summed over the batch is the sum over every shard, so the mean
        // over the ranks is scaled back to it (a batch mean is the mean of the equal shards' means).
        let shards = Float(configuration.batchReduction == .sum ? group.size : 1)
        let objective = self.loss(model, x0: x0, context: context, generator: generator)
        var (loss, gradients) = try Gradients.of(objective * shards,
                                                 wrt: model.trainableParameters(), on: backend)
        var averaged = [loss]
        try gradients.average(across: group, with: &averaged)
        loss = averaged[0]
        let norm = configuration.clipNorm.map { gradients.clipByGlobalNorm($0) } ?? gradients.globalNorm
        try optimizer.step(gradients)
        try ema?.update(from: model, on: backend)
        return (loss, norm)
    }
}

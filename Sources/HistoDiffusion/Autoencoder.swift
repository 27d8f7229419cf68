import HistoCore
import HistoNN

/// The KL-regularised autoencoder of latent diffusion (LDM's `AutoencoderKL`), the first stage of DTSeg and
/// PathSegDiff here (SPEC §1, §4, §9.7: f4, 3 latent channels; `VQAutoencoder` is DTSeg's released alternative).
///
/// `LDMAutoencoder`'s encoder with 2·z output channels → quant_conv (1×1) → (mean, logvar); post_quant_conv
/// (1×1) → `LDMAutoencoder`'s decoder.
///
/// Parameter names are those of an LDM `AutoencoderKL` state dict (`encoder.down.0.block.0.norm1.weight`,
/// `encoder.mid.attn_1.q.weight`, `decoder.up.1.upsample.conv.weight`, `quant_conv.weight`, …), so an LDM
/// checkpoint loads by name once its training-only tensors (`loss.*`) are skipped (see `NameMap.ldmAutoencoder`).
///
/// Left out: LDM's perceptual (LPIPS) and adversarial (PatchGAN) loss terms and its learned output log-variance
/// (fixed at 0 here).
public final class AutoencoderKL: Module {
    public struct Configuration: LDMAutoencoder.Architecture, Equatable, Sendable {
        public var imageChannels: Int
        /// Base width `ch`; level i has ch·channelMultipliers[i] channels.
        public var channels: Int
        /// `ch_mult`; its length sets the number of levels.
        public var channelMultipliers: [Int]
        /// `num_res_blocks` per encoder level (the decoder has one more per level).
        public var resBlocksPerLevel: Int
        /// `z_channels` = `embed_dim` (equal in every LDM KL config).
        public var latentChannels: Int
        /// GroupNorm groups (32 in LDM); every width must be divisible by it.
        public var normGroups: Int
        /// GroupNorm epsilon (LDM's `Normalize` uses 1e-6).
        public var normEpsilon: Float

        public init(imageChannels: Int = 3, channels: Int, channelMultipliers: [Int], resBlocksPerLevel: Int,
                    latentChannels: Int, normGroups: Int = 32, normEpsilon: Float = 1e-6) {
            self.imageChannels = imageChannels
            self.channels = channels
            self.channelMultipliers = channelMultipliers
            self.resBlocksPerLevel = resBlocksPerLevel
            self.latentChannels = latentChannels
            self.normGroups = normGroups
            self.normEpsilon = normEpsilon
        }

        /// LDM kl-f4 (`models/first_stage_models/kl-f4/config.yaml`): ch 128, ch_mult (1,2,4), 2 ResnetBlocks,
        /// z 3. A 256² patch maps to a 3×64×64 latent.
        public static let paper = Configuration(channels: 128, channelMultipliers: [1, 2, 4], resBlocksPerLevel: 2,
                                                latentChannels: 3)
        /// A small f4 model that trains on a 2-core CPU: ch 32, ch_mult (1,2,4), 1 ResnetBlock, z 3.
        public static let cpu = Configuration(channels: 32, channelMultipliers: [1, 2, 4], resBlocksPerLevel: 1,
                                              latentChannels: 3)

        /// The presets by name, as `histodiff train-autoencoder --preset` takes them and saved weights record them.
        public static let presets: [String: Configuration] = ["cpu": .cpu, "paper": .paper]

        /// What makes this configuration unbuildable (empty when valid).
        public var problems: [String] { architectureProblems }
    }

    public let configuration: Configuration
    public let encoder: LDMAutoencoder.Encoder
    public let decoder: LDMAutoencoder.Decoder
    /// 1×1 conv on the encoder output, 2z → 2z (LDM `quant_conv`).
    public let quantConv: Conv2d
    /// 1×1 conv on latents, z → z (LDM `post_quant_conv`).
    public let postQuantConv: Conv2d

    /// Throws `EngineError.invalidValue` listing every problem of an unbuildable configuration.
    public init(_ configuration: Configuration, generator: RandomGenerator) throws {
        let problems = configuration.problems
        guard problems.isEmpty else {
            throw EngineError.invalidValue(op: "AutoencoderKL", message: problems.joined(separator: "; "))
        }
        self.configuration = configuration
        let z = configuration.latentChannels
        encoder = LDMAutoencoder.Encoder(configuration, outputChannels: 2 * z, generator: generator)
        decoder = LDMAutoencoder.Decoder(configuration, generator: generator)
        quantConv = Conv2d(2 * z, 2 * z, kernel: 1, generator: generator)
        postQuantConv = Conv2d(z, z, kernel: 1, generator: generator)
        super.init()
    }

    public override func members() -> [(key: String, member: ModuleMember)] {
        [("encoder", .module(encoder)), ("decoder", .module(decoder)),
         ("quant_conv", .module(quantConv)), ("post_quant_conv", .module(postQuantConv))]
    }

    /// The posterior of images x [N, imageChannels, H, W] (LDM expects [−1, 1]): mean and log-variance, each
    /// [N, z, ⌈H/f⌉, ⌈W/f⌉]. The log-variance is clamped to [−30, 20] as LDM's `DiagonalGaussianDistribution`.
    public func encode(_ x: Tensor) -> (mean: Tensor, logvar: Tensor) {
        guard x.rank == 4, x.shape[1] == configuration.imageChannels else {
            let error = Tensor.invalid("autoencoder_encode",
                                       "expects images [N, \(configuration.imageChannels), H, W], got \(describe(x.shape))")
            return (error, error)
        }
        let moments = quantConv(encoder(x)).chunk(2, axis: 1)
        return (moments[0], moments[1].clamp(min: -30, max: 20))
    }

    /// A reparameterised draw z = mean + exp(logvar/2)·ε, ε ~ N(0, I) from `generator` (differentiable in mean and
    /// logvar; LDM's `DiagonalGaussianDistribution.sample`).
    public func sample(mean: Tensor, logvar: Tensor, generator: RandomGenerator) -> Tensor {
        mean + (logvar * 0.5).exp() * generator.normal(mean.shape)
    }

    /// Images [N, imageChannels, f·h, f·w] from latents z [N, z, h, w] (unscaled: divide diffusion latents by the
    /// scale factor first, or use `decodeLatents`).
    public func decode(_ z: Tensor) -> Tensor {
        guard z.rank == 4, z.shape[1] == configuration.latentChannels else {
            return .invalid("autoencoder_decode", "expects latents [N, \(configuration.latentChannels), h, w], got \(describe(z.shape))")
        }
        return decoder(postQuantConv(z))
    }

    /// KL(N(mean, exp(logvar)) ‖ N(0, I)) summed over C, H, W and averaged over the batch, as LDM's
    /// `DiagonalGaussianDistribution.kl()` followed by `sum / batch` in its loss:
    /// ½·Σ(mean² + exp(logvar) − 1 − logvar) / N.
    public static func klDivergence(mean: Tensor, logvar: Tensor) -> Tensor {
        guard mean.shape == logvar.shape, mean.rank >= 1 else {
            return .invalid("autoencoder_kl", "mean \(describe(mean.shape)) and logvar \(describe(logvar.shape)) must have one shape [N, …]")
        }
        return (mean.square() + logvar.exp() - 1 - logvar).sum() * (0.5 / Float(mean.shape[0]))
    }

    public enum ReconstructionLoss: String, Sendable, CaseIterable {
        /// |x − x̂| (LDM's `rec_loss`).
        case l1
        /// (x − x̂)².
        case l2
    }

    /// The terms of one training loss. `total` = reconstruction + klWeight·kl, one element each.
    public struct LossTerms {
        public let total: Tensor
        /// Per-pixel error summed over C, H, W, averaged over the batch (LDM's `nll_loss` with its learned
        /// log-variance fixed at 0), so `klWeight` keeps LDM's meaning.
        public let reconstruction: Tensor
        /// `klDivergence(mean:logvar:)` of the posterior.
        public let kl: Tensor
        /// x̂ [N, C, H, W], decoded from a posterior sample.
        public let output: Tensor
    }

    /// The autoencoder loss of images x [N, C, H, W] (H and W multiples of the downsampling factor): encode,
    /// draw z from the posterior with `generator`, decode, reconstruction + klWeight·KL. LDM's kl-f4 uses
    /// klWeight 1e-6 and L1 (plus the perceptual and adversarial terms left out here).
    public func loss(_ x: Tensor, generator: RandomGenerator, klWeight: Float,
                     reconstruction kind: ReconstructionLoss = .l1) -> LossTerms {
        let f = configuration.downsamplingFactor
        guard x.rank == 4, x.shape[2] % f == 0, x.shape[3] % f == 0 else {
            let error = Tensor.invalid("autoencoder_loss", "images \(describe(x.shape)) must be [N, C, H, W] with H and W multiples of \(f)")
            return LossTerms(total: error, reconstruction: error, kl: error, output: error)
        }
        let (mean, logvar) = encode(x)
        let output = decode(sample(mean: mean, logvar: logvar, generator: generator))
        let error = kind == .l1 ? (x - output).abs() : (x - output).square()
        let reconstruction = error.sum() * (1 / Float(x.shape[0]))
        let kl = Self.klDivergence(mean: mean, logvar: logvar)
        let total = (reconstruction + kl * klWeight).checkedFinite("autoencoder_loss")
        return LossTerms(total: total, reconstruction: reconstruction, kl: kl, output: output)
    }

    // MARK: latents for latent diffusion

    /// How images become diffusion latents.
    public enum LatentMode {
        /// The posterior mean: deterministic, so latents can be computed once and cached.
        case mean
        /// A posterior draw, as LDM's `get_first_stage_encoding`.
        case sample(RandomGenerator)
    }

    /// Diffusion latents of images x: scaleFactor · (mean or a posterior draw). LDM's `scale_factor` is 1.0 in the
    /// DTSeg config; with `scale_by_std` it is 1/std of the first batch's latents (`latentScaleFactor`).
    public func latents(_ x: Tensor, scaleFactor: Float = 1, mode: LatentMode = .mean) -> Tensor {
        let (mean, logvar) = encode(x)
        switch mode {
        case .mean: return mean * scaleFactor
        case .sample(let generator): return sample(mean: mean, logvar: logvar, generator: generator) * scaleFactor
        }
    }

    /// LDM's `scale_by_std` factor: 1 / std of all elements of unscaled latents (unbiased, as `torch.std`).
    public static func latentScaleFactor(_ latents: Tensor) throws -> Float {
        guard latents.count > 1 else {
            throw EngineError.invalidValue(op: "latent_scale_factor", message: "needs more than one latent value, got shape \(describe(latents.shape))")
        }
        let std = try latents.flatten().std().item()
        guard std > 0, std.isFinite else {
            throw EngineError.invalidValue(op: "latent_scale_factor", message: "latents have standard deviation \(std); no scale factor")
        }
        return 1 / std
    }
}

import HistoCore
import HistoNN

/// The KL-regularised autoencoder of latent diffusion (LDM's `AutoencoderKL` with its `Encoder`/`Decoder`), the
/// first stage of DTSeg and PathSegDiff (SPEC §1, §4, §9.7: f4, 3 latent channels).
///
/// Encoder: conv_in → per level `resBlocksPerLevel` ResnetBlocks, then (all levels but the last) a stride-2
/// Downsample → middle (ResnetBlock, AttnBlock, ResnetBlock) → GN, SiLU, conv_out to 2·z channels →
/// quant_conv (1×1) → (mean, logvar). Decoder: post_quant_conv (1×1) → conv_in → middle → per level, deepest first,
/// `resBlocksPerLevel + 1` ResnetBlocks then (all levels but the first) a nearest ×2 Upsample with a conv → GN,
/// SiLU, conv_out. The downsampling factor is 2^(levels − 1).
///
/// Parameter names are those of an LDM `AutoencoderKL` state dict (`encoder.down.0.block.0.norm1.weight`,
/// `encoder.mid.attn_1.q.weight`, `decoder.up.1.upsample.conv.weight`, `quant_conv.weight`, …), and shapes match
/// (the attention projections are [C, C, 1, 1] as LDM's 1×1 convs), so an LDM checkpoint loads by name once its
/// training-only tensors (`loss.*`) are skipped (see `NameMap.ldmAutoencoder`).
///
/// Left out: LDM's perceptual (LPIPS) and adversarial (PatchGAN) loss terms and its learned output log-variance
/// (fixed at 0 here); attention inside the levels (`attn_resolutions`, empty in every LDM KL config) and dropout
/// (0 in those configs).
public final class AutoencoderKL: Module {
    public struct Configuration: Equatable, Sendable {
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

        /// Input height/width over latent height/width: 2^(levels − 1).
        public var downsamplingFactor: Int { 1 << max(channelMultipliers.count - 1, 0) }

        /// What makes this configuration unbuildable (empty when valid).
        public var problems: [String] {
            var found: [String] = []
            if imageChannels < 1 { found.append("imageChannels \(imageChannels) must be positive") }
            if channels < 1 { found.append("channels \(channels) must be positive") }
            if channelMultipliers.isEmpty || channelMultipliers.contains(where: { $0 < 1 }) {
                found.append("channelMultipliers \(channelMultipliers) must be a non-empty list of positive integers")
            }
            if resBlocksPerLevel < 1 { found.append("resBlocksPerLevel \(resBlocksPerLevel) must be positive") }
            if latentChannels < 1 { found.append("latentChannels \(latentChannels) must be positive") }
            if normGroups < 1 {
                found.append("normGroups \(normGroups) must be positive")
            } else if channels >= 1 {
                let widths = Set(channelMultipliers.filter { $0 >= 1 }.map { $0 * channels }).sorted()
                let indivisible = widths.filter { $0 % normGroups != 0 }
                if !indivisible.isEmpty {
                    found.append("widths \(indivisible) are not divisible by normGroups \(normGroups)")
                }
            }
            if !(normEpsilon > 0) { found.append("normEpsilon \(normEpsilon) must be positive") }
            return found
        }
    }

    public let configuration: Configuration
    public let encoder: Encoder
    public let decoder: Decoder
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
        encoder = Encoder(configuration, generator: generator)
        decoder = Decoder(configuration, generator: generator)
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

    /// Images from diffusion latents: decode(z / scaleFactor) (LDM's `decode_first_stage`).
    public func decodeLatents(_ z: Tensor, scaleFactor: Float = 1) -> Tensor { decode(z * (1 / scaleFactor)) }

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

    // MARK: building blocks (LDM `ldm/modules/diffusionmodules/model.py`)

    /// GN → SiLU → conv3×3 → GN → SiLU → conv3×3, plus the input (through a 1×1 `nin_shortcut` when the width
    /// changes). No timestep embedding.
    public final class ResnetBlock: Module, UnaryLayer {
        public let norm1: GroupNorm, conv1: Conv2d, norm2: GroupNorm, conv2: Conv2d
        public let shortcut: Conv2d?

        init(_ inChannels: Int, _ outChannels: Int, _ configuration: Configuration, generator: RandomGenerator) {
            norm1 = configuration.groupNorm(inChannels)
            conv1 = Conv2d(inChannels, outChannels, kernel: 3, padding: 1, generator: generator)
            norm2 = configuration.groupNorm(outChannels)
            conv2 = Conv2d(outChannels, outChannels, kernel: 3, padding: 1, generator: generator)
            shortcut = inChannels == outChannels ? nil : Conv2d(inChannels, outChannels, kernel: 1, generator: generator)
            super.init()
        }

        public override func members() -> [(key: String, member: ModuleMember)] {
            var list: [(key: String, member: ModuleMember)] = [("norm1", .module(norm1)), ("conv1", .module(conv1)),
                                                               ("norm2", .module(norm2)), ("conv2", .module(conv2))]
            if let shortcut { list.append(("nin_shortcut", .module(shortcut))) }
            return list
        }

        public func callAsFunction(_ x: Tensor) -> Tensor {
            let h = conv2(norm2(conv1(norm1(x, activation: .silu)), activation: .silu))
            return (shortcut?(x) ?? x) + h
        }
    }

    /// Single-head self-attention over the pixels: GN, 1×1 q/k/v, softmax(qᵀk/√C) over keys, 1×1 proj_out,
    /// residual.
    public final class AttentionBlock: Module, UnaryLayer {
        public let norm: GroupNorm
        public let query: Pointwise, key: Pointwise, value: Pointwise, projection: Pointwise

        init(_ channels: Int, _ configuration: Configuration, generator: RandomGenerator) {
            norm = configuration.groupNorm(channels)
            query = Pointwise(channels, channels, generator: generator)
            key = Pointwise(channels, channels, generator: generator)
            value = Pointwise(channels, channels, generator: generator)
            projection = Pointwise(channels, channels, generator: generator)
            super.init()
        }

        public override func members() -> [(key: String, member: ModuleMember)] {
            [("norm", .module(norm)), ("q", .module(query)), ("k", .module(key)), ("v", .module(value)),
             ("proj_out", .module(projection))]
        }

        public func callAsFunction(_ x: Tensor) -> Tensor {
            let (b, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
            let normed = norm(x).reshape([b, c, h * w])
            // [B, C, L] → [B, 1, L, C]: one head whose depth is the whole width.
            func tokens(_ t: Tensor) -> Tensor { t.transpose(1, 2).unsqueeze(1) }
            let attended = Tensor.scaledDotProductAttention(q: tokens(query(normed)), k: tokens(key(normed)),
                                                            v: tokens(value(normed)))
            return x + projection(attended.squeeze(1).transpose(1, 2)).reshape([b, c, h, w])
        }
    }

    /// Stride-2 conv3×3 after zero padding of one row at the bottom and one column at the right (LDM pads
    /// (0,1,0,1) because torch convs pad symmetrically).
    public final class Downsample: Module, UnaryLayer {
        public let conv: Conv2d

        init(_ channels: Int, generator: RandomGenerator) {
            conv = Conv2d(channels, channels, kernel: [3, 3], stride: [2, 2], padding: [0, 1, 0, 1], generator: generator)
            super.init()
        }

        public func callAsFunction(_ x: Tensor) -> Tensor { conv(x) }
    }

    /// Nearest ×2, then conv3×3.
    public final class Upsample: Module, UnaryLayer {
        public let conv: Conv2d

        init(_ channels: Int, generator: RandomGenerator) {
            conv = Conv2d(channels, channels, kernel: 3, padding: 1, generator: generator)
            super.init()
        }

        public func callAsFunction(_ x: Tensor) -> Tensor { conv(x.interpolateNearest(scale: 2)) }
    }

    /// ResnetBlock, AttentionBlock, ResnetBlock at the lowest resolution (`mid`).
    public final class MiddleBlock: Module, UnaryLayer {
        public let first: ResnetBlock, attention: AttentionBlock, second: ResnetBlock

        init(_ channels: Int, _ configuration: Configuration, generator: RandomGenerator) {
            first = ResnetBlock(channels, channels, configuration, generator: generator)
            attention = AttentionBlock(channels, configuration, generator: generator)
            second = ResnetBlock(channels, channels, configuration, generator: generator)
            super.init()
        }

        public override func members() -> [(key: String, member: ModuleMember)] {
            [("block_1", .module(first)), ("attn_1", .module(attention)), ("block_2", .module(second))]
        }

        public func callAsFunction(_ x: Tensor) -> Tensor { second(attention(first(x))) }
    }

    /// One resolution level: its ResnetBlocks (`block.i`) and the resampler that ends it (`downsample` or
    /// `upsample`), if any.
    public final class Level: Module, UnaryLayer {
        public let blocks: [ResnetBlock]
        public let resampler: (key: String, layer: any UnaryLayer)?

        init(_ blocks: [ResnetBlock], resampler: (key: String, layer: any UnaryLayer)?) {
            self.blocks = blocks
            self.resampler = resampler
            super.init()
        }

        public override func members() -> [(key: String, member: ModuleMember)] {
            var list: [(key: String, member: ModuleMember)] = blocks.enumerated().map { ("block.\($0.offset)", .module($0.element)) }
            if let resampler { list.append((resampler.key, .module(resampler.layer))) }
            return list
        }

        public func callAsFunction(_ x: Tensor) -> Tensor {
            let h = blocks.reduce(x) { $1($0) }
            return resampler?.layer(h) ?? h
        }
    }

    /// Images → 2·z moment channels at 1/f resolution.
    public final class Encoder: Module, UnaryLayer {
        public let convIn: Conv2d
        public let down: [Level]
        public let middle: MiddleBlock
        public let normOut: GroupNorm
        public let convOut: Conv2d

        init(_ configuration: Configuration, generator: RandomGenerator) {
            let ch = configuration.channels, multipliers = configuration.channelMultipliers
            convIn = Conv2d(configuration.imageChannels, ch, kernel: 3, padding: 1, generator: generator)
            var width = ch
            var levels: [Level] = []
            for (i, multiplier) in multipliers.enumerated() {
                var blocks: [ResnetBlock] = []
                for _ in 0..<configuration.resBlocksPerLevel {
                    blocks.append(ResnetBlock(width, ch * multiplier, configuration, generator: generator))
                    width = ch * multiplier
                }
                let last = i == multipliers.count - 1
                levels.append(Level(blocks, resampler: last ? nil : ("downsample", Downsample(width, generator: generator))))
            }
            down = levels
            middle = MiddleBlock(width, configuration, generator: generator)
            normOut = configuration.groupNorm(width)
            convOut = Conv2d(width, 2 * configuration.latentChannels, kernel: 3, padding: 1, generator: generator)
            super.init()
        }

        public override func members() -> [(key: String, member: ModuleMember)] {
            [("conv_in", .module(convIn))] + down.enumerated().map { ("down.\($0.offset)", .module($0.element)) }
                + [("mid", .module(middle)), ("norm_out", .module(normOut)), ("conv_out", .module(convOut))]
        }

        public func callAsFunction(_ x: Tensor) -> Tensor {
            let h = middle(down.reduce(convIn(x)) { $1($0) })
            return convOut(normOut(h, activation: .silu))
        }
    }

    /// z channels at 1/f resolution → images. `up[i]` is level i (full resolution first, as LDM orders it);
    /// the forward pass runs from the deepest level up.
    public final class Decoder: Module, UnaryLayer {
        public let convIn: Conv2d
        public let middle: MiddleBlock
        public let up: [Level]
        public let normOut: GroupNorm
        public let convOut: Conv2d

        init(_ configuration: Configuration, generator: RandomGenerator) {
            let ch = configuration.channels, multipliers = configuration.channelMultipliers
            var width = ch * multipliers[multipliers.count - 1]
            convIn = Conv2d(configuration.latentChannels, width, kernel: 3, padding: 1, generator: generator)
            middle = MiddleBlock(width, configuration, generator: generator)
            var levels: [Level] = []
            for (i, multiplier) in multipliers.enumerated().reversed() {
                var blocks: [ResnetBlock] = []
                for _ in 0...configuration.resBlocksPerLevel {
                    blocks.append(ResnetBlock(width, ch * multiplier, configuration, generator: generator))
                    width = ch * multiplier
                }
                levels.insert(Level(blocks, resampler: i == 0 ? nil : ("upsample", Upsample(width, generator: generator))), at: 0)
            }
            up = levels
            normOut = configuration.groupNorm(width)
            convOut = Conv2d(width, configuration.imageChannels, kernel: 3, padding: 1, generator: generator)
            super.init()
        }

        public override func members() -> [(key: String, member: ModuleMember)] {
            [("conv_in", .module(convIn)), ("mid", .module(middle))]
                + up.enumerated().map { ("up.\($0.offset)", .module($0.element)) }
                + [("norm_out", .module(normOut)), ("conv_out", .module(convOut))]
        }

        public func callAsFunction(_ z: Tensor) -> Tensor {
            let h = up.reversed().reduce(middle(convIn(z))) { $1($0) }
            return convOut(normOut(h, activation: .silu))
        }
    }
}

extension AutoencoderKL.Configuration {
    func groupNorm(_ channels: Int) -> GroupNorm { GroupNorm(groups: normGroups, channels: channels, eps: normEpsilon) }
}

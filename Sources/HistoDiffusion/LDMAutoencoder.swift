import HistoCore
import HistoNN

/// The encoder and decoder LDM's first stages share (`Encoder`/`Decoder` of its diffusionmodules `model.py`):
/// `AutoencoderKL` (kl-f4, SPEC §4, §9.7) and `VQAutoencoder` (vq-f4, SPEC §1) differ only around them.
///
/// Encoder: conv_in → per level `resBlocksPerLevel` ResnetBlocks, then (all levels but the last) a stride-2
/// Downsample → middle (ResnetBlock, AttnBlock, ResnetBlock) → GN, SiLU, conv_out (2·z channels for KL's
/// `double_z`, z for VQ). Decoder: conv_in → middle → per level, deepest first, `resBlocksPerLevel + 1`
/// ResnetBlocks then (all levels but the first) a nearest ×2 Upsample with a conv → GN, SiLU, conv_out. The
/// downsampling factor is 2^(levels − 1).
///
/// Module names are those of LDM's state dicts (`down.0.block.0.norm1.weight`, `mid.attn_1.q.weight`,
/// `up.1.upsample.conv.weight`, …), and shapes match (the attention projections are [C, C, 1, 1] as LDM's 1×1
/// convs). Left out: attention inside the levels (`attn_resolutions`, empty in every LDM kl/vq-f4 config) and
/// dropout (0 in those configs).
public enum LDMAutoencoder {
    /// The widths and depths of an encoder/decoder pair (LDM's `ddconfig`).
    public protocol Architecture {
        var imageChannels: Int { get }
        /// Base width `ch`; level i has ch·channelMultipliers[i] channels.
        var channels: Int { get }
        /// `ch_mult`; its length sets the number of levels.
        var channelMultipliers: [Int] { get }
        /// `num_res_blocks` per encoder level (the decoder has one more per level).
        var resBlocksPerLevel: Int { get }
        /// `z_channels`: the decoder's input width (the encoder's output width, doubled for KL).
        var latentChannels: Int { get }
        /// GroupNorm groups (32 in LDM); every width must be divisible by it.
        var normGroups: Int { get }
        /// GroupNorm epsilon (LDM's `Normalize` uses 1e-6).
        var normEpsilon: Float { get }
    }

    /// GN → SiLU → conv3×3 → GN → SiLU → conv3×3, plus the input (through a 1×1 `nin_shortcut` when the
    /// width changes). No timestep embedding.
    public final class ResnetBlock: Module, UnaryLayer {
        public let norm1: GroupNorm, conv1: Conv2d, norm2: GroupNorm, conv2: Conv2d
        public let shortcut: Conv2d?

        init(_ inChannels: Int, _ outChannels: Int, _ architecture: some Architecture, generator: RandomGenerator) {
            norm1 = architecture.groupNorm(inChannels)
            conv1 = Conv2d(inChannels, outChannels, kernel: 3, padding: 1, generator: generator)
            norm2 = architecture.groupNorm(outChannels)
            conv2 = Conv2d(outChannels, outChannels, kernel: 3, padding: 1, generator: generator)
            shortcut = inChannels == outChannels ? nil
                : Conv2d(inChannels, outChannels, kernel: 1, generator: generator)
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

        init(_ channels: Int, _ architecture: some Architecture, generator: RandomGenerator) {
            norm = architecture.groupNorm(channels)
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
            conv = Conv2d(channels, channels, kernel: [3, 3], stride: [2, 2], padding: [0, 1, 0, 1],
                          generator: generator)
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

        init(_ channels: Int, _ architecture: some Architecture, generator: RandomGenerator) {
            first = ResnetBlock(channels, channels, architecture, generator: generator)
            attention = AttentionBlock(channels, architecture, generator: generator)
            second = ResnetBlock(channels, channels, architecture, generator: generator)
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
            var list: [(key: String, member: ModuleMember)] = blocks.enumerated().map {
                ("block.\($0.offset)", .module($0.element))
            }
            if let resampler { list.append((resampler.key, .module(resampler.layer))) }
            return list
        }

        public func callAsFunction(_ x: Tensor) -> Tensor {
            let h = blocks.reduce(x) { $1($0) }
            return resampler?.layer(h) ?? h
        }
    }

    /// Images → `outputChannels` at 1/f resolution.
    public final class Encoder: Module, UnaryLayer {
        public let convIn: Conv2d
        public let down: [Level]
        public let middle: MiddleBlock
        public let normOut: GroupNorm
        public let convOut: Conv2d

        /// `outputChannels`: 2·z for KL's posterior moments (`double_z`), z for VQ.
        init(_ architecture: some Architecture, outputChannels: Int, generator: RandomGenerator) {
            let ch = architecture.channels, multipliers = architecture.channelMultipliers
            convIn = Conv2d(architecture.imageChannels, ch, kernel: 3, padding: 1, generator: generator)
            var width = ch
            var levels: [Level] = []
            for (i, multiplier) in multipliers.enumerated() {
                var blocks: [ResnetBlock] = []
                for _ in 0..<architecture.resBlocksPerLevel {
                    blocks.append(ResnetBlock(width, ch * multiplier, architecture, generator: generator))
                    width = ch * multiplier
                }
                let last = i == multipliers.count - 1
                let downsample: (key: String, layer: any UnaryLayer)? =
                    last ? nil : ("downsample", Downsample(width, generator: generator))
                levels.append(Level(blocks, resampler: downsample))
            }
            down = levels
            middle = MiddleBlock(width, architecture, generator: generator)
            normOut = architecture.groupNorm(width)
            convOut = Conv2d(width, outputChannels, kernel: 3, padding: 1, generator: generator)
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

        init(_ architecture: some Architecture, generator: RandomGenerator) {
            let ch = architecture.channels, multipliers = architecture.channelMultipliers
            var width = ch * multipliers[multipliers.count - 1]
            convIn = Conv2d(architecture.latentChannels, width, kernel: 3, padding: 1, generator: generator)
            middle = MiddleBlock(width, architecture, generator: generator)
            var levels: [Level] = []
            for (i, multiplier) in multipliers.enumerated().reversed() {
                var blocks: [ResnetBlock] = []
                for _ in 0...architecture.resBlocksPerLevel {
                    blocks.append(ResnetBlock(width, ch * multiplier, architecture, generator: generator))
                    width = ch * multiplier
                }
                let upsample: (key: String, layer: any UnaryLayer)? =
                    i == 0 ? nil : ("upsample", Upsample(width, generator: generator))
                levels.insert(Level(blocks, resampler: upsample), at: 0)
            }
            up = levels
            normOut = architecture.groupNorm(width)
            convOut = Conv2d(width, architecture.imageChannels, kernel: 3, padding: 1, generator: generator)
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

extension LDMAutoencoder.Architecture {
    /// Input height/width over latent height/width: 2^(levels − 1).
    public var downsamplingFactor: Int { 1 << max(channelMultipliers.count - 1, 0) }

    /// What makes the encoder/decoder unbuildable (empty when valid).
    public var architectureProblems: [String] {
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

    func groupNorm(_ channels: Int) -> GroupNorm { GroupNorm(groups: normGroups, channels: channels, eps: normEpsilon) }
}

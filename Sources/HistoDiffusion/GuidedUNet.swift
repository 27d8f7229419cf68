import Foundation
import HistoCore
import HistoNN

// The guided-diffusion / LDM `UNetModel` (SPEC §0.3): DTSeg's and PathSegDiff's latent denoisers, the P2 defaults,
// the 828k benchmark UNet and a CPU preset. Parameter names are the reference state-dict names
// (`input_blocks.1.0.in_layers.0.weight`, `middle_block.1.qkv.weight`, `out.2.bias`, …), so reference
// checkpoints load by name; conv1d weights keep their [out, in, 1] shape.

/// guided-diffusion / LDM `UNetModel`: ε-prediction UNet with ResBlocks, attention (or LDM spatial transformers
/// with cross-attention to context tokens) at chosen resolutions, and skip connections from `input_blocks` to
/// `output_blocks`.
///
/// Feature names (`featureBlockNames`): `input_blocks.<i>`, `middle_block`, `output_blocks.<i>` (each block's
/// output, as a forward hook on that module sees it) and `out` (the prediction). With the reference layout and
/// channel_mult (m₀…m_{L−1}), output block j sits at level L−1−⌊j/(R+1)⌋ (R = num_res_blocks) with
/// model_channels·m_level channels; the last block of every level but level 0 ends with the ×2 upsample, so its
/// output is at the next finer resolution (DTSeg: blocks 7/8/9 are 448@32², 448@64², 224@64²).
public final class GuidedUNet: Module, FeatureExtractingModel {
    public let configuration: Configuration
    let timestepEmbedding: SinusoidalTimestepEmbedding
    let timeEmbed: Sequential
    let inputBlocks: [GuidedBlock]
    let middleBlock: GuidedBlock
    let outputBlocks: [GuidedBlock]
    let outNorm: GroupNorm
    let outConv: Conv2d
    /// The input blocks whose outputs are kept as skips (all of them in the reference layout).
    let skipSources: Set<Int>

    public var imageChannels: Int { configuration.inChannels }
    /// 2^(levels − 1): one downsample per level but the last.
    public var inputMultiple: Int { 1 << (configuration.channelMult.count - 1) }

    /// Builds the network with PyTorch's default initialisation and the reference's zero-initialised output
    /// convolutions (ResBlock `out_layers.3`, attention `proj_out`, `out.2`). Throws if the configuration is
    /// inconsistent (channels not divisible by the groups or heads, empty lists).
    public init(_ configuration: Configuration, generator: RandomGenerator) throws {
        try configuration.validate()
        let c = configuration
        self.configuration = c
        let embeddingChannels = 4 * c.modelChannels
        timestepEmbedding = SinusoidalTimestepEmbedding(dimension: c.modelChannels, convention: .guidedDiffusion)
        timeEmbed = Sequential(Linear(c.modelChannels, embeddingChannels, generator: generator), Activation(.silu),
                               Linear(embeddingChannels, embeddingChannels, generator: generator))

        func resBlock(_ cin: Int, _ cout: Int) -> GuidedResBlock {
            GuidedResBlock(cin, cout, embeddingChannels: embeddingChannels, dropout: c.dropout,
                           scaleShift: c.useScaleShiftNorm, groups: c.normGroups, generator: generator)
        }
        func attention(_ channels: Int) -> any GuidedLayer {
            let (heads, headDim) = c.heads.split(channels)
            guard let crossAttention = c.crossAttention else {
                return GuidedAttentionBlock(channels, heads: heads, groups: c.normGroups, generator: generator)
            }
            return SpatialTransformer(channels, heads: heads, headDim: headDim, depth: crossAttention.depth,
                                      contextDim: crossAttention.contextDim, groups: c.normGroups, generator: generator)
        }

        var ch = c.channelMult[0] * c.modelChannels
        var inputs = [GuidedBlock([Conv2d(c.inChannels, ch, kernel: 3, padding: 1, generator: generator)])]
        var skipChannels = c.decoderLayout == .guidedDiffusion ? [ch] : []
        var sources: Set<Int> = c.decoderLayout == .guidedDiffusion ? [0] : []
        var ds = 1
        for (level, mult) in c.channelMult.enumerated() {
            for _ in 0..<c.numResBlocks {
                var layers: [any GuidedLayer] = [resBlock(ch, mult * c.modelChannels)]
                ch = mult * c.modelChannels
                if c.attentionResolutions.contains(ds) { layers.append(attention(ch)) }
                sources.insert(inputs.count)
                inputs.append(GuidedBlock(layers))
                skipChannels.append(ch)
            }
            if level != c.channelMult.count - 1 {
                if c.decoderLayout == .guidedDiffusion {
                    sources.insert(inputs.count)
                    skipChannels.append(ch)
                }
                inputs.append(GuidedBlock([GuidedDownsample(ch, generator: generator)]))
                ds *= 2
            }
        }
        inputBlocks = inputs
        skipSources = sources
        middleBlock = GuidedBlock([resBlock(ch, ch), attention(ch), resBlock(ch, ch)])

        let blocksPerLevel = c.numResBlocks + (c.decoderLayout == .guidedDiffusion ? 1 : 0)
        var outputs: [GuidedBlock] = []
        for (level, mult) in c.channelMult.enumerated().reversed() {
            for i in 0..<blocksPerLevel {
                var layers: [any GuidedLayer] = [resBlock(ch + skipChannels.removeLast(), c.modelChannels * mult)]
                ch = c.modelChannels * mult
                if c.attentionResolutions.contains(ds) { layers.append(attention(ch)) }
                if level > 0 && i == blocksPerLevel - 1 {
                    layers.append(GuidedUpsample(ch, generator: generator))
                    ds /= 2
                }
                outputs.append(GuidedBlock(layers))
            }
        }
        outputBlocks = outputs
        outNorm = GroupNorm(groups: c.normGroups, channels: ch)
        outConv = zeroed(Conv2d(ch, c.outChannels, kernel: 3, padding: 1, generator: generator))
        super.init()
    }

    public override func members() -> [(key: String, member: ModuleMember)] {
        [("time_embed", .module(timeEmbed))]
            + inputBlocks.enumerated().map { ("input_blocks.\($0.offset)", .module($0.element)) }
            + [("middle_block", .module(middleBlock))]
            + outputBlocks.enumerated().map { ("output_blocks.\($0.offset)", .module($0.element)) }
            + [("out.0", .module(outNorm)), ("out.2", .module(outConv))]
    }

    public var featureBlockNames: [String] {
        inputBlocks.indices.map { "input_blocks.\($0)" } + ["middle_block"]
            + outputBlocks.indices.map { "output_blocks.\($0)" } + ["out"]
    }

    /// x [N, inChannels, H, W] with H and W divisible by 2^(levels − 1); timesteps [N]; context [N, M,
    /// contextDim] for cross-attention models (nil makes their cross-attention a self-attention, as in LDM).
    public func forward(_ x: Tensor, timesteps: Tensor, context: Tensor?, recorder: FeatureRecorder?) -> Tensor {
        if let problem = checkInputs(x, timesteps: timesteps, context: context) { return .invalid("guided_unet", problem) }
        let embedding = timeEmbed(timestepEmbedding(timesteps))
        var h = x
        var skips: [Tensor] = []
        for (i, block) in inputBlocks.enumerated() {
            h = block(h, embedding: embedding, context: context)
            recorder?.record("input_blocks.\(i)", h)
            if skipSources.contains(i) { skips.append(h) }
        }
        h = middleBlock(h, embedding: embedding, context: context)
        recorder?.record("middle_block", h)
        for (i, block) in outputBlocks.enumerated() {
            h = block(Tensor.concat([h, skips.removeLast()], axis: 1), embedding: embedding, context: context)
            recorder?.record("output_blocks.\(i)", h)
        }
        let out = outConv(outNorm(h, activation: .silu))
        recorder?.record("out", out)
        return out
    }

    private func checkInputs(_ x: Tensor, timesteps: Tensor, context: Tensor?) -> String? {
        let c = configuration
        let factor = inputMultiple
        guard x.rank == 4, x.shape[1] == c.inChannels, x.shape[2] % factor == 0, x.shape[3] % factor == 0 else {
            return "x must be [N, \(c.inChannels), H, W] with H and W divisible by \(factor), got \(describe(x.shape))"
        }
        guard timesteps.shape == [x.shape[0]] else {
            return "timesteps must be [\(x.shape[0])], got \(describe(timesteps.shape))"
        }
        guard let context else { return nil }
        guard let contextDim = c.crossAttention?.contextDim else {
            return "this model takes no context (unconditional); context must be nil, got \(describe(context.shape))"
        }
        guard context.rank == 3, context.shape[0] == x.shape[0], context.shape[2] == contextDim else {
            return "context must be [\(x.shape[0]), M, \(contextDim)], got \(describe(context.shape))"
        }
        return nil
    }
}

// MARK: - configuration and presets

extension GuidedUNet {
    /// How many heads an attention layer over `channels` channels has (the reference's num_heads /
    /// num_head_channels; num_head_channels wins when given).
    public enum AttentionHeads: Equatable, Sendable {
        case count(Int)
        case channels(Int)

        /// (heads, head dimension) for `channels` channels.
        func split(_ channels: Int) -> (heads: Int, headDim: Int) {
            switch self {
            case .count(let heads): return (heads, channels / heads)
            case .channels(let width): return (channels / width, width)
            }
        }
    }

    /// The LDM spatial transformer in place of every attention block (`use_spatial_transformer`).
    public struct CrossAttention: Equatable, Sendable {
        /// The width of the context tokens; nil: the cross-attention attends to the block's own tokens (LDM's
        /// `context_dim=None`, an unconditional model).
        public var contextDim: Int?
        public var depth: Int
        public init(contextDim: Int?, depth: Int = 1) { self.contextDim = contextDim; self.depth = depth }
    }

    /// Which encoder outputs feed the decoder.
    public enum DecoderLayout: Equatable, Sendable {
        /// guided-diffusion / LDM: num_res_blocks + 1 output blocks per level and a skip from every input block
        /// (conv_in and downsamplers included).
        case guidedDiffusion
        /// num_res_blocks output blocks per level, each taking the skip of the mirrored encoder ResBlock (no skip
        /// from conv_in or the downsamplers): the 828k benchmark UNet.
        case mirrored
    }

    public struct Configuration: Equatable, Sendable {
        public var inChannels: Int
        public var outChannels: Int
        public var modelChannels: Int
        public var channelMult: [Int]
        public var numResBlocks: Int
        /// Downsampling rates (1, 2, 4, …) at which attention follows each ResBlock.
        public var attentionResolutions: Set<Int>
        public var heads: AttentionHeads
        public var dropout: Float
        /// FiLM-like conditioning: GN(h)·(1 + scale) + shift instead of h + emb (guided-diffusion/P2 default).
        public var useScaleShiftNorm: Bool
        /// LDM spatial transformers with cross-attention to context tokens (nil: plain attention blocks).
        public var crossAttention: CrossAttention?
        /// GroupNorm groups (32 in every reference model).
        public var normGroups: Int
        public var decoderLayout: DecoderLayout

        public init(inChannels: Int, outChannels: Int, modelChannels: Int, channelMult: [Int], numResBlocks: Int,
                    attentionResolutions: Set<Int>, heads: AttentionHeads, dropout: Float = 0,
                    useScaleShiftNorm: Bool = false, crossAttention: CrossAttention? = nil, normGroups: Int = 32,
                    decoderLayout: DecoderLayout = .guidedDiffusion) {
            self.inChannels = inChannels
            self.outChannels = outChannels
            self.modelChannels = modelChannels
            self.channelMult = channelMult
            self.numResBlocks = numResBlocks
            self.attentionResolutions = attentionResolutions
            self.heads = heads
            self.dropout = dropout
            self.useScaleShiftNorm = useScaleShiftNorm
            self.crossAttention = crossAttention
            self.normGroups = normGroups
            self.decoderLayout = decoderLayout
        }

        func validate() throws {
            func fail(_ message: String) -> EngineError { .invalidOp(op: "guided_unet", message: message) }
            guard inChannels > 0, outChannels > 0, modelChannels > 0, numResBlocks > 0, !channelMult.isEmpty,
                  channelMult.allSatisfy({ $0 > 0 }) else {
                throw fail("inChannels \(inChannels), outChannels \(outChannels), modelChannels \(modelChannels), numResBlocks \(numResBlocks) and channelMult \(channelMult) must be positive and non-empty")
            }
            guard (0..<1).contains(dropout) else { throw fail("dropout \(dropout) is outside [0, 1)") }
            if let crossAttention, (crossAttention.contextDim ?? 1) < 1 || crossAttention.depth < 1 {
                throw fail("cross-attention context dim \(crossAttention.contextDim ?? 0) and depth "
                           + "\(crossAttention.depth) must be positive")
            }
            let widths = channelMult.map { $0 * modelChannels }
            var problems = widths.filter { normGroups < 1 || $0 % normGroups != 0 }
                .map { "\($0) channels do not split into \(normGroups) groups" }
            // Level l runs at downsampling rate 2^l; the middle block always attends.
            let attended = Set(widths.indices.filter { attentionResolutions.contains(1 << $0) }.map { widths[$0] } + [widths[widths.count - 1]])
            for channels in attended.sorted() {
                switch heads {
                case .count(let h) where h < 1 || channels % h != 0:
                    problems.append("\(channels) channels do not split into \(h) heads")
                case .channels(let w) where w < 1 || channels % w != 0:
                    problems.append("\(channels) channels do not split into heads of \(w)")
                default: break
                }
            }
            guard problems.isEmpty else { throw fail(problems.joined(separator: "; ")) }
        }

        /// DTSeg's LDM denoiser on vq-f4 latents 3×64×64 (SPEC §1 step 1, `big.yaml`): 224 channels,
        /// mult (1, 2, 3, 4), 2 ResBlocks per level, attention at 32², 16², 8² with 32-channel heads, no
        /// scale-shift, no conditioning. 274,056,163 parameters.
        public static let dtsegLDM = Configuration(
            inChannels: 3, outChannels: 3, modelChannels: 224, channelMult: [1, 2, 3, 4], numResBlocks: 2,
            attentionResolutions: [2, 4, 8], heads: .channels(32))

        /// PathSegDiff's frozen LDM (Graikos et al. `only_ssl.yaml`, SPEC §4): 192 channels, mult (1, 2, 3, 5),
        /// 2 ResBlocks per level, depth-1 spatial transformers with one head at 32², 16², 8², context 2×512.
        /// 400,920,579 parameters.
        public static let pathSegDiffLDM = Configuration(
            inChannels: 3, outChannels: 3, modelChannels: 192, channelMult: [1, 2, 3, 5], numResBlocks: 2,
            attentionResolutions: [2, 4, 8], heads: .count(1), crossAttention: CrossAttention(contextDim: 512))

        /// guided-diffusion / P2 `model_and_diffusion_defaults` for `imageSize` 64, 128 or 256 (SPEC §0.3): 128
        /// channels, 2 ResBlocks, 4 heads, attention at 16 and 8 px, scale-shift norm, ε output (learn_sigma
        /// False). 124,053,251 parameters at 256.
        public static func guidedDiffusion(imageSize: Int) throws -> Configuration {
            let mults: [Int: [Int]] = [256: [1, 1, 2, 2, 4, 4], 128: [1, 1, 2, 3, 4], 64: [1, 2, 3, 4]]
            guard let channelMult = mults[imageSize] else {
                throw EngineError.invalidOp(op: "guided_unet", message: "the guided-diffusion defaults cover image sizes 64, 128 and 256, not \(imageSize)")
            }
            return Configuration(inChannels: 3, outChannels: 3, modelChannels: 128, channelMult: channelMult,
                                 numResBlocks: 2, attentionResolutions: [imageSize / 16, imageSize / 8],
                                 heads: .count(4), useScaleShiftNorm: true)
        }

        /// The benchmark UNet: 32 channels, mult (1, 2, 2), one ResBlock per level (mirrored decoder),
        /// GroupNorm + SiLU, self-attention at 16×16 for 64² inputs (4 heads), RGB in and out. 828,387 parameters.
        public static let bench828k = Configuration(
            inChannels: 3, outChannels: 3, modelChannels: 32, channelMult: [1, 2, 2], numResBlocks: 1,
            attentionResolutions: [4], heads: .count(4), decoderLayout: .mirrored)

        /// Trains on a 2-core CPU in minutes on 64² RGB inputs while keeping the reference's 4 levels × 2
        /// ResBlocks indexing (12 output blocks, so DTSeg's `output_blocks.7/8/9` and PathSegDiff's 12 blocks
        /// exist): 32 channels throughout, attention (32-channel heads) at 16² and 8². 762,083 parameters.
        public static let cpu = Configuration(
            inChannels: 3, outChannels: 3, modelChannels: 32, channelMult: [1, 1, 1, 1], numResBlocks: 2,
            attentionResolutions: [4, 8], heads: .channels(32))
    }
}

// MARK: - blocks

/// A layer of a `GuidedBlock`: sees the timestep embedding and the context when it needs them.
protocol GuidedLayer: Module {
    func apply(_ x: Tensor, embedding: Tensor, context: Tensor?) -> Tensor
}

extension Conv2d: GuidedLayer {
    func apply(_ x: Tensor, embedding: Tensor, context: Tensor?) -> Tensor { self(x) }
}

/// One entry of `input_blocks` / `middle_block` / `output_blocks` (the reference's `TimestepEmbedSequential`);
/// its layers are named `0`, `1`, ….
final class GuidedBlock: Module {
    let layers: [any GuidedLayer]

    init(_ layers: [any GuidedLayer]) { self.layers = layers; super.init() }

    override func members() -> [(key: String, member: ModuleMember)] {
        layers.enumerated().map { ("\($0.offset)", .module($0.element)) }
    }

    func callAsFunction(_ x: Tensor, embedding: Tensor, context: Tensor?) -> Tensor {
        layers.reduce(x) { $1.apply($0, embedding: embedding, context: context) }
    }
}

/// `ResBlock`: h = conv(SiLU(GN(x))); h += Linear(SiLU(emb)) or GN(h)·(1 + s) + b (scale-shift);
/// h = conv_zero(Dropout(SiLU(GN(h)))); out = skip(x) + h, skip a 1×1 conv when the channels change.
final class GuidedResBlock: Module, GuidedLayer {
    let inNorm: GroupNorm
    let inConv: Conv2d
    let embeddingProjection: Linear
    let outNorm: GroupNorm
    let dropout: Dropout
    let outConv: Conv2d
    let skip: Conv2d?
    let scaleShift: Bool

    init(_ cin: Int, _ cout: Int, embeddingChannels: Int, dropout probability: Float, scaleShift: Bool, groups: Int,
         generator: RandomGenerator) {
        inNorm = GroupNorm(groups: groups, channels: cin)
        inConv = Conv2d(cin, cout, kernel: 3, padding: 1, generator: generator)
        embeddingProjection = Linear(embeddingChannels, scaleShift ? 2 * cout : cout, generator: generator)
        outNorm = GroupNorm(groups: groups, channels: cout)
        dropout = Dropout(probability, generator: generator)
        outConv = zeroed(Conv2d(cout, cout, kernel: 3, padding: 1, generator: generator))
        skip = cin == cout ? nil : Conv2d(cin, cout, kernel: 1, generator: generator)
        self.scaleShift = scaleShift
        super.init()
    }

    override func members() -> [(key: String, member: ModuleMember)] {
        [("in_layers.0", .module(inNorm)), ("in_layers.2", .module(inConv)),
         ("emb_layers.1", .module(embeddingProjection)),
         ("out_layers.0", .module(outNorm)), ("out_layers.2", .module(dropout)), ("out_layers.3", .module(outConv))]
            + (skip.map { [("skip_connection", .module($0))] } ?? [])
    }

    func apply(_ x: Tensor, embedding: Tensor, context: Tensor?) -> Tensor {
        let h = inConv(inNorm(x, activation: .silu))
        let projected = embeddingProjection(embedding.silu()).unsqueeze(2).unsqueeze(3) // [N, C or 2C, 1, 1]
        let activated: Tensor
        if scaleShift {
            let parts = projected.chunk(2, axis: 1)
            activated = (outNorm(h) * (1 + parts[0]) + parts[1]).silu()
        } else {
            activated = outNorm(h + projected, activation: .silu)
        }
        return (skip?(x) ?? x) + outConv(dropout(activated))
    }
}

/// `AttentionBlock`: GN → conv1d qkv → multi-head attention with the legacy head layout (channels grouped
/// [head][q, k, v][depth]); q and k are each scaled by d^(−1/4), i.e. the logits by 1/√d → conv1d proj (zero
/// init) → residual.
final class GuidedAttentionBlock: Module, GuidedLayer {
    let heads: Int
    let norm: GroupNorm
    let qkv: PointwiseConv1d
    let projOut: PointwiseConv1d

    init(_ channels: Int, heads: Int, groups: Int, generator: RandomGenerator) {
        self.heads = heads
        norm = GroupNorm(groups: groups, channels: channels)
        qkv = PointwiseConv1d(channels, 3 * channels, generator: generator)
        projOut = zeroed(PointwiseConv1d(channels, channels, generator: generator))
        super.init()
    }

    override func members() -> [(key: String, member: ModuleMember)] {
        [("norm", .module(norm)), ("qkv", .module(qkv)), ("proj_out", .module(projOut))]
    }

    func apply(_ x: Tensor, embedding: Tensor, context: Tensor?) -> Tensor {
        guard x.rank == 4 else { return x }
        let (b, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let d = c / heads, length = h * w
        let parts = qkv(norm(x).reshape([b, c, length])).reshape([b, heads, 3, d, length]).chunk(3, axis: 2)
            .map { $0.reshape([b, heads, d, length]).transpose(2, 3) } // [B, heads, L, d]
        let attended = Tensor.scaledDotProductAttention(q: parts[0], k: parts[1], v: parts[2],
                                                        scale: 1 / Float(d).squareRoot())
        let merged = attended.transpose(2, 3).reshape([b, c, length])
        return x + projOut(merged).reshape([b, c, h, w])
    }
}

/// LDM `SpatialTransformer`: GN (eps 1e-6) → 1×1 conv in → `depth` × [LN → self-attention, LN → cross-attention
/// to the context, LN → GEGLU feed-forward (4×)], each residual → 1×1 conv out (zero init) → residual.
final class SpatialTransformer: Module, GuidedLayer {
    let norm: GroupNorm
    let projIn: Conv2d
    let blocks: [TransformerBlock]
    let projOut: Conv2d

    init(_ channels: Int, heads: Int, headDim: Int, depth: Int, contextDim: Int?, groups: Int,
         generator: RandomGenerator) {
        let inner = heads * headDim
        norm = GroupNorm(groups: groups, channels: channels, eps: 1e-6)
        projIn = Conv2d(channels, inner, kernel: 1, generator: generator)
        blocks = (0..<depth).map { _ in
            TransformerBlock(inner, heads: heads, headDim: headDim, contextDim: contextDim, generator: generator)
        }
        projOut = zeroed(Conv2d(inner, channels, kernel: 1, generator: generator))
        super.init()
    }

    override func members() -> [(key: String, member: ModuleMember)] {
        [("norm", .module(norm)), ("proj_in", .module(projIn))]
            + blocks.enumerated().map { ("transformer_blocks.\($0.offset)", .module($0.element)) }
            + [("proj_out", .module(projOut))]
    }

    func apply(_ x: Tensor, embedding: Tensor, context: Tensor?) -> Tensor {
        guard x.rank == 4 else { return x }
        let (b, h, w) = (x.shape[0], x.shape[2], x.shape[3])
        let projected = projIn(norm(x))
        let inner = projected.shape[1]
        var tokens = projected.reshape([b, inner, h * w]).transpose(1, 2) // [B, HW, inner]
        for block in blocks { tokens = block(tokens, context: context) }
        return x + projOut(tokens.transpose(1, 2).reshape([b, inner, h, w]))
    }
}

/// LDM `BasicTransformerBlock` (dropout 0).
final class TransformerBlock: Module {
    let attn1: LDMCrossAttention
    let ff: GEGLUFeedForward
    let attn2: LDMCrossAttention
    let norm1: LayerNorm, norm2: LayerNorm, norm3: LayerNorm

    init(_ dim: Int, heads: Int, headDim: Int, contextDim: Int?, generator: RandomGenerator) {
        attn1 = LDMCrossAttention(dim, contextDim: dim, heads: heads, headDim: headDim, generator: generator)
        ff = GEGLUFeedForward(dim, generator: generator)
        attn2 = LDMCrossAttention(dim, contextDim: contextDim ?? dim, heads: heads, headDim: headDim,
                                  generator: generator)
        norm1 = LayerNorm([dim]); norm2 = LayerNorm([dim]); norm3 = LayerNorm([dim])
        super.init()
    }

    /// Without a context the cross-attention attends to the tokens themselves (LDM's `default(context, x)`).
    func callAsFunction(_ x: Tensor, context: Tensor?) -> Tensor {
        var h = x + attn1(norm1(x), context: nil)
        h = h + attn2(norm2(h), context: context)
        return h + ff(norm3(h))
    }
}

/// LDM `CrossAttention` (q, k, v without bias; scale headDim^−½), on HistoNN's `MultiheadAttention` with the
/// reference's parameter names `to_q`, `to_k`, `to_v`, `to_out.0`.
final class LDMCrossAttention: Module {
    let attention: MultiheadAttention

    init(_ dim: Int, contextDim: Int, heads: Int, headDim: Int, generator: RandomGenerator) {
        attention = MultiheadAttention(dim: dim, heads: heads, headDim: headDim, contextDim: contextDim, bias: false,
                                       generator: generator)
        super.init()
    }

    override func members() -> [(key: String, member: ModuleMember)] {
        [("to_q", .module(attention.queryProjection)), ("to_k", .module(attention.keyProjection)),
         ("to_v", .module(attention.valueProjection)), ("to_out.0", .module(attention.outputProjection))]
    }

    func callAsFunction(_ x: Tensor, context: Tensor?) -> Tensor { attention(x, context: context) }
}

/// LDM `FeedForward(glu=True)`: Linear(dim → 2·4dim) → GEGLU → Linear(4dim → dim) (`net.0.proj`, `net.2`).
final class GEGLUFeedForward: Module {
    let projection: Linear
    let output: Linear

    init(_ dim: Int, generator: RandomGenerator) {
        projection = Linear(dim, 8 * dim, generator: generator)
        output = Linear(4 * dim, dim, generator: generator)
        super.init()
    }

    override func members() -> [(key: String, member: ModuleMember)] {
        [("net.0.proj", .module(projection)), ("net.2", .module(output))]
    }

    func callAsFunction(_ x: Tensor) -> Tensor { output(projection(x).geglu()) }
}

/// `Downsample` with a convolution: conv 3×3, stride 2, padding 1 (`op`).
final class GuidedDownsample: Module, GuidedLayer {
    let op: Conv2d

    init(_ channels: Int, generator: RandomGenerator) {
        op = Conv2d(channels, channels, kernel: 3, stride: 2, padding: 1, generator: generator)
        super.init()
    }

    func apply(_ x: Tensor, embedding: Tensor, context: Tensor?) -> Tensor { op(x) }
}

/// `Upsample` with a convolution: nearest ×2 → conv 3×3 (`conv`).
final class GuidedUpsample: Module, GuidedLayer {
    let conv: Conv2d

    init(_ channels: Int, generator: RandomGenerator) {
        conv = Conv2d(channels, channels, kernel: 3, padding: 1, generator: generator)
        super.init()
    }

    func apply(_ x: Tensor, embedding: Tensor, context: Tensor?) -> Tensor { conv(x.interpolateNearest(scale: 2)) }
}

/// `conv_nd(1, in, out, 1)`: weight [out, in, 1] (the reference's shape, so checkpoints load as they are),
/// PyTorch's default init.
final class PointwiseConv1d: Module {
    let weight: Parameter
    let bias: Parameter

    init(_ inChannels: Int, _ outChannels: Int, generator: RandomGenerator) {
        weight = Parameter(Initializer.kaimingUniform([outChannels, inChannels, 1], a: Foundation.sqrt(5), generator: generator))
        bias = Parameter(Initializer.defaultBias(outChannels, fanIn: inChannels, generator: generator))
        super.init()
    }

    /// x [N, in, L] → [N, out, L].
    func callAsFunction(_ x: Tensor) -> Tensor { x.conv1d(weight.value, bias: bias.value) }
}

/// The reference's `zero_module`: every parameter of `module` set to zero.
func zeroed<M: Module>(_ module: M) -> M {
    for (_, p) in module.parameters() { p.value = Tensor.zeros(p.shape) }
    return module
}

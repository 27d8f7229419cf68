import HistoCore
import HistoNN

/// LDM's vector-quantised first stage (`VQModel`, as its `VQModelInterface` uses it): DTSeg's frozen, pretrained
/// vq-f4 (SPEC §1 step 1).
///
/// Encode: `LDMAutoencoder`'s encoder with z output channels (`double_z: False`) → quant_conv (1×1, z → z). The
/// encoding is not quantised (`VQModelInterface.encode`): it is what DTSeg's diffusion model trains on and extracts
/// features from. Decode: the nearest codebook entry at every latent pixel (`quantize`) → post_quant_conv (1×1) →
/// `LDMAutoencoder`'s decoder (`VQModelInterface.decode`, quantising as LDM's `decode_first_stage` does by
/// default). The model is frozen, so the straight-through gradient and the codebook losses are left out.
///
/// Parameter names are those of an LDM `VQModel` state dict: `encoder.*`, `decoder.*`, `quant_conv.*`,
/// `post_quant_conv.*` and the codebook `quantize.embedding.weight` [codebookSize, z]. tools/convert_ldm_vq.py
/// turns a released checkpoint into a file `LatentSpace.loadFirstStage(from:)` reads.
public final class VQAutoencoder: Module {
    public struct Configuration: LDMAutoencoder.Architecture, Equatable, Sendable {
        public var imageChannels: Int
        /// Base width `ch`; level i has ch·channelMultipliers[i] channels.
        public var channels: Int
        /// `ch_mult`; its length sets the number of levels.
        public var channelMultipliers: [Int]
        /// `num_res_blocks` per encoder level (the decoder has one more per level).
        public var resBlocksPerLevel: Int
        /// `z_channels` = `embed_dim` (equal in every LDM VQ config).
        public var latentChannels: Int
        /// `n_embed`: the number of codebook entries.
        public var codebookSize: Int
        /// GroupNorm groups (32 in LDM); every width must be divisible by it.
        public var normGroups: Int
        /// GroupNorm epsilon (LDM's `Normalize` uses 1e-6).
        public var normEpsilon: Float

        public init(imageChannels: Int = 3, channels: Int, channelMultipliers: [Int], resBlocksPerLevel: Int,
                    latentChannels: Int, codebookSize: Int, normGroups: Int = 32, normEpsilon: Float = 1e-6) {
            self.imageChannels = imageChannels
            self.channels = channels
            self.channelMultipliers = channelMultipliers
            self.resBlocksPerLevel = resBlocksPerLevel
            self.latentChannels = latentChannels
            self.codebookSize = codebookSize
            self.normGroups = normGroups
            self.normEpsilon = normEpsilon
        }

        /// LDM vq-f4 (SPEC §1 step 1): ch 128, ch_mult (1,2,4), 2 ResnetBlocks, no attention inside the levels,
        /// z = embed_dim = 3, n_embed 8192. A 256² image maps to a 3×64×64 latent.
        public static let vqF4 = Configuration(channels: 128, channelMultipliers: [1, 2, 4], resBlocksPerLevel: 2,
                                               latentChannels: 3, codebookSize: 8192)
        /// A small f4 model for tests (tools/convert_ldm_vq.py's committed export): ch 4, ch_mult (1,2,4),
        /// 1 ResnetBlock, z 3, 64 codebook entries, GroupNorm with 2 groups.
        public static let vqF4Tiny = Configuration(channels: 4, channelMultipliers: [1, 2, 4], resBlocksPerLevel: 1,
                                                   latentChannels: 3, codebookSize: 64, normGroups: 2)

        /// The presets by name, as converted weights record them (tools/convert_ldm_vq.py --preset).
        public static let presets: [String: Configuration] = ["vq-f4": .vqF4, "vq-f4-tiny": .vqF4Tiny]

        /// What makes this configuration unbuildable (empty when valid).
        public var problems: [String] {
            architectureProblems + (codebookSize < 1 ? ["codebookSize \(codebookSize) must be positive"] : [])
        }
    }

    public let configuration: Configuration
    public let encoder: LDMAutoencoder.Encoder
    public let decoder: LDMAutoencoder.Decoder
    /// 1×1 conv on the encoder output, z → z (LDM `quant_conv`).
    public let quantConv: Conv2d
    /// 1×1 conv on quantised latents, z → z (LDM `post_quant_conv`).
    public let postQuantConv: Conv2d
    /// The codebook (LDM `quantize`).
    public let quantizer: VectorQuantizer

    /// Throws `EngineError.invalidValue` listing every problem of an unbuildable configuration.
    public init(_ configuration: Configuration, generator: RandomGenerator) throws {
        let problems = configuration.problems
        guard problems.isEmpty else {
            throw EngineError.invalidValue(op: "VQAutoencoder", message: problems.joined(separator: "; "))
        }
        self.configuration = configuration
        let z = configuration.latentChannels
        encoder = LDMAutoencoder.Encoder(configuration, outputChannels: z, generator: generator)
        decoder = LDMAutoencoder.Decoder(configuration, generator: generator)
        quantConv = Conv2d(z, z, kernel: 1, generator: generator)
        postQuantConv = Conv2d(z, z, kernel: 1, generator: generator)
        quantizer = VectorQuantizer(codebookSize: configuration.codebookSize, channels: z, generator: generator)
        super.init()
    }

    public override func members() -> [(key: String, member: ModuleMember)] {
        [("encoder", .module(encoder)), ("decoder", .module(decoder)), ("quantize", .module(quantizer)),
         ("quant_conv", .module(quantConv)), ("post_quant_conv", .module(postQuantConv))]
    }

    /// The unquantised latents of images x [N, imageChannels, H, W] (LDM expects [−1, 1]): [N, z, ⌈H/f⌉,
    /// ⌈W/f⌉].
    public func encode(_ x: Tensor) -> Tensor {
        guard x.rank == 4, x.shape[1] == configuration.imageChannels else {
            return .invalid("vq_autoencoder_encode",
                            "expects images [N, \(configuration.imageChannels), H, W], got \(describe(x.shape))")
        }
        return quantConv(encoder(x))
    }

    /// Images [N, imageChannels, f·h, f·w] from latents [N, z, h, w], quantised first (unscaled: divide diffusion
    /// latents by the scale factor first, or use `decodeLatents`).
    public func decode(_ latents: Tensor) -> Tensor {
        guard latents.rank == 4, latents.shape[1] == configuration.latentChannels else {
            let expected = "[N, \(configuration.latentChannels), h, w]"
            return .invalid("vq_autoencoder_decode", "expects latents \(expected), got \(describe(latents.shape))")
        }
        return decoder(postQuantConv(quantizer(latents)))
    }

    /// Diffusion latents of images x: scaleFactor · encode(x). The encoding is deterministic, so `mode` is
    /// ignored: a `.sample` is the encoding itself, as LDM's `get_first_stage_encoding` returns a VQ encoding as is.
    public func latents(_ x: Tensor, scaleFactor: Float = 1, mode: AutoencoderKL.LatentMode = .mean) -> Tensor {
        encode(x) * scaleFactor
    }

    /// LDM's `VectorQuantizer2` at inference: every latent pixel becomes its nearest codebook entry (Euclidean
    /// distance; the first of equally near ones, as `torch.argmin`). The distances of all pixels to all entries
    /// are held at once: N·h·w·codebookSize values (134 MB per 256² image for vq-f4).
    public final class VectorQuantizer: Module {
        /// [codebookSize, z] (LDM holds it in an `nn.Embedding`: `embedding.weight`).
        public let codebook: Parameter

        init(codebookSize: Int, channels: Int, generator: RandomGenerator) {
            // LDM's initialisation, uniform in ±1/n_embed; loaded weights replace it.
            let bound = 1 / Float(codebookSize)
            codebook = Parameter(generator.uniform([codebookSize, channels], -bound, bound))
            super.init()
        }

        public override func members() -> [(key: String, member: ModuleMember)] {
            [("embedding.weight", .parameter(codebook))]
        }

        /// The index of the nearest entry at every pixel of latents z [N, z, h, w]: [N, h, w].
        public func indices(_ z: Tensor) -> Tensor {
            let (n, c, h, w) = (z.shape[0], z.shape[1], z.shape[2], z.shape[3])
            let pixels = z.permute([0, 2, 3, 1]).reshape([n * h * w, c])
            let entries = codebook.value
            // ‖z‖² + ‖e‖² − 2 z·e, in LDM's order of terms.
            let distances = pixels.square().sum(axes: [1], keepDims: true)
                + entries.square().sum(axes: [1]).reshape([1, entries.shape[0]])
                - pixels.matmul(entries, transposeB: true) * 2
            return (-distances).argmax(axis: 1).reshape([n, h, w])
        }

        /// Latents z [N, z, h, w] with every pixel replaced by its nearest entry.
        public func callAsFunction(_ z: Tensor) -> Tensor {
            let (n, c, h, w) = (z.shape[0], z.shape[1], z.shape[2], z.shape[3])
            let nearest = codebook.value.indexSelect(axis: 0, indices: indices(z).reshape([n * h * w]))
            return nearest.reshape([n, h, w, c]).permute([0, 3, 1, 2])
        }
    }
}

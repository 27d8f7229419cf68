import HistoCore
import HistoNN

/// PathSegDiff's conditioning tokens (SPEC §4, Graikos et al.'s `SSLEmbedder`): an SSL embedding y [N, E]
/// becomes the context [N, 2, C] = [Linear(E → C)(y / ‖y‖₂), Linear(R → C)(0)]: the patch token of the
/// ℓ2-normalised embedding and a region token whose embedding is zero (so it is the second layer's bias). Trained
/// with the UNet: its weights are part of the conditioned LDM (`SSLGuidedUNet`).
public final class SSLEmbedder: Module {
    /// E (384: HIPT-256's CLS), R (768: the region embedding the single-scale model leaves at zero), C (512).
    public let embeddingDim: Int, regionDim: Int, contextDim: Int
    let patchProjection: Linear
    let regionProjection: Linear

    public init(embeddingDim: Int = 384, regionDim: Int = 768, contextDim: Int = 512, generator: RandomGenerator) {
        self.embeddingDim = embeddingDim
        self.regionDim = regionDim
        self.contextDim = contextDim
        patchProjection = Linear(embeddingDim, contextDim, generator: generator)
        regionProjection = Linear(regionDim, contextDim, generator: generator)
        super.init()
    }

    public override func members() -> [(key: String, member: ModuleMember)] {
        [("patch_projection", .module(patchProjection)), ("region_projection", .module(regionProjection))]
    }

    /// y [N, E] → context tokens [N, 2, C].
    public func callAsFunction(_ embedding: Tensor) -> Tensor {
        guard embedding.rank == 2, embedding.shape[1] == embeddingDim else {
            return .invalid("ssl_embedder", "needs embeddings [N, \(embeddingDim)], got \(describe(embedding.shape))")
        }
        let n = embedding.shape[0]
        let patch = patchProjection(embedding.l2Normalize(axis: 1)).reshape([n, 1, contextDim])
        let region = regionProjection(Tensor.zeros([n, 1, regionDim]))
        return Tensor.concat([patch, region], axis: 1)
    }
}

/// PathSegDiff's SSL-guided LDM (SPEC §4): a `GuidedUNet` with spatial transformers whose cross-attention sees the
/// `SSLEmbedder` tokens of an SSL embedding. Its `context` is the embedding itself, [N, E] (HIPT's CLS; see
/// `DiffusionRun.context`). The UNet's parameters keep their names (`input_blocks.…`, as an unconditional run's);
/// the embedder's lie under `cond_stage_model.` (LDM's name for the conditioning model).
public final class SSLGuidedUNet: Module, FeatureExtractingModel {
    public let unet: GuidedUNet
    public let embedder: SSLEmbedder

    /// `configuration` gains cross-attention to 512-wide tokens when it has none (the `cpu` preset) or attends to
    /// its own tokens; the embedder's context width is the UNet's.
    public init(_ configuration: GuidedUNet.Configuration, embeddingDim: Int, generator: RandomGenerator) throws {
        var c = configuration
        let contextDim = c.crossAttention?.contextDim ?? 512
        c.crossAttention = GuidedUNet.CrossAttention(contextDim: contextDim, depth: c.crossAttention?.depth ?? 1)
        unet = try GuidedUNet(c, generator: generator)
        embedder = SSLEmbedder(embeddingDim: embeddingDim, contextDim: contextDim, generator: generator)
        super.init()
    }

    public override func members() -> [(key: String, member: ModuleMember)] {
        [("", .module(unet)), ("cond_stage_model", .module(embedder))]
    }

    public var imageChannels: Int { unet.imageChannels }
    public var inputMultiple: Int { unet.inputMultiple }
    public var featureBlockNames: [String] { unet.featureBlockNames }

    /// `context`: the SSL embeddings [N, E] of the images x stands for (required).
    public func forward(_ x: Tensor, timesteps: Tensor, context: Tensor?, recorder: FeatureRecorder?) -> Tensor {
        guard let context else {
            return .invalid("ssl_guided_unet", "this model is conditioned on SSL (HIPT) embeddings; none were given")
        }
        return unet.forward(x, timesteps: timesteps, context: embedder(context), recorder: recorder)
    }
}

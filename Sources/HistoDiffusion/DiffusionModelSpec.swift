import Foundation
import HistoCore
import HistoNN

/// Names a diffusion model (family + preset), the recipe it was trained with and, for latent diffusion, its latent
/// space, so that a run can record it beside its weights and a later command (sampling, fine-tuning, feature
/// extraction) can rebuild the same network, schedule and first stage.
public struct DiffusionModelSpec: Codable, Equatable, Sendable {
    /// genselfdiff (AttentionUNet), guided (guided-diffusion/LDM UNet).
    public var family: String
    /// cpu, paper, bench828k, pathsegdiff and dtseg (guided only: `GuidedUNet.Configuration.pathSegDiffLDM`,
    /// `.dtsegLDM`).
    public var preset: String
    /// Sets the noise schedule and the model's target. Required: files written before runs recorded it fail to
    /// read with a message saying what to add.
    public var recipe: DiffusionRecipe
    /// Set when the model was trained on autoencoder latents (nil: on pixels).
    public var latent: Latent?
    /// Set when the model is conditioned on HIPT embeddings (`SSLGuidedUNet`; nil: unconditional, the default).
    public var conditioning: Conditioning?

    /// How a latent diffusion run maps images to its latents; the autoencoder's weights lie beside the spec
    /// (`DiffusionRun.autoencoderFileName`).
    public struct Latent: Codable, Equatable, Sendable {
        /// LDM's scale_factor: diffusion latents are scaleFactor · the autoencoder's latents.
        public var scaleFactor: Float
        public var posterior: LatentSpace.Posterior
        /// The weights file the run's copy of the autoencoder was taken from.
        public var source: String

        public init(scaleFactor: Float, posterior: LatentSpace.Posterior, source: String) {
            self.scaleFactor = scaleFactor; self.posterior = posterior; self.source = source
        }
    }

    /// PathSegDiff's SSL conditioning (SPEC §4): the frozen HIPT ViT whose CLS embeddings, through the model's
    /// `SSLEmbedder`, are the context of its cross-attention.
    public struct Conditioning: Codable, Equatable, Sendable {
        /// The `tools/hipt_export.py` weights file (absolute path), reloaded by `DiffusionRun.load`.
        public var hipt: String
        /// Its CLS width (384 for HIPT-256).
        public var embeddingDim: Int

        public init(hipt: String, embeddingDim: Int) { self.hipt = hipt; self.embeddingDim = embeddingDim }
    }

    public static let fileName = "diffusion_model.json"

    public init(family: String, preset: String, recipe: DiffusionRecipe, latent: Latent? = nil,
                conditioning: Conditioning? = nil) {
        self.family = family; self.preset = preset; self.recipe = recipe; self.latent = latent
        self.conditioning = conditioning
    }

    public func makeModel(generator: RandomGenerator) throws -> any FeatureExtractingModel {
        if family == "guided", let configuration = try Self.guidedConfigurations[preset]?() {
            guard let conditioning else {
                return try GuidedUNet(Self.unconditional(configuration), generator: generator)
            }
            return try SSLGuidedUNet(configuration, embeddingDim: conditioning.embeddingDim, generator: generator)
        }
        if conditioning != nil, family != "guided" {
            throw EngineError.invalidValue(op: "diffusion model", message:
                "HIPT conditioning needs the guided family (cross-attention), not \(family)")
        }
        switch (family, preset) {
        case ("genselfdiff", "cpu"): return try AttentionUNet(.cpu, generator: generator)
        case ("genselfdiff", "paper"): return try AttentionUNet(.genSelfDiff, generator: generator)
        default:
            throw EngineError.invalidValue(op: "diffusion model", message:
                "unknown family/preset \(family)/\(preset) (genselfdiff: cpu, paper; guided: cpu, bench828k, paper, "
                + "pathsegdiff, dtseg)")
        }
    }

    /// A preset trained without conditioning: its spatial transformers' cross-attention attends to the block's
    /// own tokens (LDM's unconditional models; the `pathsegdiff` preset is Graikos et al.'s conditioned LDM, whose
    /// 512-wide context an unconditional run does not have).
    static func unconditional(_ configuration: GuidedUNet.Configuration) -> GuidedUNet.Configuration {
        var c = configuration
        c.crossAttention?.contextDim = nil
        return c
    }

    /// The guided family's presets.
    static let guidedConfigurations: [String: () throws -> GuidedUNet.Configuration] = [
        "cpu": { .cpu }, "bench828k": { .bench828k }, "pathsegdiff": { .pathSegDiffLDM }, "dtseg": { .dtsegLDM },
        "paper": { try .guidedDiffusion(imageSize: 256) },
    ]

    /// The spec in the JSON file at `path`.
    public static func read(_ path: String) throws -> DiffusionModelSpec {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw EngineError.file(path: path, message: "no diffusion model spec (written by `histodiff pretrain`)")
        }
        do {
            return try JSONDecoder().decode(DiffusionModelSpec.self, from: data)
        } catch DecodingError.keyNotFound(let key, _) where key.stringValue == CodingKeys.recipe.stringValue {
            throw EngineError.file(path: path, message: "no \"recipe\" (written before runs recorded it): add "
                + "\"recipe\": \"genselfdiff\" (pretrain's default) or \"ddpm\", whichever the run was trained with")
        } catch {
            throw EngineError.file(path: path, message: "unreadable diffusion model spec: \(error)")
        }
    }

    /// Writes `directory/diffusion_model.json` atomically.
    public func write(toDirectory directory: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(self).write(to: URL(fileURLWithPath: directory).appendingPathComponent(Self.fileName), options: .atomic)
    }
}

/// A trained diffusion model ready to sample from or to extract features with: the network with its weights, the
/// schedule and target of its recipe and, for latent diffusion, the frozen autoencoder of its latent space.
public struct DiffusionRun {
    /// The weights `histodiff pretrain` saves (the EMA copy).
    public static let weightsFileName = "ema.safetensors"
    /// A latent run's copy of its autoencoder.
    public static let autoencoderFileName = "autoencoder.safetensors"

    public let spec: DiffusionModelSpec
    public let model: any FeatureExtractingModel
    public let schedule: NoiseSchedule
    public let latentSpace: LatentSpace?
    /// The frozen HIPT encoder of a conditioned run (`spec.conditioning`).
    public let hipt: VisionTransformer?

    /// `latentSpace` must be given exactly when `spec.latent` is set, `hipt` exactly when `spec.conditioning` is.
    public init(spec: DiffusionModelSpec, model: any FeatureExtractingModel, latentSpace: LatentSpace?,
                hipt: VisionTransformer? = nil) throws {
        guard (spec.latent == nil) == (latentSpace == nil) else {
            throw EngineError.invalidValue(op: "DiffusionRun", message: spec.latent == nil
                ? "a latent space was given for a pixel-space model" : "the spec describes a latent model but no latent space was given")
        }
        guard spec.conditioning?.embeddingDim == hipt?.configuration.embedDim else {
            throw EngineError.invalidValue(op: "DiffusionRun", message: spec.conditioning.map {
                "the spec describes a model conditioned on \($0.embeddingDim)-wide HIPT embeddings; "
                    + (hipt.map { "the encoder gives \($0.configuration.embedDim)" } ?? "no encoder was given")
            } ?? "a HIPT encoder was given for an unconditional model")
        }
        if let latentSpace {
            guard latentSpace.latentChannels == model.imageChannels else {
                throw EngineError.invalidValue(op: "DiffusionRun", message:
                    "the autoencoder's \(latentSpace.latentChannels) latent channels differ from the model's \(model.imageChannels) input channels")
            }
        }
        self.spec = spec
        self.model = model
        self.latentSpace = latentSpace
        self.hipt = hipt
        schedule = DiffusionPretraining(spec.recipe.configuration).schedule
    }

    /// The run at `path`: a `histodiff pretrain` folder (diffusion_model.json, ema.safetensors and, for latent
    /// runs, autoencoder.safetensors) or a .safetensors file of the model with that folder's files beside it.
    public static func load(_ path: String) throws -> DiffusionRun {
        let weights = weightsFile(path)
        func inRun(_ name: String) -> String { ((weights as NSString).deletingLastPathComponent as NSString).appendingPathComponent(name) }
        let spec = try DiffusionModelSpec.read(inRun(DiffusionModelSpec.fileName))
        let model = try spec.makeModel(generator: RandomGenerator(seed: 0))
        guard FileManager.default.fileExists(atPath: weights) else {
            throw EngineError.file(path: weights, message: "no model weights (pretrain writes them when it finishes)")
        }
        try model.load(from: weights)
        model.train(false)
        let latentSpace = try spec.latent.map {
            LatentSpace(autoencoder: try LatentSpace.loadFirstStage(from: inRun(autoencoderFileName)),
                        scaleFactor: $0.scaleFactor, posterior: $0.posterior)
        }
        let hipt = try spec.conditioning.map { try VisionTransformer.load(from: $0.hipt) }
        return try DiffusionRun(spec: spec, model: model, latentSpace: latentSpace, hipt: hipt)
    }

    /// The model weights `load(path)` reads: `path` itself when it is a .safetensors file, else the run's
    /// ema.safetensors.
    public static func weightsFile(_ path: String) -> String {
        path.hasSuffix(".safetensors") ? path : (path as NSString).appendingPathComponent(weightsFileName)
    }

    public var target: DiffusionTarget { spec.recipe.configuration.target }

    /// Image heights and widths must be multiples of this: the model's own multiple, times the autoencoder's
    /// downsampling for a latent run.
    public var imageMultiple: Int { model.inputMultiple * (latentSpace?.downsamplingFactor ?? 1) }

    /// Throws unless an image of `height` × `width` fits the model; `what` names the image in the message.
    public func checkImageSize(height: Int, width: Int, _ what: String) throws {
        guard height > 0, width > 0, height % imageMultiple == 0, width % imageMultiple == 0 else {
            let latent = latentSpace.map { " (the autoencoder downsamples by \($0.downsamplingFactor), the model by \(model.inputMultiple))" } ?? ""
            throw EngineError.invalidValue(op: "diffusion model", message:
                "\(what) is \(height)×\(width); this \(spec.family)/\(spec.preset) model needs sides that are positive multiples of \(imageMultiple)\(latent)")
        }
    }

    /// An extractor of the named blocks' outputs at `timesteps` (each below the schedule's length), on the clean
    /// input or, with `noisedSeed`, on x_t noised with this run's schedule (see `FeatureInput`).
    public func featureExtractor(blocks: [String], timesteps: [Int], noisedSeed: UInt64? = nil,
                                 outputSize: [Int]? = nil) throws -> FeatureExtractor {
        let outside = timesteps.filter { $0 >= schedule.steps }
        guard outside.isEmpty else {
            throw EngineError.invalidValue(op: "features", message: "timesteps \(outside) lie outside the schedule's 0..<\(schedule.steps)")
        }
        let alphaBars = schedule.alphaBars
        let input = noisedSeed.map { FeatureInput.noised(seed: $0, alphaBar: { alphaBars[$0] }) } ?? .clean
        return try FeatureExtractor(model: model, blocks: blocks, timesteps: timesteps, input: input, outputSize: outputSize)
    }

    /// The context the model takes for images [N, 3, H, W] in [−1, 1]: nil for an unconditional run, else their
    /// HIPT CLS embeddings [N, E] (of the pixels mapped to [0, 1]), evaluated and cut from the graph (the encoder is
    /// frozen).
    public func context(_ images: Tensor, on backend: (any Backend)? = nil) throws -> Tensor? {
        guard let hipt else { return nil }
        return try detached(hipt((images + 1) * 0.5), on: backend ?? Engine.defaultBackend)
    }

    /// What the model sees for images [N, 3, H, W] in [−1, 1]: the images, or for a latent run their scaled
    /// posterior-mean latents.
    public func modelInput(_ images: Tensor, on backend: (any Backend)? = nil) throws -> Tensor {
        try latentSpace?.encodeMean(images, on: backend) ?? images
    }
}

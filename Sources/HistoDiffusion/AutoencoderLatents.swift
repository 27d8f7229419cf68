import Foundation
import HistoCore
import HistoNN

extension AutoencoderKL {
    /// Metadata key of saved first-stage weights naming their preset (`AutoencoderKL.Configuration.presets` or
    /// `VQAutoencoder.Configuration.presets`).
    public static let presetMetadataKey = "autoencoder.preset"

    /// The weights file of `path`: a `histodiff train-autoencoder` run folder (its latest checkpoint) or a
    /// .safetensors file.
    public static func weightsFile(_ path: String) -> String {
        guard !path.hasSuffix(".safetensors") else { return path }
        return ((path as NSString).appendingPathComponent(TrainingRun.checkpointDirectoryName) as NSString)
            .appendingPathComponent(TrainingCheckpoint.weightsFileName)
    }
}

/// A frozen first stage of latent diffusion, what `LatentSpace` holds: the KL autoencoder `histodiff
/// train-autoencoder` trains (`AutoencoderKL`) or LDM's released vq-f4 (`VQAutoencoder`, DTSeg's, SPEC §1).
public protocol FirstStage: Module {
    /// Input height/width over latent height/width.
    var downsamplingFactor: Int { get }
    /// Channels of the latents: the diffusion model's input channels.
    var latentChannels: Int { get }
    /// The name of its configuration among its type's presets (nil: none of them); saved weights record it.
    var presetName: String? { get }
    /// LDM's `scale_factor` when the first stage fixes it; nil when it is fitted to the data (`scale_by_std`).
    var fixedScaleFactor: Float? { get }
    /// Diffusion latents scaleFactor · z of images [N, C, H, W] in [−1, 1]; `mode` chooses a KL posterior's mean or
    /// a draw.
    func latents(_ x: Tensor, scaleFactor: Float, mode: AutoencoderKL.LatentMode) -> Tensor
    /// Images from unscaled latents [N, latentChannels, h, w].
    func decode(_ latents: Tensor) -> Tensor
}

extension FirstStage {
    /// Images from diffusion latents: decode(z / scaleFactor) (LDM's `decode_first_stage`).
    public func decodeLatents(_ z: Tensor, scaleFactor: Float = 1) -> Tensor { decode(z * (1 / scaleFactor)) }

    /// Saves the weights with their preset name in the metadata, so that `LatentSpace.loadFirstStage(from:)` can
    /// rebuild the network.
    public func saveWithPreset(to path: String) throws {
        guard let presetName else {
            let presets = LatentSpace.firstStagePresetNames.joined(separator: ", ")
            throw EngineError.invalidValue(op: "\(type(of: self)).saveWithPreset",
                                           message: "the configuration is none of the presets (\(presets))")
        }
        try save(to: path, metadata: [AutoencoderKL.presetMetadataKey: presetName])
    }
}

extension AutoencoderKL: FirstStage {
    public var downsamplingFactor: Int { configuration.downsamplingFactor }
    public var latentChannels: Int { configuration.latentChannels }
    public var presetName: String? { Configuration.presets.first { $0.value == configuration }?.key }
    /// Fitted: our KL runs use LDM's `scale_by_std`.
    public var fixedScaleFactor: Float? { nil }
}

extension VQAutoencoder: FirstStage {
    public var downsamplingFactor: Int { configuration.downsamplingFactor }
    public var latentChannels: Int { configuration.latentChannels }
    public var presetName: String? { Configuration.presets.first { $0.value == configuration }?.key }
    /// 1: DTSeg's LDM-VQ-f4 config sets scale_factor 1.0 without scale_by_std (SPEC §1 step 1).
    public var fixedScaleFactor: Float? { 1 }
}

/// The frozen first stage of latent diffusion: images [N, C, H, W] in [−1, 1] ↔ diffusion latents
/// scaleFactor·z [N, z, H/f, W/f] (LDM's `get_first_stage_encoding` and `decode_first_stage`).
public struct LatentSpace {
    /// Which latent of an image's posterior the diffusion model trains on. A VQ first stage has no posterior:
    /// both are its deterministic encoding.
    public enum Posterior: String, Codable, Sendable, CaseIterable {
        /// A draw, as LDM's `get_first_stage_encoding`.
        case sample
        /// The mean (deterministic).
        case mean
    }

    public let autoencoder: any FirstStage
    public let scaleFactor: Float
    public let posterior: Posterior

    public init(autoencoder: any FirstStage, scaleFactor: Float, posterior: Posterior) {
        self.autoencoder = autoencoder
        self.scaleFactor = scaleFactor
        self.posterior = posterior
        autoencoder.train(false)
    }

    /// LDM's `scale_by_std`: the scale factor is 1/std of the unscaled latents of `firstBatch` (drawn as
    /// `posterior` says, from `generator` for `.sample`), so that the diffusion model sees latents of unit variance.
    public static func fitted(autoencoder: any FirstStage, firstBatch: Tensor, posterior: Posterior,
                              generator: RandomGenerator, on backend: (any Backend)? = nil) throws -> LatentSpace {
        let unscaled = LatentSpace(autoencoder: autoencoder, scaleFactor: 1, posterior: posterior)
        let latents = try unscaled.encode(firstBatch, drawingFrom: generator, on: backend)
        return LatentSpace(autoencoder: autoencoder, scaleFactor: try AutoencoderKL.latentScaleFactor(latents), posterior: posterior)
    }

    /// LDM's latent space on `autoencoder`: its fixed scale factor (a VQ first stage's 1) or, when it has none, the
    /// `fitted` one (scale_by_std). Train on a VQ first stage's latents scaled by 1/std with `fitted` itself.
    public static func ldmScaled(autoencoder: any FirstStage, firstBatch: Tensor, posterior: Posterior,
                                 generator: RandomGenerator, on backend: (any Backend)? = nil) throws -> LatentSpace {
        if let fixed = autoencoder.fixedScaleFactor {
            return LatentSpace(autoencoder: autoencoder, scaleFactor: fixed, posterior: posterior)
        }
        return try fitted(autoencoder: autoencoder, firstBatch: firstBatch, posterior: posterior, generator: generator,
                          on: backend)
    }

    /// The first stage saved at `path` (see `AutoencoderKL.weightsFile`), rebuilt from the preset its metadata names:
    /// an `AutoencoderKL` preset (what `histodiff train-autoencoder` writes) or a `VQAutoencoder` one (what
    /// tools/convert_ldm_vq.py writes). Throws `EngineError.file` naming the file and every missing, unknown or
    /// misshaped tensor.
    public static func loadFirstStage(from path: String) throws -> any FirstStage {
        let file = AutoencoderKL.weightsFile(path)
        guard FileManager.default.fileExists(atPath: file) else {
            throw EngineError.file(path: file, message: "no autoencoder weights (expected a `histodiff "
                                   + "train-autoencoder` run folder or a .safetensors file)")
        }
        let weights = try SafeTensors.read(file)
        guard let name = weights.metadata[AutoencoderKL.presetMetadataKey] else {
            throw EngineError.file(path: file, message: "no \(AutoencoderKL.presetMetadataKey) metadata naming the "
                                   + "autoencoder preset; train it with `histodiff train-autoencoder` or convert "
                                   + "LDM VQ weights with tools/convert_ldm_vq.py")
        }
        let model: any FirstStage
        if let configuration = AutoencoderKL.Configuration.presets[name] {
            model = try AutoencoderKL(configuration, generator: RandomGenerator(seed: 0))
        } else if let configuration = VQAutoencoder.Configuration.presets[name] {
            model = try VQAutoencoder(configuration, generator: RandomGenerator(seed: 0))
        } else {
            let known = firstStagePresetNames.joined(separator: ", ")
            throw EngineError.file(path: file, message: "unknown autoencoder preset '\(name)' (\(known))")
        }
        try model.load(weights.tensors, source: file)
        return model
    }

    /// The preset names `loadFirstStage(from:)` knows.
    static var firstStagePresetNames: [String] {
        (Array(AutoencoderKL.Configuration.presets.keys) + Array(VQAutoencoder.Configuration.presets.keys)).sorted()
    }

    public var downsamplingFactor: Int { autoencoder.downsamplingFactor }
    public var latentChannels: Int { autoencoder.latentChannels }

    /// Scaled latents of `images` as `posterior` says (a draw from `generator` for `.sample`), evaluated and cut
    /// from the autoencoder's graph: the autoencoder is frozen, and a training step's graph starts at them.
    public func encode(_ images: Tensor, drawingFrom generator: RandomGenerator, on backend: (any Backend)? = nil) throws -> Tensor {
        try encode(images, mode: posterior == .mean ? .mean : .sample(generator), on: backend)
    }

    /// Scaled posterior means of `images` (deterministic: what feature extraction feeds the model).
    public func encodeMean(_ images: Tensor, on backend: (any Backend)? = nil) throws -> Tensor {
        try encode(images, mode: .mean, on: backend)
    }

    /// Scaled posterior means of `images` as a graph, nothing evaluated: for a caller that puts the frozen first
    /// stage inside a larger graph (the features of PathSegDiff's and DTSeg's segmenters).
    public func meanLatents(_ images: Tensor) -> Tensor {
        autoencoder.latents(images, scaleFactor: scaleFactor, mode: .mean)
    }

    private func encode(_ images: Tensor, mode: AutoencoderKL.LatentMode, on backend: (any Backend)?) throws -> Tensor {
        try detached(autoencoder.latents(images, scaleFactor: scaleFactor, mode: mode), on: backend ?? Engine.defaultBackend)
    }

    /// Images from scaled latents.
    public func decode(_ latents: Tensor) -> Tensor { autoencoder.decodeLatents(latents, scaleFactor: scaleFactor) }
}

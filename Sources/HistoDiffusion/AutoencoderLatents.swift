import Foundation
import HistoCore
import HistoNN

extension AutoencoderKL {
    /// Metadata key of saved weights naming their `Configuration.presets` entry.
    public static let presetMetadataKey = "autoencoder.preset"

    /// The weights file of `path`: a `histodiff train-autoencoder` run folder (its latest checkpoint) or a
    /// .safetensors file.
    public static func weightsFile(_ path: String) -> String {
        guard !path.hasSuffix(".safetensors") else { return path }
        return ((path as NSString).appendingPathComponent(TrainingRun.checkpointDirectoryName) as NSString)
            .appendingPathComponent(TrainingCheckpoint.weightsFileName)
    }

    /// The autoencoder saved at `path` (see `weightsFile`), rebuilt from the preset its metadata names.
    public static func load(from path: String) throws -> AutoencoderKL {
        let file = weightsFile(path)
        guard FileManager.default.fileExists(atPath: file) else {
            throw EngineError.file(path: file, message: "no autoencoder weights (expected a `histodiff train-autoencoder` run folder or a .safetensors file)")
        }
        let weights = try SafeTensors.read(file)
        guard let name = weights.metadata[presetMetadataKey] else {
            throw EngineError.file(path: file, message: "no \(presetMetadataKey) metadata naming the autoencoder preset; train it with `histodiff train-autoencoder`")
        }
        guard let configuration = Configuration.presets[name] else {
            throw EngineError.file(path: file, message: "unknown autoencoder preset '\(name)' (\(Configuration.presets.keys.sorted().joined(separator: ", ")))")
        }
        let model = try AutoencoderKL(configuration, generator: RandomGenerator(seed: 0))
        try model.load(weights.tensors, source: file)
        return model
    }

    /// Saves the weights with their preset name in the metadata, so that `load(from:)` can rebuild the network.
    public func saveWithPreset(to path: String) throws {
        guard let name = Configuration.presets.first(where: { $0.value == configuration })?.key else {
            throw EngineError.invalidValue(op: "AutoencoderKL.saveWithPreset", message: "the configuration is none of the presets \(Configuration.presets.keys.sorted())")
        }
        try save(to: path, metadata: [Self.presetMetadataKey: name])
    }
}

/// The frozen first stage of latent diffusion: images [N, C, H, W] in [−1, 1] ↔ diffusion latents
/// scaleFactor·z [N, z, H/f, W/f] (LDM's `get_first_stage_encoding` and `decode_first_stage`).
public struct LatentSpace {
    /// Which latent of an image's posterior the diffusion model trains on.
    public enum Posterior: String, Codable, Sendable, CaseIterable {
        /// A draw, as LDM's `get_first_stage_encoding`.
        case sample
        /// The mean (deterministic).
        case mean
    }

    public let autoencoder: AutoencoderKL
    public let scaleFactor: Float
    public let posterior: Posterior

    public init(autoencoder: AutoencoderKL, scaleFactor: Float, posterior: Posterior) {
        self.autoencoder = autoencoder
        self.scaleFactor = scaleFactor
        self.posterior = posterior
        autoencoder.train(false)
    }

    /// LDM's `scale_by_std`: the scale factor is 1/std of the unscaled latents of `firstBatch` (drawn as
    /// `posterior` says, from `generator` for `.sample`), so that the diffusion model sees latents of unit variance.
    public static func fitted(autoencoder: AutoencoderKL, firstBatch: Tensor, posterior: Posterior,
                              generator: RandomGenerator, on backend: (any Backend)? = nil) throws -> LatentSpace {
        let unscaled = LatentSpace(autoencoder: autoencoder, scaleFactor: 1, posterior: posterior)
        let latents = try unscaled.encode(firstBatch, drawingFrom: generator, on: backend)
        return LatentSpace(autoencoder: autoencoder, scaleFactor: try AutoencoderKL.latentScaleFactor(latents), posterior: posterior)
    }

    public var downsamplingFactor: Int { autoencoder.configuration.downsamplingFactor }
    public var latentChannels: Int { autoencoder.configuration.latentChannels }

    /// Scaled latents of `images` as `posterior` says (a draw from `generator` for `.sample`), evaluated and cut
    /// from the autoencoder's graph: the autoencoder is frozen, and a training step's graph starts at them.
    public func encode(_ images: Tensor, drawingFrom generator: RandomGenerator, on backend: (any Backend)? = nil) throws -> Tensor {
        try encode(images, mode: posterior == .mean ? .mean : .sample(generator), on: backend)
    }

    /// Scaled posterior means of `images` (deterministic: what feature extraction feeds the model).
    public func encodeMean(_ images: Tensor, on backend: (any Backend)? = nil) throws -> Tensor {
        try encode(images, mode: .mean, on: backend)
    }

    private func encode(_ images: Tensor, mode: AutoencoderKL.LatentMode, on backend: (any Backend)?) throws -> Tensor {
        try detached(autoencoder.latents(images, scaleFactor: scaleFactor, mode: mode), on: backend ?? Engine.defaultBackend)
    }

    /// Images from scaled latents.
    public func decode(_ latents: Tensor) -> Tensor { autoencoder.decodeLatents(latents, scaleFactor: scaleFactor) }
}

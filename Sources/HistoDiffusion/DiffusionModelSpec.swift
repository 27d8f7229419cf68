import HistoCore

/// Names a diffusion model (family + preset) so that a run can record it beside its weights and a later command
/// (sampling, fine-tuning, feature extraction) can rebuild the same network.
public struct DiffusionModelSpec: Codable, Equatable, Sendable {
    /// genselfdiff (AttentionUNet), guided (guided-diffusion/LDM UNet).
    public var family: String
    /// cpu, paper, bench828k (guided only).
    public var preset: String

    public static let fileName = "diffusion_model.json"

    public init(family: String, preset: String) { self.family = family; self.preset = preset }

    public func makeModel(generator: RandomGenerator) throws -> any FeatureExtractingModel {
        switch (family, preset) {
        case ("genselfdiff", "cpu"): return try AttentionUNet(.cpu, generator: generator)
        case ("genselfdiff", "paper"): return try AttentionUNet(.genSelfDiff, generator: generator)
        case ("guided", "cpu"): return try GuidedUNet(.cpu, generator: generator)
        case ("guided", "bench828k"): return try GuidedUNet(.bench828k, generator: generator)
        case ("guided", "paper"): return try GuidedUNet(.guidedDiffusion(imageSize: 256), generator: generator)
        default:
            throw EngineError.invalidValue(op: "diffusion model", message:
                "unknown family/preset \(family)/\(preset) (genselfdiff: cpu, paper; guided: cpu, bench828k, paper)")
        }
    }
}

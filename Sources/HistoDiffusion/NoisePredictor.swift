import HistoCore
import HistoNN

/// A denoising network: given noisy images x_t [N, C, H, W] and timesteps t [N] (integer values stored as float,
/// 0-based as in the reference code), predicts what the model was trained to predict (ε, x₀ or v; see
/// `DiffusionTarget`) with the same shape as x_t. `context` carries conditioning tokens [N, M, D] for
/// cross-attention models (nil for unconditional ones).
public protocol NoisePredictor: Module {
    var imageChannels: Int { get }
    func callAsFunction(_ x: Tensor, timesteps: Tensor, context: Tensor?) -> Tensor
}

/// What a diffusion model's output means.
public enum DiffusionTarget: String, Sendable, CaseIterable {
    case epsilon, x0, v
}

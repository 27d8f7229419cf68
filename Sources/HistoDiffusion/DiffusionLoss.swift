import HistoCore

/// Denoising losses (SPEC §0.4, §2).
public enum DiffusionLoss {
    /// How per-sample losses become one number.
    public enum BatchReduction: Sendable {
        /// The batch mean (guided-diffusion / P2, lucidrains).
        case mean
        /// The batch sum (GenSelfDiff's pre-training loss).
        case sum
    }

    /// The "simple" loss: per sample the mean over every axis but the batch axis of (predicted − target)², times
    /// `weights` [N] when given (the P2 weights λ_t), then the mean or the sum over the batch. Ends in a finite check.
    public static func simple(predicted: Tensor, target: Tensor, weights: Tensor? = nil,
                              batchReduction: BatchReduction = .mean) -> Tensor {
        let name = "diffusion_loss"
        if let failed = ([predicted, target] + (weights.map { [$0] } ?? [])).first(where: { $0.node.error != nil }) { return failed }
        guard predicted.shape == target.shape, let n = predicted.shape.first else {
            return .invalid(name, "predicted \(describe(predicted.shape)) and target \(describe(target.shape)) must have one shape [N, …]")
        }
        if let weights, weights.shape != [n] {
            return .invalid(name, "weights \(describe(weights.shape)) must be a vector [\(n)], one per sample of \(describe(predicted.shape))")
        }
        let squared = (predicted - target).square()
        let perSample = predicted.rank == 1 ? squared : squared.mean(axes: Array(1..<predicted.rank))
        let weighted = weights.map { perSample * $0 } ?? perSample
        return (batchReduction == .sum ? weighted.sum() : weighted.mean()).checkedFinite(name)
    }
}

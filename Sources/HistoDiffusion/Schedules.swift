import Foundation
import HistoCore

/// A discrete noise schedule β_0 … β_{T−1} with ᾱ_t = ∏_{s≤t}(1 − β_s) and SNR(t) = ᾱ_t/(1 − ᾱ_t) (SPEC §0.1; t is the
/// 0-based index of the reference code), computed in float64, and the graph helpers that apply it through the fused
/// diffusion ops. The ops read the schedule from `table`, a [3, T] constant made once per schedule (rows ᾱ, 1 − ᾱ, β,
/// each rounded once from float64); it moves to a device the first time a graph on that device uses it.
public struct NoiseSchedule {
    public enum Kind: String, Sendable, CaseIterable {
        /// DDPM linear: β = linspace(1e-4, 0.02, T), both ends scaled by 1000/T as guided-diffusion and lucidrains do.
        case linear
        /// GenSelfDiff's `quadratic_beta_schedule`: β = linspace(√1e-4, √0.02, T)².
        case quadratic
        /// LDM "linear": β = linspace(√0.0015, √0.0195, T)².
        case ldmLinear = "ldm_linear"
        /// Nichol & Dhariwal's cosine: ᾱ(s) = cos²((s + 0.008)/1.008·π/2), β_t = min(1 − ᾱ((t+1)/T)/ᾱ(t/T), 0.999)
        /// (guided-diffusion `betas_for_alpha_bar`).
        case cosine
        /// lucidrains' sigmoid (denoising_diffusion_pytorch 2.0.16, start −3, end 3, τ 1): ᾱ(s) = (σ(3) − σ(6s − 3))/(σ(3) − σ(−3))
        /// on s = 0, 1/T, …, 1, normalised by ᾱ(0); β_t = clip(1 − ᾱ_{t+1}/ᾱ_t, 0, 0.999).
        case sigmoid
    }

    public let betas: [Double]
    public let alphaBars: [Double]
    /// The [3, T] schedule table of the diffusion ops.
    public let table: Tensor

    public var steps: Int { betas.count }
    /// ᾱ_t/(1 − ᾱ_t).
    public var snr: [Double] { alphaBars.map { $0 / (1 - $0) } }

    public init(_ kind: Kind, steps: Int = 1000) { self.init(betas: Self.betas(kind, steps: steps)) }

    /// A schedule from its β (each in (0, 1]).
    public init(betas: [Double]) {
        var product = 1.0
        let alphaBars = betas.map { beta in product *= 1 - beta; return product }
        self.betas = betas
        self.alphaBars = alphaBars
        let rows = alphaBars + alphaBars.map { 1 - $0 } + betas
        table = Tensor(rows.map { Float($0) }, shape: [3, betas.count], label: "schedule")
    }

    /// λ_t = 1/(k + SNR(t))^γ for every t (SPEC §0.4).
    public func p2Weights(k: Double = 1, gamma: Double) -> [Double] { snr.map { 1 / Foundation.pow(k + $0, gamma) } }

    /// numpy.linspace: start + i·step, the last value exactly `end`.
    static func linspace(_ start: Double, _ end: Double, _ count: Int) -> [Double] {
        guard count > 1 else { return count == 1 ? [start] : [] }
        let step = (end - start) / Double(count - 1)
        return (0..<count).map { $0 == count - 1 ? end : start + Double($0) * step }
    }

    static func betas(_ kind: Kind, steps: Int) -> [Double] {
        switch kind {
        case .linear:
            let scale = 1000 / Double(steps)
            return linspace(scale * 0.0001, scale * 0.02, steps)
        case .quadratic:
            return linspace(0.0001.squareRoot(), 0.02.squareRoot(), steps).map { $0 * $0 }
        case .ldmLinear:
            return linspace(0.0015.squareRoot(), 0.0195.squareRoot(), steps).map { $0 * $0 }
        case .cosine:
            func alphaBar(_ s: Double) -> Double { let c = Foundation.cos((s + 0.008) / 1.008 * Double.pi / 2); return c * c }
            return (0..<steps).map { i in
                Swift.min(1 - alphaBar(Double(i + 1) / Double(steps)) / alphaBar(Double(i) / Double(steps)), 0.999)
            }
        case .sigmoid:
            func sigmoid(_ x: Double) -> Double { 1 / (1 + Foundation.exp(-x)) }
            // The reference takes σ(±3) from float32 tensors (torch.tensor(±3.).sigmoid()).
            let low = Double(Float(sigmoid(-3))), high = Double(Float(sigmoid(3)))
            let curve = (0...steps).map { i in (-sigmoid(Double(i) / Double(steps) * 6 - 3) + high) / (high - low) }
            let alphaBars = curve.map { $0 / curve[0] }
            return (0..<steps).map { i in Swift.min(Swift.max(1 - alphaBars[i + 1] / alphaBars[i], 0), 0.999) }
        }
    }

    /// The schedule restricted to `timesteps` (increasing, in 0..<steps), as guided-diffusion's `SpacedDiffusion` builds
    /// it: ᾱ at the kept steps, β_i = 1 − ᾱ_{t_i}/ᾱ_{t_{i−1}}. A strided sampler steps through its rows.
    public func respaced(keeping timesteps: [Int]) throws -> NoiseSchedule {
        guard !timesteps.isEmpty, zip(timesteps, timesteps.dropFirst()).allSatisfy({ $0 < $1 }),
              let first = timesteps.first, let last = timesteps.last, first >= 0, last < steps else {
            throw EngineError.invalidOp(op: "respaced", message: "the kept timesteps must be non-empty, increasing and in "
                + "0..<\(steps); got \(timesteps.count) from \(timesteps.min() ?? 0) to \(timesteps.max() ?? 0)")
        }
        var previous = 1.0
        return NoiseSchedule(betas: timesteps.map { t in
            defer { previous = alphaBars[t] }
            return 1 - alphaBars[t] / previous
        })
    }

    // MARK: graph helpers (timesteps t [N] hold 0-based steps; samples are [N, …])

    /// x_t = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε.
    public func qSample(x0: Tensor, noise: Tensor, t: Tensor) -> Tensor {
        DiffusionOps.convert(.qSample, x0, noise, table: table, timesteps: t)
    }

    /// The P2 weight λ_t = 1/(k + SNR(t))^γ per sample, a vector [N] (no gradient).
    public func p2Weight(t: Tensor, k: Float = 1, gamma: Float) -> Tensor {
        DiffusionOps.coefficient(.p2Weight(k: k, gamma: gamma), table: table, timesteps: t)
    }

    /// x̂₀ from x_t and a model output of kind `target`.
    public func predictX0(xt: Tensor, output: Tensor, t: Tensor, target: DiffusionTarget) -> Tensor {
        switch target {
        case .epsilon: return DiffusionOps.convert(.x0FromEpsilon, xt, output, table: table, timesteps: t)
        case .x0: return output
        case .v: return DiffusionOps.convert(.x0FromVelocity, xt, output, table: table, timesteps: t)
        }
    }

    /// ε̂ from x_t and a model output of kind `target` (with `.x0`, the noise that takes x₀ to x_t).
    public func epsilon(xt: Tensor, output: Tensor, t: Tensor, target: DiffusionTarget) -> Tensor {
        switch target {
        case .epsilon: return output
        case .x0: return DiffusionOps.convert(.epsilonFromX0, xt, output, table: table, timesteps: t)
        case .v: return DiffusionOps.convert(.epsilonFromVelocity, xt, output, table: table, timesteps: t)
        }
    }

    /// v = √ᾱ_t·ε − √(1 − ᾱ_t)·x₀, the v-prediction target.
    public func velocityTarget(x0: Tensor, noise: Tensor, t: Tensor) -> Tensor {
        DiffusionOps.convert(.velocity, x0, noise, table: table, timesteps: t)
    }

    /// What a model trained for `target` should output for x_t = qSample(x0, noise, t).
    public func trainingTarget(_ target: DiffusionTarget, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor {
        switch target {
        case .epsilon: return noise
        case .x0: return x0
        case .v: return velocityTarget(x0: x0, noise: noise, t: t)
        }
    }
}

/// Which timesteps a strided sampler keeps (guided-diffusion `space_timesteps` with one section).
public enum TimestepSpacing: String, Sendable, CaseIterable {
    /// "ddimN": range(0, T, k) for the smallest stride k that gives exactly N steps (the DDIM paper's uniform
    /// skip when N divides T); an error when no stride does.
    case ddim
    /// "N": N steps at an even fractional stride (T − 1)/(N − 1), rounded half to even, 0 and T − 1 included.
    case even

    /// The kept timesteps, increasing.
    public func timesteps(_ count: Int, of steps: Int) throws -> [Int] {
        func fail(_ why: String) -> EngineError {
            .invalidOp(op: "space_timesteps", message: "cannot keep \(count) of \(steps) steps with \(rawValue) spacing: \(why)")
        }
        guard count >= 1, count <= steps else { throw fail("the count must be in 1...\(steps)") }
        if count == steps { return Array(0..<steps) }
        switch self {
        case .ddim:
            guard let stride = (1..<steps).first(where: { (steps + $0 - 1) / $0 == count }) else {
                throw fail("no integer stride gives exactly \(count) steps")
            }
            return Array(Swift.stride(from: 0, to: steps, by: stride))
        case .even:
            let fraction = count > 1 ? Double(steps - 1) / Double(count - 1) : 1
            var position = 0.0, kept: [Int] = []
            for _ in 0..<count {
                kept.append(Int(position.rounded(.toNearestOrEven)))
                position += fraction
            }
            return kept
        }
    }
}

extension DiffusionTarget {
    /// The fused ops' name for this kind of model output.
    var denoiserOutput: DenoiserOutput {
        switch self {
        case .epsilon: return .epsilon
        case .x0: return .x0
        case .v: return .v
        }
    }
}

import Foundation

// Diffusion: the fused ops of DDPM/DDIM training and sampling (SPEC §0). Per-sample coefficients are gathered from a
// schedule table by the timesteps inside each op (on the device, not through a host lookup):
// - `diffusion.<conversion>`: q_sample and the x₀ / ε / v conversions, y = c_a(t)·a + c_b(t)·b (with VJPs);
// - `diffusion.scale`: y = ±c(t)·x, the VJP of the conversions;
// - `diffusion.coefficient`: c(t) per sample as a vector [N] (the P2 weight among them);
// - `diffusion.ddpm_step` / `diffusion.ddim_step`: one ancestral / DDIM sampling step (forward only);
// - `diffusion.timestep_embedding`: the sinusoidal embedding of SPEC §0.2 in both conventions (forward only).
//
// The schedule table is a [3, T] tensor with rows ᾱ_t, 1 − ᾱ_t and β_t = 1 − ᾱ_t/ᾱ_{t−1}, each computed in float64 and
// rounded once (1 − ᾱ formed in float32 would lose most digits of the small noise levels near t = 0, and β of the
// ratio). Timesteps t [N] are 0-based rows of it, floats holding integers; every op that reads the table is a
// `ValidatingOperation`, so a timestep outside 0..<T is an `EngineError.invalidValue` at `eval`, naming the sample.

/// The index a timestep value stands for, or nil when it is not an integer in 0..<steps.
@inline(__always) func timestepIndex(_ v: Float, steps: Int) -> Int? { indexValue(v, below: steps) }

/// nil when every timestep is an integer in 0..<steps, else which one is not.
func badTimestepMessage(_ t: UnsafeBufferPointer<Float>, steps: Int) -> String? {
    guard let bad = t.firstIndex(where: { timestepIndex($0, steps: steps) == nil }) else { return nil }
    return "timestep \(t[bad]) of sample \(bad) (of \(t.count)) is not an integer in 0..<\(steps), the schedule table's steps"
}

/// Checks a [3, T] schedule table and timesteps [N] against samples of shape [N, …] (nil: no samples); returns T.
func checkSchedule(table: [Int], timesteps: [Int], samples: [Int]?) throws(ShapeError) -> Int {
    guard table.count == 2, table[0] == 3 else {
        throw ShapeError("the schedule table must be [3, T] (rows ᾱ, 1 − ᾱ, β), got \(describe(table))")
    }
    guard timesteps.count == 1 else { throw ShapeError("timesteps must be a vector [N], got \(describe(timesteps))") }
    if let samples, samples.first != timesteps[0] {
        throw ShapeError("timesteps \(describe(timesteps)) must have one entry per sample of \(describe(samples))")
    }
    return table[1]
}

/// A per-sample coefficient c(t) of the schedule, from a = ᾱ_t and b = 1 − ᾱ_t.
public enum ScheduleCoefficient: Equatable, Sendable {
    /// √ᾱ
    case sqrtAlphaBar
    /// √(1 − ᾱ)
    case sqrtOneMinusAlphaBar
    /// 1/√ᾱ
    case recipSqrtAlphaBar
    /// √(1/ᾱ − 1), formed as √((1 − ᾱ)/ᾱ)
    case sqrtRecipAlphaBarMinusOne
    /// 1/√(1 − ᾱ)
    case recipSqrtOneMinusAlphaBar
    /// √SNR = √(ᾱ/(1 − ᾱ))
    case sqrtSNR
    /// The P2 weight λ_t = 1/(k + SNR)^γ with SNR = ᾱ/(1 − ᾱ) (Choi et al.; SPEC §0.4).
    case p2Weight(k: Float, gamma: Float)

    @inline(__always) func value(alphaBar a: Float, oneMinusAlphaBar b: Float) -> Float {
        switch self {
        case .sqrtAlphaBar: return a.squareRoot()
        case .sqrtOneMinusAlphaBar: return b.squareRoot()
        case .recipSqrtAlphaBar: return 1 / a.squareRoot()
        case .sqrtRecipAlphaBarMinusOne: return (b / a).squareRoot()
        case .recipSqrtOneMinusAlphaBar: return 1 / b.squareRoot()
        case .sqrtSNR: return (a / b).squareRoot()
        case let .p2Weight(k, gamma): return Foundation.pow(k + a / b, -gamma)
        }
    }

    /// The kernel's code (`schedule_coefficient` in Kernels/diffusion.cl) and its two parameters.
    var kernelArguments: [KernelArgument] {
        let (code, k, gamma): (Int32, Float, Float)
        switch self {
        case .sqrtAlphaBar: (code, k, gamma) = (0, 0, 0)
        case .sqrtOneMinusAlphaBar: (code, k, gamma) = (1, 0, 0)
        case .recipSqrtAlphaBar: (code, k, gamma) = (2, 0, 0)
        case .sqrtRecipAlphaBarMinusOne: (code, k, gamma) = (3, 0, 0)
        case .recipSqrtOneMinusAlphaBar: (code, k, gamma) = (4, 0, 0)
        case .sqrtSNR: (code, k, gamma) = (5, 0, 0)
        case let .p2Weight(pk, pg): (code, k, gamma) = (6, pk, pg)
        }
        return [.int(code), .float(k), .float(gamma)]
    }
}

/// ±c(t): one term of a conversion.
public struct ScheduleTerm: Equatable, Sendable {
    public let coefficient: ScheduleCoefficient
    public let negated: Bool
    public init(_ coefficient: ScheduleCoefficient, negated: Bool = false) { self.coefficient = coefficient; self.negated = negated }

    @inline(__always) func value(alphaBar a: Float, oneMinusAlphaBar b: Float) -> Float {
        let c = coefficient.value(alphaBar: a, oneMinusAlphaBar: b)
        return negated ? -c : c
    }
    var kernelArguments: [KernelArgument] { coefficient.kernelArguments + [.float(negated ? -1 : 1)] }
}

/// The per-sample affine maps of diffusion, y = c_a(t)·a + c_b(t)·b, named by what they compute from (a, b).
public enum DiffusionConversion: String, CaseIterable, Sendable {
    /// (x₀, ε) → x_t = √ᾱ·x₀ + √(1 − ᾱ)·ε (the forward process).
    case qSample = "q_sample"
    /// (x_t, ε̂) → x̂₀ = x_t/√ᾱ − √(1/ᾱ − 1)·ε̂.
    case x0FromEpsilon = "x0_from_epsilon"
    /// (x_t, x₀) → ε = x_t/√(1 − ᾱ) − √SNR·x₀, i.e. (x_t − √ᾱ·x₀)/√(1 − ᾱ).
    case epsilonFromX0 = "epsilon_from_x0"
    /// (x₀, ε) → v = √ᾱ·ε − √(1 − ᾱ)·x₀ (the v-prediction target).
    case velocity
    /// (x_t, v̂) → x̂₀ = √ᾱ·x_t − √(1 − ᾱ)·v̂.
    case x0FromVelocity = "x0_from_velocity"
    /// (x_t, v̂) → ε̂ = √(1 − ᾱ)·x_t + √ᾱ·v̂.
    case epsilonFromVelocity = "epsilon_from_velocity"

    public var terms: (ScheduleTerm, ScheduleTerm) {
        switch self {
        case .qSample: return (ScheduleTerm(.sqrtAlphaBar), ScheduleTerm(.sqrtOneMinusAlphaBar))
        case .x0FromEpsilon: return (ScheduleTerm(.recipSqrtAlphaBar), ScheduleTerm(.sqrtRecipAlphaBarMinusOne, negated: true))
        case .epsilonFromX0: return (ScheduleTerm(.recipSqrtOneMinusAlphaBar), ScheduleTerm(.sqrtSNR, negated: true))
        case .velocity: return (ScheduleTerm(.sqrtOneMinusAlphaBar, negated: true), ScheduleTerm(.sqrtAlphaBar))
        case .x0FromVelocity: return (ScheduleTerm(.sqrtAlphaBar), ScheduleTerm(.sqrtOneMinusAlphaBar, negated: true))
        case .epsilonFromVelocity: return (ScheduleTerm(.sqrtOneMinusAlphaBar), ScheduleTerm(.sqrtAlphaBar))
        }
    }
}

/// What a denoising model's output is (HistoDiffusion's `DiffusionTarget` maps onto this).
public enum DenoiserOutput: Int32, Sendable {
    case epsilon, x0, v

    /// The per-sample coefficients of x̂₀ = p·x_t + q·output.
    @inline(__always) func x0Coefficients(alphaBar a: Float, oneMinusAlphaBar b: Float) -> (Float, Float) {
        switch self {
        case .epsilon: return (1 / a.squareRoot(), -(b / a).squareRoot())
        case .x0: return (0, 1)
        case .v: return (a.squareRoot(), -b.squareRoot())
        }
    }
}

/// The variance of a DDPM ancestral step.
public enum DDPMVariance: Int32, Sendable {
    /// The posterior variance β̃_t = β_t(1 − ᾱ_{t−1})/(1 − ᾱ_t) (DDPM "fixed small"; LDM, lucidrains, GenSelfDiff).
    case posterior
    /// β_t (DDPM "fixed large"; guided-diffusion's default without learned σ).
    case beta
}

/// The schedule rows a sample at table row `s` uses: ᾱ, 1 − ᾱ, β at s and ᾱ, 1 − ᾱ at s − 1 (1 and 0 before the
/// first row).
struct ScheduleRow {
    let a: Float, b: Float, beta: Float, aPrev: Float, bPrev: Float
    init(_ table: UnsafeBufferPointer<Float>, steps: Int, row s: Int) {
        a = table[s]; b = table[steps + s]; beta = table[2 * steps + s]
        aPrev = s > 0 ? table[s - 1] : 1
        bPrev = s > 0 ? table[steps + s - 1] : 0
    }
}

/// Runs `body(sample row or nil when its timestep is invalid, element range of that sample)` for every sample of an
/// [N, …] output, in parallel.
func forEachSample(_ t: UnsafeBufferPointer<Float>, steps: Int, count: Int, _ body: (Int?, Range<Int>) -> Void) {
    let n = t.count, inner = n == 0 ? 0 : count / n
    parallelFor(n, grain: Swift.max(1, 4096 / Swift.max(inner, 1))) { samples in
        for i in samples { body(timestepIndex(t[i], steps: steps), i * inner ..< (i + 1) * inner) }
    }
}

/// y = c_a(t)·a + c_b(t)·b per sample (see `DiffusionConversion`). Inputs: a, b [N, …], table [3, T], t [N].
public struct ScheduleConversion: Operation {
    public let conversion: DiffusionConversion
    public init(_ conversion: DiffusionConversion) { self.conversion = conversion }
    public var name: String { "diffusion.\(conversion.rawValue)" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        guard inputs[0] == inputs[1] else {
            throw ShapeError("the two operands must have one shape, got \(describe(inputs[0])) and \(describe(inputs[1]))")
        }
        _ = try checkSchedule(table: inputs[2], timesteps: inputs[3], samples: inputs[0])
        return inputs[0]
    }
    public func cpuForward(_ args: CPUArgs) {
        let x = args.inputs[0], w = args.inputs[1], table = args.inputs[2], y = args.output
        let steps = args.inputShapes[2][1], (ta, tb) = conversion.terms
        forEachSample(args.inputs[3], steps: steps, count: y.count) { s, range in
            guard let s else { for i in range { y[i] = .nan }; return }
            let a = table[s], b = table[steps + s]
            let ca = ta.value(alphaBar: a, oneMinusAlphaBar: b), cb = tb.value(alphaBar: a, oneMinusAlphaBar: b)
            for i in range { y[i] = ca * x[i] + cb * w[i] }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] {
        let (ta, tb) = conversion.terms, table = ctx.inputs[2], t = ctx.inputs[3], dy = ctx.cotangent
        return [.record(ScheduleScale(ta), [dy, table, t]), .record(ScheduleScale(tb), [dy, table, t]), nil, nil]
    }
}

/// y = ±c(t)·x per sample. Inputs: x [N, …], table [3, T], t [N]. Linear in x, so it is its own VJP.
public struct ScheduleScale: Operation {
    public let term: ScheduleTerm
    public init(_ term: ScheduleTerm) { self.term = term }
    public var name: String { "diffusion.scale" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        _ = try checkSchedule(table: inputs[1], timesteps: inputs[2], samples: inputs[0])
        return inputs[0]
    }
    public func cpuForward(_ args: CPUArgs) {
        let x = args.inputs[0], table = args.inputs[1], y = args.output, steps = args.inputShapes[1][1], term = term
        forEachSample(args.inputs[2], steps: steps, count: y.count) { s, range in
            guard let s else { for i in range { y[i] = .nan }; return }
            let c = term.value(alphaBar: table[s], oneMinusAlphaBar: table[steps + s])
            for i in range { y[i] = c * x[i] }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] {
        [.record(ScheduleScale(term), [ctx.cotangent, ctx.inputs[1], ctx.inputs[2]]), nil, nil]
    }
}

/// c(t) per sample as a vector [N]. Inputs: table [3, T], t [N]. No gradient (schedule constants).
public struct ScheduleGather: Operation {
    public let coefficient: ScheduleCoefficient
    public init(_ coefficient: ScheduleCoefficient) { self.coefficient = coefficient }
    public var name: String { "diffusion.coefficient" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        _ = try checkSchedule(table: inputs[0], timesteps: inputs[1], samples: nil)
        return inputs[1]
    }
    public func cpuForward(_ args: CPUArgs) {
        let table = args.inputs[0], t = args.inputs[1], y = args.output, steps = args.inputShapes[0][1]
        for i in 0..<t.count {
            y[i] = timestepIndex(t[i], steps: steps).map {
                coefficient.value(alphaBar: table[$0], oneMinusAlphaBar: table[steps + $0])
            } ?? .nan
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] { noGradient(ctx) }
}

/// Checks x_t, the model output and (when present) the noise of a sampling step; returns the sample shape.
func checkStep(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
    let x = inputs[0]
    guard inputs[1] == x, inputs.count < 5 || inputs[4] == x else {
        throw ShapeError("x_t \(describe(x)), the model output \(describe(inputs[1]))"
            + (inputs.count == 5 ? " and the noise \(describe(inputs[4]))" : "") + " must have one shape")
    }
    _ = try checkSchedule(table: inputs[2], timesteps: inputs[3], samples: x)
    return x
}

/// One DDPM ancestral step x_t → x_{t−1} (Ho et al.; guided-diffusion `p_sample`), forward only:
/// x̂₀ from the model output (clamped to [−1, 1] when `clip`), the posterior mean
/// μ = β_t√ᾱ_{t−1}/(1 − ᾱ_t)·x̂₀ + (1 − ᾱ_{t−1})√(1 − β_t)/(1 − ᾱ_t)·x_t, plus σ_t·z except at t = 0.
/// Inputs: x_t, model output, table [3, T], t [N], noise z (all samples [N, …]).
public struct DDPMStep: Operation {
    public let prediction: DenoiserOutput
    public let clip: Bool
    public let variance: DDPMVariance
    public init(prediction: DenoiserOutput, clip: Bool, variance: DDPMVariance) {
        self.prediction = prediction; self.clip = clip; self.variance = variance
    }
    public var name: String { "diffusion.ddpm_step" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        guard inputs.count == 5 else { throw ShapeError("needs x_t, the model output, the table, t and the noise") }
        return try checkStep(inputs)
    }
    public func cpuForward(_ args: CPUArgs) {
        let xt = args.inputs[0], out = args.inputs[1], table = args.inputs[2], z = args.inputs[4], y = args.output
        let steps = args.inputShapes[2][1]
        forEachSample(args.inputs[3], steps: steps, count: y.count) { s, range in
            guard let s else { for i in range { y[i] = .nan }; return }
            let r = ScheduleRow(table, steps: steps, row: s)
            let (p, q) = prediction.x0Coefficients(alphaBar: r.a, oneMinusAlphaBar: r.b)
            let meanX0 = r.beta * r.aPrev.squareRoot() / r.b, meanXt = r.bPrev * (1 - r.beta).squareRoot() / r.b
            let sigma = s == 0 ? 0 : (variance == .posterior ? r.beta * r.bPrev / r.b : r.beta).squareRoot()
            for i in range {
                var x0 = p * xt[i] + q * out[i]
                if clip { x0 = Swift.min(Swift.max(x0, -1), 1) }
                y[i] = meanX0 * x0 + meanXt * xt[i] + sigma * z[i]
            }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] { noGradient(ctx) }
}

/// One DDIM step x_t → x_{t−1} (Song et al.; guided-diffusion `ddim_sample`), forward only: x̂₀ from the model output
/// (clamped when `clip`), ε̂ re-derived from x̂₀ unless the output is an unclamped ε̂,
/// σ = η·√((1 − ᾱ_{t−1})/(1 − ᾱ_t))·√β_t (β_t = 1 − ᾱ_t/ᾱ_{t−1}, the table's row 2), and
/// x_{t−1} = √ᾱ_{t−1}·x̂₀ + √(1 − ᾱ_{t−1} − σ²)·ε̂ + σ·z. Inputs: x_t, model output, table [3, T], t [N], and the
/// noise z when η ≠ 0. "t − 1" is the previous table row: a strided sampler passes a table of its kept steps.
public struct DDIMStep: Operation {
    public let prediction: DenoiserOutput
    public let clip: Bool
    public let eta: Float
    public init(prediction: DenoiserOutput, clip: Bool, eta: Float) { self.prediction = prediction; self.clip = clip; self.eta = eta }
    public var name: String { "diffusion.ddim_step" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        guard eta >= 0 else { throw ShapeError("η = \(eta) must be non-negative") }
        guard inputs.count == (eta == 0 ? 4 : 5) else {
            throw ShapeError("needs x_t, the model output, the table, t" + (eta == 0 ? " and no noise (η = 0)" : " and the noise (η = \(eta))"))
        }
        return try checkStep(inputs)
    }
    public func cpuForward(_ args: CPUArgs) {
        let xt = args.inputs[0], out = args.inputs[1], table = args.inputs[2], y = args.output
        let z = args.inputs.count == 5 ? args.inputs[4] : nil, steps = args.inputShapes[2][1]
        let outputIsEpsilon = prediction == .epsilon && !clip
        forEachSample(args.inputs[3], steps: steps, count: y.count) { s, range in
            guard let s else { for i in range { y[i] = .nan }; return }
            let r = ScheduleRow(table, steps: steps, row: s)
            let (p, q) = prediction.x0Coefficients(alphaBar: r.a, oneMinusAlphaBar: r.b)
            let epsXt = 1 / r.b.squareRoot(), epsX0 = -(r.a / r.b).squareRoot()
            let sigma = eta * (r.bPrev / r.b).squareRoot() * r.beta.squareRoot()
            let direction = Swift.max(r.bPrev - sigma * sigma, 0).squareRoot(), meanX0 = r.aPrev.squareRoot()
            for i in range {
                var x0 = p * xt[i] + q * out[i]
                if clip { x0 = Swift.min(Swift.max(x0, -1), 1) }
                let eps = outputIsEpsilon ? out[i] : epsXt * xt[i] + epsX0 * x0
                let mean = meanX0 * x0 + direction * eps
                y[i] = z.map { mean + sigma * $0[i] } ?? mean
            }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] { noGradient(ctx) }
}

extension ScheduleConversion: ValidatingOperation {
    public func validate(_ inputs: [UnsafeBufferPointer<Float>], shapes: [[Int]]) -> String? {
        badTimestepMessage(inputs[3], steps: shapes[2][1])
    }
}

extension ScheduleScale: ValidatingOperation {
    public func validate(_ inputs: [UnsafeBufferPointer<Float>], shapes: [[Int]]) -> String? {
        badTimestepMessage(inputs[2], steps: shapes[1][1])
    }
}

extension ScheduleGather: ValidatingOperation {
    public func validate(_ inputs: [UnsafeBufferPointer<Float>], shapes: [[Int]]) -> String? {
        badTimestepMessage(inputs[1], steps: shapes[0][1])
    }
}

extension DDPMStep: ValidatingOperation {
    public func validate(_ inputs: [UnsafeBufferPointer<Float>], shapes: [[Int]]) -> String? {
        badTimestepMessage(inputs[3], steps: shapes[2][1])
    }
}

extension DDIMStep: ValidatingOperation {
    public func validate(_ inputs: [UnsafeBufferPointer<Float>], shapes: [[Int]]) -> String? {
        badTimestepMessage(inputs[3], steps: shapes[2][1])
    }
}

/// The sinusoidal timestep embedding t [N] → [N, dimension] of SPEC §0.2 from precomputed frequencies f [half]
/// (`frequencies(...)`, in float32 as both references compute them): guided-diffusion puts [cos(t·f), sin(t·f)]
/// (an odd dimension gets a zero last column), lucidrains [sin(t·f), cos(t·f)]. t may be fractional. Forward only.
public struct TimestepEmbedding: Operation {
    public enum Convention: String, Sendable {
        /// guided-diffusion / LDM `timestep_embedding`: half = ⌊d/2⌋, f_i = exp(−ln(P)·i/half), cos first; d ≥ 2.
        case guidedDiffusion = "guided_diffusion"
        /// lucidrains / annotated-diffusion `SinusoidalPositionEmbeddings`: f_i = exp(−ln(P)·i/(half − 1)), sin
        /// first; d even and at least 4.
        case lucidrains
    }
    public let dimension: Int
    public let convention: Convention
    public init(dimension: Int, convention: Convention) { self.dimension = dimension; self.convention = convention }
    public var name: String { "diffusion.timestep_embedding" }

    /// f_i for i in 0..<⌊dimension/2⌋, with the float32 arithmetic of the references.
    public static func frequencies(dimension: Int, convention: Convention, maxPeriod: Float = 10000) -> [Float] {
        let half = Swift.max(dimension / 2, 0), logPeriod = Foundation.log(Double(maxPeriod))
        return (0..<half).map { i in
            switch convention {
            case .guidedDiffusion: return Foundation.exp(Float(-logPeriod) * Float(i) / Float(half))
            case .lucidrains: return Foundation.exp(Float(i) * Float(-logPeriod / Double(half - 1)))
            }
        }
    }

    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        switch convention {
        case .guidedDiffusion:
            guard dimension >= 2 else { throw ShapeError("dimension \(dimension) is below 2") }
        case .lucidrains:
            guard dimension % 2 == 0, dimension >= 4 else {
                throw ShapeError("the lucidrains convention needs an even dimension of at least 4, got \(dimension)")
            }
        }
        guard inputs[0].count == 1 else { throw ShapeError("timesteps must have shape [N], got \(describe(inputs[0]))") }
        guard inputs[1] == [dimension / 2] else {
            throw ShapeError("frequencies must have shape [\(dimension / 2)] for dimension \(dimension), got \(describe(inputs[1]))")
        }
        return [inputs[0][0], dimension]
    }
    public func cpuForward(_ args: CPUArgs) {
        let t = args.inputs[0], f = args.inputs[1], y = args.output, d = dimension, half = d / 2
        let sinFirst = convention == .lucidrains
        parallelFor(t.count, grain: Swift.max(1, 4096 / d)) { rows in
            for n in rows {
                for j in 0..<half {
                    let angle = t[n] * f[j], s = Foundation.sin(angle), c = Foundation.cos(angle)
                    y[n * d + j] = sinFirst ? s : c
                    y[n * d + half + j] = sinFirst ? c : s
                }
                if d % 2 == 1 { y[n * d + d - 1] = 0 }
            }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] { noGradient(ctx) }
}

/// The diffusion ops' public entry points (HistoDiffusion's `NoiseSchedule` wraps them with its table).
public enum DiffusionOps {
    /// One of the per-sample conversions on samples [N, …] with timesteps t [N] into the [3, T] `table`.
    public static func convert(_ conversion: DiffusionConversion, _ a: Tensor, _ b: Tensor, table: Tensor, timesteps: Tensor) -> Tensor {
        .record(ScheduleConversion(conversion), [a, b, table, timesteps])
    }

    /// c(t) per sample, a vector [N] (no gradient).
    public static func coefficient(_ coefficient: ScheduleCoefficient, table: Tensor, timesteps: Tensor) -> Tensor {
        .record(ScheduleGather(coefficient), [table, timesteps])
    }

    /// One DDPM ancestral step (see `DDPMStep`); `noise` is used at every t > 0.
    public static func ddpmStep(xt: Tensor, output: Tensor, noise: Tensor, table: Tensor, timesteps: Tensor,
                                prediction: DenoiserOutput, clip: Bool, variance: DDPMVariance = .posterior) -> Tensor {
        .record(DDPMStep(prediction: prediction, clip: clip, variance: variance), [xt, output, table, timesteps, noise])
    }

    /// One DDIM step (see `DDIMStep`); `noise` must be given exactly when η ≠ 0.
    public static func ddimStep(xt: Tensor, output: Tensor, noise: Tensor?, table: Tensor, timesteps: Tensor,
                                prediction: DenoiserOutput, clip: Bool, eta: Float) -> Tensor {
        .record(DDIMStep(prediction: prediction, clip: clip, eta: eta), [xt, output, table, timesteps] + (noise.map { [$0] } ?? []))
    }
}

extension Tensor {
    /// The sinusoidal embedding [N, dimension] of these timesteps [N] with `frequencies` [⌊dimension/2⌋] from
    /// `TimestepEmbedding.frequencies` (a layer keeps them as a constant).
    public func timestepEmbedding(dimension: Int, convention: TimestepEmbedding.Convention, frequencies: Tensor) -> Tensor {
        .record(TimestepEmbedding(dimension: dimension, convention: convention), [self, frequencies])
    }

    /// The same with the frequencies made here (period 10000 unless given).
    public func timestepEmbedding(dimension: Int, convention: TimestepEmbedding.Convention, maxPeriod: Float = 10000) -> Tensor {
        let f = TimestepEmbedding.frequencies(dimension: dimension, convention: convention, maxPeriod: maxPeriod)
        return timestepEmbedding(dimension: dimension, convention: convention, frequencies: Tensor(f, shape: [f.count]))
    }
}

extension HarnessCatalog {
    /// A 10-step schedule table [3, 10] with β = linspace(0.02, 0.4) (coarse, so that every coefficient is of order 1).
    static var diffusionTable: HarnessCase.Input {
        let steps = 10
        let betas = (0..<steps).map { 0.02 + Double($0) * (0.4 - 0.02) / Double(steps - 1) }
        var alphaBars: [Double] = [], product = 1.0
        for beta in betas { product *= 1 - beta; alphaBars.append(product) }
        return .values((alphaBars + alphaBars.map { 1 - $0 } + betas).map { Float($0) }, [3, steps])
    }

    static var diffusion: [HarnessCase] {
        let table = diffusionTable, t = HarnessCase.Input.integers([3], 0, 10)
        // Sampling steps at the last row, a middle one and row 0 (no noise, previous ᾱ = 1).
        let stepTimes = HarnessCase.Input.values([9, 4, 0], [3])
        let x = HarnessCase.Input.normal([3, 2, 3, 4])
        var cases = DiffusionConversion.allCases.map { conversion in
            HarnessCase("diffusion.\(conversion.rawValue)", [x, x, table, t], frozen: [2]) {
                DiffusionOps.convert(conversion, $0[0], $0[1], table: $0[2], timesteps: $0[3])
            }
        }
        cases += [
            HarnessCase("diffusion.q_sample.vectors", [.normal([4, 5]), .normal([4, 5]), table, .integers([4], 0, 10)], frozen: [2]) {
                DiffusionOps.convert(.qSample, $0[0], $0[1], table: $0[2], timesteps: $0[3])
            },
            HarnessCase("diffusion.coefficient.p2", [table, .integers([5], 0, 10)], frozen: [0]) {
                DiffusionOps.coefficient(.p2Weight(k: 1, gamma: 1), table: $0[0], timesteps: $0[1])
            },
            HarnessCase("diffusion.coefficient.p2_half", [table, .integers([5], 0, 10)], frozen: [0]) {
                DiffusionOps.coefficient(.p2Weight(k: 0.5, gamma: 0.5), table: $0[0], timesteps: $0[1])
            },
            HarnessCase("diffusion.coefficient.sqrt_snr", [table, .integers([5], 0, 10)], frozen: [0]) {
                DiffusionOps.coefficient(.sqrtSNR, table: $0[0], timesteps: $0[1])
            },
            HarnessCase("diffusion.ddpm_step.epsilon", [x, x, table, stepTimes, x], frozen: [0, 1, 2, 3, 4]) {
                DiffusionOps.ddpmStep(xt: $0[0], output: $0[1], noise: $0[4], table: $0[2], timesteps: $0[3], prediction: .epsilon, clip: true)
            },
            HarnessCase("diffusion.ddpm_step.x0_beta", [x, x, table, stepTimes, x], frozen: [0, 1, 2, 3, 4]) {
                DiffusionOps.ddpmStep(xt: $0[0], output: $0[1], noise: $0[4], table: $0[2], timesteps: $0[3], prediction: .x0,
                                      clip: false, variance: .beta)
            },
            HarnessCase("diffusion.ddpm_step.v", [x, x, table, stepTimes, x], frozen: [0, 1, 2, 3, 4]) {
                DiffusionOps.ddpmStep(xt: $0[0], output: $0[1], noise: $0[4], table: $0[2], timesteps: $0[3], prediction: .v, clip: false)
            },
            HarnessCase("diffusion.ddim_step.deterministic", [x, x, table, stepTimes], frozen: [0, 1, 2, 3]) {
                DiffusionOps.ddimStep(xt: $0[0], output: $0[1], noise: nil, table: $0[2], timesteps: $0[3], prediction: .epsilon,
                                      clip: false, eta: 0)
            },
            HarnessCase("diffusion.ddim_step.clipped", [x, x, table, stepTimes], frozen: [0, 1, 2, 3]) {
                DiffusionOps.ddimStep(xt: $0[0], output: $0[1], noise: nil, table: $0[2], timesteps: $0[3], prediction: .epsilon,
                                      clip: true, eta: 0)
            },
            HarnessCase("diffusion.ddim_step.eta_x0", [x, x, table, stepTimes, x], frozen: [0, 1, 2, 3, 4]) {
                DiffusionOps.ddimStep(xt: $0[0], output: $0[1], noise: $0[4], table: $0[2], timesteps: $0[3], prediction: .x0,
                                      clip: true, eta: 0.5)
            },
            HarnessCase("diffusion.ddim_step.eta_v", [x, x, table, stepTimes, x], frozen: [0, 1, 2, 3, 4]) {
                DiffusionOps.ddimStep(xt: $0[0], output: $0[1], noise: $0[4], table: $0[2], timesteps: $0[3], prediction: .v,
                                      clip: false, eta: 1)
            },
        ]
        for (suffix, dimension, convention) in [("guided", 8, TimestepEmbedding.Convention.guidedDiffusion),
                                                ("guided_odd", 7, .guidedDiffusion), ("lucidrains", 8, .lucidrains)] {
            let f = TimestepEmbedding.frequencies(dimension: dimension, convention: convention)
            cases.append(HarnessCase("diffusion.timestep_embedding.\(suffix)", [.integers([5], 0, 1000), .values(f, [f.count])],
                                     frozen: [1]) {
                $0[0].timestepEmbedding(dimension: dimension, convention: convention, frequencies: $0[1])
            })
        }
        return cases
    }
}

// MARK: device launches (Kernels/diffusion.cl)

/// Arguments shared by the per-sample kernels: the table and timesteps, T, and the elements per sample.
func scheduleArguments(table: Int, timesteps: Int, shapes: [[Int]], count: Int) -> [KernelArgument] {
    let samples = shapes[timesteps][0]
    return [.input(table), .input(timesteps), .int(Int32(shapes[table][1])), .int(Int32(samples == 0 ? 0 : count / samples))]
}

extension ScheduleConversion: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let count = Shape.count(outputShape), (ta, tb) = conversion.terms
        return [elementwiseLaunch("diffusion", "schedule_convert", [.input(0), .input(1), .output]
            + scheduleArguments(table: 2, timesteps: 3, shapes: inputShapes, count: count)
            + ta.kernelArguments + tb.kernelArguments, count: count)]
    }
}

extension ScheduleScale: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let count = Shape.count(outputShape)
        return [elementwiseLaunch("diffusion", "schedule_scale", [.input(0), .output]
            + scheduleArguments(table: 1, timesteps: 2, shapes: inputShapes, count: count) + term.kernelArguments, count: count)]
    }
}

extension ScheduleGather: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        [elementwiseLaunch("diffusion", "schedule_gather", [.input(0), .input(1), .output, .int(Int32(inputShapes[0][1]))]
            + coefficient.kernelArguments, count: Shape.count(outputShape))]
    }
}

extension DDPMStep: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let count = Shape.count(outputShape)
        return [elementwiseLaunch("diffusion", "ddpm_step", [.input(0), .input(1), .input(4), .output]
            + scheduleArguments(table: 2, timesteps: 3, shapes: inputShapes, count: count)
            + [.int(prediction.rawValue), .int(clip ? 1 : 0), .int(variance.rawValue)], count: count)]
    }
}

extension DDIMStep: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let count = Shape.count(outputShape), hasNoise = inputShapes.count == 5
        // Without noise (η = 0) the kernel's noise argument is x_t, never read.
        return [elementwiseLaunch("diffusion", "ddim_step", [.input(0), .input(1), .input(hasNoise ? 4 : 0), .output]
            + scheduleArguments(table: 2, timesteps: 3, shapes: inputShapes, count: count)
            + [.int(prediction.rawValue), .int(clip ? 1 : 0), .float(eta), .int(hasNoise ? 1 : 0)], count: count)]
    }
}

extension TimestepEmbedding: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        [elementwiseLaunch("diffusion", "timestep_embedding", [.input(0), .input(1), .output, .int(Int32(dimension)),
                                                               .int(convention == .lucidrains ? 1 : 0)],
                           count: Shape.count(outputShape))]
    }
}

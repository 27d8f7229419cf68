import Foundation
import HistoCore

/// Parameters that share optimizer options. The group's learning rate is the optimizer's `learningRate`
/// (set by a schedule) times `learningRateScale`.
public struct ParameterGroup {
    public var parameters: [Parameter]
    public var weightDecay: Float
    public var learningRateScale: Float

    public init(_ parameters: [Parameter], weightDecay: Float = 0, learningRateScale: Float = 1) {
        self.parameters = parameters
        self.weightDecay = weightDecay
        self.learningRateScale = learningRateScale
    }

    /// Two groups as timm's `add_weight_decay` (the DTSeg optimizers): `weightDecay` for parameters of rank > 1,
    /// none for rank ≤ 1 (biases, norm scales) or names ending in `.bias`.
    public static func weightDecaySplit(_ parameters: [Parameter], weightDecay: Float,
                                        learningRateScale: Float = 1) -> [ParameterGroup] {
        let decays = { (p: Parameter) in p.shape.count > 1 && !p.name.hasSuffix(".bias") }
        return [ParameterGroup(parameters.filter(decays), weightDecay: weightDecay, learningRateScale: learningRateScale),
                ParameterGroup(parameters.filter { !decays($0) }, weightDecay: 0, learningRateScale: learningRateScale)]
    }
}

/// Updates parameters from host gradients. A parameter with `requiresGrad == false` or without a gradient in
/// the `Gradients` passed to `step` is left unchanged, and its state does not advance (PyTorch's `grad is None`).
public protocol Optimizer: CheckpointableState {
    /// The base learning rate; a schedule sets it before each step.
    var learningRate: Float { get set }
    var groups: [ParameterGroup] { get }
    /// Optimizer steps taken (restored by checkpoints; the position for learning-rate schedules).
    var stepCount: Int { get }
    func step(_ gradients: Gradients) throws
}

extension Optimizer {
    /// Every parameter of every group, in group order.
    public var parameters: [Parameter] { groups.flatMap(\.parameters) }
}

/// Per-parameter optimizer state: the parameter's own step count and named moment buffers.
public final class ParameterState {
    public internal(set) var step = 0
    public internal(set) var slots: [String: [Float]] = [:]
}

/// The rule an `ElementwiseOptimizer` applies to each parameter: elementwise math on host arrays.
protocol UpdateRule {
    var kind: String { get }
    /// The state buffers each updated parameter has.
    var slotNames: [String] { get }
    /// Hyperparameter problems (empty when valid), reported by the first `step`.
    var problems: [String] { get }
    /// Updates `parameter` in place. `state.step` is already incremented (1 on the first update).
    func update(_ parameter: UnsafeMutableBufferPointer<Float>, gradient: UnsafeBufferPointer<Float>,
                state: ParameterState, learningRate: Double, weightDecay: Float)
}

/// The shared machinery of SGD, Adam, AdamW and RAdam: parameter groups, per-parameter state, the host loop
/// and checkpointing. The update math follows PyTorch's single-tensor implementations (scalars such as bias
/// corrections in double, element math in float32).
public class ElementwiseOptimizer: Optimizer {
    public var learningRate: Float
    public let groups: [ParameterGroup]
    public private(set) var stepCount = 0
    private let rule: any UpdateRule
    private var states: [ObjectIdentifier: ParameterState] = [:]
    private let configurationProblems: [String]

    init(_ groups: [ParameterGroup], learningRate: Float, rule: any UpdateRule) {
        self.groups = groups
        self.learningRate = learningRate
        self.rule = rule
        var problems = rule.problems
        if !(learningRate >= 0 && learningRate.isFinite) {
            problems.append("learning rate \(learningRate) is not a finite number ≥ 0")
        }
        for (i, g) in groups.enumerated() {
            if !(g.weightDecay >= 0) { problems.append("group \(i) has negative weight decay \(g.weightDecay)") }
            if !(g.learningRateScale >= 0) { problems.append("group \(i) has negative learning-rate scale \(g.learningRateScale)") }
        }
        var seen = Set<ObjectIdentifier>()
        let repeated = groups.flatMap(\.parameters).filter { !seen.insert(ObjectIdentifier($0)).inserted }
        if !repeated.isEmpty { problems.append("parameters appear in more than one place: \(repeated.map(\.name).joined(separator: ", "))") }
        configurationProblems = problems
    }

    /// The kind written to checkpoints (`SGD`, `Adam`, `AdamW`, `RAdam`).
    public var kind: String { rule.kind }

    /// The state of one parameter (nil before its first update).
    public func state(of parameter: Parameter) -> ParameterState? { states[ObjectIdentifier(parameter)] }

    public func step(_ gradients: Gradients) throws {
        if !configurationProblems.isEmpty {
            throw EngineError.invalidOp(op: kind, message: configurationProblems.joined(separator: "; "))
        }
        for group in groups {
            let lr = Double(learningRate) * Double(group.learningRateScale)
            for p in group.parameters where p.requiresGrad {
                guard let gradient = gradients[p] else { continue }
                guard gradient.count == p.count else {
                    throw EngineError.invalidOp(op: kind, message:
                        "gradient for \(p.name) has \(gradient.count) values but the parameter has shape \(describe(p.shape))")
                }
                var values = try p.values()
                let state = states[ObjectIdentifier(p)] ?? ParameterState()
                states[ObjectIdentifier(p)] = state
                state.step += 1
                values.withUnsafeMutableBufferPointer { pv in
                    gradient.withUnsafeBufferPointer { gv in
                        rule.update(pv, gradient: gv, state: state, learningRate: lr, weightDecay: group.weightDecay)
                    }
                }
                p.assign(values)
            }
        }
        stepCount += 1
    }

    // MARK: checkpointing

    /// Tensors `<slot>/<parameter name>`; metadata: kind, step count, learning rate, the parameter names in
    /// group order, and each parameter's own step count.
    public func checkpointState() throws -> CheckpointState {
        var state = CheckpointState()
        var steps: [String: Int] = [:]
        for p in parameters {
            guard let s = states[ObjectIdentifier(p)] else { continue }
            steps[p.name] = s.step
            for (slot, values) in s.slots { state.tensors["\(slot)/\(p.name)"] = HostTensor(shape: p.shape, values: values) }
        }
        state.metadata = ["kind": kind, "step_count": String(stepCount), "learning_rate": String(learningRate),
                          "parameters": try encodeJSON(parameters.map(\.name)), "parameter_steps": try encodeJSON(steps)]
        return state
    }

    public func restore(from state: CheckpointState, source: String) throws {
        func fail(_ message: String) -> EngineError { .file(path: source, message: "\(kind) state: \(message)") }
        guard state.metadata["kind"] == kind else {
            throw fail("the checkpoint holds \(state.metadata["kind"] ?? "no") optimizer state, not \(kind)")
        }
        guard let count = state.metadata["step_count"].flatMap(Int.init), count >= 0,
              let lr = state.metadata["learning_rate"].flatMap(Float.init),
              let names = state.metadata["parameters"].flatMap({ try? decodeJSON([String].self, $0) }),
              let steps = state.metadata["parameter_steps"].flatMap({ try? decodeJSON([String: Int].self, $0) })
        else { throw fail("step_count, learning_rate, parameters or parameter_steps metadata is missing or malformed") }

        let byName = Dictionary(parameters.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        try checkNames(expected: parameters.map(\.name), found: names, what: "parameters", fail: fail)
        var restored: [ObjectIdentifier: ParameterState] = [:]
        var problems: [String] = []
        for (name, step) in steps {
            guard let p = byName[name] else { problems.append("parameter_steps names unknown parameter \(name)"); continue }
            guard step >= 1 else { problems.append("parameter \(name) has step \(step)"); continue }
            let s = ParameterState()
            s.step = step
            restored[ObjectIdentifier(p)] = s
        }
        for (key, tensor) in state.tensors {
            guard let slash = key.firstIndex(of: "/") else { problems.append("unexpected tensor \(key)"); continue }
            let slot = String(key[..<slash]), name = String(key[key.index(after: slash)...])
            guard let p = byName[name], let s = restored[ObjectIdentifier(p)] else {
                problems.append("tensor \(key) belongs to no parameter with state"); continue
            }
            guard tensor.shape == p.shape else {
                problems.append("\(key) has shape \(describe(tensor.shape)) but the parameter has \(describe(p.shape))"); continue
            }
            s.slots[slot] = tensor.values
        }
        for p in parameters {
            guard let s = restored[ObjectIdentifier(p)] else { continue }
            let absent = rule.slotNames.filter { s.slots[$0] == nil }
            if !absent.isEmpty { problems.append("\(p.name) lacks \(absent.joined(separator: ", "))") }
        }
        guard problems.isEmpty else { throw fail(problems.sorted().joined(separator: "; ")) }
        states = restored
        stepCount = count
        learningRate = lr
    }
}

/// Fails listing every name missing from or unknown to `expected`.
func checkNames(expected: [String], found: [String], what: String, fail: (String) -> EngineError) throws {
    let missing = Set(expected).subtracting(found).sorted()
    let unknown = Set(found).subtracting(expected).sorted()
    var parts: [String] = []
    if !missing.isEmpty { parts.append("\(missing.count) missing \(what): \(missing.joined(separator: ", "))") }
    if !unknown.isEmpty { parts.append("\(unknown.count) unknown \(what): \(unknown.joined(separator: ", "))") }
    if !parts.isEmpty { throw fail(parts.joined(separator: "; ")) }
}

// MARK: - SGD

/// `torch.optim.SGD`: d = g + wd·p; with momentum, buf = d on the first step, then buf = μ·buf + (1−dampening)·d;
/// d = d + μ·buf (Nesterov) or buf; p ← p − lr·d.
public final class SGD: ElementwiseOptimizer {
    public init(_ groups: [ParameterGroup], learningRate: Float, momentum: Float = 0, dampening: Float = 0,
                nesterov: Bool = false) {
        super.init(groups, learningRate: learningRate,
                   rule: SGDRule(momentum: momentum, dampening: dampening, nesterov: nesterov))
    }
}

struct SGDRule: UpdateRule {
    let momentum: Float, dampening: Float, nesterov: Bool
    var kind: String { "SGD" }
    var slotNames: [String] { momentum != 0 ? ["momentum_buffer"] : [] }
    var problems: [String] {
        var p: [String] = []
        if !(momentum >= 0) { p.append("momentum \(momentum) is negative") }
        if nesterov && (momentum <= 0 || dampening != 0) { p.append("Nesterov momentum needs momentum > 0 and zero dampening") }
        return p
    }

    func update(_ p: UnsafeMutableBufferPointer<Float>, gradient g: UnsafeBufferPointer<Float>,
                state: ParameterState, learningRate: Double, weightDecay wd: Float) {
        let n = p.count
        var d = [Float](g)
        if wd != 0 { for i in 0..<n { d[i] = g[i] + wd * p[i] } }
        if momentum != 0 {
            if var buf = state.slots.removeValue(forKey: "momentum_buffer") {
                let keep = 1 - dampening
                for i in 0..<n { buf[i] = buf[i] * momentum + keep * d[i] }
                state.slots["momentum_buffer"] = buf
            } else {
                state.slots["momentum_buffer"] = d
            }
            let buf = state.slots["momentum_buffer"]!
            if nesterov { for i in 0..<n { d[i] = d[i] + momentum * buf[i] } } else { d = buf }
        }
        let step = Float(-learningRate)
        for i in 0..<n { p[i] = p[i] + step * d[i] }
    }
}

// MARK: - Adam family

/// `torch.optim.Adam` (L2 weight decay added to the gradient).
public final class Adam: ElementwiseOptimizer {
    public init(_ groups: [ParameterGroup], learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999,
                epsilon: Float = 1e-8) {
        super.init(groups, learningRate: learningRate,
                   rule: AdamRule(beta1: beta1, beta2: beta2, epsilon: epsilon, decoupled: false))
    }
}

/// `torch.optim.AdamW`: decoupled weight decay p ← p·(1 − lr·wd) before the Adam update.
public final class AdamW: ElementwiseOptimizer {
    public init(_ groups: [ParameterGroup], learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999,
                epsilon: Float = 1e-8) {
        super.init(groups, learningRate: learningRate,
                   rule: AdamRule(beta1: beta1, beta2: beta2, epsilon: epsilon, decoupled: true))
    }
}

/// `torch.optim.RAdam`: Adam with the variance rectification of Liu et al. While the SMA length ρ_t ≤ 5 the
/// update is the bias-corrected momentum alone. `decoupledWeightDecay` gives p ← p·(1 − lr·wd) (the timm RAdam
/// used by DTSeg); otherwise wd·p is added to the gradient.
public final class RAdam: ElementwiseOptimizer {
    public init(_ groups: [ParameterGroup], learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999,
                epsilon: Float = 1e-8, decoupledWeightDecay: Bool = false) {
        super.init(groups, learningRate: learningRate,
                   rule: RAdamRule(beta1: beta1, beta2: beta2, epsilon: epsilon, decoupled: decoupledWeightDecay))
    }
}

private func betaProblems(_ beta1: Float, _ beta2: Float, _ epsilon: Float) -> [String] {
    var p: [String] = []
    if !(beta1 >= 0 && beta1 < 1) { p.append("beta1 \(beta1) is outside [0, 1)") }
    if !(beta2 >= 0 && beta2 < 1) { p.append("beta2 \(beta2) is outside [0, 1)") }
    if !(epsilon >= 0) { p.append("epsilon \(epsilon) is negative") }
    return p
}

/// Shared first half of Adam and RAdam: weight decay, then m ← m + (1−β1)(g − m), v ← β2·v + (1−β2)·g².
/// Returns the moment buffers (stored back into `state`).
private func updateMoments(_ p: UnsafeMutableBufferPointer<Float>, _ g: UnsafeBufferPointer<Float>, state: ParameterState,
                           beta1: Float, beta2: Float, decoupled: Bool, learningRate: Double,
                           weightDecay wd: Float) -> (m: [Float], v: [Float]) {
    let n = p.count
    var grad = [Float](g)
    if wd != 0 {
        if decoupled {
            let factor = Float(1 - learningRate * Double(wd))
            for i in 0..<n { p[i] *= factor }
        } else {
            for i in 0..<n { grad[i] = g[i] + wd * p[i] }
        }
    }
    var m = state.slots.removeValue(forKey: "exp_avg") ?? [Float](repeating: 0, count: n)
    var v = state.slots.removeValue(forKey: "exp_avg_sq") ?? [Float](repeating: 0, count: n)
    let w1 = 1 - beta1, w2 = 1 - beta2
    for i in 0..<n {
        m[i] = m[i] + w1 * (grad[i] - m[i])
        v[i] = v[i] * beta2 + w2 * (grad[i] * grad[i])
    }
    state.slots["exp_avg"] = m
    state.slots["exp_avg_sq"] = v
    return (m, v)
}

struct AdamRule: UpdateRule {
    let beta1: Float, beta2: Float, epsilon: Float, decoupled: Bool
    var kind: String { decoupled ? "AdamW" : "Adam" }
    var slotNames: [String] { ["exp_avg", "exp_avg_sq"] }
    var problems: [String] { betaProblems(beta1, beta2, epsilon) }

    func update(_ p: UnsafeMutableBufferPointer<Float>, gradient g: UnsafeBufferPointer<Float>,
                state: ParameterState, learningRate: Double, weightDecay: Float) {
        let (m, v) = updateMoments(p, g, state: state, beta1: beta1, beta2: beta2, decoupled: decoupled,
                                   learningRate: learningRate, weightDecay: weightDecay)
        let t = Double(state.step)
        let stepSize = Float(learningRate / (1 - Foundation.pow(Double(beta1), t)))
        let correction2Sqrt = Float((1 - Foundation.pow(Double(beta2), t)).squareRoot())
        for i in 0..<p.count {
            let denom = v[i].squareRoot() / correction2Sqrt + epsilon
            p[i] = p[i] - stepSize * (m[i] / denom)
        }
    }
}

struct RAdamRule: UpdateRule {
    let beta1: Float, beta2: Float, epsilon: Float, decoupled: Bool
    var kind: String { "RAdam" }
    var slotNames: [String] { ["exp_avg", "exp_avg_sq"] }
    var problems: [String] { betaProblems(beta1, beta2, epsilon) }

    func update(_ p: UnsafeMutableBufferPointer<Float>, gradient g: UnsafeBufferPointer<Float>,
                state: ParameterState, learningRate: Double, weightDecay: Float) {
        let (m, v) = updateMoments(p, g, state: state, beta1: beta1, beta2: beta2, decoupled: decoupled,
                                   learningRate: learningRate, weightDecay: weightDecay)
        let t = Double(state.step)
        let b2 = Double(beta2)
        let correction1 = Float(1 - Foundation.pow(Double(beta1), t))
        let correction2 = 1 - Foundation.pow(b2, t)
        let rhoInf = 2 / (1 - b2) - 1
        let rho = rhoInf - 2 * t * Foundation.pow(b2, t) / correction2
        let lr = Float(learningRate)
        if rho > 5 {
            let rect = Float(((rho - 4) * (rho - 2) * rhoInf / ((rhoInf - 4) * (rhoInf - 2) * rho)).squareRoot())
            let correction2Sqrt = Float(correction2.squareRoot())
            for i in 0..<p.count {
                let adaptive = correction2Sqrt / (v[i].squareRoot() + epsilon)
                p[i] = p[i] - (m[i] / correction1) * lr * adaptive * rect
            }
        } else {
            for i in 0..<p.count { p[i] = p[i] - (m[i] / correction1) * lr }
        }
    }
}

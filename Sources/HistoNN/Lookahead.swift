import HistoCore

/// Lookahead (Zhang et al. 2019) around any optimizer: every `k` steps the slow weights move toward the fast
/// ones, slow ← slow + α·(fast − slow), and the fast weights restart from them, fast ← slow.
/// Only parameters with `requiresGrad` are synchronised.
public final class Lookahead: Optimizer {
    public enum SlowStart {
        /// The slow weights start as the parameters before the first step (the paper's Algorithm 1).
        case initialWeights
        /// The slow weights are taken from the fast weights at the first synchronisation, which therefore
        /// changes nothing (timm's `Lookahead`, which DTSeg's code uses).
        case firstSync
    }

    public let inner: any Optimizer
    public let k: Int
    public let alpha: Float
    public let slowStart: SlowStart
    public private(set) var stepCount = 0
    private var slow: [ObjectIdentifier: [Float]] = [:]

    public init(_ inner: any Optimizer, k: Int = 6, alpha: Float = 0.5, slowStart: SlowStart = .initialWeights) {
        self.inner = inner
        self.k = k
        self.alpha = alpha
        self.slowStart = slowStart
    }

    public var learningRate: Float {
        get { inner.learningRate }
        set { inner.learningRate = newValue }
    }
    public var groups: [ParameterGroup] { inner.groups }

    /// The slow weights of `parameter` (nil before they exist).
    public func slowWeights(of parameter: Parameter) -> [Float]? { slow[ObjectIdentifier(parameter)] }

    public func step(_ gradients: Gradients) throws {
        guard k >= 1, alpha >= 0, alpha <= 1 else {
            throw EngineError.invalidOp(op: "Lookahead", message: "k \(k) must be at least 1 and alpha \(alpha) in [0, 1]")
        }
        if slowStart == .initialWeights && stepCount == 0 {
            for p in parameters where p.requiresGrad && slow[ObjectIdentifier(p)] == nil {
                slow[ObjectIdentifier(p)] = try p.values()
            }
        }
        try inner.step(gradients)
        stepCount += 1
        if stepCount % k == 0 { try synchronize() }
    }

    private func synchronize() throws {
        for p in parameters where p.requiresGrad {
            let fast = try p.values()
            guard var s = slow[ObjectIdentifier(p)] else { slow[ObjectIdentifier(p)] = fast; continue }
            for i in 0..<s.count { s[i] = s[i] + alpha * (fast[i] - s[i]) }
            slow[ObjectIdentifier(p)] = s
            p.assign(s)
        }
    }

    // MARK: checkpointing

    /// Tensors `slow/<parameter name>` and the inner optimizer's tensors under `inner/`; metadata: kind, step
    /// count, and the inner optimizer's metadata under `inner.`.
    public func checkpointState() throws -> CheckpointState {
        let innerState = try inner.checkpointState()
        var state = CheckpointState()
        for (name, t) in innerState.tensors { state.tensors["inner/" + name] = t }
        for (key, value) in innerState.metadata { state.metadata["inner." + key] = value }
        for p in parameters {
            if let s = slow[ObjectIdentifier(p)] { state.tensors["slow/" + p.name] = HostTensor(shape: p.shape, values: s) }
        }
        state.metadata["kind"] = "Lookahead"
        state.metadata["step_count"] = String(stepCount)
        return state
    }

    public func restore(from state: CheckpointState, source: String) throws {
        func fail(_ message: String) -> EngineError { .file(path: source, message: "Lookahead state: \(message)") }
        guard state.metadata["kind"] == "Lookahead" else {
            throw fail("the checkpoint holds \(state.metadata["kind"] ?? "no") optimizer state, not Lookahead")
        }
        guard let count = state.metadata["step_count"].flatMap(Int.init), count >= 0 else {
            throw fail("step_count metadata is missing or malformed")
        }
        var innerState = CheckpointState()
        for (key, value) in state.metadata where key.hasPrefix("inner.") { innerState.metadata[String(key.dropFirst(6))] = value }
        var restored: [ObjectIdentifier: [Float]] = [:]
        var problems: [String] = []
        let byName = Dictionary(parameters.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for (key, tensor) in state.tensors {
            if key.hasPrefix("inner/") { innerState.tensors[String(key.dropFirst(6))] = tensor; continue }
            guard key.hasPrefix("slow/"), let p = byName[String(key.dropFirst(5))] else {
                problems.append("unexpected tensor \(key)"); continue
            }
            guard tensor.shape == p.shape else {
                problems.append("\(key) has shape \(describe(tensor.shape)) but the parameter has \(describe(p.shape))"); continue
            }
            restored[ObjectIdentifier(p)] = tensor.values
        }
        guard problems.isEmpty else { throw fail(problems.sorted().joined(separator: "; ")) }
        try inner.restore(from: innerState, source: source)
        slow = restored
        stepCount = count
    }
}

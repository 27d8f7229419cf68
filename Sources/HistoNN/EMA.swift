import HistoCore

/// Exponential moving average of a model's parameters (SPEC §0.6): shadow ← shadow − (1 − α)(shadow − θ),
/// i.e. α·shadow + (1 − α)·θ, with α the effective decay of the current update. The update is one graph of tensor
/// ops run on the backend the caller names, so shadows that live on a device stay there.
///
/// Buffers (BatchNorm running statistics) are not averaged unless a teacher asks for it (`averagesBuffers`): SSL4MIS
/// and CDCL leave the teacher's own statistics, which its forward passes update (SPEC §5); timm's EMA averages them.
///
/// The shadows are same-named parameters: either copies owned by the EMA (`init(tracking:)`, for evaluating
/// or exporting EMA weights with `copy(to:)`) or the parameters of a teacher module of the same structure
/// (`init(teacher:)`, the mean teacher whose forward pass is used directly).
public final class ExponentialMovingAverage: CheckpointableState {
    public enum Warmup: String {
        /// α every update.
        case none
        /// α_eff = min(1 − 1/(n + 1), α) at the n-th update counting from 0 (mean teacher, SSL4MIS/CDCL): the
        /// first update copies the model.
        case meanTeacher
        /// α_eff = min(α, (1 + n)/(10 + n)) with n counting from 1 (LDM `LitEma`).
        case litEma
    }

    public let decay: Float
    public let warmup: Warmup
    /// Updates done so far.
    public private(set) var updateCount = 0
    /// The shadow parameters, named like the tracked model's `parameters()`.
    public let shadows: [(name: String, parameter: Parameter)]
    /// The teacher's buffers, averaged like the parameters from the same-named buffers of the model (empty unless
    /// `init(teacher:decay:warmup:averagesBuffers:)` asked for it).
    public let bufferShadows: [(name: String, buffer: ModuleBuffer)]

    /// Shadows are copies of `model`'s current parameters.
    public init(tracking model: Module, decay: Float, warmup: Warmup = .none) {
        shadows = model.parameters().map { ($0.name, Parameter($0.parameter.value, requiresGrad: false, name: $0.name)) }
        bufferShadows = []
        self.decay = decay
        self.warmup = warmup
    }

    /// Shadows are `teacher`'s own parameters, which `update(from:)` overwrites; they are frozen
    /// (`requiresGrad = false`) since only the average moves them. With `averagesBuffers` the teacher's buffers are
    /// averaged too (checkpointed with the teacher module itself, not here).
    public init(teacher: Module, decay: Float, warmup: Warmup = .none, averagesBuffers: Bool = false) {
        teacher.freeze()
        shadows = teacher.parameters()
        bufferShadows = averagesBuffers ? teacher.buffers() : []
        self.decay = decay
        self.warmup = warmup
    }

    /// The decay the next update uses.
    public var effectiveDecay: Float {
        switch warmup {
        case .none: return decay
        case .meanTeacher: return min(1 - 1 / Float(updateCount + 1), decay)
        case .litEma: return min(decay, Float(1 + updateCount + 1) / Float(10 + updateCount + 1))
        }
    }

    /// Moves every shadow (and averaged buffer) toward the same-named tensor of `model`, in one graph run on
    /// `backend` (the default backend when nil); each shadow then holds the run's output buffer.
    public func update(from model: Module, on backend: (any Backend)? = nil) throws {
        let targets: [ModuleTensor] = shadows.map(\.parameter) + bufferShadows.map(\.buffer)
        var sources = try matchedParameters(of: model, op: "ema.update").map(\.value)
        if !bufferShadows.isEmpty {
            let byName = Dictionary(model.buffers().map { ($0.name, $0.buffer) }, uniquingKeysWith: { a, _ in a })
            try checkNames(expected: bufferShadows.map(\.name), found: Array(byName.keys), what: "buffers") {
                .invalidOp(op: "ema.update", message: "the model does not match the teacher's buffers: \($0)")
            }
            sources += bufferShadows.map { byName[$0.name]!.value }
        }
        let weight = Tensor(scalar: 1 - effectiveDecay)
        let updated = zip(targets, sources).map { target, source in target.value - weight * (target.value - source) }
        try eval(updated, on: backend)
        for (target, value) in zip(targets, updated) {
            // The output buffer becomes a leaf, cut off from the update graph (a view would need a copy).
            target.value = value.node.offset == 0
                ? Tensor(buffer: value.node.buffer!, shape: target.shape, label: target.name)
                : Tensor(try value.toArray(on: backend), shape: target.shape, label: target.name)
        }
        updateCount += 1
    }

    /// Copies the shadow values into the same-named parameters of `model` (e.g. to evaluate the EMA weights).
    public func copy(to model: Module) throws {
        let targets = try matchedParameters(of: model, op: "ema.copy")
        for ((_, shadow), target) in zip(shadows, targets) { target.value = shadow.value }
    }

    /// `model`'s parameters in shadow order; fails listing every name that does not match.
    private func matchedParameters(of model: Module, op: String) throws -> [Parameter] {
        let named = model.parameters()
        let byName = Dictionary(named.map { ($0.name, $0.parameter) }, uniquingKeysWith: { a, _ in a })
        try checkNames(expected: shadows.map(\.name), found: named.map(\.name), what: "parameters") {
            .invalidOp(op: op, message: "the model does not match the EMA shadows: \($0)")
        }
        let mismatched = shadows.filter { byName[$0.name]!.shape != $0.parameter.shape }
        guard mismatched.isEmpty else {
            throw EngineError.invalidOp(op: op, message: "shape mismatches: " + mismatched.map {
                "\($0.name) (EMA \(describe($0.parameter.shape)), model \(describe(byName[$0.name]!.shape)))"
            }.joined(separator: ", "))
        }
        return shadows.map { byName[$0.name]! }
    }

    // MARK: checkpointing

    /// Tensors: the shadows by name; metadata: update count, decay and warm-up.
    public func checkpointState() throws -> CheckpointState {
        var state = CheckpointState()
        for (name, p) in shadows { state.tensors[name] = try HostTensor(p.value) }
        state.metadata = ["update_count": String(updateCount), "decay": String(decay), "warmup": warmup.rawValue]
        return state
    }

    public func restore(from state: CheckpointState, source: String) throws {
        func fail(_ message: String) -> EngineError { .file(path: source, message: "EMA state: \(message)") }
        guard let count = state.metadata["update_count"].flatMap(Int.init), count >= 0 else {
            throw fail("update_count metadata is missing or malformed")
        }
        try checkNames(expected: shadows.map(\.name), found: Array(state.tensors.keys), what: "shadow tensors", fail: fail)
        let mismatched = shadows.filter { state.tensors[$0.name]!.shape != $0.parameter.shape }
        guard mismatched.isEmpty else {
            throw fail("shape mismatches: " + mismatched.map {
                "\($0.name) (file \(describe(state.tensors[$0.name]!.shape)), EMA \(describe($0.parameter.shape)))"
            }.joined(separator: ", "))
        }
        for (name, p) in shadows { p.assign(state.tensors[name]!.values) }
        updateCount = count
    }
}

import HistoCore
import HistoData
import HistoNN

/// What a method trains on in one step: a labelled batch and, when the method asks for one, an unlabelled batch.
public struct MethodBatch {
    /// `images` [N, 3, S, S] (and `strongImages` when the labelled views are `.weakAndStrong`), `labels` [N, S, S].
    public let labelled: Batch
    /// From the unlabelled images of the split (images without masks included), when `DataNeeds.unlabelled` is set.
    public let unlabelled: Batch?

    public init(labelled: Batch, unlabelled: Batch?) {
        self.labelled = labelled
        self.unlabelled = unlabelled
    }
}

/// Where training stands when a step runs, for ramps and schedules.
public struct StepContext {
    /// Optimizer steps done before this one (0 for the first): the position of learning-rate schedules.
    public let step: Int
    public let totalSteps: Int
    public let stepsPerEpoch: Int
    /// The backend the step's graphs run on.
    public let backend: any Backend
    /// The ranks training together, each on its shard of the batches: `OptimizedNetwork.minimise` averages the
    /// gradients and loss terms over them.
    public let group: any ProcessGroup

    public init(step: Int, totalSteps: Int, stepsPerEpoch: Int, backend: any Backend,
                group: any ProcessGroup = SingleProcess.shared) {
        self.step = step
        self.totalSteps = totalSteps
        self.stepsPerEpoch = stepsPerEpoch
        self.backend = backend
        self.group = group
    }

    /// The epoch in progress, from 0.
    public var epoch: Int { step / stepsPerEpoch }
    /// Epochs of the whole run (the last one may be partial for an iteration-based plan).
    public var totalEpochs: Int { (totalSteps + stepsPerEpoch - 1) / stepsPerEpoch }
}

/// The batches a method wants.
public struct DataNeeds: Equatable, Sendable {
    /// Views of the labelled batch.
    public var labelledViews: BatchViews
    /// Views of the unlabelled batch; nil: no unlabelled stream.
    public var unlabelledViews: BatchViews?

    public init(labelledViews: BatchViews = .weak, unlabelledViews: BatchViews? = nil) {
        self.labelledViews = labelledViews
        self.unlabelledViews = unlabelledViews
    }
}

/// A training method: its networks, optimizers and teachers, and one training step. The `MethodTrainer` owns
/// everything around the step (data, epochs, validation, checkpoints, resume, progress, metrics); a method is one
/// file with its networks and this conformance, registered by name in `MethodRegistry`.
public protocol TrainingMethod: AnyObject {
    /// The names of the loss terms `step` returns, in the order `metrics.csv` logs them; the first is the total
    /// that is minimised (logged as `loss`).
    var lossTerms: [String] { get }
    var dataNeeds: DataNeeds { get }
    /// The network that is validated, kept at its best validation score (`best.safetensors`) and segments
    /// afterwards: the student, the EMA teacher for mean teachers, one of two students for CPS.
    var evaluatedModel: any SegmentationModel { get }
    /// Everything besides `evaluatedModel` that a checkpoint holds so that a resumed run repeats an uninterrupted
    /// one: other networks, optimizers, EMA state, random generators. Names are non-empty without `.` or `/`.
    /// Dropout generators inside these modules (and `evaluatedModel`) are saved by the trainer.
    var components: [String: any CheckpointableState] { get }
    /// The learning rate of the main optimizer at the last step (logged).
    var learningRate: Float { get }
    /// One optimizer step (of every optimizer the method has); returns the value of every `lossTerms` name.
    func step(_ batch: MethodBatch, context: StepContext) throws -> [String: Float]
    /// What the trainer tells the user when a fresh run starts (how the networks were initialised).
    var notices: [String] { get }
}

extension TrainingMethod {
    public var notices: [String] { [] }
}

/// A method that trains one network on the labelled batch alone and evaluates it (supervised, pathsegdiff): the
/// conformance supplies everything but the step.
public protocol SingleNetworkMethod: TrainingMethod {
    var network: OptimizedNetwork { get }
}

extension SingleNetworkMethod {
    public var lossTerms: [String] { ["loss"] }
    public var dataNeeds: DataNeeds { DataNeeds() }
    public var evaluatedModel: any SegmentationModel { network.model }
    public var components: [String: any CheckpointableState] { ["optimizer": network.optimizer] }
    public var learningRate: Float { network.optimizer.learningRate }
}

/// The optimizer and learning-rate rule of a network.
public enum OptimizerRecipe: Equatable, Sendable {
    /// SSL4MIS: SGD with momentum and weight decay on every parameter, lr·(1 − step/total)^power over the run.
    case sgdPoly(learningRate: Float = 0.01, momentum: Float = 0.9, weightDecay: Float = 1e-4, power: Float = 0.9)
    /// Adam (weight decay added to the gradient), constant learning rate.
    case adam(learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999, weightDecay: Float = 0)
    /// Adam (β 0.9/0.999, no weight decay), lr·(1 − step/total)^power over the run (CDCL, SPEC §5).
    case adamPoly(learningRate: Float = 1e-4, power: Float = 0.9)
    /// DTSeg's FPN baseline (SPEC §1): Lookahead (k 6, α 0.5) around RAdam with decoupled weight decay on weights
    /// of rank > 1, constant learning rate.
    case lookaheadRAdam(learningRate: Float = 1e-3, weightDecay: Float = 1e-5)
    /// Ciampi et al.'s Appendix A (SPEC §3): Adam (weight decay added to the gradient), lr·γ^⌊epoch/every⌋.
    case adamStepLR(learningRate: Float = 0.01, beta1: Float = 0.9, beta2: Float = 0.99, weightDecay: Float = 5e-5,
                    everyEpochs: Int = 50, gamma: Float = 0.1)
    /// Ciampi's companion code (SPEC §3): SGD with momentum, a linear warm-up from 0 over `warmupEpochs`, then
    /// lr·γ^⌊epoch/every⌋.
    case sgdStepLR(learningRate: Float = 0.5, momentum: Float = 0.9, weightDecay: Float = 5e-5, everyEpochs: Int = 50,
                   gamma: Float = 0.5, warmupEpochs: Int = 20)

    public var learningRate: Float {
        switch self {
        case let .sgdPoly(lr, _, _, _), let .adam(lr, _, _, _), let .adamPoly(lr, _), let .lookaheadRAdam(lr, _),
             let .adamStepLR(lr, _, _, _, _, _), let .sgdStepLR(lr, _, _, _, _, _):
            return lr
        }
    }

    /// The same recipe with another base learning rate.
    public func with(learningRate lr: Float) -> OptimizerRecipe {
        switch self {
        case let .sgdPoly(_, momentum, weightDecay, power): return .sgdPoly(learningRate: lr, momentum: momentum,
                                                                            weightDecay: weightDecay, power: power)
        case let .adam(_, beta1, beta2, weightDecay): return .adam(learningRate: lr, beta1: beta1, beta2: beta2,
                                                                   weightDecay: weightDecay)
        case let .adamPoly(_, power): return .adamPoly(learningRate: lr, power: power)
        case let .lookaheadRAdam(_, weightDecay): return .lookaheadRAdam(learningRate: lr, weightDecay: weightDecay)
        case let .adamStepLR(_, beta1, beta2, weightDecay, every, gamma):
            return .adamStepLR(learningRate: lr, beta1: beta1, beta2: beta2, weightDecay: weightDecay,
                               everyEpochs: every, gamma: gamma)
        case let .sgdStepLR(_, momentum, weightDecay, every, gamma, warmup):
            return .sgdStepLR(learningRate: lr, momentum: momentum, weightDecay: weightDecay, everyEpochs: every,
                              gamma: gamma, warmupEpochs: warmup)
        }
    }

    /// The optimizer of `parameters` and its schedule; the epoch-based recipes (`adamStepLR`, `sgdStepLR`) need
    /// `stepsPerEpoch`.
    public func make(for parameters: [Parameter], totalSteps: Int,
                     stepsPerEpoch: Int? = nil) -> (any Optimizer, any LearningRateSchedule) {
        switch self {
        case let .sgdPoly(lr, momentum, weightDecay, power):
            return (SGD([ParameterGroup(parameters, weightDecay: weightDecay)], learningRate: lr, momentum: momentum),
                    PolySchedule(base: lr, totalSteps: totalSteps, power: power))
        case let .adam(lr, beta1, beta2, weightDecay):
            return (Adam([ParameterGroup(parameters, weightDecay: weightDecay)], learningRate: lr, beta1: beta1,
                         beta2: beta2), ConstantSchedule(lr))
        case let .adamPoly(lr, power):
            return (Adam([ParameterGroup(parameters)], learningRate: lr),
                    PolySchedule(base: lr, totalSteps: totalSteps, power: power))
        case let .lookaheadRAdam(lr, weightDecay):
            let radam = RAdam(ParameterGroup.weightDecaySplit(parameters, weightDecay: weightDecay), learningRate: lr,
                              decoupledWeightDecay: true)
            return (Lookahead(radam, k: 6, alpha: 0.5, slowStart: .firstSync), ConstantSchedule(lr))
        case let .adamStepLR(lr, beta1, beta2, weightDecay, every, gamma):
            let epoch = Self.epochSteps(stepsPerEpoch, of: self)
            return (Adam([ParameterGroup(parameters, weightDecay: weightDecay)], learningRate: lr, beta1: beta1,
                         beta2: beta2), StepSchedule(base: lr, stepSize: every * epoch, gamma: gamma))
        case let .sgdStepLR(lr, momentum, weightDecay, every, gamma, warmup):
            let epoch = Self.epochSteps(stepsPerEpoch, of: self)
            return (SGD([ParameterGroup(parameters, weightDecay: weightDecay)], learningRate: lr, momentum: momentum),
                    LinearWarmup(steps: warmup * epoch, then: StepSchedule(base: lr, stepSize: every * epoch,
                                                                           gamma: gamma)))
        }
    }

    private static func epochSteps(_ stepsPerEpoch: Int?, of recipe: OptimizerRecipe) -> Int {
        guard let stepsPerEpoch else { preconditionFailure("\(recipe) schedules by epoch: pass stepsPerEpoch") }
        return stepsPerEpoch
    }
}

/// A network with its optimizer and learning-rate schedule: the unit most methods train (CPS has two).
public final class OptimizedNetwork {
    public let model: any SegmentationModel
    public let parameters: [Parameter]
    public let optimizer: any Optimizer
    public let schedule: any LearningRateSchedule

    public init(_ model: any SegmentationModel, recipe: OptimizerRecipe, totalSteps: Int, stepsPerEpoch: Int? = nil) {
        self.model = model
        parameters = model.trainableParameters()
        (optimizer, schedule) = recipe.make(for: parameters, totalSteps: totalSteps, stepsPerEpoch: stepsPerEpoch)
    }

    /// Takes one optimizer step on each network of `networks` to minimise `total`, whose gradients reach each
    /// network's parameters: one backward graph, evaluated with `terms` and the networks' BatchNorm updates in
    /// a single run on the context's backend. The gradients and `terms` are averaged over the context's ranks
    /// (BatchNorm statistics stay each rank's own, as PyTorch DDP's default). Returns the values of `terms`, by
    /// name, with the total under `totalName`.
    public static func minimise(_ total: Tensor, named totalName: String, terms: [String: Tensor] = [:],
                                networks: [OptimizedNetwork], alongside: [Tensor] = [],
                                context: StepContext) throws -> [String: Float] {
        let names = terms.keys.sorted(), backend = context.backend
        let updates = networks.flatMap { $0.model.pendingBufferUpdates() }
        let (value, shardGradients) = try Gradients.of(total, wrt: networks.flatMap(\.parameters),
                                                       alongside: names.map { terms[$0]! } + updates + alongside,
                                                       on: backend)
        var gradients = shardGradients
        var averaged = try [value] + names.map { try terms[$0]!.item(on: backend) }
        try gradients.average(across: context.group, with: &averaged)
        var values = [totalName: averaged[0]]
        for (name, value) in zip(names, averaged.dropFirst()) { values[name] = value }
        for network in networks {
            try network.model.commitBufferUpdates(on: backend)
            network.optimizer.learningRate = network.schedule.learningRate(at: network.optimizer.stepCount)
            try network.optimizer.step(gradients)
        }
        return values
    }
}

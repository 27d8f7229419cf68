import Foundation
import HistoCore
import HistoData
import HistoNN

/// The student or teacher of CDCL (SPEC §5): the DenseUNet and the projector on its extractor's features,
/// AvgPool 2×2 → conv1×1 (c → c) → ReLU → conv1×1 (c → c/2) → ℓ2 over channels
/// (256 → 128 in the paper).
/// As a segmentation model it is the DenseUNet alone.
public final class ContrastiveDenseUNet: Module, SegmentationModel {
    public let network: DenseUNet
    let projector: Sequential

    public init(_ configuration: DenseUNet.Configuration, generator: RandomGenerator) {
        network = DenseUNet(configuration, generator: generator)
        let c = configuration.decoderChannels
        projector = Sequential(Conv2d(c, c, kernel: 1, generator: generator), Activation(.relu),
                               Conv2d(c, c / 2, kernel: 1, generator: generator))
        super.init()
        DenseUNet.initializeXavier(projector, generator: generator)
    }

    public override func members() -> [(key: String, member: ModuleMember)] {
        [("network", .module(network)), ("projector", .module(projector))]
    }

    public var classes: Int { network.classes }
    public var inputMultiple: Int { network.inputMultiple }
    public func callAsFunction(_ x: Tensor) -> Tensor { network(x) }

    /// Logits [N, K, H/4, W/4] and ℓ2-normalised projections [N, c/2, H/8, W/8] of images [N, C, H, W].
    public func outputs(_ x: Tensor) -> (logits: Tensor, projections: Tensor) {
        let features = network.extract(x)
        return (network.classify(features), projector(features.avgPool2d(kernel: [2, 2])).l2Normalize(axis: 1))
    }
}

/// CDCL's cross-patch dense contrastive loss (SPEC §5, paper 004 §3.1, Eq. 7–12) over pixel entries: projected
/// features, their pseudo-labels and the foreground score FS of the patch they lie in.
public struct CrossPatchContrast: Equatable, Sendable {
    /// Which bank entries k may be negatives of an anchor q; both rules also need ỹ_q ≠ ỹ_k (Eq. 9).
    public enum NegativeRule: String, CaseIterable, Sendable {
        /// The paper: k lies in a patch of the opposite type (an FDP for a BDP anchor and vice versa).
        case oppositePatch = "paper"
        /// The released code: FS_q + FS_k ≤ 0.3 + 0.7.
        case scoreSum = "code"
    }

    /// Pixel entries: features [P, D], pseudo-labels [P] and the FS of each one's patch [P].
    public struct Entries {
        public let features: Tensor
        public let labels: Tensor
        public let scores: Tensor

        public init(features: Tensor, labels: Tensor, scores: Tensor) {
            self.features = features
            self.labels = labels
            self.scores = scores
        }

        /// Several sets of entries as one.
        public static func joined(_ parts: [Entries]) -> Entries {
            Entries(features: .concat(parts.map(\.features), axis: 0), labels: .concat(parts.map(\.labels), axis: 0),
                    scores: .concat(parts.map(\.scores), axis: 0))
        }
    }

    /// τ of the released code (SPEC §5, §9).
    public static let defaultTemperature: Float = 0.1

    public var rule = NegativeRule.oppositePatch
    public var temperature = defaultTemperature
    /// Patches per side of a projected map (8: a patch is h/8 of the image).
    public var patchGrid = 8
    /// BDP: FS ≤ `background`; FDP: FS ≥ `foreground`.
    public var background: Float = 0.3
    public var foreground: Float = 0.7

    public init(rule: NegativeRule = .oppositePatch, temperature: Float = defaultTemperature) {
        self.rule = rule
        self.temperature = temperature
    }

    /// The entries of projections [B, D, h, w] with class ids [B, h, w], row-major per image; FS = the share of
    /// pixels of the patch (h/grid × w/grid) whose label is not background (0).
    public func entries(projections: Tensor, labels: Tensor) -> Entries {
        let (b, d, h, w) = (projections.shape[0], projections.shape[1], projections.shape[2], projections.shape[3])
        guard h % patchGrid == 0, w % patchGrid == 0, labels.shape == [b, h, w] else {
            let message = "projections \(describe(projections.shape)) need sides that are multiples of "
                + "\(patchGrid) and labels [B, h, w] (got \(describe(labels.shape)))"
            return Entries(features: .invalid("cdcl_entries", message), labels: labels, scores: labels)
        }
        let patch = [h / patchGrid, w / patchGrid]
        let scores = labels.greater(0).unsqueeze(1).avgPool2d(kernel: patch).interpolateNearest(scale: patch[0])
        return Entries(features: projections.permute([0, 2, 3, 1]).reshape([b * h * w, d]),
                       labels: labels.reshape([b * h * w]), scores: scores.reshape([b * h * w]))
    }

    /// L_contr (Eq. 11): the mean of l(q) (Eq. 7) over the student's anchors, the pixels of its BDPs and FDPs (all
    /// patches have as many pixels, so this is the mean over those patches of their pixel means). The positive of
    /// an anchor is the teacher entry at its position; the bank holds the student's and the teacher's entries and
    /// `previous` (the last batch's, detached here).
    /// l(q) = −log(e^{p−m}/(e^{p−m} + Σ J·e^{n−m} + 1e-8) + 1e-8)
    /// with m the row maximum over the positive and the bank (SPEC §5), through the fused `CrossPatchInfoNCE`, whose
    /// memory is O(anchors + bank). `groups`: the images the anchors come from, in equal runs (checked). 0 without
    /// anchors.
    public func loss(student: Entries, teacher: Entries, previous: Entries?, groups: Int) -> Tensor {
        let count = student.labels.shape[0]
        guard groups > 0, count % groups == 0, teacher.labels.shape == [count] else {
            return .invalid("cdcl_contrast", "\(count) student entries in \(groups) groups, "
                + "\(teacher.labels.shape) teacher entries")
        }
        let detached = previous.map { Entries(features: $0.features.detach(), labels: $0.labels, scores: $0.scores) }
        let bank = Entries.joined([student, teacher] + (detached.map { [$0] } ?? []))
        let anchors = student.scores.lessEqual(Tensor(scalar: background))
            + student.scores.greaterEqual(Tensor(scalar: foreground))
        // FS are pixel counts over the patch size, so a sum of exactly 1 may round above it; 1e-4 is far below one
        // pixel's share of any patch.
        let scoreLimit: Float? = rule == .scoreSum ? background + foreground + 1e-4 : nil
        let perAnchor = Loss.crossPatchInfoNCE(
            CrossPatchInfoNCE(temperature: temperature, background: background, foreground: foreground,
                              scoreLimit: scoreLimit),
            anchors: student.features, positives: teacher.features, keys: bank.features,
            anchorLabels: student.labels, anchorScores: student.scores, keyLabels: bank.labels, keyScores: bank.scores)
        return (perAnchor * anchors).sum() / anchors.sum().maximum(Tensor(scalar: 1))
    }
}

/// The previous batch's entries of CDCL's bank (SPEC §5: capacity one batch), on the host and checkpointed, so
/// that a resumed run contrasts against what an uninterrupted one would.
public final class ContrastBank: CheckpointableState {
    public private(set) var stored: (features: HostTensor, labels: HostTensor, scores: HostTensor)?

    public init() {}

    /// The stored entries as leaves; nil while empty.
    public var entries: CrossPatchContrast.Entries? {
        stored.map { .init(features: $0.features.tensor, labels: $0.labels.tensor, scores: $0.scores.tensor) }
    }

    /// Keeps `entries` (evaluated already) in place of the stored ones.
    public func replace(with entries: CrossPatchContrast.Entries, on backend: any Backend) throws {
        func host(_ t: Tensor) throws -> HostTensor { HostTensor(shape: t.shape, values: try t.toArray(on: backend)) }
        stored = (try host(entries.features), try host(entries.labels), try host(entries.scores))
    }

    public func checkpointState() throws -> CheckpointState {
        guard let stored else { return CheckpointState() }
        return CheckpointState(tensors: ["features": stored.features, "labels": stored.labels,
                                        "scores": stored.scores])
    }

    public func restore(from state: CheckpointState, source: String) throws {
        guard !state.tensors.isEmpty else { stored = nil; return }
        guard let features = state.tensors["features"], let labels = state.tensors["labels"],
              let scores = state.tensors["scores"], features.shape.count == 2,
              labels.shape == [features.shape[0]], scores.shape == labels.shape else {
            throw EngineError.file(path: source, message: "contrast bank: needs features [P, D], labels and scores [P]")
        }
        stored = (features, labels, scores)
    }
}

/// CDCL (Wu et al. 2022; SPEC §5; docs/methods/cdcl.md): a mean teacher whose student minimises
/// L_sup + 0.1·L_contr + w(e)·L_cons + 0.01·L_ent. The student sees the labelled images and the strong view of the
/// unlabelled ones in one batch, the EMA teacher (α 0.999 with warm-up, BatchNorm statistics its own) the weak
/// view with the same geometry. The unlabelled terms start at epoch 5; w(e) is the Gaussian ramp over the run.
/// Like SSL4MIS's teachers, the teacher runs in training mode; it is the evaluated model.
public final class CrossPatchDenseContrastMethod: TrainingMethod {
    public static let contrastWeight: Float = 0.1
    public static let entropyWeight: Float = 0.01

    public let student: OptimizedNetwork
    /// `student.model`, with its projector.
    let studentNetwork: ContrastiveDenseUNet
    public let teacher: ContrastiveDenseUNet
    public let ema: ExponentialMovingAverage
    public let contrast: CrossPatchContrast
    /// L_cons keeps only pixels whose teacher max-probability exceeds it (the released code's option); nil: all.
    public let confidenceThreshold: Float?
    /// The epoch (from 0) of the first step with the unlabelled terms: 5, the paper's 6th epoch.
    public let unlabelledFromEpoch: Int
    public let bank = ContrastBank()
    public var notices: [String] = []

    public init(student: ContrastiveDenseUNet, teacher: ContrastiveDenseUNet, decay: Float,
                contrast: CrossPatchContrast, confidenceThreshold: Float?, unlabelledFromEpoch: Int = 5,
                setup: MethodSetup) throws {
        self.student = OptimizedNetwork(student, recipe: setup.plan.optimizer, totalSteps: setup.totalSteps)
        studentNetwork = student
        try teacher.load(student.checkpointState().tensors, source: "the student")
        self.teacher = teacher
        ema = ExponentialMovingAverage(teacher: teacher, decay: decay, warmup: .meanTeacher)
        self.contrast = contrast
        self.confidenceThreshold = confidenceThreshold
        self.unlabelledFromEpoch = unlabelledFromEpoch
    }

    public var lossTerms: [String] {
        ["loss", "supervised", "contrastive", "consistency", "entropy", "consistency_weight"]
    }
    public var dataNeeds: DataNeeds { DataNeeds(labelledViews: .weak, unlabelledViews: .weakAndStrong) }
    public var evaluatedModel: any SegmentationModel { teacher.network }
    public var components: [String: any CheckpointableState] {
        ["student": student.model, "optimizer": student.optimizer, "ema": ema, "bank": bank]
    }
    public var learningRate: Float { student.optimizer.learningRate }

    /// w_cons(e) = exp(−5(1 − clip(e, 0, E)/E)²) with E the planned epochs (SPEC §0.5, §5).
    public static func consistencyWeight(in context: StepContext) -> Float {
        Float(Ramp.sigmoid(length: Double(context.totalEpochs)).value(at: Double(context.epoch)))
    }

    /// L_cons: CE of the student's logits [N, K, h, w] against the teacher's argmax; with a threshold, the mean
    /// over every pixel of the CE where the teacher's max-probability exceeds it (0 elsewhere).
    public static func consistency(student: Tensor, teacher: Tensor, threshold: Float?) -> Tensor {
        let labels = teacher.argmax(axis: 1)
        guard let threshold else { return Loss.crossEntropy(logits: student, labels: labels) }
        let confident = teacher.softmax(axis: 1).max(axes: [1]).greater(threshold)
        return (Loss.crossEntropy(logits: student, labels: labels, reduction: .none) * confident).mean()
    }

    /// Class ids at projector resolution: the stride-2 subsampling of the argmax of logits at 1/4 (SPEC §5).
    static func projectorLabels(_ logits: Tensor) -> Tensor {
        logits.argmax(axis: 1).slice(axis: 1, start: 0, end: logits.shape[2], step: 2)
            .slice(axis: 2, start: 0, end: logits.shape[3], step: 2)
    }

    public func step(_ batch: MethodBatch, context: StepContext) throws -> [String: Float] {
        studentNetwork.train(true)
        teacher.train(true)
        guard let labels = batch.labelled.labels, let unlabelled = batch.unlabelled,
              let strong = unlabelled.strongImages else {
            throw EngineError.invalidValue(op: "training", message:
                "cdcl needs a labelled batch and the weak and strong views of an unlabelled one")
        }
        let labelled = batch.labelled.images
        let size = [labelled.shape[2], labelled.shape[3]], count = labelled.shape[0]
        // The teacher sees the weak view at every step, its outputs unused before the unlabelled terms start, so
        // that its BatchNorm statistics (its own, not averaged) follow the weights it is validated with.
        let (teacherLogits, teacherProjections) = teacher.outputs(unlabelled.images)
        var terms: [String: Tensor], total: Tensor, current: CrossPatchContrast.Entries?
        let weight = context.epoch >= unlabelledFromEpoch ? Self.consistencyWeight(in: context) : 0
        if context.epoch >= unlabelledFromEpoch {
            let (logits, projections) = studentNetwork.outputs(.concat([labelled, strong], axis: 0))
            let studentLogits = logits.slice(axis: 0, start: count, end: logits.shape[0])
            let studentEntries = contrast.entries(
                projections: projections.slice(axis: 0, start: count, end: projections.shape[0]),
                labels: Self.projectorLabels(studentLogits))
            let teacherEntries = contrast.entries(projections: teacherProjections,
                                                  labels: Self.projectorLabels(teacherLogits))
            let labelledLogits = logits.slice(axis: 0, start: 0, end: count)
            terms = ["supervised": Loss.crossEntropy(logits: labelledLogits.interpolateBilinear(size: size,
                                                                                                alignCorners: true),
                                                     labels: labels),
                     "contrastive": contrast.loss(student: studentEntries, teacher: teacherEntries,
                                                  previous: bank.entries, groups: strong.shape[0]),
                     "consistency": Self.consistency(student: studentLogits, teacher: teacherLogits,
                                                     threshold: confidenceThreshold),
                     "entropy": Loss.entropy(logits: studentLogits)]
            total = terms["supervised"]! + Self.contrastWeight * terms["contrastive"]!
                + weight * terms["consistency"]! + Self.entropyWeight * terms["entropy"]!
            current = .joined([studentEntries, teacherEntries])
        } else {
            terms = ["supervised": Loss.crossEntropy(logits: studentNetwork(labelled), labels: labels)]
            total = terms["supervised"]!
        }
        let bankValues = current.map { [$0.features, $0.labels, $0.scores] } ?? []
        var values = try OptimizedNetwork.minimise(total, named: "loss", terms: terms, networks: [student],
                                                   alongside: teacher.pendingBufferUpdates() + bankValues,
                                                   context: context)
        for name in lossTerms where values[name] == nil { values[name] = 0 }
        values["consistency_weight"] = weight
        try teacher.commitBufferUpdates(on: context.backend)
        if let current { try bank.replace(with: current, on: context.backend) }
        try ema.update(from: studentNetwork, on: context.backend)
        return values
    }
}

extension CrossPatchDenseContrastMethod {
    /// The plans of the DenseUNet presets, shared with `supervised --option arch=denseunet` so that the two compare
    /// on equal terms: batch 8 (+ 8 unlabelled), 16 crops per image as the paper's 16 MoNuSeg crops, no early stop.
    /// Preset `paper`: 320² crops, Adam 1e-4 with poly decay per iteration, 80 epochs. Preset `cpu`: 128² crops,
    /// Adam 1e-3 poly (the encoder starts random and the run is short), 30 epochs.
    static func plan(_ preset: String, _ plan: inout TrainingPlan) {
        plan.batchSize = 8
        plan.unlabelledBatchSize = 8
        plan.cropsPerImage = 16
        plan.patience = nil
        switch preset {
        case "cpu":
            plan.patchSize = 128
            plan.length = .epochs(30)
            plan.optimizer = .adamPoly(learningRate: 1e-3)
        default:
            plan.patchSize = 320
            plan.length = .epochs(80)
            plan.optimizer = .adamPoly()
        }
    }

    static let presetSummary = "cpu: DenseUNet/cpu 128² batch 8+8, 16 crops per image, Adam 1e-3 poly, 30 epochs; "
        + "paper: DenseNet-161 UNet 320² batch 8+8, Adam 1e-4 poly, 80 epochs"

    static func card(_ preset: String, classes: Int, plan: TrainingPlan) -> ModelCard {
        ModelCard(architecture: "denseunet", preset: preset, classes: classes, pixelRange: plan.pixelRange)
    }

    /// `cdcl`.
    public static let registration = RegisteredMethod(
        name: "cdcl",
        paper: "CDCL: mean teacher + cross-patch dense contrastive learning + consistency + entropy (Wu et al. 2022)",
        defaults: presetSummary + "; EMA 0.999, τ 0.1, the paper's negative rule, unlabelled terms from epoch 5, "
            + "the teacher is evaluated",
        options: [
            MethodOption(name: "negatives", help: "paper (default: patches of the opposite type) or code "
                         + "(FS_q + FS_k ≤ 1)", allowed: CrossPatchContrast.NegativeRule.allCases.map(\.rawValue)),
            MethodOption(name: "tau", help: "the contrastive temperature τ (default 0.1)"),
            MethodOption(name: "threshold", help: "L_cons ignores pixels whose teacher max-probability is not above it "
                         + "(default: none)"),
            MethodOption(name: "ema-decay", help: "the teacher's EMA decay α (default 0.999)"),
            MethodOption(name: "unlabelled-from", help: "the epoch (from 0) at which the unlabelled terms start "
                         + "(default 5)"),
            DenseUNet.weightsOption,
        ],
        plan: { preset, plan, _ in CrossPatchDenseContrastMethod.plan(preset, &plan) },
        card: { preset, _, classes, plan in card(preset, classes: classes, plan: plan) },
        make: { preset, options, setup in
            let number = { (name: String, fallback: Double, requirement: String, isValid: (Double) -> Bool) in
                Float(try SemiSupervisedRecipe.number(options, name, method: "cdcl", default: fallback,
                                                      requirement: requirement, isValid: isValid))
            }
            let tau = try number("tau", Double(CrossPatchContrast.defaultTemperature), "a number > 0") { $0 > 0 }
            let decay = try number("ema-decay", 0.999, "a number in [0, 1]") { (0...1).contains($0) }
            let start = try number("unlabelled-from", 5, "a whole number ≥ 0") { $0 >= 0 && $0 == $0.rounded() }
            let threshold = options["threshold"] == nil ? nil
                : try number("threshold", 0, "a number in [0, 1)") { (0..<1).contains($0) }
            guard case .supervised(.denseUNet(let configuration)) = try card(preset, classes: setup.classes,
                                                                             plan: setup.plan).network else {
                throw EngineError.invalidValue(op: "--method cdcl", message: "needs the DenseUNet")
            }
            let seed = setup.plan.seed
            let student = ContrastiveDenseUNet(configuration, generator: RandomGenerator(seed: seed))
            let notice = try student.network.initializeEncoder(weights: options[DenseUNet.weightsOption.name])
            let method = try CrossPatchDenseContrastMethod(
                student: student,
                teacher: ContrastiveDenseUNet(configuration, generator: RandomGenerator(seed: seed &+ 1)),
                decay: decay,
                contrast: CrossPatchContrast(rule: .init(rawValue: options["negatives"] ?? "paper")!, temperature: tau),
                confidenceThreshold: threshold, unlabelledFromEpoch: Int(start), setup: setup)
            method.notices = [notice]
            return method
        })
}

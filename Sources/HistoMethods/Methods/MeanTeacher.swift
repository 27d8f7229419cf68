import Foundation
import HistoCore
import HistoData
import HistoNN

/// The teacher of MT and UAMT (SPEC §0.6, §8): a network of the student's architecture whose weights follow the
/// student's by EMA after every optimizer step (warm-up α_eff = min(1 − 1/(n + 1), α), so the first update copies
/// the student) and which sees the unlabelled images with Gaussian noise clamp(N(0, 0.1²), ±0.2).
///
/// Like SSL4MIS's `ema_model`, which is never switched to eval mode, the teacher runs in training mode: its
/// dropout is on, its BatchNorm normalises with batch statistics, and its own running statistics move with every
/// pass (only the parameters are averaged); validation evaluates it with those running statistics.
public final class NoisyMeanTeacher {
    public static let noiseStd: Float = 0.1
    public static let noiseBound: Float = 0.2

    public let model: any SegmentationModel
    public let ema: ExponentialMovingAverage
    /// Draws the input noise; checkpointed, so a resumed run draws what an uninterrupted one would.
    public let noise: RandomGenerator

    /// `model` becomes a copy of `student` (weights and statistics); its dropout keeps its own generator, so its
    /// masks are not the student's.
    public init(_ model: any SegmentationModel, student: any SegmentationModel, decay: Float,
                noiseSeed: UInt64) throws {
        try model.load(student.checkpointState().tensors, source: "the student")
        self.model = model
        ema = ExponentialMovingAverage(teacher: model, decay: decay, warmup: .meanTeacher)
        noise = RandomGenerator(seed: noiseSeed)
    }

    /// softmax(teacher(x + clamp(N(0, 0.1²), ±0.2))) of images [N, C, H, W], with fresh noise for each image.
    public func probabilities(of images: Tensor) -> Tensor {
        let perturbation = noise.normal(images.shape, std: Self.noiseStd)
            .clamp(min: -Self.noiseBound, max: Self.noiseBound)
        return model(images + perturbation).softmax(axis: 1)
    }
}

/// How a mean teacher's unlabelled loss compares the student with the teacher.
public protocol TeacherConsistency {
    /// The consistency loss of the student's probabilities [N, K, H, W] of the clean unlabelled `images` against
    /// the teacher's on noised copies of them.
    func loss(student: Tensor, images: Tensor, teacher: NoisyMeanTeacher, context: StepContext) -> Tensor
}

/// MT's consistency (SSL4MIS `train_mean_teacher_2D.py`): the mean over every element of
/// (softmax(student(u)) − softmax(teacher(u + noise)))².
public struct MeanSquaredConsistency: TeacherConsistency {
    public init() {}

    public func loss(student: Tensor, images: Tensor, teacher: NoisyMeanTeacher, context: StepContext) -> Tensor {
        (student - teacher.probabilities(of: images)).square().mean()
    }
}

/// Mean teacher (Tarvainen & Valpola 2017; SSL4MIS; SPEC §8), and UAMT with another `consistency`: the student
/// minimises the recipe's supervised loss on the labelled batch plus λ·consistency on the unlabelled one
/// (`LossRecipe`: SSL4MIS's ½(CE + Dice) and ramp by default),
/// then the teacher takes its EMA step toward the student. The teacher is the evaluated model, as the issue asks
/// ("the EMA teacher for MT"); SSL4MIS validates and keeps the student. docs/methods/mt.md.
public final class MeanTeacherMethod: TrainingMethod {
    public let student: OptimizedNetwork
    public let teacher: NoisyMeanTeacher
    public let consistency: any TeacherConsistency
    public let recipe: LossRecipe

    public init(student: any SegmentationModel, teacher: NoisyMeanTeacher, consistency: any TeacherConsistency,
                recipe: LossRecipe, setup: MethodSetup) {
        self.student = OptimizedNetwork(student, recipe: setup.plan.optimizer, totalSteps: setup.totalSteps)
        self.teacher = teacher
        self.consistency = consistency
        self.recipe = recipe
    }

    public var lossTerms: [String] { ["loss", "supervised", "consistency", "consistency_weight"] }
    public var dataNeeds: DataNeeds { DataNeeds(labelledViews: .weak, unlabelledViews: .weak) }
    public var evaluatedModel: any SegmentationModel { teacher.model }
    public var components: [String: any CheckpointableState] {
        ["student": student.model, "optimizer": student.optimizer, "ema": teacher.ema, "noise": teacher.noise]
    }
    public var learningRate: Float { student.optimizer.learningRate }

    public func step(_ batch: MethodBatch, context: StepContext) throws -> [String: Float] {
        student.model.train(true)
        teacher.model.train(true)
        let joint = try JointBatch(batch)
        let logits = student.model(joint.images)
        let supervised = joint.supervisedLoss(logits, recipe)
        let consistency = self.consistency.loss(student: joint.unlabelled(logits).softmax(axis: 1),
                                                images: batch.unlabelled!.images, teacher: teacher,
                                                context: context)
        let values = try recipe.minimise(
            supervised: supervised, unlabelled: consistency,
            terms: ["supervised": supervised, "consistency": consistency], networks: [student],
            alongside: teacher.model.pendingBufferUpdates(), context: context)
        try teacher.model.commitBufferUpdates(on: context.backend)
        try teacher.ema.update(from: student.model, on: context.backend)
        return values
    }

    /// `mt`: MeanSquaredConsistency.
    public static let registration = meanTeacherRegistration(
        name: "mt", paper: "mean teacher (Tarvainen & Valpola 2017), SSL4MIS version",
        defaults: SemiSupervisedRecipe.presetSummary + "; EMA 0.99, the teacher is evaluated",
        options: []) { _, _ in MeanSquaredConsistency() }

    /// A mean-teacher registration: the family's presets and options, `ema-decay` and `options`; `consistency`
    /// reads the method's own options.
    static func meanTeacherRegistration(name: String, paper: String, defaults: String, options: [MethodOption],
                                        consistency: @escaping @Sendable (_ options: [String: String],
                                                                          _ method: String) throws
                                            -> any TeacherConsistency) -> RegisteredMethod {
        SemiSupervisedRecipe.registration(
            name: name, paper: paper, defaults: defaults,
            options: [MethodOption(name: "ema-decay", help: "the teacher's EMA decay α (default 0.99)")] + options
        ) { preset, options, setup in
            let decay = try SemiSupervisedRecipe.number(options, "ema-decay", method: name, default: 0.99,
                                                        requirement: "a number in [0, 1]") { (0...1).contains($0) }
            let seed = setup.plan.seed
            let student = try SemiSupervisedRecipe.model(preset, options, setup: setup, seed: seed)
            let teacher = try NoisyMeanTeacher(
                SemiSupervisedRecipe.model(preset, options, setup: setup, seed: seed &+ 1), student: student,
                decay: Float(decay), noiseSeed: seed &+ 2)
            return MeanTeacherMethod(student: student, teacher: teacher, consistency: try consistency(options, name),
                                     recipe: try SemiSupervisedRecipe.lossRecipe(options, method: name, setup: setup),
                                     setup: setup)
        }
    }
}

import Foundation
import HistoCore
import HistoData
import HistoDiffusion
import HistoNN

/// How a Ciampi mask pathway segments (SPEC §3 "Inference", recorded in `model.json`): one x̂₀ step from the
/// pure-noise mask v_m at a random t (the paper), or the mean of the class probabilities over `draws` such steps
/// (ours). The draws come from a generator seeded with `seed` at every call, so a trained model segments the same
/// images the same way whatever else it segmented before.
public struct DiffusionInference: Codable, Equatable, Sendable {
    /// The β schedule (`NoiseSchedule.Kind` raw value): linear (paper) or sigmoid (companion code).
    public var schedule: String
    public var draws: Int
    public var seed: UInt64

    public init(schedule: NoiseSchedule.Kind, draws: Int = 1, seed: UInt64 = 0) {
        self.schedule = schedule.rawValue
        self.draws = draws
        self.seed = seed
    }

    public var kind: NoiseSchedule.Kind {
        get throws {
            guard let kind = NoiseSchedule.Kind(rawValue: schedule), draws >= 1 else {
                throw EngineError.invalidValue(op: "ModelCard", message: "diffusion schedule '\(schedule)' with "
                    + "\(draws) draws: needs one of \(NoiseSchedule.Kind.allCases.map(\.rawValue)) and ≥ 1 draw")
            }
            return kind
        }
    }
}

/// The mask pathway f_m of Ciampi et al.'s teacher (`net_seg`, an x̂₀-predicting `ConditionalUNet`) with the 3×3
/// `final_conv` readout of the released `DDPMUNet`, as a segmentation network. Images arrive in [−1, 1], i.e. already
/// norm(i) = 2i − 1 (SPEC §3 normalises targets and conditioners that way). The mask estimate x̂₀ =
/// f_m(q_sample(norm(0), t, ε), norm(i), t) lies in the normalised mask space; m̂ = unnorm(x̂₀) = (x̂₀ + 1)/2
/// and the class logits are final_conv(m̂). The released code trains `final_conv` as a label readout during teacher
/// pretraining (it fixes which output channel is which class); we keep it as the logits layer in every stage so that
/// the pretrained teacher's readout carries over to co-training and to inference. The student of stage 2 is a second
/// instance. Parameter names are the released ones: `net_seg.*`, `final_conv.*`.
public final class DiffusionMaskSegmenter: Module, SegmentationModel {
    public let maskPathway: ConditionalUNet
    let readout: Conv2d
    public let schedule: NoiseSchedule
    public let inference: DiffusionInference

    public init(_ configuration: ConditionalUNet.Configuration, inference: DiffusionInference,
                generator: RandomGenerator) throws {
        maskPathway = try ConditionalUNet(configuration, generator: generator)
        let classes = configuration.targetChannels
        readout = Conv2d(classes, classes, kernel: 3, padding: 1, generator: generator)
        // Kaiming-normal (fan_in) weight, zero bias: the released `init_weights(…, 'kaiming')` covers the readout.
        readout.weight.value = try Initializer.kaimingNormal(readout.weight.shape, a: 0, mode: .fanIn,
                                                            generator: generator).materialized()
        readout.bias?.value = Tensor.zeros(readout.bias?.shape ?? [])
        schedule = NoiseSchedule(try inference.kind)
        self.inference = inference
        super.init()
    }

    public override func members() -> [(key: String, member: ModuleMember)] {
        [("net_seg", .module(maskPathway)), ("final_conv", .module(readout))]
    }

    public var classes: Int { maskPathway.configuration.targetChannels }
    public var inputMultiple: Int { maskPathway.inputMultiple }

    /// x̂₀ [N, K, H, W] of images [N, 3, H, W] in [−1, 1] from v_m = q_sample(−1, t, `noise`) at timesteps
    /// t [N].
    public func maskEstimate(images: Tensor, timesteps: Tensor, noise: Tensor) -> Tensor {
        let pureNoise = schedule.qSample(x0: .full(noise.shape, -1), noise: noise, t: timesteps)
        return maskPathway(pureNoise, timesteps: timesteps, context: images)
    }

    /// Class logits final_conv(unnorm(x̂₀)) of a mask estimate.
    public func logits(maskEstimate: Tensor) -> Tensor { readout((maskEstimate + 1) * 0.5) }

    /// Class logits of images in [−1, 1]: one step at a seeded random t, or log of the mean softmax over
    /// `inference.draws` steps (softmax of it is that mean, so probabilities and argmax mean what they say).
    public func callAsFunction(_ x: Tensor) -> Tensor {
        let generator = RandomGenerator(seed: inference.seed)
        let n = x.shape.first ?? 0
        let shape = [n, classes] + Array(x.shape.dropFirst(2))
        let draws = (0..<inference.draws).map { _ in
            logits(maskEstimate: maskEstimate(images: x, timesteps: generator.integers([n], 0, schedule.steps),
                                              noise: generator.normal(shape)))
        }
        guard draws.count > 1 else { return draws[0] }
        return draws.map { $0.softmax(axis: 1) }.averaged().maximum(Tensor(scalar: 1e-30)).log()
    }
}

/// Ciampi et al.'s teacher (`DDPMUNet`, SPEC §3): the mask pathway and readout (`DiffusionMaskSegmenter`) and the
/// image pathway f_i (`net`, an ε-predicting `ConditionalUNet` on the noisy image ⊕ the normalised mask). As a
/// segmentation network it is its mask pathway, so that the best checkpoint of pretraining holds both pathways.
public final class DiffusionTeacher: Module, SegmentationModel {
    public let segmenter: DiffusionMaskSegmenter
    public let imagePathway: ConditionalUNet

    public init(segmenter: DiffusionMaskSegmenter, image: ConditionalUNet.Configuration,
                generator: RandomGenerator) throws {
        self.segmenter = segmenter
        imagePathway = try ConditionalUNet(image, generator: generator)
        super.init()
    }

    /// The segmenter's members unprefixed, then `net.*`: the released parameter names.
    public override func members() -> [(key: String, member: ModuleMember)] {
        [("", .module(segmenter)), ("net", .module(imagePathway))]
    }

    public var classes: Int { segmenter.classes }
    public var inputMultiple: Int { segmenter.inputMultiple }
    public func callAsFunction(_ x: Tensor) -> Tensor { segmenter(x) }

    /// The image pathway on images [N, 3, H, W] in [−1, 1] noised at timesteps t with `noise`, conditioned on a
    /// mask estimate x̂₀ (normalised mask space): ε̂ and the reconstruction
    /// î = √(1/ᾱ_t)·ĩ − √(1/ᾱ_t − 1)·ε̂
    /// (SPEC §3: the paper's Eq. 3 prints "+", the x₀ of DDPM has "−").
    public func reconstruct(images: Tensor, mask: Tensor, timesteps: Tensor,
                            noise: Tensor) -> (epsilon: Tensor, image: Tensor) {
        let schedule = segmenter.schedule
        let noisy = schedule.qSample(x0: images, noise: noise, t: timesteps)
        let epsilon = imagePathway(noisy, timesteps: timesteps, context: mask)
        return (epsilon, schedule.predictX0(xt: noisy, output: epsilon, t: timesteps, target: .epsilon))
    }
}

/// What the reconstruction terms compare (SPEC §3, §9 item 6).
public enum ReconstructionLoss: String, CaseIterable, Sendable {
    /// mean (ε − ε̂)², the released code's and our default: (i − î)² is the same error weighted by 1/ᾱ_t
    /// − 1 per sample, up to 2.5·10⁴ at the last linear-β step, which lets the noisiest draws swamp every other
    /// term.
    case noise
    /// mean (i − î)² in the [−1, 1] image space, the paper's Eq. 7 and 14.
    case image

    func value(images: Tensor, noise: Tensor, reconstruction: (epsilon: Tensor, image: Tensor)) -> Tensor {
        switch self {
        case .noise: return (noise - reconstruction.epsilon).square().mean()
        case .image: return (images - reconstruction.image).square().mean()
        }
    }
}

/// The draws of one pretraining step: t and ε of the pure-noise mask, t′ and ε of the noised image.
public struct CycleDraws {
    public let maskTimesteps: Tensor, maskNoise: Tensor, imageTimesteps: Tensor, imageNoise: Tensor

    public init(maskTimesteps: Tensor, maskNoise: Tensor, imageTimesteps: Tensor, imageNoise: Tensor) {
        (self.maskTimesteps, self.maskNoise) = (maskTimesteps, maskNoise)
        (self.imageTimesteps, self.imageNoise) = (imageTimesteps, imageNoise)
    }

    /// Draws for images [N, C, H, W] and K classes from `generator`, t uniform over the schedule's steps.
    public init(images: Tensor, classes: Int, steps: Int, generator: RandomGenerator) {
        let n = images.shape[0], size = Array(images.shape.dropFirst(2))
        self.init(maskTimesteps: generator.integers([n], 0, steps), maskNoise: generator.normal([n, classes] + size),
                  imageTimesteps: generator.integers([n], 0, steps), imageNoise: generator.normal(images.shape))
    }
}

/// Stage 1, unsupervised teacher pretraining (Ciampi et al. §3.1; SPEC §3): on the labelled and unlabelled images of
/// the step together, m̂ = f_m(i, v_m, t) and ĩ′ noised at t′ reconstruct the image through f_i(ĩ′, m̂,
/// t′), L_teacher the reconstruction loss, its gradient reaching f_m through m̂. As in the released code,
/// `final_conv` alone learns the XNet Dice loss of final_conv(m̂) on the labelled images (m̂ detached there, so the
/// labels reach no other weight). The teacher is the evaluated model (the paper preset validates by `jaccard-sweep`,
/// the paper's best-JI checkpoint); its `best.safetensors` initialises stage 2 (`diffusion-ts --option teacher=RUN`).
public final class DiffusionTeacherPretraining: TrainingMethod {
    public let teacher: DiffusionTeacher
    public let network: OptimizedNetwork
    public let reconstruction: ReconstructionLoss
    public let noise: RandomGenerator

    public init(teacher: DiffusionTeacher, reconstruction: ReconstructionLoss, setup: MethodSetup) {
        self.teacher = teacher
        network = OptimizedNetwork(teacher, recipe: setup.plan.optimizer, totalSteps: setup.totalSteps,
                                   stepsPerEpoch: setup.stepsPerEpoch)
        self.reconstruction = reconstruction
        noise = RandomGenerator(seed: setup.plan.seed &+ 2)
    }

    public var lossTerms: [String] { ["loss", "reconstruction", "readout_dice"] }
    public var dataNeeds: DataNeeds { DataNeeds(labelledViews: .weak, unlabelledViews: .weak) }
    public var evaluatedModel: any SegmentationModel { teacher }
    public var components: [String: any CheckpointableState] { ["optimizer": network.optimizer, "noise": noise] }
    public var learningRate: Float { network.optimizer.learningRate }

    public func step(_ batch: MethodBatch, context: StepContext) throws -> [String: Float] {
        let joint = try JointBatch(batch)
        let draws = CycleDraws(images: joint.images, classes: teacher.classes, steps: teacher.segmenter.schedule.steps,
                               generator: noise)
        return try step(joint, draws: draws, context: context)
    }

    func step(_ joint: JointBatch, draws: CycleDraws, context: StepContext) throws -> [String: Float] {
        teacher.train(true)
        let terms = losses(joint, draws: draws)
        return try OptimizedNetwork.minimise(terms["reconstruction"]! + terms["readout_dice"]!, named: "loss",
                                             terms: terms, networks: [network], context: context)
    }

    /// L_teacher and the readout's Dice loss.
    func losses(_ joint: JointBatch, draws: CycleDraws) -> [String: Tensor] {
        let segmenter = teacher.segmenter
        let mask = segmenter.maskEstimate(images: joint.images, timesteps: draws.maskTimesteps, noise: draws.maskNoise)
        let reconstructed = teacher.reconstruct(images: joint.images, mask: mask, timesteps: draws.imageTimesteps,
                                                noise: draws.imageNoise)
        let readout = segmenter.logits(maskEstimate: joint.labelled(mask).detach())
        return ["reconstruction": reconstruction.value(images: joint.images, noise: draws.imageNoise,
                                                       reconstruction: reconstructed),
                "readout_dice": Loss.dice(probabilities: readout.softmax(axis: 1), labels: joint.labels,
                                           variant: .xnet)]
    }
}

/// The draws of one co-training step: t and ε of v_m (the teacher and the student share them, Eq. 8), and per
/// round r the image's t′_r and ε and the re-segmentation's t″_r and ε.
public struct CoTrainingDraws {
    public let first: (timesteps: Tensor, noise: Tensor)
    public let rounds: [(image: (timesteps: Tensor, noise: Tensor), mask: (timesteps: Tensor, noise: Tensor))]

    public init(first: (timesteps: Tensor, noise: Tensor),
                rounds: [(image: (timesteps: Tensor, noise: Tensor), mask: (timesteps: Tensor, noise: Tensor))]) {
        self.first = first
        self.rounds = rounds
    }

    public init(images: Tensor, classes: Int, steps: Int, rounds: Int, generator: RandomGenerator) {
        let n = images.shape[0], maskShape = [n, classes] + Array(images.shape.dropFirst(2))
        let mask = { (timesteps: generator.integers([n], 0, steps), noise: generator.normal(maskShape)) }
        let image = { (timesteps: generator.integers([n], 0, steps), noise: generator.normal(images.shape)) }
        self.init(first: mask(), rounds: (0..<rounds).map { _ in (image: image(), mask: mask()) })
    }
}

/// Stage 2, teacher–student co-training with multi-round diffusion (Ciampi et al. §3.2–3.3, Eq. 8–16; SPEC §3).
/// The teacher (from stage 1) and a student of the mask pathway's architecture, initialised independently, see the
/// labelled and the unlabelled batch together, with the same v_m and t (Eq. 8). Every image gets L_semi = CE(m̂^S,
/// argmax m̂^T) + CE(m̂^T, argmax m̂^S) (targets without gradient, as in CPS); the labelled ones L_sup = CE(m̂^T,
/// l) + CE(m̂^S, l). Rounds r = 1…R start from m̂₀ = m̂^T: î_r = f_i^T(ĩ_r, m̂_{r−1}, t′_r), m̂_r =
/// f_m^T(î_r, v_m, t″_r), L_align,r = CE(m̂_r, l̂) with l̂ = l on labelled images and argmax m̂^S elsewhere,
/// L_recon,r the reconstruction loss of î_r. The step minimises L_sup + λ·(L_semi + (1/R)Σ L_align,r + (1/R)Σ
/// L_recon,r) over both networks, λ = λ_max·min((e + 1)/E, 1) (the released baselines' ramp, `LossRecipe.xnet`). As
/// Eq. 16 reads, the λ terms cover the labelled images too. The student is the evaluated model.
public final class DiffusionTeacherStudent: TrainingMethod {
    public let teacherNetwork: OptimizedNetwork
    public let studentNetwork: OptimizedNetwork
    public let teacher: DiffusionTeacher
    public let student: DiffusionMaskSegmenter
    public let rounds: Int
    public let reconstruction: ReconstructionLoss
    public let ramp: LossRecipe
    public let noise: RandomGenerator
    public var notices: [String] = []

    public init(teacher: DiffusionTeacher, student: DiffusionMaskSegmenter, rounds: Int,
                reconstruction: ReconstructionLoss, maximumWeight: Float, setup: MethodSetup) {
        self.teacher = teacher
        self.student = student
        let network = { (model: any SegmentationModel) in
            OptimizedNetwork(model, recipe: setup.plan.optimizer, totalSteps: setup.totalSteps,
                             stepsPerEpoch: setup.stepsPerEpoch)
        }
        teacherNetwork = network(teacher)
        studentNetwork = network(student)
        self.rounds = rounds
        self.reconstruction = reconstruction
        ramp = .xnet(maximum: maximumWeight)
        noise = RandomGenerator(seed: setup.plan.seed &+ 2)
    }

    public var lossTerms: [String] {
        ["loss", "supervised_teacher", "supervised_student", "pseudo_teacher", "pseudo_student", "alignment",
         "reconstruction", "consistency_weight"]
    }
    public var dataNeeds: DataNeeds { DataNeeds(labelledViews: .weak, unlabelledViews: .weak) }
    public var evaluatedModel: any SegmentationModel { student }
    public var components: [String: any CheckpointableState] {
        ["teacher": teacher, "teacher_optimizer": teacherNetwork.optimizer, "optimizer": studentNetwork.optimizer,
         "noise": noise]
    }
    public var learningRate: Float { studentNetwork.optimizer.learningRate }

    public func step(_ batch: MethodBatch, context: StepContext) throws -> [String: Float] {
        let joint = try JointBatch(batch)
        let draws = CoTrainingDraws(images: joint.images, classes: student.classes,
                                    steps: student.schedule.steps, rounds: rounds, generator: noise)
        return try step(joint, draws: draws, context: context)
    }

    func step(_ joint: JointBatch, draws: CoTrainingDraws, context: StepContext) throws -> [String: Float] {
        teacher.train(true)
        student.train(true)
        let terms = losses(joint, draws: draws)
        return try ramp.minimise(
            supervised: terms["supervised_teacher"]! + terms["supervised_student"]!,
            unlabelled: terms["pseudo_teacher"]! + terms["pseudo_student"]! + terms["alignment"]!
                + terms["reconstruction"]!,
            terms: terms, networks: [teacherNetwork, studentNetwork], context: context)
    }

    /// Every term of Eq. 16, the alignment and reconstruction terms averaged over the rounds.
    func losses(_ joint: JointBatch, draws: CoTrainingDraws) -> [String: Tensor] {
        let segmenter = teacher.segmenter
        let teacherMask = segmenter.maskEstimate(images: joint.images, timesteps: draws.first.timesteps,
                                                 noise: draws.first.noise)
        let teacherLogits = segmenter.logits(maskEstimate: teacherMask)
        let studentLogits = student.logits(maskEstimate: student.maskEstimate(
            images: joint.images, timesteps: draws.first.timesteps, noise: draws.first.noise))
        let studentLabels = studentLogits.argmax(axis: 1)
        let targets = Tensor.concat([joint.labels, joint.unlabelled(studentLabels)], axis: 0)
        var previous = teacherMask, alignment: [Tensor] = [], reconstructions: [Tensor] = []
        for round in draws.rounds {
            let reconstructed = teacher.reconstruct(images: joint.images, mask: previous,
                                                    timesteps: round.image.timesteps, noise: round.image.noise)
            reconstructions.append(reconstruction.value(images: joint.images, noise: round.image.noise,
                                                        reconstruction: reconstructed))
            previous = segmenter.maskEstimate(images: reconstructed.image, timesteps: round.mask.timesteps,
                                              noise: round.mask.noise)
            alignment.append(Loss.crossEntropy(logits: segmenter.logits(maskEstimate: previous), labels: targets))
        }
        return [
            "supervised_teacher": Loss.crossEntropy(logits: joint.labelled(teacherLogits), labels: joint.labels),
            "supervised_student": Loss.crossEntropy(logits: joint.labelled(studentLogits), labels: joint.labels),
            "pseudo_teacher": Loss.crossEntropy(logits: teacherLogits, labels: studentLabels),
            "pseudo_student": Loss.crossEntropy(logits: studentLogits, labels: teacherLogits.argmax(axis: 1)),
            "alignment": alignment.averaged(), "reconstruction": reconstructions.averaged(),
        ]
    }
}

/// The presets, recipes, options and registrations of the two stages (docs/methods/diffusion-ts.md).
enum CiampiDiffusion {
    /// `recipe=paper` (Appendix A) or `recipe=code` (the companion repository's defaults), SPEC §3, §9 item 6.
    enum Recipe: String, CaseIterable {
        case paper, code

        /// The β schedule: linear 1e-4 → 0.02 (paper) or lucidrains' sigmoid (code).
        var schedule: NoiseSchedule.Kind { self == .paper ? .linear : .sigmoid }

        /// Adam 0.01 (0.9, 0.99), wd 5e-5, StepLR ×0.1 every 50 epochs; or SGD 0.5, momentum 0.9, wd 5e-5, a
        /// 20-epoch linear warm-up, StepLR ×0.5 every 50 epochs. The cpu preset starts Adam at 1e-3.
        func optimizer(_ preset: String) -> OptimizerRecipe {
            switch self {
            case .paper: return .adamStepLR(learningRate: preset == "cpu" ? 1e-3 : 0.01)
            case .code: return .sgdStepLR()
            }
        }
    }

    static let presetSummary = "cpu: dim-16 pathways, 64² crops (4 per image), batch 4+4, 30 epochs; paper: dim-64 "
        + "pathways (7.4M parameters each), 128² crops (1 per image), batch 2+2 (the companion code's), 200 epochs; "
        + "recipe paper: Adam 0.01 (cpu 1e-3), β (0.9, 0.99), wd 5e-5, StepLR ×0.1 / 50 epochs, linear β; recipe "
        + "code: SGD 0.5 momentum 0.9, wd 5e-5, 20-epoch warm-up, StepLR ×0.5 / 50 epochs, sigmoid β; no early stop; "
        + "paper validates by the threshold-swept Jaccard"

    static let sharedOptions = [
        MethodOption(name: "recipe", help: "paper (default: Adam, linear β) or code (SGD 0.5, sigmoid β)",
                     allowed: Recipe.allCases.map(\.rawValue)),
        MethodOption(name: "reconstruction", help: "noise (default, the released code's ε-MSE) or image (the "
                     + "paper's (i − î)²)", allowed: ReconstructionLoss.allCases.map(\.rawValue)),
        MethodOption(name: "draws", help: "inference averages the probabilities of this many random t (default 1, "
                     + "the paper's single step)"),
    ]

    static func recipe(_ options: [String: String]) -> Recipe { Recipe(rawValue: options["recipe"] ?? "paper")! }

    static func plan(_ preset: String, _ plan: inout TrainingPlan, _ options: [String: String]) {
        plan.pixelRange = .minusOneToOne
        plan.patience = nil
        plan.optimizer = recipe(options).optimizer(preset)
        if preset == "cpu" {
            plan.patchSize = 64
            plan.cropsPerImage = 4
            plan.batchSize = 4
            plan.length = .epochs(30)
        } else {
            plan.patchSize = 128
            plan.cropsPerImage = 1
            plan.batchSize = 2
            plan.length = .epochs(200)
            // The paper keeps the best validation Jaccard over the swept thresholds (binary tasks; the cpu preset
            // keeps the trainer's Dice so that it also trains the 3-class nuclei target).
            plan.metric = .jaccardSweep
        }
    }

    static func card(_ architecture: String, _ preset: String, _ options: [String: String], classes: Int,
                     plan: TrainingPlan, method: String) throws -> ModelCard {
        let draws = try SemiSupervisedRecipe.count(options, "draws", method: method, default: 1)
        var card = ModelCard(architecture: architecture, preset: preset, classes: classes, pixelRange: plan.pixelRange)
        card.diffusion = DiffusionInference(schedule: recipe(options).schedule, draws: draws, seed: plan.seed)
        return card
    }

    static func reconstruction(_ options: [String: String]) -> ReconstructionLoss {
        ReconstructionLoss(rawValue: options["reconstruction"] ?? "noise")!
    }

    /// A fresh teacher of the preset, weights drawn from the plan's seed.
    static func teacher(_ preset: String, _ options: [String: String], setup: MethodSetup,
                        method: String) throws -> DiffusionTeacher {
        let card = try card("diffusion-teacher", preset, options, classes: setup.classes, plan: setup.plan,
                            method: method)
        return try card.makeModel(generator: RandomGenerator(seed: setup.plan.seed)) as! DiffusionTeacher
    }

    /// Loads the stage-1 teacher at `path` (a `diffusion-teacher` run folder or its weights) into `teacher`;
    /// throws naming the option when the run is not a teacher of the same preset, classes and schedule.
    static func loadTeacher(_ path: String, into teacher: DiffusionTeacher, preset: String) throws {
        let trained = try TrainedModel(path: path)
        let card = trained.card
        guard card.architecture == "diffusion-teacher", card.preset == preset, card.classes == teacher.classes,
              card.diffusion?.schedule == teacher.segmenter.inference.schedule else {
            throw EngineError.invalidValue(op: "--method diffusion-ts", message: "option teacher=\(path) must be a "
                + "diffusion-teacher run of preset \(preset), \(teacher.classes) classes and the "
                + "\(teacher.segmenter.inference.schedule) schedule (it is \(card.architecture)/\(card.preset), "
                + "\(card.classes) classes, schedule \(card.diffusion?.schedule ?? "none"))")
        }
        try teacher.load(trained.network.checkpointState().tensors, source: trained.weightsPath)
    }

    /// `diffusion-teacher`: stage 1.
    static let teacherRegistration = RegisteredMethod(
        name: "diffusion-teacher",
        paper: "Ciampi et al. (paper 002) stage 1: unsupervised cycle-consistency pretraining of the diffusion "
            + "teacher (mask and image pathways) with the released code's Dice readout",
        defaults: presetSummary + "; the teacher is evaluated",
        options: sharedOptions,
        plan: { preset, plan, options in CiampiDiffusion.plan(preset, &plan, options) },
        card: { preset, options, classes, plan in
            try card("diffusion-teacher", preset, options, classes: classes, plan: plan, method: "diffusion-teacher")
        },
        make: { preset, options, setup in
            let teacher = try teacher(preset, options, setup: setup, method: "diffusion-teacher")
            return DiffusionTeacherPretraining(teacher: teacher, reconstruction: reconstruction(options), setup: setup)
        })

    /// `diffusion-ts`: stage 2.
    static let studentRegistration = RegisteredMethod(
        name: "diffusion-ts",
        paper: "Ciampi et al. (paper 002) stage 2: teacher–student co-training (CPS both ways, supervised CE) with "
            + "multi-round diffusion",
        defaults: presetSummary + "; R 5, λ_max 5, the student is evaluated",
        options: sharedOptions + [
            MethodOption(name: "teacher", help: "the diffusion-teacher run (folder or weights) that initialises the "
                         + "teacher; `{cell}` stands for the run's labels-…/seed-… (for `histodiff experiment`); "
                         + "without it the teacher starts at random (the paper's ablation)"),
            MethodOption(name: "rounds", help: "R, the rounds of multi-round diffusion (default 5)"),
            MethodOption(name: "lambda", help: "λ_max, the weight of the unlabelled terms at the last epoch "
                         + "(default 5)"),
        ],
        plan: { preset, plan, options in CiampiDiffusion.plan(preset, &plan, options) },
        card: { preset, options, classes, plan in
            try card("diffusion-mask", preset, options, classes: classes, plan: plan, method: "diffusion-ts")
        },
        make: { preset, options, setup in
            let method = "diffusion-ts"
            let teacher = try teacher(preset, options, setup: setup, method: method)
            var notice = "teacher initialised at random (no teacher=…: the paper's ablation without pretraining)"
            if let path = options["teacher"] {
                let resolved = Experiment.resolvingCell(path, plan: setup.plan)
                try loadTeacher(resolved, into: teacher, preset: preset)
                notice = "teacher initialised from the stage-1 run \(resolved)"
            }
            let card = try card("diffusion-mask", preset, options, classes: setup.classes, plan: setup.plan,
                                method: method)
            let student = try card.makeModel(generator: RandomGenerator(seed: setup.plan.seed &+ 1))
            let lambda = try SemiSupervisedRecipe.number(options, "lambda", method: method, default: 5,
                                                         requirement: "a number ≥ 0") { $0 >= 0 }
            let result = DiffusionTeacherStudent(
                teacher: teacher, student: student as! DiffusionMaskSegmenter,
                rounds: try SemiSupervisedRecipe.count(options, "rounds", method: method, default: 5),
                reconstruction: reconstruction(options), maximumWeight: Float(lambda), setup: setup)
            result.notices = [notice]
            return result
        })
}

import HistoCore
import HistoData
import HistoNN

/// Cross pseudo supervision (Chen et al., CVPR 2021; SPEC §8 "CPS"), as SSL4MIS's
/// `train_cross_pseudo_supervision_2D.py` trains it: two networks of the same architecture, initialised
/// differently, each with its own optimizer, see the same joint batch. Each is supervised on the labelled images,
/// L_sup,i (the recipe's: ½(CE + Dice) by default), and learns from the other's hard labels on the unlabelled
/// images, L_cps,i = CE(logits_i, argmax logits_j) (the argmax carries no gradient). The step minimises
/// L_sup,1 + L_sup,2 + λ·(L_cps,1 + L_cps,2) with the recipe's λ (`LossRecipe`: SSL4MIS's ramp). The original CPS
/// applies the pseudo-supervision to the labelled images as well (`pseudoSupervisesLabelled`).
/// Network 1 is the evaluated one. docs/methods/cps.md.
public final class CrossPseudoSupervisionMethod: TrainingMethod {
    public let first: OptimizedNetwork
    public let second: OptimizedNetwork
    public let recipe: LossRecipe
    public let pseudoSupervisesLabelled: Bool

    /// The first network trains with the plan's optimizer, the second with the same recipe at `secondLearningRate`
    /// (DTSeg's version: 0.02).
    public init(first: any SegmentationModel, second: any SegmentationModel, secondLearningRate: Float,
                recipe: LossRecipe, pseudoSupervisesLabelled: Bool, setup: MethodSetup) {
        self.first = OptimizedNetwork(first, recipe: setup.plan.optimizer, totalSteps: setup.totalSteps)
        self.second = OptimizedNetwork(second, recipe: setup.plan.optimizer.with(learningRate: secondLearningRate),
                                       totalSteps: setup.totalSteps)
        self.recipe = recipe
        self.pseudoSupervisesLabelled = pseudoSupervisesLabelled
    }

    public var lossTerms: [String] {
        ["loss", "supervised_1", "supervised_2", "pseudo_supervision_1", "pseudo_supervision_2", "consistency_weight"]
    }
    public var dataNeeds: DataNeeds { DataNeeds(labelledViews: .weak, unlabelledViews: .weak) }
    public var evaluatedModel: any SegmentationModel { first.model }
    public var components: [String: any CheckpointableState] {
        ["optimizer": first.optimizer, "second": second.model, "second_optimizer": second.optimizer]
    }
    public var learningRate: Float { first.optimizer.learningRate }

    public func step(_ batch: MethodBatch, context: StepContext) throws -> [String: Float] {
        let joint = try JointBatch(batch)
        first.model.train(true)
        second.model.train(true)
        let logits1 = first.model(joint.images), logits2 = second.model(joint.images)
        let supervised1 = joint.supervisedLoss(logits1, recipe), supervised2 = joint.supervisedLoss(logits2, recipe)
        let pseudoSupervised: (Tensor) -> Tensor = pseudoSupervisesLabelled ? { $0 } : joint.unlabelled
        let scores1 = pseudoSupervised(logits1), scores2 = pseudoSupervised(logits2)
        // argmax of the logits = argmax of SSL4MIS's softmax; it has no gradient, like the reference's detach.
        let pseudo1 = Loss.crossEntropy(logits: scores1, labels: scores2.argmax(axis: 1))
        let pseudo2 = Loss.crossEntropy(logits: scores2, labels: scores1.argmax(axis: 1))
        return try recipe.minimise(
            supervised: supervised1 + supervised2, unlabelled: pseudo1 + pseudo2,
            terms: ["supervised_1": supervised1, "supervised_2": supervised2, "pseudo_supervision_1": pseudo1,
                    "pseudo_supervision_2": pseudo2],
            networks: [first, second], context: context)
    }

    /// `cps`: two networks of the preset (`arch`), weights and dropout drawn from seeds `seed` and `seed + 1`; the
    /// family's presets and ramp (`SemiSupervisedRecipe`). Network 2's learning rate is 0.02 in `paper` (DTSeg) and
    /// network 1's in `cpu`, or `lr2`.
    public static let registration = SemiSupervisedRecipe.registration(
        name: "cps", paper: "cross pseudo supervision (Chen et al. 2021), SSL4MIS version with DTSeg's lr₂ = 0.02",
        defaults: SemiSupervisedRecipe.presetSummary + "; network 2 at lr 0.02 in paper, network 1 is evaluated",
        options: [MethodOption(name: "lr2", help: "network 2's learning rate (paper 0.02, cpu network 1's)"),
                  MethodOption(name: "pseudo", help: "unlabelled (default, SSL4MIS) or all images (the original CPS)",
                               allowed: ["unlabelled", "all"])]
    ) { preset, options, setup in
        let seed = setup.plan.seed
        let firstLearningRate = Double(setup.plan.optimizer.learningRate)
        let secondLearningRate = try SemiSupervisedRecipe.number(
            options, "lr2", method: "cps", default: preset == "paper" ? 0.02 : firstLearningRate,
            requirement: "a positive number") { $0 > 0 }
        return CrossPseudoSupervisionMethod(
            first: try SemiSupervisedRecipe.model(preset, options, setup: setup, seed: seed),
            second: try SemiSupervisedRecipe.model(preset, options, setup: setup, seed: seed &+ 1),
            secondLearningRate: Float(secondLearningRate),
            recipe: try SemiSupervisedRecipe.lossRecipe(options, method: "cps", setup: setup),
            pseudoSupervisesLabelled: options["pseudo"] == "all", setup: setup)
    }
}

import HistoCore
import HistoData
import HistoNN

/// Entropy minimisation (Grandvalet & Bengio 2005; Vu et al. 2019 for segmentation; SSL4MIS
/// `train_entropy_minimization_2D.py`; SPEC §8): one network minimises the recipe's supervised loss on the labelled
/// batch plus λ·mean(−Σ_c p log(p + 1e-6))/log C over the unlabelled pixels (`LossRecipe`), which pushes its
/// unlabelled predictions toward confident ones. docs/methods/em.md.
public final class EntropyMinimisationMethod: TrainingMethod {
    public let network: OptimizedNetwork
    public let recipe: LossRecipe

    public init(_ model: any SegmentationModel, recipe: LossRecipe, setup: MethodSetup) {
        network = OptimizedNetwork(model, recipe: setup.plan.optimizer, totalSteps: setup.totalSteps)
        self.recipe = recipe
    }

    public var lossTerms: [String] { ["loss", "supervised", "entropy", "consistency_weight"] }
    public var dataNeeds: DataNeeds { DataNeeds(labelledViews: .weak, unlabelledViews: .weak) }
    public var evaluatedModel: any SegmentationModel { network.model }
    public var components: [String: any CheckpointableState] { ["optimizer": network.optimizer] }
    public var learningRate: Float { network.optimizer.learningRate }

    public func step(_ batch: MethodBatch, context: StepContext) throws -> [String: Float] {
        network.model.train(true)
        let joint = try JointBatch(batch)
        let logits = network.model(joint.images)
        let supervised = joint.supervisedLoss(logits, recipe)
        let entropy = Loss.entropy(probabilities: joint.unlabelled(logits).softmax(axis: 1))
        return try recipe.minimise(supervised: supervised, unlabelled: entropy,
                                   terms: ["supervised": supervised, "entropy": entropy], networks: [network],
                                   context: context)
    }

    public static let registration = SemiSupervisedRecipe.registration(
        name: "em", paper: "entropy minimisation (Vu et al. 2019), SSL4MIS version",
        defaults: SemiSupervisedRecipe.presetSummary, options: []
    ) { preset, options, setup in
        EntropyMinimisationMethod(try SemiSupervisedRecipe.model(preset, options, setup: setup, seed: setup.plan.seed),
                                  recipe: try SemiSupervisedRecipe.lossRecipe(options, method: "em", setup: setup),
                                  setup: setup)
    }
}

import HistoCore
import HistoData
import HistoNN

/// Uncertainty rectified pyramid consistency (Luo et al., MICCAI 2021; SPEC §8 "URPC"), as SSL4MIS's
/// `train_uncertainty_rectified_pyramid_consistency_2D.py` trains it on `UNet_URPC` (`PyramidUNet`): the main output
/// and three deep-supervision outputs, all at the input's resolution, on one joint batch.
/// - Supervised: the recipe's loss (½(CE + Dice) by default) on the labelled images, averaged over the 4 scales.
/// - Consistency on the unlabelled images, with p_s the softmax of scale s and p̄ the mean of the 4: the variance
///   v_s = Σ_c KL(p̄ ‖ p_s) per pixel [n, 1, H, W] (`nn.KLDivLoss(log p_s, p̄)` summed over classes) and
///   L_s = mean((p̄ − p_s)²·e^{−v_s}) / (mean(e^{−v_s}) + 1e-8) + mean(v_s); the consistency is the mean of L_s.
///   Nothing is detached (p̄ and v_s carry gradients, as in the reference). log p_s is the log-softmax of the
///   logits (the reference's log of the softmax, without its −inf where a probability underflows).
/// - Loss = supervised + λ·consistency, with the recipe's λ (`LossRecipe`: SSL4MIS's ramp by default).
/// The evaluated network is the backbone (its main output). docs/methods/urpc.md.
public final class UncertaintyRectifiedPyramidMethod: TrainingMethod {
    public let network: OptimizedNetwork
    public let unet: PyramidUNet
    public let recipe: LossRecipe

    public init(_ unet: PyramidUNet, recipe: LossRecipe, setup: MethodSetup) {
        network = OptimizedNetwork(unet, recipe: setup.plan.optimizer, totalSteps: setup.totalSteps)
        self.unet = unet
        self.recipe = recipe
    }

    public var lossTerms: [String] { ["loss", "supervised", "consistency", "consistency_weight"] }
    public var dataNeeds: DataNeeds { DataNeeds(labelledViews: .weak, unlabelledViews: .weak) }
    public var evaluatedModel: any SegmentationModel { unet.backbone }
    public var components: [String: any CheckpointableState] {
        ["optimizer": network.optimizer, "side_heads": unet.extras, "perturbations": unet.perturbations]
    }
    public var learningRate: Float { network.optimizer.learningRate }

    public func step(_ batch: MethodBatch, context: StepContext) throws -> [String: Float] {
        let joint = try JointBatch(batch)
        unet.train(true)
        let outputs = unet.outputs(joint.images)
        let supervised = outputs.map { joint.supervisedLoss($0, recipe) }.averaged()
        let unlabelled = outputs.map(joint.unlabelled)
        let probabilities = unlabelled.map { $0.softmax(axis: 1) }
        let mean = probabilities.averaged()
        let consistency = zip(unlabelled, probabilities).map { logits, p in
            let variance = Loss.klDivergence(mean, logQ: logits.logSoftmax(axis: 1), reduction: .none)
                .sum(axes: [1], keepDims: true)
            let confidence = (-variance).exp()
            return ((mean - p).square() * confidence).mean() / (confidence.mean() + 1e-8) + variance.mean()
        }.averaged()
        return try recipe.minimise(supervised: supervised, unlabelled: consistency,
                                 terms: ["supervised": supervised, "consistency": consistency], networks: [network],
                                 context: context)
    }

    /// `urpc`: the preset's `unet` with deep-supervision heads, weights and dropout from seed `seed`, side-output
    /// perturbations from seed `seed + 1`; the family's presets and ramp.
    public static let registration = SemiSupervisedRecipe.unetRegistration(
        name: "urpc", paper: "uncertainty rectified pyramid consistency (Luo et al. 2021), SSL4MIS UNet_URPC",
        defaults: SemiSupervisedRecipe.presetSummary + "; 3 deep-supervision heads", options: []
    ) { configuration, options, setup in
        let unet = PyramidUNet(configuration, generator: RandomGenerator(seed: setup.plan.seed),
                               perturbations: RandomGenerator(seed: setup.plan.seed &+ 1))
        return UncertaintyRectifiedPyramidMethod(unet, recipe: try SemiSupervisedRecipe.lossRecipe(options,
                                                                                                  method: "urpc",
                                                                                                  setup: setup),
                                                 setup: setup)
    }
}

import HistoCore
import HistoData
import HistoNN

/// Cross-consistency training (Ouali et al., CVPR 2020; SPEC §8 "CCT"), as SSL4MIS's
/// `train_cross_consistency_training_2D.py` trains it on `UNet_CCT` (`CrossConsistencyUNet`): a shared encoder, the
/// main decoder and auxiliary decoders fed perturbed encoder features, all on one joint batch.
/// - Supervised: the recipe's loss (½(CE + Dice) by default) on the labelled images, averaged over the main and
///   every auxiliary output (SSL4MIS's (ΣCE + ΣDice)/8); `supervisesAuxiliary` false keeps the main output's alone
///   (the CCT paper's).
/// - Consistency on the unlabelled images: mean over the auxiliary decoders of mean((softmax main − softmax aux)²).
///   The main prediction is not detached, as in SSL4MIS (the CCT paper stops its gradient): the consistency
///   trains the main decoder too.
/// - Loss = supervised + λ·consistency, with the recipe's λ (`LossRecipe`: SSL4MIS's ramp by default).
/// The evaluated network is the backbone (encoder, main decoder and head). docs/methods/cct.md.
public final class CrossConsistencyTrainingMethod: TrainingMethod {
    public let network: OptimizedNetwork
    public let unet: CrossConsistencyUNet
    public let recipe: LossRecipe
    public let supervisesAuxiliary: Bool

    public init(_ unet: CrossConsistencyUNet, recipe: LossRecipe, supervisesAuxiliary: Bool, setup: MethodSetup) {
        network = OptimizedNetwork(unet, recipe: setup.plan.optimizer, totalSteps: setup.totalSteps)
        self.unet = unet
        self.recipe = recipe
        self.supervisesAuxiliary = supervisesAuxiliary
    }

    public var lossTerms: [String] { ["loss", "supervised", "consistency", "consistency_weight"] }
    public var dataNeeds: DataNeeds { DataNeeds(labelledViews: .weak, unlabelledViews: .weak) }
    public var evaluatedModel: any SegmentationModel { unet.backbone }
    public var components: [String: any CheckpointableState] {
        ["optimizer": network.optimizer, "auxiliary_decoders": unet.extras, "perturbations": unet.perturbations]
    }
    public var learningRate: Float { network.optimizer.learningRate }

    public func step(_ batch: MethodBatch, context: StepContext) throws -> [String: Float] {
        let joint = try JointBatch(batch)
        unet.train(true)
        let (main, auxiliary) = unet.outputs(joint.images)
        let supervisedOutputs = supervisesAuxiliary ? [main] + auxiliary : [main]
        let supervised = supervisedOutputs.map { joint.supervisedLoss($0, recipe) }.averaged()
        let mainProbabilities = joint.unlabelled(main).softmax(axis: 1)
        let consistency = auxiliary.map { output in
            (mainProbabilities - joint.unlabelled(output).softmax(axis: 1)).square().mean()
        }.averaged()
        return try recipe.minimise(supervised: supervised, unlabelled: consistency,
                                 terms: ["supervised": supervised, "consistency": consistency], networks: [network],
                                 context: context)
    }

    /// `cct`: the preset's `unet` with three auxiliary decoders (feature noise, dropout, feature dropout), weights
    /// and dropout from seed `seed`, perturbations from seed `seed + 1`; the family's presets and ramp.
    public static let registration = SemiSupervisedRecipe.unetRegistration(
        name: "cct", paper: "cross-consistency training (Ouali et al. 2020), SSL4MIS UNet_CCT",
        defaults: SemiSupervisedRecipe.presetSummary + "; 3 auxiliary decoders, all supervised",
        options: [MethodOption(name: "supervise", help: "all decoders (default, SSL4MIS) or the main one (the paper)",
                               allowed: ["all", "main"])]
    ) { configuration, options, setup in
        let unet = CrossConsistencyUNet(configuration, generator: RandomGenerator(seed: setup.plan.seed),
                                        perturbations: RandomGenerator(seed: setup.plan.seed &+ 1))
        return CrossConsistencyTrainingMethod(unet, recipe: try SemiSupervisedRecipe.lossRecipe(options, method: "cct",
                                                                                                setup: setup),
                                              supervisesAuxiliary: options["supervise"] != "main", setup: setup)
    }
}

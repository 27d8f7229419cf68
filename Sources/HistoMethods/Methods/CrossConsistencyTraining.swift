import HistoCore
import HistoData
import HistoNN

/// Cross-consistency training (Ouali et al., CVPR 2020; SPEC §8 "CCT"), as SSL4MIS's
/// `train_cross_consistency_training_2D.py` trains it on `UNet_CCT` (`CrossConsistencyUNet`): a shared encoder, the
/// main decoder and auxiliary decoders fed perturbed encoder features, all on one joint batch.
/// - Supervised: ½(CE + Dice) on the labelled images, averaged over the main and every auxiliary output (SSL4MIS's
///   (ΣCE + ΣDice)/8); `supervisesAuxiliary` false keeps the main output's alone (the CCT paper's).
/// - Consistency on the unlabelled images: mean over the auxiliary decoders of mean((softmax main − softmax aux)²).
///   The main prediction is not detached, as in SSL4MIS (the CCT paper stops its gradient): the consistency
///   trains the main decoder too.
/// - Loss = supervised + λ(step)·consistency, with SSL4MIS's ramped λ (`ConsistencyWeight`).
/// The evaluated network is the backbone (encoder, main decoder and head). docs/methods/cct.md.
public final class CrossConsistencyTrainingMethod: TrainingMethod {
    public let network: OptimizedNetwork
    public let unet: CrossConsistencyUNet
    public let weight: ConsistencyWeight
    public let supervisesAuxiliary: Bool

    public init(_ unet: CrossConsistencyUNet, weight: ConsistencyWeight, supervisesAuxiliary: Bool, setup: MethodSetup) {
        network = OptimizedNetwork(unet, recipe: setup.plan.optimizer, totalSteps: setup.totalSteps)
        self.unet = unet
        self.weight = weight
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
        let supervised = supervisedOutputs.map(joint.supervisedLoss).averaged()
        let mainProbabilities = joint.unlabelled(main).softmax(axis: 1)
        let consistency = auxiliary.map { output in
            (mainProbabilities - joint.unlabelled(output).softmax(axis: 1)).square().mean()
        }.averaged()
        let lambda = weight.value(at: context)
        var values = try OptimizedNetwork.minimise(supervised + lambda * consistency, named: "loss",
                                                   terms: ["supervised": supervised, "consistency": consistency],
                                                   networks: [network], on: context.backend)
        values["consistency_weight"] = lambda
        return values
    }

    /// `cct`: the preset's `unet` with three auxiliary decoders (feature noise, dropout, feature dropout), weights
    /// and dropout from seed `seed`, perturbations from seed `seed + 1`. Presets as in `SemiSupervisedRecipe`.
    public static let registration = RegisteredMethod(
        name: "cct",
        paper: "cross-consistency training (Ouali et al. 2020; SSL4MIS UNet_CCT)",
        defaults: "cpu: U-Net/2 + 3 auxiliary decoders 128² batch 8+8 Adam 1e-3 50 epochs; paper: 256² 24+24 SGD 0.01 "
            + "poly 30k iterations; λ 0.1 SSL4MIS ramp",
        options: [SemiSupervisedRecipe.weightOption,
                  MethodOption(name: "supervise", help: "all decoders (default, SSL4MIS) or the main one (the paper)",
                               allowed: ["all", "main"])],
        plan: { preset, plan, options in try SemiSupervisedRecipe.plan(preset: preset, plan: &plan, options: options) },
        card: { preset, _, classes, plan in SemiSupervisedRecipe.card(preset: preset, classes: classes, plan: plan) },
        make: { preset, options, setup in
            let card = SemiSupervisedRecipe.card(preset: preset, classes: setup.classes, plan: setup.plan)
            let unet = CrossConsistencyUNet(try SemiSupervisedRecipe.backbone(card),
                                            generator: RandomGenerator(seed: setup.plan.seed),
                                            perturbations: RandomGenerator(seed: setup.plan.seed &+ 1))
            return CrossConsistencyTrainingMethod(unet, weight: try SemiSupervisedRecipe.weight(options),
                                                  supervisesAuxiliary: options["supervise"] != "main", setup: setup)
        })
}

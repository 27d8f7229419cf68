import HistoCore
import HistoData
import HistoNN

/// The supervised loss on logits [N, K, H, W] and class ids [N, H, W].
public enum SupervisedLoss: String, Equatable, Sendable, CaseIterable {
    case crossEntropy = "ce"
    /// Soft Dice of softmax(logits), in the configured variant.
    case dice
    /// ½(CE + Dice): SSL4MIS's supervised loss.
    case crossEntropyDice = "ce+dice"

    public func value(logits: Tensor, labels: Tensor, diceVariant: Loss.DiceVariant = .ssl4mis) -> Tensor {
        let dice = { Loss.dice(probabilities: logits.softmax(axis: 1), labels: labels, variant: diceVariant) }
        switch self {
        case .crossEntropy: return Loss.crossEntropy(logits: logits, labels: labels)
        case .dice: return dice()
        case .crossEntropyDice: return 0.5 * (Loss.crossEntropy(logits: logits, labels: labels) + dice())
        }
    }
}

/// Supervised-only training (SPEC §8 "SupOnly"; with 100% of the labels the fully supervised baseline): a
/// segmentation network trained on the labelled crops alone with `loss`. docs/methods/supervised.md.
public final class SupervisedMethod: SingleNetworkMethod {
    public let network: OptimizedNetwork
    public let loss: SupervisedLoss
    public let diceVariant: Loss.DiceVariant
    public var notices: [String] = []

    public init(_ model: any SegmentationModel, loss: SupervisedLoss, diceVariant: Loss.DiceVariant = .ssl4mis,
                setup: MethodSetup) {
        network = OptimizedNetwork(model, recipe: setup.plan.optimizer, totalSteps: setup.totalSteps)
        self.loss = loss
        self.diceVariant = diceVariant
    }

    public func step(_ batch: MethodBatch, context: StepContext) throws -> [String: Float] {
        network.model.train(true)
        let logits = network.model(batch.labelled.images)
        return try OptimizedNetwork.minimise(loss.value(logits: logits, labels: batch.labelled.labels!,
                                                        diceVariant: diceVariant),
                                             named: "loss", networks: [network], context: context)
    }

    /// The `cpu` preset's plan, shared by the semi-supervised baselines so that they compare on equal terms: 128²
    /// crops, batch 8, 4 crops per image, Adam 1e-3, 50 epochs, patience 10.
    static func cpuPlan(_ plan: inout TrainingPlan) {
        plan.patchSize = 128
        plan.batchSize = 8
        plan.cropsPerImage = 4
        plan.length = .epochs(50)
        plan.patience = 10
        plan.optimizer = .adam()
    }

    /// `supervised`: the U-Net (`arch=unet`, SSL4MIS/Ciampi), ResNet-FPN (`arch=fpn`, DTSeg's baseline) or
    /// DenseUNet (`arch=denseunet`, CDCL's SupOnly: CE and CDCL's plans, the encoder from `weights` when given).
    /// Preset `cpu`: the half-width U-Net on 128² crops, batch 8, 4 crops per image, Adam 1e-3, ½(CE + Dice),
    /// 50 epochs, patience 10. Preset `paper`: SSL4MIS — 256² crops, batch 24, SGD 0.01 poly, 200 epochs, patience
    /// 30; with `arch=fpn` DTSeg's recipe (toolbelt Dice, Lookahead-RAdam 1e-3, its MONAI augmentations).
    public static let registration = RegisteredMethod(
        name: "supervised",
        paper: "supervised-only baseline (SSL4MIS U-Net; DTSeg ResNet-FPN)",
        defaults: "cpu: U-Net/2 128² batch 8 Adam 1e-3 ½(CE+Dice) 50 epochs; paper: 256² batch 24 SGD 0.01 poly; "
            + "arch=denseunet: CE and cdcl's plans",
        options: [MethodOption(name: "arch", help: "unet (default), fpn or denseunet (CDCL's plans)",
                               allowed: ["unet", "fpn", "denseunet"]),
                  MethodOption(name: "loss", help: "ce, dice or ce+dice (default; dice for fpn, ce for denseunet)",
                               allowed: SupervisedLoss.allCases.map(\.rawValue)),
                  DenseUNet.weightsOption],
        plan: { preset, plan, options in
            switch preset {
            case _ where options["arch"] == "denseunet":
                CrossPatchDenseContrastMethod.plan(preset, &plan)
            case "cpu":
                cpuPlan(&plan)
            default:
                if options["arch"] == "fpn" {
                    plan.optimizer = .lookaheadRAdam()
                    plan.augmentation = .dtseg
                }
            }
        },
        card: { preset, options, classes, plan in
            ModelCard(architecture: options["arch"] ?? "unet", preset: preset, classes: classes,
                      pixelRange: plan.pixelRange)
        },
        make: { preset, options, setup in
            let card = ModelCard(architecture: options["arch"] ?? "unet", preset: preset, classes: setup.classes,
                                 pixelRange: setup.plan.pixelRange)
            let fpn = options["arch"] == "fpn"
            let dense = options["arch"] == "denseunet"
            if !dense && options[DenseUNet.weightsOption.name] != nil {
                throw EngineError.invalidValue(op: "--method supervised", message:
                    "option weights needs arch=denseunet")
            }
            let loss = SupervisedLoss(rawValue: options["loss"] ?? (fpn ? "dice" : dense ? "ce" : "ce+dice"))!
            let model = try card.makeModel(generator: RandomGenerator(seed: setup.plan.seed))
            let method = SupervisedMethod(model, loss: loss, diceVariant: fpn ? .toolbelt : .ssl4mis, setup: setup)
            if let network = model as? DenseUNet {
                method.notices = [try network.initializeEncoder(weights: options[DenseUNet.weightsOption.name])]
            }
            return method
        })
}

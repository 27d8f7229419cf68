import HistoCore
import HistoData
import HistoNN

/// What the SSL4MIS-family baselines of SPEC §8 share here (CPS, CCT, URPC): the presets, the backbone and its
/// card, the consistency weight and the joint labelled + unlabelled batch.
///
/// - `paper`: SSL4MIS — SGD lr 0.01 (momentum 0.9, weight decay 1e-4) with poly decay (power 0.9), 30 000
///   iterations of 24 labelled + 24 unlabelled 256² crops, validation every 200 iterations keeping the best, no
///   early stop; the width-16 `unet`.
/// - `cpu`: like `supervised`'s cpu preset — the half-width `unet`, 128² crops, 8 labelled + 8 unlabelled, 4 crops
///   per labelled image and epoch, Adam 1e-3, 50 epochs, patience 10.
enum SemiSupervisedRecipe {
    static let weightOption = MethodOption(name: "lambda", help: "the largest consistency weight λ (default 0.1)")

    static func plan(preset: String, plan: inout TrainingPlan, options: [String: String]) throws {
        _ = try weight(options)
        switch preset {
        case "cpu":
            plan.patchSize = 128
            plan.batchSize = 8
            plan.cropsPerImage = 4
            plan.length = .epochs(50)
            plan.patience = 10
            plan.optimizer = .adam()
        default:
            plan.length = .iterations(30_000)
            plan.validateEvery = 200
            plan.patience = nil
        }
    }

    /// The card of the evaluated network: the `unet` of the preset.
    static func card(preset: String, classes: Int, plan: TrainingPlan) -> ModelCard {
        ModelCard(architecture: "unet", preset: preset, classes: classes, pixelRange: plan.pixelRange)
    }

    /// The configuration of the card's U-Net.
    static func backbone(_ card: ModelCard) throws -> SegmentationUNet.Configuration {
        guard case .supervised(.unet(let configuration)) = try card.network else {
            throw EngineError.invalidValue(op: "ModelCard", message: "\(card.architecture) is not a U-Net")
        }
        return configuration
    }

    static func weight(_ options: [String: String]) throws -> ConsistencyWeight {
        ConsistencyWeight(maximum: try positive(options, "lambda") ?? 0.1)
    }

    /// The option `name` as a positive finite number; nil when it is not given.
    static func positive(_ options: [String: String], _ name: String) throws -> Float? {
        guard let text = options[name] else { return nil }
        guard let value = Float(text), value.isFinite, value > 0 else {
            throw EngineError.invalidValue(op: "--option", message: "\(name)=\(text) is not a positive number")
        }
        return value
    }
}

/// SSL4MIS's weight of the unlabelled loss (SPEC §8): λ(it) = λ_max·r(⌊it/150⌋, 200) with r the sigmoid ramp of
/// SPEC §0.5, which rises over its 30 000 iterations in 200 stairs. A run of another length rises the same way over
/// its own length: λ(step) = λ_max·r(⌊200·step/total⌋, 200), equal to SSL4MIS's at 30 000 steps.
public struct ConsistencyWeight: Equatable, Sendable {
    public static let stairs = 200
    public var maximum: Float

    public init(maximum: Float) { self.maximum = maximum }

    public func value(step: Int, totalSteps: Int) -> Float {
        let stair = step * Self.stairs / max(totalSteps, 1)
        return maximum * Float(Ramp.sigmoid(length: Double(Self.stairs)).value(at: Double(stair)))
    }

    public func value(at context: StepContext) -> Float { value(step: context.step, totalSteps: context.totalSteps) }
}

/// The labelled and unlabelled images of a step in one batch, labelled first, as SSL4MIS feeds its networks: one
/// forward pass, whose BatchNorm statistics cover both.
struct JointBatch {
    let images: Tensor
    /// Class ids of the labelled images.
    let labels: Tensor
    let labelledCount: Int
    let count: Int

    init(_ batch: MethodBatch) throws {
        guard let labels = batch.labelled.labels, let unlabelled = batch.unlabelled else {
            throw EngineError.invalidValue(op: "training", message:
                "the method needs a labelled and an unlabelled batch")
        }
        images = Tensor.concat([batch.labelled.images, unlabelled.images], axis: 0)
        self.labels = labels
        labelledCount = batch.labelled.images.shape[0]
        count = labelledCount + unlabelled.images.shape[0]
    }

    /// The labelled images' rows of a per-image tensor of the joint batch.
    func labelled(_ x: Tensor) -> Tensor { x.slice(axis: 0, start: 0, end: labelledCount) }
    /// The unlabelled images' rows.
    func unlabelled(_ x: Tensor) -> Tensor { x.slice(axis: 0, start: labelledCount, end: count) }

    /// ½(CE + Dice) of the labelled rows of `logits` (SSL4MIS's supervised loss).
    func supervisedLoss(_ logits: Tensor) -> Tensor {
        SupervisedLoss.crossEntropyDice.value(logits: labelled(logits), labels: labels)
    }
}

extension Array where Element == Tensor {
    /// The elementwise mean of equally shaped tensors (loss terms, predictions); the array must not be empty.
    func averaged() -> Tensor { dropFirst().reduce(self[0], +) / Float(count) }
}

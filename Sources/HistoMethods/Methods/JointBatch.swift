import HistoCore
import HistoData
import HistoNN

/// The labelled and unlabelled images of a step in one batch, labelled first, as SSL4MIS feeds its networks: one
/// forward pass, whose BatchNorm statistics cover both. For methods whose networks give several outputs (CPS's two
/// networks, CCT's decoders, URPC's scales), each split the same way.
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

    /// The recipe's supervised loss of the labelled rows of `logits`.
    func supervisedLoss(_ logits: Tensor, _ recipe: LossRecipe) -> Tensor {
        recipe.supervised(logits: labelled(logits), labels: labels)
    }
}

extension Array where Element == Tensor {
    /// The elementwise mean of equally shaped tensors (loss terms, predictions); the array must not be empty.
    func averaged() -> Tensor { dropFirst().reduce(self[0], +) / Float(count) }
}

extension SemiSupervisedRecipe {
    /// A method of the family whose network extends the U-Net (CCT's decoders, URPC's heads): the family's presets,
    /// card and options except `arch`, and `options`; `make` gets the configuration of the preset's `unet`.
    static func unetRegistration(name: String, paper: String, defaults: String, options: [MethodOption],
                                 make: @escaping @Sendable (_ configuration: SegmentationUNet.Configuration,
                                                            _ options: [String: String],
                                                            _ setup: MethodSetup) throws -> any TrainingMethod)
        -> RegisteredMethod {
        RegisteredMethod(
            name: name, paper: paper, defaults: defaults,
            options: Self.options.filter { $0.name != "arch" } + options,
            plan: { preset, plan, _ in Self.plan(preset, &plan) },
            card: { preset, options, classes, plan in card(preset, options, classes: classes, plan: plan) },
            make: { preset, options, setup in
                let card = card(preset, options, classes: setup.classes, plan: setup.plan)
                guard case .supervised(.unet(let configuration)) = try card.network else {
                    throw EngineError.invalidValue(op: "--method \(name)", message: "needs the U-Net")
                }
                return try make(configuration, options, setup)
            })
    }
}

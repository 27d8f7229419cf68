import Foundation
import HistoCore
import HistoData
import HistoDiffusion
import HistoNN

/// GenSelfDiff-HIS's segmentation network (SPEC §2) as a `SegmentationModel`: the Attention U-Net segmentation
/// variant run at timestep t = 0 for every image.
///
/// The reference network ends in Softmax(dim=1). Here `callAsFunction` returns the head's output before that
/// softmax — the class logits the `SegmentationModel` contract asks for — and `probabilities(_:)` applies it, so
/// softmax(logits) is exactly the reference network's output, and validation, `logits(of:tiling:)`, sliding-window
/// blending and argmax treat this model like any other. GenSelfDiff's losses take `probabilities(_:)`.
///
/// Parameter names are the `AttentionUNet`'s, unprefixed (`init_conv.weight`, …, `final_conv.1.bias`): a
/// fine-tuned checkpoint loads into an `AttentionUNet` of the same segmentation configuration, and a pretrained
/// denoiser's file maps onto this model name for name.
public final class GenSelfDiffSegmenter: Module, SegmentationModel {
    /// The segmentation configuration this network was built from (`softmaxOutput` true).
    public let configuration: AttentionUNet.Configuration
    /// The network without its final softmax.
    let network: AttentionUNet

    /// A freshly initialised network (the configuration's `initialization`) with weights drawn from `generator`.
    /// `configuration` must be a segmentation one (`softmaxOutput`, e.g. `.genSelfDiffSegmentation(classes:)`).
    public init(_ configuration: AttentionUNet.Configuration, generator: RandomGenerator) throws {
        guard configuration.softmaxOutput else {
            throw EngineError.invalidValue(op: "GenSelfDiffSegmenter", message:
                "the configuration has no softmax output: use a segmentation configuration such as .genSelfDiffSegmentation(classes:) or .cpuSegmentation(classes:)")
        }
        var body = configuration
        body.softmaxOutput = false
        self.configuration = configuration
        network = try AttentionUNet(body, generator: generator)
        super.init()
    }

    /// The network's members under an empty key, so that names are the network's own.
    public override func members() -> [(key: String, member: ModuleMember)] { [("", .module(network))] }

    public var classes: Int { configuration.outChannels }
    public var inputMultiple: Int { 1 << (configuration.dimMults.count - 1) }

    /// Class logits [N, K, H, W] of images [N, 3, H, W], the network at t = 0 up to (not including) its softmax.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        network(x, timesteps: .zeros([x.shape.first ?? 0]), context: nil)
    }

    /// Class probabilities [N, K, H, W]: the reference network's output, Softmax(dim=1) of the logits.
    public func probabilities(_ x: Tensor) -> Tensor { callAsFunction(x).softmax(axis: 1) }
}

/// GenSelfDiff-HIS fine-tuning (SPEC §2, docs/methods/genselfdiff.md): the segmentation network, initialised from
/// a DDPM-pretrained denoiser except for its head (or at random, the "without pretraining" comparison), trained end
/// to end at t = 0 with L = L_SS + λ·L_FL on the labelled crops.
///
/// Decisions (SPEC §9 item 5):
/// - Input range: the reference feeds [0, 1] at fine-tuning although its denoiser was pretrained on [−1, 1]; the
///   plan's `pixelRange` defaults to [−1, 1], the range the pretrained weights saw (`.zeroToOne` reproduces the code).
/// - The logs in the losses take ε = 1e-7 (the code has none).
/// - The kept epoch is the best validation Dice (the shared trainer's rule), not the best validation loss.
/// - Training windows are random crops (`cropsPerImage` per image and epoch) instead of the reference's stride-64
///   patch grid; the blur kernel spans ±3σ instead of 3 × 3.
public final class GenSelfDiffMethod: TrainingMethod {
    public let network: OptimizedNetwork
    public let segmenter: GenSelfDiffSegmenter
    /// λ in L_SS + λ·L_FL.
    public let focalWeight: Float

    /// A `GenSelfDiffSegmenter` of `configuration` seeded with the plan's seed, loaded from the denoiser weights at
    /// `pretrained` (all but the head; see `GenSelfDiffFineTuning.loadPretrained`) when given.
    public init(configuration: AttentionUNet.Configuration, pretrained: String?, focalWeight: Float = 1,
                setup: MethodSetup) throws {
        segmenter = try GenSelfDiffSegmenter(configuration, generator: RandomGenerator(seed: setup.plan.seed))
        if let pretrained { try GenSelfDiffFineTuning.loadPretrained(into: segmenter, from: pretrained) }
        network = OptimizedNetwork(segmenter, recipe: setup.plan.optimizer, totalSteps: setup.totalSteps)
        self.focalWeight = focalWeight
    }

    public var lossTerms: [String] { ["loss"] }
    public var dataNeeds: DataNeeds { DataNeeds() }
    public var evaluatedModel: any SegmentationModel { segmenter }
    public var components: [String: any CheckpointableState] { ["optimizer": network.optimizer] }
    public var learningRate: Float { network.optimizer.learningRate }

    public func step(_ batch: MethodBatch, context: StepContext) throws -> [String: Float] {
        segmenter.train(true)
        let loss = GenSelfDiffFineTuning.loss(probabilities: segmenter.probabilities(batch.labelled.images),
                                              labels: batch.labelled.labels!, focalWeight: focalWeight)
        return try OptimizedNetwork.minimise(loss, named: "loss", networks: [network], context: context)
    }

    /// `genselfdiff`. Every preset: Adam lr 1e-4, β (0.5, 0.999), batch 8, the reference's augmentation on the
    /// strong view, λ = 1, inputs in [−1, 1]. `paper`: the 31.27M-parameter network on 256² crops (8 per image and
    /// epoch), 150 epochs without early stopping. `cpu`: the `cpuSegmentation` network (dim 16, multipliers 1, 2, 4)
    /// on 64² crops, 4 per image, 40 epochs, patience 10 — nucleus scale. `gland`: `cpu` on images downscaled to
    /// 128² first (as XNet and Ciampi et al. train on GlaS): a GlaS gland (median diameter 123 px) is ~25 px there,
    /// so the 64² window holds whole glands with their surroundings (issue 21, docs/methods/genselfdiff.md).
    public static let registration = RegisteredMethod(
        name: "genselfdiff",
        paper: "GenSelfDiff-HIS fine-tuning, L_SS + L_FL (paper 001)",
        defaults: "cpu: dim-16 Attention U-Net 64² batch 8 Adam 1e-4 (0.5, 0.999) 40 epochs; paper: 256², "
            + "150 epochs; gland: cpu on images resized to 128² first (gland scale)",
        options: [MethodOption(name: "pretrained", help: "a `histodiff pretrain` run folder or its ema.safetensors "
                               + "(same preset); random initialisation without it")],
        presets: MethodRegistry.presets + ["gland"],
        plan: { preset, plan, _ in
            plan.batchSize = 8
            plan.optimizer = .adam(learningRate: 1e-4, beta1: 0.5, beta2: 0.999)
            plan.augmentation = GenSelfDiffFineTuning.augmentation
            plan.photometric = true
            if preset == "paper" {
                plan.length = .epochs(150)
                plan.patience = nil
            } else {
                plan.patchSize = 64
                plan.cropsPerImage = 4
                plan.length = .epochs(40)
                plan.patience = 10
            }
            if preset == "gland" { plan.resize = 128 }
        },
        card: { preset, _, classes, plan in
            ModelCard(architecture: "genselfdiff", preset: networkPreset(preset), classes: classes,
                      pixelRange: plan.pixelRange)
        },
        make: { preset, options, setup in
            let configuration: AttentionUNet.Configuration = networkPreset(preset) == "paper"
                ? .genSelfDiffSegmentation(classes: setup.classes) : .cpuSegmentation(classes: setup.classes)
            let weights = try options["pretrained"].map(GenSelfDiffFineTuning.pretrainedWeights(at:))
            return try GenSelfDiffMethod(configuration: configuration, pretrained: weights, setup: setup)
        })

    /// The network a training preset builds: `gland` is the `cpu` network at another input scale.
    static func networkPreset(_ preset: String) -> String { preset == "gland" ? "cpu" : preset }
}

/// The pieces of GenSelfDiff fine-tuning that are not the step: the augmentation, the loss, the pretrained weights.
public enum GenSelfDiffFineTuning {
    /// The reference's fine-tuning augmentation: horizontal and vertical flips with p 0.5 each; with p 0.3 colour
    /// jitter of brightness ±50% and contrast ±40%; with p 0.3 a Gaussian blur, σ uniform in [1, 2]. Nothing else.
    public static let augmentation: Augmentation = {
        var augmentation = Augmentation.none
        augmentation.flipProbability = 0.5
        augmentation.colorJitterProbability = 0.3
        augmentation.brightness = 0.5
        augmentation.contrast = 0.4
        augmentation.saturation = 0
        augmentation.hue = 0
        augmentation.blurProbability = 0.3
        augmentation.blurSigma = 1...2
        return augmentation
    }()

    /// How a pretrained denoiser's tensors become the segmenter's: everything but the head (`final_conv.*`, the
    /// ResnetBlock and the 1×1 conv, which keep their fresh initialisation). Names are the `AttentionUNet`'s, with
    /// or without the reference's `net.` prefix.
    public static let pretrainedNames = NameMap([.skip("final_conv.*"), .skip("net.final_conv.*"), .prefix("net.", "")],
                                                keep: ["final_conv.*"])

    /// Loads the pretrained denoiser at `path` (a safetensors file of an `AttentionUNet` with the same body, e.g.
    /// the weights `histodiff pretrain` writes) into `model`, all but the head. Nothing is loaded unless every
    /// non-head tensor of the model is in the file with its shape and the file has no other non-head tensor;
    /// otherwise the error (`EngineError.file`) names every missing, unknown and mismatched tensor.
    @discardableResult
    public static func loadPretrained(into model: GenSelfDiffSegmenter, from path: String) throws -> WeightImport.Report {
        try WeightImport.load(into: model, from: path, map: pretrainedNames)
    }

    /// The pretrained weights at `path`: the file itself, or a pretraining run folder's `ema.safetensors`.
    public static func pretrainedWeights(at path: String) throws -> String {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw EngineError.file(path: path, message: "no such pretrained checkpoint (a `histodiff pretrain` run folder or its \(DiffusionRun.weightsFileName))")
        }
        guard isDirectory.boolValue else { return path }
        let file = (path as NSString).appendingPathComponent(DiffusionRun.weightsFileName)
        guard FileManager.default.fileExists(atPath: file) else {
            throw EngineError.file(path: file, message: "no EMA weights in the pretraining run folder (written when `histodiff pretrain` ends)")
        }
        return file
    }

    /// L = L_SS + λ·L_FL on probabilities [N, K, H, W] and class ids [N, H, W]: `Loss.structuralSimilarity`
    /// (C₁ 0.01, β 0.1, unbiased σ, CE with ε 1e-7) plus `focalWeight` × `Loss.focal` (γ 2, ε 1e-7).
    public static func loss(probabilities: Tensor, labels: Tensor, focalWeight: Float = 1) -> Tensor {
        Loss.structuralSimilarity(probabilities: probabilities, labels: labels)
            + focalWeight * Loss.focal(probabilities: probabilities, labels: labels)
    }
}

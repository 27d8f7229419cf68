import Foundation
import HistoCore
import HistoData
import HistoDiffusion
import HistoNN

/// DTSeg's frozen features (SPEC §1 step 2): a diffusion run's `output_blocks.7`, `.8` and `.9` at each timestep,
/// on the clean posterior-mean latent (the released code) or on z_t noised with one fixed draw (the paper's
/// Algorithm 1); each block's maps are concatenated over the timesteps and resized bilinearly to the input's size,
/// giving F₁, F₂, F₃ (1344, 1344 and 672 channels for the `dtseg` LDM). Computed online for every (augmented)
/// crop. Not a `Module`: the diffusion run stays out of the segmenter's parameters and checkpoints.
public final class DTSegFeatures {
    public static let blocks = ["output_blocks.7", "output_blocks.8", "output_blocks.9"]
    /// The released configs' timesteps; the paper's text says 50, 150, 200 (SPEC §9.1).
    public static let configTimesteps = [50, 150, 250]

    public let run: DiffusionRun
    public let extractor: FeatureExtractor
    /// The channels of F₁, F₂, F₃.
    public let channels: [Int]

    /// `noiseSeed` nil: the clean latent; else z_t = √ᾱ_t·z + √(1 − ᾱ_t)·ε with ε drawn once from this
    /// seed and ᾱ of the run's own schedule.
    public init(run: DiffusionRun, timesteps: [Int], noiseSeed: UInt64?) throws {
        extractor = try run.featureExtractor(blocks: Self.blocks, timesteps: timesteps, noisedSeed: noiseSeed)
        let side = run.model.inputMultiple
        let shapes = run.model.featureShapes(Self.blocks, for: Tensor.zeros([1, run.model.imageChannels, side, side]))
        guard Self.blocks.allSatisfy({ shapes[$0] != nil }) else {
            throw EngineError.invalidValue(op: "--method dtseg", message: "the \(run.spec.family)/\(run.spec.preset) "
                + "diffusion model has no output blocks 7, 8 and 9 (a guided UNet of 4 levels × 2 ResBlocks has)")
        }
        channels = Self.blocks.map { shapes[$0]![1] * timesteps.count }
        self.run = run
    }

    /// F₁, F₂, F₃ of images [N, 3, H, W] in [−1, 1], at H × W, cut from the gradient graph (the extractor is
    /// frozen). A latent run sees the images' scaled posterior-mean latents, a pixel run the images.
    public func callAsFunction(_ images: Tensor) throws -> [Tensor] {
        let input = run.latentSpace?.meanLatents(images) ?? images
        let maps = try extractor.recordedMaps(input, context: nil) // block-major, one map per timestep
        let size = Array(images.shape.suffix(2)), perBlock = extractor.timesteps.count
        return Self.blocks.indices.map { b in
            let block = maps[(b * perBlock)..<((b + 1) * perBlock)]
            return Tensor.concat(Array(block), axis: 1).interpolateBilinear(size: size, alignCorners: false).detach()
        }
    }
}

/// DTSeg's segmenter (SPEC §1 step 2b): the frozen features and the transformer decoder. Only the decoder is a
/// member.
public final class DTSegSegmenter: Module, SegmentationModel {
    public let decoder: UNetFormerDecoder
    public let features: DTSegFeatures

    public init(decoder: UNetFormerDecoder, features: DTSegFeatures) {
        self.decoder = decoder
        self.features = features
        super.init()
    }

    public var classes: Int { decoder.configuration.classes }
    public var inputMultiple: Int { features.run.imageMultiple }

    public func callAsFunction(_ x: Tensor) -> Tensor { decoder.head(decoderFeatures(x)) }

    /// f_D, the decoder's maps before its head (384 channels at the paper preset): what the collaborative head
    /// reads.
    public func decoderFeatures(_ x: Tensor) -> Tensor {
        do { return decoder.features(try features(x)) } catch { return .invalid("dtseg", "\(error)") }
    }
}

/// What a dtseg card records beside its decoder (`ModelCard.dtseg`).
public struct DTSegSettings: Codable, Equatable, Sendable {
    /// The frozen `histodiff pretrain` run (a folder or its weights file).
    public var model: String
    public var timesteps: [Int]
    /// nil: features of the clean latent; else the seed of the noise of z_t.
    public var noiseSeed: UInt64?
    /// The decoder's layout (`UNetFormerDecoder.Layout`): parallel, serial or without-sa.
    public var layout: String

    /// The segmenter: the frozen run's features and a fresh decoder of `preset`.
    func makeSegmenter(preset: String, classes: Int, generator: RandomGenerator) throws -> DTSegSegmenter {
        let features = try DTSegFeatures(run: try DiffusionRun.load(model), timesteps: timesteps,
                                         noiseSeed: noiseSeed)
        var configuration: UNetFormerDecoder.Configuration = preset == "paper"
            ? .paper(classes: classes) : .cpu(inputChannels: features.channels, classes: classes)
        guard configuration.inputChannels == features.channels else {
            throw EngineError.invalidValue(op: "--method dtseg", message: "the paper decoder takes features of "
                + "\(configuration.inputChannels) channels (the dtseg LDM at 3 timesteps); \(model) gives "
                + "\(features.channels): use preset cpu")
        }
        configuration.layout = try DTSeg.layout(layout)
        return DTSegSegmenter(decoder: UNetFormerDecoder(configuration, generator: generator), features: features)
    }
}

/// DTSeg's collaborative segmenter (SPEC §1 step 3): the frozen DTSeg decoder's f_D and the frozen supervised
/// ResNet-FPN's decoder output f_S (nearest-upsampled from a quarter of the size) feed the collaborative head.
/// Only the head is a member.
public final class CollaborativeSegmenter: Module, SegmentationModel {
    public let head: CollaborativeHead
    let dtseg: DTSegSegmenter
    let fpn: ResNetFPN

    public init(head: CollaborativeHead, dtseg: DTSegSegmenter, fpn: ResNetFPN) {
        self.head = head
        self.dtseg = dtseg
        self.fpn = fpn
        super.init()
        dtseg.train(false)
        fpn.train(false)
    }

    public override func members() -> [(key: String, member: ModuleMember)] { [("head", .module(head))] }

    public var classes: Int { head.configuration.classes }
    public var inputMultiple: Int { lcm(dtseg.inputMultiple, fpn.inputMultiple) }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        let size = Array(x.shape.suffix(2))
        return head(dtseg: dtseg.decoderFeatures(x).detach(),
                    supervised: fpn.decoderFeatures(x).interpolateNearest(size: size).detach())
    }
}

/// What a dtseg-collab card records beside its head (`ModelCard.collaboration`).
public struct CollaborationSettings: Codable, Equatable, Sendable {
    /// The frozen dtseg run (its folder).
    public var dtseg: String
    /// The frozen `supervised --option arch=fpn` run (its folder).
    public var fpn: String

    /// The pixel range both frozen runs were trained on, after checking from their cards alone (nothing is loaded)
    /// that they are a dtseg run and a supervised arch=fpn run of one pixel range and resize.
    func checkedRange() throws -> PixelRange {
        let dtsegCard = try TrainedModel.card(ofRun: dtseg), fpnCard = try TrainedModel.card(ofRun: fpn)
        guard dtsegCard.architecture == "dtseg" else {
            throw EngineError.file(path: dtseg, message: "is a \(dtsegCard.architecture) run, not a dtseg run")
        }
        guard fpnCard.architecture == "fpn" else {
            throw EngineError.file(path: fpn, message: "is a \(fpnCard.architecture) run, not a supervised "
                + "arch=fpn run")
        }
        let range = try dtsegCard.range
        guard try fpnCard.range == range, dtsegCard.resize == fpnCard.resize else {
            throw EngineError.file(path: fpn, message: "was trained on another pixel range or resize than \(dtseg)")
        }
        return range
    }

    /// The head on the two frozen runs, each loaded once.
    func makeSegmenter(preset: String, classes: Int, generator: RandomGenerator) throws -> CollaborativeSegmenter {
        _ = try checkedRange()
        guard let dtsegNetwork = try TrainedModel(path: dtseg).network as? DTSegSegmenter,
              let fpnNetwork = try TrainedModel(path: fpn).network as? ResNetFPN else {
            preconditionFailure("dtseg and fpn cards make a DTSegSegmenter and a ResNetFPN")
        }
        let configuration = CollaborativeHead.Configuration(
            dtsegChannels: dtsegNetwork.decoder.featureChannels,
            supervisedChannels: fpnNetwork.configuration.segmentationChannels,
            hidden: preset == "paper" ? 128 : 32, classes: classes)
        return CollaborativeSegmenter(head: CollaborativeHead(configuration, generator: generator),
                                      dtseg: dtsegNetwork, fpn: fpnNetwork)
    }
}

/// DTSeg (paper 000): the transformer decoder on frozen latent-diffusion features (`dtseg`), then the collaborative
/// head on it and a supervised ResNet-FPN (`dtseg-collab`). Both train one network on the labelled crops with the
/// toolbelt multiclass Dice (`SupervisedMethod`), Lookahead-RAdam, validation mIoU. docs/methods/dtseg.md.
public enum DTSeg {
    static func layout(_ name: String) throws -> UNetFormerDecoder.Layout {
        guard let layout = UNetFormerDecoder.Layout(rawValue: name) else {
            throw EngineError.invalidValue(op: "--method dtseg", message: "option layout=\(name) is not one of "
                + UNetFormerDecoder.Layout.allCases.map(\.rawValue).joined(separator: ", "))
        }
        return layout
    }

    /// The shared plan: Lookahead(RAdam) with decoupled weight decay 1e-5, constant lr, validation mIoU, the MONAI
    /// augmentations of SPEC §1 (`Augmentation.dtseg`). Preset
    /// `paper`: 256² crops, batch 10 (the paper's 5 × 2 accumulated), 200 epochs, patience 30. Preset `cpu`: 128²
    /// crops, batch 4, 4 crops per image, 30 epochs, patience 10.
    static func plan(_ preset: String, _ plan: inout TrainingPlan, learningRate: Float) {
        plan.optimizer = .lookaheadRAdam(learningRate: learningRate, weightDecay: 1e-5)
        plan.metric = .meanIoU
        plan.augmentation = .dtseg
        if preset == "paper" {
            plan.patchSize = 256
            plan.batchSize = 10
            plan.length = .epochs(200)
            plan.patience = 30
        } else {
            plan.patchSize = 128
            plan.batchSize = 4
            plan.cropsPerImage = 4
            plan.length = .epochs(30)
            plan.patience = 10
        }
    }

    static func timesteps(_ options: [String: String]) throws -> [Int] {
        guard let text = options["timesteps"] else { return DTSegFeatures.configTimesteps }
        let values = text.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !values.isEmpty, values.allSatisfy({ ($0 ?? -1) >= 0 }) else {
            throw EngineError.invalidValue(op: "--method dtseg", message:
                "option timesteps=\(text) is not a comma-separated list of timesteps ≥ 0")
        }
        return values.map { $0! }
    }

    static func card(_ preset: String, options: [String: String], classes: Int,
                     plan: TrainingPlan) throws -> ModelCard {
        guard let model = options["model"] else {
            throw EngineError.invalidValue(op: "--method dtseg", message:
                "needs --option model=RUN (a `histodiff pretrain` run, e.g. --recipe ldm --autoencoder …)")
        }
        var card = ModelCard(architecture: "dtseg", preset: preset, classes: classes, pixelRange: plan.pixelRange)
        let layout = options["layout"] ?? UNetFormerDecoder.Layout.parallel.rawValue
        _ = try Self.layout(layout)
        card.dtseg = DTSegSettings(model: URL(fileURLWithPath: model).standardizedFileURL.path,
                                   timesteps: try timesteps(options),
                                   noiseSeed: options["latent"] == "noised" ? plan.seed : nil, layout: layout)
        return card
    }

    static func collaborationCard(_ preset: String, options: [String: String], classes: Int,
                                  plan: TrainingPlan) throws -> ModelCard {
        func run(_ name: String) throws -> String {
            guard let path = options[name] else {
                throw EngineError.invalidValue(op: "--method dtseg-collab", message: "needs --option dtseg=RUN and "
                    + "--option fpn=RUN (a dtseg run and a supervised arch=fpn run)")
            }
            return URL(fileURLWithPath: Experiment.resolvingCell(path, plan: plan)).standardizedFileURL.path
        }
        let settings = CollaborationSettings(dtseg: try run("dtseg"), fpn: try run("fpn"))
        let range = try settings.checkedRange()
        guard range == plan.pixelRange else {
            throw EngineError.invalidValue(op: "--method dtseg-collab", message:
                "the frozen runs take another pixel range than this run's")
        }
        var card = ModelCard(architecture: "dtseg-collab", preset: preset, classes: classes, pixelRange: range)
        card.collaboration = settings
        return card
    }

    /// A `SupervisedMethod` with the toolbelt Dice on the card's network.
    static func method(_ card: ModelCard, setup: MethodSetup) throws -> SupervisedMethod {
        let network = try card.makeModel(generator: RandomGenerator(seed: setup.plan.seed))
        return SupervisedMethod(network, loss: .dice, diceVariant: .toolbelt, setup: setup)
    }

    /// `dtseg`: the transformer decoder on frozen diffusion features, Lookahead-RAdam 1e-3.
    public static let registration = RegisteredMethod(
        name: "dtseg",
        paper: "DTSeg (paper 000): transformer decoder on frozen latent-diffusion features (blocks 7, 8, 9)",
        defaults: "cpu: 128² crops, batch 4, 30 epochs; paper: 256² crops, batch 10, 200 epochs; Lookahead-RAdam "
            + "1e-3, toolbelt Dice, validation mIoU",
        options: [
            MethodOption(name: "model", help: "the frozen `histodiff pretrain` run (required)"),
            MethodOption(name: "timesteps", help: "comma-separated feature timesteps (default 50,150,250, the "
                         + "configs'; the paper's text: 50,150,200)"),
            MethodOption(name: "latent", help: "clean (default, DTSeg's code) or noised (z_t with a fixed draw, "
                         + "the paper's Algorithm 1)", allowed: ["clean", "noised"]),
            MethodOption(name: "layout", help: "parallel (default), serial or without-sa (the paper's ablations)",
                         allowed: UNetFormerDecoder.Layout.allCases.map(\.rawValue)),
        ],
        plan: { preset, plan, _ in DTSeg.plan(preset, &plan, learningRate: 1e-3) },
        card: { preset, options, classes, plan in try card(preset, options: options, classes: classes, plan: plan) },
        make: { preset, options, setup in
            let card = try card(preset, options: options, classes: setup.classes, plan: setup.plan)
            let method = try method(card, setup: setup)
            let settings = card.dtseg!
            method.notices = ["features: output blocks 7, 8, 9 of \(settings.model) at t = "
                + settings.timesteps.map(String.init).joined(separator: ", ")
                + (settings.noiseSeed == nil ? " on the clean latent" : " on z_t noised with seed \(setup.plan.seed)")]
            return method
        })

    /// `dtseg-collab`: the collaborative head on a dtseg run and a supervised ResNet-FPN run, Lookahead-RAdam
    /// 5e-4 (the configs'; the paper's text says 2e-3, SPEC §9.3).
    public static let collaborativeRegistration = RegisteredMethod(
        name: "dtseg-collab",
        paper: "DTSeg (paper 000) step 3: collaborative head on frozen DTSeg and supervised ResNet-FPN features",
        defaults: "as dtseg, Lookahead-RAdam 5e-4",
        options: [
            MethodOption(name: "dtseg", help: "the frozen dtseg run (required); `{cell}` stands for the run's "
                         + "labels-…/seed-… (for `histodiff experiment`)"),
            MethodOption(name: "fpn", help: "the frozen `supervised --option arch=fpn` run (required); `{cell}` "
                         + "as for dtseg"),
        ],
        plan: { preset, plan, _ in DTSeg.plan(preset, &plan, learningRate: 5e-4) },
        card: { preset, options, classes, plan in
            try collaborationCard(preset, options: options, classes: classes, plan: plan)
        },
        make: { preset, options, setup in
            let card = try collaborationCard(preset, options: options, classes: setup.classes, plan: setup.plan)
            let method = try method(card, setup: setup)
            method.notices = ["collaboration of the frozen runs \(card.collaboration!.dtseg) (dtseg) and "
                              + "\(card.collaboration!.fpn) (fpn)"]
            return method
        })
}

private func lcm(_ a: Int, _ b: Int) -> Int {
    func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
    return a / gcd(a, b) * b
}

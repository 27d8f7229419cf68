import Foundation
import HistoCore
import HistoData
import HistoDiffusion
import HistoMetrics
import HistoNN

/// What rebuilds a trained segmentation network: written as `model.json` beside its weights by `histodiff train`,
/// read by `histodiff segment` and `histodiff eval --model`.
public struct ModelCard: Codable, Equatable, Sendable {
    /// unet (SSL4MIS/Ciampi U-Net), fpn (ResNet-FPN), denseunet (CDCL's DenseUNet), genselfdiff (the GenSelfDiff
    /// Attention U-Net segmenter), diffusion-mask (Ciampi's mask pathway, `DiffusionMaskSegmenter`) or
    /// diffusion-teacher (Ciampi's whole teacher, `DiffusionTeacher`), pathsegdiff (the FCN head on a frozen
    /// latent diffusion run's tile features, `PathSegDiffSegmenter`), dtseg (the transformer decoder on a frozen
    /// diffusion run's features, `DTSegSegmenter`) or dtseg-collab (DTSeg's collaborative head,
    /// `CollaborativeSegmenter`).
    public var architecture: String
    /// cpu or paper.
    public var preset: String
    public var classes: Int
    /// The range the network was trained on: minus_one_to_one, zero_to_one or dataset (`statistics`; see `range`).
    public var pixelRange: String
    /// With pixelRange dataset: the training images' per-channel mean and std in [0, 1] units.
    public var statistics: ColorStatistics?
    /// The boundary width of a boundary-aware nuclei model (classes background, interior, boundary:
    /// `MaskClasses.boundary`); absent for a model of the masks' own classes.
    public var boundaryWidth: Int?
    /// The patch side the network was trained on: the tile `segment` and `eval --model` use unless told
    /// (`defaultTile`). Absent in cards written before it was recorded.
    public var trainingPatch: Int?
    /// The side images were resized to in training (`--resize`): inference resizes each image to it and brings
    /// the probabilities back to the image's size. Absent: images are segmented as they are.
    public var resize: Int?
    /// The crops per side images were cut into in training (`--grid-crops`): inference cuts each image alike, runs
    /// each crop as training saw it and stitches the probabilities back. Absent: whole images.
    public var gridCrops: Int?
    /// How a diffusion architecture segments (its β schedule, draws of t and their seed); absent for the others.
    public var diffusion: DiffusionInference?
    /// Which frozen diffusion run a pathsegdiff head reads its features from, and its tile; absent for the others.
    public var pathSegDiff: PathSegDiffSettings?
    /// Which frozen diffusion run a dtseg decoder reads its features from, at which timesteps; absent for the others.
    public var dtseg: DTSegSettings?
    /// The frozen dtseg and ResNet-FPN runs of a dtseg-collab head; absent for the others.
    public var collaboration: CollaborationSettings?

    public static let fileName = "model.json"

    public init(architecture: String, preset: String, classes: Int, pixelRange: PixelRange) {
        self.architecture = architecture
        self.preset = preset
        self.classes = classes
        self.pixelRange = ""
        record(range: pixelRange)
    }

    /// A per-channel mean and standard deviation (`PixelRange.standardized`).
    public struct ColorStatistics: Codable, Equatable, Sendable {
        public var mean: [Float]
        public var std: [Float]
    }

    /// Sets `pixelRange` (and `statistics`) to `range`.
    public mutating func record(range: PixelRange) {
        switch range {
        case .minusOneToOne: (pixelRange, statistics) = ("minus_one_to_one", nil)
        case .zeroToOne: (pixelRange, statistics) = ("zero_to_one", nil)
        case let .standardized(mean, std): (pixelRange, statistics) = ("dataset", ColorStatistics(mean: mean, std: std))
        }
    }

    /// The tile of sliding-window inference unless one is given: the training patch, as `experiment` scores runs
    /// and training validates them. A network with self-attention over the whole input (genselfdiff) behaves
    /// as trained only at that size, and its attention costs grow with the square of the tile's area. 256 for
    /// cards without a recorded patch.
    public var defaultTile: Int { trainingPatch ?? 256 }

    /// The input range images are converted to before the network sees them.
    public var range: PixelRange {
        get throws {
            switch pixelRange {
            case "minus_one_to_one": return .minusOneToOne
            case "zero_to_one": return .zeroToOne
            case "dataset":
                guard let statistics, statistics.mean.count == 3, statistics.std.count == 3,
                      statistics.std.allSatisfy({ $0 > 0 && $0.isFinite }) else {
                    throw EngineError.invalidValue(op: "ModelCard", message:
                        "pixel range dataset needs statistics with 3 means and 3 positive stds")
                }
                return .standardized(mean: statistics.mean, std: statistics.std)
            default:
                throw EngineError.invalidValue(op: "ModelCard", message:
                    "unknown pixel range '\(pixelRange)' (minus_one_to_one, zero_to_one, dataset)")
            }
        }
    }

    /// The networks a card can name.
    public enum Network: Equatable, Sendable {
        case supervised(SegmentationArchitecture)
        /// A `GenSelfDiffSegmenter` of this segmentation configuration.
        case genSelfDiff(AttentionUNet.Configuration)
        /// A `DiffusionMaskSegmenter` of this mask pathway, inside a `DiffusionTeacher` with this image pathway
        /// when one is given.
        case diffusion(mask: ConditionalUNet.Configuration, image: ConditionalUNet.Configuration?)
        /// A `PathSegDiffSegmenter` with the head of this preset (cpu or paper).
        case pathSegDiff(preset: String)
        /// A `DTSegSegmenter` with the decoder of this preset.
        case dtseg(preset: String)
        /// A `CollaborativeSegmenter` with the head of this preset.
        case collaboration(preset: String)
    }

    public var network: Network {
        get throws { try Self.network(architecture: architecture, preset: preset, classes: classes) }
    }

    /// The network that an architecture and a preset name, with `classes` output classes.
    public static func network(architecture: String, preset: String, classes: Int) throws -> Network {
        switch (architecture, preset) {
        case ("unet", "cpu"): return .supervised(.unet(.cpu(classes: classes)))
        case ("unet", "paper"): return .supervised(.unet(.paper(classes: classes)))
        case ("fpn", "cpu"): return .supervised(.resnetFPN(.cpu(classes: classes)))
        case ("fpn", "paper"): return .supervised(.resnetFPN(.paper(classes: classes)))
        case ("denseunet", "cpu"): return .supervised(.denseUNet(.cpu(classes: classes)))
        case ("denseunet", "paper"): return .supervised(.denseUNet(.paper(classes: classes)))
        case ("genselfdiff", "cpu"): return .genSelfDiff(.cpuSegmentation(classes: classes))
        case ("genselfdiff", "paper"): return .genSelfDiff(.genSelfDiffSegmentation(classes: classes))
        case ("diffusion-mask", "cpu"), ("diffusion-mask", "paper"), ("diffusion-teacher", "cpu"),
             ("diffusion-teacher", "paper"):
            let paper = preset == "paper"
            let image: ConditionalUNet.Configuration = paper ? .ciampiImage(classes: classes)
                : .cpuImage(classes: classes)
            return .diffusion(mask: paper ? .ciampiMask(classes: classes) : .cpuMask(classes: classes),
                              image: architecture == "diffusion-teacher" ? image : nil)
        case ("pathsegdiff", "cpu"), ("pathsegdiff", "paper"): return .pathSegDiff(preset: preset)
        case ("dtseg", "cpu"), ("dtseg", "paper"): return .dtseg(preset: preset)
        case ("dtseg-collab", "cpu"), ("dtseg-collab", "paper"): return .collaboration(preset: preset)
        default:
            throw EngineError.invalidValue(op: "ModelCard", message:
                "unknown architecture/preset \(architecture)/\(preset) (unet, fpn, denseunet, genselfdiff, "
                + "diffusion-mask, diffusion-teacher, pathsegdiff, dtseg or dtseg-collab; cpu or paper)")
        }
    }

    /// A freshly initialised network of this card, weights drawn from `generator`.
    public func makeModel(generator: RandomGenerator) throws -> any SegmentationModel {
        switch try network {
        case .supervised(let architecture): return architecture.makeModel(generator: generator)
        case .genSelfDiff(let configuration): return try GenSelfDiffSegmenter(configuration, generator: generator)
        case let .diffusion(mask, image):
            guard let inference = diffusion else {
                throw EngineError.invalidValue(op: "ModelCard", message:
                    "architecture \(architecture) needs its diffusion settings (schedule, draws, seed)")
            }
            let segmenter = try DiffusionMaskSegmenter(mask, inference: inference, generator: generator)
            guard let image else { return segmenter }
            return try DiffusionTeacher(segmenter: segmenter, image: image, generator: generator)
        case .pathSegDiff(let preset):
            return try settings(pathSegDiff, "its settings (diffusion model, tile, noise seed)")
                .makeSegmenter(preset: preset, classes: classes, generator: generator)
        case .dtseg(let preset):
            return try settings(dtseg, "its settings (diffusion model, timesteps)")
                .makeSegmenter(preset: preset, classes: classes, generator: generator)
        case .collaboration(let preset):
            return try settings(collaboration, "its frozen dtseg and fpn runs")
                .makeSegmenter(preset: preset, classes: classes, generator: generator)
        }
    }

    private func settings<Settings>(_ settings: Settings?, _ what: String) throws -> Settings {
        guard let settings else {
            throw EngineError.invalidValue(op: "ModelCard", message: "architecture \(architecture) needs \(what)")
        }
        return settings
    }

    /// Writes `<directory>/model.json` atomically.
    public func write(to directory: String) throws {
        let path = (directory as NSString).appendingPathComponent(Self.fileName)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        do { try encoder.encode(self).write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
            throw EngineError.file(path: path, message: "cannot write the model card: \(error.localizedDescription)")
        }
    }

    /// Reads `<directory>/model.json` and checks that it names a known network and pixel range.
    public static func read(from directory: String) throws -> ModelCard {
        let path = (directory as NSString).appendingPathComponent(fileName)
        guard let data = FileManager.default.contents(atPath: path) else {
            throw EngineError.file(path: path, message: "no model card beside the weights (`histodiff train` writes it)")
        }
        do {
            let card = try JSONDecoder().decode(ModelCard.self, from: data)
            _ = try card.range
            _ = try card.network
            if let side = card.resize, side <= 0 { throw EngineError.invalidValue(op: "ModelCard", message:
                "resize \(side) must be positive") }
            _ = try card.gridCrops.map(GridCrops.init)
            return card
        } catch {
            throw EngineError.file(path: path, message: "unreadable model card: \(error)")
        }
    }
}

/// A trained segmentation network with its card, loaded from a `histodiff train` run, in eval mode.
public struct TrainedModel {
    /// The run folder: the card, the weights and `split.json`.
    public let directory: String
    public let weightsPath: String
    public let card: ModelCard
    public let network: any SegmentationModel
    /// How nuclei instances are made of its probabilities: `postprocess.json` beside the weights
    /// (`InstanceTuning`), else `ModelCard.untunedPostprocessing`.
    public internal(set) var postprocessing: InstancePostprocessing?
    /// The threshold of p(foreground) chosen on validation (`threshold.json` of a jaccard-sweep run), applied
    /// instead of the argmax to the masks `segment` writes; nil: argmax.
    public let threshold: Double?

    /// `path` is a run folder (its `best.safetensors` is loaded) or a weights file, with `model.json` in its folder.
    public init(path: String) throws {
        (directory, weightsPath) = try Self.locate(path)
        card = try ModelCard.read(from: directory)
        network = try card.makeModel(generator: RandomGenerator(seed: 0))
        try network.load(from: weightsPath)
        network.train(false)
        let tuned = (directory as NSString).appendingPathComponent(InstanceTuning.fileName)
        if let data = FileManager.default.contents(atPath: tuned) {
            do { postprocessing = try JSONDecoder().decode(InstanceTuning.Record.self, from: data).chosen } catch {
                throw EngineError.file(path: tuned, message: "unreadable post-processing: \(error)")
            }
        } else {
            postprocessing = card.untunedPostprocessing
        }
        let chosen = (directory as NSString).appendingPathComponent(ChosenThreshold.fileName)
        if let data = FileManager.default.contents(atPath: chosen) {
            do { threshold = try JSONDecoder().decode(ChosenThreshold.self, from: data).threshold } catch {
                throw EngineError.file(path: chosen, message: "unreadable threshold: \(error)")
            }
            guard card.classes == 2 else {
                throw EngineError.file(path: chosen, message: "a threshold needs a binary model")
            }
        } else {
            threshold = nil
        }
    }

    /// The run folder and weights file of `path`: a run folder (its `best.safetensors`) or a weights file in one.
    static func locate(_ path: String) throws -> (directory: String, weights: String) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw EngineError.file(path: path, message:
                "no such model (a run folder of `histodiff train` or its \(TrainingRun.bestFileName))")
        }
        guard !isDirectory.boolValue else {
            return (path, (path as NSString).appendingPathComponent(TrainingRun.bestFileName))
        }
        let folder = (path as NSString).deletingLastPathComponent
        return (folder.isEmpty ? "." : folder, path)
    }

    /// The card of the run at `path` (see `locate`), read without building the network.
    static func card(ofRun path: String) throws -> ModelCard { try ModelCard.read(from: locate(path).directory) }

    /// A freshly initialised network of `card`, in eval mode, outside any run folder: what `bench` times
    /// inference with (speed does not depend on the weights).
    public init(untrained card: ModelCard, seed: UInt64 = 0) throws {
        directory = "."
        weightsPath = "(untrained)"
        self.card = card
        network = try card.makeModel(generator: RandomGenerator(seed: seed))
        network.train(false)
        postprocessing = card.untunedPostprocessing
        threshold = nil
    }

    /// `split.json` of the run, written by `histodiff train`.
    public var splitPath: String { (directory as NSString).appendingPathComponent("split.json") }
}

import Foundation
import HistoCore
import HistoData
import HistoDiffusion
import HistoNN

/// PathSegDiff's FCN head (SPEC §4): Conv3×3(F→w₀) → BN → ReLU → ConvT4×4/2(w₀→w₁) → BN → ReLU
/// → ConvT4×4/2(w₁→w₂) → BN → ReLU → Conv3×3(w₂→K), from the latent grid to 4× its size. With
/// F = 7296, widths (256, 128, 64) and K = 6: 17,470,150 parameters. Names follow
/// tools/pathsegdiff_reference.py.
public final class PathSegDiffHead: Module, UnaryLayer {
    public struct Configuration: Equatable, Sendable {
        public var featureChannels: Int
        public var widths: [Int]
        public var classes: Int

        public init(featureChannels: Int, widths: [Int], classes: Int) {
            self.featureChannels = featureChannels
            self.widths = widths
            self.classes = classes
        }

        /// The paper's widths on 7296 channels (the `pathsegdiff` UNet's middle and 12 output blocks).
        public static func paper(featureChannels: Int = 7296, classes: Int) -> Configuration {
            Configuration(featureChannels: featureChannels, widths: [256, 128, 64], classes: classes)
        }

        /// A quarter of the paper's widths, for the `cpu` UNet's 416 feature channels.
        public static func cpu(featureChannels: Int, classes: Int) -> Configuration {
            Configuration(featureChannels: featureChannels, widths: [64, 32, 16], classes: classes)
        }
    }

    public let configuration: Configuration
    let convIn: Conv2d, normIn: BatchNorm2d
    let up1: ConvTranspose2d, normUp1: BatchNorm2d
    let up2: ConvTranspose2d, normUp2: BatchNorm2d
    let convOut: Conv2d

    public init(_ configuration: Configuration, generator: RandomGenerator) {
        let c = configuration, w = c.widths
        precondition(w.count == 3, "the FCN head has three widths")
        self.configuration = c
        convIn = Conv2d(c.featureChannels, w[0], kernel: 3, padding: 1, generator: generator)
        normIn = BatchNorm2d(w[0])
        up1 = ConvTranspose2d(w[0], w[1], kernel: 4, stride: 2, padding: 1, generator: generator)
        normUp1 = BatchNorm2d(w[1])
        up2 = ConvTranspose2d(w[1], w[2], kernel: 4, stride: 2, padding: 1, generator: generator)
        normUp2 = BatchNorm2d(w[2])
        convOut = Conv2d(w[2], c.classes, kernel: 3, padding: 1, generator: generator)
        super.init()
    }

    /// Features [N, F, h, w] → logits [N, K, 4h, 4w].
    public func callAsFunction(_ features: Tensor) -> Tensor {
        let h = normIn(convIn(features)).relu()
        return convOut(normUp2(up2(normUp1(up1(h)).relu())).relu())
    }
}

/// PathSegDiff's weighted cross-entropy (SPEC §4): W_c = 1 − N_c/N with N_c and N counted over the labelled
/// pixels of the batch (N without don't-care), weight 0 for don't-care (`dontCare`, BCSS's label). The paper
/// counts over the dataset, which the step does not see; a batch of a single class gets weight 1 (plain CE),
/// where the paper's weights would give 0/0.
public enum WeightedCrossEntropy {
    public static let dontCare = 255

    /// W_c for `classes` classes from the labels' values.
    public static func classWeights(labels: [Float], classes: Int) -> [Float] {
        var counts = [Int](repeating: 0, count: classes)
        for label in labels where label != Float(dontCare) {
            let c = Int(label)
            if (0..<classes).contains(c) { counts[c] += 1 }
        }
        let total = counts.reduce(0, +)
        guard total > 0, counts.filter({ $0 > 0 }).count > 1 else { return [Float](repeating: 1, count: classes) }
        return counts.map { 1 - Float($0) / Float(total) }
    }

    /// The weighted mean CE of logits [N, K, H, W] and labels [N, H, W] (PyTorch `F.cross_entropy(weight=W,
    /// ignore_index=255)`).
    public static func loss(logits: Tensor, labels: Tensor, on backend: any Backend) throws -> Tensor {
        let weights = classWeights(labels: try labels.toArray(on: backend),
                                   classes: logits.shape[1])
        return Loss.crossEntropy(logits: logits, labels: labels, weights: weights, ignoreIndex: dontCare)
    }
}

/// PathSegDiff's frozen features (SPEC §4): a latent diffusion run's UNet on each tile's posterior-mean latent
/// noised to t = 50, its middle block and every output block bilinearly resized to the tile's latent grid and
/// concatenated (7296 channels for the `pathsegdiff` UNet, 416 for `cpu`). The noise ε is one seeded draw of a
/// tile's latent shape shared by every tile, so a tile's features do not depend on where it lies or what else is
/// in the batch. Not a `Module`: the diffusion run stays out of the segmenter's parameters and checkpoints.
public final class PathSegDiffFeatures {
    public static let timestep = 50
    /// ᾱ of the LDM linear schedule (ᾱ₅₀ = 0.9167), whatever recipe the run was trained with: the
    /// paper's t = 50 is a point of that schedule (SPEC §4).
    static let ldmAlphaBars = NoiseSchedule(.ldmLinear).alphaBars

    public let run: DiffusionRun
    public let latentSpace: LatentSpace
    /// The side of a tile in pixels; images are cut into tiles of this side.
    public let tile: Int
    public let extractor: FeatureExtractor
    public let channels: Int
    /// Where tile features are kept once computed, and the backend that computes the missing ones; nil: every
    /// call computes (inference). Training sets it (`useCache`).
    public private(set) var cache: (store: FeatureCache, backend: any Backend)?

    public init(run: DiffusionRun, tile: Int, noiseSeed: UInt64) throws {
        guard let latentSpace = run.latentSpace else {
            throw EngineError.invalidValue(op: "--method pathsegdiff", message:
                "option model needs a latent diffusion run (`histodiff pretrain --autoencoder`)")
        }
        try run.checkImageSize(height: tile, width: tile, "the PathSegDiff tile")
        let blocks = ["middle_block"] + run.model.featureBlockNames.filter { $0.hasPrefix("output_blocks.") }
        let grid = tile / latentSpace.downsamplingFactor
        let alphaBars = Self.ldmAlphaBars
        extractor = try FeatureExtractor(model: run.model, blocks: blocks, timesteps: [Self.timestep],
                                         input: .noised(seed: noiseSeed, alphaBar: { alphaBars[$0] }),
                                         outputSize: [grid, grid])
        let probe = Tensor.zeros([1, run.model.imageChannels, grid, grid])
        let probeContext = run.hipt.map { Tensor.zeros([1, $0.configuration.embedDim]) }
        channels = run.model.featureShapes(blocks, for: probe, context: probeContext).values.reduce(0) { $0 + $1[1] }
        self.run = run
        self.latentSpace = latentSpace
        self.tile = tile
    }

    /// Keeps every tile's features in a folder of `directory` named by the fingerprints of the frozen UNet and
    /// autoencoder, one file per tile named by a hash of its pixels (issue 17's cache keyed by model, image, tile
    /// and t: the file's signature holds t, ᾱ_t, the noise seed and the blocks). A tile seen again (the same
    /// aligned crop in a later epoch, validation's windows, another seed's run on the same model) is read, not
    /// recomputed; only the missing tiles are encoded, on `backend`.
    public func useCache(directory: String, backend: any Backend) throws {
        // The UNet (with a conditioned run's SSLEmbedder), the autoencoder and the HIPT encoder if any.
        let model = try run.model.fingerprint(settings: [:])
        let autoencoder = try latentSpace.autoencoder.fingerprint(
            settings: ["scale": String(latentSpace.scaleFactor), "posterior": "mean"])
        let hipt = try run.hipt.map { try String(format: "-%016llx", $0.fingerprint(settings: [:])) } ?? ""
        let tag = String(format: "%016llx-%016llx", model, autoencoder) + hipt
        cache = (FeatureCache(directory: (directory as NSString).appendingPathComponent(tag), tag: tag), backend)
    }

    /// Features of tiles [M, 3, tile, tile] in [−1, 1]: [M, C, g, g] on the latent grid g = tile/f, cut from the
    /// gradient graph (the extractor is frozen); read from the cache where it holds them. A conditioned run sees
    /// each tile's own HIPT embedding (SPEC §4: every tile gets its own HIPT embedding and LDM pass).
    public func ofTiles(_ tiles: Tensor) throws -> Tensor {
        guard let (store, backend) = cache else {
            let maps = try extractor.recordedMaps(latentSpace.meanLatents(tiles), context: run.context(tiles))
            return Tensor.concat(extractor.resized(maps), axis: 1).detach()
        }
        let values = try tiles.toArray(on: backend)
        let size = values.count / max(tiles.shape[0], 1)
        let ids = (0..<tiles.shape[0]).map { Self.contentID(values[($0 * size)..<(($0 + 1) * size)]) }
        let grid = tile / latentSpace.downsamplingFactor
        let features = try extractor(ids: ids, imageShape: [run.model.imageChannels, grid, grid], cache: store,
                                     on: backend) { missing in
            let pixels = missing.flatMap { values[($0 * size)..<(($0 + 1) * size)] }
            let subset = Tensor(pixels, shape: [missing.count] + Array(tiles.shape.dropFirst()))
            return (latentSpace.meanLatents(subset), try run.context(subset, on: backend))
        }
        return features.stacked()
    }

    /// A tile's cache file name: a 64-bit FNV-1a hash of its values' bits (collisions are negligible for the
    /// thousands of tiles of a dataset).
    static func contentID(_ values: ArraySlice<Float>) -> String {
        var hash = FNV1a()
        hash.add(values: values)
        return String(format: "%016llx", hash.value)
    }

    /// Features of images [N, 3, H, W] (sides multiples of `tile`): every tile on its own, the tiles' features
    /// placed side by side (the paper's 3×3 tiles of a 768² input give 7296×192×192).
    public func callAsFunction(_ images: Tensor) throws -> Tensor {
        let (n, height, width) = (images.shape[0], images.shape[2], images.shape[3])
        guard images.rank == 4, height % tile == 0, width % tile == 0 else {
            throw EngineError.invalidValue(op: "pathsegdiff", message:
                "images \(describe(images.shape)) do not split into \(tile)² tiles")
        }
        let (rows, columns) = (height / tile, width / tile)
        let tiles = images.reshape([n, 3, rows, tile, columns, tile]).permute([0, 2, 4, 1, 3, 5])
            .reshape([n * rows * columns, 3, tile, tile])
        let features = try ofTiles(tiles)
        let grid = features.shape[2]
        return features.reshape([n, rows, columns, channels, grid, grid]).permute([0, 3, 1, 4, 2, 5])
            .reshape([n, channels, rows * grid, columns * grid])
    }
}

/// PathSegDiff's segmenter: the frozen tile features and the FCN head, whose logits (at 4× the latent grid) are
/// resized to the input when the autoencoder does not downsample by 4. Only the head is a member.
public final class PathSegDiffSegmenter: Module, SegmentationModel, FeatureCaching {
    public let head: PathSegDiffHead
    public let features: PathSegDiffFeatures
    /// The folder of the tile feature cache (`PathSegDiffSettings.cache`); nil: none.
    public let cacheDirectory: String?

    public init(head: PathSegDiffHead, features: PathSegDiffFeatures, cacheDirectory: String? = nil) {
        self.head = head
        self.features = features
        self.cacheDirectory = cacheDirectory
        super.init()
    }

    public func cacheFeatures(on backend: any Backend) throws {
        guard let cacheDirectory, features.cache == nil else { return }
        try features.useCache(directory: cacheDirectory, backend: backend)
    }

    public var classes: Int { head.configuration.classes }
    public var inputMultiple: Int { features.tile }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        do {
            return logits(features: try features(x), size: Array(x.shape.suffix(2)))
        } catch {
            return .invalid("pathsegdiff", "\(error)")
        }
    }

    /// The head's logits of tile features, at `size` [H, W] (resized when the autoencoder does not downsample by 4).
    func logits(features: Tensor, size: [Int]) -> Tensor {
        let logits = head(features)
        return logits.shape.suffix(2).elementsEqual(size) ? logits
            : logits.interpolateBilinear(size: size, alignCorners: false)
    }
}

/// What a pathsegdiff card records beside its head (`ModelCard.pathSegDiff`).
public struct PathSegDiffSettings: Codable, Equatable, Sendable {
    /// The frozen `histodiff pretrain --autoencoder` run (a folder or its weights file).
    public var model: String
    public var tile: Int
    /// The seed of the shared noise ε of every tile.
    public var noiseSeed: UInt64
    /// The tile feature cache's folder (`--option cache`), used by training and `experiment`'s scoring; nil: off.
    public var cache: String?

    public init(model: String, tile: Int, noiseSeed: UInt64 = 0, cache: String? = nil) {
        self.model = model
        self.tile = tile
        self.noiseSeed = noiseSeed
        self.cache = cache
    }

    /// The segmenter: the frozen run's features and a fresh head of `preset`'s widths.
    func makeSegmenter(preset: String, classes: Int, generator: RandomGenerator) throws -> PathSegDiffSegmenter {
        let features = try PathSegDiffFeatures(run: try DiffusionRun.load(model), tile: tile, noiseSeed: noiseSeed)
        let configuration: PathSegDiffHead.Configuration = preset == "paper"
            ? .paper(featureChannels: features.channels, classes: classes)
            : .cpu(featureChannels: features.channels, classes: classes)
        return PathSegDiffSegmenter(head: PathSegDiffHead(configuration, generator: generator), features: features,
                                    cacheDirectory: cache)
    }
}

/// PathSegDiff (Graikos et al.'s features, SPEC §4): only the FCN head is trained, on the frozen tile features of
/// a latent diffusion run, with the weighted CE. docs/methods/pathsegdiff.md.
public final class PathSegDiffMethod: SingleNetworkMethod {
    public let network: OptimizedNetwork
    let segmenter: PathSegDiffSegmenter
    let seed: UInt64

    public init(_ segmenter: PathSegDiffSegmenter, setup: MethodSetup) {
        network = OptimizedNetwork(segmenter, recipe: setup.plan.optimizer, totalSteps: setup.totalSteps)
        self.segmenter = segmenter
        seed = setup.plan.seed
    }

    /// The frozen features of the (unaugmented, tile-aligned) crops, then a flip and quarter turns drawn per crop
    /// applied to features and labels together: the augmentations that keep cached features valid (issue 17).
    public func step(_ batch: MethodBatch, context: StepContext) throws -> [String: Float] {
        try segmenter.cacheFeatures(on: context.backend)
        segmenter.train(true)
        let (features, labels) = Self.dihedral(try segmenter.features(batch.labelled.images),
                                               batch.labelled.labels!, items: batch.labelled.items, seed: seed)
        let logits = segmenter.logits(features: features, size: Array(labels.shape.suffix(2)))
        let loss = try WeightedCrossEntropy.loss(logits: logits, labels: labels, on: context.backend)
        return try OptimizedNetwork.minimise(loss, named: "loss", networks: [network], context: context)
    }

    /// Features [N, C, h, w] and labels [N, S, S], each crop turned by k quarter turns and, with probability ½,
    /// flipped left–right, k and the flip drawn from the crop's own stream (its epoch and position, as the loader's
    /// augmentations: a resumed or data-parallel run draws the same).
    static func dihedral(_ features: Tensor, _ labels: Tensor, items: [BatchItem], seed: UInt64) -> (Tensor, Tensor) {
        var turnedFeatures: [Tensor] = [], turnedLabels: [Tensor] = []
        for (i, item) in items.enumerated() {
            var stream = PhiloxStream(seed: seed, path: [3, UInt64(item.epoch), UInt64(item.position)])
            let (turns, flips) = (stream.integer(0, 4), stream.integer(0, 2) == 1)
            var f = features.slice(axis: 0, start: i, end: i + 1).rot90(k: turns, axes: (2, 3))
            var l = labels.slice(axis: 0, start: i, end: i + 1).rot90(k: turns, axes: (1, 2))
            if flips { (f, l) = (f.flip(axes: [3]), l.flip(axes: [2])) }
            turnedFeatures.append(f)
            turnedLabels.append(l)
        }
        return (Tensor.concat(turnedFeatures, axis: 0), Tensor.concat(turnedLabels, axis: 0))
    }

    /// The tile of each preset: the paper's 256² (3×3 of them in a 768² crop); 64² on the CPU.
    static func tile(_ preset: String) -> Int { preset == "paper" ? 256 : 64 }

    static func card(_ preset: String, options: [String: String], classes: Int,
                     plan: TrainingPlan) throws -> ModelCard {
        guard let model = options["model"] else {
            throw EngineError.invalidValue(op: "--method pathsegdiff", message:
                "needs --option model=RUN (a `histodiff pretrain --autoencoder` run)")
        }
        if options["cache"]?.isEmpty == true {
            throw EngineError.invalidValue(op: "--option cache", message: "is empty; give a folder, or off")
        }
        var card = ModelCard(architecture: "pathsegdiff", preset: preset, classes: classes, pixelRange: plan.pixelRange)
        let modelPath = URL(fileURLWithPath: model).standardizedFileURL.path
        let cache = options["cache"].map { URL(fileURLWithPath: $0).standardizedFileURL.path }
            ?? ((DiffusionRun.weightsFile(modelPath) as NSString).deletingLastPathComponent as NSString)
                .appendingPathComponent("feature-cache")
        card.pathSegDiff = PathSegDiffSettings(model: modelPath, tile: tile(preset),
                                               cache: options["cache"] == "off" ? nil : cache)
        return card
    }

    /// `pathsegdiff`: the FCN head on frozen features, Adam 1e-4 (the paper's best). Preset `cpu`: 64² tiles,
    /// 192² crops (3×3 tiles), batch 4, 2 crops per image, 30 epochs, patience 10, widths (64, 32, 16). Preset
    /// `paper`: 256² tiles in 768² crops, widths (256, 128, 64); batch and epochs are unstated (SPEC §9.7), the
    /// shared defaults' batch is cut to 4.
    public static let registration = RegisteredMethod(
        name: "pathsegdiff",
        paper: "PathSegDiff: FCN head on frozen latent-diffusion features with 3×3 tile context (Graikos et al.)",
        defaults: "cpu: 64² tiles in 192² crops, batch 4, Adam 1e-4, weighted CE, 30 epochs; paper: 256² tiles in "
            + "768² crops, batch 4",
        options: [MethodOption(name: "model", help: "the frozen `histodiff pretrain --autoencoder` run (required)"),
                  MethodOption(name: "cache", help: "folder of the tile feature cache, or off (default: "
                                + "feature-cache in the model's run folder)")],
        plan: { preset, plan, _ in
            plan.optimizer = .adam(learningRate: 1e-4)
            plan.patchSize = 3 * tile(preset)
            // Tile-aligned crops without pixel changes: their tiles recur, so cached features stay valid; the
            // step flips and turns features and labels instead.
            plan.cropAlignment = tile(preset)
            plan.augmentation = .none
            plan.batchSize = 4
            if preset == "cpu" {
                plan.cropsPerImage = 2
                plan.length = .epochs(30)
                plan.patience = 10
            }
        },
        card: { preset, options, classes, plan in try card(preset, options: options, classes: classes, plan: plan) },
        make: { preset, options, setup in
            let card = try card(preset, options: options, classes: setup.classes, plan: setup.plan)
            guard let segmenter = try card.makeModel(generator: RandomGenerator(seed: setup.plan.seed))
                as? PathSegDiffSegmenter else { preconditionFailure("a pathsegdiff card makes a PathSegDiffSegmenter") }
            return PathSegDiffMethod(segmenter, setup: setup)
        })
}

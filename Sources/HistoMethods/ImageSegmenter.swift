import Foundation
import HistoCore
import HistoData
import HistoMetrics

/// Whole images of any size segmented by a trained model with sliding-window inference and written as
/// `SegmentationOutputs`: the one path of `histodiff segment` and `histodiff eval --model`.
public struct ImageSegmenter {
    public internal(set) var model: TrainedModel
    public let window: SlidingWindow
    /// Where tensors are evaluated; the default backend when nil.
    public let backend: (any Backend)?
    /// Probabilities already computed for an image (`experiment`'s tuning, then its scoring); nil: every image is
    /// computed.
    public var memo: ProbabilityMemo?

    /// Throws when the window's tiles are not multiples of the network's downsampling.
    public init(model: TrainedModel, window: SlidingWindow, backend: (any Backend)? = nil) throws {
        let multiple = model.network.inputMultiple
        guard window.tileHeight % multiple == 0, window.tileWidth % multiple == 0 else {
            throw EngineError.invalidValue(op: "ImageSegmenter", message:
                "tile \(window.tileHeight)×\(window.tileWidth) is not a multiple of \(multiple), the downsampling of the \(model.card.architecture)/\(model.card.preset) network in \(model.weightsPath)")
        }
        self.model = model
        self.window = window
        self.backend = backend
    }

    /// The segmenter `histodiff segment` uses for the run in `directory` when no window option is given: tiles of
    /// its training patch, overlap 0.25, Gaussian blending, reflect padding (`SlidingWindow.segmentation`).
    /// `experiment` scores and the instance tuning use it too, so that a table measures the masks `segment` writes.
    /// With `cachingFeatures`, a model that can keep frozen features (`FeatureCaching`) uses the cache its card
    /// names (`experiment`: every run on the same frozen model segments the same images).
    public static func ofRun(at directory: String, backend: (any Backend)? = nil,
                             cachingFeatures: Bool = false) throws -> ImageSegmenter {
        let model = try TrainedModel(path: directory)
        if cachingFeatures, let caching = model.network as? FeatureCaching {
            try caching.cacheFeatures(on: backend ?? Engine.defaultBackend)
        }
        return try ImageSegmenter(model: model, window: .segmentation(tile: model.card.defaultTile), backend: backend)
    }

    /// The window for an image of `height × width`: the tile shrunk, along each axis where it is larger than the
    /// image, to the image's side rounded up to the network's input multiple. A larger tile would only add padding,
    /// and the memory of a tile grows with its area (`--tile 100000` on a 128² image asked for 26 GB).
    public func window(height: Int, width: Int) throws -> SlidingWindow {
        let multiple = model.network.inputMultiple
        func fitted(_ tile: Int, _ side: Int) -> Int { min(tile, (side + multiple - 1) / multiple * multiple) }
        let tileHeight = fitted(window.tileHeight, height), tileWidth = fitted(window.tileWidth, width)
        guard tileHeight != window.tileHeight || tileWidth != window.tileWidth else { return window }
        return try SlidingWindow(tileHeight: tileHeight, tileWidth: tileWidth, overlap: window.overlap,
                                 blending: window.blending, batchSize: window.batchSize, padding: window.padding)
    }

    /// Class probabilities [K, H, W] of `image`, which the network sees in the pixel range of its card, through
    /// the window fitted to the image (`window(height:width:)`). A card with `resize` has the image resized to
    /// its side first, as in training, and the probabilities resized back (bilinearly) to the image's size, so that
    /// masks are written and scored at the size of the image and its mask. A card with `gridCrops` has the image
    /// cut into the crops of its grid (`GridCrops`) first, each crop segmented so (resized and back), and the
    /// crops' probabilities stitched back into the image's.
    public func probabilities(of image: Image) throws -> Planes {
        if let memo { return try memo.probabilities(of: image) { try computedProbabilities(of: image) } }
        return try computedProbabilities(of: image)
    }

    private func computedProbabilities(of image: Image) throws -> Planes {
        guard let grid = model.card.gridCrops else { return try probabilities(ofInput: image) }
        let cells = try GridCrops(grid).cells(height: image.height, width: image.width, image: "the image")
        return try GridCrops.stitch(cells.map { try probabilities(ofInput: image.cropped(to: $0)) }, cells: cells,
                                    height: image.height, width: image.width)
    }

    /// The probabilities of an input the network sees whole, as in training: an image, or a grid crop of one.
    private func probabilities(ofInput image: Image) throws -> Planes {
        let network = model.network
        let side = model.card.resize
        let input = try side.map { try image.resized(height: $0, width: $0) } ?? image
        let probabilities = try window(height: input.height, width: input.width)
            .infer(input.colorPlanes(range: try model.card.range), on: backend) { network($0).softmax(axis: 1) }
        guard side != nil else { return probabilities }
        return try probabilities.resized(height: image.height, width: image.width, filter: .bilinear)
    }

    /// The size the network sees `image` at: the card's resize side, else the image's own, or its grid crop's
    /// (the first; the last row and column take a remainder).
    func networkSize(of image: Image) -> (height: Int, width: Int) {
        let grid = model.card.gridCrops ?? 1
        return model.card.resize.map { ($0, $0) } ?? (image.height / grid, image.width / grid)
    }

    /// Segments the PNG images at `paths` and writes `masks/NAME.png`, `probabilities/NAME.png`,
    /// `overlays/NAME.png` and, with the model's instance post-processing, `instances/NAME.png` under
    /// `directory`, NAME being the file name without its extension; two images of one
    /// name are an error. `progress` is called after each image with the number done and its name; `notice` is told,
    /// once per image size, when the tile is larger than the image and shrunk to fit it. Returns the names.
    @discardableResult
    public func segment(_ paths: [String], to directory: String, notice: ((String) -> Void)? = nil,
                        progress: ((_ done: Int, _ name: String) -> Void)? = nil) throws -> [String] {
        let names = paths.map { (($0 as NSString).lastPathComponent as NSString).deletingPathExtension }
        let repeated = Dictionary(grouping: zip(names, paths), by: \.0).filter { $0.value.count > 1 }
        guard repeated.isEmpty else {
            let list = repeated.keys.sorted().map { name in "\(name): " + repeated[name]!.map(\.1).joined(separator: ", ") }
            throw EngineError.invalidValue(op: "ImageSegmenter", message:
                "images share a name, so their outputs would overwrite each other: " + list.joined(separator: "; "))
        }
        try FileSystem.createFolder(directory, purpose: "output")
        var announced: Set<[Int]> = []
        for (done, (path, name)) in zip(paths, names).enumerated() {
            let image = try PNG.read(path: path)
            let (height, width) = networkSize(of: image)
            let fitted = try window(height: height, width: width)
            if fitted != window, announced.insert([height, width]).inserted {
                notice?("tile \(window.tileWidth)×\(window.tileHeight) is larger than \(path) "
                        + "(\(width)×\(height)); using \(fitted.tileWidth)×\(fitted.tileHeight), "
                        + "the image rounded up to a multiple of \(model.network.inputMultiple)")
            }
            let probabilities = try probabilities(of: image)
            try SegmentationOutputs.write(image: image, probabilities: probabilities,
                                          instances: try model.postprocessing?.instances(of: probabilities),
                                          to: directory, name: name, threshold: model.threshold)
            progress?(done + 1, name)
        }
        return names
    }
}

/// Probabilities by image, kept while `experiment` tunes a run's instance post-processing on its validation
/// images and then scores the same images: each is segmented once. Holds the images it is given, so it is made for
/// one run's validation set (not for `--test` sets of any size).
public final class ProbabilityMemo {
    private var stored: [UInt64: [(image: Image, probabilities: Planes)]] = [:]

    public init() {}

    /// `image`'s stored probabilities, or `compute()`'s, stored.
    func probabilities(of image: Image, compute: () throws -> Planes) throws -> Planes {
        var hash = FNV1a()
        hash.add("\(image.width)×\(image.height)×\(image.channels)".utf8)
        image.samples.withUnsafeBytes { hash.add($0) }
        if let hit = stored[hash.value]?.first(where: { $0.image == image }) { return hit.probabilities }
        let probabilities = try compute()
        stored[hash.value, default: []].append((image, probabilities))
        return probabilities
    }
}

/// `histodiff eval --model`: a trained model's predictions on dataset images, scored against the dataset's masks.
public enum ModelEvaluation {
    /// The folders under the output that hold one PNG per evaluated image.
    static let imageFolders = ["masks", "probabilities", "overlays", "instances", "truth/masks", "truth/instances"]

    /// Segments the images of `dataset` named in `names` (each must have a mask) into `output` with
    /// `segmenter`, copies their masks to `output/truth/masks` (and their instance maps to `output/truth/instances`
    /// when every one has one, for AJI) and scores the predictions against them with `FolderEvaluation`.
    /// Afterwards `output`'s masks/, probabilities/, overlays/ and truth/ hold these images only: other PNG files
    /// there (an earlier evaluation's) are removed, so they are not scored. `output` must not be the dataset folder.
    public static func run(_ segmenter: ImageSegmenter, dataset: Dataset, names: [String], output: String,
                           progress: ((_ done: Int, _ name: String) -> Void)? = nil) throws -> FolderEvaluation {
        func invalid(_ message: String) -> EngineError { .invalidValue(op: "ModelEvaluation", message: message) }
        guard URL(fileURLWithPath: output).standardizedFileURL.path != dataset.root else {
            throw invalid("the output folder \(output) is the dataset folder; its masks/ would be overwritten")
        }
        let byName = Dictionary(uniqueKeysWithValues: dataset.items.map { ($0.name, $0) })
        guard !names.isEmpty else { throw invalid("no images to evaluate in \(dataset.root)") }
        let unknown = names.filter { byName[$0] == nil }
        guard unknown.isEmpty else { throw invalid("not images of \(dataset.root): \(unknown.joined(separator: ", "))") }
        let items = names.map { byName[$0]! }
        let unmasked = items.filter { $0.maskPath == nil }.map(\.name)
        guard unmasked.isEmpty else { throw invalid("no mask in \(dataset.root)/masks for \(unmasked.joined(separator: ", "))") }

        try removeOtherImages(in: output, keeping: Set(names))
        try segmenter.segment(items.map(\.imagePath), to: output, progress: progress)
        let truth = output + "/truth"
        let withInstances = items.allSatisfy { $0.instancePath != nil }
        for item in items {
            try copy(item.maskPath!, to: "\(truth)/masks/\(item.name).png")
            if withInstances { try copy(item.instancePath!, to: "\(truth)/instances/\(item.name).png") }
        }
        return try FolderEvaluation(predictionFolder: output + "/masks", truthFolder: truth + "/masks",
                                    instanceFolder: withInstances ? truth + "/instances" : nil,
                                    predictionInstanceFolder: segmenter.model.postprocessing == nil
                                        ? nil : output + "/instances")
    }

    private static func removeOtherImages(in output: String, keeping names: Set<String>) throws {
        let fm = FileManager.default
        for folder in imageFolders.map({ output + "/" + $0 }) {
            guard let entries = try? fm.contentsOfDirectory(atPath: folder) else { continue }
            for entry in entries where entry.hasSuffix(".png") && !names.contains(String(entry.dropLast(4))) {
                do { try fm.removeItem(atPath: folder + "/" + entry) } catch {
                    throw EngineError.file(path: folder + "/" + entry, message: "cannot remove an earlier evaluation's image: \(error.localizedDescription)")
                }
            }
        }
    }

    private static func copy(_ source: String, to destination: String) throws {
        let fm = FileManager.default
        do {
            try fm.createDirectory(atPath: (destination as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            if fm.fileExists(atPath: destination) { try fm.removeItem(atPath: destination) }
            try fm.copyItem(atPath: source, toPath: destination)
        } catch {
            throw EngineError.file(path: destination, message: "cannot copy \(source) there: \(error.localizedDescription)")
        }
    }
}

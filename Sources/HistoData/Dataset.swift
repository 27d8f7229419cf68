import Foundation
import HistoCore

/// What mask values mean.
public enum MaskClasses: Equatable, Sendable {
    /// 0 is background, any value above 0 is foreground; foreground becomes class 1.
    case binary
    /// Values are class ids `0..<count`, kept as they are, and 255 (`Loss.ignoredLabel`, SPEC §1): pixels that
    /// losses and metrics skip; any other value is an error.
    case ids(count: Int)
    /// Nuclei with a boundary class (SPEC §2: "MoNuSeg 2, 3 when the boundary is kept"): 0 background, 1 interior,
    /// 2 boundary `width` pixels wide (`InstanceGrid.boundaryClasses`), from the instance map where the image has
    /// one, else from the 8-connected components of its binary mask (touching nuclei stay one object there).
    case boundary(width: Int)

    /// The number of classes a segmentation of these masks predicts, background included.
    public var count: Int {
        switch self {
        case .binary: return 2
        case .ids(let count): return count
        case .boundary: return 3
        }
    }

    public var isBoundary: Bool {
        if case .boundary = self { return true }
        return false
    }

    /// Throws when a value of `mask` is neither a declared class nor the ignore label (any value is a valid binary
    /// mask).
    func check(_ mask: Image, path: String) throws {
        guard case let .ids(count) = self else { return }
        let outside = Set(mask.samples.lazy.filter { Int($0) >= count && Int($0) != Loss.ignoredLabel }).sorted()
        guard outside.isEmpty else {
            let shown = outside.prefix(8).map(String.init).joined(separator: ", ") + (outside.count > 8 ? ", …" : "")
            throw EngineError.file(path: path, message:
                "mask values \(shown) are outside the \(count) declared classes 0..<\(count) (255: ignore)")
        }
    }

    /// The mask's class ids as a label map `[1, H, W]`; `instances` (the image's instance map) makes the boundary
    /// target.
    func labels(of mask: Image, instances: Image?, path: String) throws -> Planes {
        try check(mask, path: path)
        let raw = try mask.labelPlanes()
        switch self {
        case .ids: return raw
        case .binary:
            return Planes(unchecked: 1, height: raw.height, width: raw.width, values: raw.values.map { $0 > 0 ? 1 : 0 })
        case .boundary(let width):
            let (w, h) = (raw.width, raw.height)
            let objects = try instances.map { try $0.labelPlanes().values.map { Int32($0) } }
                ?? InstanceGrid.connectedComponents(raw.values.map { $0 > 0 ? 1 : 0 }, width: w, height: h).labels
            let classes = InstanceGrid.boundaryClasses(objects, width: w, height: h, boundaryWidth: width)
            return Planes(unchecked: 1, height: h, width: w, values: classes.map(Float.init))
        }
    }
}

/// One decoded example: the image as stored, its class-id mask and instance-id map when present.
public struct Sample: Sendable {
    public let name: String
    public let image: Image
    /// Class ids `[1, H, W]` (binary masks mapped to 0/1).
    public let mask: Planes?
    /// Instance ids `[1, H, W]`, 0 for background.
    public let instances: Planes?
}

/// A dataset folder: `images/NAME.png`, optional `masks/NAME.png`, optional `instances/NAME.png` (16-bit ids).
/// Unlabelled data is a folder of images alone (or `images/` without `masks/`). Names are sorted.
public struct Dataset: Sendable {
    public struct Item: Equatable, Sendable {
        public let name: String
        public let imagePath: String
        public let maskPath: String?
        public let instancePath: String?
        public let width: Int
        public let height: Int
        /// The name of the stored image the item comes from: its own name unless it is a grid crop.
        public let source: String
        /// The part of the stored image the item is (`gridCropped(_:)`); nil: all of it.
        public let region: GridCrops.Cell?

        init(name: String, imagePath: String, maskPath: String?, instancePath: String?, width: Int, height: Int,
             source: String? = nil, region: GridCrops.Cell? = nil) {
            self.name = name
            self.imagePath = imagePath
            self.maskPath = maskPath
            self.instancePath = instancePath
            self.width = width
            self.height = height
            self.source = source ?? name
            self.region = region
        }
    }

    public let root: String
    public let classes: MaskClasses
    /// Sizes as `sample(at:)` returns them: each image's own, or `resizedSide` squared.
    public private(set) var items: [Item]
    /// The side every sample is resized to (`resized(to:)`); nil: samples as stored.
    public private(set) var resizedSide: Int?
    /// How every image is cut into items (`gridCropped(_:)`); nil: one item per image.
    public private(set) var gridCrops: GridCrops?
    /// The stored images the items come from, as opened: before `gridCropped(_:)` and `resized(to:)`.
    public let storedImages: [Item]

    public var count: Int { items.count }

    init(root: String, classes: MaskClasses, items: [Item]) {
        self.root = root
        self.classes = classes
        self.items = items
        storedImages = items
    }

    /// The dataset of the stored images, one item each, as opened: what inference segments and scores whole.
    public var wholeImages: Dataset { Dataset(root: root, classes: classes, items: storedImages) }

    /// The stored images the items `names` come from, whole, and their names: what inference segments and scores
    /// when a run trained on grid crops of them.
    public func wholeImages(of names: [String]) -> (dataset: Dataset, names: [String]) {
        (wholeImages, sources(of: names))
    }

    /// The names of the stored images of the items `names`, each once, sorted (a name not in the dataset is kept).
    public func sources(of names: [String]) -> [String] {
        let source = Dictionary(uniqueKeysWithValues: items.map { ($0.name, $0.source) })
        return Set(names.map { source[$0] ?? $0 }).sorted()
    }

    /// Opens and validates a dataset folder. Every image header is read and every mask decoded, and all problems
    /// are reported together in one `EngineError.file(path: root, …)`, one line per offending file: an image that
    /// cannot be read, a missing mask when `requireMasks`, a mask or instance map that cannot be read, is not
    /// one-channel or differs in size from its image, mask values outside `classes`, a mask or instance map
    /// without an image. A missing folder or one without PNG images is an error too.
    ///
    /// `ignoringMasks` opens the images alone, as unlabelled data (diffusion pretraining): `masks/` and
    /// `instances/` are not read, so their problems do not matter. `decodingImages` decodes every image instead of
    /// reading its header only, so that a damaged file (truncated, bad checksum) is found before a run starts rather
    /// than when the image is first drawn.
    public static func open(path root: String, requireMasks: Bool = false, classes: MaskClasses = .binary,
                            ignoringMasks: Bool = false, decodingImages: Bool = false) throws -> Dataset {
        if case let .ids(count) = classes, count < 2 {
            throw EngineError.file(path: root, message: "\(count) mask classes declared; a segmentation needs at least 2")
        }
        if case let .boundary(width) = classes, width < 1 {
            throw EngineError.file(path: root, message: "boundary width \(width) must be at least 1 pixel")
        }
        if requireMasks && ignoringMasks {
            throw EngineError.file(path: root, message: "masks cannot be both required and ignored")
        }
        guard isDirectory(root) else { throw EngineError.file(path: root, message: "no such dataset folder") }
        let root = URL(fileURLWithPath: root).standardizedFileURL.path
        let layered = isDirectory(root + "/images")
        let imageFolder = layered ? root + "/images" : root
        let labelled = layered && !ignoringMasks
        let maskFolder = labelled && isDirectory(root + "/masks") ? root + "/masks" : nil
        let instanceFolder = labelled && isDirectory(root + "/instances") ? root + "/instances" : nil

        let imageNames = try pngNames(in: imageFolder)
        guard !imageNames.isEmpty else { throw EngineError.file(path: imageFolder, message: "no PNG images in the folder") }
        if requireMasks && maskFolder == nil {
            throw EngineError.file(path: root, message: "masks are required but there is no masks/ folder next to images/")
        }
        let maskNames = try maskFolder.map { Set(try pngNames(in: $0)) } ?? []
        let instanceNames = try instanceFolder.map { Set(try pngNames(in: $0)) } ?? []

        var problems: [String] = []
        func note(_ path: String, _ message: String) { problems.append("\(path): \(message)") }
        func note(_ error: Error, path: String) {
            if case let .file(errorPath, message) = error as? EngineError { note(errorPath, message) } else { note(path, "\(error)") }
        }
        /// The header of a one-channel map of the image's size, or nil after noting why not.
        func checkedMap(_ path: String, kind: String, image: PNG.Header) -> PNG.Header? {
            do {
                let map = try PNG.readHeader(path: path)
                if map.channels != 1 {
                    note(path, "\(kind) has \(map.channels) channels; it must be one-channel grayscale")
                    return nil
                }
                if map.width != image.width || map.height != image.height {
                    note(path, "\(kind) is \(map.width)×\(map.height) but its image is \(image.width)×\(image.height)")
                    return nil
                }
                return map
            } catch { note(error, path: path); return nil }
        }

        var items: [Item] = []
        for name in imageNames {
            let imagePath = "\(imageFolder)/\(name).png"
            let header: PNG.Header
            do {
                header = try PNG.readHeader(path: imagePath)
                if decodingImages { _ = try PNG.read(path: imagePath) }
            } catch { note(error, path: imagePath); continue }
            var maskPath: String?
            if let maskFolder, maskNames.contains(name) {
                let path = "\(maskFolder)/\(name).png"
                if checkedMap(path, kind: "mask", image: header) != nil {
                    do { try classes.check(try PNG.read(path: path), path: path); maskPath = path } catch { note(error, path: path) }
                }
            } else if requireMasks {
                note(imagePath, "no mask \(maskFolder ?? root + "/masks")/\(name).png")
            }
            var instancePath: String?
            if let instanceFolder, instanceNames.contains(name) {
                let path = "\(instanceFolder)/\(name).png"
                if checkedMap(path, kind: "instance map", image: header) != nil { instancePath = path }
            }
            items.append(Item(name: name, imagePath: imagePath, maskPath: maskPath, instancePath: instancePath,
                              width: header.width, height: header.height))
        }
        let known = Set(imageNames)
        for (folder, names, kind) in [(maskFolder, maskNames, "mask"), (instanceFolder, instanceNames, "instance map")] {
            guard let folder else { continue }
            for name in names.subtracting(known).sorted() { note("\(folder)/\(name).png", "\(kind) has no image \(imageFolder)/\(name).png") }
        }
        guard problems.isEmpty else {
            let header = problems.count == 1 ? "1 problem" : "\(problems.count) problems"
            throw EngineError.file(path: root, message: "invalid dataset, \(header):\n" + problems.map { "  " + $0 }.joined(separator: "\n"))
        }
        return Dataset(root: root, classes: classes, items: items)
    }

    /// Throws when a `size × size` patch fits in no image (each is smaller along a side): its crops would be mostly
    /// padding, and a huge size would exhaust memory. The message names the largest image and the largest patch
    /// that fits it.
    public func checkPatchFits(_ size: Int) throws {
        guard let largest = items.max(by: { min($0.width, $0.height) < min($1.width, $1.height) }) else { return }
        let fitting = min(largest.width, largest.height)
        guard size > fitting else { return }
        throw EngineError.file(path: root, message: "a patch of \(size)×\(size) is larger than every image (the "
                               + "largest, \(largest.name), is \(largest.width)×\(largest.height)); "
                               + "use a patch of at most \(fitting)")
    }

    /// Decodes item `index`: its image, mask (class ids) and instance map, resized when `resizedSide` says so.
    public func sample(at index: Int) throws -> Sample {
        guard items.indices.contains(index) else {
            throw EngineError.invalidValue(op: "Dataset.sample", message: "index \(index) outside 0..<\(items.count) in \(root)")
        }
        let item = items[index]
        let instances = try item.instancePath.map { try PNG.read(path: $0) }
        let stored = Sample(
            name: item.name,
            image: try PNG.read(path: item.imagePath),
            mask: try item.maskPath.map {
                try classes.labels(of: try PNG.read(path: $0), instances: instances, path: $0)
            },
            instances: try instances?.labelPlanes())
        // Cropped after the labels are made, so that a boundary class is drawn where the whole image has one.
        let sample = try item.region.map { region in
            Sample(name: stored.name, image: stored.image.cropped(to: region),
                   mask: try stored.mask?.cropped(to: region), instances: try stored.instances?.cropped(to: region))
        } ?? stored
        guard let side = resizedSide else { return sample }
        // Labels by nearest neighbour: blending would invent class and instance ids.
        return Sample(name: sample.name, image: try sample.image.resized(height: side, width: side),
                      mask: try sample.mask?.resized(height: side, width: side, filter: .nearest),
                      instances: try sample.instances?.resized(height: side, width: side, filter: .nearest))
    }

    /// This dataset with every image, mask and instance map resized to `side × side` when decoded (XNet's GlaS
    /// protocol trains and validates at 128²): images bilinearly (`Image.resized`), labels by nearest neighbour.
    /// Masks keep the classes computed at the stored size (a boundary class is drawn before resizing).
    public func resized(to side: Int) throws -> Dataset {
        guard side > 0 else {
            throw EngineError.invalidValue(op: "--resize", message: "side \(side) must be positive")
        }
        var resized = self
        resized.resizedSide = side
        resized.items = items.map {
            Item(name: $0.name, imagePath: $0.imagePath, maskPath: $0.maskPath, instancePath: $0.instancePath,
                 width: side, height: side, source: $0.source, region: $0.region)
        }
        return resized
    }

    /// This dataset with every image, mask and instance map cut into the crops of `grid` (`GridCrops`), each an
    /// item named `NAME@row,column`, cropped when decoded (CDCL's MoNuSeg protocol: 4, then `resized(to: 320)`).
    /// A grid of 1 is this dataset. Throws, naming the option, when the grid does not fit an image, or when this
    /// dataset is already cut or resized (crops are taken from the stored images, before resizing).
    public func gridCropped(_ grid: GridCrops) throws -> Dataset {
        guard grid.count > 1 else { return self }
        guard gridCrops == nil, resizedSide == nil else {
            throw EngineError.invalidValue(op: "--grid-crops", message: "\(root) is already cut or resized; cut "
                                           + "the stored images before resizing")
        }
        var cropped = self
        cropped.gridCrops = grid
        cropped.items = try items.flatMap { item in
            try grid.cells(height: item.height, width: item.width, image: item.imagePath).map {
                Item(name: GridCrops.name(of: $0, in: item.name), imagePath: item.imagePath, maskPath: item.maskPath,
                     instancePath: item.instancePath, width: $0.width, height: $0.height, source: item.name,
                     region: $0)
            }
        }
        return cropped
    }

    private static func isDirectory(_ path: String) -> Bool {
        var directory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &directory) && directory.boolValue
    }

    /// Names (without `.png`) of the visible PNG files in `folder`, sorted.
    private static func pngNames(in folder: String) throws -> [String] {
        let entries: [String]
        do { entries = try FileManager.default.contentsOfDirectory(atPath: folder) } catch {
            throw EngineError.file(path: folder, message: "cannot list the folder: \(error.localizedDescription)")
        }
        return entries.filter { !$0.hasPrefix(".") && $0.hasSuffix(".png") }.map { String($0.dropLast(4)) }.sorted()
    }
}

import HistoCore
import HistoData
import HistoNN

/// A network that maps images [N, C, H, W] to class logits [N, K, H, W].
public protocol SegmentationModel: Module, UnaryLayer {
    /// K, the number of output channels (background included).
    var classes: Int { get }
    /// Height and width must be multiples of this (the total downsampling of the encoder).
    var inputMultiple: Int { get }
}

/// A model with frozen parts that can keep what they compute for inputs seen again (PathSegDiff's tile features):
/// its training turns the cache on, and so does `experiment`'s scoring, where every run on the same frozen model
/// segments the same images. `segment` on new images does not (a new image rarely repeats a tile).
public protocol FeatureCaching {
    /// Uses the cache the model's card names, computing what it lacks on `backend`; nothing when it names none.
    func cacheFeatures(on backend: any Backend) throws
}

/// The supervised segmentation networks, by configuration.
public enum SegmentationArchitecture: Equatable, Sendable {
    case unet(SegmentationUNet.Configuration)
    case resnetFPN(ResNetFPN.Configuration)
    case denseUNet(DenseUNet.Configuration)

    /// A freshly initialised network; weights and dropout masks are drawn from `generator`.
    public func makeModel(generator: RandomGenerator) -> any SegmentationModel {
        switch self {
        case .unet(let configuration): return SegmentationUNet(configuration, generator: generator)
        case .resnetFPN(let configuration): return ResNetFPN(configuration, generator: generator)
        case .denseUNet(let configuration): return DenseUNet(configuration, generator: generator)
        }
    }

    public var classes: Int {
        switch self {
        case .unet(let configuration): return configuration.classes
        case .resnetFPN(let configuration): return configuration.classes
        case .denseUNet(let configuration): return configuration.classes
        }
    }
}

/// How `SegmentationModel.logits(of:tiling:)` covers an image.
public struct InferenceTiling: Equatable, Sendable {
    /// Square tiles of `size` (a multiple of the model's `inputMultiple`) at offsets 0, stride, …; logits are
    /// averaged where tiles overlap.
    public var size: Int
    public var stride: Int
    public init(size: Int, stride: Int) { self.size = size; self.stride = stride }
}

extension SegmentationModel {
    /// Class logits [K, H, W] of one image [C, H, W] by whole-image inference: without `tiling`, one forward pass
    /// of the image extended by reflection at the bottom and right to multiples of `inputMultiple` (the models are
    /// fully convolutional), cropped back to H × W; with `tiling`, reflect-padded tiles stitched together.
    /// Runs in the model's current mode: call `train(false)` first for evaluation. Graphs run on `backend` (the
    /// default backend when nil).
    public func logits(of image: Planes, tiling: InferenceTiling? = nil,
                       on backend: (any Backend)? = nil) throws -> Planes {
        let multiple = inputMultiple
        guard let tiling else {
            let height = roundUp(image.height, multiple), width = roundUp(image.width, multiple)
            let padded = try image.crop(y: 0, x: 0, height: height, width: width, padding: .reflect)
            let output = try callAsFunction(padded.tensor().unsqueeze(0)).toArray(on: backend)
            return try Planes(channels: classes, height: height, width: width, values: output)
                .crop(y: 0, x: 0, height: image.height, width: image.width, padding: .zero)
        }
        guard tiling.size > 0, tiling.size % multiple == 0 else {
            throw EngineError.invalidValue(op: "logits", message: "tile size \(tiling.size) is not a positive multiple of \(multiple)")
        }
        let tiles = try image.patches(size: tiling.size, stride: tiling.stride, padding: .reflect)
        let outputs = try tiles.map { tile in
            Patch(y: tile.y, x: tile.x, planes: try Planes(
                channels: classes, height: tiling.size, width: tiling.size,
                values: try callAsFunction(tile.planes.tensor().unsqueeze(0)).toArray(on: backend)))
        }
        return try Planes.stitch(outputs, height: image.height, width: image.width)
    }
}

func roundUp(_ value: Int, _ multiple: Int) -> Int { (value + multiple - 1) / multiple * multiple }

/// Replaces a parameter's value by a fresh draw (a re-initialisation after construction), realised as a leaf.
func reinitialize(_ parameter: Parameter?, _ draw: Tensor) {
    guard let parameter else { return }
    parameter.value = (try? draw.materialized()) ?? draw
}

/// `nn.MaxPool2d(2)` as a layer.
final class MaxPool2x2: Module, UnaryLayer {
    func callAsFunction(_ x: Tensor) -> Tensor { x.maxPool2d(kernel: [2, 2]) }
}

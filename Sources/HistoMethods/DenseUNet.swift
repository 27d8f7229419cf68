import Foundation
import HistoCore
import HistoNN

/// CDCL's DenseUNet (SPEC §5, paper 004 §4.2): a DenseNet encoder, a three-step decoder to 1/4 resolution (the
/// "extractor") and a classifier; `callAsFunction` gives the logits upsampled to the input size.
///
/// - Encoder (torchvision `DenseNet.features`, so ImageNet state dicts load by name): conv0 7×7/2 → norm0 → ReLU
///   → MaxPool 3/2, then dense blocks separated by transitions (BN → ReLU → conv1×1 halving the
///   channels → AvgPool 2), norm5 → ReLU after the last block. A dense layer is BN → ReLU → conv1×1
///   (bn_size·growth) → BN → ReLU → conv3×3 (growth) → Dropout(drop rate), its output concatenated
///   to its input.
/// - Decoder: up1 = bilinear ×2 (align_corners) of the deepest map + conv1×1(block 3 → block 4 channels)(block 3)
///   → conv3×3 → block 2 channels → BN → ReLU; up2 = ↑ + block 2 → conv3×3 → block 1 channels
///   → BN → ReLU; up3 = ↑ + block 1 → conv3×3 → `decoderChannels` → BN → ReLU: the extractor's
///   features at 1/4.
/// - Classifier: conv3×3 (→ `classifierChannels`) → Dropout2d(0.3), active in eval mode too → BN → ReLU
///   → conv1×1 (→ K), at 1/4.
/// - Init: encoder convs Kaiming-normal (torchvision); decoder and classifier convs Xavier-normal, biases 0; BN 1/0.
public final class DenseUNet: Module, SegmentationModel {
    public struct Configuration: Equatable, Sendable {
        public var inputChannels = 3
        public var classes: Int
        public var initialFeatures: Int
        public var growthRate: Int
        /// Dense layers per block (four blocks).
        public var blocks: [Int]
        /// The bottleneck conv1×1 has bottleneckFactor·growthRate channels (torchvision `bn_size`).
        public var bottleneckFactor = 4
        public var dropRate: Float
        public var decoderChannels: Int
        public var classifierChannels: Int
        public var classifierDropout: Float = 0.3

        public init(classes: Int, initialFeatures: Int, growthRate: Int, blocks: [Int], dropRate: Float,
                    decoderChannels: Int, classifierChannels: Int) {
            self.classes = classes
            self.initialFeatures = initialFeatures
            self.growthRate = growthRate
            self.blocks = blocks
            self.dropRate = dropRate
            self.decoderChannels = decoderChannels
            self.classifierChannels = classifierChannels
        }

        /// DenseNet-161 (96 init features, growth 48, blocks 6/12/36/24, bn_size 4, drop 0.2), decoder 256,
        /// classifier 64: the paper's network (SPEC §5).
        public static func paper(classes: Int) -> Configuration {
            Configuration(classes: classes, initialFeatures: 96, growthRate: 48, blocks: [6, 12, 36, 24], dropRate: 0.2,
                          decoderChannels: 256, classifierChannels: 64)
        }

        /// 16 init features, growth 8, blocks 2/3/4/3, decoder 64, classifier 16 (0.1M parameters against
        /// DenseNet-161-UNet's 48M), for training on a 2-core CPU.
        public static func cpu(classes: Int) -> Configuration {
            Configuration(classes: classes, initialFeatures: 16, growthRate: 8, blocks: [2, 3, 4, 3], dropRate: 0.2,
                          decoderChannels: 64, classifierChannels: 16)
        }

        /// Output channels of each dense block (before its transition).
        public var blockChannels: [Int] {
            var channels = initialFeatures
            return blocks.map { layers in
                let out = channels + layers * growthRate
                channels = out / 2
                return out
            }
        }
    }

    public let configuration: Configuration
    /// torchvision's `features`.
    public let features: Encoder
    let decoder: Decoder
    let classifier: Sequential

    public var classes: Int { configuration.classes }
    public var inputMultiple: Int { 32 }
    /// Channels of `extract`'s features.
    public var featureChannels: Int { configuration.decoderChannels }

    /// Weights and dropout masks are drawn from `generator`.
    public init(_ configuration: Configuration, generator: RandomGenerator) {
        self.configuration = configuration
        features = Encoder(configuration, generator: generator)
        decoder = Decoder(blockChannels: configuration.blockChannels, output: configuration.decoderChannels,
                          generator: generator)
        classifier = Sequential(
            Conv2d(configuration.decoderChannels, configuration.classifierChannels, kernel: 3, padding: 1,
                   generator: generator),
            Dropout2d(configuration.classifierDropout, generator: generator, alwaysOn: true),
            BatchNorm2d(configuration.classifierChannels), Activation(.relu),
            Conv2d(configuration.classifierChannels, configuration.classes, kernel: 1, generator: generator))
        super.init()
        Self.initializeXavier(decoder, generator: generator)
        Self.initializeXavier(classifier, generator: generator)
    }

    public override func members() -> [(key: String, member: ModuleMember)] {
        [("features", .module(features)), ("decoder", .module(decoder)), ("classifier", .module(classifier))]
    }

    /// The extractor's features [N, decoderChannels, H/4, W/4] of images [N, C, H, W].
    public func extract(_ x: Tensor) -> Tensor { decoder(features(x)) }

    /// Logits [N, K, H/4, W/4] of the extractor's features.
    public func classify(_ features: Tensor) -> Tensor { classifier(features) }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        guard x.rank == 4, x.shape[2] % inputMultiple == 0, x.shape[3] % inputMultiple == 0 else {
            return .invalid("dense_unet", "input \(describe(x.shape)) must be [N, C, H, W] with H and W multiples of "
                + "\(inputMultiple)")
        }
        return classify(extract(x)).interpolateBilinear(size: [x.shape[2], x.shape[3]], alignCorners: true)
    }

    /// Loads the encoder from a torchvision DenseNet state dict saved as safetensors
    /// (`tools/densenet_to_safetensors.py`): every `features.*` tensor of the encoder must be there with its shape;
    /// `num_batches_tracked` and the ImageNet `classifier.*` are skipped. Returns the number of tensors loaded.
    @discardableResult
    public func loadEncoder(fromTorchvision path: String) throws -> Int {
        let prefix = "features."
        var tensors: [String: HostTensor] = [:]
        for (name, tensor) in try SafeTensors.read(path).tensors
        where name.hasPrefix(prefix) && !name.hasSuffix("num_batches_tracked") {
            tensors[String(name.dropFirst(prefix.count))] = tensor
        }
        return try features.load(tensors, source: path).loaded.count
    }

    /// `--option weights=FILE` of the methods that train a DenseUNet.
    public static let weightsOption = MethodOption(name: "weights", help: "a torchvision DenseNet state dict as "
        + "safetensors (tools/densenet_to_safetensors.py) for the DenseUNet encoder (default: random init)")

    /// Loads the encoder from `weights` when given (`loadEncoder(fromTorchvision:)`); returns the notice saying
    /// how the encoder starts.
    func initializeEncoder(weights path: String?) throws -> String {
        guard let path else {
            return "the DenseUNet encoder starts from random weights: no ImageNet weights were given "
                + "(--option weights=FILE, see tools/densenet_to_safetensors.py)"
        }
        return "the DenseUNet encoder starts from \(try loadEncoder(fromTorchvision: path)) tensors of \(path)"
    }

    static func initializeXavier(_ network: Module, generator: RandomGenerator) {
        for (_, module) in network.modules() {
            guard let conv = module as? Conv2d else { continue }
            reinitialize(conv.weight, Initializer.xavierNormal(conv.weight.shape, generator: generator))
            reinitialize(conv.bias, Tensor.zeros(conv.bias?.shape ?? []))
        }
    }

    // MARK: - encoder

    /// torchvision `_DenseLayer`.
    final class DenseLayer: Module, UnaryLayer {
        let norm1: BatchNorm2d, conv1: Conv2d, norm2: BatchNorm2d, conv2: Conv2d
        let dropout: Dropout

        init(_ inChannels: Int, growth: Int, bottleneck: Int, dropRate: Float, generator: RandomGenerator) {
            norm1 = BatchNorm2d(inChannels)
            conv1 = Conv2d(inChannels, bottleneck, kernel: 1, bias: false, generator: generator)
            norm2 = BatchNorm2d(bottleneck)
            conv2 = Conv2d(bottleneck, growth, kernel: 3, padding: 1, bias: false, generator: generator)
            dropout = Dropout(dropRate, generator: generator)
            super.init()
        }

        override func members() -> [(key: String, member: ModuleMember)] {
            [("norm1", .module(norm1)), ("conv1", .module(conv1)), ("norm2", .module(norm2)),
             ("conv2", .module(conv2)), ("dropout", .module(dropout))]
        }

        func callAsFunction(_ x: Tensor) -> Tensor {
            let new = dropout(conv2(norm2(conv1(norm1(x).relu())).relu()))
            return Tensor.concat([x, new], axis: 1)
        }
    }

    /// torchvision `_DenseBlock`: members `denselayer1`, ….
    final class DenseBlock: Module, UnaryLayer {
        let layers: [DenseLayer]

        init(_ inChannels: Int, layers count: Int, configuration c: Configuration, generator: RandomGenerator) {
            layers = (0..<count).map {
                DenseLayer(inChannels + $0 * c.growthRate, growth: c.growthRate,
                           bottleneck: c.bottleneckFactor * c.growthRate, dropRate: c.dropRate, generator: generator)
            }
            super.init()
        }

        override func members() -> [(key: String, member: ModuleMember)] {
            layers.enumerated().map { ("denselayer\($0.offset + 1)", .module($0.element)) }
        }

        func callAsFunction(_ x: Tensor) -> Tensor { layers.reduce(x) { $1($0) } }
    }

    /// torchvision `_Transition`: BN → ReLU → conv1×1 → AvgPool 2.
    final class Transition: Module, UnaryLayer {
        let norm: BatchNorm2d, conv: Conv2d

        init(_ inChannels: Int, _ outChannels: Int, generator: RandomGenerator) {
            norm = BatchNorm2d(inChannels)
            conv = Conv2d(inChannels, outChannels, kernel: 1, bias: false, generator: generator)
            super.init()
        }

        func callAsFunction(_ x: Tensor) -> Tensor { conv(norm(x).relu()).avgPool2d(kernel: [2, 2]) }
    }

    /// torchvision `DenseNet.features`, returning the outputs of the blocks 1–3 and the final norm5 → ReLU.
    public final class Encoder: Module {
        let conv0: Conv2d, norm0: BatchNorm2d
        let denseBlocks: [DenseBlock]
        let transitions: [Transition]
        let norm5: BatchNorm2d

        init(_ c: Configuration, generator: RandomGenerator) {
            conv0 = Conv2d(c.inputChannels, c.initialFeatures, kernel: 7, stride: 2, padding: 3, bias: false,
                           generator: generator)
            norm0 = BatchNorm2d(c.initialFeatures)
            var channels = c.initialFeatures
            var blocks: [DenseBlock] = [], transitions: [Transition] = []
            for (index, layers) in c.blocks.enumerated() {
                blocks.append(DenseBlock(channels, layers: layers, configuration: c, generator: generator))
                channels += layers * c.growthRate
                if index < c.blocks.count - 1 {
                    transitions.append(Transition(channels, channels / 2, generator: generator))
                    channels /= 2
                }
            }
            denseBlocks = blocks
            self.transitions = transitions
            norm5 = BatchNorm2d(channels)
            super.init()
            for (_, module) in modules() {
                if let conv = module as? Conv2d {
                    reinitialize(conv.weight, Initializer.kaimingNormal(conv.weight.shape, generator: generator))
                }
            }
        }

        public override func members() -> [(key: String, member: ModuleMember)] {
            var list: [(key: String, member: ModuleMember)] = [("conv0", .module(conv0)), ("norm0", .module(norm0))]
            for (index, block) in denseBlocks.enumerated() {
                list.append(("denseblock\(index + 1)", .module(block)))
                if index < transitions.count { list.append(("transition\(index + 1)", .module(transitions[index]))) }
            }
            return list + [("norm5", .module(norm5))]
        }

        /// [block 1 (1/4), block 2 (1/8), block 3 (1/16), norm5 → ReLU (1/32)].
        func callAsFunction(_ x: Tensor) -> [Tensor] {
            var h = norm0(conv0(x)).relu().maxPool2d(kernel: [3, 3], stride: [2, 2], padding: [1, 1, 1, 1])
            var skips: [Tensor] = []
            for (index, block) in denseBlocks.enumerated() {
                h = block(h)
                if index < transitions.count {
                    skips.append(h)
                    h = transitions[index](h)
                }
            }
            return skips + [norm5(h).relu()]
        }
    }

    // MARK: - decoder

    /// ↑2 (bilinear, align_corners) of x plus the skip, then conv3×3 → BN → ReLU.
    final class UpBlock: Module {
        let skip: Conv2d?
        let conv: Conv2d, norm: BatchNorm2d

        init(_ inChannels: Int, _ outChannels: Int, skipChannels: Int?, generator: RandomGenerator) {
            skip = skipChannels.map { Conv2d($0, inChannels, kernel: 1, generator: generator) }
            conv = Conv2d(inChannels, outChannels, kernel: 3, padding: 1, generator: generator)
            norm = BatchNorm2d(outChannels)
            super.init()
        }

        func callAsFunction(_ x: Tensor, skip skipFeatures: Tensor) -> Tensor {
            let merged = x.interpolateBilinear(scale: 2, alignCorners: true) + (skip?(skipFeatures) ?? skipFeatures)
            return norm(conv(merged)).relu()
        }
    }

    final class Decoder: Module {
        let up1: UpBlock, up2: UpBlock, up3: UpBlock

        init(blockChannels c: [Int], output: Int, generator: RandomGenerator) {
            up1 = UpBlock(c[3], c[1], skipChannels: c[2], generator: generator)
            up2 = UpBlock(c[1], c[0], skipChannels: nil, generator: generator)
            up3 = UpBlock(c[0], output, skipChannels: nil, generator: generator)
            super.init()
        }

        func callAsFunction(_ features: [Tensor]) -> Tensor {
            up3(up2(up1(features[3], skip: features[2]), skip: features[1]), skip: features[0])
        }
    }
}

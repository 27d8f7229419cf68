import Foundation
import HistoCore
import HistoNN

/// The SSL4MIS U-Net as the baseline backbone of Ciampi et al.'s companion repository (SPEC §3, `unet` =
/// `UNet_Transposed_Leaky`, the net of its EM/CCT/UAMT/URPC/CPS baselines), with the SSL4MIS original as a variant.
///
/// - Encoder, 5 levels of `width`·(1, 2, 4, 8, 16) channels (16…256 in the paper), input resolution down to 1/16:
///   `in_conv` then 4 × (MaxPool 2 → block). Block = conv3×3 → BN → LeakyReLU(0.01) → Dropout(p) → conv3×3 → BN →
///   LeakyReLU, with p = 0.05, 0.1, 0.2, 0.3, 0.5 by level (element dropout, `nn.Dropout`).
/// - Decoder, 4 up blocks (deepest first): bilinear = conv1×1 (c_deep → c_skip) → bilinear ×2 (align_corners) —
///   what both references run, despite the Ciampi class name — or transposed = ConvTranspose 2×2 stride 2; then
///   concat [skip, up] → conv3×3 → BN → act → conv3×3 → BN → act. Ciampi: act = ReLU, no dropout; SSL4MIS:
///   act = LeakyReLU (dropout 0).
/// - Head. Ciampi: conv3×3 (w → 4w) → ReLU → Dropout(0.5) → conv3×3 (4w → 2w) → ReLU → Dropout(0.5) → conv3×3
///   (2w → K). SSL4MIS: conv3×3 (w → K).
/// - Init. Ciampi (`init_weights(…, 'kaiming')`): conv weights Kaiming-normal (fan_in, gain √2), biases 0, BN
///   weight N(1, 0.02²), bias 0. SSL4MIS: PyTorch defaults.
///
/// Parameter and buffer names follow the Ciampi code (`encoder.down1.maxpool_conv.1.conv_conv.0.weight`,
/// `main_decoder.up1.conv.conv.0.weight`, `out_conv.6.bias`, …) for both variants.
public final class SegmentationUNet: Module, SegmentationModel {
    public enum Variant: Equatable, Sendable {
        /// The companion repository of Ciampi et al.: ReLU decoder blocks, three-conv head, Kaiming init.
        case ciampi
        /// SSL4MIS `UNet`: LeakyReLU decoder blocks, one-conv head, PyTorch default init.
        case ssl4mis
    }

    public enum Upsampling: Equatable, Sendable {
        /// conv1×1 then bilinear ×2 with align_corners (both references' `UNet`).
        case bilinear
        /// ConvTranspose2d(kernel 2, stride 2).
        case transposed
    }

    public struct Configuration: Equatable, Sendable {
        public var inputChannels = 3
        public var classes: Int
        /// Channels of the first level; the levels have width·(1, 2, 4, 8, 16).
        public var width = 16
        /// Dropout probability of each encoder level's block.
        public var dropout: [Float] = [0.05, 0.1, 0.2, 0.3, 0.5]
        public var variant = Variant.ciampi
        public var upsampling = Upsampling.bilinear

        public init(classes: Int, width: Int = 16, variant: Variant = .ciampi, upsampling: Upsampling = .bilinear) {
            self.classes = classes
            self.width = width
            self.variant = variant
            self.upsampling = upsampling
        }

        /// The reference network: width 16 (channels 16…256).
        public static func paper(classes: Int, variant: Variant = .ciampi) -> Configuration {
            Configuration(classes: classes, variant: variant)
        }

        /// Half width (channels 8…128, a quarter of the parameters) for training on a 2-core CPU.
        public static func cpu(classes: Int, variant: Variant = .ciampi) -> Configuration {
            Configuration(classes: classes, width: 8, variant: variant)
        }

        public var channels: [Int] { [1, 2, 4, 8, 16].map { $0 * width } }
    }

    public let configuration: Configuration
    let encoder: Encoder
    let mainDecoder: Decoder
    let outConv: any UnaryLayer

    public var classes: Int { configuration.classes }
    public var inputMultiple: Int { 16 }

    public init(_ configuration: Configuration, generator: RandomGenerator) {
        self.configuration = configuration
        let c = configuration.channels
        // A dropout list of the wrong length is reported at the first forward (see rejection(of:)).
        let dropout = configuration.dropout.count == 5 ? configuration.dropout : [Float](repeating: 0, count: 5)
        encoder = Encoder(inputChannels: configuration.inputChannels, channels: c, dropout: dropout, generator: generator)
        mainDecoder = Decoder(channels: c, upsampling: configuration.upsampling,
                              activation: SegmentationUNet.decoderActivation(configuration.variant),
                              generator: generator)
        outConv = SegmentationUNet.head(configuration, generator: generator)
        super.init()
        SegmentationUNet.initialize(self, variant: configuration.variant, generator: generator)
    }

    /// The activation of the decoder blocks: ReLU (Ciampi) or LeakyReLU (SSL4MIS).
    static func decoderActivation(_ variant: Variant) -> Activation.Kind {
        variant == .ciampi ? .relu : .leakyRelu(slope: 0.01)
    }

    /// The head `out_conv` of the variant: the main output's, and that of each CCT auxiliary decoder.
    static func head(_ configuration: Configuration, generator: RandomGenerator) -> any UnaryLayer {
        let w = configuration.channels[0]
        switch configuration.variant {
        case .ciampi:
            return Sequential(
                Conv2d(w, 4 * w, kernel: 3, padding: 1, generator: generator), Activation(.relu), Dropout(0.5, generator: generator),
                Conv2d(4 * w, 2 * w, kernel: 3, padding: 1, generator: generator), Activation(.relu), Dropout(0.5, generator: generator),
                Conv2d(2 * w, configuration.classes, kernel: 3, padding: 1, generator: generator))
        case .ssl4mis:
            return Conv2d(w, configuration.classes, kernel: 3, padding: 1, generator: generator)
        }
    }

    public override func members() -> [(key: String, member: ModuleMember)] {
        [("encoder", .module(encoder)), ("main_decoder", .module(mainDecoder)), ("out_conv", .module(outConv))]
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        if let rejection = rejection(of: x) { return rejection }
        return outConv(mainDecoder(encoder(x)))
    }

    /// nil when the network takes `x`; otherwise the invalid tensor that reports why at evaluation.
    func rejection(of x: Tensor) -> Tensor? {
        guard configuration.dropout.count == 5 else {
            return .invalid("unet", "dropout has \(configuration.dropout.count) probabilities; the encoder has 5 levels")
        }
        guard x.rank == 4, x.shape[2] % inputMultiple == 0, x.shape[3] % inputMultiple == 0 else {
            return .invalid("unet", "input \(describe(x.shape)) must be [N, C, H, W] with H and W multiples of \(inputMultiple)")
        }
        return nil
    }

    /// The variant's initialisation of `network` (this network, or modules trained with it): Ciampi's
    /// `init_weights(net, 'kaiming')`; SSL4MIS keeps the layers' PyTorch-default initialisation.
    static func initialize(_ network: Module, variant: Variant, generator: RandomGenerator) {
        guard variant == .ciampi else { return }
        for (_, module) in network.modules() {
            switch module {
            case let conv as Conv2d:
                reinitialize(conv.weight, Initializer.kaimingNormal(conv.weight.shape, generator: generator))
                reinitialize(conv.bias, Tensor.zeros(conv.bias?.shape ?? []))
            case let conv as ConvTranspose2d:
                // fan_in of a transposed weight [in, out, k, k] is out·k², in PyTorch as in `Initializer.fans`.
                reinitialize(conv.weight, Initializer.kaimingNormal(conv.weight.shape, generator: generator))
                reinitialize(conv.bias, Tensor.zeros(conv.bias?.shape ?? []))
            case let norm as BatchNorm2d:
                reinitialize(norm.weight, generator.normal(norm.weight?.shape ?? [], mean: 1, std: 0.02))
                reinitialize(norm.bias, Tensor.zeros(norm.bias?.shape ?? []))
            default: continue
            }
        }
    }

    // MARK: - parts

    /// conv3×3 → BN → act → Dropout → conv3×3 → BN → act (`ConvBlockLeakyRelu`; `ConvBlock` without dropout).
    /// Members `conv_conv` (encoder) or `conv` (decoder) hold the Sequential, indices as in PyTorch.
    final class ConvBlock: Module, UnaryLayer {
        let memberKey: String
        let layers: Sequential

        init(_ inChannels: Int, _ outChannels: Int, dropout: Float?, activation: Activation.Kind, key: String,
             generator: RandomGenerator) {
            memberKey = key
            var list: [any UnaryLayer] = [Conv2d(inChannels, outChannels, kernel: 3, padding: 1, generator: generator),
                                          BatchNorm2d(outChannels), Activation(activation)]
            if let dropout { list.append(Dropout(dropout, generator: generator)) }
            list += [Conv2d(outChannels, outChannels, kernel: 3, padding: 1, generator: generator),
                     BatchNorm2d(outChannels), Activation(activation)]
            layers = Sequential(list)
            super.init()
        }

        override func members() -> [(key: String, member: ModuleMember)] { [(memberKey, .module(layers))] }
        func callAsFunction(_ x: Tensor) -> Tensor { layers(x) }
    }

    final class Encoder: Module {
        let inConv: ConvBlock
        /// `down1` … `down4`: MaxPool 2 → block, each a Sequential `maxpool_conv`.
        let downs: [Sequential]

        init(inputChannels: Int, channels c: [Int], dropout: [Float], generator: RandomGenerator) {
            let leaky = Activation.Kind.leakyRelu(slope: 0.01)
            inConv = ConvBlock(inputChannels, c[0], dropout: dropout[0], activation: leaky, key: "conv_conv", generator: generator)
            downs = (1..<5).map { level in
                Sequential(MaxPool2x2(), ConvBlock(c[level - 1], c[level], dropout: dropout[level], activation: leaky,
                                                   key: "conv_conv", generator: generator))
            }
            super.init()
        }

        override func members() -> [(key: String, member: ModuleMember)] {
            [("in_conv", .module(inConv))] + downs.enumerated().map { ("down\($0.offset + 1).maxpool_conv", .module($0.element)) }
        }

        /// The features of the 5 levels, finest first.
        func callAsFunction(_ x: Tensor) -> [Tensor] {
            var features = [inConv(x)]
            for down in downs { features.append(down(features.last!)) }
            return features
        }
    }

    /// `UpBlock(in1, in2, out)`: upsample the deeper map to in2 channels, concat [skip, up], block.
    final class UpBlock: Module {
        let conv1x1: Conv2d?
        let transposed: ConvTranspose2d?
        let conv: ConvBlock

        init(deep: Int, skip: Int, out: Int, upsampling: Upsampling, activation: Activation.Kind, generator: RandomGenerator) {
            switch upsampling {
            case .bilinear:
                conv1x1 = Conv2d(deep, skip, kernel: 1, generator: generator)
                transposed = nil
            case .transposed:
                conv1x1 = nil
                transposed = ConvTranspose2d(deep, skip, kernel: 2, stride: 2, generator: generator)
            }
            conv = ConvBlock(2 * skip, out, dropout: nil, activation: activation, key: "conv", generator: generator)
            super.init()
        }

        override func members() -> [(key: String, member: ModuleMember)] {
            var list: [(key: String, member: ModuleMember)] = []
            if let conv1x1 { list.append(("conv1x1", .module(conv1x1))) }
            if let transposed { list.append(("up", .module(transposed))) }
            list.append(("conv", .module(conv)))
            return list
        }

        func callAsFunction(_ deep: Tensor, skip: Tensor) -> Tensor {
            let up = conv1x1.map { $0(deep).interpolateBilinear(scale: 2, alignCorners: true) } ?? transposed!(deep)
            return conv(Tensor.concat([skip, up], axis: 1))
        }
    }

    final class Decoder: Module {
        /// `up1` (deepest) … `up4`.
        let ups: [UpBlock]

        init(channels c: [Int], upsampling: Upsampling, activation: Activation.Kind, generator: RandomGenerator) {
            ups = (0..<4).map { i in
                UpBlock(deep: c[4 - i], skip: c[3 - i], out: c[3 - i], upsampling: upsampling, activation: activation,
                        generator: generator)
            }
            super.init()
        }

        override func members() -> [(key: String, member: ModuleMember)] {
            ups.enumerated().map { ("up\($0.offset + 1)", .module($0.element)) }
        }

        func callAsFunction(_ features: [Tensor]) -> Tensor { levels(features).last! }

        /// The output of each up block, deepest first (channels c₃, c₂, c₁, c₀ at 1/8 … 1/1 of the input): URPC's
        /// deep-supervision heads read the first three.
        func levels(_ features: [Tensor]) -> [Tensor] {
            var outputs: [Tensor] = []
            var x = features[4]
            for (i, up) in ups.enumerated() {
                x = up(x, skip: features[3 - i])
                outputs.append(x)
            }
            return outputs
        }
    }
}

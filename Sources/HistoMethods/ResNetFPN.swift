import Foundation
import HistoCore
import HistoNN

/// `smp.FPN(encoder_name='resnet18'|'resnet34')`: the DTSeg supervised baseline and collaborator (SPEC §1).
///
/// - Encoder: torchvision ResNet with BatchNorm (stem conv7×7/2 → BN → ReLU → MaxPool 3/2, then 4 stages of
///   BasicBlocks, [2, 2, 2, 2] or [3, 4, 6, 3], `width`·(1, 2, 4, 8) channels at 1/4 … 1/32; a 1×1/2 conv + BN
///   projection where the shape changes). **Randomly initialised**: no ImageNet weights are available offline
///   (torchvision init: conv Kaiming-normal fan_out, BN 1/0). Parameter names are torchvision's, so converted
///   ImageNet weights load with `Module.load(from:strict: false)` (torchvision's BN `num_batches_tracked` is extra).
/// - Decoder (`FPNDecoder`, merge "add"): p5 = conv1×1(c5); p_i = nearest×2(p_{i+1}) + conv1×1(c_i) for i = 4, 3, 2
///   (pyramid channels, 256); p5, p4, p3 each → 3, 2, 1 × [conv3×3 (no bias) → GN(32) → ReLU → bilinear ×2
///   (align_corners)] and p2 → one such block without the upsampling, all to segmentation channels (128) at 1/4;
///   the four are summed, then Dropout2d (0.2). smp init: decoder convs Kaiming-uniform fan_in, biases 0.
/// - Head (`SegmentationHead`): conv1×1 → K, bilinear ×4 with align_corners (`UpsamplingBilinear2d`); Xavier-uniform
///   init, bias 0.
/// Names follow smp: `encoder.layer2.0.downsample.0.weight`, `decoder.seg_blocks.0.block.1.block.0.weight`,
/// `segmentation_head.0.bias`, ….
public final class ResNetFPN: Module, SegmentationModel {
    public enum Depth: Equatable, Sendable {
        case resnet18, resnet34

        /// BasicBlocks per stage.
        public var blocks: [Int] { self == .resnet18 ? [2, 2, 2, 2] : [3, 4, 6, 3] }
    }

    public struct Configuration: Equatable, Sendable {
        public var inputChannels = 3
        public var classes: Int
        public var depth: Depth
        /// Stem and first-stage channels; stages have width·(1, 2, 4, 8) (64 in torchvision).
        public var width = 64
        public var pyramidChannels = 256
        public var segmentationChannels = 128
        public var groupNormGroups = 32
        public var dropout: Float = 0.2

        public init(classes: Int, depth: Depth = .resnet34, width: Int = 64, pyramidChannels: Int = 256,
                    segmentationChannels: Int = 128, groupNormGroups: Int = 32, dropout: Float = 0.2) {
            self.classes = classes
            self.depth = depth
            self.width = width
            self.pyramidChannels = pyramidChannels
            self.segmentationChannels = segmentationChannels
            self.groupNormGroups = groupNormGroups
            self.dropout = dropout
        }

        /// smp's FPN defaults (pyramid 256, segmentation 128, dropout 0.2, ×4 upsampling) on a full ResNet.
        public static func paper(classes: Int, depth: Depth = .resnet34) -> Configuration {
            Configuration(classes: classes, depth: depth)
        }

        /// ResNet-18 at a quarter width (16…128 channels), pyramid 64, segmentation 32, GN(8): 0.82M parameters
        /// (1/28 of ResNet34-FPN's 23.2M), for training on a 2-core CPU.
        public static func cpu(classes: Int) -> Configuration {
            Configuration(classes: classes, depth: .resnet18, width: 16, pyramidChannels: 64, segmentationChannels: 32,
                          groupNormGroups: 8)
        }
    }

    public let configuration: Configuration
    let encoder: ResNetEncoder
    let decoder: FPNDecoder
    let segmentationHead: Sequential

    public var classes: Int { configuration.classes }
    public var inputMultiple: Int { 32 }

    public init(_ configuration: Configuration, generator: RandomGenerator) {
        self.configuration = configuration
        encoder = ResNetEncoder(inputChannels: configuration.inputChannels, width: configuration.width,
                                blocks: configuration.depth.blocks, generator: generator)
        decoder = FPNDecoder(encoderChannels: encoder.stageChannels, configuration: configuration, generator: generator)
        let head = Conv2d(configuration.segmentationChannels, configuration.classes, kernel: 1, generator: generator)
        reinitialize(head.weight, Initializer.xavierUniform(head.weight.shape, generator: generator))
        reinitialize(head.bias, Tensor.zeros([configuration.classes]))
        segmentationHead = Sequential(head)
        super.init()
    }

    public override func members() -> [(key: String, member: ModuleMember)] {
        [("encoder", .module(encoder)), ("decoder", .module(decoder)), ("segmentation_head", .module(segmentationHead))]
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        segmentationHead(decoderFeatures(x)).interpolateBilinear(scale: 4, alignCorners: true)
    }

    /// The decoder's output without the segmentation head: `segmentationChannels` maps at a quarter of the input's
    /// size (what DTSeg's collaborative head reads, SPEC §1 step 3).
    public func decoderFeatures(_ x: Tensor) -> Tensor {
        guard x.rank == 4, x.shape[2] % inputMultiple == 0, x.shape[3] % inputMultiple == 0 else {
            return .invalid("resnet_fpn", "input \(describe(x.shape)) must be [N, C, H, W] with H and W multiples of \(inputMultiple)")
        }
        return decoder(encoder(x))
    }

    // MARK: - encoder

    /// torchvision `BasicBlock`: relu(bn2(conv2(relu(bn1(conv1(x))))) + downsample(x)).
    final class BasicBlock: Module, UnaryLayer {
        let conv1: Conv2d, bn1: BatchNorm2d, conv2: Conv2d, bn2: BatchNorm2d
        let downsample: Sequential?

        init(_ inChannels: Int, _ outChannels: Int, stride: Int, generator: RandomGenerator) {
            conv1 = Conv2d(inChannels, outChannels, kernel: 3, stride: stride, padding: 1, bias: false, generator: generator)
            bn1 = BatchNorm2d(outChannels)
            conv2 = Conv2d(outChannels, outChannels, kernel: 3, padding: 1, bias: false, generator: generator)
            bn2 = BatchNorm2d(outChannels)
            downsample = stride != 1 || inChannels != outChannels
                ? Sequential(Conv2d(inChannels, outChannels, kernel: 1, stride: stride, bias: false, generator: generator),
                             BatchNorm2d(outChannels))
                : nil
            super.init()
        }

        func callAsFunction(_ x: Tensor) -> Tensor {
            let residual = bn2(conv2(bn1(conv1(x)).relu()))
            return (residual + (downsample?(x) ?? x)).relu()
        }
    }

    /// torchvision ResNet without `avgpool`/`fc`, returning the 4 stage outputs (smp's features c2…c5).
    final class ResNetEncoder: Module {
        let conv1: Conv2d
        let bn1: BatchNorm2d
        let layer1: [BasicBlock], layer2: [BasicBlock], layer3: [BasicBlock], layer4: [BasicBlock]
        let stageChannels: [Int]

        init(inputChannels: Int, width: Int, blocks: [Int], generator: RandomGenerator) {
            stageChannels = [1, 2, 4, 8].map { $0 * width }
            conv1 = Conv2d(inputChannels, width, kernel: 7, stride: 2, padding: 3, bias: false, generator: generator)
            bn1 = BatchNorm2d(width)
            var inChannels = width
            var stages: [[BasicBlock]] = []
            for (stage, count) in blocks.enumerated() {
                let out = stageChannels[stage]
                stages.append((0..<count).map { i in
                    defer { inChannels = out }
                    return BasicBlock(inChannels, out, stride: i == 0 && stage > 0 ? 2 : 1, generator: generator)
                })
            }
            (layer1, layer2, layer3, layer4) = (stages[0], stages[1], stages[2], stages[3])
            super.init()
            for (_, module) in modules() {
                if let conv = module as? Conv2d {
                    reinitialize(conv.weight, Initializer.kaimingNormal(conv.weight.shape, mode: .fanOut, generator: generator))
                }
            }
        }

        func callAsFunction(_ x: Tensor) -> [Tensor] {
            let stem = bn1(conv1(x)).relu().maxPool2d(kernel: [3, 3], stride: [2, 2], padding: [1, 1, 1, 1])
            var features: [Tensor] = []
            var h = stem
            for stage in [layer1, layer2, layer3, layer4] {
                h = stage.reduce(h) { $1($0) }
                features.append(h)
            }
            return features
        }
    }

    // MARK: - decoder

    /// conv3×3 (no bias) → GN → ReLU, then bilinear ×2 (align_corners) when `upsample`.
    final class Conv3x3GNReLU: Module, UnaryLayer {
        let block: Sequential
        let upsample: Bool

        init(_ inChannels: Int, _ outChannels: Int, groups: Int, upsample: Bool, generator: RandomGenerator) {
            block = Sequential(Conv2d(inChannels, outChannels, kernel: 3, padding: 1, bias: false, generator: generator),
                               GroupNorm(groups: groups, channels: outChannels), Activation(.relu))
            self.upsample = upsample
            super.init()
        }

        func callAsFunction(_ x: Tensor) -> Tensor {
            let y = block(x)
            return upsample ? y.interpolateBilinear(scale: 2, alignCorners: true) : y
        }
    }

    /// nearest×2(x) + conv1×1(skip).
    final class FPNBlock: Module {
        let skipConv: Conv2d

        init(pyramidChannels: Int, skipChannels: Int, generator: RandomGenerator) {
            skipConv = Conv2d(skipChannels, pyramidChannels, kernel: 1, generator: generator)
            super.init()
        }

        override func members() -> [(key: String, member: ModuleMember)] { [("skip_conv", .module(skipConv))] }

        func callAsFunction(_ x: Tensor, skip: Tensor) -> Tensor { x.interpolateNearest(scale: 2) + skipConv(skip) }
    }

    /// smp `SegmentationBlock`: `max(upsamples, 1)` conv blocks, each upsampling ×2 when `upsamples > 0`.
    final class SegmentationBlock: Module, UnaryLayer {
        let block: Sequential

        init(pyramidChannels: Int, segmentationChannels: Int, upsamples: Int, groups: Int, generator: RandomGenerator) {
            block = Sequential((0..<max(upsamples, 1)).map { i in
                Conv3x3GNReLU(i == 0 ? pyramidChannels : segmentationChannels, segmentationChannels, groups: groups,
                              upsample: upsamples > 0, generator: generator)
            })
            super.init()
        }

        func callAsFunction(_ x: Tensor) -> Tensor { block(x) }
    }

    final class FPNDecoder: Module {
        let p5: Conv2d
        let p4: FPNBlock, p3: FPNBlock, p2: FPNBlock
        /// The blocks of p5, p4, p3, p2 (3, 2, 1, 0 upsamplings), all ending at 1/4 resolution.
        let segBlocks: [SegmentationBlock]
        let dropout: Dropout2d

        init(encoderChannels c: [Int], configuration: Configuration, generator: RandomGenerator) {
            let pyramid = configuration.pyramidChannels
            p5 = Conv2d(c[3], pyramid, kernel: 1, generator: generator)
            p4 = FPNBlock(pyramidChannels: pyramid, skipChannels: c[2], generator: generator)
            p3 = FPNBlock(pyramidChannels: pyramid, skipChannels: c[1], generator: generator)
            p2 = FPNBlock(pyramidChannels: pyramid, skipChannels: c[0], generator: generator)
            segBlocks = [3, 2, 1, 0].map { upsamples in
                SegmentationBlock(pyramidChannels: pyramid, segmentationChannels: configuration.segmentationChannels,
                                  upsamples: upsamples, groups: configuration.groupNormGroups, generator: generator)
            }
            dropout = Dropout2d(configuration.dropout, generator: generator)
            super.init()
            for (_, module) in modules() {
                if let conv = module as? Conv2d {
                    reinitialize(conv.weight, Initializer.kaimingUniform(conv.weight.shape, generator: generator))
                    reinitialize(conv.bias, Tensor.zeros(conv.bias?.shape ?? []))
                }
            }
        }

        override func members() -> [(key: String, member: ModuleMember)] {
            [("p5", .module(p5)), ("p4", .module(p4)), ("p3", .module(p3)), ("p2", .module(p2))]
                + segBlocks.enumerated().map { ("seg_blocks.\($0.offset)", .module($0.element)) }
                + [("dropout", .module(dropout))]
        }

        func callAsFunction(_ features: [Tensor]) -> Tensor {
            let p5 = self.p5(features[3])
            let p4 = self.p4(p5, skip: features[2])
            let p3 = self.p3(p4, skip: features[1])
            let p2 = self.p2(p3, skip: features[0])
            let maps = zip(segBlocks, [p5, p4, p3, p2]).map { $0($1) }
            return dropout(maps.dropFirst().reduce(maps[0], +))
        }
    }
}

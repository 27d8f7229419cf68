import Foundation
import HistoCore
import HistoNN

/// DTSeg's transformer decoder ("UNetFormer", SPEC §1 step 2b): it aggregates the diffusion features F_i (one map per
/// UNet output block, its timesteps concatenated, already upsampled to the output size) into f_D and predicts the
/// segmentation logits from it.
///
/// - Parallel (the paper's default): x_i = Block(ConvBN1×1(F_i → c)) per input; f_D = concat(x_1 … x_n) (n·c).
/// - Serial (paper Table 7): "concatenation of all feature blocks along the channel dimension, followed by processing
///   with a transformer": f_D = Block(ConvBN1×1(concat(F_1 … F_n) → c)) (c channels). We read "feature blocks" as
///   the UNet blocks' maps F_i, as in the parallel sentence, and "a transformer" as the same projection + Block as a
///   parallel branch; the other reading (one Block of width n·c over the concatenated projections) is not implemented.
/// - Without self-attention ("w/o SA", paper Table 6): the Blocks removed, f_D = concat(ConvBN1×1(F_i)).
///
/// Head: ConvBNReLU6(f_D → c, 3×3) → Dropout2d → Conv1×1(c → K, no bias). Block(x) = x + GLA(BN(x)), then x +
/// MLP(BN(x)) (`GlobalLocalAttention`, `ConvMLP`). Parameter names are those of tools/unetformer_reference.py:
/// `pre_convs.0.0.weight`, `blocks.0.attn.relative_position_bias_table`, `blocks.0.mlp.fc1.bias`,
/// `segmentation_head.2.weight`, …. PyTorch default init (convolutions Kaiming-uniform a = √5, BN 1/0), the
/// position bias tables N(0, 0.02²).
public final class UNetFormerDecoder: Module {
    public enum Layout: String, Equatable, Sendable, CaseIterable {
        case parallel, serial
        /// The paper's "w/o SA" ablation.
        case withoutSelfAttention = "without-sa"
    }

    public struct Configuration: Equatable, Sendable {
        /// Channels of each input F_i.
        public var inputChannels: [Int]
        /// c, the width of the projections and Blocks.
        public var decodeChannels = 128
        public var window = 8
        public var heads = 8
        /// The MLP's hidden width is mlpRatio·c.
        public var mlpRatio = 4
        public var classes: Int
        public var layout = Layout.parallel
        /// The head's Dropout2d probability.
        public var dropout: Float = 0.1

        public init(inputChannels: [Int], decodeChannels: Int = 128, window: Int = 8, heads: Int = 8,
                    mlpRatio: Int = 4, classes: Int, layout: Layout = .parallel, dropout: Float = 0.1) {
            self.inputChannels = inputChannels
            self.decodeChannels = decodeChannels
            self.window = window
            self.heads = heads
            self.mlpRatio = mlpRatio
            self.classes = classes
            self.layout = layout
            self.dropout = dropout
        }

        /// SPEC §1 step 2b on the guided `dtseg` LDM's output blocks 7, 8, 9 × 3 timesteps (1344, 1344 and 672
        /// channels): c = 128, 8×8 windows, 8 heads. 1,991,192 parameters at K = 5 (parallel).
        public static func paper(classes: Int, layout: Layout = .parallel) -> Configuration {
            Configuration(inputChannels: [1344, 1344, 672], classes: classes, layout: layout)
        }

        /// For the small LDMs trained on a 2-core CPU, whose blocks give 32 channels per timestep (3 × 96 from the
        /// `cpu` guided preset): c = 32, as wide as that LDM (the paper has c = 128 on a 224-channel LDM), 2 heads
        /// of the paper's depth 16, and the paper's 8×8 windows (64² and 128² inputs hold whole windows). The
        /// decoder runs at the image size: a training step on 3 × 96 channels, batch 2, took 0.9 s at 64² and 2.4 s
        /// at 128² on a shared 2-core machine, against 1.7 s and 6.4 s with c = 64 (the convolutions are quadratic
        /// in c). 113,702 parameters on 3 × 96 channels at K = 2.
        public static func cpu(inputChannels: [Int], classes: Int) -> Configuration {
            Configuration(inputChannels: inputChannels, decodeChannels: 32, window: 8, heads: 2, classes: classes)
        }

        /// The channels of f_D, the head's input: n·c, or c for the serial layout.
        public var featureChannels: Int {
            layout == .serial ? decodeChannels : decodeChannels * inputChannels.count
        }
    }

    public let configuration: Configuration
    /// One ConvBN1×1 per input, or one over the concatenated inputs (serial).
    let preConvs: [ConvBN]
    /// One Block per projection; none without self-attention.
    let blocks: [UNetFormerBlock]
    let segmentationHead: Sequential

    public var featureChannels: Int { configuration.featureChannels }

    public init(_ configuration: Configuration, generator: RandomGenerator) {
        self.configuration = configuration
        let c = configuration.decodeChannels
        let projected = configuration.layout == .serial ? [configuration.inputChannels.reduce(0, +)]
            : configuration.inputChannels
        preConvs = projected.map { ConvBN($0, c, kernel: 1, generator: generator) }
        blocks = configuration.layout == .withoutSelfAttention ? [] : projected.map { _ in
            UNetFormerBlock(c, heads: configuration.heads, window: configuration.window,
                            mlpRatio: configuration.mlpRatio, generator: generator)
        }
        segmentationHead = dtsegSegmentationHead(configuration.featureChannels, hidden: c,
                                                 classes: configuration.classes, dropout: configuration.dropout,
                                                 generator: generator)
        super.init()
    }

    public override func members() -> [(key: String, member: ModuleMember)] {
        preConvs.enumerated().map { ("pre_convs.\($0.offset)", .module($0.element)) }
            + blocks.enumerated().map { ("blocks.\($0.offset)", .module($0.element)) }
            + [("segmentation_head", .module(segmentationHead))]
    }

    /// f_D [N, featureChannels, H, W] from the inputs F_i [N, C_i, H, W] (all at the output size).
    public func features(_ inputs: [Tensor]) -> Tensor {
        let channels = inputs.map { $0.rank == 4 ? $0.shape[1] : -1 }
        guard channels == configuration.inputChannels,
              Set(inputs.map { Array($0.shape.dropFirst(2)) }).count == 1 else {
            let shapes = inputs.map { describe($0.shape) }
            return .invalid("unetformer", "expects \(configuration.inputChannels.count) maps [N, C_i, H, W] of one "
                                + "size with C_i = \(configuration.inputChannels), got \(shapes)")
        }
        let sources = configuration.layout == .serial ? [Tensor.concat(inputs, axis: 1)] : inputs
        let projected = zip(preConvs, sources).map { $0($1) }
        let maps = blocks.isEmpty ? projected : zip(blocks, projected).map { $0($1) }
        return maps.count == 1 ? maps[0] : Tensor.concat(maps, axis: 1)
    }

    /// The logits [N, K, H, W] from f_D.
    public func head(_ features: Tensor) -> Tensor { segmentationHead(features) }

    public func callAsFunction(_ inputs: [Tensor]) -> Tensor { head(features(inputs)) }
}

/// DTSeg's collaborative head (SPEC §1 step 3, the reference's `AggregrateWSA`): per pixel F_D = ReLU(Linear(f_D)) and
/// F_S = ReLU(Linear(f_S)) (1×1 convolutions with bias), concat(F_D, F_S) → ConvBNReLU6(3×3) → Dropout2d →
/// Conv1×1(→ K, no bias). f_D is the frozen DTSeg decoder's feature, f_S the frozen supervised FPN's decoder output.
/// Names `fc1.weight` ([hidden, dtseg, 1, 1]: an `nn.Linear` weight reshaped), `fc2.bias`,
/// `segmentation_head.0.1.running_mean`, `segmentation_head.2.weight`.
public final class CollaborativeHead: Module {
    public struct Configuration: Equatable, Sendable {
        public var dtsegChannels: Int
        public var supervisedChannels: Int
        public var hidden = 128
        public var classes: Int
        public var dropout: Float = 0.1

        public init(dtsegChannels: Int, supervisedChannels: Int, hidden: Int = 128, classes: Int,
                    dropout: Float = 0.1) {
            self.dtsegChannels = dtsegChannels
            self.supervisedChannels = supervisedChannels
            self.hidden = hidden
            self.classes = classes
            self.dropout = dropout
        }

        /// The paper decoder's 384-channel f_D and ResNet34-FPN's 128 segmentation channels, hidden 128:
        /// 361,600 parameters at K = 5.
        public static func paper(classes: Int) -> Configuration {
            Configuration(dtsegChannels: 384, supervisedChannels: 128, classes: classes)
        }
    }

    public let configuration: Configuration
    let fc1: Conv2d
    let fc2: Conv2d
    let segmentationHead: Sequential

    public init(_ configuration: Configuration, generator: RandomGenerator) {
        self.configuration = configuration
        let hidden = configuration.hidden
        fc1 = Conv2d(configuration.dtsegChannels, hidden, kernel: 1, generator: generator)
        fc2 = Conv2d(configuration.supervisedChannels, hidden, kernel: 1, generator: generator)
        segmentationHead = dtsegSegmentationHead(2 * hidden, hidden: hidden, classes: configuration.classes,
                                                 dropout: configuration.dropout, generator: generator)
        super.init()
    }

    public override func members() -> [(key: String, member: ModuleMember)] {
        [("fc1", .module(fc1)), ("fc2", .module(fc2)), ("segmentation_head", .module(segmentationHead))]
    }

    /// The logits [N, K, H, W] from f_D [N, dtsegChannels, H, W] and f_S [N, supervisedChannels, H, W].
    public func callAsFunction(dtseg: Tensor, supervised: Tensor) -> Tensor {
        guard dtseg.rank == 4, supervised.rank == 4, dtseg.shape[0] == supervised.shape[0],
              dtseg.shape.dropFirst(2) == supervised.shape.dropFirst(2) else {
            return .invalid("collaborative_head", "needs f_D and f_S of one batch and size, got "
                                + "\(describe(dtseg.shape)) and \(describe(supervised.shape))")
        }
        return segmentationHead(Tensor.concat([fc1(dtseg).relu(), fc2(supervised).relu()], axis: 1))
    }
}

/// ConvBNReLU6(3×3, in → hidden) → Dropout2d → Conv1×1(hidden → K, no bias): the segmentation head of both
/// the decoder and the collaborative head (SPEC §1 steps 2b and 3), named `0.0`, `0.1`, `2`.
func dtsegSegmentationHead(_ inChannels: Int, hidden: Int, classes: Int, dropout: Float,
                           generator: RandomGenerator) -> Sequential {
    Sequential(ConvBN(inChannels, hidden, kernel: 3, relu6: true, generator: generator),
               Dropout2d(dropout, generator: generator),
               Conv2d(hidden, classes, kernel: 1, bias: false, generator: generator))
}

// MARK: - parts (SPEC §1 step 2b)

/// UNetFormer's `ConvBN` (and, with `relu6`, `ConvBNReLU`): conv k×k (padding (k − 1)/2, no bias) → BatchNorm
/// (→ ReLU6), named `0`, `1`.
final class ConvBN: Module, UnaryLayer {
    let conv: Conv2d
    let norm: BatchNorm2d
    let relu6: Bool

    init(_ inChannels: Int, _ outChannels: Int, kernel: Int, relu6: Bool = false, generator: RandomGenerator) {
        conv = Conv2d(inChannels, outChannels, kernel: kernel, padding: (kernel - 1) / 2, bias: false,
                      generator: generator)
        norm = BatchNorm2d(outChannels)
        self.relu6 = relu6
        super.init()
    }

    override func members() -> [(key: String, member: ModuleMember)] { [("0", .module(conv)), ("1", .module(norm))] }

    func callAsFunction(_ x: Tensor) -> Tensor {
        let y = norm(conv(x))
        return relu6 ? y.relu6() : y
    }
}

/// `SeparableConvBN`: depthwise conv k×k (padding (k − 1)/2, no bias) → BatchNorm → pointwise conv (no bias),
/// named `0`, `1`, `2`.
final class SeparableConvBN: Module, UnaryLayer {
    let depthwise: Conv2d
    let norm: BatchNorm2d
    let pointwise: Conv2d

    init(_ channels: Int, kernel: Int, generator: RandomGenerator) {
        depthwise = Conv2d(channels, channels, kernel: kernel, padding: (kernel - 1) / 2, groups: channels, bias: false,
                           generator: generator)
        norm = BatchNorm2d(channels)
        pointwise = Conv2d(channels, channels, kernel: 1, bias: false, generator: generator)
        super.init()
    }

    override func members() -> [(key: String, member: ModuleMember)] {
        [("0", .module(depthwise)), ("1", .module(norm)), ("2", .module(pointwise))]
    }

    func callAsFunction(_ x: Tensor) -> Tensor { pointwise(norm(depthwise(x))) }
}

/// UNetFormer's global-local attention (GLA, SPEC §1 step 2b) on [B, C, H, W]:
/// - local = ConvBN1×1(x) + ConvBN3×3(x);
/// - A = window self-attention in w×w windows (qkv 1×1 without bias, heads, relative position bias; reflect-padded
///   to whole windows and cropped back), without an output projection;
/// - global = AvgPool((w, 1), pad (w/2 − 1, 0))(A reflect-padded bottom by 1)
///   + AvgPool((1, w), pad (0, w/2 − 1))(A reflect-padded right by 1), stride 1, zeros counted: a cross of w pixels
///   through each pixel (the extra reflected row/column makes the even window's output H×W);
/// - out = SeparableConvBN(k = w)(reflect-pad right/bottom by 1 of global + local), cropped to H×W.
/// Names `qkv`, `relative_position_bias_table`, `local1` (3×3), `local2` (1×1), `proj`.
final class GlobalLocalAttention: Module, UnaryLayer {
    let window: Int
    let attention: WindowAttention
    let local1: ConvBN
    let local2: ConvBN
    let proj: SeparableConvBN

    init(_ channels: Int, heads: Int, window: Int, generator: RandomGenerator) {
        self.window = window
        attention = WindowAttention(dim: channels, heads: heads, window: window, outputProjection: false,
                                    generator: generator)
        local1 = ConvBN(channels, channels, kernel: 3, generator: generator)
        local2 = ConvBN(channels, channels, kernel: 1, generator: generator)
        proj = SeparableConvBN(channels, kernel: window, generator: generator)
        super.init()
    }

    override func members() -> [(key: String, member: ModuleMember)] {
        [("qkv", .module(attention.qkv)),
         ("relative_position_bias_table", .parameter(attention.relativePositionBiasTable)),
         ("local1", .module(local1)), ("local2", .module(local2)), ("proj", .module(proj))]
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        guard x.rank == 4 else {
            return .invalid("global_local_attention", "needs [B, C, H, W], got \(describe(x.shape))")
        }
        let (h, w) = (x.shape[2], x.shape[3])
        let local = local2(x) + local1(x)
        let attended = attention(x)
        let half = window / 2 - 1
        let vertical = attended.pad([0, 1, 0, 0], mode: .reflect)
            .avgPool2d(kernel: [window, 1], stride: [1, 1], padding: [half, half, 0, 0], countIncludePad: true)
        let horizontal = attended.pad([0, 0, 0, 1], mode: .reflect)
            .avgPool2d(kernel: [1, window], stride: [1, 1], padding: [0, 0, half, half], countIncludePad: true)
        let out = proj((vertical + horizontal + local).pad([0, 1, 0, 1], mode: .reflect))
        guard out.shape[2] != h || out.shape[3] != w else { return out }
        return out.slice(axis: 2, start: 0, end: h).slice(axis: 3, start: 0, end: w)
    }
}

/// UNetFormer's MLP of 1×1 convolutions with bias: fc1 (c → hidden) → ReLU6 → fc2 (hidden → c); dropout 0.
final class ConvMLP: Module, UnaryLayer {
    let fc1: Conv2d
    let fc2: Conv2d

    init(_ channels: Int, hidden: Int, generator: RandomGenerator) {
        fc1 = Conv2d(channels, hidden, kernel: 1, generator: generator)
        fc2 = Conv2d(hidden, channels, kernel: 1, generator: generator)
        super.init()
    }

    func callAsFunction(_ x: Tensor) -> Tensor { fc2(fc1(x).relu6()) }
}

/// UNetFormer's `Block` (drop path 0): x + GLA(BN(x)), then x + MLP(BN(x)).
final class UNetFormerBlock: Module, UnaryLayer {
    let norm1: BatchNorm2d
    let attn: GlobalLocalAttention
    let norm2: BatchNorm2d
    let mlp: ConvMLP

    init(_ channels: Int, heads: Int, window: Int, mlpRatio: Int, generator: RandomGenerator) {
        norm1 = BatchNorm2d(channels)
        attn = GlobalLocalAttention(channels, heads: heads, window: window, generator: generator)
        norm2 = BatchNorm2d(channels)
        mlp = ConvMLP(channels, hidden: mlpRatio * channels, generator: generator)
        super.init()
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        let h = x + attn(norm1(x))
        return h + mlp(norm2(h))
    }
}

import HistoCore
import HistoNN

/// A perturbation of feature maps [N, C, H, W], as SSL4MIS's `networks/unet.py` defines them for CCT's auxiliary
/// decoders and URPC's deep-supervision heads (SPEC §8). Each call draws from the generator it is given, in the
/// order the graph is recorded, so a seeded generator gives the same perturbations on every backend.
public enum FeaturePerturbation: Equatable, Sendable {
    /// `FeatureNoise`: x + x·u, with u ~ U(−range, range) of shape [C, H, W] shared by the images of the batch.
    case noise(range: Float)
    /// `Dropout` (`F.dropout`): each element zeroed with probability p, the others scaled by 1/(1 − p).
    case dropout(Float)
    /// `FeatureDropout`: with the attention a = the channel mean [N, 1, H, W], keeps the positions where
    /// a < u·max_{h,w} a (the maximum per image) and zeroes the rest, with u ~ U(lo, hi) drawn once per call.
    case featureDropout(ClosedRange<Float>)

    /// SSL4MIS's CCT perturbations, one per auxiliary decoder: noise ±0.3, dropout 0.3, feature dropout U(0.7, 0.9).
    public static let crossConsistency: [FeaturePerturbation] = [.noise(range: 0.3), .dropout(0.3),
                                                                 .featureDropout(0.7...0.9)]

    public func apply(_ x: Tensor, generator: RandomGenerator) -> Tensor {
        switch self {
        case .noise(let range):
            guard x.rank == 4 else {
                return .invalid("feature_noise", "expects [N, C, H, W], not \(describe(x.shape))")
            }
            // x·u + x, in the reference's order of operations.
            return x * generator.uniform(Array(x.shape.dropFirst()), -range, range).unsqueeze(0) + x
        case .dropout(let p):
            return x.dropout(p, generator: generator)
        case .featureDropout(let bounds):
            guard x.rank == 4 else {
                return .invalid("feature_dropout", "expects [N, C, H, W], not \(describe(x.shape))")
            }
            let attention = x.mean(axes: [1], keepDims: true)
            let threshold = attention.max(axes: [2, 3], keepDims: true)
                * generator.uniform([1], bounds.lowerBound, bounds.upperBound)
            return x * attention.less(threshold)
        }
    }
}

/// A `SegmentationUNet` (the backbone) with modules trained beside it (`extras`). Its parameters are named as in
/// the SSL4MIS networks: the backbone's (`encoder.…`, `main_decoder.…`, `out_conv.…`) then those of the extras. Its
/// output is the backbone's main output, so the backbone alone is what is validated, kept as `best.safetensors` and
/// rebuilt by the `unet` model card; a resume checkpoint adds `extras` and `perturbations`.
public class ExtendedUNet: Module, SegmentationModel {
    public let backbone: SegmentationUNet
    public let extras: Module
    /// The draws of the feature perturbations.
    public let perturbations: RandomGenerator

    init(backbone: SegmentationUNet, extras: Module, perturbations: RandomGenerator) {
        self.backbone = backbone
        self.extras = extras
        self.perturbations = perturbations
        super.init()
    }

    public override func members() -> [(key: String, member: ModuleMember)] { backbone.members() + extras.members() }

    public var classes: Int { backbone.classes }
    public var inputMultiple: Int { backbone.inputMultiple }
    public func callAsFunction(_ x: Tensor) -> Tensor { backbone(x) }
}

/// SSL4MIS `UNet_CCT` on our backbone (SPEC §8, CCT): the shared encoder, the main decoder and head, and one
/// auxiliary decoder `aux_decoder<k>` per perturbation — a copy of the main decoder's structure with its own head
/// `aux_decoder<k>.out_conv` — fed the encoder's features of every level under that perturbation.
public final class CrossConsistencyUNet: ExtendedUNet {
    final class AuxiliaryDecoder: Module {
        let decoder: SegmentationUNet.Decoder
        let outConv: any UnaryLayer

        init(_ configuration: SegmentationUNet.Configuration, generator: RandomGenerator) {
            decoder = SegmentationUNet.Decoder(channels: configuration.channels, upsampling: configuration.upsampling,
                                               activation: SegmentationUNet.decoderActivation(configuration.variant),
                                               generator: generator)
            outConv = SegmentationUNet.head(configuration, generator: generator)
            super.init()
        }

        override func members() -> [(key: String, member: ModuleMember)] {
            decoder.members() + [("out_conv", .module(outConv))]
        }

        func callAsFunction(_ features: [Tensor]) -> Tensor { outConv(decoder(features)) }
    }

    final class AuxiliaryDecoders: Module {
        let decoders: [AuxiliaryDecoder]

        init(_ decoders: [AuxiliaryDecoder]) {
            self.decoders = decoders
            super.init()
        }

        override func members() -> [(key: String, member: ModuleMember)] {
            decoders.enumerated().map { ("aux_decoder\($0.offset + 1)", .module($0.element)) }
        }
    }

    /// The perturbation of each auxiliary decoder's input features.
    public let auxiliaryPerturbations: [FeaturePerturbation]
    let auxiliary: AuxiliaryDecoders

    /// The backbone's weights are drawn from `generator` first (the same as a `SegmentationUNet` of that seed), then
    /// the auxiliary decoders', initialised like the backbone.
    public init(_ configuration: SegmentationUNet.Configuration,
                auxiliaryPerturbations kinds: [FeaturePerturbation] = FeaturePerturbation.crossConsistency,
                generator: RandomGenerator, perturbations: RandomGenerator) {
        let backbone = SegmentationUNet(configuration, generator: generator)
        auxiliary = AuxiliaryDecoders(kinds.map { _ in AuxiliaryDecoder(configuration, generator: generator) })
        SegmentationUNet.initialize(auxiliary, variant: configuration.variant, generator: generator)
        auxiliaryPerturbations = kinds
        super.init(backbone: backbone, extras: auxiliary, perturbations: perturbations)
    }

    /// The main logits and each auxiliary decoder's, all [N, K, H, W]. The auxiliary branches are perturbed in
    /// either mode, as in the reference (they only serve training).
    public func outputs(_ x: Tensor) -> (main: Tensor, auxiliary: [Tensor]) {
        if let rejection = backbone.rejection(of: x) {
            return (rejection, auxiliaryPerturbations.map { _ in rejection })
        }
        let features = backbone.encoder(x)
        let main = backbone.outConv(backbone.mainDecoder(features))
        let auxiliaryOutputs = zip(auxiliary.decoders, auxiliaryPerturbations).map { decoder, kind in
            decoder(features.map { kind.apply($0, generator: perturbations) })
        }
        return (main, auxiliaryOutputs)
    }
}

/// SSL4MIS `UNet_URPC` on our backbone (SPEC §8, URPC): besides the main output, deep-supervision heads
/// `out_conv_dp1` … `out_conv_dp3` (conv 3×3 to K classes) read the outputs of the up blocks at 1/2, 1/4 and 1/8
/// of the input resolution, and their logits are resized to the input by nearest-neighbour interpolation
/// (`F.interpolate`'s default). In training mode the heads' inputs are perturbed as in SSL4MIS's `Decoder_URPC`:
/// feature noise ±0.3 at 1/2, feature dropout at 1/4, dropout 0.5 at 1/8.
public final class PyramidUNet: ExtendedUNet {
    final class DeepSupervisionHeads: Module {
        /// dp1 … dp3, finest first.
        let heads: [Conv2d]

        init(channels: [Int], classes: Int, generator: RandomGenerator) {
            heads = (1...3).map { Conv2d(channels[$0], classes, kernel: 3, padding: 1, generator: generator) }
            super.init()
        }

        override func members() -> [(key: String, member: ModuleMember)] {
            heads.enumerated().map { ("out_conv_dp\($0.offset + 1)", .module($0.element)) }
        }
    }

    /// The training-mode perturbations of the dp1, dp2 and dp3 heads' inputs.
    public static let sidePerturbations: [FeaturePerturbation] = [.noise(range: 0.3), .featureDropout(0.7...0.9),
                                                                  .dropout(0.5)]
    let sideHeads: DeepSupervisionHeads

    /// The backbone's weights are drawn from `generator` first, then the heads', initialised like the backbone.
    public init(_ configuration: SegmentationUNet.Configuration, generator: RandomGenerator,
                perturbations: RandomGenerator) {
        let backbone = SegmentationUNet(configuration, generator: generator)
        sideHeads = DeepSupervisionHeads(channels: configuration.channels, classes: configuration.classes,
                                         generator: generator)
        SegmentationUNet.initialize(sideHeads, variant: configuration.variant, generator: generator)
        super.init(backbone: backbone, extras: sideHeads, perturbations: perturbations)
    }

    /// The logits of the 4 scales at the input's resolution, [N, K, H, W] each: the main output, then dp1, dp2, dp3.
    public func outputs(_ x: Tensor) -> [Tensor] {
        if let rejection = backbone.rejection(of: x) { return [Tensor](repeating: rejection, count: 4) }
        let levels = backbone.mainDecoder.levels(backbone.encoder(x))
        // Deepest head first, the reference's order of random draws.
        let sides = (1...3).reversed().map { scale in
            let level = levels[3 - scale]
            let input = isTraining ? Self.sidePerturbations[scale - 1].apply(level, generator: perturbations) : level
            return sideHeads.heads[scale - 1](input).interpolateNearest(size: [x.shape[2], x.shape[3]])
        }
        return [backbone.outConv(levels[3])] + sides.reversed()
    }
}

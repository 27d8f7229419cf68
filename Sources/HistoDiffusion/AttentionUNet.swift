import HistoCore
import HistoNN

// GenSelfDiff-HIS's network (SPEC §2): the annotated-diffusion "Attention U-Net", the same for DDPM pre-training
// (ε output) and segmentation fine-tuning (class probabilities through Softmax(dim=1)). Parameter names are the
// reference's (`downs.0.2.fn.fn.to_qkv.weight`, `final_conv.1.weight`, …; the reference wraps the UNet as
// `net`, so its files carry a `net.` prefix).

/// annotated-diffusion `Unet`: 7×7 init conv, per level 2 ResnetBlocks (GN8) + pre-norm residual linear attention
/// + 4×4 stride-2 conv down; ResnetBlock / full attention / ResnetBlock in the middle; per decoder level
/// cat(skip) + 2 ResnetBlocks + linear attention + 4×4 stride-2 transposed conv up; head ResnetBlock + 1×1 conv.
///
/// Feature names (`featureBlockNames`, the reference module paths): `init_conv`; `downs.<i>.<j>` for level i
/// (j = 0, 1 ResnetBlocks, 2 attention, i.e. the skip, 3 the downsample, absent at the last level);
/// `mid_block1`, `mid_attn`, `mid_block2`; `ups.<i>.<j>` (j = 0…3, 3 the upsample); `final_conv.0` (head
/// ResnetBlock) and `final_conv.1` (the 1×1 conv, before the softmax of the segmentation variant).
public final class AttentionUNet: Module, FeatureExtractingModel {
    public let configuration: Configuration
    let initConv: Conv2d
    let timeMLP: Sequential
    let downs: [AttentionUNetLevel]
    let midBlock1: AnnotatedResnetBlock
    let midAttention: PreNormResidualAttention
    let midBlock2: AnnotatedResnetBlock
    let ups: [AttentionUNetLevel]
    let headBlock: AnnotatedResnetBlock
    let headConv: Conv2d

    public var imageChannels: Int { configuration.channels }
    /// 2^(levels − 1): one stride-2 downsample per level but the last.
    public var inputMultiple: Int { 1 << (configuration.dimMults.count - 1) }

    /// Builds the network with the configuration's `initialization`: `.reference` applies the reference's
    /// `initialize_weights` (N(0, 0.01) on the weights of every convolution, transposed convolution and GroupNorm;
    /// biases and Linear layers keep PyTorch's defaults), `.pytorchDefault` keeps the layers' own initialisation.
    public init(_ configuration: Configuration, generator g: RandomGenerator) throws {
        try configuration.validate()
        let c = configuration
        self.configuration = c
        let timeDim = 4 * c.dim
        let dims = [c.initDim] + c.dimMults.map { c.dim * $0 }
        let pairs = Array(zip(dims.dropLast(), dims.dropFirst()))
        func resnet(_ din: Int, _ dout: Int, time: Bool = true) -> AnnotatedResnetBlock {
            AnnotatedResnetBlock(din, dout, timeDim: time ? timeDim : nil, groups: c.resnetGroups, generator: g)
        }
        func linearAttention(_ dim: Int) -> PreNormResidualAttention {
            .linear(dim: dim, heads: c.attentionHeads, headDim: c.attentionHeadDim, generator: g)
        }

        initConv = Conv2d(c.channels, c.initDim, kernel: 7, padding: 3, generator: g)
        timeMLP = Sequential(SinusoidalTimestepEmbedding(dimension: c.dim, convention: .lucidrains),
                             Linear(c.dim, timeDim, generator: g), Activation(.gelu), Linear(timeDim, timeDim, generator: g))
        downs = pairs.enumerated().map { i, pair in
            AttentionUNetLevel(resnet(pair.0, pair.1), resnet(pair.1, pair.1), linearAttention(pair.1),
                               resample: i < pairs.count - 1 ? Conv2d(pair.1, pair.1, kernel: 4, stride: 2, padding: 1, generator: g) : nil)
        }
        let mid = dims[dims.count - 1]
        midBlock1 = resnet(mid, mid)
        midAttention = .full(dim: mid, heads: c.attentionHeads, headDim: c.attentionHeadDim, generator: g)
        midBlock2 = resnet(mid, mid)
        ups = pairs.dropFirst().reversed().map { din, dout in
            AttentionUNetLevel(resnet(2 * dout, din), resnet(din, din), linearAttention(din),
                               resample: ConvTranspose2d(din, din, kernel: 4, stride: 2, padding: 1, generator: g))
        }
        headBlock = resnet(dims[1], dims[1], time: false)
        headConv = Conv2d(dims[1], c.outChannels, kernel: 1, generator: g)
        super.init()
        guard c.initialization == .reference else { return }
        for (_, module) in modules() {
            let weight: Parameter?
            switch module {
            case let conv as Conv2d: weight = conv.weight
            case let conv as ConvTranspose2d: weight = conv.weight
            case let conv as Pointwise: weight = conv.weight // the reference's 1×1 nn.Conv2d in the attentions
            case let norm as GroupNorm: weight = norm.weight
            default: weight = nil
            }
            if let weight { weight.value = try g.normal(weight.shape, std: 0.01).materialized() }
        }
    }

    public override func members() -> [(key: String, member: ModuleMember)] {
        [("init_conv", .module(initConv)), ("time_mlp", .module(timeMLP))]
            + downs.enumerated().map { ("downs.\($0.offset)", .module($0.element)) }
            + [("mid_block1", .module(midBlock1)), ("mid_attn", .module(midAttention)), ("mid_block2", .module(midBlock2))]
            + ups.enumerated().map { ("ups.\($0.offset)", .module($0.element)) }
            + [("final_conv.0", .module(headBlock)), ("final_conv.1", .module(headConv))]
    }

    public var featureBlockNames: [String] {
        var names = ["init_conv"]
        for (i, level) in downs.enumerated() { names += (0..<(level.resample == nil ? 3 : 4)).map { "downs.\(i).\($0)" } }
        names += ["mid_block1", "mid_attn", "mid_block2"]
        for i in ups.indices { names += (0..<4).map { "ups.\(i).\($0)" } }
        return names + ["final_conv.0", "final_conv.1"]
    }

    /// x [N, channels, H, W] with H and W divisible by 2^(levels − 1), timesteps [N]; `context` must be nil.
    /// Returns ε [N, outChannels, H, W], or class probabilities (softmax over channels) for the segmentation
    /// variant.
    public func forward(_ x: Tensor, timesteps: Tensor, context: Tensor?, recorder: FeatureRecorder?) -> Tensor {
        if let problem = checkInputs(x, timesteps: timesteps, context: context) { return .invalid("attention_unet", problem) }
        let t = timeMLP(timesteps)
        var h = initConv(x)
        recorder?.record("init_conv", h)
        var skips: [Tensor] = []
        for (i, level) in downs.enumerated() {
            h = level(h, time: t, recorder: recorder, prefix: "downs.\(i)") { skips.append($0) }
        }
        h = midBlock1(h, time: t)
        recorder?.record("mid_block1", h)
        h = midAttention(h)
        recorder?.record("mid_attn", h)
        h = midBlock2(h, time: t)
        recorder?.record("mid_block2", h)
        for (i, level) in ups.enumerated() {
            h = level(Tensor.concat([h, skips.removeLast()], axis: 1), time: t, recorder: recorder, prefix: "ups.\(i)")
        }
        h = headBlock(h, time: nil)
        recorder?.record("final_conv.0", h)
        let out = headConv(h)
        recorder?.record("final_conv.1", out)
        return configuration.softmaxOutput ? out.softmax(axis: 1) : out
    }

    private func checkInputs(_ x: Tensor, timesteps: Tensor, context: Tensor?) -> String? {
        let factor = inputMultiple
        guard x.rank == 4, x.shape[1] == configuration.channels, x.shape[2] % factor == 0, x.shape[3] % factor == 0 else {
            return "x must be [N, \(configuration.channels), H, W] with H and W divisible by \(factor), got \(describe(x.shape))"
        }
        guard timesteps.shape == [x.shape[0]] else { return "timesteps must be [\(x.shape[0])], got \(describe(timesteps.shape))" }
        guard context == nil else { return "this model takes no context, got \(describe(context!.shape))" }
        return nil
    }
}

extension AttentionUNet {
    public struct Configuration: Equatable, Sendable {
        public var dim: Int
        public var dimMults: [Int]
        /// Input channels.
        public var channels: Int
        public var outChannels: Int
        /// The stem's width; the reference default is dim / 3 · 2 (42 for dim 64).
        public var initDim: Int
        public var resnetGroups: Int
        public var attentionHeads: Int
        public var attentionHeadDim: Int
        /// Softmax over channels after the head (the segmentation network).
        public var softmaxOutput: Bool
        public var initialization: Initialization

        /// How fresh weights are drawn.
        public enum Initialization: Sendable {
            /// The GenSelfDiff code's N(0, 0.01) on convolution and GroupNorm weights. With GroupNorm scales near 0
            /// the network starts almost silent: at 64² with lr 2e-4 both this engine and the PyTorch reference
            /// stayed at the loss of predicting ε = 0 for hundreds of steps (see `cpu`).
            case reference
            /// PyTorch's layer defaults (Kaiming-uniform convolutions, GroupNorm scale 1).
            case pytorchDefault
        }

        public init(dim: Int, dimMults: [Int], channels: Int = 3, outChannels: Int? = nil, initDim: Int? = nil,
                    resnetGroups: Int = 8, attentionHeads: Int = 4, attentionHeadDim: Int = 32, softmaxOutput: Bool = false,
                    initialization: Initialization = .reference) {
            self.dim = dim
            self.dimMults = dimMults
            self.channels = channels
            self.outChannels = outChannels ?? channels
            self.initDim = initDim ?? dim / 3 * 2
            self.resnetGroups = resnetGroups
            self.attentionHeads = attentionHeads
            self.attentionHeadDim = attentionHeadDim
            self.softmaxOutput = softmaxOutput
            self.initialization = initialization
        }

        func validate() throws {
            var problems: [String] = []
            if dim < 1 || channels < 1 || outChannels < 1 || initDim < 1 || attentionHeads < 1 || attentionHeadDim < 1 {
                problems.append("dim \(dim), channels \(channels), outChannels \(outChannels), initDim \(initDim), attentionHeads \(attentionHeads) and attentionHeadDim \(attentionHeadDim) must be positive")
            }
            if dimMults.count < 2 || dimMults.contains(where: { $0 < 1 }) {
                problems.append("dimMults \(dimMults) must list at least two positive multipliers")
            }
            for width in dimMults.map({ dim * $0 }) where resnetGroups < 1 || width % resnetGroups != 0 {
                problems.append("\(width) channels do not split into \(resnetGroups) groups")
            }
            guard problems.isEmpty else {
                throw EngineError.invalidOp(op: "attention_unet", message: problems.joined(separator: "; "))
            }
        }

        /// GenSelfDiff's pre-training network (SPEC §2): dim 64, mults (1, 2, 4, 8), RGB in, ε out.
        /// 31,267,083 parameters ("about 31.27M").
        public static let genSelfDiff = Configuration(dim: 64, dimMults: [1, 2, 4, 8])

        /// GenSelfDiff's segmentation network: the same body, `classes` outputs and Softmax(dim=1).
        /// 31,267,018 parameters for 2 classes.
        public static func genSelfDiffSegmentation(classes: Int) -> Configuration {
            Configuration(dim: 64, dimMults: [1, 2, 4, 8], outChannels: classes, softmaxOutput: true)
        }

        /// Trains on a 2-core CPU in minutes on 64² RGB inputs: dim 16, mults (1, 2, 4), 605,755 parameters.
        /// PyTorch's default initialisation: with the reference's, a MoNuSeg 64² pretraining run (GenSelfDiff recipe,
        /// Adam 2e-4, batch 8) was still at the ε = 0 loss after 1,100 steps; with the defaults the PyTorch
        /// reference halves its loss in 300.
        public static let cpu = Configuration(dim: 16, dimMults: [1, 2, 4], initialization: .pytorchDefault)

        /// The CPU preset's segmentation network (initialised as `cpu`).
        public static func cpuSegmentation(classes: Int) -> Configuration {
            Configuration(dim: 16, dimMults: [1, 2, 4], outChannels: classes, softmaxOutput: true, initialization: .pytorchDefault)
        }
    }
}

/// One level of the encoder or decoder: `0`, `1` ResnetBlocks, `2` attention, `3` down- or upsample.
final class AttentionUNetLevel: Module {
    let block1: AnnotatedResnetBlock
    let block2: AnnotatedResnetBlock
    let attention: PreNormResidualAttention
    let resample: (any UnaryLayer)?

    init(_ block1: AnnotatedResnetBlock, _ block2: AnnotatedResnetBlock, _ attention: PreNormResidualAttention,
         resample: (any UnaryLayer)?) {
        self.block1 = block1
        self.block2 = block2
        self.attention = attention
        self.resample = resample
        super.init()
    }

    override func members() -> [(key: String, member: ModuleMember)] {
        [("0", .module(block1)), ("1", .module(block2)), ("2", .module(attention))]
            + (resample.map { [("3", .module($0))] } ?? [])
    }

    /// Runs the level; `skip` receives the attention output (the encoder's skip) before the resample.
    func callAsFunction(_ x: Tensor, time: Tensor, recorder: FeatureRecorder?, prefix: String,
                        skip: (Tensor) -> Void = { _ in }) -> Tensor {
        var h = block1(x, time: time)
        recorder?.record(prefix + ".0", h)
        h = block2(h, time: time)
        recorder?.record(prefix + ".1", h)
        h = attention(h)
        recorder?.record(prefix + ".2", h)
        skip(h)
        guard let resample else { return h }
        h = resample(h)
        recorder?.record(prefix + ".3", h)
        return h
    }
}

/// annotated-diffusion `ResnetBlock`: h = SiLU(GN(conv3×3(x))) (`block1`); h += Linear(SiLU(t)) (`mlp.1`);
/// h = SiLU(GN(conv3×3(h))) (`block2`); out = h + (1×1 conv (`res_conv`) of x when the channels change, else x).
final class AnnotatedResnetBlock: Module {
    let mlp: Sequential?
    let block1: ConvNormActivation
    let block2: ConvNormActivation
    let residualConv: Conv2d?

    init(_ din: Int, _ dout: Int, timeDim: Int?, groups: Int, generator: RandomGenerator) {
        mlp = timeDim.map { Sequential(Activation(.silu), Linear($0, dout, generator: generator)) }
        block1 = ConvNormActivation(din, dout, groups: groups, generator: generator)
        block2 = ConvNormActivation(dout, dout, groups: groups, generator: generator)
        residualConv = din == dout ? nil : Conv2d(din, dout, kernel: 1, generator: generator)
        super.init()
    }

    override func members() -> [(key: String, member: ModuleMember)] {
        (mlp.map { [("mlp", .module($0))] } ?? []) + [("block1", .module(block1)), ("block2", .module(block2))]
            + (residualConv.map { [("res_conv", .module($0))] } ?? [])
    }

    func callAsFunction(_ x: Tensor, time: Tensor?) -> Tensor {
        var h = block1(x)
        if let mlp, let time { h = h + mlp(time).unsqueeze(2).unsqueeze(3) }
        return block2(h) + (residualConv?(x) ?? x)
    }
}

/// annotated-diffusion `Block`: conv 3×3 (`proj`) → GroupNorm (`norm`) → SiLU.
final class ConvNormActivation: Module {
    let proj: Conv2d
    let norm: GroupNorm

    init(_ din: Int, _ dout: Int, groups: Int, generator: RandomGenerator) {
        proj = Conv2d(din, dout, kernel: 3, padding: 1, generator: generator)
        norm = GroupNorm(groups: groups, channels: dout)
        super.init()
    }

    func callAsFunction(_ x: Tensor) -> Tensor { norm(proj(x), activation: .silu) }
}

/// `Residual(PreNorm(dim, attention))`: x + attention(GN(1, dim)(x)), with the reference's names
/// (`fn.norm`, `fn.fn.to_qkv`, `fn.fn.to_out…`) over HistoNN's attention layers.
final class PreNormResidualAttention: Module {
    let norm: GroupNorm
    let attention: any UnaryLayer
    /// The attention's parameters under the reference's keys (relative to `fn.fn`).
    let attentionMembers: [(key: String, member: ModuleMember)]

    private init(dim: Int, attention: any UnaryLayer, members: [(key: String, member: ModuleMember)]) {
        norm = GroupNorm(groups: 1, channels: dim)
        self.attention = attention
        attentionMembers = members
        super.init()
    }

    /// `LinearAttention`: `to_qkv`, `to_out.0` (1×1 conv), `to_out.1` (GroupNorm(1)).
    static func linear(dim: Int, heads: Int, headDim: Int, generator: RandomGenerator) -> PreNormResidualAttention {
        let attention = LinearAttention(dim: dim, heads: heads, headDim: headDim, generator: generator)
        return PreNormResidualAttention(dim: dim, attention: attention, members: [
            ("to_qkv", .module(attention.qkv)), ("to_out.0", .module(attention.output)), ("to_out.1", .module(attention.norm))])
    }

    /// The middle's full `Attention`: `to_qkv`, `to_out`.
    static func full(dim: Int, heads: Int, headDim: Int, generator: RandomGenerator) -> PreNormResidualAttention {
        let attention = SpatialAttention(dim: dim, heads: heads, headDim: headDim, generator: generator)
        return PreNormResidualAttention(dim: dim, attention: attention, members: [
            ("to_qkv", .module(attention.qkv)), ("to_out", .module(attention.output))])
    }

    override func members() -> [(key: String, member: ModuleMember)] {
        [("fn.norm", .module(norm))] + attentionMembers.map { ("fn.fn." + $0.key, $0.member) }
    }

    func callAsFunction(_ x: Tensor) -> Tensor { x + attention(norm(x)) }
}

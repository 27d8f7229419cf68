import HistoCore
import HistoNN

// Ciampi et al.'s conditional denoiser (SPEC §3; `DDPM_Wrapper` in ciampluca/hebbian-bootstraping-…,
// models/networks_2d/unet_ddpm.py): a plain U-Net on [noisy target ⊕ clean conditioner], the timestep embedding
// added once after the stem, no attention. The same network serves both pathways: the mask pathway f_m (noisy
// mask ⊕ image → x̂₀ mask) and the image pathway f_i (noisy image ⊕ mask → ε̂). Parameter names are the
// reference's (`init_conv.conv_conv.0.weight`, `downs.0.0.maxpool_conv.1.conv_conv.1.running_mean`,
// `ups.0.0.conv.conv.3.weight`, `final_conv.bias`, …).

/// `DDPM_Wrapper`: stem ConvBlockLeakyReLU → + time MLP → per level MaxPool 2 + ConvBlockLeakyReLU (skip stored
/// before each) → per level UpBlock (1×1 conv, bilinear ×2 with align_corners, cat(skip, up), 2 × conv-BN-ReLU) →
/// conv 3×3 head.
///
/// As a `NoisePredictor`: x is the noisy target [N, targetChannels, H, W] and `context` is the clean conditioner
/// map [N, conditionChannels, H, W] (required), concatenated after x as in the reference.
///
/// Feature names (`featureBlockNames`, the reference module paths): `init_conv` (the stem, before the timestep
/// embedding is added), `downs.<i>.0` (level i's DownBlock), `ups.<i>.0` (UpBlock i) and `final_conv`.
public final class ConditionalUNet: Module, FeatureExtractingModel {
    public let configuration: Configuration
    let initConv: ConvBlockLeakyReLU
    let timeMLP: Sequential
    let downs: [ConditionalDownBlock]
    let ups: [ConditionalUpBlock]
    let finalConv: Conv2d

    public var imageChannels: Int { configuration.targetChannels }
    /// 2^levels: one max-pool per level.
    public var inputMultiple: Int { 1 << configuration.dimMults.count }

    /// Builds the network with the reference's initialisation (`init_weights(…, 'kaiming')`): Kaiming-normal
    /// (fan_in) weights and zero biases for every convolution and Linear layer, BatchNorm weights N(1, 0.02²)
    /// and zero biases.
    public init(_ configuration: Configuration, generator g: RandomGenerator) throws {
        try configuration.validate()
        let c = configuration
        self.configuration = c
        let dims = [c.dim] + c.dimMults.map { c.dim * $0 }
        let pairs = Array(zip(dims.dropLast(), dims.dropFirst()))
        initConv = ConvBlockLeakyReLU(c.targetChannels + c.conditionChannels, c.dim, dropout: c.dropouts[0],
                                      slope: c.leakySlope, generator: g)
        timeMLP = Sequential(SinusoidalTimestepEmbedding(dimension: c.dim, convention: .lucidrains),
                             Linear(c.dim, 4 * c.dim, generator: g), Activation(.gelu), Linear(4 * c.dim, c.dim, generator: g))
        downs = pairs.enumerated().map { i, pair in
            ConditionalDownBlock(pair.0, pair.1, dropout: c.dropouts[i + 1], slope: c.leakySlope, generator: g)
        }
        ups = pairs.reversed().map { din, dout in ConditionalUpBlock(dout, din, din, generator: g) }
        finalConv = Conv2d(c.dim, c.targetChannels, kernel: 3, padding: 1, generator: g)
        super.init()
        for (_, module) in modules() {
            switch module {
            case let conv as Conv2d: try Self.kaiming(conv.weight, bias: conv.bias, generator: g)
            case let linear as Linear: try Self.kaiming(linear.weight, bias: linear.bias, generator: g)
            case let norm as BatchNorm2d:
                if let weight = norm.weight { weight.value = try g.normal(weight.shape, mean: 1, std: 0.02).materialized() }
                norm.bias?.value = Tensor.zeros(norm.bias?.shape ?? [])
            default: break
            }
        }
    }

    private static func kaiming(_ weight: Parameter, bias: Parameter?, generator: RandomGenerator) throws {
        weight.value = try Initializer.kaimingNormal(weight.shape, a: 0, mode: .fanIn, generator: generator).materialized()
        bias?.value = Tensor.zeros(bias?.shape ?? [])
    }

    public override func members() -> [(key: String, member: ModuleMember)] {
        [("init_conv", .module(initConv)), ("time_mlp", .module(timeMLP))]
            + downs.enumerated().map { ("downs.\($0.offset).0", .module($0.element)) }
            + ups.enumerated().map { ("ups.\($0.offset).0", .module($0.element)) }
            + [("final_conv", .module(finalConv))]
    }

    public var featureBlockNames: [String] {
        ["init_conv"] + downs.indices.map { "downs.\($0).0" } + ups.indices.map { "ups.\($0).0" } + ["final_conv"]
    }

    /// x: the noisy target [N, targetChannels, H, W] (H, W divisible by 2^levels); timesteps [N]; context: the
    /// clean conditioner [N, conditionChannels, H, W]. Returns [N, targetChannels, H, W].
    public func forward(_ x: Tensor, timesteps: Tensor, context: Tensor?, recorder: FeatureRecorder?) -> Tensor {
        if let problem = checkInputs(x, timesteps: timesteps, context: context) {
            return .invalid("conditional_unet", problem)
        }
        var h = initConv(Tensor.concat([x, context!], axis: 1))
        recorder?.record("init_conv", h)
        h = h + timeMLP(timesteps).unsqueeze(2).unsqueeze(3)
        var skips: [Tensor] = []
        for (i, down) in downs.enumerated() {
            skips.append(h)
            h = down(h)
            recorder?.record("downs.\(i).0", h)
        }
        for (i, up) in ups.enumerated() {
            h = up(h, skip: skips.removeLast())
            recorder?.record("ups.\(i).0", h)
        }
        let out = finalConv(h)
        recorder?.record("final_conv", out)
        return out
    }

    private func checkInputs(_ x: Tensor, timesteps: Tensor, context: Tensor?) -> String? {
        let c = configuration
        let factor = inputMultiple
        guard x.rank == 4, x.shape[1] == c.targetChannels, x.shape[2] % factor == 0, x.shape[3] % factor == 0 else {
            return "x must be the noisy target [N, \(c.targetChannels), H, W] with H and W divisible by \(factor), got \(describe(x.shape))"
        }
        guard timesteps.shape == [x.shape[0]] else { return "timesteps must be [\(x.shape[0])], got \(describe(timesteps.shape))" }
        let expected = [x.shape[0], c.conditionChannels, x.shape[2], x.shape[3]]
        guard let context, context.shape == expected else {
            return "context must be the conditioner \(describe(expected)), got \(context.map { describe($0.shape) } ?? "nil")"
        }
        return nil
    }
}

extension ConditionalUNet {
    public struct Configuration: Equatable, Sendable {
        /// Channels of the noisy target (and of the output).
        public var targetChannels: Int
        /// Channels of the clean conditioner concatenated after the target.
        public var conditionChannels: Int
        public var dim: Int
        public var dimMults: [Int]
        /// Dropout of the stem, then of each encoder level (dimMults.count + 1 values).
        public var dropouts: [Float]
        public var leakySlope: Float

        public init(targetChannels: Int, conditionChannels: Int, dim: Int = 64, dimMults: [Int] = [1, 2, 4, 8],
                    dropouts: [Float] = [0.05, 0.1, 0.2, 0.3, 0.4], leakySlope: Float = 0.01) {
            self.targetChannels = targetChannels
            self.conditionChannels = conditionChannels
            self.dim = dim
            self.dimMults = dimMults
            self.dropouts = dropouts
            self.leakySlope = leakySlope
        }

        func validate() throws {
            var problems: [String] = []
            if targetChannels < 1 || conditionChannels < 1 || dim < 1 {
                problems.append("targetChannels \(targetChannels), conditionChannels \(conditionChannels) and dim \(dim) must be positive")
            }
            if dimMults.isEmpty || dimMults.contains(where: { $0 < 1 }) {
                problems.append("dimMults \(dimMults) must be a non-empty list of positive multipliers")
            }
            if dropouts.count != dimMults.count + 1 || dropouts.contains(where: { !(0..<1).contains($0) }) {
                problems.append("dropouts \(dropouts) must hold \(dimMults.count + 1) probabilities in [0, 1)")
            }
            guard problems.isEmpty else {
                throw EngineError.invalidOp(op: "conditional_unet", message: problems.joined(separator: "; "))
            }
        }

        /// The teacher's mask pathway f_m (`net_seg`, SPEC §3): noisy mask (`classes` channels) ⊕ image → x̂₀
        /// mask; dim 64, mults (1, 2, 4, 8), 128² inputs. 7,411,458 parameters for 2 classes and RGB.
        public static func ciampiMask(classes: Int = 2, imageChannels: Int = 3) -> Configuration {
            Configuration(targetChannels: classes, conditionChannels: imageChannels)
        }

        /// The teacher's image pathway f_i (`net`): noisy image ⊕ mask → ε̂. 7,412,035 parameters for RGB and
        /// 2 classes.
        public static func ciampiImage(imageChannels: Int = 3, classes: Int = 2) -> Configuration {
            Configuration(targetChannels: imageChannels, conditionChannels: classes)
        }

        /// The mask pathway at CPU size (dim 16, the reference's 4 levels; 64² inputs train in minutes on 2
        /// cores). 463,314 parameters for 2 classes and RGB.
        public static func cpuMask(classes: Int = 2, imageChannels: Int = 3) -> Configuration {
            Configuration(targetChannels: classes, conditionChannels: imageChannels, dim: 16)
        }

        /// The image pathway at CPU size. 463,603 parameters for RGB and 2 classes.
        public static func cpuImage(imageChannels: Int = 3, classes: Int = 2) -> Configuration {
            Configuration(targetChannels: imageChannels, conditionChannels: classes, dim: 16)
        }
    }
}

/// `ConvBlockLeakyRelu`: conv 3×3 → BN → LeakyReLU → Dropout → conv 3×3 → BN → LeakyReLU (`conv_conv.0…6`).
final class ConvBlockLeakyReLU: Module, UnaryLayer {
    let layers: Sequential

    init(_ cin: Int, _ cout: Int, dropout: Float, slope: Float, generator: RandomGenerator) {
        layers = Sequential(
            Conv2d(cin, cout, kernel: 3, padding: 1, generator: generator), BatchNorm2d(cout), Activation(.leakyRelu(slope: slope)),
            Dropout(dropout, generator: generator),
            Conv2d(cout, cout, kernel: 3, padding: 1, generator: generator), BatchNorm2d(cout), Activation(.leakyRelu(slope: slope)))
        super.init()
    }

    override func members() -> [(key: String, member: ModuleMember)] { [("conv_conv", .module(layers))] }

    func callAsFunction(_ x: Tensor) -> Tensor { layers(x) }
}

/// `DownBlock`: max-pool 2 → ConvBlockLeakyReLU (`maxpool_conv.1`).
final class ConditionalDownBlock: Module, UnaryLayer {
    let block: ConvBlockLeakyReLU

    init(_ cin: Int, _ cout: Int, dropout: Float, slope: Float, generator: RandomGenerator) {
        block = ConvBlockLeakyReLU(cin, cout, dropout: dropout, slope: slope, generator: generator)
        super.init()
    }

    override func members() -> [(key: String, member: ModuleMember)] { [("maxpool_conv.1", .module(block))] }

    func callAsFunction(_ x: Tensor) -> Tensor { block(x.maxPool2d(kernel: [2, 2])) }
}

/// `UpBlock(in1, in2, out)` (bilinear): conv 1×1 in1 → in2 (`conv1x1`) → bilinear ×2 (align_corners) →
/// cat(skip, up) → [conv 3×3 → BN → ReLU] × 2 (`conv.conv.0…5`; the reference passes a dropout it never uses).
final class ConditionalUpBlock: Module {
    let conv1x1: Conv2d
    let layers: Sequential

    init(_ in1: Int, _ in2: Int, _ cout: Int, generator: RandomGenerator) {
        conv1x1 = Conv2d(in1, in2, kernel: 1, generator: generator)
        layers = Sequential(
            Conv2d(2 * in2, cout, kernel: 3, padding: 1, generator: generator), BatchNorm2d(cout), Activation(.relu),
            Conv2d(cout, cout, kernel: 3, padding: 1, generator: generator), BatchNorm2d(cout), Activation(.relu))
        super.init()
    }

    override func members() -> [(key: String, member: ModuleMember)] {
        [("conv1x1", .module(conv1x1)), ("conv.conv", .module(layers))]
    }

    func callAsFunction(_ x: Tensor, skip: Tensor) -> Tensor {
        let up = conv1x1(x).interpolateBilinear(scale: 2, alignCorners: true)
        return layers(Tensor.concat([skip, up], axis: 1))
    }
}

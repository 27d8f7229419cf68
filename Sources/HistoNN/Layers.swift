import Foundation
import HistoCore

/// y = x·Wᵀ + b with W [out, in] and b [out] (PyTorch layout and default init: kaiming-uniform with a = √5 for
/// W, U(±1/√in) for b).
public final class Linear: Module, UnaryLayer {
    public let weight: Parameter
    public let bias: Parameter?

    public init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true, generator: RandomGenerator) {
        let shape = [outFeatures, inFeatures]
        weight = Parameter(Initializer.kaimingUniform(shape, a: Foundation.sqrt(5), generator: generator))
        self.bias = bias ? Parameter(Initializer.defaultBias(outFeatures, fanIn: inFeatures, generator: generator)) : nil
        super.init()
    }

    public func callAsFunction(_ x: Tensor) -> Tensor { x.linear(weight: weight.value, bias: bias?.value) }
}

/// Inverted dropout (`nn.Dropout`; `channelwise` drops whole NCHW channels as `nn.Dropout2d`). Active in training
/// mode, or always when `alwaysOn` (dropout kept at inference, as in CDCL's classifier).
public class Dropout: Module, UnaryLayer {
    public let probability: Float
    public let channelwise: Bool
    public let alwaysOn: Bool
    public let generator: RandomGenerator

    public init(_ probability: Float, generator: RandomGenerator, channelwise: Bool = false, alwaysOn: Bool = false) {
        self.probability = probability
        self.generator = generator
        self.channelwise = channelwise
        self.alwaysOn = alwaysOn
        super.init()
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        guard probability >= 0, probability < 1 else {
            return .invalid(channelwise ? "dropout2d" : "dropout", "probability \(probability) is outside [0, 1)")
        }
        guard isTraining || alwaysOn else { return x }
        return x.dropout(probability, generator: generator, channelwise: channelwise)
    }
}

/// `nn.Dropout2d`: zeroes whole channels of NCHW maps.
public final class Dropout2d: Dropout {
    public init(_ probability: Float, generator: RandomGenerator, alwaysOn: Bool = false) {
        super.init(probability, generator: generator, channelwise: true, alwaysOn: alwaysOn)
    }
}

/// A parameter-free elementwise activation as a module (for `Sequential`).
public final class Activation: Module, UnaryLayer {
    public enum Kind: Equatable {
        case identity, relu, relu6, leakyRelu(slope: Float), silu, gelu, geluTanh, sigmoid, tanh
    }
    public let kind: Kind

    public init(_ kind: Kind) { self.kind = kind; super.init() }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        switch kind {
        case .identity: return x
        case .relu: return x.relu()
        case .relu6: return x.relu6()
        case .leakyRelu(let slope): return x.leakyRelu(slope)
        case .silu: return x.silu()
        case .gelu: return x.gelu()
        case .geluTanh: return x.gelu(approximateTanh: true)
        case .sigmoid: return x.sigmoid()
        case .tanh: return x.tanh()
        }
    }
}

/// Applies its layers in order. Members are named `0`, `1`, … as in `nn.Sequential`.
public final class Sequential: Module, UnaryLayer {
    public let layers: [any UnaryLayer]

    public init(_ layers: [any UnaryLayer]) { self.layers = layers; super.init() }
    public convenience init(_ layers: any UnaryLayer...) { self.init(layers) }

    public override func members() -> [(key: String, member: ModuleMember)] {
        layers.enumerated().map { ("\($0.offset)", .module($0.element)) }
    }

    public func callAsFunction(_ x: Tensor) -> Tensor { layers.reduce(x) { $1($0) } }
}

/// Sinusoidal embedding of diffusion timesteps t [N] → [N, dimension] (SPEC §0.2), no parameters.
public final class SinusoidalTimestepEmbedding: Module, UnaryLayer {
    public enum Convention {
        /// guided-diffusion / LDM `timestep_embedding`: f_i = exp(−ln(P)·i/half), [cos, sin]; an odd dimension
        /// gets a zero last column.
        case guidedDiffusion
        /// lucidrains / annotated-diffusion `SinusoidalPositionEmbeddings`: f_i = exp(−ln(P)·i/(half−1)),
        /// [sin, cos]; the dimension must be even and at least 4.
        case lucidrains
    }
    public let dimension: Int
    public let convention: Convention
    public let maxPeriod: Float
    /// f_i as a [1, half] constant, in float32 as both references compute it.
    private let frequencies: Tensor

    public init(dimension: Int, convention: Convention, maxPeriod: Float = 10000) {
        self.dimension = dimension
        self.convention = convention
        self.maxPeriod = maxPeriod
        let half = max(dimension / 2, 0)
        let logPeriod = Foundation.log(Double(maxPeriod))
        let values: [Float] = (0..<half).map { i in
            switch convention {
            case .guidedDiffusion: return Foundation.exp(Float(-logPeriod) * Float(i) / Float(half))
            case .lucidrains: return Foundation.exp(Float(i) * Float(-logPeriod / Double(half - 1)))
            }
        }
        frequencies = Tensor(values, shape: [1, half])
        super.init()
    }

    public func callAsFunction(_ t: Tensor) -> Tensor {
        let op = "timestep_embedding"
        guard t.rank == 1 else { return .invalid(op, "timesteps must have shape [N], got \(describe(t.shape))") }
        let half = dimension / 2
        switch convention {
        case .guidedDiffusion:
            guard dimension >= 2 else { return .invalid(op, "dimension \(dimension) is below 2") }
            let args = t.reshape([t.count, 1]) * frequencies
            let emb = Tensor.concat([args.cos(), args.sin()], axis: 1)
            return dimension % 2 == 0 ? emb : Tensor.concat([emb, Tensor.zeros([t.count, 1])], axis: 1)
        case .lucidrains:
            guard dimension % 2 == 0, half >= 2 else {
                return .invalid(op, "the lucidrains convention needs an even dimension of at least 4, got \(dimension)")
            }
            let args = t.reshape([t.count, 1]) * frequencies
            return Tensor.concat([args.sin(), args.cos()], axis: 1)
        }
    }
}

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
    /// guided-diffusion (cos first) or lucidrains (sin first, frequencies over half − 1); see `TimestepEmbedding`.
    public typealias Convention = TimestepEmbedding.Convention
    public let dimension: Int
    public let convention: Convention
    public let maxPeriod: Float
    /// f_i as a [⌊dimension/2⌋] constant, in float32 as both references compute it.
    private let frequencies: Tensor

    public init(dimension: Int, convention: Convention, maxPeriod: Float = 10000) {
        self.dimension = dimension
        self.convention = convention
        self.maxPeriod = maxPeriod
        let values = TimestepEmbedding.frequencies(dimension: dimension, convention: convention, maxPeriod: maxPeriod)
        frequencies = Tensor(values, shape: [values.count])
        super.init()
    }

    /// One fused op (`diffusion.timestep_embedding`).
    public func callAsFunction(_ t: Tensor) -> Tensor {
        t.timestepEmbedding(dimension: dimension, convention: convention, frequencies: frequencies)
    }
}

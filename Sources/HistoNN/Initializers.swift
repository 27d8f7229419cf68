import Foundation
import HistoCore

/// Weight initialisers with PyTorch's formulas (`torch.nn.init`), drawn from a seeded `RandomGenerator`: the
/// same generator state gives the same weights on every backend. The values differ from PyTorch's own RNG.
public enum Initializer {
    public enum FanMode { case fanIn, fanOut }

    /// (fan_in, fan_out) as `torch.nn.init._calculate_fan_in_and_fan_out`: for a weight [out, in, k…],
    /// fan_in = in·∏k and fan_out = out·∏k. A 1-D shape has fan_in = fan_out = its size.
    public static func fans(_ shape: [Int]) -> (fanIn: Int, fanOut: Int) {
        if shape.count < 2 { let n = shape.first ?? 1; return (n, n) }
        let receptive = shape.dropFirst(2).reduce(1, *)
        return (shape[1] * receptive, shape[0] * receptive)
    }

    /// `kaiming_uniform_(w, a, mode, nonlinearity='leaky_relu')`: U(−b, b), b = gain·√(3/fan),
    /// gain = √(2/(1+a²)). With a = √5 this is PyTorch's default Linear/Conv weight init (b = 1/√fan_in).
    public static func kaimingUniform(_ shape: [Int], a: Float = 0, mode: FanMode = .fanIn,
                                      generator: RandomGenerator) -> Tensor {
        let bound = leakyReluGain(a) * Foundation.sqrt(3 / Float(fan(shape, mode)))
        return generator.uniform(shape, -bound, bound)
    }

    /// `kaiming_normal_(w, a, mode, nonlinearity='leaky_relu')`: N(0, (gain/√fan)²).
    public static func kaimingNormal(_ shape: [Int], a: Float = 0, mode: FanMode = .fanIn,
                                     generator: RandomGenerator) -> Tensor {
        generator.normal(shape, std: leakyReluGain(a) / Foundation.sqrt(Float(fan(shape, mode))))
    }

    /// `xavier_uniform_(w, gain)`: U(−b, b), b = gain·√(6/(fan_in + fan_out)).
    public static func xavierUniform(_ shape: [Int], gain: Float = 1, generator: RandomGenerator) -> Tensor {
        let (fanIn, fanOut) = fans(shape)
        let bound = gain * Foundation.sqrt(6 / Float(max(fanIn + fanOut, 1)))
        return generator.uniform(shape, -bound, bound)
    }

    /// `xavier_normal_(w, gain)`: N(0, σ²), σ = gain·√(2/(fan_in + fan_out)).
    public static func xavierNormal(_ shape: [Int], gain: Float = 1, generator: RandomGenerator) -> Tensor {
        let (fanIn, fanOut) = fans(shape)
        return generator.normal(shape, std: gain * Foundation.sqrt(2 / Float(max(fanIn + fanOut, 1))))
    }

    /// PyTorch's default bias init for Linear/Conv: U(−1/√fan_in, 1/√fan_in) with the weight's fan_in
    /// (bound 0 when fan_in is 0).
    public static func defaultBias(_ count: Int, fanIn: Int, generator: RandomGenerator) -> Tensor {
        let bound: Float = fanIn > 0 ? 1 / Foundation.sqrt(Float(fanIn)) : 0
        return generator.uniform([count], -bound, bound)
    }

    private static func leakyReluGain(_ a: Float) -> Float { Foundation.sqrt(2 / (1 + a * a)) }

    private static func fan(_ shape: [Int], _ mode: FanMode) -> Int {
        let (fanIn, fanOut) = fans(shape)
        return max(mode == .fanIn ? fanIn : fanOut, 1)
    }
}

import Foundation
import HistoCore

/// `nn.Conv2d`: weight [out, in/groups, kh, kw], optional bias [out], PyTorch default init.
/// Padding is [top, bottom, left, right]; `padding: Int` pads all four sides.
public final class Conv2d: Module, UnaryLayer {
    public let weight: Parameter
    public let bias: Parameter?
    public let stride: [Int], padding: [Int], dilation: [Int], groups: Int

    public convenience init(_ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0,
                dilation: Int = 1, groups: Int = 1, bias: Bool = true, generator: RandomGenerator) {
        self.init(inChannels, outChannels, kernel: [kernel, kernel], stride: [stride, stride],
                  padding: [padding, padding, padding, padding], dilation: [dilation, dilation], groups: groups,
                  bias: bias, generator: generator)
    }

    public init(_ inChannels: Int, _ outChannels: Int, kernel: [Int], stride: [Int], padding: [Int],
                dilation: [Int] = [1, 1], groups: Int = 1, bias: Bool = true, generator: RandomGenerator) {
        let shape = [outChannels, inChannels / max(groups, 1)] + kernel
        weight = Parameter(Initializer.kaimingUniform(shape, a: Foundation.sqrt(5), generator: generator))
        self.bias = bias ? Parameter(Initializer.defaultBias(outChannels, fanIn: Initializer.fans(shape).fanIn, generator: generator)) : nil
        self.stride = stride; self.padding = padding; self.dilation = dilation; self.groups = groups
        super.init()
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        x.conv2d(weight.value, bias: bias?.value, stride: stride, padding: padding, dilation: dilation, groups: groups)
    }
}

/// `nn.ConvTranspose2d`: weight [in, out/groups, kh, kw], optional bias [out], PyTorch default init.
public final class ConvTranspose2d: Module, UnaryLayer {
    public let weight: Parameter
    public let bias: Parameter?
    public let stride: [Int], padding: [Int], outputPadding: [Int], groups: Int

    public init(_ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0,
                outputPadding: Int = 0, groups: Int = 1, bias: Bool = true, generator: RandomGenerator) {
        let shape = [inChannels, outChannels / max(groups, 1), kernel, kernel]
        weight = Parameter(Initializer.kaimingUniform(shape, a: Foundation.sqrt(5), generator: generator))
        self.bias = bias ? Parameter(Initializer.defaultBias(outChannels, fanIn: Initializer.fans(shape).fanIn, generator: generator)) : nil
        self.stride = [stride, stride]
        self.padding = [padding, padding, padding, padding]
        self.outputPadding = [outputPadding, outputPadding]
        self.groups = groups
        super.init()
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        x.convTranspose2d(weight.value, bias: bias?.value, stride: stride, padding: padding,
                          outputPadding: outputPadding, groups: groups)
    }
}

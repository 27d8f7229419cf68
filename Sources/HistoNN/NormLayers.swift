import HistoCore

/// `nn.GroupNorm`: statistics per (sample, group of channels), per-channel affine (weight 1, bias 0 at init).
public final class GroupNorm: Module, UnaryLayer {
    public let groups: Int
    public let eps: Float
    public let weight: Parameter?
    public let bias: Parameter?

    public init(groups: Int, channels: Int, eps: Float = 1e-5, affine: Bool = true) {
        self.groups = groups
        self.eps = eps
        weight = affine ? Parameter(Tensor.ones([channels])) : nil
        bias = affine ? Parameter(Tensor.zeros([channels])) : nil
        super.init()
    }

    public func callAsFunction(_ x: Tensor) -> Tensor { callAsFunction(x, activation: .identity) }

    /// GroupNorm then `activation` as one fused op (the UNets' GroupNorm → SiLU).
    public func callAsFunction(_ x: Tensor, activation: NormActivation) -> Tensor {
        x.groupNorm(groups: groups, weight: weight?.value, bias: bias?.value, eps: eps, activation: activation)
    }
}

/// `nn.LayerNorm` over the last `lastAxes` axes of shape `normalizedShape`.
public final class LayerNorm: Module, UnaryLayer {
    public let normalizedShape: [Int]
    public let eps: Float
    public let weight: Parameter?
    public let bias: Parameter?

    public init(_ normalizedShape: [Int], eps: Float = 1e-5, affine: Bool = true) {
        self.normalizedShape = normalizedShape
        self.eps = eps
        weight = affine ? Parameter(Tensor.ones(normalizedShape)) : nil
        bias = affine ? Parameter(Tensor.zeros(normalizedShape)) : nil
        super.init()
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        x.layerNorm(lastAxes: normalizedShape.count, weight: weight?.value, bias: bias?.value, eps: eps)
    }
}

/// `nn.BatchNorm2d`: batch statistics in training mode (running statistics updated with PyTorch's momentum
/// convention, unbiased variance), running statistics in eval mode. The running-statistics update is recorded
/// lazily: evaluate it with the step through `Gradients.of(_:wrt:alongside: model.pendingBufferUpdates())` and
/// finish with `model.commitBufferUpdates()`.
public final class BatchNorm2d: Module, UnaryLayer {
    public let eps: Float
    public let momentum: Float
    public let weight: Parameter?
    public let bias: Parameter?
    public let runningMean: ModuleBuffer
    public let runningVar: ModuleBuffer

    public init(_ channels: Int, eps: Float = 1e-5, momentum: Float = 0.1, affine: Bool = true) {
        self.eps = eps
        self.momentum = momentum
        weight = affine ? Parameter(Tensor.ones([channels])) : nil
        bias = affine ? Parameter(Tensor.zeros([channels])) : nil
        runningMean = ModuleBuffer(Tensor.zeros([channels]))
        runningVar = ModuleBuffer(Tensor.ones([channels]))
        super.init()
    }

    public override func members() -> [(key: String, member: ModuleMember)] {
        // PyTorch's state-dict names, so checkpoints exchange with `nn.BatchNorm2d`.
        var list: [(key: String, member: ModuleMember)] = []
        if let weight { list.append(("weight", .parameter(weight))) }
        if let bias { list.append(("bias", .parameter(bias))) }
        list.append(("running_mean", .buffer(runningMean)))
        list.append(("running_var", .buffer(runningVar)))
        return list
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        guard isTraining else {
            return x.batchNorm(mean: runningMean.value, variance: runningVar.value, weight: weight?.value, bias: bias?.value, eps: eps)
        }
        let (mean, variance) = x.batchStatistics()
        runningMean.value = runningMean.value * (1 - momentum) + mean * momentum
        runningVar.value = runningVar.value * (1 - momentum) + variance * momentum
        return x.batchNormTraining(weight: weight?.value, bias: bias?.value, eps: eps)
    }
}

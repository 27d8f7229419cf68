import Foundation
import HistoCore

/// A 1×1 convolution applied as a matrix product over [B, C, L] maps; weight [out, in, 1, 1] (conv layout, so
/// checkpoints exchange with `nn.Conv2d(…, 1)`/`nn.Conv1d(…, 1)`).
public final class Pointwise: Module {
    public let weight: Parameter
    public let bias: Parameter?

    public init(_ inChannels: Int, _ outChannels: Int, bias: Bool = true, generator: RandomGenerator) {
        let shape = [outChannels, inChannels, 1, 1]
        weight = Parameter(Initializer.kaimingUniform(shape, a: Foundation.sqrt(5), generator: generator))
        self.bias = bias ? Parameter(Initializer.defaultBias(outChannels, fanIn: inChannels, generator: generator)) : nil
        super.init()
    }

    /// x [B, in, L] → [B, out, L].
    public func callAsFunction(_ x: Tensor) -> Tensor {
        project(x, weight.value.reshape(Array(weight.shape.prefix(2))), bias?.value)
    }

    /// x [B, in, L] → `groups` tensors [B, out/groups, L], the outputs of `callAsFunction(x).chunk(groups, axis: 1)`
    /// as one product per group of the weight's rows: attention's q, k and v come out as tensors of their own instead
    /// of copies sliced out of a shared one (issue 21).
    public func callAsFunction(_ x: Tensor, groups: Int) -> [Tensor] {
        let w = weight.value.reshape(Array(weight.shape.prefix(2)))
        guard groups > 0, w.shape[0] % groups == 0 else {
            return [.invalid("pointwise", "\(w.shape[0]) outputs do not split into \(groups) groups")]
        }
        let rows = w.shape[0] / groups
        return (0..<groups).map { g in
            project(x, w.slice(axis: 0, start: g * rows, end: (g + 1) * rows),
                    bias?.value.slice(axis: 0, start: g * rows, end: (g + 1) * rows))
        }
    }

    private func project(_ x: Tensor, _ w: Tensor, _ b: Tensor?) -> Tensor {
        let y = w.matmul(x)
        guard let b else { return y }
        return y + b.reshape([1, b.count, 1])
    }
}

extension Tensor {
    /// [B, H·D, L] → [B, H, D, L] (heads split from channels, as einops `b (h d) l -> b h d l`).
    func splitHeads(_ heads: Int) -> Tensor {
        guard rank == 3, shape[1] % heads == 0 else { return .invalid("split_heads", "\(describe(shape)) does not split into \(heads) heads") }
        return reshape([shape[0], heads, shape[1] / heads, shape[2]])
    }
}

/// Multi-head attention over token sequences x [B, N, C], optionally attending to a context [B, M, Cc]
/// (cross-attention). Projections are `Linear` layers as in `nn.MultiheadAttention`-style blocks.
public final class MultiheadAttention: Module {
    public let heads: Int
    public let headDim: Int
    public let queryProjection: Linear, keyProjection: Linear, valueProjection: Linear, outputProjection: Linear

    public init(dim: Int, heads: Int, headDim: Int? = nil, contextDim: Int? = nil, bias: Bool = true, generator: RandomGenerator) {
        self.heads = heads
        self.headDim = headDim ?? dim / max(heads, 1)
        let inner = heads * self.headDim
        queryProjection = Linear(dim, inner, bias: bias, generator: generator)
        keyProjection = Linear(contextDim ?? dim, inner, bias: bias, generator: generator)
        valueProjection = Linear(contextDim ?? dim, inner, bias: bias, generator: generator)
        outputProjection = Linear(inner, dim, generator: generator)
        super.init()
    }

    /// x [B, N, C], context [B, M, Cc] (default x), bias: additive logits [B or 1, heads or 1, N, M].
    public func callAsFunction(_ x: Tensor, context: Tensor? = nil, bias: Tensor? = nil) -> Tensor {
        let source = context ?? x
        func heads(_ t: Tensor) -> Tensor { t.reshape([t.shape[0], t.shape[1], self.heads, headDim]).permute([0, 2, 1, 3]) }
        let attended = Tensor.scaledDotProductAttention(q: heads(queryProjection(x)), k: heads(keyProjection(source)),
                                                        v: heads(valueProjection(source)), bias: bias)
        return outputProjection(attended.permute([0, 2, 1, 3]).reshape([x.shape[0], x.shape[1], self.heads * headDim]))
    }
}

/// Window self-attention with a learned relative position bias (Swin / UNetFormer's GLA branch) on maps
/// [B, C, H, W]: reflect-pads to whole windows, attends within w×w windows, crops back.
public final class WindowAttention: Module, UnaryLayer {
    public let heads: Int
    public let window: Int
    public let qkv: Pointwise
    /// The 1×1 output projection; nil where the enclosing layer mixes the heads itself (UNetFormer's GLA ends with
    /// its own pooling and separable convolution instead).
    public let proj: Pointwise?
    /// [(2w − 1)², heads], N(0, 0.02²) at init (timm's trunc_normal with std .02 truncates at ±2, i.e. never).
    public let relativePositionBiasTable: Parameter

    public init(dim: Int, heads: Int, window: Int, outputProjection: Bool = true, generator: RandomGenerator) {
        self.heads = heads
        self.window = window
        qkv = Pointwise(dim, 3 * dim, bias: false, generator: generator)
        proj = outputProjection ? Pointwise(dim, dim, generator: generator) : nil
        relativePositionBiasTable = Parameter(generator.normal([(2 * window - 1) * (2 * window - 1), heads], std: 0.02))
        super.init()
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        guard x.rank == 4, x.shape[1] % heads == 0 else {
            return .invalid("window_attention", "needs [B, C, H, W] with C divisible by \(heads) heads, got \(describe(x.shape))")
        }
        let (b, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let padH = (window - h % window) % window, padW = (window - w % window) % window
        let padded = padH + padW > 0 ? x.pad([0, padH, 0, padW], mode: .reflect) : x
        let (ph, pw) = (h + padH, w + padW)
        let projected = qkv(padded.reshape([b, c, ph * pw])).reshape([b, 3 * c, ph, pw])
        let tokens = projected.windowPartition(window: window) // [Bw, w², 3C]
        let bw = tokens.shape[0], n = window * window, d = c / heads
        let parts = tokens.reshape([bw, n, 3, heads, d]).permute([2, 0, 3, 1, 4]) // [3, Bw, heads, n, d]
        let q = parts.slice(axis: 0, start: 0, end: 1).squeeze(0)
        let k = parts.slice(axis: 0, start: 1, end: 2).squeeze(0)
        let v = parts.slice(axis: 0, start: 2, end: 3).squeeze(0)
        let bias = relativePositionBiasTable.value.relativePositionBias(window: window)
        let attended = Tensor.scaledDotProductAttention(q: q, k: k, v: v, bias: bias) // [Bw, heads, n, d]
        let merged = attended.permute([0, 2, 1, 3]).reshape([bw, n, c]).windowMerge(window: window, height: ph, width: pw)
        let out = proj.map { $0(merged.reshape([b, c, ph * pw])).reshape([b, c, ph, pw]) } ?? merged
        if padH + padW == 0 { return out }
        return out.slice(axis: 2, start: 0, end: h).slice(axis: 3, start: 0, end: w)
    }
}

/// Full self-attention over the pixels of a map [B, C, H, W] (GenSelfDiff's middle `Attention`): 1×1 qkv
/// without bias, heads × headDim, scale headDim^−½, softmax over keys, 1×1 output projection.
public final class SpatialAttention: Module, UnaryLayer {
    public let heads: Int, headDim: Int
    public let qkv: Pointwise
    public let output: Pointwise

    public init(dim: Int, heads: Int = 4, headDim: Int = 32, generator: RandomGenerator) {
        self.heads = heads
        self.headDim = headDim
        qkv = Pointwise(dim, 3 * heads * headDim, bias: false, generator: generator)
        output = Pointwise(heads * headDim, dim, generator: generator)
        super.init()
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        let (b, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        // [B, heads, L, d]
        let parts = qkv(x.reshape([b, c, h * w]), groups: 3).map { $0.splitHeads(heads).transpose(2, 3) }
        let attended = Tensor.scaledDotProductAttention(q: parts[0], k: parts[1], v: parts[2]) // [B, heads, L, d]
        return output(attended.transpose(2, 3).reshape([b, heads * headDim, h * w])).reshape([b, c, h, w])
    }
}

/// GenSelfDiff's `LinearAttention` (SPEC §2): 1×1 qkv without bias, q softmaxed over features and scaled,
/// k softmaxed over pixels, context = k·vᵀ, out = contextᵀ·q, then 1×1 projection and GroupNorm(1).
/// The pre-norm and the residual belong to the enclosing block.
public final class LinearAttention: Module, UnaryLayer {
    public let heads: Int, headDim: Int
    public let qkv: Pointwise
    public let output: Pointwise
    public let norm: GroupNorm

    public init(dim: Int, heads: Int = 4, headDim: Int = 32, generator: RandomGenerator) {
        self.heads = heads
        self.headDim = headDim
        qkv = Pointwise(dim, 3 * heads * headDim, bias: false, generator: generator)
        output = Pointwise(heads * headDim, dim, generator: generator)
        norm = GroupNorm(groups: 1, channels: dim)
        super.init()
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        let (b, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let parts = qkv(x.reshape([b, c, h * w]), groups: 3).map { $0.splitHeads(heads) } // [B, heads, d, L]
        let attended = Tensor.linearAttention(q: parts[0], k: parts[1], v: parts[2]) // [B, heads, d, L]
        return norm(output(attended.reshape([b, heads * headDim, h * w])).reshape([b, c, h, w]))
    }
}

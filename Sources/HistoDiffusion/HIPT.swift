import Foundation
import HistoCore
import HistoNN

/// HIPT's patch-level ViT-256/16 (Chen et al.; a DINO ViT-S/16 pretrained on TCGA at 20×), PathSegDiff's
/// conditioning encoder (SPEC §4): patch embedding (conv p×p stride p), a CLS token, a learned positional
/// embedding for 1 + g² tokens, `depth` pre-norm blocks (LayerNorm → multi-head attention with a biased qkv →
/// residual; LayerNorm → MLP 4× with exact GELU → residual), a final LayerNorm. The output is the CLS token.
///
/// Takes pixels [N, 3, H, W] in [0, 1] and normalises them with ImageNet's mean and standard deviation, as HIPT's
/// transforms do; H and W are floored to multiples of the patch. Grids other than g × g use the positional
/// embedding interpolated as DINO's `interpolate_pos_encoding` does (bicubic, scale factor (grid + 0.1)/g), computed
/// on the host once per grid and weights, as a constant: the encoder is frozen wherever it is used.
///
/// Parameter names are DINO's state-dict names (`patch_embed.proj.weight`, `cls_token`, `pos_embed`,
/// `blocks.<i>.norm1`, `blocks.<i>.attn.qkv`, `blocks.<i>.attn.proj`, `blocks.<i>.norm2`, `blocks.<i>.mlp.fc1`,
/// `blocks.<i>.mlp.fc2`, `norm`), so `tools/hipt_export.py`'s files load by name (`load(from:)`).
public final class VisionTransformer: Module {
    public struct Configuration: Equatable, Sendable {
        public var embedDim: Int
        public var depth: Int
        public var heads: Int
        public var patch: Int
        /// The side g of the grid the positional embedding is stored for (14: 224² inputs).
        public var positionGrid: Int

        public init(embedDim: Int, depth: Int, heads: Int, patch: Int = 16, positionGrid: Int = 14) {
            self.embedDim = embedDim; self.depth = depth; self.heads = heads; self.patch = patch
            self.positionGrid = positionGrid
        }

        /// HIPT ViT-256/16 = DINO ViT-S/16: 384 wide, 12 blocks of 6 heads. 21,665,664 parameters.
        public static let hipt256 = Configuration(embedDim: 384, depth: 12, heads: 6)

        /// The metadata keys `tools/hipt_export.py` records the architecture under.
        static let metadataKeys = (embedDim: "hipt.embed_dim", depth: "hipt.depth", heads: "hipt.num_heads",
                                   patch: "hipt.patch_size")
    }

    /// ImageNet's channel statistics (HIPT's input normalisation).
    static let imageNetMean: [Float] = [0.485, 0.456, 0.406], imageNetStd: [Float] = [0.229, 0.224, 0.225]

    public let configuration: Configuration
    let patchEmbedding: Conv2d
    let clsToken: Parameter
    let positionEmbedding: Parameter
    let blocks: [ViTBlock]
    let norm: LayerNorm
    /// Interpolated positional embeddings by grid, for the `positionEmbedding` value they were computed from.
    private var interpolated: (source: Node, grids: [[Int]: Tensor])?

    public init(_ configuration: Configuration, generator: RandomGenerator) {
        let c = configuration
        self.configuration = c
        patchEmbedding = Conv2d(3, c.embedDim, kernel: c.patch, stride: c.patch, generator: generator)
        // DINO's trunc_normal(std .02) truncates at ±2, i.e. never in practice.
        clsToken = Parameter(generator.normal([1, 1, c.embedDim], std: 0.02))
        positionEmbedding = Parameter(generator.normal([1, 1 + c.positionGrid * c.positionGrid, c.embedDim], std: 0.02))
        blocks = (0..<c.depth).map { _ in ViTBlock(c.embedDim, heads: c.heads, generator: generator) }
        norm = LayerNorm([c.embedDim], eps: 1e-6)
        super.init()
    }

    public override func members() -> [(key: String, member: ModuleMember)] {
        [("patch_embed.proj", .module(patchEmbedding)), ("cls_token", .parameter(clsToken)),
         ("pos_embed", .parameter(positionEmbedding))]
            + blocks.enumerated().map { ("blocks.\($0.offset)", .module($0.element)) } + [("norm", .module(norm))]
    }

    /// Pixels [N, 3, H, W] in [0, 1] → the CLS embedding [N, embedDim] (not normalised).
    public func callAsFunction(_ pixels: Tensor) -> Tensor {
        let p = configuration.patch, d = configuration.embedDim
        guard pixels.rank == 4, pixels.shape[1] == 3, pixels.shape[2] >= p, pixels.shape[3] >= p else {
            return .invalid("hipt", "needs pixels [N, 3, H, W] with sides of at least \(p), "
                            + "got \(describe(pixels.shape))")
        }
        let (n, rows, columns) = (pixels.shape[0], pixels.shape[2] / p, pixels.shape[3] / p)
        let mean = Tensor(Self.imageNetMean, shape: [1, 3, 1, 1]), std = Tensor(Self.imageNetStd, shape: [1, 3, 1, 1])
        let patches = patchEmbedding((pixels - mean) / std).reshape([n, d, rows * columns]).transpose(1, 2)
        var x = Tensor.concat([clsToken.value.expand([n, 1, d]), patches], axis: 1)
        do {
            x = x + (try positions(rows: rows, columns: columns))
        } catch {
            return .invalid("hipt", "\(error)")
        }
        for block in blocks { x = block(x) }
        // The final LayerNorm acts on each token alone: only the CLS row is needed.
        return norm(x.slice(axis: 1, start: 0, end: 1).reshape([n, d]))
    }

    /// The positional embedding [1, 1 + rows·columns, embedDim]: the stored one for its own square grid, else the
    /// interpolated one (cached per grid until the weights change).
    func positions(rows: Int, columns: Int) throws -> Tensor {
        let g = configuration.positionGrid
        if rows == g, columns == g { return positionEmbedding.value }
        if interpolated?.source !== positionEmbedding.value.node { interpolated = (positionEmbedding.value.node, [:]) }
        if let cached = interpolated?.grids[[rows, columns]] { return cached }
        let d = configuration.embedDim
        let stored = try positionEmbedding.values()
        let grid = Self.bicubic(Array(stored[d...]), side: g, channels: d, rows: rows, columns: columns)
        let positions = Tensor(Array(stored[..<d]) + grid, shape: [1, 1 + rows * columns, d])
        interpolated?.grids[[rows, columns]] = positions
        return positions
    }

    /// PyTorch's `interpolate(mode="bicubic", align_corners=False, scale_factor=(rows + 0.1)/side, (columns +
    /// 0.1)/side)` of a side × side grid of `channels`-vectors (row-major, channels last) to rows × columns: source
    /// coordinate (i + ½)/scale − ½, Keys' cubic with A = −0.75, indices clamped at the borders.
    static func bicubic(_ grid: [Float], side: Int, channels: Int, rows: Int, columns: Int) -> [Float] {
        func taps(_ output: Int, _ size: Int) -> [(index: Int, weight: Double)] {
            // As PyTorch: 1/scale in double, then the source coordinate in float.
            let inverse = Float(1 / ((Double(size) + 0.1) / Double(side)))
            let a = -0.75
            let source = Double(inverse * (Float(output) + 0.5) - 0.5)
            let base = Foundation.floor(source), t = source - base
            func near(_ x: Double) -> Double { ((a + 2) * x - (a + 3)) * x * x + 1 }
            func far(_ x: Double) -> Double { ((a * x - 5 * a) * x + 8 * a) * x - 4 * a }
            let weights = [far(t + 1), near(t), near(1 - t), far(2 - t)]
            return (0..<4).map { (min(max(Int(base) - 1 + $0, 0), side - 1), weights[$0]) }
        }
        var out = [Float](repeating: 0, count: rows * columns * channels)
        for r in 0..<rows {
            let vertical = taps(r, rows)
            for c in 0..<columns {
                let horizontal = taps(c, columns)
                for (y, wy) in vertical {
                    for (x, wx) in horizontal {
                        let w = Float(wy * wx), from = (y * side + x) * channels, to = (r * columns + c) * channels
                        for k in 0..<channels { out[to + k] += w * grid[from + k] }
                    }
                }
            }
        }
        return out
    }

    /// The frozen encoder in a `tools/hipt_export.py` file, in evaluation mode: the architecture from the file's
    /// metadata and shapes, the weights by DINO's names (an import error names the file and every missing,
    /// unexpected or misshapen tensor in one line).
    public static func load(from path: String) throws -> VisionTransformer {
        let file = try SafeTensors.read(path)
        let keys = Configuration.metadataKeys
        func number(_ key: String) throws -> Int {
            guard let value = file.metadata[key].flatMap(Int.init), value > 0 else {
                throw EngineError.file(path: path, message:
                    "no positive metadata \(key) (written by tools/hipt_export.py)")
            }
            return value
        }
        let positions = file.tensors["pos_embed"].map { $0.shape.count == 3 ? $0.shape[1] - 1 : 0 } ?? 0
        let grid = Int(Double(positions).squareRoot())
        guard grid > 0, grid * grid == positions else {
            throw EngineError.file(path: path, message: "pos_embed is not [1, 1 + g², D] (a HIPT ViT export has it)")
        }
        let configuration = Configuration(embedDim: try number(keys.embedDim), depth: try number(keys.depth),
                                          heads: try number(keys.heads), patch: try number(keys.patch),
                                          positionGrid: grid)
        guard configuration.embedDim % configuration.heads == 0 else {
            throw EngineError.file(path: path, message:
                "\(configuration.embedDim) channels do not split into \(configuration.heads) heads")
        }
        let model = VisionTransformer(configuration, generator: RandomGenerator(seed: 0))
        try WeightImport.load(into: model, tensors: file.tensors, order: file.names, source: path, map: .identity)
        model.freeze()
        model.train(false)
        return model
    }

    /// Writes the weights as `tools/hipt_export.py` does (DINO's names, the architecture in the metadata), so that
    /// `load(from:)` reads them back: e.g. a randomly initialised encoder for a test run.
    public func export(to path: String) throws {
        let keys = Configuration.metadataKeys, c = configuration
        try save(to: path, metadata: [keys.embedDim: String(c.embedDim), keys.depth: String(c.depth),
                                      keys.heads: String(c.heads), keys.patch: String(c.patch)])
    }
}

/// A DINO ViT block: x + attn(norm1(x)), then + mlp(norm2(x)); LayerNorm eps 1e-6.
final class ViTBlock: Module {
    let norm1: LayerNorm
    let attn: ViTAttention
    let norm2: LayerNorm
    let mlp: ViTMLP

    init(_ dim: Int, heads: Int, generator: RandomGenerator) {
        norm1 = LayerNorm([dim], eps: 1e-6)
        attn = ViTAttention(dim, heads: heads, generator: generator)
        norm2 = LayerNorm([dim], eps: 1e-6)
        mlp = ViTMLP(dim, generator: generator)
        super.init()
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        let h = x + attn(norm1(x))
        return h + mlp(norm2(h))
    }
}

/// DINO's `Attention`: one biased qkv projection, heads of dim/heads, scale (dim/heads)^−½, output projection.
final class ViTAttention: Module {
    let heads: Int
    let qkv: Linear
    let proj: Linear

    init(_ dim: Int, heads: Int, generator: RandomGenerator) {
        self.heads = heads
        qkv = Linear(dim, 3 * dim, generator: generator)
        proj = Linear(dim, dim, generator: generator)
        super.init()
    }

    /// x [N, T, C] → [N, T, C].
    func callAsFunction(_ x: Tensor) -> Tensor {
        let (n, t, c) = (x.shape[0], x.shape[1], x.shape[2])
        let parts = qkv(x).reshape([n, t, 3, heads, c / heads]).permute([2, 0, 3, 1, 4]) // [3, N, heads, T, d]
        func part(_ i: Int) -> Tensor { parts.slice(axis: 0, start: i, end: i + 1).squeeze(0) }
        let attended = Tensor.scaledDotProductAttention(q: part(0), k: part(1), v: part(2)) // [N, heads, T, d]
        return proj(attended.permute([0, 2, 1, 3]).reshape([n, t, c]))
    }
}

/// DINO's `Mlp`: fc1 (dim → 4·dim) → exact (erf) GELU → fc2.
final class ViTMLP: Module {
    let fc1: Linear
    let fc2: Linear

    init(_ dim: Int, generator: RandomGenerator) {
        fc1 = Linear(dim, 4 * dim, generator: generator)
        fc2 = Linear(4 * dim, dim, generator: generator)
        super.init()
    }

    func callAsFunction(_ x: Tensor) -> Tensor { fc2(fc1(x).gelu()) }
}

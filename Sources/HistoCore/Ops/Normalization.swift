import Foundation
import HistoAVX512

// Normalisation over [N, C, spatial…] tensors. Group norm and training-mode batch norm are one fused op
// (`ChannelNorm`) that differ only in which elements share statistics; its backward op recomputes the
// statistics from x instead of saving them. Eval-mode batch norm, layer norm (group norm of one group per row,
// then the per-element affine) and L2 normalisation are compositions.
//
// The UNets' ResBlocks compute silu(groupNorm(x)·w + b), so the norm ops take an optional trailing SiLU
// (`NormActivation`): one pass writes the activation and the backward recomputes the pre-activation from x, so
// the normalised tensor is neither stored for the backward nor written and read back once more. It is recorded
// explicitly (`groupNorm(…, activation: .silu)`, used by the GroupNorm layer's `callAsFunction(_:activation:)`)
// rather than found by an executor rewrite: autodiff records the VJP before any executor sees the graph, and the
// separate silu VJP keeps the normalised tensor alive, so only a fusion at recording time saves its memory.

/// Which elements of an [N, C, spatial…] tensor share one mean and variance.
public enum NormStatistics: Hashable, Sendable {
    /// Per sample, over each group of C/groups consecutive channels and all positions (GroupNorm).
    case groups(Int)
    /// Per channel, over the batch and all positions (BatchNorm in training mode).
    case batch

    var opName: String {
        switch self {
        case .groups: return "group_norm"
        case .batch: return "batch_norm"
        }
    }
}

/// x [N, C, spatial…] seen as N·C contiguous planes of `planeSize` elements, plane p = n·C + c. A statistics set
/// is a list of planes: for groups the C/G consecutive planes of one sample's group (set = p / (C/G)), for batch
/// plane c of every sample (set = c).
struct PlaneLayout {
    let batch: Int, channels: Int, planeSize: Int, statistics: NormStatistics

    init(_ shape: [Int], _ statistics: NormStatistics) {
        batch = shape[0]; channels = shape[1]; planeSize = shape.dropFirst(2).reduce(1, *); self.statistics = statistics
    }

    /// Rejects shapes the statistics cannot be taken over.
    static func check(_ x: [Int], _ statistics: NormStatistics) throws(ShapeError) {
        guard x.count >= 2 else { throw ShapeError("needs an [N, C, …] input, got \(describe(x))") }
        switch statistics {
        case .groups(let g):
            guard g >= 1, x[1] % g == 0 else { throw ShapeError("\(x[1]) channels do not divide into \(g) groups") }
        case .batch:
            guard x[0] * x.dropFirst(2).reduce(1, *) > 1 else {
                throw ShapeError("batch statistics need more than one value per channel, got \(describe(x))")
            }
        }
    }

    var setCount: Int {
        switch statistics {
        case .groups(let g): return batch * g
        case .batch: return channels
        }
    }
    var planesPerSet: Int {
        switch statistics {
        case .groups(let g): return channels / g
        case .batch: return batch
        }
    }
    var setSize: Int { planesPerSet * planeSize }

    @inline(__always) func plane(_ k: Int, ofSet s: Int) -> Int {
        switch statistics {
        case .groups: return s * planesPerSet + k
        case .batch: return k * channels + s
        }
    }

    /// Statistics chunks: at most 2048 elements (8 KB) of one plane, cached between the passes over them.
    static let chunk = 2048

    /// Σg and Σg·(x − mean) over one plane: the backward's sums.
    typealias GradientSums = (g: Double, gx: Double)

    /// Mean and biased variance of set `s`, chunk by chunk in plane order (`RunningMoments`). With `gradient`, the
    /// same pass also sums, for each plane k of the set, Σdy and Σdy·(x − Float(mean)) into sums[k] (the
    /// backward's sums without an activation): per chunk around the chunk's mean while the chunk is cached, shifted
    /// to the set's mean in Float64 at the end.
    func moments(_ x: UnsafePointer<Float>, set s: Int,
                 gradient: (dy: UnsafePointer<Float>, sums: UnsafeMutablePointer<GradientSums>)? = nil)
        -> RunningMoments {
        let n = planeSize
        var moments = RunningMoments()
        for k in 0..<planesPerSet {
            let offset = plane(k, ofSet: s) * n
            gradient?.sums[k] = (0, 0)
            for start in stride(from: 0, to: n, by: Self.chunk) {
                let length = Swift.min(Self.chunk, n - start), m = moments.add(x + offset + start, count: length)
                if let (dy, sums) = gradient {
                    // Σdy·(x − m) + m·Σdy = Σdy·x, less mean·Σdy below.
                    let (g, gx) = planeGradientSums(dy + offset + start, x + offset + start, count: length, mean: m)
                    sums[k].g += g; sums[k].gx += gx + Double(m) * g
                }
            }
        }
        if let (_, sums) = gradient {
            for k in 0..<planesPerSet { sums[k].gx -= Double(Float(moments.mean)) * sums[k].g }
        }
        return moments
    }

    /// The normaliser of set `s` and, for each plane k of it, (Σg, Σg·(x − mean)) in sums[k] with
    /// g = dy·act'((x − mean)·rstd·w + b): what the backward needs for dx and for the parameters. Without an
    /// activation g is dy and the sums come in the statistics' pass; after one, g needs the statistics first and is
    /// left in scratch + k·planeSize.
    func gradientSums(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, set s: Int, eps: Double,
                      activation: NormActivation,
                      affine: (w: UnsafeBufferPointer<Float>, b: UnsafeBufferPointer<Float>)?,
                      scratch: UnsafeMutablePointer<Float>,
                      sums: UnsafeMutablePointer<GradientSums>) -> (mean: Float, rstd: Double) {
        guard activation != .identity else { return moments(x, set: s, gradient: (dy, sums)).normalizer(eps: eps) }
        let (m, rstd) = moments(x, set: s).normalizer(eps: eps), n = planeSize
        for k in 0..<planesPerSet {
            let p = plane(k, ofSet: s), c = p % channels
            sums[k] = activation.gradientSums(x: x + p * n, dy: dy + p * n, count: n, mean: m,
                                              scale: Float(rstd) * (affine?.w[c] ?? 1), shift: affine?.b[c] ?? 0,
                                              scratch: scratch + k * n)
        }
        return (m, rstd)
    }

    /// Work items per parallel chunk: about 32k elements.
    var setGrain: Int { Swift.max(1, 32768 / Swift.max(setSize, 1)) }
}

/// Mean and biased variance over a stream of chunks: each chunk's sum, then its squares around its own mean while
/// it is in the L1 cache (a second pass over a whole set would read it from L2), merged in Float64 with Chan et
/// al.'s pairwise update, which keeps the precision of the two-pass form for any mean.
struct RunningMoments {
    private(set) var count = 0.0, mean = 0.0, squares = 0.0

    /// Adds x[0..<n]; returns the chunk's mean as a Float (the centre of its squares).
    @inline(__always) mutating func add(_ x: UnsafePointer<Float>, count n: Int) -> Float {
        let size = Double(n), chunkMean = planeSum(x, count: n) / size, m = Float(chunkMean)
        // Σ(x − m)² less size·(chunkMean − m)²: the squares around the unrounded chunk mean.
        let chunkSquares = planeSquares(x, count: n, mean: m) - size * (chunkMean - Double(m)) * (chunkMean - Double(m))
        let total = count + size, delta = chunkMean - mean
        mean += delta * size / total
        squares += chunkSquares + delta * delta * count * size / total
        count = total
        return m
    }

    var variance: Double { squares / count }

    /// The mean and 1/sqrt(variance + eps), as the kernels use them.
    func normalizer(eps: Double) -> (mean: Float, rstd: Double) { (Float(mean), 1 / (variance + eps).squareRoot()) }
}

@inline(__always) func load16(_ p: UnsafePointer<Float>, _ i: Int) -> SIMD16<Float> {
    UnsafeRawPointer(p + i).loadUnaligned(as: SIMD16<Float>.self)
}

// The sums the norms take, over one plane: four independent float vector accumulators (one add chain would wait on
// the add latency), flushed to Float64 every 1024 terms, so long sums stay accurate at vector speed, in an order
// that depends on the count only (deterministic). Plain loops, one per sum: the per-vector closures of one generic
// sum were not inlined and cost a call per 16 terms.

/// Σ x[i] for i in 0..<n.
@inline(__always) func planeSum(_ x: UnsafePointer<Float>, count n: Int) -> Double {
    var total = 0.0, i = 0
    while n - i >= 16 {
        let blockEnd = i + Swift.min(1024, (n - i) & ~15)
        var a = SIMD16<Float>(), b = a, c = a, d = a
        while blockEnd - i >= 64 {
            a += load16(x, i); b += load16(x, i + 16); c += load16(x, i + 32); d += load16(x, i + 48); i += 64
        }
        while i < blockEnd { a += load16(x, i); i += 16 }
        total += Double(((a + b) + (c + d)).sum())
    }
    while i < n { total += Double(x[i]); i += 1 }
    return total
}

/// Σ (x[i] − mean)² for i in 0..<n.
@inline(__always) func planeSquares(_ x: UnsafePointer<Float>, count n: Int, mean: Float) -> Double {
    var total = 0.0, i = 0
    @inline(__always) func centred(_ i: Int) -> SIMD16<Float> { load16(x, i) - mean }
    while n - i >= 16 {
        let blockEnd = i + Swift.min(1024, (n - i) & ~15)
        var a = SIMD16<Float>(), b = a, c = a, d = a
        while blockEnd - i >= 64 {
            let u = centred(i), v = centred(i + 16), w = centred(i + 32), z = centred(i + 48)
            a = a.addingProduct(u, u); b = b.addingProduct(v, v); c = c.addingProduct(w, w); d = d.addingProduct(z, z)
            i += 64
        }
        while i < blockEnd { let u = centred(i); a = a.addingProduct(u, u); i += 16 }
        total += Double(((a + b) + (c + d)).sum())
    }
    while i < n { let u = x[i] - mean; total += Double(u * u); i += 1 }
    return total
}

/// Σ g[i] and Σ g[i]·(x[i] − mean) for i in 0..<n: the per-plane sums of the backward.
@inline(__always) func planeGradientSums(_ g: UnsafePointer<Float>, _ x: UnsafePointer<Float>, count n: Int,
                                         mean: Float) -> PlaneLayout.GradientSums {
    var sumG = 0.0, sumGX = 0.0, i = 0
    while n - i >= 16 {
        let blockEnd = i + Swift.min(1024, (n - i) & ~15)
        var a = SIMD16<Float>(), b = a, c = a, d = a
        while blockEnd - i >= 32 {
            let u = load16(g, i), v = load16(g, i + 16)
            a += u; b += v
            c = c.addingProduct(u, load16(x, i) - mean); d = d.addingProduct(v, load16(x, i + 16) - mean)
            i += 32
        }
        while i < blockEnd { let u = load16(g, i); a += u; c = c.addingProduct(u, load16(x, i) - mean); i += 16 }
        sumG += Double((a + b).sum()); sumGX += Double((c + d).sum())
    }
    while i < n { sumG += Double(g[i]); sumGX += Double(g[i] * (x[i] - mean)); i += 1 }
    return (sumG, sumGX)
}

/// An activation applied to the normalised, affine output inside the norm op.
public enum NormActivation: String, Hashable, Sendable {
    case identity, silu

    var opSuffix: String { self == .identity ? "" : "_" + rawValue }

    /// The output over one plane of n elements: act((x − mean)·scale + shift).
    @inline(__always) func apply(x: UnsafePointer<Float>, count n: Int, mean: Float, scale: Float, shift: Float,
                                 into y: UnsafeMutablePointer<Float>) {
        switch self {
        // A scalar loop (vectorised by the compiler) is faster here than `vectorMap`'s 16-lane steps.
        case .identity: for i in 0..<n { y[i] = shift.addingProduct(x[i] - mean, scale) }
        case .silu:
            if AVX512GEMM.isSupported {
                AVX512Exponentials.normSiLU(x, count: n, mean: mean, scale: scale, shift: shift, into: y)
            } else {
                normSiLU(x, count: n, mean: mean, scale: scale, shift: shift, into: y)
            }
        }
    }

    /// The cotangent before the activation over one plane: dy·act'(ŷ) with ŷ = (x − mean)·scale + shift, written
    /// to `scratch`; dy itself for the identity.
    @inline(__always) func gradient(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, count n: Int, mean: Float,
                                    scale: Float, shift: Float, scratch: UnsafeMutablePointer<Float>) -> UnsafePointer<Float> {
        switch self {
        case .identity: return dy
        case .silu:
            if AVX512GEMM.isSupported {
                AVX512Exponentials.normSiLUGradient(x, dy, count: n, mean: mean, scale: scale, shift: shift,
                                                    into: scratch)
            } else {
                normSiLUGradient(x, dy, count: n, mean: mean, scale: scale, shift: shift, into: scratch)
            }
            return UnsafePointer(scratch)
        }
    }

    /// Σg and Σg·(x − mean) over one plane, with g as `gradient` gives it (in `scratch` after an activation): the
    /// sums the backward takes per plane, in one pass over g and x.
    @inline(__always) func gradientSums(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, count n: Int, mean: Float,
                                        scale: Float, shift: Float,
                                        scratch: UnsafeMutablePointer<Float>) -> PlaneLayout.GradientSums {
        let g = gradient(x: x, dy: dy, count: n, mean: mean, scale: scale, shift: shift, scratch: scratch)
        return planeGradientSums(g, x, count: n, mean: mean)
    }
}

/// Checks that a per-channel vector (weight, bias, running statistics) has shape [C].
func checkChannelVector(_ shape: [Int], _ what: String, channels: Int) throws(ShapeError) {
    guard shape == [channels] else { throw ShapeError("\(what) must have shape [\(channels)], got \(describe(shape))") }
}

/// y = act((x − mean)/sqrt(var + eps)·weight[c] + bias[c]) for x [N, C, spatial…], weight [C], bias [C], with the
/// statistics taken as `statistics` says (biased variance).
public struct ChannelNorm: Operation {
    public let statistics: NormStatistics
    public let eps: Float
    public let activation: NormActivation
    public init(_ statistics: NormStatistics, eps: Float, activation: NormActivation = .identity) {
        self.statistics = statistics; self.eps = eps; self.activation = activation
    }

    public var name: String { statistics.opName + activation.opSuffix }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        try PlaneLayout.check(inputs[0], statistics)
        try checkChannelVector(inputs[1], "weight", channels: inputs[0][1])
        try checkChannelVector(inputs[2], "bias", channels: inputs[0][1])
        return inputs[0]
    }
    public func cpuForward(_ args: CPUArgs) {
        let layout = PlaneLayout(args.inputShapes[0], statistics), n = layout.planeSize
        let x = args.inputs[0].baseAddress!, w = args.inputs[1], b = args.inputs[2], y = args.output.baseAddress!
        let eps = Double(eps)
        parallelFor(layout.setCount, grain: layout.setGrain) { sets in
            // Set s is normalised chunk by chunk while the next set's statistics are taken in the same chunk order
            // (the values `moments` gives): its reads from memory overlap the writes of set s.
            guard !sets.isEmpty else { return }
            var next = layout.moments(x, set: sets.lowerBound)
            for s in sets {
                let (m, rstd) = next.normalizer(eps: eps), following = s + 1 < sets.upperBound ? s + 1 : nil
                next = RunningMoments()
                for k in 0..<layout.planesPerSet {
                    let p = layout.plane(k, ofSet: s), c = p % layout.channels, scale = Float(rstd) * w[c]
                    for start in stride(from: 0, to: n, by: PlaneLayout.chunk) {
                        let length = Swift.min(PlaneLayout.chunk, n - start)
                        if let following {
                            _ = next.add(x + layout.plane(k, ofSet: following) * n + start, count: length)
                        }
                        activation.apply(x: x + p * n + start, count: length, mean: m, scale: scale, shift: b[c],
                                         into: y + p * n + start)
                    }
                }
            }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] {
        let x = ctx.inputs[0], w = ctx.inputs[1], b = ctx.inputs[2], c = x.shape[1], dy = ctx.cotangent
        // After an activation the backward recomputes the pre-activation x̂·w + b, so it takes the bias too.
        let packed = Tensor.record(ChannelNormBackward(statistics, eps: eps, activation: activation),
                                   [x, w, dy] + (activation == .identity ? [] : [b]))
        let count = x.count
        return [packed.slice(axis: 0, start: 0, end: count).reshape(x.shape),
                packed.slice(axis: 0, start: count, end: count + c),
                packed.slice(axis: 0, start: count + c, end: count + 2 * c)]
    }
}

/// The gradients of `ChannelNorm` from x, weight, dy (and bias, after an activation), packed flat as [dx,
/// dweight, dbias]. Per statistics set of M elements, with x̂ = (x − mean)·rstd and g = dy·act'(x̂·w + b):
/// dx = rstd·(w·g − mean(w·g) − x̂·mean(w·g·x̂)); per channel, dweight = Σ g·x̂ and dbias = Σ g
/// over the batch and positions. Both need each plane's Σg and Σg·(x − mean), which one pass over x and dy
/// gives (the set stays cached for the pass that writes dx): one op instead of one for dx and one for the
/// parameters saves a pass over x and dy (issue 20).
public struct ChannelNormBackward: Operation {
    public let statistics: NormStatistics
    public let eps: Float
    public let activation: NormActivation
    public init(_ statistics: NormStatistics, eps: Float, activation: NormActivation = .identity) {
        self.statistics = statistics; self.eps = eps; self.activation = activation
    }

    public var name: String { statistics.opName + activation.opSuffix + "_backward" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        try PlaneLayout.check(inputs[0], statistics)
        try checkChannelVector(inputs[1], "weight", channels: inputs[0][1])
        guard inputs[2] == inputs[0] else { throw ShapeError("dy \(describe(inputs[2])) differs from x \(describe(inputs[0]))") }
        if activation != .identity { try checkChannelVector(inputs[3], "bias", channels: inputs[0][1]) }
        return [Shape.count(inputs[0]) + 2 * inputs[0][1]]
    }
    public func cpuForward(_ args: CPUArgs) {
        let layout = PlaneLayout(args.inputShapes[0], statistics), n = layout.planeSize, channels = layout.channels
        let x = args.inputs[0].baseAddress!, w = args.inputs[1], dy = args.inputs[2].baseAddress!
        let b = activation == .identity ? nil : args.inputs[3], dx = args.output.baseAddress!, eps = Double(eps)
        let parameterGradients = dx + layout.batch * channels * n, activation = activation
        // Each plane's rstd·Σg·(x − mean) and Σg; then per channel the planes' sums over the batch in order, so
        // the result does not depend on the split over cores.
        var planeSums = [Double](repeating: 0, count: 2 * layout.batch * channels)
        planeSums.withUnsafeMutableBufferPointer { planeSums in
            parallelFor(layout.setCount, grain: layout.setGrain) { sets in
                // Holds g of one set when there is an activation, and each plane's sums.
                let scratch = UnsafeMutablePointer<Float>.allocate(
                    capacity: activation == .identity ? 0 : layout.setSize)
                let sums = UnsafeMutablePointer<PlaneLayout.GradientSums>.allocate(capacity: layout.planesPerSet)
                defer { scratch.deallocate(); sums.deallocate() }
                for s in sets {
                    let (m, rstd) = layout.gradientSums(x: x, dy: dy, set: s, eps: eps, activation: activation,
                                                        affine: b.map { (w, $0) }, scratch: scratch, sums: sums)
                    // Σ w·g and Σ w·g·(x − mean) over the set.
                    var wdy = 0.0, wdyx = 0.0
                    for k in 0..<layout.planesPerSet {
                        let p = layout.plane(k, ofSet: s), wc = Double(w[p % channels])
                        wdy += wc * sums[k].g; wdyx += wc * sums[k].gx
                        planeSums[2 * p] = rstd * sums[k].gx; planeSums[2 * p + 1] = sums[k].g
                    }
                    let size = Double(layout.setSize)
                    let meanTerm = Float(rstd * wdy / size), slope = Float(rstd * rstd * rstd * wdyx / size)
                    for k in 0..<layout.planesPerSet {
                        let p = layout.plane(k, ofSet: s), xp = x + p * n, dxp = dx + p * n
                        let dyp = activation == .identity ? dy + p * n : UnsafePointer(scratch + k * n)
                        // rstd·w·g − meanTerm − (x − mean)·slope as two multiply-adds.
                        let scale = Float(rstd) * w[p % channels]
                        for i in 0..<n {
                            dxp[i] = (-meanTerm).addingProduct(xp[i] - m, -slope).addingProduct(dyp[i], scale)
                        }
                    }
                }
            }
            for c in 0..<channels {
                var dweight = 0.0, dbias = 0.0
                for b in 0..<layout.batch {
                    dweight += planeSums[2 * (b * channels + c)]; dbias += planeSums[2 * (b * channels + c) + 1]
                }
                parameterGradients[c] = Float(dweight); parameterGradients[channels + c] = Float(dbias)
            }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] { noGradient(ctx) }
}

/// Per-channel mean and unbiased variance of x [N, C, spatial…] over the batch and positions, packed as [2, C],
/// for updating BatchNorm's running statistics. No gradient: running statistics are buffers, not activations.
public struct BatchStatistics: Operation {
    public init() {}
    public var name: String { "batch_norm_statistics" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        try PlaneLayout.check(inputs[0], .batch)
        return [2, inputs[0][1]]
    }
    public func cpuForward(_ args: CPUArgs) {
        let layout = PlaneLayout(args.inputShapes[0], .batch), x = args.inputs[0].baseAddress!, out = args.output
        let correction = Double(layout.setSize) / Double(layout.setSize - 1)
        parallelFor(layout.channels, grain: layout.setGrain) { range in
            for c in range {
                let moments = layout.moments(x, set: c)
                out[c] = Float(moments.mean); out[layout.channels + c] = Float(moments.variance * correction)
            }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] { noGradient(ctx) }
}

// MARK: OpenCL (Kernels/norm.cl): one work-group of 64 work-items (NORM_LOCAL) per statistics set (or per channel
// for the parameter gradients), single-pass statistics with chunked Chan merges.

extension PlaneLayout {
    /// The `SetLayout` struct of Kernels/norm.cl: groups (0 for batch statistics), batch, channels, plane, per_set.
    var kernelDescriptor: [Int32] {
        let groups: Int
        switch statistics {
        case .groups(let g): groups = g
        case .batch: groups = 0
        }
        return [groups, batch, channels, planeSize, planesPerSet].map { Int32($0) }
    }

    /// One `norm.cl` kernel with one work-group per item (set or channel).
    func launch(_ name: String, _ args: [KernelArgument], groups: Int) -> [KernelLaunch] {
        [.kernel(file: "norm", name: name, args: args, global: [groups * 64], local: [64])]
    }
}

extension ChannelNorm: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let layout = PlaneLayout(inputShapes[0], statistics)
        return layout.launch("channel_norm" + activation.opSuffix, [.input(0), .input(1), .input(2), .output, .ints(layout.kernelDescriptor), .float(eps)],
                             groups: layout.setCount)
    }
}

extension ChannelNormBackward: DeviceOperation {
    /// dx by one work-group per set; then set statistics (mean, rstd) into a scratch buffer, and one work-group per
    /// channel gathers dweight and dbias into the output past dx.
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let layout = PlaneLayout(inputShapes[0], statistics), stats = KernelArgument.scratch(index: 0, count: 2 * layout.setCount)
        let name = "channel_norm" + activation.opSuffix, silu = activation != .identity
        let dxInputs: [KernelArgument] = [.input(0), .input(1), .input(2)] + (silu ? [.input(3)] : [])
        let parameterInputs: [KernelArgument] = [.input(0), .input(2)] + (silu ? [.input(1), .input(3)] : [])
        return layout.launch(name + "_backward_input",
                             dxInputs + [.output, .ints(layout.kernelDescriptor), .float(eps)], groups: layout.setCount)
            + layout.launch("norm_statistics", [.input(0), stats, .ints(layout.kernelDescriptor), .float(eps), .int(0)],
                            groups: layout.setCount)
            + layout.launch(name + "_backward_params",
                            parameterInputs + [stats, .outputPart(from: Shape.count(inputShapes[0])),
                                               .ints(layout.kernelDescriptor), .int(Int32(layout.setCount))],
                            groups: layout.channels)
    }
}

extension BatchStatistics: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let layout = PlaneLayout(inputShapes[0], .batch)
        return layout.launch("norm_statistics", [.input(0), .output, .ints(layout.kernelDescriptor), .float(0), .int(1)],
                             groups: layout.setCount)
    }
}

// MARK: public API

extension Tensor {
    /// GroupNorm of x [N, C, spatial…]: statistics per sample over groups of C/groups channels (C must divide),
    /// then the per-channel affine (weight [C] defaults to ones, bias [C] to zeros) and `activation`. One fused op.
    public func groupNorm(groups: Int, weight: Tensor? = nil, bias: Tensor? = nil, eps: Float = 1e-5,
                          activation: NormActivation = .identity) -> Tensor {
        channelNorm(.groups(groups), weight: weight, bias: bias, eps: eps, activation: activation)
    }

    /// Training-mode BatchNorm of x [N, C, spatial…]: normalises with this batch's per-channel mean and biased
    /// variance over (N, spatial), gradients flowing through the statistics. Update running statistics from
    /// `batchStatistics()`.
    public func batchNormTraining(weight: Tensor? = nil, bias: Tensor? = nil, eps: Float = 1e-5) -> Tensor {
        channelNorm(.batch, weight: weight, bias: bias, eps: eps)
    }

    /// This batch's per-channel mean and unbiased variance over (N, spatial), each [C], without gradient. With
    /// PyTorch's momentum convention: running = (1 − momentum)·running + momentum·statistic.
    public func batchStatistics() -> (mean: Tensor, variance: Tensor) {
        let stats = Tensor.record(BatchStatistics(), [self]), c = stats.shape.last ?? 0
        return (stats.slice(axis: 0, start: 0, end: 1).reshape([c]), stats.slice(axis: 0, start: 1, end: 2).reshape([c]))
    }

    /// Eval-mode BatchNorm of x [N, C, spatial…] with running statistics (mean, variance [C]): a per-channel
    /// affine x·s + t with s = weight/sqrt(variance + eps), t = bias − mean·s.
    public func batchNorm(mean: Tensor, variance: Tensor, weight: Tensor? = nil, bias: Tensor? = nil,
                          eps: Float = 1e-5) -> Tensor {
        guard rank >= 2 else { return .invalid("batch_norm_eval", "needs an [N, C, …] input, got \(describe(shape))") }
        let c = shape[1]
        for (what, t) in [("mean", mean), ("variance", variance), ("weight", weight), ("bias", bias)] {
            guard let t else { continue }
            do { try checkChannelVector(t.shape, what, channels: c) } catch {
                return .invalid("batch_norm_eval", "\(error.message) for x \(describe(shape))")
            }
        }
        var scale = (variance + eps).rsqrt()
        if let weight { scale = scale * weight }
        var shift = -(mean * scale)
        if let bias { shift = shift + bias }
        let perChannel = [1, c] + [Int](repeating: 1, count: rank - 2)
        return self * scale.reshape(perChannel) + shift.reshape(perChannel)
    }

    /// LayerNorm over the trailing `lastAxes` axes (PyTorch's normalized_shape = those axes), with per-element
    /// weight and bias of that trailing shape. Normalisation is the group-norm op with one group per row.
    public func layerNorm(lastAxes: Int = 1, weight: Tensor? = nil, bias: Tensor? = nil, eps: Float = 1e-5) -> Tensor {
        guard lastAxes >= 1, lastAxes <= rank else {
            return .invalid("layer_norm", "cannot normalise the last \(lastAxes) axes of \(describe(shape))")
        }
        let trailing = Array(shape.suffix(lastAxes)), rowSize = Shape.count(trailing)
        for (what, t) in [("weight", weight), ("bias", bias)] {
            guard let t, t.shape != trailing else { continue }
            return .invalid("layer_norm", "\(what) must have shape \(describe(trailing)), got \(describe(t.shape))")
        }
        let rows = Shape.count(shape) / Swift.max(rowSize, 1)
        var y = reshape([rows, 1, rowSize])
            .channelNorm(.groups(1), weight: nil, bias: nil, eps: eps)
            .reshape(shape)
        let broadcastShape = [Int](repeating: 1, count: rank - lastAxes) + trailing
        if let weight { y = y * weight.reshape(broadcastShape) }
        if let bias { y = y + bias.reshape(broadcastShape) }
        return y
    }

    /// x / max(‖x‖₂, eps) along `axis` (F.normalize). Written as x / sqrt(max(Σx², eps²)): the same values,
    /// and a zero gradient instead of 0·∞ where the norm is below eps.
    public func l2Normalize(axis: Int, eps: Float = 1e-12) -> Tensor {
        guard axis >= -rank, axis < rank else {
            return .invalid("l2_normalize", "axis \(axis) is out of range for \(describe(shape))")
        }
        return self / square().sum(axes: [axis], keepDims: true).clamp(min: eps * eps).sqrt()
    }

    func channelNorm(_ statistics: NormStatistics, weight: Tensor?, bias: Tensor?, eps: Float,
                     activation: NormActivation = .identity) -> Tensor {
        let c = rank >= 2 ? shape[1] : 0
        return .record(ChannelNorm(statistics, eps: eps, activation: activation), [self, weight ?? .ones([c]), bias ?? .zeros([c])])
    }
}

extension HarnessCatalog {
    static var norm: [HarnessCase] {
        let image = [2, 4, 3, 3]
        let affine: [HarnessCase.Input] = [.normal(image), .normal([4]), .normal([4])]
        return [
            HarnessCase("group_norm.g1", affine) { $0[0].groupNorm(groups: 1, weight: $0[1], bias: $0[2]) },
            HarnessCase("group_norm.g2", affine) { $0[0].groupNorm(groups: 2, weight: $0[1], bias: $0[2]) },
            HarnessCase("group_norm.gc", affine) { $0[0].groupNorm(groups: 4, weight: $0[1], bias: $0[2]) },
            // Shifted input: the statistics must not lose precision to a large mean.
            HarnessCase("group_norm.rank3", [.normal([2, 6, 5])]) { ($0[0] + 20).groupNorm(groups: 3, eps: 1e-3) },
            // Planes of 289 elements: the vector sums with a Float64 flush and a scalar tail.
            HarnessCase("group_norm.wide", [.normal([1, 2, 17, 17])]) { ($0[0] + 3).groupNorm(groups: 1) },
            HarnessCase("group_norm_silu", affine) { $0[0].groupNorm(groups: 2, weight: $0[1], bias: $0[2], activation: .silu) },
            // Partial vector units at plane ends, and a shifted mean.
            HarnessCase("group_norm_silu.wide", [.normal([2, 2, 17, 17]), .normal([2]), .normal([2])]) {
                ($0[0] + 3).groupNorm(groups: 1, weight: $0[1], bias: $0[2], activation: .silu)
            },
            // Planes of 1155 elements (partial units, rows not aligned for streaming stores) in sets of several
            // chunks of the OpenCL kernels' sums, and a shifted mean.
            HarnessCase("group_norm_silu.large", [.normal([1, 2, 33, 35]), .normal([2]), .normal([2])]) {
                ($0[0] + 3).groupNorm(groups: 1, weight: $0[1], bias: $0[2], activation: .silu)
            },
            HarnessCase("batch_norm.train.large", [.normal([3, 2, 30, 31]), .normal([2]), .normal([2])]) {
                $0[0].batchNormTraining(weight: $0[1], bias: $0[2])
            },
            HarnessCase("batch_norm.train", [.normal([3, 4, 2, 3]), .normal([4]), .normal([4])]) {
                $0[0].batchNormTraining(weight: $0[1], bias: $0[2])
            },
            HarnessCase("batch_norm.train.no_affine", [.normal([4, 3, 5])]) { $0[0].batchNormTraining(eps: 1e-3) },
            HarnessCase("batch_norm.statistics", [.normal([3, 4, 2, 3])], frozen: [0]) { x in
                let (mean, variance) = x[0].batchStatistics()
                return Tensor.stack([mean, variance])
            },
            HarnessCase("batch_norm.eval", [.normal(image), .normal([4]), .uniform([4], 0.5, 2), .normal([4]), .normal([4])]) {
                $0[0].batchNorm(mean: $0[1], variance: $0[2], weight: $0[3], bias: $0[4])
            },
            HarnessCase("layer_norm", [.normal([2, 3, 8]), .normal([8]), .normal([8])]) {
                $0[0].layerNorm(weight: $0[1], bias: $0[2])
            },
            HarnessCase("layer_norm.two_axes", [.normal([2, 3, 4, 5]), .normal([4, 5]), .normal([4, 5])]) {
                $0[0].layerNorm(lastAxes: 2, weight: $0[1], bias: $0[2])
            },
            HarnessCase("l2_normalize", [.normal([2, 4, 3])]) { $0[0].l2Normalize(axis: 1) },
            HarnessCase("l2_normalize.last", [.normal([3, 5])]) { $0[0].l2Normalize(axis: -1) },
        ]
    }
}

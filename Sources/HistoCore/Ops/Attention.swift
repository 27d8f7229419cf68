import Foundation
import HistoAVX512

// Attention: fused scaled-dot-product attention (self or cross, optional additive logits bias) with a fused
// backward; Swin-style window partition/merge and the relative-position-bias gather; linear attention.

/// Sizes of one attention call: q [B, H, N, D], k [B, H, M, D], v [B, H, M, Dv], bias [B or 1, H or 1, N, M].
struct AttentionDims {
    let batch: Int, heads: Int, queries: Int, keys: Int, depth: Int, valueDepth: Int
    /// Bias batch and head sizes (each 1 or the full size); nil without a bias.
    let biasBatch: Int?, biasHeads: Int?

    init(q: [Int], k: [Int], v: [Int], bias: [Int]?) throws(ShapeError) {
        guard q.count == 4, k.count == 4, v.count == 4 else {
            throw ShapeError("q, k, v must be [B, H, tokens, depth], got \(describe(q)), \(describe(k)), \(describe(v))")
        }
        guard k[0] == q[0], v[0] == q[0], k[1] == q[1], v[1] == q[1] else {
            throw ShapeError("batch and head axes of q \(describe(q)), k \(describe(k)), v \(describe(v)) differ")
        }
        guard k[3] == q[3] else { throw ShapeError("q depth \(q[3]) differs from k depth \(k[3])") }
        guard v[2] == k[2] else { throw ShapeError("k has \(k[2]) tokens, v has \(v[2])") }
        guard (q + k + v).allSatisfy({ $0 > 0 }) else {
            throw ShapeError("empty axis in q \(describe(q)), k \(describe(k)), v \(describe(v))")
        }
        batch = q[0]; heads = q[1]; queries = q[2]; keys = k[2]; depth = q[3]; valueDepth = v[3]
        if let bias {
            guard bias.count == 4, bias[0] == 1 || bias[0] == batch, bias[1] == 1 || bias[1] == heads,
                  bias[2] == queries, bias[3] == keys else {
                throw ShapeError("bias \(describe(bias)) does not broadcast to [\(batch), \(heads), \(queries), \(keys)]")
            }
            biasBatch = bias[0]; biasHeads = bias[1]
        } else {
            biasBatch = nil; biasHeads = nil
        }
    }

    var items: Int { batch * heads }
    var scores: Int { queries * keys }
    /// Whether several (batch, head) items read the same bias slice (their bias gradients must be summed).
    var biasIsShared: Bool { (biasBatch ?? batch) * (biasHeads ?? heads) < items }
    var biasCount: Int { (biasBatch ?? 0) * (biasHeads ?? 0) * scores }
    /// Element offset of the bias slice that item (b·H + h) adds.
    func biasOffset(item: Int) -> Int {
        let b = biasBatch == 1 ? 0 : item / heads, h = biasHeads == 1 ? 0 : item % heads
        return (b * (biasHeads ?? 1) + h) * scores
    }

    /// The backward runs items in parallel with single-threaded GEMMs (parallelSingleThreadedGemms: BLAS-threaded
    /// GEMMs inside item-parallel loops oversubscribe the cores), a fixed run of items per chunk; with fewer items
    /// than cores they run one after another with multithreaded GEMMs.
    var chunkCount: Int { items >= CPUThreads.count ? Swift.min(items, CPUThreads.count * 4) : 1 }
    func items(ofChunk c: Int) -> Range<Int> { (c * items / chunkCount)..<((c + 1) * items / chunkCount) }
}

// MARK: CPU kernels: blocked ("flash") attention, FlashAttention (Dao et al. 2022) on the CPU. Scores are made one
// block at a time and never stored whole; every product is an A·B GEMM whose columns are queries, keys or the
// depth, which `gemm` runs on HistoAVX512's kernels.

extension AttentionDims {
    /// Queries per block of the forward: two 48-column blocks of HistoAVX512's A·B kernel, a whole number of 16 lanes.
    static let queryBlock = 96
    /// Keys per block of the forward's online softmax: Vᵀ·Pᵀ then reads its 128 × 48 strips of Pᵀ (24 KB) from
    /// L1.
    static let keyBlock = 128

    var queryBlocks: Int { (queries + Self.queryBlock - 1) / Self.queryBlock }
    func queries(ofBlock block: Int) -> Range<Int> {
        (block * Self.queryBlock)..<Swift.min(queries, (block + 1) * Self.queryBlock)
    }
    /// Floats of scratch per forward worker: (scale·Q)ᵀ, a score block, Oᵀ and three lane-wise row statistics.
    var forwardScratch: Int { (depth + Self.keyBlock + valueDepth + 3) * Self.queryBlock }

    /// Output rows `rows` of `item` by FlashAttention's forward with an online softmax over key blocks. The blocks are
    /// transposed, Sᵀ = K·(scale·Q)ᵀ [keys × queries] (plus the bias), so that each lane holds one query: the
    /// running maximum and sum are lane-wise, without horizontal reductions, and Oᵀ [Dv × queries] += Vᵀ·Pᵀ is
    /// an A·B product too. Queries are padded to 16 lanes with zero rows of Q, whose outputs are never written.
    func forward(item: Int, rows: Range<Int>, q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                 bias: UnsafePointer<Float>?, scale: Float, out: UnsafeMutablePointer<Float>,
                 scratch: UnsafeMutablePointer<Float>) {
        let n = queries, m = keys, d = depth, dv = valueDepth, width = (rows.count + 15) / 16 * 16
        let qT = scratch, sT = qT + d * width, oT = sT + Self.keyBlock * width
        let top = oT + dv * width, total = top + width, rescale = total + width
        let qi = q + (item * n + rows.lowerBound) * d
        transpose(qi, rows: rows.count, columns: d, scale: scale, into: qT, width: width)
        top.update(repeating: -.infinity, count: width)
        total.update(repeating: 0, count: width)
        for k0 in stride(from: 0, to: m, by: Self.keyBlock) {
            let bk = Swift.min(Self.keyBlock, m - k0)
            gemm(false, false, bk, width, d, k + (item * m + k0) * d, d, qT, width, 0, sT, width)
            if let bias {
                let block = bias + biasOffset(item: item) + rows.lowerBound * m + k0
                for i in 0..<rows.count { for j in 0..<bk { sT[j * width + i] += block[i * m + j] } }
            }
            for lane in stride(from: 0, to: width, by: 16) {
                let old = load16(top + lane), blockTop = columnMax(sT + lane, rows: bk, stride: width)
                let new = old.replacing(with: blockTop, where: blockTop .> old)
                // While a query's logits are all −∞ (masked), subtract 0: its weights stay 0 instead of NaN.
                let reference = new.replacing(with: 0, where: new .== -.infinity)
                let factor = softmaxExp16(old - reference)
                let sum = exponentiate(sT + lane, rows: bk, stride: width, minus: reference)
                store16(load16(total + lane) * factor + sum, total + lane)
                store16(new, top + lane)
                store16(factor, rescale + lane)
            }
            if k0 > 0 {
                for e in 0..<dv {
                    let row = oT + e * width
                    for lane in stride(from: 0, to: width, by: 16) {
                        store16(load16(row + lane) * load16(rescale + lane), row + lane)
                    }
                }
            }
            gemm(true, false, dv, width, bk, v + (item * m + k0) * dv, dv, sT, width, k0 == 0 ? 0 : 1, oT, width)
        }
        let o = out + (item * n + rows.lowerBound) * dv
        for i in 0..<rows.count {
            let inverse = 1 / total[i]
            for e in 0..<dv { o[i * dv + e] = oT[e * width + i] * inverse }
        }
    }

    /// Queries per block of the backward: P and dS blocks [block × keys] of about 384 KB each stay in L2.
    var backwardQueryBlock: Int { Swift.max(16, Swift.min(96, 96 * 1024 / keys / 16 * 16)) }
    /// The row stride of the backward's key-wide blocks (Kᵀ, Vᵀ, dKᵀ, dVᵀ, P, dS): the keys and 16 floats
    /// more, so that the rows a GEMM tile reads together do not fall into the same L1 cache sets when the keys
    /// are a multiple of 1024 (rows 4 KB apart).
    var keyStride: Int { keys + 16 }
    /// Floats of scratch per backward worker: Kᵀ, Vᵀ, the dKᵀ and dVᵀ sums, a P and a dS block, and scale·K.
    var backwardScratch: Int { (2 * (depth + valueDepth) + 2 * backwardQueryBlock) * keyStride + depth * keys }

    /// The gradients of `item`, a block of queries at a time: P = softmax(scale·Q_b·Kᵀ + bias) by whole rows
    /// (exact: no statistics carried from the forward), dP = dO_b·Vᵀ, dS = P∘(dP − rowsum(dO_b∘O_b)), dQ_b =
    /// dS·(scale·K), and the key-side sums dVᵀ += dO_bᵀ·P, dKᵀ += Q_bᵀ·dS over the blocks in order (the
    /// same sums however the items are spread). With Kᵀ and Vᵀ made once per item, these products have the keys as
    /// their wide axis; dQ's has the depth (HistoAVX512's strips of 32 and 16 columns). dS rows go to
    /// `biasGradient` (added when `accumulate`, for a bias slice that several items share).
    func backward(item: Int, q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                  o: UnsafePointer<Float>, dO: UnsafePointer<Float>, bias: UnsafePointer<Float>?, scale: Float,
                  dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>,
                  dv dvOut: UnsafeMutablePointer<Float>,
                  biasGradient: UnsafeMutablePointer<Float>?, accumulate: Bool, scratch: UnsafeMutablePointer<Float>) {
        let n = queries, m = keys, d = depth, dv = valueDepth, block = backwardQueryBlock, ld = keyStride
        let qi = q + item * n * d, ki = k + item * m * d, oi = o + item * n * dv, dOi = dO + item * n * dv
        let kT = scratch, vT = kT + d * ld, dkT = vT + dv * ld, dvT = dkT + d * ld, p = dvT + dv * ld
        let ds = p + block * ld, kScaled = ds + block * ld
        transpose(ki, rows: m, columns: d, scale: scale, into: kT, width: ld)
        transpose(v + item * m * dv, rows: m, columns: dv, scale: 1, into: vT, width: ld)
        for i in 0..<(m * d) { kScaled[i] = scale * ki[i] }
        for q0 in stride(from: 0, to: n, by: block) {
            let rows = Swift.min(block, n - q0), first: Float = q0 == 0 ? 0 : 1
            gemm(false, false, rows, m, d, qi + q0 * d, d, kT, ld, 0, p, ld)
            let biasRows = bias.map { $0 + biasOffset(item: item) + q0 * m }
            for r in 0..<rows {
                let pr = p + r * ld
                if let biasRows { for j in 0..<m { pr[j] += biasRows[r * m + j] } }
                softmaxRow(pr, m)
            }
            gemm(false, false, rows, m, dv, dOi + q0 * dv, dv, vT, ld, 0, ds, ld)
            for r in 0..<rows {
                var dot: Float = 0
                for e in 0..<dv { dot += dOi[(q0 + r) * dv + e] * oi[(q0 + r) * dv + e] }
                let pr = p + r * ld, dsr = ds + r * ld
                for j in 0..<m { dsr[j] = pr[j] * (dsr[j] - dot) }
            }
            gemm(true, false, dv, m, rows, dOi + q0 * dv, dv, p, ld, first, dvT, ld)
            gemm(true, false, d, m, rows, qi + q0 * d, d, ds, ld, first, dkT, ld)
            gemm(false, false, rows, d, m, ds, ld, kScaled, d, 0, dq + (item * n + q0) * d, d)
            if let biasGradient {
                let target = biasGradient + biasOffset(item: item) + q0 * m
                for r in 0..<rows {
                    let row = target + r * m, dsr = ds + r * ld
                    if accumulate { for j in 0..<m { row[j] += dsr[j] } } else { row.update(from: dsr, count: m) }
                }
            }
        }
        transpose(dkT, rows: d, columns: m, stride: ld, scale: scale, into: dk + item * m * d, width: d)
        transpose(dvT, rows: dv, columns: m, stride: ld, scale: 1, into: dvOut + item * m * dv, width: dv)
    }
}

/// t[c·width + r] = scale·x[r·stride + c] for r < rows, and 0 for rows ≤ r < width: x [rows × columns] (rows
/// `stride` apart, by default `columns`) transposed into the first `rows` columns of t [columns × width].
func transpose(_ x: UnsafePointer<Float>, rows: Int, columns: Int, stride: Int? = nil, scale: Float,
               into t: UnsafeMutablePointer<Float>, width: Int) {
    let stride = stride ?? columns
    for c in 0..<columns {
        let row = t + c * width
        for r in 0..<rows { row[r] = scale * x[r * stride + c] }
        (row + rows).update(repeating: 0, count: width - rows)
    }
}

/// HistoAVX512's `lanewiseMaximum`, on its AVX-512 copy where the CPU has AVX-512.
@inline(__always) func columnMax(_ p: UnsafePointer<Float>, rows: Int, stride: Int) -> SIMD16<Float> {
    AVX512GEMM.isSupported ? AVX512Exponentials.maximum(p, rows: rows, stride: stride)
        : lanewiseMaximum(p, rows: rows, stride: stride)
}

/// HistoAVX512's `exponentiateLanewise` (the same bits either way), on its AVX-512 copy where the CPU has AVX-512.
@inline(__always) func exponentiate(_ p: UnsafeMutablePointer<Float>, rows: Int, stride: Int,
                                    minus reference: SIMD16<Float>) -> SIMD16<Float> {
    AVX512GEMM.isSupported ? AVX512Exponentials.exponentiate(p, rows: rows, stride: stride, minus: reference)
        : exponentiateLanewise(p, rows: rows, stride: stride, minus: reference)
}

/// Softmax of m logits in place, max-subtracted, 16 lanes at a time (the tail padded with −∞).
@inline(__always) func softmaxRow(_ r: UnsafeMutablePointer<Float>, _ m: Int) {
    let full = m - m % 16
    var top = columnMax(r, rows: full / 16, stride: 16).max()
    for j in full..<m { top = Swift.max(top, r[j]) }
    var sum16 = exponentiate(r, rows: full / 16, stride: 16, minus: SIMD16(repeating: top))
    if full < m {
        var tail = SIMD16<Float>(repeating: -.infinity)
        for t in 0..<(m - full) { tail[t] = r[full + t] }
        let e = softmaxExp16(tail - top)
        for t in 0..<(m - full) { r[full + t] = e[t] }
        sum16 += e
    }
    let inverse = 1 / sum16.sum()
    for j in 0..<m { r[j] *= inverse }
}

/// softmax(scale·Q·Kᵀ + bias)·V for q [B, H, N, D], k [B, H, M, D], v [B, H, M, Dv] and an optional fourth input,
/// an additive logits bias [B or 1, H or 1, N, M] → [B, H, N, Dv]. On the CPU: blocks of queries against blocks of
/// keys with an online softmax (`AttentionDims.forward`), spread over the cores by (batch, head, query block).
public struct ScaledDotProductAttention: Operation {
    public let scale: Float
    public init(scale: Float) { self.scale = scale }

    public var name: String { "scaled_dot_product_attention" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        guard inputs.count == 3 || inputs.count == 4 else { throw ShapeError("takes q, k, v and an optional bias") }
        let d = try AttentionDims(q: inputs[0], k: inputs[1], v: inputs[2], bias: inputs.count == 4 ? inputs[3] : nil)
        return [d.batch, d.heads, d.queries, d.valueDepth]
    }
    public func cpuForward(_ args: CPUArgs) {
        let s = args.inputShapes
        let d = try! AttentionDims(q: s[0], k: s[1], v: s[2], bias: s.count == 4 ? s[3] : nil)
        let q = args.inputs[0].baseAddress!, k = args.inputs[1].baseAddress!, v = args.inputs[2].baseAddress!
        let bias = s.count == 4 ? args.inputs[3].baseAddress! : nil, out = args.output.baseAddress!, scale = scale
        let blocks = d.queryBlocks
        parallelSingleThreadedGemms(d.items * blocks, scratch: { CPUBackend.shared.pool.take(d.forwardScratch) }) {
            unit, scratch in
            d.forward(item: unit / blocks, rows: d.queries(ofBlock: unit % blocks), q: q, k: k, v: v, bias: bias,
                      scale: scale, out: out, scratch: scratch.pointer)
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] {
        let packed = Tensor.record(ScaledDotProductAttentionBackward(scale: scale),
                                   Array(ctx.inputs[0..<3]) + [ctx.output, ctx.cotangent] + ctx.inputs.dropFirst(3))
        var start = 0
        return ctx.inputs.map { input in
            defer { start += input.count }
            return packed.slice(axis: 0, start: start, end: start + input.count).reshape(input.shape)
        }
    }
}

/// Gradients of `ScaledDotProductAttention` from q, k, v, its output O, dO and the optional bias, packed flat as [dq,
/// dk, dv, dbias]. P is recomputed; dV = Pᵀ·dO, dP = dO·Vᵀ, dS = P∘(dP − rowsum(dO∘O)), dQ = scale·dS·K,
/// dK = scale·dSᵀ·Q, dbias = dS summed over the axes the bias broadcasts along.
public struct ScaledDotProductAttentionBackward: Operation {
    public let scale: Float
    public init(scale: Float) { self.scale = scale }

    public var name: String { "scaled_dot_product_attention_backward" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        guard inputs.count == 5 || inputs.count == 6 else { throw ShapeError("takes q, k, v, out, dout and an optional bias") }
        let d = try AttentionDims(q: inputs[0], k: inputs[1], v: inputs[2], bias: inputs.count == 6 ? inputs[5] : nil)
        let out = [d.batch, d.heads, d.queries, d.valueDepth]
        guard inputs[3] == out, inputs[4] == out else {
            throw ShapeError("out \(describe(inputs[3])) and dout \(describe(inputs[4])) must be \(describe(out))")
        }
        return [inputs[0..<3].map(Shape.count).reduce(0, +) + d.biasCount]
    }
    public func cpuForward(_ args: CPUArgs) {
        let s = args.inputShapes
        let d = try! AttentionDims(q: s[0], k: s[1], v: s[2], bias: s.count == 6 ? s[5] : nil)
        let q = args.inputs[0].baseAddress!, k = args.inputs[1].baseAddress!, v = args.inputs[2].baseAddress!
        let o = args.inputs[3].baseAddress!, dO = args.inputs[4].baseAddress!
        let bias = s.count == 6 ? args.inputs[5].baseAddress! : nil, scale = scale
        let dq = args.output.baseAddress!, dk = dq + d.items * d.queries * d.depth
        let dvOut = dk + d.items * d.keys * d.depth, dbias = dvOut + d.items * d.keys * d.valueDepth
        // A shared bias slice collects dS from several items: each chunk sums into its own partial, and the
        // partials are added in chunk order afterwards (deterministic).
        let chunks = d.chunkCount
        let partials: UnsafeMutablePointer<Float>? = d.biasIsShared ? .allocate(capacity: chunks * d.biasCount) : nil
        partials?.initialize(repeating: 0, count: chunks * d.biasCount)
        defer { partials?.deallocate() }
        parallelSingleThreadedGemms(chunks, scratch: { CPUBackend.shared.pool.take(d.backwardScratch) }) {
            chunk, scratch in
            let biasGradient = bias == nil ? nil : partials.map { $0 + chunk * d.biasCount } ?? dbias
            for item in d.items(ofChunk: chunk) {
                d.backward(item: item, q: q, k: k, v: v, o: o, dO: dO, bias: bias, scale: scale, dq: dq, dk: dk,
                           dv: dvOut, biasGradient: biasGradient, accumulate: partials != nil, scratch: scratch.pointer)
            }
        }
        if let partials {
            parallelFor(d.biasCount) { range in
                for i in range {
                    var sum: Float = 0
                    for chunk in 0..<chunks { sum += partials[chunk * d.biasCount + i] }
                    dbias[i] = sum
                }
            }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] { noGradient(ctx) }
}

/// Swin's relative position index of a w×w window: entry (i, j) of the [w², w²] table, positions row-major, is
/// (rᵢ − rⱼ + w − 1)·(2w − 1) + (cᵢ − cⱼ + w − 1), a row of the [(2w − 1)², heads] bias table.
func relativePositionIndices(window w: Int) -> [Int] {
    let tokens = w * w
    return (0..<(tokens * tokens)).map { ij in
        let i = ij / tokens, j = ij % tokens
        return (i / w - j / w + w - 1) * (2 * w - 1) + (i % w - j % w + w - 1)
    }
}

/// Gathers a relative position bias table [(2w − 1)², heads] into [heads, w², w²]:
/// out[h, i, j] = table[index(i, j), h] with Swin's index (`Tensor.relativePositionIndex`).
public struct RelativePositionBias: Operation {
    public let window: Int
    public init(window: Int) { self.window = window }

    public var name: String { "relative_position_bias" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        let rows = (2 * window - 1) * (2 * window - 1)
        guard window >= 1, inputs[0].count == 2, inputs[0][0] == rows else {
            throw ShapeError("table must be [\(rows), heads] for window \(window), got \(describe(inputs[0]))")
        }
        return [inputs[0][1], window * window, window * window]
    }
    public func cpuForward(_ args: CPUArgs) {
        let heads = args.inputShapes[0][1], index = relativePositionIndices(window: window)
        let table = args.inputs[0], out = args.output
        for h in 0..<heads {
            for (ij, row) in index.enumerated() { out[h * index.count + ij] = table[row * heads + h] }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] {
        [.record(RelativePositionBiasBackward(window: window), [ctx.cotangent])]
    }
}

/// The gradient of `RelativePositionBias`: scatter-adds [heads, w², w²] into the table [(2w − 1)², heads].
public struct RelativePositionBiasBackward: Operation {
    public let window: Int
    public init(window: Int) { self.window = window }

    public var name: String { "relative_position_bias_backward" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        let tokens = window * window
        guard window >= 1, inputs[0].count == 3, inputs[0][1] == tokens, inputs[0][2] == tokens else {
            throw ShapeError("dy must be [heads, \(tokens), \(tokens)] for window \(window), got \(describe(inputs[0]))")
        }
        return [(2 * window - 1) * (2 * window - 1), inputs[0][0]]
    }
    public func cpuForward(_ args: CPUArgs) {
        let heads = args.inputShapes[0][0], index = relativePositionIndices(window: window)
        let dy = args.inputs[0], table = args.output
        table.update(repeating: 0)
        for h in 0..<heads {
            for (ij, row) in index.enumerated() { table[row * heads + h] += dy[h * index.count + ij] }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] { [.record(RelativePositionBias(window: window), [ctx.cotangent])] }
}

// MARK: OpenCL (Kernels/attention.cl): flash-attention style kernels, one work-item per query (or key) row in
// work-groups of 64 rows, the other side streamed through local memory 32 rows by 32 columns at a time.

extension AttentionDims {
    /// Rows per work-group and columns per chunk (ATT_ROWS and ATT_DEPTH in Kernels/attention.cl).
    static let rowsPerGroup = 64, columnsPerChunk = 32, keysPerBlock = 32

    /// The `AttentionShape` struct of Kernels/attention.cl (bias batch 0: no bias).
    var kernelDescriptor: KernelArgument {
        .ints([batch, heads, queries, keys, depth, valueDepth, biasBatch ?? 0, biasHeads ?? 0].map { Int32($0) })
    }

    static func chunks(_ width: Int) -> Int { (width + columnsPerChunk - 1) / columnsPerChunk }

    /// A kernel over work-groups of `rowsPerGroup` rows: range [rows, second, third].
    static func launch(_ name: String, _ args: [KernelArgument], rows: Int, _ second: Int, _ third: Int = 1) -> KernelLaunch {
        .kernel(file: "attention", name: name, args: args, global: [rows, second, third], local: [rowsPerGroup, 1, 1])
    }
}

extension ScaledDotProductAttention: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let s = inputShapes
        let d = try! AttentionDims(q: s[0], k: s[1], v: s[2], bias: s.count == 4 ? s[3] : nil)
        let bias: KernelArgument = s.count == 4 ? .input(3) : .input(0)
        return [AttentionDims.launch("attention_forward", [.input(0), .input(1), .input(2), bias, .output, d.kernelDescriptor, .float(scale)],
                                     rows: d.queries, d.items, AttentionDims.chunks(d.valueDepth))]
    }
}

extension ScaledDotProductAttentionBackward: DeviceOperation {
    /// dq per query block (leaving the row statistics, log-sum-exp and rowsum(dO∘O), in a scratch buffer), then dk
    /// and dv per key block, and the bias gradient gathered per bias element.
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let s = inputShapes
        let d = try! AttentionDims(q: s[0], k: s[1], v: s[2], bias: s.count == 6 ? s[5] : nil)
        let bias: KernelArgument = s.count == 6 ? .input(5) : .input(0)
        let stats = KernelArgument.scratch(index: 0, count: 2 * d.items * d.queries)
        let inputs: [KernelArgument] = [.input(0), .input(1), .input(2), .input(4), bias, stats, .output]
        let dkStart = d.items * d.queries * d.depth, dvStart = dkStart + d.items * d.keys * d.depth
        let dbiasStart = dvStart + d.items * d.keys * d.valueDepth
        let tail: [KernelArgument] = [d.kernelDescriptor, .float(scale)]
        var list: [KernelLaunch] = [
            AttentionDims.launch("attention_backward_query", [.input(0), .input(1), .input(2), .input(3), .input(4), bias, stats, .output] + tail,
                                 rows: d.queries, d.items, AttentionDims.chunks(d.depth)),
            AttentionDims.launch("attention_backward_key", inputs + [.int(Int32(dkStart)), .int(Int32(dvStart))] + tail,
                                 rows: d.keys, d.items, AttentionDims.chunks(Swift.max(d.depth, d.valueDepth))),
        ]
        if let biasBatch = d.biasBatch, let biasHeads = d.biasHeads {
            let keyBlocks = (d.keys + AttentionDims.keysPerBlock - 1) / AttentionDims.keysPerBlock
            list.append(AttentionDims.launch("attention_backward_bias", inputs + [.int(Int32(dbiasStart))] + tail,
                                             rows: d.queries, keyBlocks, biasBatch * biasHeads))
        }
        return list
    }
}

extension RelativePositionBias: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        [elementwiseLaunch("attention", "relative_position_bias", [.input(0), .output, .int(Int32(window)), .int(Int32(inputShapes[0][1]))],
                           count: Shape.count(outputShape))]
    }
}

extension RelativePositionBiasBackward: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        [elementwiseLaunch("attention", "relative_position_bias_backward",
                           [.input(0), .output, .int(Int32(window)), .int(Int32(inputShapes[0][0]))], count: Shape.count(outputShape))]
    }
}

// MARK: public API

extension Tensor {
    /// softmax(scale·q·kᵀ + bias)·v as one fused op. q [B, H, N, D], k [B, H, M, D], v [B, H, M, Dv] (M ≠ N is
    /// cross-attention); bias: additive logits [B or 1, H or 1, N, M] (relative position bias, masks as −∞);
    /// scale defaults to 1/√D. Returns [B, H, N, Dv].
    public static func scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor? = nil,
                                                 scale: Float? = nil) -> Tensor {
        let depth = Float(q.shape.last ?? 1)
        return .record(ScaledDotProductAttention(scale: scale ?? 1 / depth.squareRoot()), [q, k, v] + (bias.map { [$0] } ?? []))
    }

    /// Linear attention as in GenSelfDiff (annotated-diffusion `LinearAttention`), per head in channel-major
    /// layout: q, k [B, H, D, N], v [B, H, Dv, N] (from `b (h c) x y -> b h c (x y)`). q is softmaxed over its
    /// D features and multiplied by `scale` (default 1/√D), k is softmaxed over the N tokens;
    /// context = k·vᵀ [B, H, D, Dv], out = contextᵀ·q [B, H, Dv, N].
    public static func linearAttention(q: Tensor, k: Tensor, v: Tensor, scale: Float? = nil) -> Tensor {
        let depth = q.rank == 4 ? Float(q.shape[2]) : 1
        // The scale multiplies the D×Dv context instead of the D×N queries: the same product, one pass over a
        // small matrix instead of one over the queries (issue 21).
        let context = k.softmax(axis: -1).matmul(v, transposeB: true) * (scale ?? 1 / depth.squareRoot())
        return context.matmul(q.softmax(axis: -2), transposeA: true)
    }

    /// Non-overlapping windows of x [B, C, H, W] as token sequences [B·(H/w)·(W/w), w·w, C]: windows ordered by
    /// (b, window row, window column), tokens row-major inside a window. H and W must divide by w.
    public func windowPartition(window w: Int) -> Tensor {
        guard rank == 4, w >= 1, shape[2] % w == 0, shape[3] % w == 0 else {
            return .invalid("window_partition", "needs [B, C, H, W] with H, W divisible by \(w), got \(describe(shape))")
        }
        let (b, c, h, wd) = (shape[0], shape[1], shape[2], shape[3])
        return reshape([b, c, h / w, w, wd / w, w]).permute([0, 2, 4, 3, 5, 1]).reshape([b * (h / w) * (wd / w), w * w, c])
    }

    /// The inverse of `windowPartition`: [B·(H/w)·(W/w), w·w, C] → [B, C, H, W].
    public func windowMerge(window w: Int, height: Int, width: Int) -> Tensor {
        guard rank == 3, w >= 1, height % w == 0, width % w == 0, shape[1] == w * w,
              shape[0] % Swift.max((height / w) * (width / w), 1) == 0 else {
            return .invalid("window_merge", "cannot merge \(describe(shape)) as \(w)×\(w) windows of \(height)×\(width)")
        }
        let rows = height / w, columns = width / w, c = shape[2], b = shape[0] / Swift.max(rows * columns, 1)
        return reshape([b, rows, columns, w, w, c]).permute([0, 5, 1, 3, 2, 4]).reshape([b, c, height, width])
    }

    /// Swin's relative position index table of a w×w window, [w², w²] row-major as floats (rows of the bias
    /// table [(2w − 1)², heads]).
    public static func relativePositionIndex(window: Int) -> [Float] {
        relativePositionIndices(window: window).map(Float.init)
    }

    /// This relative position bias table [(2w − 1)², heads] gathered into an attention bias [1, heads, w², w²]
    /// (gradient: scatter-add into the table). Equivalent to
    /// `table.indexSelect(axis: 0, indices: Tensor(Tensor.relativePositionIndex(window: w), shape: [w⁴]))
    ///      .reshape([w², w², heads]).permute([2, 0, 1]).unsqueeze(0)`.
    public func relativePositionBias(window: Int) -> Tensor {
        Tensor.record(RelativePositionBias(window: window), [self]).unsqueeze(0)
    }
}

extension HarnessCatalog {
    static var attention: [HarnessCase] {
        let q: HarnessCase.Input = .normal([2, 2, 5, 4]), k: HarnessCase.Input = .normal([2, 2, 7, 4])
        let v: HarnessCase.Input = .normal([2, 2, 7, 3])
        return [
            HarnessCase("sdpa.self", [.normal([2, 2, 5, 4]), .normal([2, 2, 5, 4]), .normal([2, 2, 5, 4])]) {
                Tensor.scaledDotProductAttention(q: $0[0], k: $0[1], v: $0[2])
            },
            HarnessCase("sdpa.cross", [q, k, v]) { Tensor.scaledDotProductAttention(q: $0[0], k: $0[1], v: $0[2]) },
            HarnessCase("sdpa.scale", [q, k, v]) { Tensor.scaledDotProductAttention(q: $0[0], k: $0[1], v: $0[2], scale: 0.8) },
            HarnessCase("sdpa.bias_heads", [q, k, v, .normal([1, 2, 5, 7])]) {
                Tensor.scaledDotProductAttention(q: $0[0], k: $0[1], v: $0[2], bias: $0[3], scale: 0.7)
            },
            HarnessCase("sdpa.bias_batch", [q, k, v, .normal([2, 1, 5, 7])]) {
                Tensor.scaledDotProductAttention(q: $0[0], k: $0[1], v: $0[2], bias: $0[3])
            },
            HarnessCase("sdpa.bias_full", [q, k, v, .normal([2, 2, 5, 7])]) {
                Tensor.scaledDotProductAttention(q: $0[0], k: $0[1], v: $0[2], bias: $0[3])
            },
            // 37 keys (two 16-lane blocks and a tail), about a third masked with −∞.
            HarnessCase("sdpa.mask", [.normal([1, 2, 3, 4]), .normal([1, 2, 37, 4]), .normal([1, 2, 37, 2]),
                                      .integers([1, 1, 3, 37], 0, 3)]) {
                let bias = Tensor.zeros([1, 1, 3, 37]).maskedFill($0[3].equal(0), -.infinity)
                return Tensor.scaledDotProductAttention(q: $0[0], k: $0[1], v: $0[2], bias: bias)
            },
            // Depths past one 32-column chunk of the OpenCL kernels: 40 (two chunks) and 70 (three).
            HarnessCase("sdpa.deep", [.normal([1, 1, 2, 40]), .normal([1, 1, 3, 40]), .normal([1, 1, 3, 70]), .normal([1, 1, 2, 3])]) {
                Tensor.scaledDotProductAttention(q: $0[0], k: $0[1], v: $0[2], bias: $0[3])
            },
            // More than 64 queries and keys: several work-groups of rows and several key blocks on OpenCL.
            HarnessCase("sdpa.long", [.normal([1, 1, 70, 2]), .normal([1, 1, 67, 2]), .normal([1, 1, 67, 3])]) {
                Tensor.scaledDotProductAttention(q: $0[0], k: $0[1], v: $0[2])
            },
            HarnessCase("relative_position_bias", [.normal([25, 2])]) { $0[0].relativePositionBias(window: 3) },
            HarnessCase("window_partition", [.normal([2, 3, 4, 6])]) { $0[0].windowPartition(window: 2) },
            HarnessCase("window_merge.round_trip", [.normal([2, 3, 4, 6])]) {
                $0[0].windowPartition(window: 2).windowMerge(window: 2, height: 4, width: 6)
            },
            // UNetFormer-style window self-attention: 3×3 windows of a [1, 4, 6, 6] map, 2 heads of depth 2,
            // q = k = v = the window tokens, relative position bias from a [25, 2] table.
            HarnessCase("window_attention", [.normal([1, 4, 6, 6]), .normal([25, 2])]) { x in
                let tokens = x[0].windowPartition(window: 3).reshape([4, 9, 2, 2]).permute([0, 2, 1, 3])
                let bias = x[1].relativePositionBias(window: 3)
                let out = Tensor.scaledDotProductAttention(q: tokens, k: tokens, v: tokens, bias: bias)
                return out.permute([0, 2, 1, 3]).reshape([4, 9, 4]).windowMerge(window: 3, height: 6, width: 6)
            },
            HarnessCase("linear_attention", [.normal([2, 2, 4, 5]), .normal([2, 2, 4, 5]), .normal([2, 2, 3, 5])]) {
                Tensor.linearAttention(q: $0[0], k: $0[1], v: $0[2], scale: 0.6)
            },
        ]
    }
}

import Foundation
import HistoAVX512

// Reductions over axes, softmax / log-softmax / logsumexp over one axis, argmax.

public enum ReduceKind: String, Sendable { case sum, mean, max, min }

/// Views `shape` as [outer, n, inner] around the contiguous axis block `first...last`.
@inlinable func splitAround(_ shape: [Int], first: Int, last: Int) -> (outer: Int, n: Int, inner: Int) {
    (shape[..<first].reduce(1, *), shape[first...last].reduce(1, *), shape[(last + 1)...].reduce(1, *))
}

/// Runs `body(base)` for each row of the one-axis view [outer, n, inner] of `shape` around `axis`, in parallel;
/// row r's elements are at base + j·inner.
@inline(__always) func forEachRow(_ shape: [Int], axis: Int, _ body: (_ row: Int, _ base: Int, _ n: Int, _ inner: Int) -> Void) {
    let a = try! Shape.axis(axis, rank: shape.count)
    let (outer, n, inner) = splitAround(shape, first: a, last: a)
    parallelFor(outer * inner, grain: max(1, 8192 / max(n, 1))) { range in
        for r in range { body(r, (r / inner) * n * inner + r % inner, n, inner) }
    }
}

/// The max and Σ exp(x − max) of one row (max −∞ for an empty or all −∞ row, with sum 0).
@inline(__always) func maxAndExpSum(_ x: UnsafeBufferPointer<Float>, base: Int, n: Int, inner: Int) -> (max: Float, sum: Float) {
    var m = -Float.infinity
    for j in 0..<n { m = Swift.max(m, x[base + j * inner]) }
    if m == -.infinity { return (m, 0) }
    var s: Float = 0
    for j in 0..<n { s += Foundation.exp(x[base + j * inner] - m) }
    return (m, s)
}

/// Softmax of `rows` ≤ 16 adjacent rows at once, lane t holding the row at x + t, whose n elements lie `stride`
/// apart. Each row's max and sum run in element order, as the scalar loop's did.
@inline(__always) func softmaxAcrossRows(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, n: Int,
                                         stride: Int, rows: Int) {
    var top = SIMD16<Float>(repeating: -.infinity)
    for j in 0..<n {
        let v = load16(x + j * stride, stride: 1, count: rows)
        top = top.replacing(with: v, where: v .> top)
    }
    var sum = SIMD16<Float>()
    for j in 0..<n {
        let e = exp16(load16(x + j * stride, stride: 1, count: rows) - top)
        store16(e, y + j * stride, count: rows)
        sum += e
    }
    let inverse = 1 / sum
    for j in 0..<n { store16(load16(y + j * stride, stride: 1, count: rows) * inverse, y + j * stride, count: rows) }
}

/// Σ x[base + j·inner] for j < n in Float64.
@inline(__always) func stridedSum(_ x: UnsafeBufferPointer<Float>, base: Int, n: Int, inner: Int) -> Double {
    var acc: Double = 0
    for j in 0..<n { acc += Double(x[base + j * inner]) }
    return acc
}

/// Σ x[j] for j < count in Float64 over eight interleaved partial sums: one serial chain of additions would wait
/// on each add's latency (a bias gradient sums whole planes).
@inline(__always) func contiguousSum(_ x: UnsafePointer<Float>, count: Int) -> Double {
    var lanes = SIMD8<Double>(), j = 0
    while j + 8 <= count {
        lanes += SIMD8<Double>(UnsafeRawPointer(x + j).loadUnaligned(as: SIMD8<Float>.self))
        j += 8
    }
    var acc = lanes.sum()
    while j < count { acc += Double(x[j]); j += 1 }
    return acc
}

/// Reduction over a contiguous block of axes (the API chains blocks for scattered axes).
public struct Reduce: Operation {
    public let kind: ReduceKind
    public let axes: [Int]
    public let keepDims: Bool
    public init(_ kind: ReduceKind, axes: [Int], keepDims: Bool) { self.kind = kind; self.axes = axes; self.keepDims = keepDims }

    public var name: String { "reduce.\(kind.rawValue)" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        let resolved = try Shape.axes(axes, rank: inputs[0].count)
        guard let lo = resolved.first, resolved == Array(lo..<(lo + resolved.count)) else {
            throw ShapeError("reduce axes \(axes) must be a contiguous block (the API splits scattered axes)")
        }
        if (kind == .max || kind == .min) && resolved.contains(where: { inputs[0][$0] == 0 }) {
            throw ShapeError("\(kind.rawValue) over an empty axis")
        }
        return keepDims ? inputs[0].enumerated().map { resolved.contains($0.offset) ? 1 : $0.element }
                        : inputs[0].enumerated().filter { !resolved.contains($0.offset) }.map(\.element)
    }
    public func cpuForward(_ args: CPUArgs) {
        let shape = args.inputShapes[0]
        let resolved = try! Shape.axes(axes, rank: shape.count)
        let (outer, n, inner) = splitAround(shape, first: resolved.first!, last: resolved.last!)
        let x = args.inputs[0], y = args.output, kind = kind
        let scale: Float = kind == .mean ? 1 / Float(max(n, 1)) : 1
        parallelFor(outer * inner, grain: max(1, 16384 / max(n, 1))) { range in
            for r in range {
                let o = r / inner, i = r % inner
                let base = o * n * inner + i
                switch kind {
                case .sum, .mean:
                    // Float64 accumulation keeps long sums (a whole image) exact enough to serve as reference.
                    let acc = inner == 1 ? contiguousSum(x.baseAddress! + base, count: n) : stridedSum(x, base: base, n: n, inner: inner)
                    y[r] = Float(acc) * scale
                case .max:
                    var m = -Float.infinity
                    for j in 0..<n { m = Swift.max(m, x[base + j * inner]) }
                    y[r] = m
                case .min:
                    var m = Float.infinity
                    for j in 0..<n { m = Swift.min(m, x[base + j * inner]) }
                    y[r] = m
                }
            }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] {
        let x = ctx.inputs[0]
        let keptShape = x.shape.enumerated().map { axes.map { $0 < 0 ? $0 + x.rank : $0 }.contains($0.offset) ? 1 : $0.element }
        let dy = ctx.cotangent.reshape(keptShape)
        switch kind {
        case .sum: return [dy.expand(x.shape)]
        case .mean:
            let n = x.count / max(ctx.output.count, 1)
            return [(dy / Float(n)).expand(x.shape)]
        case .max, .min:
            // Ties share the gradient equally.
            let hit = x.equal(ctx.output.reshape(keptShape))
            let ties = hit.sum(axes: axes, keepDims: true)
            return [hit * (dy / ties)]
        }
    }
}

/// Softmax or log-softmax along one axis, max-subtracted.
public struct Softmax: Operation {
    public let axis: Int
    public let log: Bool
    public init(axis: Int, log: Bool) { self.axis = axis; self.log = log }
    public var name: String { log ? "log_softmax" : "softmax" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        _ = try Shape.axis(axis, rank: inputs[0].count); return inputs[0]
    }
    public func cpuForward(_ args: CPUArgs) {
        let x = args.inputs[0], y = args.output
        if log {
            forEachRow(args.inputShapes[0], axis: axis) { _, base, n, inner in
                let (m, s) = maxAndExpSum(x, base: base, n: n, inner: inner)
                let lse = m + Foundation.log(s)
                for j in 0..<n { y[base + j * inner] = x[base + j * inner] - lse }
            }
            return
        }
        // Softmax runs 16 lanes at a time with `exp16` (a scalar expf per element took a third of GenSelfDiff's
        // inference): along a contiguous row, or across 16 adjacent rows when the axis is strided.
        let a = try! Shape.axis(axis, rank: args.inputShapes[0].count)
        let (outer, n, inner) = splitAround(args.inputShapes[0], first: a, last: a)
        let source = x.baseAddress!, target = y.baseAddress!
        if inner == 1 {
            parallelFor(outer, grain: max(1, 8192 / max(n, 1))) { rows in
                for row in rows {
                    (target + row * n).update(from: source + row * n, count: n)
                    softmaxRow(target + row * n, n)
                }
            }
            return
        }
        let blocks = (inner + 15) / 16
        parallelFor(outer * blocks, grain: max(1, 512 / max(n, 1))) { range in
            for block in range {
                let first = block % blocks * 16, base = block / blocks * n * inner + first
                softmaxAcrossRows(source + base, target + base, n: n, stride: inner, rows: min(16, inner - first))
            }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] {
        let y = ctx.output, dy = ctx.cotangent
        if log { return [dy - y.exp() * dy.sum(axes: [axis], keepDims: true)] }
        return [y * (dy - (dy * y).sum(axes: [axis], keepDims: true))]
    }
}

/// log Σ exp(x) along one axis (max-subtracted), axis removed unless `keepDims`.
public struct LogSumExp: Operation {
    public let axis: Int
    public let keepDims: Bool
    public init(axis: Int, keepDims: Bool) { self.axis = axis; self.keepDims = keepDims }
    public var name: String { "logsumexp" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        try Reduce(.sum, axes: [axis], keepDims: keepDims).outputShape(inputs)
    }
    public func cpuForward(_ args: CPUArgs) {
        let x = args.inputs[0], y = args.output
        forEachRow(args.inputShapes[0], axis: axis) { r, base, n, inner in
            let (m, s) = maxAndExpSum(x, base: base, n: n, inner: inner)
            y[r] = m == -.infinity ? m : m + Foundation.log(s)
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] {
        let x = ctx.inputs[0]
        let kept = try! Reduce(.sum, axes: [axis], keepDims: true).outputShape([x.shape])
        return [(x - ctx.output.reshape(kept)).exp() * ctx.cotangent.reshape(kept)]
    }
}

/// Index of the largest element along one axis (first on ties), as float. No gradient.
public struct ArgMax: Operation {
    public let axis: Int
    public init(axis: Int) { self.axis = axis }
    public var name: String { "argmax" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        try Reduce(.max, axes: [axis], keepDims: false).outputShape(inputs)
    }
    public func cpuForward(_ args: CPUArgs) {
        let x = args.inputs[0], y = args.output
        forEachRow(args.inputShapes[0], axis: axis) { r, base, n, inner in
            var best = 0, m = x[base]
            for j in 1..<max(n, 1) where x[base + j * inner] > m { m = x[base + j * inner]; best = j }
            y[r] = Float(best)
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] { noGradient(ctx) }
}

extension Tensor {
    /// Reduction over `axes` (all axes when nil). Scattered axes are reduced block by block.
    public func reduce(_ kind: ReduceKind, axes: [Int]? = nil, keepDims: Bool = false) -> Tensor {
        let requested = axes ?? Array(0..<rank)
        if rank == 0 { return self }
        let resolved: [Int]
        do { resolved = try Shape.axes(requested, rank: rank) } catch {
            return .invalid("reduce.\(kind.rawValue)", "\(error.message) (shape \(describe(shape)))")
        }
        if resolved.isEmpty { return self }
        // Group into contiguous blocks; reduce the last block first so earlier axis numbers stay valid.
        var blocks: [[Int]] = []
        for a in resolved {
            if let last = blocks.last?.last, last + 1 == a { blocks[blocks.count - 1].append(a) } else { blocks.append([a]) }
        }
        if blocks.count == 1 { return .record(Reduce(kind, axes: resolved, keepDims: keepDims), [self]) }
        let chainKind: ReduceKind = kind == .mean ? .sum : kind
        var out = self
        for block in blocks.reversed() { out = .record(Reduce(chainKind, axes: block, keepDims: true), [out]) }
        if kind == .mean { out = out / Float(resolved.map { shape[$0] }.reduce(1, *)) }
        if !keepDims { out = out.reshape(shape.enumerated().filter { !resolved.contains($0.offset) }.map(\.element)) }
        return out
    }
    public func sum(axes: [Int]? = nil, keepDims: Bool = false) -> Tensor { reduce(.sum, axes: axes, keepDims: keepDims) }
    public func mean(axes: [Int]? = nil, keepDims: Bool = false) -> Tensor { reduce(.mean, axes: axes, keepDims: keepDims) }
    public func max(axes: [Int]? = nil, keepDims: Bool = false) -> Tensor { reduce(.max, axes: axes, keepDims: keepDims) }
    public func min(axes: [Int]? = nil, keepDims: Bool = false) -> Tensor { reduce(.min, axes: axes, keepDims: keepDims) }

    /// Variance over `axes` with `correction` (1: unbiased, as torch.std's default).
    public func variance(axes: [Int]? = nil, keepDims: Bool = false, correction: Int = 1) -> Tensor {
        let all = axes ?? Array(0..<rank)
        let n = all.map { shape[$0 < 0 ? $0 + rank : $0] }.reduce(1, *)
        let centered = self - mean(axes: all, keepDims: true)
        return centered.square().sum(axes: all, keepDims: keepDims) / Float(Swift.max(n - correction, 1))
    }
    /// Standard deviation, unbiased by default.
    public func std(axes: [Int]? = nil, keepDims: Bool = false, correction: Int = 1) -> Tensor {
        variance(axes: axes, keepDims: keepDims, correction: correction).sqrt()
    }

    public func softmax(axis: Int) -> Tensor { .record(Softmax(axis: axis, log: false), [self]) }
    public func logSoftmax(axis: Int) -> Tensor { .record(Softmax(axis: axis, log: true), [self]) }
    public func logSumExp(axis: Int, keepDims: Bool = false) -> Tensor { .record(LogSumExp(axis: axis, keepDims: keepDims), [self]) }
    public func argmax(axis: Int) -> Tensor { .record(ArgMax(axis: axis), [self]) }
}

extension HarnessCatalog {
    static var reduce: [HarnessCase] {
        let s = [2, 3, 4, 5]
        return [
            HarnessCase("reduce.sum.all", [.normal(s)]) { $0[0].sum() },
            HarnessCase("reduce.sum.inner", [.normal(s)]) { $0[0].sum(axes: [2, 3]) },
            HarnessCase("reduce.sum.scattered", [.normal(s)]) { $0[0].sum(axes: [0, 2], keepDims: true) },
            HarnessCase("reduce.mean", [.normal(s)]) { $0[0].mean(axes: [1]) },
            HarnessCase("reduce.mean.scattered", [.normal(s)]) { $0[0].mean(axes: [0, 2, 3]) },
            HarnessCase("reduce.max", [.normal(s)], fdStep: 1e-3) { $0[0].max(axes: [-1]) },
            HarnessCase("reduce.min", [.normal(s)], fdStep: 1e-3) { $0[0].min(axes: [1, 2], keepDims: true) },
            HarnessCase("std", [.normal(s)]) { $0[0].std(axes: [1, 2, 3]) },
            HarnessCase("softmax.channels", [.normal(s)]) { $0[0].softmax(axis: 1) },
            HarnessCase("softmax.last", [.normal(s)]) { ($0[0] * 3).softmax(axis: -1) },
            // The 16-lane paths: contiguous rows of 40 (two vectors and a tail), 37 adjacent strided rows (16, 16, 5).
            HarnessCase("softmax.long_rows", [.normal([3, 40])]) { ($0[0] * 3).softmax(axis: -1) },
            HarnessCase("softmax.strided_rows", [.normal([2, 5, 37])]) { ($0[0] * 3).softmax(axis: 1) },
            HarnessCase("log_softmax", [.normal(s)]) { $0[0].logSoftmax(axis: 1) },
            HarnessCase("log_softmax.rows", [.normal(s)]) { $0[0].logSoftmax(axis: -2) },
            HarnessCase("logsumexp", [.normal(s)]) { ($0[0] * 4).logSumExp(axis: 1) },
            HarnessCase("argmax", [.normal(s)]) { $0[0].argmax(axis: 1) },
        ]
    }
}

// MARK: device launches (Kernels/reduce.cl): one work-group of 64 per output element.

/// A launch of one 64-item work-group per row of an [outer, n, inner] reduction.
func rowGroupLaunch(_ name: String, _ args: [KernelArgument], rows: Int) -> KernelLaunch {
    .kernel(file: "reduce", name: name, args: args, global: [rows * 64], local: [64])
}

extension Reduce: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let resolved = try! Shape.axes(axes, rank: inputShapes[0].count)
        let (outer, n, inner) = splitAround(inputShapes[0], first: resolved.first!, last: resolved.last!)
        let code: Int32 = kind == .sum ? 0 : kind == .mean ? 1 : kind == .max ? 2 : 3
        return [rowGroupLaunch("reduce_axis", [.input(0), .output, .int(code), .int(Int32(n)), .int(Int32(inner)),
                                               .float(kind == .mean ? 1 / Float(Swift.max(n, 1)) : 1)], rows: outer * inner)]
    }
}

extension Softmax: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let a = try! Shape.axis(axis, rank: inputShapes[0].count)
        let (outer, n, inner) = splitAround(inputShapes[0], first: a, last: a)
        return [rowGroupLaunch("softmax_axis", [.input(0), .output, .int(Int32(n)), .int(Int32(inner)), .int(log ? 1 : 0)],
                               rows: outer * inner)]
    }
}

extension LogSumExp: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let a = try! Shape.axis(axis, rank: inputShapes[0].count)
        let (outer, n, inner) = splitAround(inputShapes[0], first: a, last: a)
        return [rowGroupLaunch("logsumexp_axis", [.input(0), .output, .int(Int32(n)), .int(Int32(inner))], rows: outer * inner)]
    }
}

extension ArgMax: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let a = try! Shape.axis(axis, rank: inputShapes[0].count)
        let (outer, n, inner) = splitAround(inputShapes[0], first: a, last: a)
        return [rowGroupLaunch("argmax_axis", [.input(0), .output, .int(Int32(n)), .int(Int32(inner))], rows: outer * inner)]
    }
}

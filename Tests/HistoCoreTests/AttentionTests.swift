import Foundation
import HistoAVX512
import XCTest
@testable import HistoCore

/// The blocked CPU attention (forward with an online softmax over key blocks, backward by query blocks) against a
/// plain double-precision reference on shapes the op harness does not reach: query and key blocks with remainders,
/// key blocks masked whole for some queries, a bias shared by several items, long sequences and deeper heads.
final class AttentionTests: XCTestCase {
    struct Case {
        var batch, heads, queries, keys, depth, valueDepth: Int
        var biasShape: [Int]?
        var scale: Float
        /// Bias entries set to −∞: (query, key) → masked.
        var masked: (Int, Int) -> Bool = { _, _ in false }
    }

    /// Uniform values in [−1, 1) from a fixed LCG.
    func values(_ count: Int, seed: UInt32) -> [Float] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 1_664_525 &+ 1_013_904_223
            return Float(state >> 8) / Float(1 << 23) - 1
        }
    }

    struct Result { var out, dq, dk, dv: [Float]; var dbias: [Float]? }

    /// Output and gradients (seeded with dO) through the op, on the CPU backend.
    func run(_ c: Case, _ q: [Float], _ k: [Float], _ v: [Float], _ bias: [Float]?, _ dO: [Float]) throws -> Result {
        let qt = Tensor(q, shape: [c.batch, c.heads, c.queries, c.depth])
        let kt = Tensor(k, shape: [c.batch, c.heads, c.keys, c.depth])
        let vt = Tensor(v, shape: [c.batch, c.heads, c.keys, c.valueDepth])
        let bt = bias.map { Tensor($0, shape: c.biasShape!) }
        let out = Tensor.scaledDotProductAttention(q: qt, k: kt, v: vt, bias: bt, scale: c.scale)
        let grads = Autodiff.gradients(of: out, wrt: [qt, kt, vt] + (bt.map { [$0] } ?? []),
                                       seed: Tensor(dO, shape: out.shape))
        return Result(out: try out.toArray(on: CPUBackend.shared), dq: try grads[0].toArray(on: CPUBackend.shared),
                      dk: try grads[1].toArray(on: CPUBackend.shared), dv: try grads[2].toArray(on: CPUBackend.shared),
                      dbias: try bt.map { _ in try grads[3].toArray(on: CPUBackend.shared) })
    }

    /// softmax(scale·Q·Kᵀ + bias)·V and its gradients in double precision, one (batch, head) item at a time.
    func reference(_ c: Case, _ q: [Float], _ k: [Float], _ v: [Float], _ bias: [Float]?, _ dO: [Float]) -> Result {
        let n = c.queries, m = c.keys, d = c.depth, dv = c.valueDepth, scale = Double(c.scale)
        var out = [Float](repeating: 0, count: c.batch * c.heads * n * dv)
        var dq = [Float](repeating: 0, count: q.count), dk = [Float](repeating: 0, count: k.count)
        var dvOut = [Float](repeating: 0, count: v.count)
        var dbias = bias.map { [Double](repeating: 0, count: $0.count) }
        for b in 0..<c.batch {
            for h in 0..<c.heads {
                let item = b * c.heads + h
                let biasBase = c.biasShape.map { s in ((s[0] == 1 ? 0 : b) * s[1] + (s[1] == 1 ? 0 : h)) * n * m } ?? 0
                var p = [Double](repeating: 0, count: n * m)
                for i in 0..<n {
                    for j in 0..<m {
                        var s = 0.0
                        for e in 0..<d { s += Double(q[(item * n + i) * d + e]) * Double(k[(item * m + j) * d + e]) }
                        p[i * m + j] = scale * s + (bias.map { Double($0[biasBase + i * m + j]) } ?? 0)
                    }
                    let top = p[(i * m)..<((i + 1) * m)].max()!
                    var sum = 0.0
                    for j in 0..<m { p[i * m + j] = Foundation.exp(p[i * m + j] - top); sum += p[i * m + j] }
                    for j in 0..<m { p[i * m + j] /= sum }
                }
                for i in 0..<n {
                    var dp = [Double](repeating: 0, count: m), delta = 0.0
                    for j in 0..<m {
                        for e in 0..<dv {
                            dp[j] += Double(dO[(item * n + i) * dv + e]) * Double(v[(item * m + j) * dv + e])
                        }
                        delta += p[i * m + j] * dp[j]
                    }
                    for e in 0..<dv {
                        var o = 0.0
                        for j in 0..<m { o += p[i * m + j] * Double(v[(item * m + j) * dv + e]) }
                        out[(item * n + i) * dv + e] = Float(o)
                    }
                    for j in 0..<m {
                        let ds = p[i * m + j] * (dp[j] - delta)
                        dbias?[biasBase + i * m + j] += ds
                        for e in 0..<d {
                            dq[(item * n + i) * d + e] += Float(scale * ds * Double(k[(item * m + j) * d + e]))
                            dk[(item * m + j) * d + e] += Float(scale * ds * Double(q[(item * n + i) * d + e]))
                        }
                        for e in 0..<dv {
                            dvOut[(item * m + j) * dv + e] += Float(p[i * m + j] * Double(dO[(item * n + i) * dv + e]))
                        }
                    }
                }
            }
        }
        return Result(out: out, dq: dq, dk: dk, dv: dvOut, dbias: dbias?.map { Float($0) })
    }

    func inputs(_ c: Case) -> ([Float], [Float], [Float], [Float]?, [Float]) {
        let q = values(c.batch * c.heads * c.queries * c.depth, seed: 1)
        let k = values(c.batch * c.heads * c.keys * c.depth, seed: 2)
        let v = values(c.batch * c.heads * c.keys * c.valueDepth, seed: 3)
        let dO = values(c.batch * c.heads * c.queries * c.valueDepth, seed: 4)
        let bias = c.biasShape.map { shape in
            values(shape.reduce(1, *), seed: 5).enumerated().map { index, x in
                c.masked(index / c.keys % c.queries, index % c.keys) ? -Float.infinity : x
            }
        }
        return (q, k, v, bias, dO)
    }

    /// The largest difference over the largest reference magnitude (at least 1).
    func error(_ ours: [Float], _ reference: [Float]) -> Float {
        XCTAssertEqual(ours.count, reference.count)
        let worst = zip(ours, reference).map { $0.isFinite ? Swift.abs($0 - $1) : .infinity }.max() ?? 0
        return worst / Swift.max(1, reference.map { Swift.abs($0) }.max() ?? 0)
    }

    func check(_ c: Case, _ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let (q, k, v, bias, dO) = inputs(c)
        let ours = try run(c, q, k, v, bias, dO), expected = reference(c, q, k, v, bias, dO)
        var errors = [("out", error(ours.out, expected.out)), ("dq", error(ours.dq, expected.dq)),
                      ("dk", error(ours.dk, expected.dk)), ("dv", error(ours.dv, expected.dv))]
        if let dbias = ours.dbias, let expectedBias = expected.dbias {
            errors.append(("dbias", error(dbias, expectedBias)))
        }
        print("\(name): " + errors.map { "\($0.0) \($0.1)" }.joined(separator: ", "))
        for (output, worst) in errors {
            XCTAssertLessThanOrEqual(worst, 2e-5, "\(name): \(output)", file: file, line: line)
        }
    }

    /// 200 queries (two 96-query blocks and one of 8, padded to 16 lanes), 600 keys (two 256-key blocks and one of
    /// 88), a value depth apart from the key depth, and a bias shared by the two batch items.
    func testBlockRemaindersAndSharedBias() throws {
        try check(Case(batch: 2, heads: 2, queries: 200, keys: 600, depth: 32, valueDepth: 20,
                       biasShape: [1, 2, 200, 600], scale: 0.2), "remainders, shared bias")
    }

    /// Every other query has its first 300 keys masked (−∞): a whole key block of the online softmax holds nothing
    /// for it, and the next block only part; the mask is shared by all heads.
    func testKeyBlocksMaskedWhole() throws {
        try check(Case(batch: 1, heads: 3, queries: 100, keys: 520, depth: 16, valueDepth: 48,
                       biasShape: [1, 1, 100, 520], scale: 0.25, masked: { query, key in query % 2 == 0 && key < 300 }),
                  "masked key blocks")
    }

    /// 1100 tokens with 64-deep heads: five key blocks and backward query blocks of 80 (the last one 60).
    func testLongSequenceDeepHeads() throws {
        try check(Case(batch: 1, heads: 2, queries: 1100, keys: 1100, depth: 64, valueDepth: 64, biasShape: nil,
                       scale: 0.125), "long, deep")
    }

    /// One item (run alone, with multithreaded GEMMs) with its own bias slice, shapes under one block each.
    func testSingleItemWithFullBias() throws {
        try check(Case(batch: 1, heads: 1, queries: 97, keys: 33, depth: 8, valueDepth: 5, biasShape: [1, 1, 97, 33],
                       scale: 0.5), "single item")
    }

    /// An item gives the same bits alone (its query blocks spread over the cores, GEMMs multithreaded in the
    /// backward) as next to another item (items spread over the cores, GEMMs single-threaded).
    func testItemResultsDoNotDependOnTheBatch() throws {
        let pair = Case(batch: 1, heads: 2, queries: 300, keys: 280, depth: 32, valueDepth: 32, biasShape: nil,
                        scale: 0.3)
        var alone = pair
        alone.heads = 1
        let (q, k, v, _, dO) = inputs(pair)
        let both = try run(pair, q, k, v, nil, dO)
        let first = try run(alone, Array(q.prefix(300 * 32)), Array(k.prefix(280 * 32)), Array(v.prefix(280 * 32)), nil,
                            Array(dO.prefix(300 * 32)))
        XCTAssertEqual(first.out, Array(both.out.prefix(first.out.count)))
        XCTAssertEqual(first.dq, Array(both.dq.prefix(first.dq.count)))
        XCTAssertEqual(first.dk, Array(both.dk.prefix(first.dk.count)))
        XCTAssertEqual(first.dv, Array(both.dv.prefix(first.dv.count)))
    }

    /// softmaxExp16 gives exp16's values on every 2⁻¹² step of [−87, 0], and 0 below −87 and at −∞.
    func testSoftmaxExpMatchesExp16() {
        var mismatches = 0
        for step in 0...(87 * 4096) {
            let x = SIMD16<Float>(repeating: -Float(step) / 4096)
            if softmaxExp16(x) != exp16(x) { mismatches += 1 }
        }
        XCTAssertEqual(mismatches, 0)
        for x: Float in [-87.01, -100, -1e30, -.infinity] {
            XCTAssertEqual(softmaxExp16(SIMD16(repeating: x))[0], 0, "\(x)")
        }
        XCTAssert(softmaxExp16(SIMD16(repeating: .nan))[0].isNaN)
    }

    /// HistoAVX512's AVX-512 copies of the softmax loops give the bits of the Haswell ones HistoCore inlines, on
    /// logits that span the exponential's range, −∞ and NaN included.
    func testAVX512SoftmaxGivesTheSameBits() throws {
        guard AVX512GEMM.isSupported else { throw XCTSkip("this CPU (or OS) has no AVX-512") }
        var state: UInt32 = 7
        let rows = 37, stride = 20
        var logits: [Float] = (0..<(rows * stride)).map { _ in
            state = state &* 1664525 &+ 1013904223
            return Float(state >> 8) / Float(1 << 24) * 100 - 96.5  // at most the reference, 3.5
        }
        logits[5] = -.infinity; logits[stride + 3] = .nan; logits[2 * stride] = 0
        let reference = SIMD16<Float>(repeating: 3.5)
        var ours = logits, inlined = logits
        let top = AVX512Exponentials.maximum(logits, rows: rows, stride: stride)
        let inlinedTop = lanewiseMaximum(logits, rows: rows, stride: stride)
        XCTAssertEqual(top.indices.filter { top[$0].bitPattern != inlinedTop[$0].bitPattern }, [], "maxima differ")
        let sum = AVX512Exponentials.exponentiate(&ours, rows: rows, stride: stride, minus: reference)
        let inlinedSum = exponentiateLanewise(&inlined, rows: rows, stride: stride, minus: reference)
        XCTAssertEqual(sum.indices.filter { sum[$0].bitPattern != inlinedSum[$0].bitPattern }, [], "sums differ")
        XCTAssertEqual(ours.indices.filter { ours[$0].bitPattern != inlined[$0].bitPattern }, [], "values differ")
        XCTAssertNotEqual(ours, logits)
    }
}

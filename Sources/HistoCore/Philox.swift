/// Random numbers: Philox 4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3"), counter-based,
/// so every backend produces the same bits for the same (seed, offset) without shared state.
///
/// The one definition, followed by the CPU reference here and by every kernel:
/// - Element `e` of a draw with stream offset `o` uses counter block `b = (o + e) / 4`, lane `(o + e) % 4`:
///   `(x0, x1, x2, x3) = philox4x32_10(counter: (b.lo, b.hi, 0, 0), key: (seed.lo, seed.hi))`.
/// - Uniform in (0, 1]: `u = ((x >> 8) + 1) · 2⁻²⁴` (exact in float32; never 0, so log(u) is finite).
/// - Normal (Box–Muller): lanes pair up as (0, 1) and (2, 3). With `u = uniform(x_even)`, `v = uniform(x_odd)`:
///   `r = sqrt(−2 ln u)`, even lane `r·cos(2πv)`, odd lane `r·sin(2πv)`.
/// - Integer in [lo, hi): `lo + (x · (hi − lo)) >> 32` in 64-bit integer arithmetic.
/// - Bernoulli(p): `u ≤ p` (1) else 0.
/// ln, sqrt, sin and cos are the polynomial/Newton forms below, built from float32 `+` and `*` alone (no fused
/// multiply-add), which are correctly rounded on every IEEE backend: that is what makes normal samples bit-identical.
/// Kernels must compile them with FP_CONTRACT OFF.
public enum Philox {
    /// Four words of each of eight blocks: `.0` holds word 0 of blocks first, first + 1, …, first + 7, and so on.
    public typealias Words = (SIMD8<UInt32>, SIMD8<UInt32>, SIMD8<UInt32>, SIMD8<UInt32>)
    /// Eight samples of each of four lanes, laid out as `Words`.
    public typealias Samples = (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>)

    /// philox4x32_10 of the eight counters first, first + 1, …, first + 7 under key `seed`, one per vector lane:
    /// AVX2 makes four of the round's 32×32→64-bit products per instruction.
    @inline(__always) public static func blocks(from first: UInt64, seed: UInt64) -> Words {
        let counters = SIMD8<UInt64>(repeating: first) &+ SIMD8(0, 1, 2, 3, 4, 5, 6, 7)
        var c0 = SIMD8<UInt32>(truncatingIfNeeded: counters), c1 = SIMD8<UInt32>(truncatingIfNeeded: counters &>> 32)
        var c2 = SIMD8<UInt32>(), c3 = SIMD8<UInt32>()
        var k0 = UInt32(truncatingIfNeeded: seed), k1 = UInt32(truncatingIfNeeded: seed >> 32)
        for round in 0..<10 {
            if round > 0 { k0 &+= 0x9E37_79B9; k1 &+= 0xBB67_AE85 }
            let p0 = SIMD8<UInt64>(truncatingIfNeeded: c0) &* 0xD251_1F53
            let p1 = SIMD8<UInt64>(truncatingIfNeeded: c2) &* 0xCD9E_8D57
            (c0, c1, c2, c3) = (SIMD8(truncatingIfNeeded: p1 &>> 32) ^ c1 ^ k0, SIMD8(truncatingIfNeeded: p1),
                                SIMD8(truncatingIfNeeded: p0 &>> 32) ^ c3 ^ k1, SIMD8(truncatingIfNeeded: p0))
        }
        return (c0, c1, c2, c3)
    }

    /// The block of one counter (lane 0 of `blocks(from:seed:)`), for the host's scalar draws.
    public static func block(counter: UInt64, seed: UInt64) -> (UInt32, UInt32, UInt32, UInt32) {
        let w = blocks(from: counter, seed: seed)
        return (w.0[0], w.1[0], w.2[0], w.3[0])
    }

    @inline(__always) public static func uniform(_ x: UInt32) -> Float { Float((x >> 8) + 1) * 0x1p-24 }
    @inline(__always) static func uniform(_ x: SIMD8<UInt32>) -> SIMD8<Float> {
        SIMD8<Float>(SIMD8<Int32>(truncatingIfNeeded: (x &>> 8) &+ 1)) * 0x1p-24
    }

    /// ln(u) for u in (0, 1]: u = m·2^e with m in [0.75, 1.5), ln(m) = t·P(t), t = m − 1.
    @inline(__always) static func log(_ u: SIMD8<Float>) -> SIMD8<Float> {
        let bits = unsafeBitCast(u, to: SIMD8<UInt32>.self)
        var e = unsafeBitCast((bits &>> 23) & 0xFF, to: SIMD8<Int32>.self) &- 127
        var m = unsafeBitCast((bits & 0x007F_FFFF) | 0x3F80_0000, to: SIMD8<Float>.self) // mantissa in [1, 2)
        let high = m .>= 1.5
        m.replace(with: m * 0.5, where: high)
        e.replace(with: e &+ 1, where: high)
        let t = m - 1
        var p = SIMD8<Float>(repeating: 0.032495010644197464)
        p = p * t + -0.0849456861615181
        p = p * t + 0.11547316610813141
        p = p * t + -0.12792731821537018
        p = p * t + 0.1430189311504364
        p = p * t + -0.16652880609035492
        p = p * t + 0.1999838799238205
        p = p * t + -0.25000226497650146
        p = p * t + 0.3333336114883423
        p = p * t + -0.5
        p = p * t + 1.0
        return t * p + SIMD8<Float>(e) * 0.6931471805599453
    }

    /// √r for r ≥ 0 by Newton iterations on 1/√r from a bit-level first guess.
    @inline(__always) static func sqrt(_ r: SIMD8<Float>) -> SIMD8<Float> {
        let guess = SIMD8<UInt32>(repeating: 0x5F37_59DF) &- (unsafeBitCast(r, to: SIMD8<UInt32>.self) &>> 1)
        var y = unsafeBitCast(guess, to: SIMD8<Float>.self)
        let half = r * 0.5
        for _ in 0..<4 { y = y * (1.5 - half * y * y) }
        return (r * y).replacing(with: 0, where: r .<= 0)
    }

    /// (cos 2πv, sin 2πv) for v in (0, 1], by quadrant and polynomials in the quadrant fraction.
    @inline(__always) static func cosSin(turns v: SIMD8<Float>) -> (SIMD8<Float>, SIMD8<Float>) {
        let q4 = v * 4 // exact, in (0, 4]
        var whole = SIMD8<Float>() // ⌊q4⌋: quadrant = whole mod 4
        for k in 1...4 { whole.replace(with: whole + 1, where: q4 .>= Float(k)) }
        let f = q4 - whole // fraction of the quadrant, exact
        let z = f * f
        var s = SIMD8<Float>(repeating: -3.4328727451793384e-06)
        s = s * z + 0.00016025584773160517
        s = s * z + -0.004681657068431377
        s = s * z + 0.07969260215759277
        s = s * z + -0.6459640860557556
        s = s * z + 1.5707963705062866
        s = s * f // sin(πf/2)
        var c = SIMD8<Float>(repeating: -6.127340412831472e-09)
        c = c * z + 4.7066609454304853e-07
        c = c * z + -2.5201685275533237e-05
        c = c * z + 0.0009192600846290588
        c = c * z + -0.020863480865955353
        c = c * z + 0.25366950035095215
        c = c * z + -1.2337005138397217
        c = c * z + 1.0 // cos(πf/2)
        // Quadrants 0…3 give (c, s), (−s, c), (−c, −s), (s, −c): swap in odd ones, then negate.
        let odd = (whole .== 1) .| (whole .== 3)
        let cosine = c.replacing(with: s, where: odd), sine = s.replacing(with: c, where: odd)
        return (cosine.replacing(with: -cosine, where: (whole .== 1) .| (whole .== 2)),
                sine.replacing(with: -sine, where: (whole .== 2) .| (whole .== 3)))
    }

    /// Standard normals of eight blocks' words: lanes (0, 1) and (2, 3) are Box–Muller pairs (u, v) giving
    /// r·cos 2πv and r·sin 2πv with r = √(−2 ln u).
    @inline(__always) public static func normals(_ w: Words) -> Samples {
        @inline(__always) func pair(_ xu: SIMD8<UInt32>, _ xv: SIMD8<UInt32>) -> (SIMD8<Float>, SIMD8<Float>) {
            let r = sqrt(-2 * log(uniform(xu)))
            let (c, s) = cosSin(turns: uniform(xv))
            return (r * c, r * s)
        }
        let (a, b) = pair(w.0, w.1), (c, d) = pair(w.2, w.3)
        return (a, b, c, d)
    }

    /// The samples of `distribution` from eight blocks' words.
    @inline(__always) static func samples(_ w: Words, _ distribution: RandomDistribution) -> Samples {
        switch distribution {
        case let .uniform(lo, hi):
            @inline(__always) func map(_ x: SIMD8<UInt32>) -> SIMD8<Float> { lo + (hi - lo) * uniform(x) }
            return (map(w.0), map(w.1), map(w.2), map(w.3))
        case let .normal(mean, std):
            let n = normals(w)
            return (mean + std * n.0, mean + std * n.1, mean + std * n.2, mean + std * n.3)
        case let .integer(lo, hi):
            @inline(__always) func map(_ x: SIMD8<UInt32>) -> SIMD8<Float> {
                let scaled = (SIMD8<UInt64>(truncatingIfNeeded: x) &* UInt64(hi - lo)) &>> 32
                return SIMD8<Float>(SIMD8<Int64>(repeating: Int64(lo)) &+ SIMD8<Int64>(truncatingIfNeeded: scaled))
            }
            return (map(w.0), map(w.1), map(w.2), map(w.3))
        case let .bernoulli(p):
            @inline(__always) func map(_ x: SIMD8<UInt32>) -> SIMD8<Float> {
                SIMD8<Float>().replacing(with: 1, where: uniform(x) .<= p)
            }
            return (map(w.0), map(w.1), map(w.2), map(w.3))
        }
    }

    /// Fills `out` with stream positions offset..<offset+count of the given distribution, `acrossCores` or on the
    /// calling thread (for callers that already run one per core, such as the data loader's samples).
    public static func fill(_ out: UnsafeMutableBufferPointer<Float>, distribution: RandomDistribution,
                            seed: UInt64, offset: UInt64, acrossCores: Bool = true) {
        let fillRange = { (range: Range<Int>) in
            fill(out, range, distribution: distribution, seed: seed, offset: offset)
        }
        if acrossCores { parallelFor(out.count, grain: 16384, fillRange) } else { fillRange(0..<out.count) }
    }

    /// out[range] from positions offset + range: eight blocks (32 positions) at a time, copied out of a small group
    /// buffer so any offset and range edge take the same path.
    private static func fill(_ out: UnsafeMutableBufferPointer<Float>, _ range: Range<Int>,
                             distribution: RandomDistribution, seed: UInt64, offset: UInt64) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 32) { group in
            var i = range.lowerBound
            while i < range.upperBound {
                let position = offset &+ UInt64(i)
                let v = samples(blocks(from: position / 4, seed: seed), distribution)
                for block in 0..<8 {
                    group[4 * block] = v.0[block]; group[4 * block + 1] = v.1[block]
                    group[4 * block + 2] = v.2[block]; group[4 * block + 3] = v.3[block]
                }
                let first = i - Int(position % 4) // index of the group's position 0
                let end = Swift.min(range.upperBound, first + 32)
                for j in i..<end { out[j] = group[j - first] }
                i = end
            }
        }
    }
}

public enum RandomDistribution: Sendable, Equatable {
    case uniform(Float, Float)
    case normal(mean: Float, std: Float)
    /// Integers in lo..<hi, as float.
    case integer(Int, Int)
    case bernoulli(Float)
}

/// A seeded random draw (no inputs). `offset` selects the stream position so successive draws do not overlap.
public struct RandomOp: Operation {
    public let shape: [Int]
    public let distribution: RandomDistribution
    public let seed: UInt64
    public let offset: UInt64
    public var name: String { "random" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        if case let .integer(lo, hi) = distribution, hi <= lo { throw ShapeError("empty integer range \(lo)..<\(hi)") }
        guard shape.allSatisfy({ $0 >= 0 }) else { throw ShapeError("negative size in \(describe(shape))") }
        return shape
    }
    public func cpuForward(_ args: CPUArgs) { Philox.fill(args.output, distribution: distribution, seed: seed, offset: offset) }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] { [] }
}

/// A seeded stream that hands out non-overlapping positions: `generator.normal([8, 3, 64, 64])`.
public final class RandomGenerator {
    public let seed: UInt64
    /// The next stream position. Settable so a resumed training run continues the stream where it stopped.
    public var offset: UInt64

    /// Data-parallel training: this process holds shard `index` of `count` equal shards of every batch. A draw
    /// of shape [n, …] is then made as the whole batch's draw [n·count, …] and its rows index·n ..< (index+1)·n
    /// kept, so that per-sample randomness (noise, dropout masks) does not depend on how the batch is split and
    /// the stream advances as in one process. Set it only on generators whose draws are batch-major.
    public var batchShard: (index: Int, count: Int)?

    public init(seed: UInt64, offset: UInt64 = 0) { self.seed = seed; self.offset = offset }

    public func draw(_ shape: [Int], _ distribution: RandomDistribution) -> Tensor {
        guard let shard = batchShard, shard.count > 1, let rows = shape.first else { return whole(shape, distribution) }
        return whole([rows * shard.count] + shape.dropFirst(), distribution)
            .slice(axis: 0, start: shard.index * rows, end: (shard.index + 1) * rows)
    }

    private func whole(_ shape: [Int], _ distribution: RandomDistribution) -> Tensor {
        let op = RandomOp(shape: shape, distribution: distribution, seed: seed, offset: offset)
        // Blocks are 4 wide: keep each draw block-aligned so normal pairs never straddle two draws.
        offset &+= UInt64((Shape.count(shape) + 3) / 4 * 4)
        return .record(op, [])
    }
    public func uniform(_ shape: [Int], _ lo: Float = 0, _ hi: Float = 1) -> Tensor { draw(shape, .uniform(lo, hi)) }
    public func normal(_ shape: [Int], mean: Float = 0, std: Float = 1) -> Tensor { draw(shape, .normal(mean: mean, std: std)) }
    public func integers(_ shape: [Int], _ lo: Int, _ hi: Int) -> Tensor { draw(shape, .integer(lo, hi)) }
    public func bernoulli(_ shape: [Int], p: Float) -> Tensor { draw(shape, .bernoulli(p)) }
}

extension Tensor {
    /// Inverted dropout: zeroes elements with probability `p` and scales the rest by 1/(1−p).
    /// `channelwise` drops whole channels of NCHW maps (Dropout2d).
    public func dropout(_ p: Float, generator: RandomGenerator, channelwise: Bool = false) -> Tensor {
        if p <= 0 { return self }
        let maskShape = channelwise && rank >= 2 ? Array(shape.prefix(2)) + [Int](repeating: 1, count: rank - 2) : shape
        let keep = generator.bernoulli(maskShape, p: 1 - p)
        return self * (keep / (1 - p))
    }
}

extension HarnessCatalog {
    static var random: [HarnessCase] {
        [
            HarnessCase("random.uniform", []) { _ in RandomGenerator(seed: 7, offset: 3).uniform([3, 5], -1, 2) },
            HarnessCase("random.normal", []) { _ in RandomGenerator(seed: 0xDEAD_BEEF_1234).normal([2, 3, 7]) },
            HarnessCase("random.normal_groups", []) { _ in RandomGenerator(seed: 21, offset: 5).normal([3, 37]) },
            HarnessCase("random.integer", []) { _ in RandomGenerator(seed: 11).integers([4, 9], 0, 1000) },
            HarnessCase("random.bernoulli", []) { _ in RandomGenerator(seed: 5).bernoulli([4, 9], p: 0.3) },
            HarnessCase("dropout", [.normal([2, 3, 4, 4])]) { $0[0].dropout(0.25, generator: RandomGenerator(seed: 9)) },
            HarnessCase("dropout2d", [.normal([2, 3, 4, 4])]) {
                $0[0].dropout(0.5, generator: RandomGenerator(seed: 9), channelwise: true)
            },
        ]
    }
}

extension RandomOp: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let (kind, a, b, ia, ib): (Int32, Float, Float, Int32, Int32)
        switch distribution {
        case let .uniform(lo, hi): (kind, a, b, ia, ib) = (0, lo, hi, 0, 0)
        case let .normal(mean, std): (kind, a, b, ia, ib) = (1, mean, std, 0, 0)
        case let .integer(lo, hi): (kind, a, b, ia, ib) = (2, 0, 0, Int32(lo), Int32(hi))
        case let .bernoulli(p): (kind, a, b, ia, ib) = (3, p, 0, 0, 0)
        }
        return [elementwiseLaunch("random", "random_fill", [.output, .int(kind), .float(a), .float(b), .int(ia), .int(ib),
                                                            .ulong(seed), .ulong(offset)], count: Shape.count(outputShape))]
    }
}

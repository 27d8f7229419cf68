// The exponentials of attention's softmax (Sources/HistoCore/Ops/Attention.swift), written once as inlinable
// functions: HistoCore compiles them for its baseline CPU (Haswell) and `AVX512Softmax` for AVX-512. Both use the
// same IEEE multiplies and adds (no fused ones), so they give the same bits; the AVX-512 copy needs half the
// instructions (one 16-lane register instead of two, compare masks in mask registers). Measured on Zen 4: attention
// 8×4×1024×32 forward 32.0 → 28.8 ms. (A fused multiply-add version was slower there: 34.7 ms.)

/// The shared part of HistoCore's `exp16` and `softmaxExp16`: for x = n·ln 2 + r, eʳ by Cephes' expf polynomial
/// and x·log₂e + 1.5·2²³, whose low mantissa bits hold n (adding 1.5·2²³ rounds to an integer without a
/// float→int conversion).
@inlinable @inline(__always)
public func expReduced(_ x: SIMD16<Float>) -> (polynomial: SIMD16<Float>, shifted: SIMD16<Float>) {
    let magic: Float = 12_582_912  // 1.5·2²³
    let shifted = x * 1.442_695_04 + magic
    let n = shifted - magic
    let r = x - n * 0.693_359_375 + n * 2.121_944_4e-4
    var p = SIMD16<Float>(repeating: 1.987_569_15e-4)
    p = p * r + 1.398_199_950_7e-3
    p = p * r + 8.333_451_907_3e-3
    p = p * r + 4.166_579_589_4e-2
    p = p * r + 1.666_666_545_9e-1
    p = p * r + 5.000_000_120_1e-1
    return (p * r * r + r + 1, shifted)
}

/// eˣ for x ≤ 0 (a logit minus the maximum, where the softmax spends its time): `exp16`'s arithmetic, hence its
/// values, from −87 to 0, with a single 2ⁿ scale (the result lies in (0, 1]) and no overflow or NaN handling beyond
/// the reduction's own (NaN stays NaN); below −87 (eˣ < 1.7·10⁻³⁸, beside a softmax sum ≥ 1) and at −∞
/// (masked logits) it is 0. About two thirds of `exp16`'s instructions. (Written with `*` and `+`: the SIMD16 fused
/// `addingProduct` is split into scalar FMAs in a loop this long on AVX2.)
@inlinable @inline(__always)
public func softmaxExp16(_ x: SIMD16<Float>) -> SIMD16<Float> {
    let underflow = x .< -87
    let (p, shifted) = expReduced(x.replacing(with: -87, where: underflow))
    // 2ⁿ for n in −126…0: n + 127 in the exponent field, n being the integer in shifted's low mantissa bits.
    let power = unsafeBitCast((unsafeBitCast(shifted, to: SIMD16<Int32>.self) &- (0x4B40_0000 - 127)) &<< 23,
                              to: SIMD16<Float>.self)
    return (p * power).replacing(with: 0, where: underflow)
}

/// The lane-wise maximum of the 16-lane vectors p[j·stride] for j < rows (four running maxima: the
/// compare-and-select chain is latency-bound otherwise).
@inlinable @inline(__always)
public func lanewiseMaximum(_ p: UnsafePointer<Float>, rows: Int, stride: Int) -> SIMD16<Float> {
    @inline(__always) func load(_ j: Int) -> SIMD16<Float> {
        UnsafeRawPointer(p + j * stride).loadUnaligned(as: SIMD16<Float>.self)
    }
    var a = SIMD16<Float>(repeating: -.infinity), b = a, c = a, e = a
    var j = 0
    while j + 4 <= rows {
        let x = load(j), y = load(j + 1), z = load(j + 2), w = load(j + 3)
        a = a.replacing(with: x, where: x .> a); b = b.replacing(with: y, where: y .> b)
        c = c.replacing(with: z, where: z .> c); e = e.replacing(with: w, where: w .> e)
        j += 4
    }
    while j < rows { let x = load(j); a = a.replacing(with: x, where: x .> a); j += 1 }
    a = a.replacing(with: b, where: b .> a); c = c.replacing(with: e, where: e .> c)
    return a.replacing(with: c, where: c .> a)
}

/// p[j·stride] = exp(p[j·stride] − reference) for j < rows, 16 lanes each, with reference ≥ every p (a softmax's
/// maximum); returns their lane-wise sum.
@inlinable @inline(__always)
public func exponentiateLanewise(_ p: UnsafeMutablePointer<Float>, rows: Int, stride: Int,
                                 minus reference: SIMD16<Float>) -> SIMD16<Float> {
    var sum = SIMD16<Float>()
    for j in 0..<rows {
        let row = UnsafeMutableRawPointer(p + j * stride)
        let x = softmaxExp16(row.loadUnaligned(as: SIMD16<Float>.self) - reference)
        row.storeBytes(of: x, as: SIMD16<Float>.self)
        sum += x
    }
    return sum
}

/// `lanewiseMaximum` and `exponentiateLanewise` compiled for AVX-512; call only where `AVX512GEMM.isSupported`.
public enum AVX512Softmax {
    @inline(never)
    public static func maximum(_ p: UnsafePointer<Float>, rows: Int, stride: Int) -> SIMD16<Float> {
        lanewiseMaximum(p, rows: rows, stride: stride)
    }

    @inline(never)
    public static func exponentiate(_ p: UnsafeMutablePointer<Float>, rows: Int, stride: Int,
                                    minus reference: SIMD16<Float>) -> SIMD16<Float> {
        exponentiateLanewise(p, rows: rows, stride: stride, minus: reference)
    }
}

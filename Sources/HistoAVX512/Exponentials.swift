// The CPU backend's 16-lane exponentials (exp, sigmoid, SiLU) and the loops that spend its time in them (attention's
// softmax, Sources/HistoCore/Ops/Attention.swift; the SiLU after a norm, Ops/Normalization.swift), written once as
// inlinable functions: HistoCore compiles them for its baseline CPU (Haswell) and `AVX512Exponentials` for AVX-512.
// Both run the same IEEE operations (multiplies and adds unfused where the source has them so), so they give the
// same bits; the AVX-512 copy needs half the instructions (one 16-lane register instead of two, compare masks in
// mask registers). Measured on Zen 4: attention 8×4×1024×32 forward 32.0 → 28.8 ms. (A fused multiply-add
// version of the softmax's exponential was slower there: 34.7 ms.)

/// eˣ over the whole float range, within 1 ulp of the correctly rounded value (VectorMathTests sweeps it).
/// Cody–Waite reduction x = n·ln 2 + r (ln 2 split in two so that n·ln2_hi is exact, |r| ≤ ln 2 / 2), then
/// Cephes' expf polynomial eʳ ≈ 1 + r + r²·p(r) with p of degree 5, scaled by 2ⁿ as
/// 2^⌊n/2⌋·2^(n−⌊n/2⌋) so that results near overflow and subnormal results round once, at the last
/// multiply. Inputs are clamped to [−104, 89], outside of which eˣ rounds to 0 or overflows to +∞ anyway;
/// NaN stays NaN.
/// Rounding to n uses the 1.5·2²³ trick: adding it leaves n in the low mantissa bits, no float→int conversion.
@inlinable @inline(__always)
public func exp16(_ x: SIMD16<Float>) -> SIMD16<Float> {
    let clamped = x.replacing(with: -104, where: x .< -104).replacing(with: 89, where: x .> 89)
    let (p, shifted) = expReduced(clamped)
    let whole = unsafeBitCast(shifted, to: SIMD16<Int32>.self) &- 0x4B40_0000  // n as an integer, −150…128
    let half = whole &>> 1
    let first = unsafeBitCast((half &+ 127) &<< 23, to: SIMD16<Float>.self)
    let second = unsafeBitCast((whole &- half &+ 127) &<< 23, to: SIMD16<Float>.self)
    return (p * first * second).replacing(with: x, where: x .!= x)
}

/// 1 / (1 + e⁻ˣ): 0 for x below about −88 (where e⁻ˣ overflows), 1 for large x.
@inlinable @inline(__always)
public func sigmoid16(_ x: SIMD16<Float>) -> SIMD16<Float> {
    1 / (1 + exp16(-x))
}

/// SiLU, x·sigmoid(x).
@inlinable @inline(__always)
public func silu16(_ x: SIMD16<Float>) -> SIMD16<Float> { x * sigmoid16(x) }

/// SiLU's derivative, s·(1 + x·(1 − s)) with s = sigmoid(x).
@inlinable @inline(__always)
public func siluDerivative16(_ x: SIMD16<Float>) -> SIMD16<Float> {
    let s = sigmoid16(x)
    return s * (1 + x * (1 - s))
}

/// The shared part of `exp16` and `softmaxExp16`: for x = n·ln 2 + r, eʳ by Cephes' expf polynomial
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

/// The pre-activation of a normalised plane, (x − mean)·scale + shift on 16 lanes, as one multiply-add.
@inlinable @inline(__always)
public func normAffine16(_ x: SIMD16<Float>, mean: Float, scale: Float, shift: Float) -> SIMD16<Float> {
    SIMD16(repeating: shift).addingProduct(x - mean, SIMD16(repeating: scale))
}

/// y[i] = f(x[i], dy[i]) for i < count (dy unread when nil), 16 lanes at a time; a tail of fewer lanes is padded
/// with zeros and only its lanes are stored.
@inlinable @inline(__always)
public func mapLanes(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>?, count: Int,
                     into y: UnsafeMutablePointer<Float>, _ f: (SIMD16<Float>, SIMD16<Float>) -> SIMD16<Float>) {
    var i = 0
    while i + 16 <= count {
        let u = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self)
        let v = dy.map { UnsafeRawPointer($0 + i).loadUnaligned(as: SIMD16<Float>.self) } ?? SIMD16<Float>()
        UnsafeMutableRawPointer(y + i).storeBytes(of: f(u, v), as: SIMD16<Float>.self)
        i += 16
    }
    guard i < count else { return }
    var u = SIMD16<Float>(), v = SIMD16<Float>()
    for lane in 0..<(count - i) { u[lane] = x[i + lane]; v[lane] = dy?[i + lane] ?? 0 }
    let tail = f(u, v)
    for lane in 0..<(count - i) { y[i + lane] = tail[lane] }
}

/// silu((x − mean)·scale + shift) over `count` elements: the forward of a norm followed by SiLU, per plane.
@inlinable @inline(__always)
public func normSiLU(_ x: UnsafePointer<Float>, count: Int, mean: Float, scale: Float, shift: Float,
                     into y: UnsafeMutablePointer<Float>) {
    mapLanes(x, nil, count: count, into: y) { x, _ in silu16(normAffine16(x, mean: mean, scale: scale, shift: shift)) }
}

/// dy·silu'((x − mean)·scale + shift) over `count` elements: its backward's cotangent before the SiLU, per plane.
@inlinable @inline(__always)
public func normSiLUGradient(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, count: Int, mean: Float,
                             scale: Float, shift: Float, into g: UnsafeMutablePointer<Float>) {
    mapLanes(x, dy, count: count, into: g) { x, dy in
        dy * siluDerivative16(normAffine16(x, mean: mean, scale: scale, shift: shift))
    }
}

/// The loops above compiled for AVX-512; call only where `AVX512GEMM.isSupported`.
public enum AVX512Exponentials {
    @inline(never)
    public static func maximum(_ p: UnsafePointer<Float>, rows: Int, stride: Int) -> SIMD16<Float> {
        lanewiseMaximum(p, rows: rows, stride: stride)
    }

    @inline(never)
    public static func exponentiate(_ p: UnsafeMutablePointer<Float>, rows: Int, stride: Int,
                                    minus reference: SIMD16<Float>) -> SIMD16<Float> {
        exponentiateLanewise(p, rows: rows, stride: stride, minus: reference)
    }

    @inline(never)
    public static func normSiLU(_ x: UnsafePointer<Float>, count: Int, mean: Float, scale: Float, shift: Float,
                                into y: UnsafeMutablePointer<Float>) {
        HistoAVX512.normSiLU(x, count: count, mean: mean, scale: scale, shift: shift, into: y)
    }

    @inline(never)
    public static func normSiLUGradient(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, count: Int,
                                        mean: Float, scale: Float, shift: Float, into g: UnsafeMutablePointer<Float>) {
        HistoAVX512.normSiLUGradient(x, dy, count: count, mean: mean, scale: scale, shift: shift, into: g)
    }
}

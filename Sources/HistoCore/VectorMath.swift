// 16-lane float math for the CPU kernels: loads and stores, tanh written with SIMD16<Float> so that it compiles to
// vector instructions (glibc's expf is a scalar call per element; exp16 and sigmoid16 live in HistoAVX512's
// Exponentials.swift, shared with its AVX-512 loops), and the parallel map loops the elementwise ops run through.
// Selects use `replacing(with:where:)`: `pointwiseMax` does not vectorise.

import HistoAVX512

@inline(__always) func load16(_ p: UnsafePointer<Float>) -> SIMD16<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
}

@inline(__always) func store16(_ v: SIMD16<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD16<Float>.self)
}

/// Elements p[0], p[stride], … of `count` ≤ 16 lanes; the lanes past `count` are 0.
@inline(__always) func load16(_ p: UnsafePointer<Float>, stride: Int, count: Int) -> SIMD16<Float> {
    if stride == 1 && count == 16 { return load16(p) }
    if stride == 0 { return SIMD16(repeating: p[0]) }
    var v = SIMD16<Float>()
    for lane in 0..<count { v[lane] = p[lane * stride] }
    return v
}

/// Stores the first `count` ≤ 16 lanes.
@inline(__always) func store16(_ v: SIMD16<Float>, _ p: UnsafeMutablePointer<Float>, count: Int) {
    if count == 16 { return store16(v, p) }
    for lane in 0..<count { p[lane] = v[lane] }
}

/// A scalar function applied lane by lane (for the maps without a vector form, e.g. log or erf).
@inline(__always) func lanewise(_ x: SIMD16<Float>, _ f: (Float) -> Float) -> SIMD16<Float> {
    var y = SIMD16<Float>()
    for lane in 0..<16 { y[lane] = f(x[lane]) }
    return y
}

@inline(__always) func lanewise(_ x: SIMD16<Float>, _ y: SIMD16<Float>, _ f: (Float, Float) -> Float) -> SIMD16<Float> {
    var z = SIMD16<Float>()
    for lane in 0..<16 { z[lane] = f(x[lane], y[lane]) }
    return z
}

/// tanh as in Cephes' tanhf: an odd polynomial x + x³·q(x²) for |x| < 0.625 (no cancellation near 0), otherwise
/// ±(1 − 2 / (e^(2|x|) + 1)), which reaches ±1 for large |x|. NaN stays NaN.
@inline(__always) func tanh16(_ x: SIMD16<Float>) -> SIMD16<Float> {
    let magnitude = x.replacing(with: -x, where: x .< 0)
    let far = 1 - 2 / (exp16(2 * magnitude) + 1)
    let z = x * x
    var q = SIMD16<Float>(repeating: -5.704_988_727_45e-3)
    q = q * z + 2.063_908_879_54e-2
    q = q * z - 5.373_971_555_31e-2
    q = q * z + 1.333_144_220_36e-1
    q = q * z - 3.333_328_194_22e-1
    let near = q * z * x + x
    return near.replacing(with: far, where: magnitude .>= 0.625 .& x .>= 0)
        .replacing(with: -far, where: magnitude .>= 0.625 .& x .< 0)
}

/// Splits 0..<count into runs that start at multiples of 16 and calls `body(start, length)` for them on all cores.
@inline(__always) func parallelFor16(_ count: Int, _ body: (Int, Int) -> Void) {
    parallelFor((count + 15) / 16, grain: 256) { blocks in
        let start = blocks.lowerBound * 16
        body(start, Swift.min(count, blocks.upperBound * 16) - start)
    }
}

/// y[i] = f(x[i]) for `count` elements, 16 lanes at a time (HistoAVX512's `mapLanes`: a tail padded with zeros).
@inline(__always) func vectorMap(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int,
                                 _ f: (SIMD16<Float>) -> SIMD16<Float>) {
    mapLanes(x, nil, count: count, into: y) { x, _ in f(x) }
}

/// z[i] = f(x[i·sx], y[i·sy]) for `count` elements, strides 0 (a broadcast value) or more, 16 lanes at a time.
@inline(__always) func vectorZip(_ x: UnsafePointer<Float>, _ sx: Int, _ y: UnsafePointer<Float>, _ sy: Int,
                                 _ z: UnsafeMutablePointer<Float>, count: Int,
                                 _ f: (SIMD16<Float>, SIMD16<Float>) -> SIMD16<Float>) {
    var i = 0
    while i < count {
        let lanes = Swift.min(16, count - i)
        store16(f(load16(x + i * sx, stride: sx, count: lanes), load16(y + i * sy, stride: sy, count: lanes)), z + i, count: lanes)
        i += 16
    }
}

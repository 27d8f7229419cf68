import Foundation
import HistoCore

/// Colour operations on RGB planes `[3, H, W]` with values in [0, 1] (`colorPlanes(range: .zeroToOne)`). Outputs are
/// clamped to [0, 1]. The colour jitter follows torchvision's definitions (`adjust_brightness`, `adjust_contrast`,
/// `adjust_saturation`, `adjust_hue`, `rgb_to_grayscale`); the stain operations follow skimage's `rgb2hed`/`hed2rgb`.
extension Planes {
    /// `factor · x`.
    public func adjustedBrightness(_ factor: Float) throws -> Planes {
        try requireRGB("adjustedBrightness")
        return mapped { clamp01($0 * factor) }
    }

    /// `factor · x + (1 − factor) · m`, with m the mean gray level of the whole image.
    public func adjustedContrast(_ factor: Float) throws -> Planes {
        try requireRGB("adjustedContrast")
        let plane = height * width
        var sum: Double = 0
        for p in 0..<plane { sum += Double(Self.gray(values[p], values[plane + p], values[2 * plane + p])) }
        let mean = Float(sum / Double(plane))
        return mapped { clamp01(factor * $0 + (1 - factor) * mean) }
    }

    /// `factor · x + (1 − factor) · gray(x)` per pixel: 0 is gray, 1 the image, above 1 more saturated.
    public func adjustedSaturation(_ factor: Float) throws -> Planes {
        try requireRGB("adjustedSaturation")
        return perPixel { r, g, b in
            let gray = (1 - factor) * Self.gray(r, g, b)
            return (clamp01(factor * r + gray), clamp01(factor * g + gray), clamp01(factor * b + gray))
        }
    }

    /// Hue shifted by `turns` (a fraction of the colour circle, e.g. ±0.05) in HSV, saturation and value kept.
    public func hueShifted(_ turns: Float) throws -> Planes {
        try requireRGB("hueShifted")
        return perPixel { r, g, b in
            let (h, s, v) = Self.hsv(r, g, b)
            var shifted = (h + turns).truncatingRemainder(dividingBy: 1)
            if shifted < 0 { shifted += 1 }
            return Self.rgb(h: shifted, s: s, v: v)
        }
    }

    /// The gray level `0.2989 R + 0.587 G + 0.114 B` in all three planes.
    public func grayscaled() throws -> Planes {
        try requireRGB("grayscaled")
        return perPixel { r, g, b in let gray = Self.gray(r, g, b); return (gray, gray, gray) }
    }

    /// Each plane convolved with a normalised Gaussian of `sigma` pixels over ±ceil(3σ) taps, separably (rows, then
    /// columns), positions outside filled according to `padding`. Any number of channels; values are not clamped.
    public func gaussianBlurred(sigma: Float, padding: PatchPadding = .reflect) throws -> Planes {
        guard sigma > 0, sigma.isFinite else {
            throw EngineError.invalidValue(op: "gaussianBlurred", message: "sigma \(sigma) must be positive")
        }
        let radius = Int((3 * sigma).rounded(.up))
        var weights = (-radius...radius).map { exp(-Float($0 * $0) / (2 * sigma * sigma)) }
        let total = weights.reduce(0, +)
        weights = weights.map { $0 / total }
        return separablyFiltered(across: weights, down: weights, padding: padding)
    }

    /// Each plane convolved with the centred kernels `across` (along each row) and then `down` (along each column),
    /// both of odd length; positions outside filled according to `padding`.
    func separablyFiltered(across: [Float], down: [Float], padding: PatchPadding) -> Planes {
        func taps(_ kernel: [Float], _ length: Int) -> [[Int]] {
            let radius = kernel.count / 2
            return (0..<length).map { i in
                (-radius...radius).map { Self.source(i + $0, length: length, padding) ?? -1 }
            }
        }
        let rowTaps = taps(across, width), columnTaps = taps(down, height)
        var mid = [Float](repeating: 0, count: values.count)
        var out = [Float](repeating: 0, count: values.count)
        for c in 0..<channels {
            for y in 0..<height {
                let row = (c * height + y) * width
                for x in 0..<width {
                    var sum: Float = 0
                    for (k, sx) in rowTaps[x].enumerated() where sx >= 0 { sum += across[k] * values[row + sx] }
                    mid[row + x] = sum
                }
            }
            for y in 0..<height {
                let row = (c * height + y) * width
                for (k, sy) in columnTaps[y].enumerated() where sy >= 0 {
                    let sourceRow = (c * height + sy) * width
                    let w = down[k]
                    for x in 0..<width { out[row + x] += w * mid[sourceRow + x] }
                }
            }
        }
        return Planes(unchecked: channels, height: height, width: width, values: out)
    }

    /// `x + std · n`, clamped to [0, 1] unless `clamped` is false, with n standard normals: element e is element e
    /// of `RandomGenerator(seed: seed).normal([channels, height, width])`.
    public func addingGaussianNoise(std: Float, seed: UInt64, clamped: Bool = true) -> Planes {
        var out = [Float](repeating: 0, count: values.count)
        out.withUnsafeMutableBufferPointer { o in
            // On this thread: the loader already runs one sample per core.
            Philox.fill(o, distribution: .normal(mean: 0, std: 1), seed: seed, offset: 0, acrossCores: false)
            for i in o.indices {
                o[i] = clamped ? clamp01(values[i] + std * o[i]) : values[i] + std * o[i]
            }
        }
        return Planes(unchecked: channels, height: height, width: width, values: out)
    }

    // MARK: stains

    /// Haematoxylin, eosin and DAB stain amounts `[3, H, W]` by colour deconvolution (Ruifrok & Johnston), as
    /// skimage's `rgb2hed`: optical densities `log(max(x, 1e-6)) / log(1e-6)` times `hed_from_rgb`, clamped at 0.
    public func rgbToHED() throws -> Planes {
        try requireRGB("rgbToHED")
        let stains = Stains.standard
        return perPixel(stains.hed)
    }

    /// RGB from stain amounts, as skimage's `hed2rgb`: `exp(−(s · −log(1e-6)) · rgb_from_hed)`, clamped to [0, 1].
    public func hedToRGB() throws -> Planes {
        try requireRGB("hedToRGB")
        let stains = Stains.standard
        return perPixel(stains.rgb)
    }

    /// H&E stain jitter (Tellez et al.): `hedToRGB(scale[i] · s[i] + shift[i])` with `s = rgbToHED()`, per stain
    /// channel i (haematoxylin, eosin, DAB).
    public func stainJittered(scale: [Float], shift: [Float]) throws -> Planes {
        try requireRGB("stainJittered")
        guard scale.count == 3, shift.count == 3 else {
            throw EngineError.invalidValue(op: "stainJittered", message: "needs 3 scales and 3 shifts (H, E, DAB), got \(scale.count) and \(shift.count)")
        }
        let stains = Stains.standard
        return perPixel { r, g, b in
            let (h, e, d) = stains.hed(r, g, b)
            return stains.rgb(scale[0] * h + shift[0], scale[1] * e + shift[1], scale[2] * d + shift[2])
        }
    }

    // MARK: helpers

    private func requireRGB(_ op: String) throws {
        guard channels == 3 else {
            throw EngineError.invalidValue(op: op, message: "needs RGB planes [3, H, W], got \(describe(shape))")
        }
    }

    private func mapped(_ transform: (Float) -> Float) -> Planes {
        Planes(unchecked: channels, height: height, width: width, values: values.map(transform))
    }

    /// Applies `transform` to every pixel's (R, G, B).
    private func perPixel(_ transform: (Float, Float, Float) -> (Float, Float, Float)) -> Planes {
        let plane = height * width
        var out = [Float](repeating: 0, count: values.count)
        values.withUnsafeBufferPointer { v in
            out.withUnsafeMutableBufferPointer { o in
                for p in 0..<plane {
                    (o[p], o[plane + p], o[2 * plane + p]) = transform(v[p], v[plane + p], v[2 * plane + p])
                }
            }
        }
        return Planes(unchecked: 3, height: height, width: width, values: out)
    }

    @inline(__always) static func gray(_ r: Float, _ g: Float, _ b: Float) -> Float { 0.2989 * r + 0.587 * g + 0.114 * b }

    /// torchvision's `_rgb2hsv`.
    @inline(__always) static func hsv(_ r: Float, _ g: Float, _ b: Float) -> (Float, Float, Float) {
        let maxc = max(r, g, b), minc = min(r, g, b)
        let range = maxc - minc
        guard range > 0 else { return (0, 0, maxc) }
        let s = range / maxc
        let rc = (maxc - r) / range, gc = (maxc - g) / range, bc = (maxc - b) / range
        let h: Float = maxc == r ? bc - gc : maxc == g ? 2 + rc - bc : 4 + gc - rc
        var turns = (h / 6 + 1).truncatingRemainder(dividingBy: 1)
        if turns < 0 { turns += 1 }
        return (turns, s, maxc)
    }

    /// torchvision's `_hsv2rgb`.
    @inline(__always) static func rgb(h: Float, s: Float, v: Float) -> (Float, Float, Float) {
        let sector = (h * 6).rounded(.down)
        let f = h * 6 - sector
        let p = clamp01(v * (1 - s)), q = clamp01(v * (1 - s * f)), t = clamp01(v * (1 - s * (1 - f)))
        switch ((Int(sector) % 6) + 6) % 6 {
        case 0: return (v, t, p)
        case 1: return (q, v, p)
        case 2: return (p, v, t)
        case 3: return (p, q, v)
        case 4: return (t, p, v)
        default: return (v, p, q)
        }
    }
}

@inline(__always) func clamp01(_ x: Float) -> Float { min(max(x, 0), 1) }

/// Ruifrok–Johnston colour deconvolution with skimage's matrices, per pixel.
struct Stains: Sendable {
    /// Rows: the RGB optical density of haematoxylin, eosin and DAB (skimage's `rgb_from_hed`).
    static let rgbFromHED: [[Double]] = [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]]
    static let standard = Stains()

    /// `hed_from_rgb` (the inverse) and `rgb_from_hed`, row-major, as float.
    private let toHED: [Float]
    private let toRGB: [Float]
    private let logFloor = Float(log(1e-6))

    private init() {
        toHED = Self.inverse3(Self.rgbFromHED).flatMap { $0.map(Float.init) }
        toRGB = Self.rgbFromHED.flatMap { $0.map(Float.init) }
    }

    @inline(__always) func hed(_ r: Float, _ g: Float, _ b: Float) -> (Float, Float, Float) {
        let m = toHED
        let (dr, dg, db) = (log(max(r, 1e-6)) / logFloor, log(max(g, 1e-6)) / logFloor, log(max(b, 1e-6)) / logFloor)
        return (max(0, dr * m[0] + dg * m[3] + db * m[6]), max(0, dr * m[1] + dg * m[4] + db * m[7]),
                max(0, dr * m[2] + dg * m[5] + db * m[8]))
    }

    @inline(__always) func rgb(_ h: Float, _ e: Float, _ d: Float) -> (Float, Float, Float) {
        let m = toRGB
        let (h, e, d) = (h * logFloor, e * logFloor, d * logFloor) // −(s · −log 1e-6)
        return (clamp01(exp(h * m[0] + e * m[3] + d * m[6])), clamp01(exp(h * m[1] + e * m[4] + d * m[7])),
                clamp01(exp(h * m[2] + e * m[5] + d * m[8])))
    }

    private static func inverse3(_ a: [[Double]]) -> [[Double]] {
        let det = a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
            + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
        return (0..<3).map { i in
            (0..<3).map { j in
                // The cofactor of (j, i) over the determinant.
                let r = [0, 1, 2].filter { $0 != j }, c = [0, 1, 2].filter { $0 != i }
                let minor = a[r[0]][c[0]] * a[r[1]][c[1]] - a[r[0]][c[1]] * a[r[1]][c[0]]
                return ((i + j) % 2 == 0 ? 1 : -1) * minor / det
            }
        }
    }
}

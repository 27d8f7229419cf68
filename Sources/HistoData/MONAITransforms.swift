import Foundation
import HistoCore

/// How `zoomedKeepingSize` resamples: the two `F.interpolate` modes DTSeg's `RandZoomd` uses (SPEC §1).
public enum ZoomFilter: Sendable {
    /// `mode="area"`: each target pixel is the mean of the source pixels of its adaptive-average-pooling window.
    /// For images.
    case area
    /// `mode="nearest"` (PyTorch's legacy nearest): target index i reads source index min(⌊i · in/out⌋, in − 1),
    /// in float as PyTorch computes it. For label maps: ids, 255 (ignore) included, are copied, never blended.
    case nearest
}

/// MONAI's intensity and zoom transforms at given parameters, as DTSeg trains with them on the 0–255 image (SPEC §1
/// "Augmentations"); drawing the parameters is `Augmentation`'s. Values are never clamped (MONAI does not clamp).
extension Planes {
    /// MONAI `AdjustContrast`: `((x − min) / (range + 1e-7))^γ · range + min`, with min and range over every value
    /// of every channel.
    public func adjustedGamma(_ gamma: Float) -> Planes {
        let low = values.min() ?? 0, range = (values.max() ?? 0) - low
        let scale = range + 1e-7
        return Planes(unchecked: channels, height: height, width: width,
                      values: values.map { pow(($0 - low) / scale, gamma) * range + low })
    }

    /// MONAI `GaussianSmooth(sigma: (sigmaDown, sigmaAcross))` on channel-first planes, whose first spatial axis
    /// (MONAI's σ_x) runs down the columns: separable kernels of MONAI's `erf` approximation over ±round(4σ) taps
    /// (truncation 4.0), not renormalised, with zero padding at the borders, as MONAI's `GaussianFilter`.
    public func gaussianSmoothed(sigmaDown: Float, sigmaAcross: Float) throws -> Planes {
        for sigma in [sigmaDown, sigmaAcross] where !(sigma > 0 && sigma.isFinite) {
            throw EngineError.invalidValue(op: "gaussianSmoothed", message: "sigma \(sigma) must be positive")
        }
        return separablyFiltered(across: Self.erfKernel(sigma: sigmaAcross), down: Self.erfKernel(sigma: sigmaDown),
                                 padding: .zero)
    }

    /// MONAI `gaussian_1d(approx="erf", truncated=4)`: tap x weighs the Gaussian's mass over [x − ½, x + ½].
    static func erfKernel(sigma: Float) -> [Float] {
        let tail = Int(max(Double(sigma) * 4, 0.5) + 0.5)
        let t = 0.70710678 / sigma
        return (-tail...tail).map { x in max(0, 0.5 * (erf(t * (Float(x) + 0.5)) - erf(t * (Float(x) - 0.5)))) }
    }

    /// MONAI `HistogramShift`: the piecewise-linear map that takes the reference control points, evenly spaced over
    /// [min, max] of all values, to the floating ones, given as fractions of [min, max] (`floating`, first 0 and last
    /// 1, non-decreasing, at least 2). Planes whose values are all equal are returned as they are.
    public func histogramShifted(floating: [Float]) throws -> Planes {
        guard floating.count >= 2, floating.first == 0, floating.last == 1,
              zip(floating, floating.dropFirst()).allSatisfy({ $0 <= $1 }) else {
            throw EngineError.invalidValue(op: "histogramShifted", message:
                "floating control points \(floating) must rise from 0 to 1, at least 2 of them")
        }
        let low = values.min() ?? 0, high = values.max() ?? 0
        guard high > low else { return self }
        let segments = floating.count - 1
        let reference = (0...segments).map { low + Float($0) / Float(segments) * (high - low) }
        let target = floating.map { low + $0 * (high - low) }
        let slopes = (0..<segments).map { k -> Float in
            let rise: Float = target[k + 1] - target[k], run: Float = reference[k + 1] - reference[k]
            return rise / run
        }
        let mapped = values.map { x -> Float in
            // The last reference point at or below x (MONAI's torch interp: slope and intercept per segment).
            let k = min(reference.lastIndex { $0 <= x } ?? 0, segments - 1)
            return target[k] + slopes[k] * (x - reference[k])
        }
        return Planes(unchecked: channels, height: height, width: width, values: mapped)
    }

    /// MONAI `Zoom(zoom: factor, keep_size: true)` on both axes: resampled with `filter` to ⌊H·factor⌋ ×
    /// ⌊W·factor⌋ (`F.interpolate(recompute_scale_factor=True)`), then back to H × W as `ResizeWithPadOrCrop`
    /// does it: padded symmetrically by repeating the edge (MONAI's default `padding_mode="edge"`; the extra pixel of
    /// an odd difference goes after) or cropped about the centre (from ⌊zoomed/2⌋ − ⌊H/2⌋).
    public func zoomedKeepingSize(_ factor: Double, filter: ZoomFilter) throws -> Planes {
        let zoomedHeight = Int((Double(height) * factor).rounded(.down))
        let zoomedWidth = Int((Double(width) * factor).rounded(.down))
        guard factor.isFinite, zoomedHeight > 0, zoomedWidth > 0 else {
            throw EngineError.invalidValue(op: "zoomedKeepingSize", message:
                "zoom \(factor) leaves nothing of \(height)×\(width)")
        }
        let zoomed = resampled(height: zoomedHeight, width: zoomedWidth, filter: filter)
        func sources(_ length: Int, _ zoomedLength: Int) -> [Int] {
            if zoomedLength <= length {
                let before = (length - zoomedLength) / 2
                return (0..<length).map { min(max($0 - before, 0), zoomedLength - 1) }
            }
            let start = zoomedLength / 2 - length / 2
            return (0..<length).map { $0 + start }
        }
        let rows = sources(height, zoomedHeight), columns = sources(width, zoomedWidth)
        var out = [Float](repeating: 0, count: values.count)
        for c in 0..<channels {
            for (y, sy) in rows.enumerated() {
                let target = (c * height + y) * width, source = (c * zoomedHeight + sy) * zoomedWidth
                for (x, sx) in columns.enumerated() { out[target + x] = zoomed[source + sx] }
            }
        }
        return Planes(unchecked: channels, height: height, width: width, values: out)
    }

    /// These planes resampled to `height × width` by `F.interpolate`'s `area` or legacy `nearest` mode.
    private func resampled(height: Int, width: Int, filter: ZoomFilter) -> [Float] {
        /// Per target index: the source window [start, end).
        func windows(_ source: Int, _ target: Int) -> [Range<Int>] {
            switch filter {
            case .area:
                return (0..<target).map { i in i * source / target ..< ((i + 1) * source + target - 1) / target }
            case .nearest:
                let scale = Float(source) / Float(target)
                return (0..<target).map { i in
                    let s = min(Int((Float(i) * scale).rounded(.down)), source - 1)
                    return s ..< s + 1
                }
            }
        }
        let rows = windows(self.height, height), columns = windows(self.width, width)
        var out = [Float](repeating: 0, count: channels * height * width)
        for c in 0..<channels {
            let plane = c * self.height * self.width
            for (y, rowWindow) in rows.enumerated() {
                for (x, columnWindow) in columns.enumerated() {
                    var sum: Float = 0
                    for sy in rowWindow {
                        for sx in columnWindow { sum += values[plane + sy * self.width + sx] }
                    }
                    out[(c * height + y) * width + x] = sum / Float(rowWindow.count * columnWindow.count)
                }
            }
        }
        return out
    }
}

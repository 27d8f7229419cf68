import HistoCore

/// How `resized` and `warped` sample the source. Both use pixel centres (PyTorch's `align_corners=False`).
public enum ResizeFilter: Sendable {
    /// Linear in each direction, without antialiasing: for images. Matches `F.interpolate(mode="bilinear")`.
    case bilinear
    /// The source pixel whose area contains the target pixel's centre: for label maps, whose ids must not be
    /// blended. Matches `F.interpolate(mode="nearest-exact")`.
    case nearest
}

extension Planes {
    /// These planes resampled to `height × width`, every channel alike.
    public func resized(height: Int, width: Int, filter: ResizeFilter) throws -> Planes {
        guard height > 0, width > 0 else {
            throw EngineError.invalidValue(op: "resized", message: "target size \(height)×\(width) must be positive")
        }
        let rows = Self.taps(from: self.height, to: height, filter)
        let columns = Self.taps(from: self.width, to: width, filter)
        var out = [Float](repeating: 0, count: channels * height * width)
        for c in 0..<channels {
            let plane = c * self.height * self.width
            for (oy, row) in rows.enumerated() {
                let top = plane + row.low * self.width
                let bottom = plane + row.high * self.width
                let outRow = (c * height + oy) * width
                for (ox, column) in columns.enumerated() {
                    let upper = values[top + column.low] * (1 - column.weight) + values[top + column.high] * column.weight
                    let lower = values[bottom + column.low] * (1 - column.weight) + values[bottom + column.high] * column.weight
                    out[outRow + ox] = upper * (1 - row.weight) + lower * row.weight
                }
            }
        }
        return Planes(unchecked: channels, height: height, width: width, values: out)
    }

    /// Per target position along one axis: the two source indices and the weight of the second.
    private static func taps(from source: Int, to target: Int, _ filter: ResizeFilter) -> [(low: Int, high: Int, weight: Float)] {
        // Float arithmetic as PyTorch does it, so that positions on a boundary round the same way.
        let scale = Float(source) / Float(target)
        return (0..<target).map { t in
            switch filter {
            case .nearest:
                let s = min(Int(((Float(t) + 0.5) * scale).rounded(.down)), source - 1)
                return (s, s, 0)
            case .bilinear:
                let position = max((Float(t) + 0.5) * scale - 0.5, 0)
                let low = min(Int(position), source - 1)
                let high = min(low + 1, source - 1)
                return (low, high, position - Float(low))
            }
        }
    }
}

extension Image {
    /// This image resampled bilinearly to `height × width`, every channel alike, samples rounded to the nearest
    /// integer: what resizing an 8-bit image with OpenCV's `INTER_LINEAR` (albumentations' `Resize`) gives.
    public func resized(height: Int, width: Int) throws -> Image {
        let plane = self.width * self.height
        var planar = [Float](repeating: 0, count: samples.count)
        for p in 0..<plane {
            for c in 0..<channels { planar[c * plane + p] = Float(samples[p * channels + c]) }
        }
        let resized = try Planes(unchecked: channels, height: self.height, width: self.width, values: planar)
            .resized(height: height, width: width, filter: .bilinear)
        let top = Float(maxValue), target = height * width
        var out = [UInt16](repeating: 0, count: target * channels)
        for p in 0..<target {
            for c in 0..<channels {
                out[p * channels + c] = UInt16(min(max(resized.values[c * target + p].rounded(), 0), top))
            }
        }
        return Image(unchecked: width, height: height, channels: channels, bitDepth: bitDepth, samples: out)
    }
}

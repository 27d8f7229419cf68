import HistoCore

/// What a window reads where it extends past the planes.
public enum PatchPadding: Sendable {
    /// Mirror at the border without repeating the edge (numpy's `reflect`: `… 2 1 | 0 1 2 3 | 2 1 …`).
    case reflect
    /// Zeros.
    case zero
}

/// A window of planes and where its top-left corner lies in the source.
public struct Patch: Equatable, Sendable {
    public let y: Int
    public let x: Int
    public let planes: Planes

    public init(y: Int, x: Int, planes: Planes) {
        self.y = y
        self.x = x
        self.planes = planes
    }
}

extension Planes {
    /// The window of `height × width` with top-left corner (`y`, `x`); positions outside the planes (on any side)
    /// are filled according to `padding`.
    public func crop(y: Int, x: Int, height: Int, width: Int, padding: PatchPadding) throws -> Planes {
        guard height > 0, width > 0 else {
            throw EngineError.invalidValue(op: "crop", message: "window \(height)×\(width) must be positive")
        }
        let rows = (0..<height).map { Self.source(y + $0, length: self.height, padding) }
        let columns = (0..<width).map { Self.source(x + $0, length: self.width, padding) }
        var out = [Float](repeating: 0, count: channels * height * width)
        for c in 0..<channels {
            for (oy, sy) in rows.enumerated() {
                guard let sy else { continue }
                let sourceRow = (c * self.height + sy) * self.width
                let outRow = (c * height + oy) * width
                for (ox, sx) in columns.enumerated() {
                    if let sx { out[outRow + ox] = values[sourceRow + sx] }
                }
            }
        }
        return Planes(unchecked: channels, height: height, width: width, values: out)
    }

    /// Square `size × size` patches at offsets 0, stride, 2·stride, … in each direction, continuing until the
    /// planes are covered; the last row and column of patches extend past the bottom and right edges (as does
    /// every patch when the planes are smaller than `size`) and are padded. Row-major order.
    public func patches(size: Int, stride: Int, padding: PatchPadding) throws -> [Patch] {
        guard size > 0, stride > 0, stride <= size else {
            throw EngineError.invalidValue(op: "patches", message: "size \(size) and stride \(stride) must be positive with stride ≤ size, or pixels are skipped")
        }
        let rows = Self.patchOrigins(length: height, size: size, stride: stride)
        let columns = Self.patchOrigins(length: width, size: size, stride: stride)
        return try rows.flatMap { y in
            try columns.map { x in Patch(y: y, x: x, planes: try crop(y: y, x: x, height: size, width: size, padding: padding)) }
        }
    }

    /// Reassembles `height × width` planes from patches (parts past the edges are ignored), averaging where
    /// patches overlap. Every pixel must be covered.
    public static func stitch(_ patches: [Patch], height: Int, width: Int) throws -> Planes {
        guard let channels = patches.first?.planes.channels else {
            throw EngineError.invalidValue(op: "stitch", message: "no patches")
        }
        guard height > 0, width > 0 else {
            throw EngineError.invalidValue(op: "stitch", message: "size \(height)×\(width) must be positive")
        }
        if let odd = patches.first(where: { $0.planes.channels != channels }) {
            throw EngineError.invalidValue(op: "stitch", message: "patch at (\(odd.y), \(odd.x)) has \(odd.planes.channels) channels, the first has \(channels)")
        }
        var sum = [Float](repeating: 0, count: channels * height * width)
        var coverage = [Float](repeating: 0, count: height * width)
        for patch in patches {
            let p = patch.planes
            let ys = max(0, patch.y)..<min(height, patch.y + p.height)
            let xs = max(0, patch.x)..<min(width, patch.x + p.width)
            guard !ys.isEmpty, !xs.isEmpty else { continue }
            for y in ys { for x in xs { coverage[y * width + x] += 1 } }
            for c in 0..<channels {
                for y in ys {
                    let patchRow = (c * p.height + y - patch.y) * p.width - patch.x
                    let outRow = (c * height + y) * width
                    for x in xs { sum[outRow + x] += p.values[patchRow + x] }
                }
            }
        }
        if let hole = coverage.firstIndex(of: 0) {
            throw EngineError.invalidValue(op: "stitch", message: "pixel (\(hole / width), \(hole % width)) of \(height)×\(width) is covered by no patch")
        }
        for c in 0..<channels {
            for p in 0..<(height * width) { sum[c * height * width + p] /= coverage[p] }
        }
        return Planes(unchecked: channels, height: height, width: width, values: sum)
    }

    /// Offsets 0, stride, … up to the first one whose window reaches the end of `length`.
    static func patchOrigins(length: Int, size: Int, stride: Int) -> [Int] {
        guard length > size else { return [0] }
        let count = (length - size + stride - 1) / stride + 1
        return (0..<count).map { $0 * stride }
    }

    /// The source index read for position `i` along an axis of `length`, or nil for a zero.
    @inline(__always) static func source(_ i: Int, length: Int, _ padding: PatchPadding) -> Int? {
        if (0..<length).contains(i) { return i }
        switch padding {
        case .zero: return nil
        case .reflect:
            guard length > 1 else { return 0 }
            // Reflection without edge repetition is periodic with period 2·(length − 1).
            let period = 2 * (length - 1)
            let m = ((i % period) + period) % period
            return m < length ? m : period - m
        }
    }
}

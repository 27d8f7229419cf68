import Foundation
import HistoCore
import HistoData

/// Whole-image inference with a model that sees fixed-size tiles, after MONAI's `sliding_window_inference`.
///
/// An image smaller than a tile along an axis is padded to the tile there (`padding`; half before, the rest after,
/// as MONAI). Tiles start every `stride = ⌊tile · (1 − overlap)⌋` pixels (at least 1; the stride is the tile when
/// the padded image is exactly one tile) until one reaches the far edge, and that last tile is moved back to end
/// exactly at the edge. Tiles go to the model `batchSize` at a time as `[N, C, tileHeight, tileWidth]`; its
/// `[N, K, tileHeight, tileWidth]` outputs are blended per pixel with the tiles' weights (`blending`) normalised to
/// sum to one over the tiles covering the pixel, and the padding is cut off again: the result is `[K, H, W]`.
/// Blending is linear, so the model should return quantities that average well (logits or probabilities).
public struct SlidingWindow: Equatable, Sendable {
    /// How a tile's pixels weigh in the blend.
    public enum Blending: Equatable, Sendable {
        /// Every pixel of a tile weighs the same: overlaps are plain averages.
        case constant
        /// Pixel (i, j) of a tile weighs `g_y(i) · g_x(j)`, `g(t) = exp(−(t − (n − 1)/2)² / (2σ²))` with
        /// σ = `sigmaScale` · tile size per axis, and no weight below 1e-3 (MONAI's `compute_importance_map`,
        /// default σ = 0.125 · tile), so tile centres count most and tile borders, where a convolutional model
        /// sees the least context, least.
        case gaussian(sigmaScale: Float = 0.125)
    }

    public let tileHeight: Int
    public let tileWidth: Int
    /// The fraction of a tile shared with its neighbour, in [0, 1).
    public let overlap: Float
    public let blending: Blending
    /// Tiles per model call.
    public let batchSize: Int
    /// What tiles read outside an image smaller than a tile.
    public let padding: PatchPadding

    /// Defaults are MONAI's: overlap 0.25, constant blending, one tile per call, zero padding.
    public init(tileHeight: Int, tileWidth: Int, overlap: Float = 0.25, blending: Blending = .constant,
                batchSize: Int = 1, padding: PatchPadding = .zero) throws {
        func invalid(_ message: String) -> EngineError { .invalidValue(op: "SlidingWindow", message: message) }
        guard tileHeight > 0, tileWidth > 0 else { throw invalid("tile \(tileHeight)×\(tileWidth) must be positive") }
        guard overlap >= 0, overlap < 1 else { throw invalid("overlap \(overlap) must be in [0, 1)") }
        guard batchSize > 0 else { throw invalid("batch size \(batchSize) must be positive") }
        if case let .gaussian(sigmaScale) = blending, !(sigmaScale > 0 && sigmaScale.isFinite) {
            throw invalid("Gaussian sigma scale \(sigmaScale) must be positive")
        }
        self.tileHeight = tileHeight
        self.tileWidth = tileWidth
        self.overlap = overlap
        self.blending = blending
        self.batchSize = batchSize
        self.padding = padding
    }

    /// Square tiles.
    public init(tile: Int, overlap: Float = 0.25, blending: Blending = .constant, batchSize: Int = 1,
                padding: PatchPadding = .zero) throws {
        try self.init(tileHeight: tile, tileWidth: tile, overlap: overlap, blending: blending, batchSize: batchSize, padding: padding)
    }

    /// The window of `histodiff segment` and `eval --model`: 256² tiles, overlap 0.25 and Gaussian blending where
    /// nil; batches of 4 tiles and reflect padding, so that images smaller than a tile see image content.
    public static func segmentation(tile: Int? = nil, overlap: Float? = nil, blending: Blending? = nil) throws
        -> SlidingWindow {
        try SlidingWindow(tile: tile ?? 256, overlap: overlap ?? 0.25, blending: blending ?? .gaussian(), batchSize: 4,
                          padding: .reflect)
    }

    /// The top-left corners of the tiles for a `height × width` image in image coordinates, row-major (negative
    /// along an axis where the image is smaller than the tile and is padded before).
    public func origins(height: Int, width: Int) -> [(y: Int, x: Int)] {
        let rows = Self.starts(length: height, tile: tileHeight, overlap: overlap)
        let columns = Self.starts(length: width, tile: tileWidth, overlap: overlap)
        return rows.flatMap { y in columns.map { x in (y: y, x: x) } }
    }

    /// A tile's blending weights, `tileHeight × tileWidth` row-major (before normalisation across tiles).
    public func tileWeights() -> [Float] {
        switch blending {
        case .constant:
            return [Float](repeating: 1, count: tileHeight * tileWidth)
        case let .gaussian(sigmaScale):
            func profile(_ n: Int) -> [Float] {
                let sigma = Float(n) * sigmaScale, center = Float(n - 1) / 2
                return (0..<n).map { i in let t = Float(i) - center; return exp(-t * t / (2 * sigma * sigma)) }
            }
            let rows = profile(tileHeight), columns = profile(tileWidth)
            return rows.flatMap { gy in columns.map { gx in max(gy * gx, 1e-3) } }
        }
    }

    /// Runs `model` over the tiles of `image` (`[C, H, W]`) and returns the blended `[K, H, W]` output. Tensors are
    /// evaluated on `backend` (the default backend when nil). Throws when the model's output is not
    /// `[N, K, tileHeight, tileWidth]` for N tiles, or K changes between calls.
    public func infer(_ image: Planes, on backend: (any Backend)? = nil, model: (Tensor) throws -> Tensor) throws -> Planes {
        let (height, width) = (image.height, image.width)
        let origins = self.origins(height: height, width: width)
        let weights = tileWeights()
        let tilePixels = tileHeight * tileWidth
        // Sums in double, so that a pixel's normalised weights add up to one within float rounding.
        var blended: [Double] = []
        var totals = [Double](repeating: 0, count: height * width)
        var outputChannels = 0
        for first in stride(from: 0, to: origins.count, by: batchSize) {
            let batch = origins[first..<min(first + batchSize, origins.count)]
            let tiles = try batch.map { try image.crop(y: $0.y, x: $0.x, height: tileHeight, width: tileWidth, padding: padding) }
            let output = try model(Planes.batch(tiles))
            try output.eval(on: backend)
            let shape = output.shape
            let channels = shape.count == 4 ? shape[1] : 0
            guard shape.count == 4, shape[0] == batch.count, shape[2] == tileHeight, shape[3] == tileWidth, channels > 0 else {
                throw EngineError.invalidValue(op: "SlidingWindow.infer", message: "the model returned \(describe(shape)) for \(batch.count) tiles of \(describe([image.channels, tileHeight, tileWidth])); expected [\(batch.count), K, \(tileHeight), \(tileWidth)]")
            }
            if outputChannels == 0 {
                outputChannels = channels
                blended = [Double](repeating: 0, count: channels * height * width)
            } else if channels != outputChannels {
                throw EngineError.invalidValue(op: "SlidingWindow.infer", message: "the model returned \(channels) channels for tiles \(first)..., \(outputChannels) before")
            }
            let values = try output.toArray(on: backend)
            for (n, origin) in batch.enumerated() {
                let ys = max(0, origin.y)..<min(height, origin.y + tileHeight)
                let xs = max(0, origin.x)..<min(width, origin.x + tileWidth)
                for y in ys {
                    let tileRow = (y - origin.y) * tileWidth - origin.x
                    for x in xs { totals[y * width + x] += Double(weights[tileRow + x]) }
                    for k in 0..<channels {
                        let source = (n * channels + k) * tilePixels + tileRow
                        let target = (k * height + y) * width
                        for x in xs { blended[target + x] += Double(weights[tileRow + x]) * Double(values[source + x]) }
                    }
                }
            }
        }
        let plane = height * width
        let result = (0..<(outputChannels * plane)).map { Float(blended[$0] / totals[$0 % plane]) }
        return try Planes(channels: outputChannels, height: height, width: width, values: result)
    }

    /// Tile starts along an axis of `length` in image coordinates (MONAI's `_get_scan_interval` and
    /// `dense_patch_slices` on the padded axis, shifted back by the padding before it).
    static func starts(length: Int, tile: Int, overlap: Float) -> [Int] {
        let padded = max(length, tile)
        let before = (padded - length) / 2
        let stride = padded == tile ? tile : max(1, Int(Double(tile) * (1 - Double(overlap))))
        // The first start whose tile reaches the end is the last one.
        let count = (padded - tile + stride - 1) / stride + 1
        return (0..<count).map { min($0 * stride, padded - tile) - before }
    }
}

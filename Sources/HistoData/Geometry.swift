import Foundation
import HistoCore

/// Where each pixel of an output window reads from in a source: an affine map of pixel positions. Output pixel
/// (i, j) lies at the offset (dy, dx) = (i − (height − 1)/2, j − (width − 1)/2) from the window's centre and reads
/// the source at (centerY + yy·dy + yx·dx, centerX + xy·dy + xx·dx), in pixel indices; fractional positions are
/// interpolated, positions outside the source are padded.
///
/// Start from a window and compose transforms in the order they act on the picture, e.g.
/// `Geometry.window(y: 0, x: 0, height: 256, width: 256).flipped(horizontally: true).turned(quarterTurns: 1)`.
/// An image, its mask and its instance map warped with one geometry stay aligned pixel for pixel. Flips, quarter
/// turns and windows map pixels to pixels exactly, so they copy values without interpolation error.
public struct Geometry: Equatable, Sendable {
    public let height: Int
    public let width: Int
    public let centerY: Double
    public let centerX: Double
    public let yy: Double, yx: Double, xy: Double, xx: Double

    /// The `height × width` window with top-left corner (`y`, `x`) of the source, unchanged.
    public static func window(y: Int, x: Int, height: Int, width: Int) -> Geometry {
        Geometry(height: height, width: width, centerY: Double(y) + Double(height - 1) / 2,
                 centerX: Double(x) + Double(width - 1) / 2, yy: 1, yx: 0, xy: 0, xx: 1)
    }

    /// Mirrors the output left–right (`horizontally`) and/or top–bottom (`vertically`).
    public func flipped(horizontally: Bool, vertically: Bool) -> Geometry {
        composed(vertically ? -1 : 1, 0, 0, horizontally ? -1 : 1, height: height, width: width)
    }

    /// Turns the output by `quarterTurns` quarter turns counter-clockwise as displayed (as `np.rot90` and
    /// `torch.rot90` over the (H, W) axes); an odd number of turns swaps the output's height and width.
    public func turned(quarterTurns: Int) -> Geometry {
        switch ((quarterTurns % 4) + 4) % 4 {
        case 1: return composed(0, 1, -1, 0, height: width, width: height)
        case 2: return composed(-1, 0, 0, -1, height: height, width: width)
        case 3: return composed(0, -1, 1, 0, height: width, width: height)
        default: return self
        }
    }

    /// Rotates the output by `degrees` counter-clockwise as displayed (torchvision's sense) about its centre; 90° is
    /// one quarter turn. The corners read source pixels from outside the window.
    public func rotated(degrees: Double) -> Geometry {
        guard degrees != 0 else { return self }
        let radians = degrees * .pi / 180
        let (c, s) = (cos(radians), sin(radians))
        return composed(c, s, -s, c, height: height, width: width)
    }

    /// Magnifies the output by `scale` about its centre: above 1 the window shows a smaller part of the source.
    public func zoomed(_ scale: Double) -> Geometry {
        guard scale != 1 else { return self }
        return composed(1 / scale, 0, 0, 1 / scale, height: height, width: width)
    }

    /// The source position output pixel (`y`, `x`) reads.
    public func source(y: Int, x: Int) -> (y: Double, x: Double) {
        let dy = Double(y) - Double(height - 1) / 2, dx = Double(x) - Double(width - 1) / 2
        return (centerY + yy * dy + yx * dx, centerX + xy * dy + xx * dx)
    }

    /// A transform of the output whose inverse maps new output offsets to old ones by [[a, b], [c, d]]: the source
    /// map becomes M · T⁻¹.
    private func composed(_ a: Double, _ b: Double, _ c: Double, _ d: Double, height: Int, width: Int) -> Geometry {
        Geometry(height: height, width: width, centerY: centerY, centerX: centerX,
                 yy: yy * a + yx * c, yx: yy * b + yx * d, xy: xy * a + xx * c, xx: xy * b + xx * d)
    }
}

extension Planes {
    /// These planes resampled through `geometry`: every channel alike, `.bilinear` for images, `.nearest` for label
    /// maps (ids are never blended); positions outside the planes are filled according to `padding`.
    public func warped(_ geometry: Geometry, filter: ResizeFilter, padding: PatchPadding = .reflect) -> Planes {
        let plane = height * width
        let values = self.values.withUnsafeBufferPointer { source in
            Warp(height: height, width: width, channelOffsets: (0..<channels).map { $0 * plane }, rowStride: width,
                 pixelStride: 1, divisor: 1, offset: 0)
                .run(source, geometry: geometry, filter: filter, padding: padding)
        }
        return Planes(unchecked: channels, height: geometry.height, width: geometry.width, values: values)
    }
}

extension Image {
    /// `colorPlanes(range:)` of this image resampled through `geometry` (bilinear), without converting the whole
    /// image first: the loader's path from a cached image to a patch.
    public func warpedColorPlanes(_ geometry: Geometry, range: PixelRange = .zeroToOne, padding: PatchPadding = .reflect) -> Planes {
        let maxValue = Float(self.maxValue)
        let (divisor, offset): (Float, Float) = range == .minusOneToOne ? (maxValue / 2, -1) : (maxValue, 0)
        let values = samples.withUnsafeBufferPointer { source in
            Warp(height: height, width: width, channelOffsets: channels >= 3 ? [0, 1, 2] : [0, 0, 0],
                 rowStride: width * channels, pixelStride: channels, divisor: divisor, offset: offset)
                .run(source, geometry: geometry, filter: .bilinear, padding: padding)
        }
        return Planes(unchecked: 3, height: geometry.height, width: geometry.width, values: values)
    }
}

protocol RasterSample { var floatValue: Float { get } }
extension Float: RasterSample { @inline(__always) var floatValue: Float { self } }
extension UInt16: RasterSample { @inline(__always) var floatValue: Float { Float(self) } }

/// A source raster's layout (planar floats or interleaved samples) and the map of its values, `v / divisor + offset`,
/// applied after interpolation.
private struct Warp {
    let height: Int
    let width: Int
    let channelOffsets: [Int]
    let rowStride: Int
    let pixelStride: Int
    let divisor: Float
    let offset: Float

    /// Planar `[channels, geometry.height, geometry.width]` output.
    func run<T: RasterSample>(_ source: UnsafeBufferPointer<T>, geometry g: Geometry, filter: ResizeFilter,
                              padding: PatchPadding) -> [Float] {
        let outPlane = g.height * g.width
        let channels = channelOffsets.count
        var out = [Float](repeating: offset, count: channels * outPlane)
        let (cy, cx) = (Float(g.centerY), Float(g.centerX))
        let (yy, yx, xy, xx) = (Float(g.yy), Float(g.yx), Float(g.xy), Float(g.xx))
        let halfHeight = Float(g.height - 1) / 2, halfWidth = Float(g.width - 1) / 2
        let (height, width, rowStride, pixelStride, divisor, offset) = (height, width, rowStride, pixelStride, divisor, offset)
        channelOffsets.withUnsafeBufferPointer { channelOffsets in
            out.withUnsafeMutableBufferPointer { out in
                for i in 0..<g.height {
                    let dy = Float(i) - halfHeight
                    let rowY = cy + yy * dy, rowX = cx + xy * dy
                    for j in 0..<g.width {
                        let dx = Float(j) - halfWidth
                        let sy = rowY + yx * dx, sx = rowX + xx * dx
                        let target = i * g.width + j
                        switch filter {
                        case .nearest:
                            guard let y = Planes.source(Int((sy + 0.5).rounded(.down)), length: height, padding),
                                  let x = Planes.source(Int((sx + 0.5).rounded(.down)), length: width, padding) else { continue }
                            let pixel = y * rowStride + x * pixelStride
                            for c in 0..<channels {
                                out[c * outPlane + target] = source[channelOffsets[c] + pixel].floatValue / divisor + offset
                            }
                        case .bilinear:
                            let fy = sy.rounded(.down), fx = sx.rounded(.down)
                            let wy = sy - fy, wx = sx - fx
                            let (y0, x0) = (Int(fy), Int(fx))
                            var (top, bottom, left, right) = (y0 * rowStride, (y0 + 1) * rowStride, x0 * pixelStride, (x0 + 1) * pixelStride)
                            if y0 < 0 || y0 + 1 >= height || x0 < 0 || x0 + 1 >= width {
                                // Near or past an edge: padded taps; one outside a zero-padded source reads 0.
                                top = Planes.source(y0, length: height, padding).map { $0 * rowStride } ?? -1
                                bottom = Planes.source(y0 + 1, length: height, padding).map { $0 * rowStride } ?? -1
                                left = Planes.source(x0, length: width, padding).map { $0 * pixelStride } ?? -1
                                right = Planes.source(x0 + 1, length: width, padding).map { $0 * pixelStride } ?? -1
                            }
                            for c in 0..<channels {
                                let base = channelOffsets[c]
                                @inline(__always) func tap(_ row: Int, _ column: Int) -> Float {
                                    row < 0 || column < 0 ? 0 : source[base + row + column].floatValue
                                }
                                let upper = tap(top, left) * (1 - wx) + tap(top, right) * wx
                                let lower = tap(bottom, left) * (1 - wx) + tap(bottom, right) * wx
                                out[c * outPlane + target] = (upper * (1 - wy) + lower * wy) / divisor + offset
                            }
                        }
                    }
                }
            }
        }
        return out
    }
}

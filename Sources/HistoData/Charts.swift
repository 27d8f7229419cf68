import Foundation
import HistoCore

/// An 8-bit RGB colour.
public struct RGB: Equatable, Sendable {
    public var r: UInt8, g: UInt8, b: UInt8
    public init(_ r: UInt8, _ g: UInt8, _ b: UInt8) { self.r = r; self.g = g; self.b = b }
}

/// Pictures of training runs as 8-bit RGB `Image`s (write them with `PNG.write`): loss curves and sample grids.
public enum Charts {
    public struct CurveOptions: Sendable {
        public var width = 640
        public var height = 400
        /// Plots the values on a log10 axis.
        public var logScale = false
        /// Weight of the past in the smoothed line: a bias-corrected exponential moving average (TensorBoard's
        /// smoothing); 0 follows the raw values.
        public var smoothing = 0.9
        public var background = RGB(255, 255, 255)
        public var axisColor = RGB(90, 90, 90)
        public var textColor = RGB(30, 30, 30)
        /// The raw values, drawn as dots under the smoothed line.
        public var pointColor = RGB(150, 180, 225)
        public var lineColor = RGB(20, 70, 170)
        public init() {}
    }

    /// A curve of `values` against `steps` (same count): raw values as dots, the smoothed line over them, a left
    /// and a bottom axis whose ends are labelled with the value range (the data's minimum and maximum) and the
    /// step range, in a built-in 5×7 pixel font (drawn at 2× from 600 pixels up, 3× from 900, …). Points whose
    /// value is not finite (or not positive on a log scale) are left out.
    public static func lossCurve(steps: [Int], values: [Double], options: CurveOptions = CurveOptions()) throws -> Image {
        func invalid(_ message: String) -> EngineError { .invalidValue(op: "Charts.lossCurve", message: message) }
        guard steps.count == values.count else { throw invalid("\(steps.count) steps but \(values.count) values") }
        guard options.smoothing >= 0 && options.smoothing < 1 else {
            throw invalid("smoothing \(options.smoothing) is outside [0, 1)")
        }
        let kept = zip(steps, values).filter { $0.1.isFinite && (!options.logScale || $0.1 > 0) }
        guard !kept.isEmpty else {
            throw invalid("none of the \(values.count) values is finite\(options.logScale ? " and positive (log scale)" : "")")
        }
        let transform = { (v: Double) in options.logScale ? Foundation.log10(v) : v }
        let untransform = { (v: Double) in options.logScale ? Foundation.pow(10, v) : v }

        var smoothed: [Double] = []
        var average = 0.0, weight = 1.0
        for (_, value) in kept {
            average = options.smoothing * average + (1 - options.smoothing) * value
            weight *= options.smoothing
            smoothed.append(average / (1 - weight))
        }
        let ys = kept.map { transform($0.1) }
        var (yLow, yHigh) = (ys.min()!, ys.max()!)
        if yLow == yHigh { yLow -= 0.5; yHigh += 0.5 }
        var (xLow, xHigh) = (Double(kept.map(\.0).min()!), Double(kept.map(\.0).max()!))
        if xLow == xHigh { xLow -= 1; xHigh += 1 }

        // Layout: value labels left of the vertical axis, step labels under the horizontal one.
        let scale = max(1, min(options.width, options.height) / 300)
        let topLabel = label(untransform(yHigh)), bottomLabel = label(untransform(yLow))
        let gap = 3 * scale
        let axisX = max(topLabel.count, bottomLabel.count) * Font.advance * scale + 2 * gap
        let left = axisX + gap, right = options.width - 1 - 4 * scale
        let top = 6 * scale, bottom = options.height - 1 - Font.height * scale - 3 * gap
        let axisY = bottom + gap
        guard right - left >= 8, bottom - top >= 8 else {
            throw invalid("\(options.width)×\(options.height) pixels leave no room for the plot beside its labels")
        }
        func px(_ step: Double) -> Int { left + Int(((step - xLow) / (xHigh - xLow) * Double(right - left)).rounded()) }
        func py(_ value: Double) -> Int { bottom - Int(((value - yLow) / (yHigh - yLow) * Double(bottom - top)).rounded()) }

        var canvas = Canvas(width: options.width, height: options.height, background: options.background)
        canvas.fill(x: axisX, y: top, width: scale, height: axisY - top + scale, options.axisColor)
        canvas.fill(x: axisX, y: axisY, width: right - axisX + 1, height: scale, options.axisColor)
        for y in [top, bottom] {
            canvas.fill(x: axisX - gap, y: y, width: gap, height: scale, options.axisColor)
        }
        for x in [left, right] {
            canvas.fill(x: x, y: axisY, width: scale, height: gap, options.axisColor)
        }
        // Value labels end one gap left of the ticks, centred on them; step labels hang under the step ticks.
        let labelRight = axisX - gap - scale
        let halfGlyph = Font.height * scale / 2
        canvas.text(topLabel, x: labelRight + 1 - Font.textWidth(topLabel, scale: scale), y: top - halfGlyph, scale: scale, options.textColor)
        canvas.text(bottomLabel, x: labelRight + 1 - Font.textWidth(bottomLabel, scale: scale), y: bottom - halfGlyph,
                    scale: scale, options.textColor)
        let firstStep = String(Int(xLow)), lastStep = String(Int(xHigh))
        canvas.text(firstStep, x: left, y: axisY + 2 * gap, scale: scale, options.textColor)
        canvas.text(lastStep, x: right + scale - Font.textWidth(lastStep, scale: scale), y: axisY + 2 * gap, scale: scale, options.textColor)

        let dot = kept.count * 4 <= right - left ? 3 * scale : scale
        for ((step, _), y) in zip(kept, ys) {
            canvas.fill(x: px(Double(step)) - dot / 2, y: py(y) - dot / 2, width: dot, height: dot, options.pointColor)
        }
        let line = zip(kept, smoothed).map { (px(Double($0.0.0)), py(transform($0.1))) }
        for (a, b) in zip(line, line.dropFirst()) { canvas.line(from: a, to: b, thickness: 2 * scale, options.lineColor) }
        if line.count == 1 { canvas.line(from: line[0], to: line[0], thickness: 2 * scale, options.lineColor) }
        return canvas.image()
    }

    /// Lays out images of one size in a grid, row by row: image k goes to row k / columns and column k % columns,
    /// its top-left pixel at (padding + column·(W + padding), padding + row·(H + padding)); the grid is
    /// columns·W + (columns + 1)·padding wide. Planes have 3 channels (RGB) or 1 (gray); values are mapped from
    /// `range` to 0…255 (rounded, clamped). `columns` defaults to ⌈√N⌉.
    public static func imageGrid(_ images: [Planes], columns: Int? = nil, padding: Int = 2, range: PixelRange = .minusOneToOne,
                                 paddingColor: RGB = RGB(255, 255, 255)) throws -> Image {
        func invalid(_ message: String) -> EngineError { .invalidValue(op: "Charts.imageGrid", message: message) }
        guard let first = images.first else { throw invalid("no images") }
        if let odd = images.firstIndex(where: { $0.height != first.height || $0.width != first.width || ![1, 3].contains($0.channels) }) {
            throw invalid("image \(odd) has shape \(describe(images[odd].shape)); every image must be [3 or 1, \(first.height), \(first.width)] like image 0")
        }
        let columns = columns ?? Int(Foundation.ceil(Foundation.sqrt(Double(images.count))))
        guard columns >= 1, padding >= 0 else { throw invalid("columns \(columns) must be at least 1 and padding \(padding) not negative") }
        let rows = (images.count + columns - 1) / columns
        let (h, w) = (first.height, first.width)
        var canvas = Canvas(width: columns * w + (columns + 1) * padding, height: rows * h + (rows + 1) * padding,
                            background: paddingColor)
        let (scale, offset): (Float, Float) = range == .minusOneToOne ? (127.5, 1) : (255, 0)
        for (k, image) in images.enumerated() {
            let x0 = padding + k % columns * (w + padding), y0 = padding + k / columns * (h + padding)
            for c in 0..<3 {
                let source = image.channels == 3 ? c : 0
                for y in 0..<h {
                    for x in 0..<w {
                        let v = ((image[source, y, x] + offset) * scale).rounded()
                        canvas.pixels[((y0 + y) * canvas.width + x0 + x) * 3 + c] = v.isNaN ? 0 : UInt16(min(max(v, 0), 255))
                    }
                }
            }
        }
        return canvas.image()
    }

    /// `imageGrid` of a `[N, C, H, W]` batch (C = 3 or 1), e.g. generated samples in [−1, 1].
    public static func imageGrid(_ batch: Tensor, columns: Int? = nil, padding: Int = 2, range: PixelRange = .minusOneToOne,
                                 paddingColor: RGB = RGB(255, 255, 255)) throws -> Image {
        guard batch.rank == 4, [1, 3].contains(batch.shape[1]), batch.count > 0 else {
            throw EngineError.invalidValue(op: "Charts.imageGrid", message: "expected images [N, 3 or 1, H, W], got \(describe(batch.shape))")
        }
        let values = try batch.toArray()
        let size = batch.count / batch.shape[0]
        let images = try (0..<batch.shape[0]).map {
            try Planes(channels: batch.shape[1], height: batch.shape[2], width: batch.shape[3],
                       values: Array(values[($0 * size)..<(($0 + 1) * size)]))
        }
        return try imageGrid(images, columns: columns, padding: padding, range: range, paddingColor: paddingColor)
    }

    /// Four significant digits: `0.6931`, `1.5e-05`, `3000`.
    static func label(_ value: Double) -> String { String(format: "%.4g", value) }
}

/// An RGB drawing surface with the primitives the charts need.
private struct Canvas {
    let width: Int, height: Int
    /// Interleaved RGB samples, as `Image` stores them.
    var pixels: [UInt16]

    init(width: Int, height: Int, background: RGB) {
        self.width = width
        self.height = height
        pixels = [UInt16](repeating: 0, count: width * height * 3)
        for p in 0..<(width * height) { set(p % width, p / width, background) }
    }

    mutating func set(_ x: Int, _ y: Int, _ color: RGB) {
        guard x >= 0, x < width, y >= 0, y < height else { return }
        let i = (y * width + x) * 3
        pixels[i] = UInt16(color.r); pixels[i + 1] = UInt16(color.g); pixels[i + 2] = UInt16(color.b)
    }

    mutating func fill(x: Int, y: Int, width w: Int, height h: Int, _ color: RGB) {
        for yy in y..<(y + max(h, 0)) { for xx in x..<(x + max(w, 0)) { set(xx, yy, color) } }
    }

    /// Bresenham's line with a square brush `thickness` pixels wide.
    mutating func line(from a: (Int, Int), to b: (Int, Int), thickness: Int, _ color: RGB) {
        var (x, y) = a
        let dx = abs(b.0 - x), dy = -abs(b.1 - y), sx = x < b.0 ? 1 : -1, sy = y < b.1 ? 1 : -1
        var error = dx + dy
        while true {
            fill(x: x - thickness / 2, y: y - thickness / 2, width: thickness, height: thickness, color)
            if x == b.0 && y == b.1 { return }
            let e2 = 2 * error
            if e2 >= dy { error += dy; x += sx }
            if e2 <= dx { error += dx; y += sy }
        }
    }

    /// `text` with its top-left corner at (x, y), each font pixel drawn `scale`×`scale`.
    mutating func text(_ text: String, x: Int, y: Int, scale: Int, _ color: RGB) {
        for (i, character) in text.enumerated() {
            guard let rows = Font.glyphs[character] else { continue }
            for (row, bits) in rows.enumerated() {
                for column in 0..<Font.width where bits & (0x10 >> column) != 0 {
                    fill(x: x + (i * Font.advance + column) * scale, y: y + row * scale, width: scale, height: scale, color)
                }
            }
        }
    }

    func image() -> Image { Image(unchecked: width, height: height, channels: 3, bitDepth: 8, samples: pixels) }
}

/// A 5×7 pixel font of the characters number labels use (`%g` output); each row's bit 4 is the leftmost pixel.
private enum Font {
    static let width = 5, height = 7, advance = 6

    /// Pixels from the first glyph's left edge to the last one's right edge.
    static func textWidth(_ text: String, scale: Int) -> Int { (text.count * advance - 1) * scale }
    static let glyphs: [Character: [UInt8]] = [
        "0": [0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110],
        "1": [0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110],
        "2": [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111],
        "3": [0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110],
        "4": [0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010],
        "5": [0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110],
        "6": [0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110],
        "7": [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000],
        "8": [0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110],
        "9": [0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100],
        ".": [0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b01100, 0b01100],
        "-": [0b00000, 0b00000, 0b00000, 0b11111, 0b00000, 0b00000, 0b00000],
        "+": [0b00000, 0b00100, 0b00100, 0b11111, 0b00100, 0b00100, 0b00000],
        "e": [0b00000, 0b00000, 0b01110, 0b10001, 0b11111, 0b10000, 0b01110],
    ]
}

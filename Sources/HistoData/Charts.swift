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

        let topLabel = label(untransform(yHigh)), bottomLabel = label(untransform(yLow))
        let frame = try Frame(op: "Charts.lossCurve", width: options.width, height: options.height,
                              yLabels: [topLabel, bottomLabel])
        let px = AxisMap(low: xLow, high: xHigh, start: frame.left, end: frame.right)
        let py = AxisMap(low: yLow, high: yHigh, start: frame.bottom, end: frame.top)

        var canvas = Canvas(width: options.width, height: options.height, background: options.background)
        // The value axis is labelled with the data's range, the step axis with the first and last step.
        frame.draw(on: &canvas, yTicks: [(frame.top, topLabel), (frame.bottom, bottomLabel)],
                   xTicks: [(frame.left, String(Int(xLow))), (frame.right, String(Int(xHigh)))],
                   axisColor: options.axisColor, textColor: options.textColor)
        let scale = frame.scale
        let dot = kept.count * 4 <= frame.right - frame.left ? 3 * scale : scale
        for ((step, _), y) in zip(kept, ys) {
            canvas.fill(x: px(Double(step)) - dot / 2, y: py(y) - dot / 2, width: dot, height: dot, options.pointColor)
        }
        let line = zip(kept, smoothed).map { (px(Double($0.0.0)), py(transform($0.1))) }
        for (a, b) in zip(line, line.dropFirst()) { canvas.line(from: a, to: b, thickness: 2 * scale, options.lineColor) }
        if line.count == 1 { canvas.line(from: line[0], to: line[0], thickness: 2 * scale, options.lineColor) }
        return canvas.image()
    }

    /// A point of a line chart, with an error bar from `low` to `high` (e.g. a confidence interval), drawn when both
    /// are given and finite.
    public struct LinePoint: Equatable, Sendable {
        public var x: Double
        public var y: Double
        public var low: Double?
        public var high: Double?
        public init(x: Double, y: Double, low: Double? = nil, high: Double? = nil) {
            self.x = x
            self.y = y
            self.low = low
            self.high = high
        }

        var errorBar: (low: Double, high: Double)? {
            guard let low, let high, low.isFinite, high.isFinite else { return nil }
            return (low, high)
        }
    }

    /// One line of a line chart: its name (shown in the legend), points (joined in order of x) and colour.
    public struct LineSeries: Equatable, Sendable {
        public var name: String
        public var points: [LinePoint]
        /// nil: `Charts.palette` at the series' index (cycling).
        public var color: RGB?
        public init(name: String, points: [LinePoint], color: RGB? = nil) {
            self.name = name
            self.points = points
            self.color = color
        }
    }

    /// A labelled position on an axis.
    public struct AxisTick: Equatable, Sendable {
        public var value: Double
        public var label: String
        public init(_ value: Double, _ label: String) {
            self.value = value
            self.label = label
        }
    }

    /// Size, titles, x axis and colours of `lineChart`.
    public struct LineChartOptions: Sendable {
        public var width = 800
        public var height = 500
        /// Written under the x axis's tick labels.
        public var xTitle = ""
        /// Written above the y axis (horizontal text reads more easily than a rotated one).
        public var yTitle = ""
        /// Where the x axis is labelled; nil: at every distinct x of the data, labelled with its value (`%.4g`).
        /// Categorical data: put the categories at x = 0, 1, … and label them here.
        public var xTicks: [AxisTick]?
        /// Places x on a log10 axis (every x and tick must then be positive): shares like 1/32 … 1/2 spread evenly.
        public var logScaleX = false
        /// Pixels between consecutive series at one x (series k of n is shifted right by (k − (n − 1)/2)·dodge),
        /// so that their error bars stay apart.
        public var dodge = 0
        public var background = RGB(255, 255, 255)
        public var axisColor = RGB(90, 90, 90)
        /// Horizontal lines at the y ticks, under the data.
        public var gridColor = RGB(225, 225, 225)
        public var textColor = RGB(30, 30, 30)
        public init() {}
    }

    /// Distinct colours for series, in order: Tableau 10 (matplotlib's default cycle).
    public static let palette: [RGB] = [
        RGB(31, 119, 180), RGB(255, 127, 14), RGB(44, 160, 44), RGB(214, 39, 40), RGB(148, 103, 189),
        RGB(140, 86, 75), RGB(227, 119, 194), RGB(127, 127, 127), RGB(188, 189, 34), RGB(23, 190, 207),
    ]

    /// A drawn line chart and where its data land.
    public struct LineChart: Sendable {
        public let image: Image
        fileprivate let xMap: AxisMap, yMap: AxisMap
        fileprivate let logScaleX: Bool

        /// The pixel (column, row) at the centre of the data point (x, y), before its series' dodge.
        public func pixel(x: Double, y: Double) -> (x: Int, y: Int) {
            (xMap(logScaleX ? Foundation.log10(x) : x), yMap(y))
        }
    }

    /// Series of points against x, each drawn in its colour as a line through its points in order of x, a square
    /// marker on each point and the point's error bar (a vertical line with caps). The y axis is labelled at round
    /// values (steps of 1, 2 or 5 × 10^k) with light grid lines, the x axis at `options.xTicks`; the legend (the
    /// series' names by a line of their colour) stands right of the plot. Points whose x or y is not finite are left
    /// out. Text is in the built-in font, scaled like `lossCurve`'s.
    public static func lineChart(_ series: [LineSeries],
                                 options: LineChartOptions = LineChartOptions()) throws -> LineChart {
        func invalid(_ message: String) -> EngineError { .invalidValue(op: "Charts.lineChart", message: message) }
        let plotted = series.map { $0.points.filter { $0.x.isFinite && $0.y.isFinite }.sorted { $0.x < $1.x } }
        let points = plotted.flatMap { $0 }
        guard !points.isEmpty else {
            throw invalid("none of the \(series.count) series has a point with finite x and y")
        }
        let xTicks = options.xTicks ?? Set(points.map(\.x)).sorted().map { AxisTick($0, label($0)) }
        let xs = points.map(\.x) + xTicks.map(\.value).filter(\.isFinite)
        if options.logScaleX, let nonPositive = xs.first(where: { $0 <= 0 }) {
            throw invalid("x = \(label(nonPositive)) cannot be placed on a log scale")
        }
        let transformX = { (x: Double) in options.logScaleX ? Foundation.log10(x) : x }
        var (xLow, xHigh) = (xs.map(transformX).min()!, xs.map(transformX).max()!)
        // A margin keeps the first and last markers and error bars off the axes.
        let xMargin = xLow == xHigh ? 1 : 0.06 * (xHigh - xLow)
        xLow -= xMargin
        xHigh += xMargin
        let yTicks = roundTicks(covering: points.flatMap { [$0.y] + ($0.errorBar.map { [$0.low, $0.high] } ?? []) })

        let scale = Frame.textScale(width: options.width, height: options.height)
        let gap = 3 * scale, lineHeight = Font.height * scale, swatch = 3 * Font.advance * scale
        let nameWidth = series.map { Font.textWidth($0.name, scale: scale) }.max() ?? 0
        let legendWidth = series.isEmpty ? 0 : swatch + nameWidth + 4 * gap
        let frame = try Frame(op: "Charts.lineChart", width: options.width, height: options.height,
                              yLabels: yTicks.map(\.label), xTitle: options.xTitle, yTitle: options.yTitle,
                              rightMargin: legendWidth)
        let px = AxisMap(low: xLow, high: xHigh, start: frame.left, end: frame.right)
        let py = AxisMap(low: yTicks.first!.value, high: yTicks.last!.value, start: frame.bottom, end: frame.top)

        var canvas = Canvas(width: options.width, height: options.height, background: options.background)
        for tick in yTicks {
            canvas.fill(x: frame.left, y: py(tick.value), width: frame.right - frame.left + 1, height: 1,
                        options.gridColor)
        }
        frame.draw(on: &canvas, yTicks: yTicks.map { (py($0.value), $0.label) },
                   xTicks: xTicks.filter { $0.value.isFinite }.map { (px(transformX($0.value)), $0.label) },
                   axisColor: options.axisColor, textColor: options.textColor)

        let marker = 4 * scale + 1, cap = 3 * scale
        func drawMarker(_ x: Int, _ y: Int, _ color: RGB) {
            canvas.fill(x: x - marker / 2, y: y - marker / 2, width: marker, height: marker, color)
        }
        for (k, points) in plotted.enumerated() {
            let color = series[k].color ?? palette[k % palette.count]
            let shift = Int(((Double(k) - Double(series.count - 1) / 2) * Double(options.dodge)).rounded())
            let centres = points.map { (px(transformX($0.x)) + shift, py($0.y)) }
            for (point, centre) in zip(points, centres) {
                guard let bar = point.errorBar else { continue }
                let (x, low, high) = (centre.0, py(bar.low), py(bar.high))
                canvas.line(from: (x, low), to: (x, high), thickness: scale, color)
                for y in [low, high] { canvas.line(from: (x - cap, y), to: (x + cap, y), thickness: scale, color) }
            }
            for (a, b) in zip(centres, centres.dropFirst()) { canvas.line(from: a, to: b, thickness: 2 * scale, color) }
            for centre in centres { drawMarker(centre.0, centre.1, color) }

            let legendX = options.width - legendWidth + gap, rowY = frame.top + k * (lineHeight + 2 * gap)
            canvas.line(from: (legendX, rowY + lineHeight / 2), to: (legendX + swatch, rowY + lineHeight / 2),
                        thickness: 2 * scale, color)
            drawMarker(legendX + swatch / 2, rowY + lineHeight / 2, color)
            canvas.text(series[k].name, x: legendX + swatch + 2 * gap, y: rowY, scale: scale, options.textColor)
        }
        return LineChart(image: canvas.image(), xMap: px, yMap: py, logScaleX: options.logScaleX)
    }

    /// Round values covering `values`: the multiples of a step of 1, 2 or 5 × 10^k that gives about five
    /// intervals, from the largest multiple ≤ the minimum to the smallest ≥ the maximum, each labelled with the
    /// decimals the step needs. Equal values are widened by 5% (or 0.05 around 0) to have a range.
    static func roundTicks(covering values: [Double]) -> [AxisTick] {
        var (low, high) = (values.min()!, values.max()!)
        if low == high {
            let widening = low == 0 ? 0.05 : 0.05 * abs(low)
            (low, high) = (low - widening, high + widening)
        }
        let rawStep = (high - low) / 5
        let magnitude = Foundation.pow(10, Foundation.floor(Foundation.log10(rawStep)))
        let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= rawStep * (1 - 1e-9) }!
        // The tolerances keep a value that is a multiple of the step up to rounding from adding a tick.
        let first = Int(Foundation.floor(low / step + 1e-9)), last = Int(Foundation.ceil(high / step - 1e-9))
        let decimals = max(0, -Int(Foundation.floor(Foundation.log10(step) + 1e-9)))
        return (first...last).map { k in
            let value = Double(k) * step
            return AxisTick(value, String(format: "%.\(decimals)f", k == 0 ? 0 : value))
        }
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

/// The frame of a chart: a left and a bottom axis with their ticks and labels in the built-in font (value labels
/// right-aligned left of the vertical axis, centred on their ticks; x labels centred under theirs), the y title
/// above the vertical axis and the x title under the x labels, and a free margin on the right (for a legend).
/// `left…right` × `top…bottom` is the data area, one gap inside the axes.
private struct Frame {
    let width: Int, height: Int, scale: Int, gap: Int
    let axisX: Int, axisY: Int, left: Int, right: Int, top: Int, bottom: Int
    let xTitle: String, yTitle: String

    /// Text is drawn at 1× below 600 pixels (the smaller side), 2× from 600, 3× from 900, ….
    static func textScale(width: Int, height: Int) -> Int { max(1, min(width, height) / 300) }

    init(op: String, width: Int, height: Int, yLabels: [String], xTitle: String = "", yTitle: String = "",
         rightMargin: Int = 0) throws {
        (self.width, self.height, self.xTitle, self.yTitle) = (width, height, xTitle, yTitle)
        scale = Self.textScale(width: width, height: height)
        gap = 3 * scale
        let titleHeight = Font.height * scale + 2 * gap
        axisX = (yLabels.map(\.count).max() ?? 0) * Font.advance * scale + 2 * gap
        left = axisX + gap
        right = width - 1 - 4 * scale - rightMargin
        // The y title gets an extra gap: the top value label reaches half a line above the plot.
        top = 6 * scale + (yTitle.isEmpty ? 0 : titleHeight + gap)
        bottom = height - 1 - Font.height * scale - 3 * gap - (xTitle.isEmpty ? 0 : titleHeight)
        axisY = bottom + gap
        guard right - left >= 8, bottom - top >= 8 else {
            let message = "\(width)×\(height) pixels leave no room for the plot beside its labels"
            throw EngineError.invalidValue(op: op, message: message)
        }
    }

    /// Draws the axes, a tick and a label at each (pixel, label) of `yTicks` (rows) and `xTicks` (columns), and the
    /// titles.
    func draw(on canvas: inout Canvas, yTicks: [(Int, String)], xTicks: [(Int, String)], axisColor: RGB,
              textColor: RGB) {
        canvas.fill(x: axisX, y: top, width: scale, height: axisY - top + scale, axisColor)
        canvas.fill(x: axisX, y: axisY, width: right - axisX + 1, height: scale, axisColor)
        let halfGlyph = Font.height * scale / 2
        // Value labels end one gap left of the ticks; x labels hang under theirs, kept inside the image.
        let labelRight = axisX - gap - scale
        for (y, label) in yTicks {
            canvas.fill(x: axisX - gap, y: y, width: gap, height: scale, axisColor)
            canvas.text(label, x: labelRight + 1 - Font.textWidth(label, scale: scale), y: y - halfGlyph, scale: scale,
                        textColor)
        }
        let xLabelY = axisY + 2 * gap
        for (x, label) in xTicks {
            canvas.fill(x: x, y: axisY, width: scale, height: gap, axisColor)
            text(label, centredOn: x, y: xLabelY, on: &canvas, textColor)
        }
        text(xTitle, centredOn: (left + right) / 2, y: xLabelY + Font.height * scale + gap, on: &canvas, textColor)
        canvas.text(yTitle, x: gap, y: 6 * scale, scale: scale, textColor)
    }

    private func text(_ text: String, centredOn x: Int, y: Int, on canvas: inout Canvas, _ color: RGB) {
        let textWidth = Font.textWidth(text, scale: scale)
        canvas.text(text, x: min(max(0, x - textWidth / 2), width - textWidth), y: y, scale: scale, color)
    }
}

/// Maps a data interval linearly onto pixels: `low` to `start`, `high` to `end` (rounded to the nearest pixel).
private struct AxisMap: Sendable {
    let low: Double, high: Double
    let start: Int, end: Int

    func callAsFunction(_ value: Double) -> Int {
        start + Int(((value - low) / (high - low) * Double(end - start)).rounded())
    }
}

/// A 5×7 pixel font of printable ASCII and `±` (other characters are drawn as blanks); each row's bit 4 is the
/// leftmost pixel. The lower-case descenders (g, j, p, q, y) have an eighth row, below the line.
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
        "A": [0b01110, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001],
        "B": [0b11110, 0b10001, 0b10001, 0b11110, 0b10001, 0b10001, 0b11110],
        "C": [0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110],
        "D": [0b11100, 0b10010, 0b10001, 0b10001, 0b10001, 0b10010, 0b11100],
        "E": [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111],
        "F": [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b10000],
        "G": [0b01110, 0b10001, 0b10000, 0b10111, 0b10001, 0b10001, 0b01111],
        "H": [0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001],
        "I": [0b01110, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110],
        "J": [0b00111, 0b00010, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100],
        "K": [0b10001, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b10001],
        "L": [0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111],
        "M": [0b10001, 0b11011, 0b10101, 0b10101, 0b10001, 0b10001, 0b10001],
        "N": [0b10001, 0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001],
        "O": [0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110],
        "P": [0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000],
        "Q": [0b01110, 0b10001, 0b10001, 0b10001, 0b10101, 0b10010, 0b01101],
        "R": [0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001],
        "S": [0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110],
        "T": [0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100],
        "U": [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110],
        "V": [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100],
        "W": [0b10001, 0b10001, 0b10001, 0b10101, 0b10101, 0b10101, 0b01010],
        "X": [0b10001, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b10001],
        "Y": [0b10001, 0b10001, 0b10001, 0b01010, 0b00100, 0b00100, 0b00100],
        "Z": [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b11111],
        "a": [0b00000, 0b00000, 0b01110, 0b00001, 0b01111, 0b10001, 0b01111],
        "b": [0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b11110],
        "c": [0b00000, 0b00000, 0b01110, 0b10000, 0b10000, 0b10001, 0b01110],
        "d": [0b00001, 0b00001, 0b01101, 0b10011, 0b10001, 0b10001, 0b01111],
        "f": [0b00110, 0b01001, 0b01000, 0b11100, 0b01000, 0b01000, 0b01000],
        "g": [0b00000, 0b00000, 0b01111, 0b10001, 0b10001, 0b01111, 0b00001, 0b01110],
        "h": [0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001],
        "i": [0b00100, 0b00000, 0b01100, 0b00100, 0b00100, 0b00100, 0b01110],
        "j": [0b00010, 0b00000, 0b00110, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100],
        "k": [0b10000, 0b10000, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010],
        "l": [0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110],
        "m": [0b00000, 0b00000, 0b11010, 0b10101, 0b10101, 0b10001, 0b10001],
        "n": [0b00000, 0b00000, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001],
        "o": [0b00000, 0b00000, 0b01110, 0b10001, 0b10001, 0b10001, 0b01110],
        "p": [0b00000, 0b00000, 0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000],
        "q": [0b00000, 0b00000, 0b01111, 0b10001, 0b10001, 0b01111, 0b00001, 0b00001],
        "r": [0b00000, 0b00000, 0b10110, 0b11001, 0b10000, 0b10000, 0b10000],
        "s": [0b00000, 0b00000, 0b01110, 0b10000, 0b01110, 0b00001, 0b11110],
        "t": [0b01000, 0b01000, 0b11100, 0b01000, 0b01000, 0b01001, 0b00110],
        "u": [0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b10011, 0b01101],
        "v": [0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100],
        "w": [0b00000, 0b00000, 0b10001, 0b10001, 0b10101, 0b10101, 0b01010],
        "x": [0b00000, 0b00000, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001],
        "y": [0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b01111, 0b00001, 0b01110],
        "z": [0b00000, 0b00000, 0b11111, 0b00010, 0b00100, 0b01000, 0b11111],
        "/": [0b00000, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b00000],
        "%": [0b11000, 0b11001, 0b00010, 0b00100, 0b01000, 0b10011, 0b00011],
        "(": [0b00010, 0b00100, 0b01000, 0b01000, 0b01000, 0b00100, 0b00010],
        ")": [0b01000, 0b00100, 0b00010, 0b00010, 0b00010, 0b00100, 0b01000],
        ":": [0b00000, 0b01100, 0b01100, 0b00000, 0b01100, 0b01100, 0b00000],
        ",": [0b00000, 0b00000, 0b00000, 0b00000, 0b01100, 0b00100, 0b01000],
        "_": [0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b11111],
        "=": [0b00000, 0b00000, 0b11111, 0b00000, 0b11111, 0b00000, 0b00000],
        "*": [0b00000, 0b00100, 0b10101, 0b01110, 0b10101, 0b00100, 0b00000],
        "'": [0b01100, 0b00100, 0b01000, 0b00000, 0b00000, 0b00000, 0b00000],
        "&": [0b01100, 0b10010, 0b10100, 0b01000, 0b10101, 0b10010, 0b01101],
        "[": [0b01110, 0b01000, 0b01000, 0b01000, 0b01000, 0b01000, 0b01110],
        "]": [0b01110, 0b00010, 0b00010, 0b00010, 0b00010, 0b00010, 0b01110],
        "<": [0b00010, 0b00100, 0b01000, 0b10000, 0b01000, 0b00100, 0b00010],
        ">": [0b01000, 0b00100, 0b00010, 0b00001, 0b00010, 0b00100, 0b01000],
        "#": [0b01010, 0b01010, 0b11111, 0b01010, 0b11111, 0b01010, 0b01010],
        "!": [0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00000, 0b00100],
        "?": [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b00000, 0b00100],
        ";": [0b00000, 0b01100, 0b01100, 0b00000, 0b01100, 0b00100, 0b01000],
        "|": [0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100],
        "±": [0b00100, 0b00100, 0b11111, 0b00100, 0b00100, 0b00000, 0b11111],

    ]
}

import Foundation
import HistoCore
@testable import HistoData
import XCTest

final class ChartTests: XCTestCase {
    private func pixel(_ image: Image, _ x: Int, _ y: Int) -> [UInt16] {
        Array(image.samples[((y * image.width + x) * 3)..<((y * image.width + x) * 3 + 3)])
    }

    private func rgb(_ color: RGB) -> [UInt16] { [UInt16(color.r), UInt16(color.g), UInt16(color.b)] }

    /// Rows (top to bottom) holding `color` in column `x`.
    private func rows(of color: RGB, in image: Image, column x: Int) -> [Int] {
        (0..<image.height).filter { pixel(image, x, $0) == rgb(color) }
    }

    /// Columns holding `color` anywhere.
    private func columns(of color: RGB, in image: Image) -> [Int] {
        (0..<image.width).filter { !rows(of: color, in: image, column: $0).isEmpty }
    }

    func testGridPutsImageKInItsCell() throws {
        // Five 3-channel 3×4 images with distinct exact 8-bit values (range 0…1), and one gray image.
        let (h, w) = (3, 4)
        let value = { (k: Int, c: Int, y: Int, x: Int) in k * 40 + c * 12 + y * 4 + x }
        var images = try (0..<5).map { k in
            try Planes(channels: 3, height: h, width: w, values: (0..<(3 * h * w)).map { i in
                Float(value(k, i / (h * w), i / w % h, i % w)) / 255
            })
        }
        images.append(try Planes(channels: 1, height: h, width: w, values: (0..<(h * w)).map { Float(200 + $0) / 255 }))
        let pad = RGB(1, 2, 3)
        let grid = try Charts.imageGrid(images, columns: 4, padding: 2, range: .zeroToOne, paddingColor: pad)
        XCTAssertEqual([grid.width, grid.height, grid.channels, grid.bitDepth], [4 * w + 5 * 2, 2 * h + 3 * 2, 3, 8])

        var covered = Set<Int>()
        for k in 0..<6 {
            let x0 = 2 + k % 4 * (w + 2), y0 = 2 + k / 4 * (h + 2)
            for y in 0..<h {
                for x in 0..<w {
                    let expected = k < 5 ? (0..<3).map { UInt16(value(k, $0, y, x)) } : [UInt16](repeating: UInt16(200 + y * w + x), count: 3)
                    XCTAssertEqual(pixel(grid, x0 + x, y0 + y), expected, "image \(k) at (\(x), \(y))")
                    covered.insert((y0 + y) * grid.width + x0 + x)
                }
            }
        }
        for p in 0..<(grid.width * grid.height) where !covered.contains(p) {
            XCTAssertEqual(pixel(grid, p % grid.width, p / grid.width), rgb(pad), "padding or empty cell at \(p)")
        }

        // The batch tensor gives the same grid; the default is ⌈√N⌉ columns.
        let batch = Tensor(images.prefix(5).flatMap(\.values), shape: [5, 3, h, w])
        let fromTensor = try Charts.imageGrid(batch, columns: 4, padding: 2, range: .zeroToOne, paddingColor: pad)
        XCTAssertEqual(Array(fromTensor.samples.prefix(grid.width * (h + 2) * 3)), Array(grid.samples.prefix(grid.width * (h + 2) * 3)))
        XCTAssertEqual(try Charts.imageGrid(batch, padding: 0).width, 3 * w)
        XCTAssertThrowsError(try Charts.imageGrid(Tensor.zeros([2, 2, h, w]))) { XCTAssertTrue("\($0)".contains("[2, 2, 3, 4]"), "\($0)") }
        XCTAssertThrowsError(try Charts.imageGrid([images[0], try Planes(channels: 3, height: 2, width: 2, values: Array(repeating: 0, count: 12))])) {
            XCTAssertTrue("\($0)".contains("image 1 has shape [3, 2, 2]"), "\($0)")
        }
    }

    func testGridOfMinusOneToOnePlanesReproducesTheImage() throws {
        let image = try Support.image(width: 7, height: 5, channels: 3, bitDepth: 8, seed: 3)
        let grid = try Charts.imageGrid([image.colorPlanes()], padding: 0)
        XCTAssertEqual(grid, image)
        let path = try Support.temporaryFolder(self).appendingPathComponent("grid.png").path
        try PNG.write(grid, to: path)
        XCTAssertEqual(try PNG.read(path: path), image)
        // Out-of-range values are clamped.
        let clamped = try Charts.imageGrid([try Planes(channels: 1, height: 1, width: 2, values: [-3, 2])], padding: 0)
        XCTAssertEqual(clamped.samples, [0, 0, 0, 255, 255, 255])
    }

    func testDecreasingCurveRunsFromTopLeftToBottomRight() throws {
        var options = Charts.CurveOptions()
        options.width = 320
        options.height = 200
        var values = (0..<100).map { 2 * Foundation.exp(-Double($0) / 20) }
        values[50] = .nan  // a diverged step is left out, not an error
        let curve = try Charts.lossCurve(steps: Array(1...100), values: values, options: options)
        XCTAssertEqual([curve.width, curve.height, curve.channels, curve.bitDepth], [320, 200, 3, 8])

        let line = columns(of: options.lineColor, in: curve)
        let (first, last) = (line.first!, line.last!)
        XCTAssertGreaterThan(last - first, 320 * 2 / 3, "the line spans the plot's width")
        XCTAssertLessThan(rows(of: options.lineColor, in: curve, column: first).min()!, 200 / 8, "the first point is at the top")
        XCTAssertGreaterThan(rows(of: options.lineColor, in: curve, column: last).max()!, 200 * 3 / 4, "the last point is at the bottom")
        XCTAssertFalse(columns(of: options.pointColor, in: curve).isEmpty, "raw points are drawn")
        XCTAssertTrue(columns(of: options.textColor, in: curve).contains { $0 < first }, "the value range is labelled left of the curve")

        let path = try Support.temporaryFolder(self).appendingPathComponent("loss.png").path
        try PNG.write(curve, to: path)
        XCTAssertEqual(try PNG.read(path: path), curve)
    }

    func testLogScaleStraightensAGeometricSeries() throws {
        var options = Charts.CurveOptions()
        options.width = 300
        options.height = 200
        options.smoothing = 0
        let values = (0..<99).map { Foundation.pow(10, -3 * Double($0) / 98) }
        func heights(_ curve: Image) -> (first: Double, middle: Double, last: Double) {
            let line = columns(of: options.lineColor, in: curve)
            let mean = { (x: Int) in Double(self.rows(of: options.lineColor, in: curve, column: x).reduce(0, +))
                / Double(self.rows(of: options.lineColor, in: curve, column: x).count) }
            return (mean(line.first!), mean((line.first! + line.last!) / 2), mean(line.last!))
        }
        let linear = heights(try Charts.lossCurve(steps: Array(0..<99), values: values, options: options))
        XCTAssertGreaterThan(linear.middle, linear.first + 0.9 * (linear.last - linear.first))
        options.logScale = true
        let log = heights(try Charts.lossCurve(steps: Array(0..<99), values: values, options: options))
        XCTAssertEqual(log.middle, (log.first + log.last) / 2, accuracy: 3)
    }

    func testCurveInputErrors() {
        let cases: [(steps: [Int], values: [Double], logScale: Bool, width: Int, fragment: String)] = [
            ([1, 2], [1], false, 300, "2 steps but 1 values"),
            ([1, 2], [.nan, .infinity], false, 300, "none of the 2 values is finite"),
            ([1, 2], [0, -1], true, 300, "finite and positive (log scale)"),
            ([1, 2], [1, 2], false, 20, "20×200 pixels leave no room"),
        ]
        for c in cases {
            var options = Charts.CurveOptions()
            options.logScale = c.logScale
            options.width = c.width
            options.height = 200
            XCTAssertThrowsError(try Charts.lossCurve(steps: c.steps, values: c.values, options: options)) {
                XCTAssertTrue("\($0)".contains(c.fragment), "\($0)")
            }
        }
        XCTAssertNoThrow(try Charts.lossCurve(steps: [7], values: [0.5]), "one point")
    }

    func testLineChartDrawsEachPointWhereItsAxesPlaceIt() throws {
        var options = Charts.LineChartOptions()
        options.width = 640
        options.height = 420
        options.logScaleX = true
        options.xTitle = "labelled share"
        options.yTitle = "Dice (%)"
        options.xTicks = [(1.0 / 32, "1/32"), (1.0 / 8, "1/8"), (0.5, "1/2")].map { Charts.AxisTick($0.0, $0.1) }
        let (red, blue) = (RGB(220, 20, 20), RGB(20, 20, 220))
        let rising = Charts.LineSeries(name: "rising", points: [
            Charts.LinePoint(x: 0.5, y: 80, low: 76, high: 84),  // out of order: lines join points in order of x
            Charts.LinePoint(x: 1.0 / 32, y: 60),
            Charts.LinePoint(x: 1.0 / 8, y: 70, low: .nan, high: 72),  // an undefined bar is not drawn
        ], color: red)
        let flat = Charts.LineSeries(name: "flat", points: [
            Charts.LinePoint(x: 1.0 / 8, y: 65), Charts.LinePoint(x: .nan, y: 1),  // a point without x is left out
        ], color: blue)
        let chart = try Charts.lineChart([rising, flat], options: options)
        let image = chart.image
        XCTAssertEqual([image.width, image.height, image.channels, image.bitDepth], [640, 420, 3, 8])

        for (series, colour) in [(rising, red), (flat, blue)] {
            for point in series.points where point.x.isFinite {
                let (x, y) = chart.pixel(x: point.x, y: point.y)
                XCTAssertEqual(pixel(image, x, y), rgb(colour), "\(series.name) at (\(point.x), \(point.y))")
            }
        }
        // Log x: shares a factor 4 apart lie equally far apart; larger y is higher up.
        let (a, b, c) = (chart.pixel(x: 1.0 / 32, y: 60), chart.pixel(x: 1.0 / 8, y: 70), chart.pixel(x: 0.5, y: 80))
        XCTAssertEqual(Double(b.x - a.x), Double(c.x - b.x), accuracy: 1)
        XCTAssert(a.y > b.y && b.y > c.y, "rows \(a.y), \(b.y), \(c.y)")
        // The error bar of (0.5, 80) spans rows 84…76 at its column and stops there; (1/8, 70) has none.
        let top = chart.pixel(x: 0.5, y: 84), bottom = chart.pixel(x: 0.5, y: 76)
        XCTAssertEqual(rows(of: red, in: image, column: top.x).filter { $0 < c.y - 10 }.min(), top.y)
        XCTAssertEqual(rows(of: red, in: image, column: bottom.x).filter { $0 > c.y + 10 }.max(), bottom.y)
        XCTAssertEqual(rows(of: red, in: image, column: b.x).filter { $0 < b.y - 10 }, [], "no bar above (1/8, 70)")
        // The legend stands right of the data, one row per series.
        for colour in [red, blue] {
            XCTAssert(columns(of: colour, in: image).contains { $0 > c.x + 20 }, "legend swatch of \(colour)")
        }
        XCTAssert(columns(of: options.textColor, in: image).contains { $0 > c.x + 40 }, "legend names")
    }

    func testLineChartDodgesSeriesAndKeepsCategoriesInOrder() throws {
        var options = Charts.LineChartOptions()
        options.xTicks = ["five", "ten"].enumerated().map { Charts.AxisTick(Double($0.offset), $0.element) }
        options.dodge = 10
        let points = [Charts.LinePoint(x: 0, y: 1), Charts.LinePoint(x: 1, y: 2)]
        let series = (0..<2).map { Charts.LineSeries(name: "s\($0)", points: points) }
        let chart = try Charts.lineChart(series, options: options)
        let centre = chart.pixel(x: 0, y: 1)
        XCTAssertEqual(pixel(chart.image, centre.x - 5, centre.y), rgb(Charts.palette[0]), "series 0 shifted left")
        XCTAssertEqual(pixel(chart.image, centre.x + 5, centre.y), rgb(Charts.palette[1]), "series 1 shifted right")
        XCTAssertLessThan(centre.x, chart.pixel(x: 1, y: 1).x)
    }

    func testRoundTicksCoverTheDataInStepsOfOneTwoOrFive() {
        func ticks(_ values: [Double]) -> [String] { Charts.roundTicks(covering: values).map(\.label) }
        XCTAssertEqual(ticks([70.1, 81.3]), ["70", "75", "80", "85"])
        XCTAssertEqual(ticks([0.123, 0.171]), ["0.12", "0.13", "0.14", "0.15", "0.16", "0.17", "0.18"])
        XCTAssertEqual(ticks([-3, 12]), ["-5", "0", "5", "10", "15"])
        XCTAssertEqual(ticks([80, 80]), ["76", "78", "80", "82", "84"], "one value is widened by 5%")
        XCTAssertEqual(ticks([0.3, 0.5]), ["0.30", "0.35", "0.40", "0.45", "0.50"],
                       "0.3 / 0.05 = 5.999… still starts at 0.30")
    }

    func testLineChartInputErrors() {
        var options = Charts.LineChartOptions()
        let point = Charts.LineSeries(name: "a", points: [Charts.LinePoint(x: 1, y: 1)])
        let undefined = Charts.LineSeries(name: "a", points: [Charts.LinePoint(x: 1, y: .nan)])
        XCTAssertThrowsError(try Charts.lineChart([undefined])) {
            XCTAssertTrue("\($0)".contains("none of the 1 series has a point with finite x and y"), "\($0)")
        }
        options.logScaleX = true
        options.xTicks = [Charts.AxisTick(0, "none")]
        XCTAssertThrowsError(try Charts.lineChart([point], options: options)) {
            XCTAssertTrue("\($0)".contains("x = 0 cannot be placed on a log scale"), "\($0)")
        }
        options = Charts.LineChartOptions()
        options.width = 60
        XCTAssertThrowsError(try Charts.lineChart([point], options: options)) {
            XCTAssertTrue("\($0)".contains("60×500 pixels leave no room"), "\($0)")
        }
        XCTAssertNoThrow(try Charts.lineChart([point]), "one point")
    }
}

import Foundation
import XCTest
import HistoCore
import HistoData
@testable import HistoMethods

/// The experiment report against numpy/scipy on a fixed small experiment: Fixtures/experiment_report.json holds its
/// runs and the expected results.json rows, written by `python3 tools/experiment_report_reference.py`.
final class ExperimentReportTests: XCTestCase {
    private struct Fixture: Decodable {
        let methods: [String]
        let labels: [String]
        let baseline: String
        let runs: [ExperimentRunScore]
    }

    private func fixtureURL() -> URL {
        Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("experiment_report.json")
    }

    private func fixture() throws -> Fixture {
        try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: fixtureURL()))
    }

    /// Writes the fixture's report into a fresh folder and returns the folder and the rows.
    private func writeFixtureReport() throws -> (folder: URL, rows: [ExperimentReport.Row]) {
        let f = try fixture()
        let folder = try temporaryFolder().appendingPathComponent("report")
        let rows = try ExperimentReport.write(f.runs, methods: f.methods, labels: f.labels, baseline: f.baseline,
                                              to: folder.path)
        return (folder, rows)
    }

    private func jsonObject(_ url: URL) throws -> Any { try JSONSerialization.jsonObject(with: Data(contentsOf: url)) }

    private func text(_ folder: URL, _ name: String) throws -> String {
        try String(contentsOf: folder.appendingPathComponent(name), encoding: .utf8)
    }

    /// Compares JSON values: the same keys, nulls and array lengths, strings and integers exactly, other numbers to
    /// 1e-12 relative (numpy and Swift sum in different orders).
    private func assertSame(_ actual: Any, _ expected: Any, at path: String) {
        switch (actual, expected) {
        case let (a as [String: Any], e as [String: Any]):
            XCTAssertEqual(a.keys.sorted(), e.keys.sorted(), "keys of \(path)")
            for (key, value) in e { if let other = a[key] { assertSame(other, value, at: "\(path).\(key)") } }
        case let (a as [Any], e as [Any]):
            XCTAssertEqual(a.count, e.count, "length of \(path)")
            for (i, (x, y)) in zip(a, e).enumerated() { assertSame(x, y, at: "\(path)[\(i)]") }
        case let (a as String, e as String):
            XCTAssertEqual(a, e, path)
        case (is NSNull, is NSNull):
            break
        case let (a as NSNumber, e as NSNumber):
            XCTAssertEqual(a.doubleValue, e.doubleValue, accuracy: 1e-12 * max(1, abs(e.doubleValue)), path)
        default:
            XCTFail("\(path): \(actual) differs from the expected \(expected)")
        }
    }

    func testRowsMatchNumpyAndScipy() throws {
        let (folder, rows) = try writeFixtureReport()
        let expected = try XCTUnwrap(jsonObject(fixtureURL()) as? [String: Any])["expected"]!
        assertSame(try jsonObject(folder.appendingPathComponent("results.json")), expected, at: "results.json")
        // results.json holds exactly the returned rows.
        struct File: Decodable { let rows: [ExperimentReport.Row] }
        let file = try Data(contentsOf: folder.appendingPathComponent("results.json"))
        let decoded = try JSONDecoder().decode(File.self, from: file)
        XCTAssertEqual(decoded.rows, rows)
    }

    func testJSONShapeWithNullsForOneRunAndNoPForTheBaseline() throws {
        let (folder, _) = try writeFixtureReport()
        let json = try text(folder, "results.json")
        XCTAssertFalse(json.contains("NaN") || json.contains("nan"), "undefined values are null")
        let top = try XCTUnwrap(jsonObject(folder.appendingPathComponent("results.json")) as? [String: Any])
        XCTAssertEqual(Array(top.keys), ["rows"])
        let rows = try XCTUnwrap(top["rows"] as? [[String: Any]])
        XCTAssertEqual(rows.map { "\($0["method"]!) \($0["labels"]!)" },
                       ["supervised 1/8", "supervised 1/4", "mt 1/8", "mt 1/4", "genselfdiff 1/8", "genselfdiff 1/4"],
                       "methods in order, then labels in order")
        for row in rows {
            let name = "\(row["method"]!) \(row["labels"]!)"
            let hasP = row["method"] as? String != "supervised" && name != "genselfdiff 1/4"
            let keys = ["labels", "method", "metrics", "runs"] + (hasP ? ["p_vs_baseline"] : [])
            XCTAssertEqual(row.keys.sorted(), keys.sorted(), name)
            XCTAssert(row["method"] is String && row["labels"] is String, name)
            let runs = try XCTUnwrap(row["runs"] as? Int, name)
            let metrics = try XCTUnwrap(row["metrics"] as? [String: [String: Any]], name)
            XCTAssertEqual(metrics.keys.sorted(), ["aji", "dice", "hd95", "iou"], "only the summarised scores: \(name)")
            for (metric, summary) in metrics {
                XCTAssertEqual(summary.keys.sorted(), ["ci90", "mean", "sd"], "\(name) \(metric)")
                XCTAssert(summary["mean"] is Double, "\(name) \(metric) mean")
                if runs == 1 {
                    XCTAssert(summary["sd"] is NSNull && summary["ci90"] is NSNull, "one run: nulls, \(name)")
                } else {
                    XCTAssert(summary["sd"] is Double, "\(name) \(metric) sd")
                    let interval = try XCTUnwrap(summary["ci90"] as? [Double], "\(name) \(metric) ci90")
                    XCTAssertEqual(interval.count, 2)
                    XCTAssertLessThan(interval[0], interval[1])
                }
            }
            if hasP {
                let p = try XCTUnwrap(row["p_vs_baseline"] as? [String: Any], name)
                XCTAssertEqual(p.keys.sorted(), ["aji", "dice", "hd95", "iou"], name)
                for (metric, value) in p {
                    // mt's HD95 at 1/8 equals the baseline's for every seed: the test is undefined.
                    if name == "mt 1/8" && metric == "hd95" { XCTAssert(value is NSNull, "null p: \(name) \(metric)") }
                    else { XCTAssert(value is Double, "\(name) \(metric) p") }
                }
            }
        }
    }

    func testCSVHasOneLinePerRunWithEveryMetric() throws {
        let (folder, _) = try writeFixtureReport()
        let runs = try fixture().runs
        let lines = try text(folder, "results.csv").split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, runs.count + 1)
        XCTAssertEqual(lines[0], "method,labels,seed,aji,aji_plus,dice,hd95,iou")
        XCTAssertEqual(lines[1], "supervised,1/8,1,0.4811,,0.7012,14.2,0.5403", "an extra score is empty where absent")
        XCTAssertEqual(lines.filter { $0.hasPrefix("genselfdiff,1/8,1,") },
                       ["genselfdiff,1/8,1,0.572,0.5611,0.7893,9.05,0.6519"])
        // Every run comes back exactly from its line.
        let cells = lines.map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        for run in runs {
            let line = try XCTUnwrap(cells.first { $0.prefix(3) == [run.method, run.labels, "\(run.seed)"] }, run.name)
            for (column, value) in zip(cells[0].dropFirst(3), line.dropFirst(3)) where !value.isEmpty {
                XCTAssertEqual(Double(value), run.metrics[column], "\(run.name) \(column)")
            }
        }
        let oddName = ExperimentRunScore(method: "a, \"b\"", labels: "1/8", seed: 1, metrics: ["dice": .nan])
        XCTAssertEqual(ExperimentReport.csv([oddName]), "method,labels,seed,dice\n\"a, \"\"b\"\"\",1/8,1,\n",
                       "quoted names; NaN as an empty cell")
    }

    func testMarkdownHasPaperStyleCellsPValuesAndLegend() throws {
        let (folder, _) = try writeFixtureReport()
        let markdown = try text(folder, "results.md")
        for line in [
            "| method | 1/8 | 1/4 |",
            "| supervised | 70.19 ± 1.33 | 74.40 ± 0.58 |",
            "| mt | 73.28 ± 0.67 | 76.54 ± 0.57 |",
            "| genselfdiff | **78.89 ± 1.26** | **81.05** |",
            "| method | labels | n | Dice (%) | IoU (%) | AJI (%) | HD95 (px) | p (Dice) vs supervised |",
            "| supervised | 1/8 | 3 | 70.19 ± 1.33 | 54.09 ± 1.56 | 48.23 ± 1.28 | 14.05 ± 1.13 | baseline |",
            "| mt | 1/8 | 3 | 73.28 ± 0.67 | 57.83 ± 0.83 | 51.12 ± 0.74 | 14.05 ± 1.13 | 0.015* |",
            "| genselfdiff | 1/8 | 3 | 78.89 ± 1.26 | 65.15 ± 1.71 | 57.20 ± 1.22 | 9.18 ± 0.56 | 0.028* |",
            "| genselfdiff | 1/4 | 1 | 81.05 | 68.13 | 59.67 | 8.10 | – |",
        ] {
            XCTAssert(markdown.contains(line + "\n"), "results.md lacks the line\n\(line)\nin\n\(markdown)")
        }
        for fragment in ["n = 1–3 seeds per cell", "± is the sample SD (n − 1)", "90% CI",
                         "mean ± t₀.₉₅,ₙ₋₁ · SD / √n", "baseline **supervised**", "* p < 0.05"] {
            XCTAssert(markdown.contains(fragment), "the legend says \(fragment)")
        }
        XCTAssertEqual(ExperimentReport.pCell(0.0004), "<0.001*")
        XCTAssertEqual(ExperimentReport.pCell(0.05), "0.050", "p = 0.05 is not below the level")
        XCTAssertEqual(ExperimentReport.pCell(nil), "n/a")
    }

    func testChartIsAPNGOfItsSizeWithALinePerMethod() throws {
        let (folder, _) = try writeFixtureReport()
        let image = try PNG.read(path: folder.appendingPathComponent("results.png").path)
        XCTAssertEqual([image.width, image.height, image.channels, image.bitDepth],
                       [ExperimentReport.chartWidth, ExperimentReport.chartHeight, 3, 8])
        var colours = Set<[UInt16]>()
        for p in 0..<(image.width * image.height) { colours.insert(Array(image.samples[(3 * p)..<(3 * p + 3)])) }
        for (k, colour) in Charts.palette.prefix(3).enumerated() {
            XCTAssert(colours.contains([UInt16(colour.r), UInt16(colour.g), UInt16(colour.b)]), "method \(k) is drawn")
        }
        // Labels that are not shares (counts) are categories in the given order.
        let runs = (1...2).flatMap { seed in ["5", "10"].map {
            ExperimentRunScore(method: "unet", labels: $0, seed: UInt64(seed),
                               metrics: ["dice": 0.7 + 0.01 * Double(seed), "iou": 0.5, "aji": 0.4, "hd95": 10])
        } }
        let categorical = try temporaryFolder().path
        try ExperimentReport.write(runs, methods: ["unet"], labels: ["5", "10"], baseline: nil, to: categorical)
        XCTAssertEqual(try PNG.readHeader(path: categorical + "/results.png").width, ExperimentReport.chartWidth)
        let markdown = try String(contentsOfFile: categorical + "/results.md", encoding: .utf8)
        XCTAssert(markdown.contains("| labels | n | Dice (%) | IoU (%) | AJI (%) | HD95 (px) |\n"), "no p column")
        XCTAssert(markdown.contains("no baseline"))
        let json = try String(contentsOfFile: categorical + "/results.json", encoding: .utf8)
        XCTAssertFalse(json.contains("p_vs_baseline"), "no tests without a baseline")
    }

    func testUndefinedScoresAreLeftOutOfTheirSummary() throws {
        let hd95 = [12.0, .nan, 14.0, 15.0]
        let runs = hd95.enumerated().map { seed, hd in
            ExperimentRunScore(method: "unet", labels: "1/4", seed: UInt64(seed),
                               metrics: ["dice": 0.7, "iou": 0.5, "aji": 0.4, "hd95": hd])
        }
        let folder = try temporaryFolder().path
        let rows = try ExperimentReport.write(runs, methods: ["unet"], labels: ["1/4"], baseline: nil, to: folder)
        let row = try XCTUnwrap(rows.first)
        XCTAssertEqual(row.runs, 4)
        XCTAssertEqual(row.metrics["hd95"], ExperimentReport.Summary([12, 14, 15]))
        XCTAssertEqual(row.metrics["hd95"]?.mean, 41.0 / 3)
        XCTAssertEqual(row.metrics["dice"]?.sd, 0, "constant scores have SD 0")
        XCTAssertEqual(ExperimentReport.Summary([.nan]), ExperimentReport.Summary([]))
        XCTAssertNil(ExperimentReport.Summary([.nan]).mean)
        XCTAssertFalse(try String(contentsOfFile: folder + "/results.json", encoding: .utf8).contains("NaN"))
    }

    /// A run that predicts no foreground has an infinite HD95: its score.json is still written and read back.
    func testNonFiniteScoresRoundTripThroughScoreFiles() throws {
        let path = try temporaryFolder().path + "/" + Experiment.scoreFileName
        let score = ExperimentRunScore(method: "unet", labels: "1/4", seed: 0,
                                       metrics: ["dice": 0, "hd95": .infinity, "aji": -.infinity, "iou": .nan])
        try MethodTrainer.writeJSON(score, to: path)
        let read = try MethodTrainer.jsonDecoder.decode(ExperimentRunScore.self,
                                                        from: Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(read.metrics["hd95"], .infinity)
        XCTAssertEqual(read.metrics["aji"], -.infinity)
        XCTAssertEqual(read.metrics["iou"]?.isNaN, true)
        XCTAssertEqual(read.metrics["dice"], 0)
    }

    func testErrorsNameTheProblem() throws {
        let metrics = ["dice": 0.7, "iou": 0.5, "aji": 0.4, "hd95": 10]
        let run = ExperimentRunScore(method: "mt", labels: "1/8", seed: 3, metrics: metrics)
        let folder = try temporaryFolder()
        typealias Case = (runs: [ExperimentRunScore], methods: [String], labels: [String], baseline: String?,
                          message: String)
        let cases: [Case] = [
            ([], ["mt"], ["1/8"], nil, "no runs to report"),
            ([run], ["unet"], ["1/8"], nil, "run mt 1/8 seed 3: method 'mt' is not among the methods unet"),
            ([run], ["mt"], ["1/4", "1/2"], nil, "run mt 1/8 seed 3: labels '1/8' is not among the labels 1/4, 1/2"),
            ([run, run], ["mt"], ["1/8"], nil, "run mt 1/8 seed 3 appears twice"),
            ([ExperimentRunScore(method: "mt", labels: "1/8", seed: 3, metrics: ["dice": 0.7])], ["mt"], ["1/8"], nil,
             "run mt 1/8 seed 3 has no 'iou' score"),
            ([run], ["mt"], ["1/8"], "unet", "baseline 'unet' is not among the methods mt"),
            ([run], ["mt", "mt"], ["1/8"], nil, "method 'mt' is listed twice"),
        ]
        for c in cases {
            XCTAssertThrowsError(try ExperimentReport.write(c.runs, methods: c.methods, labels: c.labels,
                                                            baseline: c.baseline, to: folder.path)) {
                XCTAssertEqual("\($0)", "ExperimentReport: \(c.message)")
            }
        }
        // A folder below a plain file cannot be created, whoever runs the test.
        let file = folder.appendingPathComponent("file")
        try Data().write(to: file)
        let blocked = file.appendingPathComponent("report").path
        XCTAssertThrowsError(try ExperimentReport.write([run], methods: ["mt"], labels: ["1/8"], baseline: nil,
                                                        to: blocked)) {
            guard case let EngineError.file(path, message) = $0 else { return XCTFail("\($0)") }
            XCTAssertEqual(path, blocked)
            XCTAssert(message.hasPrefix("cannot create the report folder"), message)
        }
    }
}

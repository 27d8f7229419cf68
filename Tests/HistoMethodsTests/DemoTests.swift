import Foundation
import XCTest
import HistoCore
@testable import HistoMethods

/// The main job end to end in its reduced mode, on the synthetic data it generates itself.
final class DemoTests: XCTestCase {
    func testQuickDemoRunsAndReportsWhatItPrinted() throws {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("histodiff-demo-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: output) }
        var printed: [String] = []
        var configuration = Demo.Configuration(data: nil, output: output)
        configuration.quick = true
        configuration.labelRatio = "1/4"
        let outcome = try Demo.run(configuration) { printed.append($0) }
        XCTAssertEqual(outcome.results.map(\.method), ["supervised U-Net", "GenSelfDiff (pretrained)"])
        let report = try String(contentsOfFile: outcome.reportPath, encoding: .utf8)
        let table = Demo.table(outcome.results)
        XCTAssert(printed.contains(table), "the table was printed")
        XCTAssert(report.contains(table), "the report holds the printed numbers")
        for result in outcome.results {
            XCTAssert(result.summary.scores.dice.isFinite, "\(result.method) has a Dice")
            XCTAssert(report.contains(String(format: "%.4f", result.summary.scores.dice)))
        }
        for result in outcome.results {
            let overlays = try FileManager.default.contentsOfDirectory(atPath: output + "/" + Demo.folderName(result.method) + "/overlays")
            XCTAssertEqual(overlays.count, try DataSplitCount.validation(output), "one overlay per held-back image")
        }
    }
}

enum DataSplitCount {
    static func validation(_ output: String) throws -> Int {
        let data = try Data(contentsOf: URL(fileURLWithPath: output + "/split.json"))
        let json = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        return (json["validation"] as! [Any]).count
    }
}

import Foundation
import HistoCore
import HistoData
import HistoMetrics
import XCTest

/// `histodiff eval --classes K`: per-class IoU and F1 pooled over all pixels, 255 skipped, and their macro means
/// (SPEC §1 metrics), against tools/make_multiclass_eval_fixture.py's numpy computation.
final class MulticlassEvalTests: XCTestCase {
    struct Fixture: Decodable {
        struct Mask: Decodable { let name: String; let height, width: Int; let prediction, truth: [UInt16] }
        let classes: Int
        let images: [Mask]
        let iou, f1: [Double]
        let miou, mean_f1: Double
    }

    func write(_ samples: [UInt16], height: Int, width: Int, to folder: URL, _ name: String) throws {
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let image = try Image(width: width, height: height, channels: 1, bitDepth: 8, samples: samples)
        try PNG.write(image, to: folder.appendingPathComponent("\(name).png").path)
    }

    func testPerClassScoresMatchNumpyAndSkipIgnoredPixels() throws {
        let url = Support.fixtures.appendingPathComponent("multiclass_eval.json")
        let fixture = try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: url))
        let root = try Support.temporaryFolder(self)
        let (pred, gt) = (root.appendingPathComponent("pred"), root.appendingPathComponent("gt"))
        for mask in fixture.images {
            try write(mask.prediction, height: mask.height, width: mask.width, to: pred, mask.name)
            try write(mask.truth, height: mask.height, width: mask.width, to: gt, mask.name)
        }
        XCTAssertTrue(fixture.images.contains { $0.truth.contains(255) })

        let evaluation = try FolderEvaluation(predictionFolder: pred.path, truthFolder: gt.path,
                                              classes: fixture.classes)
        let summary = try XCTUnwrap(evaluation.classScores)
        XCTAssertEqual(summary.perClass.count, fixture.classes)
        for (c, scores) in summary.perClass.enumerated() {
            XCTAssertEqual(scores.iou, fixture.iou[c], accuracy: 1e-12, "class \(c) IoU")
            XCTAssertEqual(scores.dice, fixture.f1[c], accuracy: 1e-12, "class \(c) F1")
        }
        let mean = summary.mean(includeBackground: true)
        XCTAssertEqual(mean.iou, fixture.miou, accuracy: 1e-12)
        XCTAssertEqual(mean.dice, fixture.mean_f1, accuracy: 1e-12)

        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(evaluation.json().utf8)) as? [String: Any])
        let classes = try XCTUnwrap(json["classes"] as? [String: Any])
        XCTAssertEqual(classes["count"] as? Int, fixture.classes)
        XCTAssertEqual(try XCTUnwrap(classes["miou"] as? Double), fixture.miou, accuracy: 1e-12)
        XCTAssertEqual(try XCTUnwrap(classes["iou"] as? [Double]).count, fixture.classes)
        let table = evaluation.table()
        XCTAssertTrue(table.contains(String(format: "mean    %.4f  %.4f", fixture.miou, fixture.mean_f1)), table)
        XCTAssertNil(try FolderEvaluation(predictionFolder: pred.path, truthFolder: gt.path).classScores)
        XCTAssertNil(try FolderEvaluation(predictionFolder: pred.path, truthFolder: gt.path).json()
            .range(of: "\"classes\""))

        // A label that is neither a class nor (in the ground truth) 255 is an error naming the file.
        let first = fixture.images[0]
        try write([255] + first.prediction.dropFirst(), height: first.height, width: first.width, to: pred, first.name)
        let error = Support.fileError {
            _ = try FolderEvaluation(predictionFolder: pred.path, truthFolder: gt.path, classes: fixture.classes)
        }
        XCTAssertEqual(error?.path, pred.appendingPathComponent("\(first.name).png").path)
        XCTAssertTrue(error?.message.contains("prediction label 255") ?? false, error?.message ?? "no error")
    }
}

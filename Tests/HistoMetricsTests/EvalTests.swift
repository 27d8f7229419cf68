import Foundation
import HistoCore
import HistoData
import HistoMetrics
import XCTest

/// The core of `histodiff eval` on small PNG folders.
final class EvalTests: XCTestCase {
    /// Writes `rows` of digits as an 8-bit (or 16-bit) gray PNG, each digit times `scale`.
    func write(_ rows: [String], to folder: URL, _ name: String, scale: UInt16 = 255, bitDepth: Int = 8) throws {
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let samples = rows.flatMap { $0.map { UInt16(String($0))! * scale } }
        let image = try Image(width: rows[0].count, height: rows.count, channels: 1, bitDepth: bitDepth, samples: samples)
        try PNG.write(image, to: folder.appendingPathComponent("\(name).png").path)
    }

    func testScoresMatchedFoldersAndWritesReports() throws {
        let root = try Support.temporaryFolder(self)
        let (pred, gt, instances) = (root.appendingPathComponent("pred"), root.appendingPathComponent("gt"), root.appendingPathComponent("inst"))
        // "a": two touching true nuclei (one 8-connected component), predicted as one blob shifted by a column.
        let truthA = ["000000", "011220", "011220", "000000"]
        try write(["000000", "001111", "001111", "000000"], to: pred, "a", scale: 1)  // 0/1 masks count as well as 0/255
        try write(truthA.map { String($0.map { $0 == "0" ? "0" : "1" }) }, to: gt, "a")
        try write(truthA, to: instances, "a", scale: 1, bitDepth: 16)
        // "b": nothing predicted where there is a nucleus: its distances are undefined.
        try write(["0000", "0000"], to: pred, "b")
        try write(["0110", "0000"], to: gt, "b")
        try write(["0770", "0000"], to: instances, "b", scale: 1, bitDepth: 16)

        let withMaps = try FolderEvaluation(predictionFolder: pred.path, truthFolder: gt.path, instanceFolder: instances.path)
        let plain = try FolderEvaluation(predictionFolder: pred.path, truthFolder: gt.path)
        XCTAssertEqual(withMaps.images.map(\.name), ["a", "b"])
        let a = withMaps.images[0]
        XCTAssertEqual(a.counts, BinaryCounts(truePositives: 6, falsePositives: 2, falseNegatives: 2, trueNegatives: 14))
        XCTAssertEqual(a.aji, AggregatedJaccard(intersection: 6, union: 18))  // both true nuclei take the blob: (2 + 4) / (10 + 8)
        XCTAssertEqual(a.ajiPlus, AggregatedJaccard(intersection: 4, union: 12))  // the blob pairs with nucleus 2 (IoU 1/2), nucleus 1 adds 4
        XCTAssertEqual(plain.images[0].aji, AggregatedJaccard(intersection: 6, union: 10))  // one true component
        XCTAssertEqual(a.hausdorff, 1)
        let b = withMaps.images[1]
        XCTAssertEqual(b.scores.dice, 0)
        XCTAssertEqual(b.aji.value, 0)
        XCTAssertTrue(b.hausdorff.isNaN && b.hausdorff95.isNaN)
        XCTAssertEqual(a, try ImageEvaluation(name: "a", prediction: LabelMap(PNG.read(path: pred.appendingPathComponent("a.png").path)),
                                              truth: LabelMap(PNG.read(path: gt.appendingPathComponent("a.png").path)),
                                              truthInstances: LabelMap(PNG.read(path: instances.appendingPathComponent("a.png").path))))

        let pooled = withMaps.pooled
        XCTAssertEqual(pooled.scores.dice, 12.0 / (12 + 2 + 4))  // TP 6, FP 2, FN 2 + 2
        XCTAssertEqual(pooled.aji, 6.0 / 20)
        XCTAssertEqual(pooled.hausdorff, 1)
        XCTAssertEqual(pooled.hausdorffImages, 1)
        let mean = withMaps.imageMean
        XCTAssertEqual(mean.scores.dice, (12.0 / 16 + 0) / 2)
        XCTAssertEqual(mean.aji, (6.0 / 18 + 0) / 2)

        let table = withMaps.table()
        for text in ["2 images", "pooled", "image mean", "\na ", "\nb ", "n/a", "instance maps in \(instances.path)", "1 of 2 images"] {
            XCTAssertTrue(table.contains(text), "table lacks \(text.debugDescription):\n\(table)")
        }

        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(withMaps.json().utf8)) as? [String: Any])
        XCTAssertEqual(json["images"] as? Int, 2)
        let pooledJSON = try XCTUnwrap(json["pooled"] as? [String: Any])
        XCTAssertEqual(pooledJSON["dice"] as? Double, pooled.scores.dice)
        XCTAssertEqual(pooledJSON["hd_images"] as? Int, 1)
        let perImage = try XCTUnwrap(json["per_image"] as? [String: [String: Any]])
        XCTAssertEqual(Set(perImage.keys), ["a", "b"])
        XCTAssertEqual(perImage["a"]?["aji"] as? Double, 6.0 / 18)
        XCTAssertEqual(perImage["a"]?["tp"] as? Int, 6)
        XCTAssertTrue(perImage["b"]?["hd"] is NSNull)
        for key in ["dice", "iou", "aji", "aji_plus", "hd", "hd95", "accuracy", "specificity", "sensitivity", "precision"] {
            XCTAssertNotNil(perImage["a"]?[key], key)
            XCTAssertNotNil((json["image_mean"] as? [String: Any])?[key], key)
        }

        let csv = withMaps.csv().split(separator: "\n").map(String.init)
        XCTAssertEqual(csv.count, 5)
        XCTAssertEqual(csv[0], "kind,name,dice,iou,aji,aji_plus,detection_f1,detection_precision,detection_recall,"
                       + "hd,hd95,accuracy,specificity,sensitivity,precision,tp,fp,fn,tn")
        XCTAssertTrue(csv[1].hasPrefix("image,a,0.75,0.6,"))
        // Nothing predicted: detection precision 1 (0/0, as the pixel scores), recall and F1 0.
        XCTAssertTrue(csv[2].hasPrefix("image,b,0.0,0.0,0.0,0.0,0.0,1.0,0.0,,,"))
        XCTAssertTrue(csv[3].hasPrefix("pooled,,"))
        XCTAssertTrue(csv[4].hasPrefix("image_mean,,"))

        let output = root.appendingPathComponent("scores.json").path
        try FolderEvaluation.write(withMaps.json(), to: output)
        XCTAssertEqual(try String(contentsOfFile: output, encoding: .utf8), withMaps.json())
        XCTAssertNotNil(Support.fileError { try FolderEvaluation.write("x", to: root.appendingPathComponent("missing/x.csv").path) })
    }

    func testReportsEveryProblemAtOnce() throws {
        let root = try Support.temporaryFolder(self)
        let (pred, gt, instances) = (root.appendingPathComponent("pred"), root.appendingPathComponent("gt"), root.appendingPathComponent("inst"))
        try write(["01", "10"], to: pred, "ok")
        try write(["01", "10"], to: gt, "ok")
        try write(["01", "10"], to: instances, "ok")
        try write(["011"], to: pred, "wide")  // 3×1 against 2×1
        try write(["01"], to: gt, "wide")
        try write(["01"], to: instances, "wide")
        try write(["01"], to: pred, "orphan")  // no ground truth
        try write(["01"], to: gt, "lonely")  // no prediction, and no instance map
        try write(["01"], to: gt, "uninstanced")
        try write(["01"], to: pred, "uninstanced")
        try write(["0101"], to: instances, "small")  // an instance map of the wrong size
        try write(["01"], to: gt, "small")
        try write(["01"], to: pred, "small")
        let rgb = try Image(width: 2, height: 1, channels: 3, bitDepth: 8, samples: [0, 0, 0, 255, 255, 255])
        try PNG.write(rgb, to: pred.appendingPathComponent("color.png").path)
        try write(["01"], to: gt, "color")
        try write(["01"], to: instances, "color")
        try Data("not a png".utf8).write(to: gt.appendingPathComponent("broken.png"))
        try write(["01"], to: pred, "broken")
        try write(["01"], to: instances, "broken")

        let error = try XCTUnwrap(Support.fileError {
            _ = try FolderEvaluation(predictionFolder: pred.path, truthFolder: gt.path, instanceFolder: instances.path)
        })
        XCTAssertEqual(error.path, pred.path)
        let expected = [
            "cannot evaluate, 7 problems:",
            "\(pred.path)/orphan.png: no ground truth \(gt.path)/orphan.png",
            "\(gt.path)/lonely.png: no prediction \(pred.path)/lonely.png",
            "\(pred.path)/wide.png: prediction is 3×1 but its ground truth \(gt.path)/wide.png is 2×1",
            "\(pred.path)/color.png: prediction has 3 channels; it must be one-channel grayscale",
            "\(gt.path)/uninstanced.png: no instance map \(instances.path)/uninstanced.png",
            "\(instances.path)/small.png: instance map is 4×1 but its ground truth \(gt.path)/small.png is 2×1",
            "\(gt.path)/broken.png: cannot read PNG",
        ]
        for line in expected { XCTAssertTrue(error.message.contains(line), "missing \(line.debugDescription) in:\n\(error.message)") }
    }

    func testMissingAndEmptyFolders() throws {
        let root = try Support.temporaryFolder(self)
        let empty = root.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        let missing = root.appendingPathComponent("missing").path
        let error = try XCTUnwrap(Support.fileError { _ = try FolderEvaluation(predictionFolder: missing, truthFolder: empty.path) })
        XCTAssertTrue(error.message.hasPrefix("cannot evaluate, 2 problems:"), error.message)
        XCTAssertTrue(error.message.contains("\(missing): no such prediction folder"), error.message)
        XCTAssertTrue(error.message.contains("\(empty.path): no PNG files in the ground-truth folder"), error.message)
    }
}

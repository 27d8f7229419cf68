import Foundation
import HistoCore
import HistoData

/// The binary scores of one predicted mask against its ground truth (foreground = label > 0), and the instance
/// scores of their instances.
public struct ImageEvaluation: Equatable, Sendable {
    public let name: String
    /// Foreground pixel counts.
    public let counts: BinaryCounts
    public let aji: AggregatedJaccard
    public let ajiPlus: AggregatedJaccard
    /// Instances matched at IoU ≥ 0.5.
    public let detection: DetectionCounts
    /// Surface Hausdorff distance and HD95 in pixels (`SurfaceDistances`): 0 when both masks are empty, NaN when
    /// exactly one is.
    public let hausdorff: Double
    public let hausdorff95: Double

    /// Predicted instances come from `predictionInstances` (an instance map, e.g. `segment`'s) when given, else
    /// from the 8-connected components of the prediction's foreground; true instances from `truthInstances` when
    /// given, else from the 8-connected components of `truth`.
    public init(name: String, prediction: LabelMap, truth: LabelMap, truthInstances: LabelMap? = nil,
                predictionInstances: LabelMap? = nil) throws {
        try prediction.checkSameSize(as: truth, op: "ImageEvaluation \(name)")
        if let truthInstances { try truthInstances.checkSameSize(as: truth, op: "ImageEvaluation \(name) instances") }
        if let predictionInstances {
            try predictionInstances.checkSameSize(as: truth, op: "ImageEvaluation \(name) predicted instances")
        }
        self.name = name
        counts = try ConfusionMatrix(prediction: prediction.binarized(), truth: truth.binarized(), classes: 2).counts(forClass: 1)
        let predictedInstances = predictionInstances ?? prediction.connectedComponents().map
        let trueInstances = truthInstances ?? truth.connectedComponents().map
        aji = try AggregatedJaccard.aji(prediction: predictedInstances, truth: trueInstances)
        ajiPlus = try AggregatedJaccard.ajiPlus(prediction: predictedInstances, truth: trueInstances)
        detection = try DetectionCounts(prediction: predictedInstances, truth: trueInstances)
        let distances = try SurfaceDistances(prediction: prediction, truth: truth)
        hausdorff = distances.hausdorff
        hausdorff95 = distances.hausdorff95
    }

    public var scores: ClassScores { counts.scores }
}

/// Scores over a set of images.
public struct EvaluationSummary: Equatable, Sendable {
    public let scores: ClassScores
    public let aji: Double
    public let ajiPlus: Double
    public let detectionPrecision: Double
    public let detectionRecall: Double
    public let detectionF1: Double
    /// Means over the images where the distance is defined (`hausdorffImages` of them; NaN when none is).
    public let hausdorff: Double
    public let hausdorff95: Double
    public let hausdorffImages: Int
}

/// `histodiff eval`: binary masks in one folder scored against ground-truth masks in another, matched by file name
/// (`NAME.png`, 0 = background, any value above 0 = foreground), with optional ground-truth instance maps for AJI.
public struct FolderEvaluation: Sendable {
    public let predictionFolder: String
    public let truthFolder: String
    public let instanceFolder: String?
    /// Predicted instance maps (`segment`'s `instances/`); nil: the predictions' 8-connected components.
    public let predictionInstanceFolder: String?
    /// In name order.
    public let images: [ImageEvaluation]
    /// The declared number of classes: 2 scores binarised masks alone; above 2 the masks hold class ids 0..<K and
    /// 255 (ignore), scored per class as well.
    public let classes: Int
    /// With more than 2 classes: per-class IoU and F1 from the confusion matrix pooled over every pixel of every
    /// image, ground-truth pixels labelled 255 skipped (DTSeg's smp `get_stats(mode='multiclass')`, SPEC §1).
    public let classScores: ClassScoreSummary?

    /// Reads and scores every pair. All problems are reported together in one `EngineError.file` naming the
    /// prediction folder, one line per problem: a missing or empty folder, a prediction without ground truth or the
    /// reverse, a ground truth without an instance map (when `instanceFolder` is given), an unreadable file, a file
    /// that is not one-channel, and sizes that differ between a prediction, its ground truth and its instance map.
    /// With `classes` above 2, a label outside the classes (255 in the ground truth is ignore) is an error naming
    /// the file.
    public init(predictionFolder: String, truthFolder: String, instanceFolder: String? = nil,
                predictionInstanceFolder: String? = nil, classes: Int = 2) throws {
        guard classes >= 2 else {
            throw EngineError.invalidValue(op: "FolderEvaluation", message: "\(classes) classes; at least 2")
        }
        self.classes = classes
        self.predictionFolder = predictionFolder
        self.truthFolder = truthFolder
        self.instanceFolder = instanceFolder
        self.predictionInstanceFolder = predictionInstanceFolder
        var problems: [String] = []
        func note(_ path: String, _ message: String) { problems.append("\(path): \(message)") }
        func names(_ folder: String, _ role: String) -> [String] {
            var directory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: folder, isDirectory: &directory), directory.boolValue else {
                note(folder, "no such \(role) folder")
                return []
            }
            guard let entries = try? FileManager.default.contentsOfDirectory(atPath: folder) else {
                note(folder, "cannot list the \(role) folder")
                return []
            }
            let names = entries.filter { !$0.hasPrefix(".") && $0.hasSuffix(".png") }.map { String($0.dropLast(4)) }.sorted()
            if names.isEmpty { note(folder, "no PNG files in the \(role) folder") }
            return names
        }
        let predictionNames = names(predictionFolder, "prediction")
        let truthNames = names(truthFolder, "ground-truth")
        let instanceNames = instanceFolder.map { Set(names($0, "instance")) }
        let predictedInstanceNames = predictionInstanceFolder.map { Set(names($0, "predicted instance")) }
        let (predicted, actual) = (Set(predictionNames), Set(truthNames))
        for name in predictionNames where !actual.contains(name) {
            note("\(predictionFolder)/\(name).png", "no ground truth \(truthFolder)/\(name).png")
        }
        for name in truthNames where !predicted.contains(name) {
            note("\(truthFolder)/\(name).png", "no prediction \(predictionFolder)/\(name).png")
        }
        let matched = predictionNames.filter(actual.contains)
        /// The header of a one-channel PNG, or nil after noting why not.
        func header(_ path: String, _ kind: String) -> PNG.Header? {
            do {
                let header = try PNG.readHeader(path: path)
                guard header.channels == 1 else {
                    note(path, "\(kind) has \(header.channels) channels; it must be one-channel grayscale")
                    return nil
                }
                return header
            } catch let EngineError.file(path, message) {
                note(path, message)
            } catch {
                note(path, "\(error)")
            }
            return nil
        }
        for name in matched {
            let truthPath = "\(truthFolder)/\(name).png"
            let truth = header(truthPath, "ground truth")
            if let prediction = header("\(predictionFolder)/\(name).png", "prediction"), let truth,
               prediction.width != truth.width || prediction.height != truth.height {
                note("\(predictionFolder)/\(name).png", "prediction is \(prediction.width)×\(prediction.height) but its ground truth \(truthPath) is \(truth.width)×\(truth.height)")
            }
            if let predictionInstanceFolder, let predictedInstanceNames {
                let path = "\(predictionInstanceFolder)/\(name).png"
                if !predictedInstanceNames.contains(name) {
                    note("\(predictionFolder)/\(name).png", "no predicted instance map \(path)")
                } else if let instances = header(path, "predicted instance map"), let truth,
                          instances.width != truth.width || instances.height != truth.height {
                    note(path, "predicted instance map is \(instances.width)×\(instances.height) but its ground "
                         + "truth \(truthPath) is \(truth.width)×\(truth.height)")
                }
            }
            if let instanceFolder, let instanceNames {
                let path = "\(instanceFolder)/\(name).png"
                if !instanceNames.contains(name) {
                    note(truthPath, "no instance map \(path)")
                } else if let instances = header(path, "instance map"), let truth,
                          instances.width != truth.width || instances.height != truth.height {
                    note(path, "instance map is \(instances.width)×\(instances.height) but its ground truth \(truthPath) is \(truth.width)×\(truth.height)")
                }
            }
        }
        guard problems.isEmpty else {
            let count = problems.count == 1 ? "1 problem" : "\(problems.count) problems"
            throw EngineError.file(path: predictionFolder, message: "cannot evaluate, \(count):\n" + problems.map { "  " + $0 }.joined(separator: "\n"))
        }
        var matrices: [ConfusionMatrix] = []
        images = try matched.map { name in
            let prediction = try LabelMap(PNG.read(path: "\(predictionFolder)/\(name).png"))
            let truth = try LabelMap(PNG.read(path: "\(truthFolder)/\(name).png"))
            if classes > 2 {
                do {
                    matrices.append(try ConfusionMatrix(prediction: prediction, truth: truth, classes: classes))
                } catch let EngineError.invalidValue(_, message) {
                    throw EngineError.file(path: "\(predictionFolder)/\(name).png", message: message)
                }
            }
            return try ImageEvaluation(
                name: name, prediction: prediction, truth: truth,
                truthInstances: instanceFolder.map { try LabelMap(PNG.read(path: "\($0)/\(name).png")) },
                predictionInstances: predictionInstanceFolder.map { try LabelMap(PNG.read(path: "\($0)/\(name).png")) })
        }
        classScores = classes > 2 ? try ClassScoreSummary(matrices, aggregation: .pooled) : nil
    }

    /// Pixel scores from the counts summed over all images, AJI and AJI+ from the intersections and unions summed
    /// over all images, detection scores from the matches summed over all images; HD and HD95 are means over
    /// images (distances do not pool).
    public var pooled: EvaluationSummary {
        let detection = images.map(\.detection)
            .reduce(DetectionCounts(truePositives: 0, falsePositives: 0, falseNegatives: 0), +)
        return summary(scores: pooledCounts.scores,
                       aji: images.map(\.aji).reduce(AggregatedJaccard(intersection: 0, union: 0), +).value,
                       ajiPlus: images.map(\.ajiPlus).reduce(AggregatedJaccard(intersection: 0, union: 0), +).value,
                       detection: (detection.precision, detection.recall, detection.f1))
    }

    /// The foreground pixel counts summed over all images.
    public var pooledCounts: BinaryCounts {
        images.map(\.counts)
            .reduce(BinaryCounts(truePositives: 0, falsePositives: 0, falseNegatives: 0, trueNegatives: 0), +)
    }

    /// Every score computed per image, then averaged over images.
    public var imageMean: EvaluationSummary {
        summary(scores: ClassScores.mean(images.map(\.scores)),
                aji: Statistics.mean(images.map(\.aji.value)), ajiPlus: Statistics.mean(images.map(\.ajiPlus.value)),
                detection: (Statistics.mean(images.map(\.detection.precision)),
                            Statistics.mean(images.map(\.detection.recall)),
                            Statistics.mean(images.map(\.detection.f1))))
    }

    private func summary(scores: ClassScores, aji: Double, ajiPlus: Double,
                         detection: (precision: Double, recall: Double, f1: Double)) -> EvaluationSummary {
        let defined = images.filter { !$0.hausdorff.isNaN }
        return EvaluationSummary(scores: scores, aji: aji, ajiPlus: ajiPlus, detectionPrecision: detection.precision,
                                 detectionRecall: detection.recall, detectionF1: detection.f1,
                                 hausdorff: Statistics.mean(defined.map(\.hausdorff)),
                                 hausdorff95: Statistics.mean(defined.map(\.hausdorff95)),
                                 hausdorffImages: defined.count)
    }

    // MARK: reports

    /// The columns of the table and the CSV, with how each reads its value from a row.
    private static var columns: [(title: String, key: String, value: (Row) -> Double, isDistance: Bool)] { [
        ("Dice", "dice", { $0.scores.dice }, false),
        ("IoU", "iou", { $0.scores.iou }, false),
        ("AJI", "aji", { $0.aji }, false),
        ("AJI+", "aji_plus", { $0.ajiPlus }, false),
        ("DetF1", "detection_f1", { $0.detection.f1 }, false),
        ("DetP", "detection_precision", { $0.detection.precision }, false),
        ("DetR", "detection_recall", { $0.detection.recall }, false),
        ("HD", "hd", { $0.hausdorff }, true),
        ("HD95", "hd95", { $0.hausdorff95 }, true),
        ("Acc", "accuracy", { $0.scores.accuracy }, false),
        ("Spec", "specificity", { $0.scores.specificity }, false),
        ("Sens", "sensitivity", { $0.scores.sensitivity }, false),
        ("Prec", "precision", { $0.scores.precision }, false),
    ] }

    /// One line of a report: an image or a summary.
    private struct Row {
        let scores: ClassScores
        let aji, ajiPlus, hausdorff, hausdorff95: Double
        let detection: (precision: Double, recall: Double, f1: Double)
        init(_ image: ImageEvaluation) {
            (scores, aji, ajiPlus) = (image.scores, image.aji.value, image.ajiPlus.value)
            (hausdorff, hausdorff95) = (image.hausdorff, image.hausdorff95)
            detection = (image.detection.precision, image.detection.recall, image.detection.f1)
        }
        init(_ summary: EvaluationSummary) {
            (scores, aji, ajiPlus) = (summary.scores, summary.aji, summary.ajiPlus)
            (hausdorff, hausdorff95) = (summary.hausdorff, summary.hausdorff95)
            detection = (summary.detectionPrecision, summary.detectionRecall, summary.detectionF1)
        }
    }

    private var predictionInstanceSource: String {
        predictionInstanceFolder.map { "instance maps in \($0)" } ?? "8-connected components of the masks"
    }

    private var instanceSource: String {
        instanceFolder.map { "instance maps in \($0)" } ?? "8-connected components of the masks"
    }

    /// A paper-style table: the pooled and image-mean rows, then one row per image.
    public func table() -> String {
        let nameWidth = max(12, images.map(\.name.count).max() ?? 0)
        func pad(_ text: String, _ width: Int) -> String { text + String(repeating: " ", count: max(0, width - text.count)) }
        /// Left-aligned cells of 7 characters after the name column, without trailing spaces.
        func line(_ label: String, _ cells: [String]) -> String {
            var text = pad(label, nameWidth) + cells.map { "  " + pad($0, 7) }.joined()
            while text.last == " " { text.removeLast() }
            return text
        }
        func line(_ label: String, _ row: Row) -> String {
            line(label, Self.columns.map { column in
                let value = column.value(row)
                return value.isNaN ? "n/a" : String(format: column.isDistance ? "%.2f" : "%.4f", value)
            })
        }
        let (pooled, mean) = (self.pooled, self.imageMean)
        var lines = [
            "\(images.count) image\(images.count == 1 ? "" : "s"): predictions \(predictionFolder), ground truth \(truthFolder)",
            "Instances (AJI, AJI+, detection): predictions: \(predictionInstanceSource); "
                + "ground truth: \(instanceSource)",
            "",
            line("", Self.columns.map(\.title)),
            line("pooled", Row(pooled)),
            line("image mean", Row(mean)),
        ]
        lines += images.map { line($0.name, Row($0)) }
        lines += [
            "",
            "pooled: Dice, IoU (Jaccard), accuracy, specificity, sensitivity, precision from the pixel counts summed over all",
            "images; AJI, AJI+ from the summed intersections and unions. Dice = F1. DetF1, DetP, DetR: detection F1,",
            "precision, recall of instances matched one-to-one at IoU ≥ 0.5, from the summed matches.",
            "HD, HD95: surface distances in pixels",
            "(medpy), averaged over the \(pooled.hausdorffImages) of \(images.count) images where they are defined (n/a: exactly one mask is empty).",
        ]
        if let classScores { lines += classTable(classScores) }
        return lines.joined(separator: "\n")
    }

    /// The per-class rows and the macro means under the table.
    private func classTable(_ summary: ClassScoreSummary) -> [String] {
        func row(_ label: String, _ scores: ClassScores) -> String {
            label.padding(toLength: 8, withPad: " ", startingAt: 0)
                + String(format: "%.4f  %.4f", scores.iou, scores.dice)
        }
        let mean = summary.mean(includeBackground: true)
        return ["", "\(classes) classes, pooled over all pixels of all images, ground-truth 255 skipped "
                    + "(smp multiclass):", "class   IoU     F1"]
            + summary.perClass.enumerated().map { row("\($0.offset)", $0.element) }
            + [row("mean", mean),
               "mean: macro mean over the \(classes) classes, background included (mIoU, F1). The binary scores above",
               "count every label above 0, 255 included, as foreground."]
    }

    /// `{"images": N, "instances": …, "pooled": {…}, "image_mean": {…}, "per_image": {"NAME": {…}}}`. Every score
    /// object has the keys dice, iou, aji, aji_plus, detection_f1,
    /// detection_precision, detection_recall, hd, hd95, accuracy, specificity, sensitivity, precision; the
    /// summaries add hd_images, the images tp, fp, fn, tn. Undefined distances are null. With more than 2 classes
    /// `"classes": {"count": K, "iou": [per class], "f1": [per class], "miou": …, "mean_f1": …}` follows.
    public func json() -> String {
        func number(_ value: Double) -> String { value.isFinite ? "\(value)" : "null" }
        func object(_ row: Row, extra: [(String, String)]) -> String {
            let fields = Self.columns.map { ($0.key, number($0.value(row))) } + extra
            return "{" + fields.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}"
        }
        let (pooled, mean) = (self.pooled, self.imageMean)
        let perImage = images.map { image in
            let c = image.counts
            let counts = [("tp", c.truePositives), ("fp", c.falsePositives), ("fn", c.falseNegatives), ("tn", c.trueNegatives)]
            return "    \(Self.jsonString(image.name)): " + object(Row(image), extra: counts.map { ($0.0, "\($0.1)") })
        }
        return """
        {
          "images": \(images.count),
          "instances": \(Self.jsonString(instanceFolder == nil ? "connected components" : "instance maps")),
          "predicted_instances": \(Self.jsonString(predictionInstanceFolder == nil ? "connected components"
                                                                                : "instance maps")),
          "pooled": \(object(Row(pooled), extra: [("hd_images", "\(pooled.hausdorffImages)")])),
          "image_mean": \(object(Row(mean), extra: [("hd_images", "\(mean.hausdorffImages)")])),
          "per_image": {
        \(perImage.joined(separator: ",\n"))
          }\(classScores.map { ",\n  \"classes\": " + classObject($0) } ?? "")
        }

        """
    }

    private func classObject(_ summary: ClassScoreSummary) -> String {
        func list(_ values: [Double]) -> String { "[" + values.map { "\($0)" }.joined(separator: ", ") + "]" }
        let mean = summary.mean(includeBackground: true)
        return "{\"count\": \(classes), \"iou\": \(list(summary.perClass.map(\.iou))), "
            + "\"f1\": \(list(summary.perClass.map(\.dice))), \"miou\": \(mean.iou), \"mean_f1\": \(mean.dice)}"
    }

    /// One row per image (kind `image`), then the `pooled` and `image_mean` rows; columns kind, name, the scores,
    /// tp, fp, fn, tn (empty for summaries). Undefined distances are empty cells.
    public func csv() -> String {
        func cells(_ row: Row) -> [String] { Self.columns.map { let v = $0.value(row); return v.isNaN ? "" : "\(v)" } }
        var lines = [(["kind", "name"] + Self.columns.map(\.key) + ["tp", "fp", "fn", "tn"]).joined(separator: ",")]
        for image in images {
            let c = image.counts
            let counts = [c.truePositives, c.falsePositives, c.falseNegatives, c.trueNegatives].map(String.init)
            lines.append((["image", Self.csvField(image.name)] + cells(Row(image)) + counts).joined(separator: ","))
        }
        lines.append((["pooled", ""] + cells(Row(pooled)) + ["", "", "", ""]).joined(separator: ","))
        lines.append((["image_mean", ""] + cells(Row(imageMean)) + ["", "", "", ""]).joined(separator: ","))
        return lines.joined(separator: "\n") + "\n"
    }

    /// Writes `text` to `path`, as a thrown `EngineError.file` on failure.
    public static func write(_ text: String, to path: String) throws {
        do { try text.write(toFile: path, atomically: true, encoding: .utf8) } catch {
            throw EngineError.file(path: path, message: "cannot write: \(error.localizedDescription)")
        }
    }

    private static func jsonString(_ text: String) -> String {
        var escaped = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": escaped += "\\\""
            case "\\": escaped += "\\\\"
            case _ where scalar.value < 0x20: escaped += String(format: "\\u%04x", scalar.value)
            default: escaped.unicodeScalars.append(scalar)
            }
        }
        return escaped + "\""
    }

    /// A CSV cell: quoted, quotes doubled, when it holds a comma, a quote or a line break.
    public static func csvField(_ text: String) -> String {
        guard text.contains(where: { $0 == "," || $0 == "\"" || $0.isNewline }) else { return text }
        return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}

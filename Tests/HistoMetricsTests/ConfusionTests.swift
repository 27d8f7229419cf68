import HistoCore
import HistoData
import HistoMetrics
import XCTest

final class ConfusionTests: XCTestCase {
    func testMultiClassScoresByHand() throws {
        let truth = try Support.map(["0112", "0122"])
        let prediction = try Support.map(["0102", "1122"])
        let matrix = try ConfusionMatrix(prediction: prediction, truth: truth, classes: 3)
        XCTAssertEqual(matrix.counts, [1, 1, 0,  1, 2, 0,  0, 0, 3])
        XCTAssertEqual(matrix[truth: 1, predicted: 0], 1)
        XCTAssertEqual(matrix.total, 8)
        XCTAssertEqual(matrix.pixelAccuracy, 0.75)
        XCTAssertEqual(matrix.counts(forClass: 0), BinaryCounts(truePositives: 1, falsePositives: 1, falseNegatives: 1, trueNegatives: 5))
        let one = matrix.counts(forClass: 1)
        XCTAssertEqual(one, BinaryCounts(truePositives: 2, falsePositives: 1, falseNegatives: 1, trueNegatives: 4))
        XCTAssertEqual(one.scores, ClassScores(dice: 2.0 / 3, iou: 0.5, precision: 2.0 / 3, sensitivity: 2.0 / 3,
                                               specificity: 0.8, accuracy: 0.75))
        let scores = matrix.classScores
        XCTAssertEqual(scores.map(\.iou), [1.0 / 3, 0.5, 1])
        XCTAssertEqual(scores.map(\.dice), [0.5, 2.0 / 3, 1])

        let summary = try ClassScoreSummary([matrix], aggregation: .pooled)
        XCTAssertEqual(summary.mean(includeBackground: true).iou, (1.0 / 3 + 0.5 + 1) / 3, accuracy: 1e-15)
        XCTAssertEqual(summary.mean(includeBackground: false).iou, 0.75, accuracy: 1e-15)
        XCTAssertEqual(summary.mean(includeBackground: false).dice, (2.0 / 3 + 1) / 2, accuracy: 1e-15)
    }

    func testPooledAndPerImageAggregationDiffer() throws {
        let a = try ConfusionMatrix(prediction: Support.map(["10"]), truth: Support.map(["11"]), classes: 2)
        let b = try ConfusionMatrix(prediction: Support.map(["01"]), truth: Support.map(["00"]), classes: 2)
        let pooled = try ClassScoreSummary([a, b], aggregation: .pooled)
        let perImage = try ClassScoreSummary([a, b], aggregation: .perImage)
        // Foreground: pooled TP 1, FP 1, FN 1; per image IoU 1/2 and 0.
        XCTAssertEqual(pooled.perClass[1].iou, 1.0 / 3, accuracy: 1e-15)
        XCTAssertEqual(perImage.perClass[1].iou, 0.25, accuracy: 1e-15)
        // Background: pooled TP 1, FP 1, FN 1; per image IoU 0 and 1/2.
        XCTAssertEqual(pooled.perClass[0].iou, 1.0 / 3, accuracy: 1e-15)
        XCTAssertEqual(perImage.perClass[0].iou, 0.25, accuracy: 1e-15)
        XCTAssertEqual(perImage.mean(includeBackground: false), perImage.perClass[1])
        XCTAssertEqual(try ConfusionMatrix.pooled([a, b]).counts, [1, 1, 1, 1])
    }

    func testZeroDenominatorsScoreOne() throws {
        let empty = try Support.map(["000", "000"])
        let both = try ConfusionMatrix(prediction: empty, truth: empty, classes: 2).counts(forClass: 1).scores
        XCTAssertEqual(both, ClassScores(dice: 1, iou: 1, precision: 1, sensitivity: 1, specificity: 1, accuracy: 1))
        let missed = try ConfusionMatrix(prediction: empty, truth: Support.map(["010", "000"]), classes: 2).counts(forClass: 1).scores
        XCTAssertEqual(missed, ClassScores(dice: 0, iou: 0, precision: 1, sensitivity: 0, specificity: 1, accuracy: 5.0 / 6))
        let full = try Support.map(["11"])
        XCTAssertEqual(try ConfusionMatrix(prediction: full, truth: full, classes: 2).counts(forClass: 1).scores.specificity, 1)
        XCTAssertEqual(try ConfusionMatrix(classes: 2).pixelAccuracy, 1)
        XCTAssertTrue(ClassScores.mean([]).dice.isNaN)
    }

    /// The complement counts the background of a binary segmentation: its scores are the background class's of the
    /// two-class confusion matrix (DTSeg's mIoU averages both).
    func testTheComplementIsTheBackgroundClass() throws {
        let prediction = try Support.map(["0110", "0011"]), truth = try Support.map(["0100", "0111"])
        let matrix = try ConfusionMatrix(prediction: prediction, truth: truth, classes: 2)
        XCTAssertEqual(matrix.counts(forClass: 1).complement, matrix.counts(forClass: 0))
        XCTAssertEqual(matrix.counts(forClass: 1).complement.scores.iou, 3.0 / 5, accuracy: 1e-15)
    }

    func testBadInputIsAClearError() throws {
        let small = try Support.map(["01"])
        XCTAssertEqual(Support.invalidValue { _ = try ConfusionMatrix(prediction: small, truth: Support.map(["01", "00"]), classes: 2) },
                       "prediction is 2×1 but truth is 2×2")
        XCTAssertEqual(Support.invalidValue { _ = try ConfusionMatrix(prediction: Support.map(["05"]), truth: small, classes: 2) },
                       "prediction label 5 is outside the 2 classes 0..<2")
        XCTAssertEqual(Support.invalidValue { _ = try ConfusionMatrix(classes: 1) }, "1 classes; a segmentation has at least 2")
        XCTAssertEqual(Support.invalidValue { _ = try ConfusionMatrix.pooled([ConfusionMatrix(classes: 2), ConfusionMatrix(classes: 3)]) },
                       "matrix 1 has 3 classes, matrix 0 has 2")
        XCTAssertEqual(Support.invalidValue { _ = try ConfusionMatrix.pooled([]) }, "no matrices to pool")
        XCTAssertNotNil(Support.invalidValue { _ = try ClassScoreSummary([], aggregation: .perImage) })
    }

    func testLabelMapConversionsAndChecks() throws {
        let image = try Image(width: 3, height: 1, channels: 1, bitDepth: 16, samples: [0, 255, 40000])
        XCTAssertEqual(try LabelMap(image).labels, [0, 255, 40000])
        XCTAssertEqual(try LabelMap(image).binarized().labels, [0, 1, 1])
        XCTAssertEqual(try LabelMap(image).foreground, [false, true, true])
        let planes = try Planes(channels: 1, height: 1, width: 3, values: [0, 2, 7])
        XCTAssertEqual(try LabelMap(planes).labels, [0, 2, 7])
        XCTAssertEqual(try LabelMap(mask: [true, false], width: 2, height: 1).labels, [1, 0])

        let rgb = try Image(width: 1, height: 1, channels: 3, bitDepth: 8, samples: [1, 2, 3])
        XCTAssertEqual(Support.invalidValue { _ = try LabelMap(rgb) }, "a label map is a one-channel image, this one is 1×1, 3 channels, 8-bit")
        let fractional = try Planes(channels: 1, height: 2, width: 2, values: [0, 0, 0, 0.5])
        XCTAssertEqual(Support.invalidValue { _ = try LabelMap(fractional) }, "value 0.5 at (x 1, y 1) is not a label (a whole number in 0..<2^24)")
        XCTAssertEqual(Support.invalidValue { _ = try LabelMap(Planes(channels: 2, height: 1, width: 1, values: [0, 1])) },
                       "a label map has 1 channel, these planes have shape [2, 1, 1]")
        XCTAssertEqual(Support.invalidValue { _ = try LabelMap(width: 2, height: 1, labels: [0, -3]) }, "label -3 at (x 1, y 0) is negative")
        XCTAssertEqual(Support.invalidValue { _ = try LabelMap(width: 2, height: 2, labels: [0]) }, "1 labels do not fill 2×2")
        XCTAssertEqual(Support.invalidValue { _ = try LabelMap(width: 0, height: 2, labels: []) }, "size 0×2 must be positive")
    }
}

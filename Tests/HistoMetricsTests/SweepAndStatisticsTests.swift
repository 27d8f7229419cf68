import HistoCore
import HistoMetrics
import XCTest

final class SweepAndStatisticsTests: XCTestCase {
    func testThresholdSweepByHand() throws {
        // Scores 0.1, 0.5, 0.95, 0.3 against truth 0, 1, 1, 0. Prediction is score > θ, so the score 0.3 is still
        // foreground at θ = 0.28 (one false positive, Jaccard 2/3) and background from θ = 0.30 on (Jaccard 1).
        let truth = try Support.map(["0110"])
        var sweep = try ThresholdSweep()
        try sweep.add(scores: [0.1, 0.5, 0.95, 0.3], truth: truth)
        let points = sweep.points
        XCTAssertEqual(points.count, 45)
        XCTAssertEqual(points[0].counts, BinaryCounts(truePositives: 2, falsePositives: 2, falseNegatives: 0, trueNegatives: 0))
        XCTAssertEqual(points[0].jaccard, 0.5)
        XCTAssertEqual(points[14].jaccard, 2.0 / 3)
        XCTAssertEqual(points[15].jaccard, 1)
        XCTAssertEqual(points[15].dice, 1)
        XCTAssertEqual(sweep.best.threshold, ThresholdSweep.ciampiThresholds[15])
        XCTAssertEqual(points[44].threshold, 0.88, accuracy: 1e-15)

        // At test time the validation threshold is applied alone; images pool.
        var test = try ThresholdSweep(thresholds: [0.3])
        try test.add(scores: [0.1, 0.5, 0.95, 0.3], truth: truth)
        try test.add(scores: [0.9, 0.2], truth: Support.map(["01"]))
        XCTAssertEqual(test.best.counts, BinaryCounts(truePositives: 2, falsePositives: 1, falseNegatives: 1, trueNegatives: 2))
    }

    func testThresholdSweepRejectsBadInput() throws {
        XCTAssertNotNil(Support.invalidValue { _ = try ThresholdSweep(thresholds: []) })
        XCTAssertNotNil(Support.invalidValue { _ = try ThresholdSweep(thresholds: [0.2, 0.2]) })
        XCTAssertNotNil(Support.invalidValue { _ = try ThresholdSweep(thresholds: [0.1, .nan]) })
        var sweep = try ThresholdSweep()
        XCTAssertEqual(Support.invalidValue { try sweep.add(scores: [0.5], truth: Support.map(["01"])) }, "1 scores for a 2×1 truth mask")
        XCTAssertEqual(Support.invalidValue { try sweep.add(scores: [0.5, .nan], truth: Support.map(["01"])) }, "score 1 (x 1, y 0) is NaN")
    }

    func testStudentTKnownValues() {
        // The Ciampi half-width factor t₀.₉₅,₉ (SPEC §6: 1.833).
        XCTAssertEqual(Statistics.studentTQuantile(0.95, degreesOfFreedom: 9), 1.833112932656237, accuracy: 1e-12)
        XCTAssertEqual(Statistics.studentTQuantile(0.5, degreesOfFreedom: 4), 0, accuracy: 1e-15)
        XCTAssertEqual(Statistics.studentTQuantile(0.975, degreesOfFreedom: 1), 12.706204736174694, accuracy: 1e-9)
        XCTAssertEqual(Statistics.studentTCDF(0, degreesOfFreedom: 3), 0.5)
        XCTAssertEqual(Statistics.studentTCDF(.infinity, degreesOfFreedom: 3), 1)
        XCTAssertTrue(Statistics.studentTQuantile(1, degreesOfFreedom: 3).isNaN)
        XCTAssertTrue(Statistics.studentTQuantile(0.5, degreesOfFreedom: 0).isNaN)
    }

    func testRunStatisticsEdgeCases() throws {
        XCTAssertTrue(Statistics.mean([]).isNaN)
        let single = RunSummary([0.7])
        XCTAssertEqual(single.mean, 0.7)
        XCTAssertTrue(single.standardDeviation.isNaN)
        XCTAssertTrue(single.halfWidth.isNaN)
        // Two runs: s = √2 / 2 · |a − b|; 95% interval half-width t₀.₉₇₅,₁ · s / √2.
        let two = RunSummary([1, 3], level: 0.95)
        XCTAssertEqual(two.standardDeviation, 2.0.squareRoot(), accuracy: 1e-15)
        XCTAssertEqual(two.halfWidth, 12.706204736174694, accuracy: 1e-9)

        let same = try Statistics.pairedTTest([1, 2, 3], [1, 2, 3])
        XCTAssertTrue(same.t.isNaN && same.p.isNaN)
        let shifted = try Statistics.pairedTTest([2, 3, 4], [1, 2, 3])
        XCTAssertEqual(shifted.t, .infinity)
        XCTAssertEqual(shifted.p, 0)
        XCTAssertEqual(Support.invalidValue { _ = try Statistics.pairedTTest([1, 2], [1]) }, "needs two samples of equal size ≥ 2, got 2 and 1")
        XCTAssertNotNil(Support.invalidValue { _ = try Statistics.pairedTTest([1], [1]) })
    }
}

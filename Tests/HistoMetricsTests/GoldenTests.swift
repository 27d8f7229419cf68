import Foundation
import HistoCore
import HistoData
import HistoMetrics
import XCTest

/// Metrics on real instance maps and deterministic modifications of them, against numpy/scipy values from
/// tools/make_metric_fixtures.py (which documents the recipes and the reference definitions).
final class GoldenTests: XCTestCase {
    struct Fixture: Decodable {
        struct Components: Decodable {
            let prediction, truth, predictionChecksum, truthChecksum: Int
        }
        struct Case: Decodable {
            let tp, fp, fn, tn: Int
            let dice, iou, accuracy, specificity, sensitivity, precision: Double
            let aji, ajiPlus, ajiComponents, ajiPlusComponents: Double
            let hd, hd95, hdPoints, hd95Points, rowHd: Double
            let components: Components
        }
        struct Best: Decodable { let threshold, jaccard, dice: Double }
        struct Sweep: Decodable {
            let thresholds, jaccard, dice: [Double]
            let best: Best
        }
        struct Quantile: Decodable { let p, df, t: Double }
        struct TTest: Decodable { let a, b: [Double]; let t, p: Double }
        struct Stats: Decodable {
            let runs: [Double]
            let mean, sd, ci90: Double
            let quantiles: [Quantile]
            let cdf: [Quantile]
            let pairedTTests: [TTest]
        }
        let shift: [Int]
        let cases: [String: [String: Case]]
        let sweep: Sweep
        let statistics: Stats
    }

    static let fixture: Fixture = {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let data = try! Data(contentsOf: Support.fixtures.appendingPathComponent("metrics.json"))
        return try! decoder.decode(Fixture.self, from: data)
    }()

    /// The fixture's instance maps, read from the real data (sorted by path).
    func instanceMaps() throws -> [(path: String, map: LabelMap)] {
        let data = try Support.requireRealData()
        return try Self.fixture.cases.keys.sorted().map { path in
            (path, try LabelMap(PNG.read(path: data.appendingPathComponent(path).path)))
        }
    }

    func testMetricsOfModifiedInstanceMapsMatchScipy() throws {
        let fixture = Self.fixture
        XCTAssertEqual(fixture.cases.count, 3)
        for (path, truth) in try instanceMaps() {
            let (truthComponents, truthCount) = truth.connectedComponents()
            for (variant, expected) in fixture.cases[path]!.sorted(by: { $0.key < $1.key }) {
                let context = "\(path) \(variant)"
                let predictedInstances: LabelMap
                switch variant {
                case "eroded": predictedInstances = try Recipes.eroded(truth)
                case "shifted": predictedInstances = try Recipes.shifted(truth, by: fixture.shift)
                case "blurred": predictedInstances = try Recipes.blurred(truth).connectedComponents().map
                default: XCTFail("unknown variant \(variant)"); continue
                }
                let prediction = predictedInstances.binarized()
                let counts = try ConfusionMatrix(prediction: prediction, truth: truth.binarized(), classes: 2).counts(forClass: 1)
                XCTAssertEqual(counts, BinaryCounts(truePositives: expected.tp, falsePositives: expected.fp,
                                                    falseNegatives: expected.fn, trueNegatives: expected.tn), context)
                let scores = counts.scores
                for (name, actual, wanted) in [("dice", scores.dice, expected.dice), ("iou", scores.iou, expected.iou),
                                               ("accuracy", scores.accuracy, expected.accuracy),
                                               ("specificity", scores.specificity, expected.specificity),
                                               ("sensitivity", scores.sensitivity, expected.sensitivity),
                                               ("precision", scores.precision, expected.precision)] {
                    XCTAssertEqual(actual, wanted, accuracy: 1e-12, "\(context) \(name)")
                }

                let (predictedComponents, predictedCount) = prediction.connectedComponents()
                XCTAssertEqual(predictedCount, expected.components.prediction, context)
                XCTAssertEqual(truthCount, expected.components.truth, context)
                XCTAssertEqual(checksum(predictedComponents), expected.components.predictionChecksum, "\(context): component numbering")
                XCTAssertEqual(checksum(truthComponents), expected.components.truthChecksum, "\(context): component numbering")

                XCTAssertEqual(try AggregatedJaccard.aji(prediction: predictedInstances, truth: truth).value, expected.aji, accuracy: 1e-6, "\(context) aji")
                XCTAssertEqual(try AggregatedJaccard.ajiPlus(prediction: predictedInstances, truth: truth).value, expected.ajiPlus, accuracy: 1e-6, "\(context) aji+")
                XCTAssertEqual(try AggregatedJaccard.aji(prediction: predictedComponents, truth: truthComponents).value,
                               expected.ajiComponents, accuracy: 1e-6, "\(context) aji of components")
                XCTAssertEqual(try AggregatedJaccard.ajiPlus(prediction: predictedComponents, truth: truthComponents).value,
                               expected.ajiPlusComponents, accuracy: 1e-6, "\(context) aji+ of components")

                let surface = try SurfaceDistances(prediction: prediction, truth: truth)
                XCTAssertEqual(surface.hausdorff, expected.hd, "\(context) hd")  // exact: both are √(an integer)
                XCTAssertEqual(surface.hausdorff95, expected.hd95, accuracy: 1e-6, "\(context) hd95")
                let points = try SurfaceDistances(prediction: prediction, truth: truth, points: .foreground)
                XCTAssertEqual(points.hausdorff, expected.hdPoints, "\(context) hd over foreground points")
                XCTAssertEqual(points.hausdorff95, expected.hd95Points, accuracy: 1e-6, "\(context) hd95 over foreground points")
                XCTAssertEqual(try rowVectorHausdorff(prediction: prediction, truth: truth), expected.rowHd, accuracy: 1e-12, "\(context) row-vector hd")
            }
        }
    }

    /// Σ label · (pixel index mod 9973), as the fixture script computes it.
    func checksum(_ map: LabelMap) -> Int {
        map.labels.enumerated().reduce(0) { $0 + Int($1.element) * ($1.offset % 9973) }
    }

    func testCiampiThresholdSweepMatchesNumpy() throws {
        let expected = Self.fixture.sweep
        var sweep = try ThresholdSweep()
        XCTAssertEqual(ThresholdSweep.ciampiThresholds, expected.thresholds)
        for (_, truth) in try instanceMaps() {
            let scores = Recipes.windowCount(try Recipes.shifted(truth, by: Self.fixture.shift)).map { Float($0) / Float(25) }
            try sweep.add(scores: scores, truth: truth)
        }
        let points = sweep.points
        XCTAssertEqual(points.count, expected.thresholds.count)
        for (k, point) in points.enumerated() {
            XCTAssertEqual(point.jaccard, expected.jaccard[k], accuracy: 1e-12, "threshold \(point.threshold)")
            XCTAssertEqual(point.dice, expected.dice[k], accuracy: 1e-12, "threshold \(point.threshold)")
        }
        let best = sweep.best
        XCTAssertEqual(best.threshold, expected.best.threshold)
        XCTAssertEqual(best.jaccard, expected.best.jaccard, accuracy: 1e-12)
        XCTAssertEqual(best.dice, expected.best.dice, accuracy: 1e-12)
    }

    func testStatisticsMatchScipy() throws {
        let expected = Self.fixture.statistics
        let summary = RunSummary(expected.runs)
        XCTAssertEqual(summary.mean, expected.mean, accuracy: 1e-12)
        XCTAssertEqual(summary.standardDeviation, expected.sd, accuracy: 1e-12)
        XCTAssertEqual(summary.halfWidth, expected.ci90, accuracy: 1e-10)
        XCTAssertEqual(summary.level, 0.90)
        for q in expected.quantiles {
            let t = Statistics.studentTQuantile(q.p, degreesOfFreedom: q.df)
            XCTAssertEqual(t, q.t, accuracy: 1e-9 * max(1, abs(q.t)), "t.ppf(\(q.p), \(q.df))")
        }
        for c in expected.cdf {
            // In this list `t` is the argument and `p` the value.
            XCTAssertEqual(Statistics.studentTCDF(c.t, degreesOfFreedom: c.df), c.p, accuracy: 1e-12, "t.cdf(\(c.t), \(c.df))")
        }
        for test in expected.pairedTTests {
            let (t, p) = try Statistics.pairedTTest(test.a, test.b)
            XCTAssertEqual(t, test.t, accuracy: 1e-9 * max(1, abs(test.t)), "ttest_rel(\(test.a), \(test.b)).statistic")
            XCTAssertEqual(p, test.p, accuracy: 1e-10, "ttest_rel(\(test.a), \(test.b)).pvalue")
        }
    }
}

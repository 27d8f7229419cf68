import HistoCore
import HistoMetrics
import XCTest

final class DistanceTests: XCTestCase {
    func testDistanceTransformMatchesBruteForce() throws {
        for (i, (width, height, density)) in [(1, 1, 1.0), (1, 19, 0.1), (23, 1, 0.1), (31, 29, 0.01), (17, 40, 0.3), (40, 33, 0.9)].enumerated() {
            let mask = try Support.randomMask(width: width, height: height, density: density, seed: UInt64(10 + i))
            let features = mask.foreground
            guard features.contains(true) else { continue }
            let squared = try XCTUnwrap(squaredEuclideanDistanceTransform(features, width: width, height: height))
            for p in 0..<(width * height) {
                let nearest = (0..<(width * height)).filter { features[$0] }.map { q -> Int in
                    let (dy, dx) = (p / width - q / width, p % width - q % width)
                    return dy * dy + dx * dx
                }.min()!
                XCTAssertEqual(squared[p], nearest, "\(width)×\(height) pixel \(p)")
            }
        }
        XCTAssertNil(try squaredEuclideanDistanceTransform([false, false], width: 2, height: 1))
        XCTAssertEqual(Support.invalidValue { _ = try squaredEuclideanDistanceTransform([true], width: 2, height: 1) },
                       "1 pixels do not fill 2×1")
    }

    func testHausdorffAndHD95ByHand() throws {
        // A line of 10 pixels against its first pixel: distances 0…9 one way, 0 the other. HD95 interpolates between
        // the 10th and 11th of the 11 pooled values (position 9.5): 8.5.
        let line = try Support.map(["1111111111", "0000000000"])
        let dot = try Support.map(["1000000000", "0000000000"])
        let distances = try SurfaceDistances(prediction: line, truth: dot)
        XCTAssertEqual(distances.predictionToTruth, (0..<10).map(Double.init))
        XCTAssertEqual(distances.truthToPrediction, [0])
        XCTAssertEqual(distances.hausdorff, 9)
        XCTAssertEqual(distances.hausdorff95, 8.5)
        XCTAssertEqual(distances.percentile(50), 4)
        XCTAssertEqual(distances.percentile(100), 9)
        XCTAssertFalse(distances.isUndefined)

        let far = try Support.map(["00000", "00000", "00000", "00001"])
        XCTAssertEqual(try SurfaceDistances(prediction: far, truth: Support.map(["10000", "00000", "00000", "00000"])).hausdorff, 5)
    }

    func testSurfaceIsTheMaskMinusItsErosionWithImageEdgesAsBackground() throws {
        let square = try Support.map(["0000000", "0111110", "0111110", "0111110", "0111110", "0111110", "0000000"])
        XCTAssertEqual(try SurfaceDistances(prediction: square, truth: square).predictionToTruth.count, 16)
        let full = try Support.map(["1111", "1111", "1111"])
        XCTAssertEqual(try SurfaceDistances(prediction: full, truth: full).truthToPrediction.count, 10)
        XCTAssertEqual(try SurfaceDistances(prediction: full, truth: full, points: .foreground).truthToPrediction.count, 12)

        // The centre of a 5×5 square: its surface ring lies 2 (edge middles) to √8 (corners) away.
        let centre = try Support.map(["0000000", "0000000", "0000000", "0001000", "0000000", "0000000", "0000000"])
        let surface = try SurfaceDistances(prediction: centre, truth: square)
        XCTAssertEqual(surface.predictionToTruth, [2])
        XCTAssertEqual(surface.hausdorff, 8.0.squareRoot())
        let points = try SurfaceDistances(prediction: centre, truth: square, points: .foreground)
        XCTAssertEqual(points.predictionToTruth, [0])
        XCTAssertEqual(points.truthToPrediction.count, 25)
        XCTAssertEqual(points.hausdorff, 8.0.squareRoot())
    }

    func testEmptyMasks() throws {
        let empty = try Support.map(["000", "000"])
        let one = try Support.map(["000", "010"])
        let both = try SurfaceDistances(prediction: empty, truth: empty)
        XCTAssertFalse(both.isUndefined)
        XCTAssertEqual(both.hausdorff, 0)
        XCTAssertEqual(both.hausdorff95, 0)
        for distances in [try SurfaceDistances(prediction: empty, truth: one), try SurfaceDistances(prediction: one, truth: empty)] {
            XCTAssertTrue(distances.isUndefined)
            XCTAssertTrue(distances.hausdorff.isNaN)
            XCTAssertTrue(distances.hausdorff95.isNaN)
        }
        XCTAssertEqual(Support.invalidValue { _ = try SurfaceDistances(prediction: one, truth: Support.map(["0"])) },
                       "prediction is 3×2 but truth is 1×1")
    }

    func testRowVectorHausdorff() throws {
        // Rows of the truth: 1100, 0000, 1111; of the prediction: 1100, 0000. The row 1111 is 2 pixels from its
        // nearest prediction row; every prediction row occurs in the truth: √2.
        let truth = try Support.map(["1100", "0000", "1111"])
        let prediction = try Support.map(["1100", "0000", "0000"])
        XCTAssertEqual(try rowVectorHausdorff(prediction: prediction, truth: truth), 2.0.squareRoot())
        XCTAssertEqual(try rowVectorHausdorff(prediction: truth, truth: prediction), 2.0.squareRoot())
        XCTAssertEqual(try rowVectorHausdorff(prediction: truth, truth: truth), 0)

        // Rows wider than one 64-bit word, against a direct count.
        let a = try Support.randomMask(width: 150, height: 12, density: 0.5, seed: 3)
        let b = try Support.randomMask(width: 150, height: 12, density: 0.5, seed: 4)
        func directed(_ from: LabelMap, _ to: LabelMap) -> Int {
            var farthest = 0
            for r in 0..<12 {
                var nearest = Int.max
                for s in 0..<12 {
                    let differing = (0..<150).filter { from.labels[r * 150 + $0] != to.labels[s * 150 + $0] }.count
                    nearest = min(nearest, differing)
                }
                farthest = max(farthest, nearest)
            }
            return farthest
        }
        XCTAssertEqual(try rowVectorHausdorff(prediction: a, truth: b), Double(max(directed(a, b), directed(b, a))).squareRoot())
        XCTAssertNotNil(Support.invalidValue { _ = try rowVectorHausdorff(prediction: a, truth: truth) })
    }
}

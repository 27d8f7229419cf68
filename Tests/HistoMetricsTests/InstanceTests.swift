import HistoCore
@testable import HistoMetrics
import XCTest

final class InstanceTests: XCTestCase {
    func testConnectedComponentsUseEightConnectivityAndRasterOrder() throws {
        // A U shape whose arms meet late (two provisional labels merged), a diagonal-only contact, touching pixels with
        // different labels, and a last component numbered after them.
        let map = try Support.map(["12000",
                                   "00010",
                                   "01010",
                                   "01110",
                                   "00001",
                                   "10000"])
        let (components, count) = map.connectedComponents()
        XCTAssertEqual(count, 3)
        XCTAssertEqual(components, try Support.map(["11000",
                                                    "00020",
                                                    "02020",
                                                    "02220",
                                                    "00002",
                                                    "30000"]))
        XCTAssertEqual(try Support.map(["000"]).connectedComponents().count, 0)
    }

    func testConnectedComponentsMatchAFloodFill() throws {
        for (i, (width, height, density)) in [(1, 1, 0.5), (1, 17, 0.6), (23, 1, 0.6), (31, 29, 0.35), (40, 37, 0.6), (16, 16, 0.95)].enumerated() {
            let mask = try Support.randomMask(width: width, height: height, density: density, seed: UInt64(i + 1))
            XCTAssertEqual(mask.connectedComponents().map.labels, floodFill(mask), "\(width)×\(height) at \(density)")
        }
    }

    /// Reference: breadth-first flood fill from each unlabelled foreground pixel in raster order.
    func floodFill(_ mask: LabelMap) -> [Int32] {
        let (w, h) = (mask.width, mask.height)
        var labels = [Int32](repeating: 0, count: w * h)
        var next: Int32 = 0
        for start in 0..<(w * h) where mask.labels[start] > 0 && labels[start] == 0 {
            next += 1
            labels[start] = next
            var queue = [start], head = 0
            while head < queue.count {
                let (y, x) = (queue[head] / w, queue[head] % w)
                head += 1
                for dy in -1...1 {
                    for dx in -1...1 where (0..<h).contains(y + dy) && (0..<w).contains(x + dx) {
                        let j = (y + dy) * w + x + dx
                        if mask.labels[j] > 0 && labels[j] == 0 { labels[j] = next; queue.append(j) }
                    }
                }
            }
        }
        return labels
    }

    func testAJIAndAJIPlusByHand() throws {
        // One prediction covering two true instances: AJI lets both take it, AJI+ pairs it with one.
        let two = try Support.map(["1122", "1122"])
        let merged = try Support.map(["1111", "1111"])
        XCTAssertEqual(try AggregatedJaccard.aji(prediction: merged, truth: two), AggregatedJaccard(intersection: 8, union: 16))
        XCTAssertEqual(try AggregatedJaccard.ajiPlus(prediction: merged, truth: two), AggregatedJaccard(intersection: 4, union: 12))
        // An unmatched prediction adds its area; a true instance overlapping nothing adds its own.
        let extra = try AggregatedJaccard.aji(prediction: Support.map(["1122"]), truth: Support.map(["1100"]))
        XCTAssertEqual(extra.value, 0.5)
        let missed = try AggregatedJaccard.aji(prediction: Support.map(["1100"]), truth: Support.map(["1002"]))
        XCTAssertEqual(missed, AggregatedJaccard(intersection: 1, union: 3))
        XCTAssertEqual(try AggregatedJaccard.ajiPlus(prediction: Support.map(["1100"]), truth: Support.map(["1002"])), missed)
        // Ids need not be consecutive, and pooling adds the sums.
        let sparse = try AggregatedJaccard.aji(prediction: Support.map(["9900"]), truth: Support.map(["0770"]))
        XCTAssertEqual(sparse, AggregatedJaccard(intersection: 1, union: 3))
        XCTAssertEqual((sparse + missed).value, 2.0 / 6)
    }

    func testAJITakesTheLowestIdOnEqualIoU() throws {
        // Prediction 1 overlaps 1 of 5 pixels of the union, prediction 2 overlaps 2 of 10: both IoU 0.2. Exact
        // comparison keeps prediction 1, so prediction 2's 8 pixels are unmatched: 1 / (5 + 8).
        let truth = try Support.map(["11110000000"])
        let prediction = try Support.map(["12201222222"])
        XCTAssertEqual(try AggregatedJaccard.aji(prediction: prediction, truth: truth), AggregatedJaccard(intersection: 1, union: 13))
    }

    func testAJIOfEmptyMaps() throws {
        let empty = try Support.map(["000", "000"])
        let one = try Support.map(["010", "000"])
        for metric in [AggregatedJaccard.aji, AggregatedJaccard.ajiPlus] {
            XCTAssertEqual(try metric(empty, empty).value, 1)
            XCTAssertEqual(try metric(empty, one).value, 0)
            XCTAssertEqual(try metric(one, empty).value, 0)
        }
        XCTAssertEqual(Support.invalidValue { _ = try AggregatedJaccard.aji(prediction: empty, truth: Support.map(["0"])) },
                       "prediction is 3×2 but truth is 1×1")
    }

    func testGenSelfDiffClassLevelAJIEqualsIoU() throws {
        // Class label maps passed as they are: each class is one object, so on a binary task AJI = IoU.
        let truth = try Support.map(["0110", "0111", "0000"])
        let prediction = try Support.map(["0010", "1111", "1000"])
        let iou = try ConfusionMatrix(prediction: prediction, truth: truth, classes: 2).counts(forClass: 1).scores.iou
        XCTAssertEqual(try AggregatedJaccard.aji(prediction: prediction, truth: truth).value, iou)
    }

    func testAssignmentIsOptimal() {
        var state: UInt64 = 12345
        func random() -> Double {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return Double(state % 1_000_000) / 1_000_000
        }
        for (rows, columns) in [(1, 1), (1, 4), (2, 2), (3, 5), (4, 4), (5, 7), (6, 6)] {
            for _ in 0..<20 {
                let cost = (0..<(rows * columns)).map { _ in random() < 0.3 ? 0 : -random() }
                let assigned = minimumCostAssignment(cost: cost, rows: rows, columns: columns)
                XCTAssertEqual(Set(assigned).count, rows, "distinct columns")
                let total = assigned.enumerated().reduce(0) { $0 + cost[$1.offset * columns + $1.element] }
                XCTAssertEqual(total, bruteForce(cost, rows: rows, columns: columns), accuracy: 1e-12, "\(rows)×\(columns)")
            }
        }
    }

    /// The least total cost over every injective row → column map.
    func bruteForce(_ cost: [Double], rows: Int, columns: Int, row: Int = 0, used: Set<Int> = []) -> Double {
        guard row < rows else { return 0 }
        return (0..<columns).filter { !used.contains($0) }.map {
            cost[row * columns + $0] + bruteForce(cost, rows: rows, columns: columns, row: row + 1, used: used.union([$0]))
        }.min()!
    }
}

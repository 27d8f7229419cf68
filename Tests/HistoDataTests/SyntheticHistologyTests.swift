import Foundation
import HistoCore
import HistoData
import XCTest

final class SyntheticHistologyTests: XCTestCase {
    typealias Crowding = SyntheticHistology.Crowding

    func testASeedGivesOneTile() throws {
        let first = try SyntheticHistology.tile(width: 96, height: 80, seed: 42, crowding: .moderate)
        let again = try SyntheticHistology.tile(width: 96, height: 80, seed: 42, crowding: .moderate)
        XCTAssertEqual(first.image, again.image)
        XCTAssertEqual(first.instances, again.instances)
        XCTAssertEqual(first.mask, again.mask)
        let other = try SyntheticHistology.tile(width: 96, height: 80, seed: 43, crowding: .moderate)
        XCTAssertNotEqual(first.image, other.image)
        XCTAssertEqual(first.image.layoutDescription, "96×80, 3 channels, 8-bit")
        XCTAssertEqual(first.instances.layoutDescription, "96×80, 1 channel, 16-bit")
        XCTAssertEqual(first.mask.layoutDescription, "96×80, 1 channel, 8-bit")
    }

    func testLabelsAreExact() throws {
        for crowding in Crowding.allCases {
            for seed: UInt64 in [1, 2] {
                let tile = try SyntheticHistology.tile(width: 128, height: 128, seed: seed, crowding: crowding)
                let ids = tile.instances.samples
                XCTAssertEqual(tile.mask.samples, ids.map { $0 > 0 ? 255 : 0 }, "\(crowding) \(seed)")
                // Ids are 1…n without gaps, and each instance is one 4-connected piece.
                XCTAssertEqual(Set(ids).subtracting([0]), Set((1...tile.nucleusCount).map(UInt16.init)), "\(crowding) \(seed)")
                XCTAssertEqual(Self.pieces(ids, width: 128, height: 128), tile.nucleusCount, "\(crowding) \(seed)")
                let foreground = Float(ids.filter { $0 > 0 }.count) / Float(ids.count)
                XCTAssert((0.1...0.45).contains(foreground), "\(crowding) \(seed): foreground fraction \(foreground)")
            }
        }
    }

    func testCrowdingRaisesCoverage() throws {
        let fractions = try Crowding.allCases.map { crowding in
            let ids = try SyntheticHistology.tile(width: 128, height: 128, seed: 8, crowding: crowding).instances.samples
            return Float(ids.filter { $0 > 0 }.count) / Float(ids.count)
        }
        XCTAssertEqual(fractions, fractions.sorted())
    }

    func testNucleiAreDarkerAndBluerThanStroma() throws {
        for crowding in Crowding.allCases {
            let tile = try SyntheticHistology.tile(width: 128, height: 128, seed: 5, crowding: crowding)
            var inside = [Double](repeating: 0, count: 3), outside = inside
            var insideCount = 0.0, outsideCount = 0.0
            for (p, id) in tile.instances.samples.enumerated() {
                for c in 0..<3 {
                    let value = Double(tile.image.samples[3 * p + c])
                    if id > 0 { inside[c] += value } else { outside[c] += value }
                }
                if id > 0 { insideCount += 1 } else { outsideCount += 1 }
            }
            inside = inside.map { $0 / insideCount }
            outside = outside.map { $0 / outsideCount }
            XCTAssertLessThan(inside.reduce(0, +), outside.reduce(0, +) - 60, "\(crowding): nuclei \(inside), stroma \(outside)")
            // Bluer: haematoxylin absorbs red more than blue, eosin green and blue more than red.
            XCTAssertGreaterThan(inside[2] - inside[0], outside[2] - outside[0], "\(crowding): nuclei \(inside), stroma \(outside)")
        }
    }

    func testCrowdedTilesHaveTouchingNuclei() throws {
        let tile = try SyntheticHistology.tile(width: 128, height: 128, seed: 3, crowding: .crowded)
        let ids = tile.instances.samples
        var touching = Set<[UInt16]>()
        for y in 0..<128 {
            for x in 0..<128 {
                let p = y * 128 + x
                for q in [x + 1 < 128 ? p + 1 : nil, y + 1 < 128 ? p + 128 : nil].compactMap({ $0 })
                    where ids[p] > 0 && ids[q] > 0 && ids[p] != ids[q] {
                    touching.insert([min(ids[p], ids[q]), max(ids[p], ids[q])])
                }
            }
        }
        XCTAssertGreaterThanOrEqual(touching.count, 3, "touching pairs of \(tile.nucleusCount) nuclei")
    }

    func testDatasetOpens() throws {
        let root = try Support.temporaryFolder(self).appendingPathComponent("synthetic").path
        try SyntheticHistology.makeDataset(at: root, count: 4, size: 64, seed: 11)
        let dataset = try Dataset.open(path: root, requireMasks: true)
        XCTAssertEqual(dataset.items.map(\.name), ["synth0000", "synth0001", "synth0002", "synth0003"])
        XCTAssert(dataset.items.allSatisfy { $0.instancePath != nil && $0.width == 64 && $0.height == 64 })
        let sample = try dataset.sample(at: 2)
        let tile = try SyntheticHistology.tile(width: 64, height: 64, seed: PhiloxStream.derive(seed: 11, path: [2]), crowding: .crowded)
        XCTAssertEqual(sample.image, tile.image)
        XCTAssertEqual(sample.instances?.values, tile.instances.samples.map(Float.init))
        XCTAssertEqual(sample.mask?.values, tile.instances.samples.map { $0 > 0 ? 1 : 0 })
        // A second dataset into the same folder would mix with the first.
        let error = Support.fileError { try SyntheticHistology.makeDataset(at: root, count: 1, size: 64, seed: 11) }
        XCTAssertEqual(error?.message.contains("not empty"), true)
    }

    /// The number of 4-connected pieces of equal nonzero id.
    static func pieces(_ ids: [UInt16], width: Int, height: Int) -> Int {
        var seen = [Bool](repeating: false, count: ids.count)
        var count = 0
        for start in ids.indices where ids[start] > 0 && !seen[start] {
            count += 1
            seen[start] = true
            var stack = [start]
            while let p = stack.popLast() {
                let (y, x) = (p / width, p % width)
                for (q, inside) in [(p - 1, x > 0), (p + 1, x < width - 1), (p - width, y > 0), (p + width, y < height - 1)]
                    where inside && !seen[q] && ids[q] == ids[p] {
                    seen[q] = true
                    stack.append(q)
                }
            }
        }
        return count
    }
}

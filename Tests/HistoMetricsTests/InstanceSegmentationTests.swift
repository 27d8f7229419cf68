import Foundation
import HistoCore
import HistoData
@testable import HistoMetrics
import XCTest

/// Boundary targets, the watershed and the instance scores against tools/instance_fixtures.py (scikit-image and
/// numpy/scipy references on real CPM-15 crops).
final class InstanceSegmentationTests: XCTestCase {
    let folder = Support.fixtures.appendingPathComponent("instances")
    let crops = 0..<3

    func read(_ name: String) throws -> LabelMap {
        try LabelMap(PNG.read(path: folder.appendingPathComponent(name).path))
    }

    func testBoundaryTargetsMatchFindBoundariesDilated() throws {
        for n in crops {
            let crop = try read("crop_\(n).png")
            for width in 1...3 {
                let target = InstanceGrid.boundaryClasses(crop.labels, width: crop.width, height: crop.height,
                                                          boundaryWidth: width)
                let expected = try read("boundary_\(n)_w\(width).png").labels
                XCTAssertEqual(target.count, expected.count)
                let differing = zip(target, expected).filter { $0 != $1 }.count
                XCTAssertEqual(differing, 0, "crop \(n) width \(width)")
            }
            // A binary mask: the boundary of each 8-connected component (touching nuclei are one object).
            let components = InstanceGrid.connectedComponents(crop.labels, width: crop.width, height: crop.height)
            let binary = InstanceGrid.boundaryClasses(components.labels, width: crop.width, height: crop.height,
                                                      boundaryWidth: 2)
            XCTAssertEqual(binary, try read("boundary_binary_\(n).png").labels, "crop \(n) binary")
        }
    }

    func testBoundaryTargetByHand() {
        // Two touching instances and one at the image border; width 1: pixels with a 4-neighbour of another label.
        let instances: [Int32] = [1, 1, 1, 0,
                                  1, 1, 2, 2,
                                  1, 1, 2, 2,
                                  0, 0, 2, 2]
        XCTAssertEqual(InstanceGrid.boundaryClasses(instances, width: 4, height: 4, boundaryWidth: 1),
                       [1, 1, 2, 0,
                        1, 2, 2, 2,
                        2, 2, 2, 1,
                        0, 0, 2, 1])
    }

    func testWatershedMatchesScikitImage() throws {
        for n in crops {
            let elevation = try read("elevation_\(n).png")
            let markers = try read("markers_\(n).png")
            let mask = try read("mask_\(n).png")
            let labels = try watershed(elevation: elevation.labels.map(Float.init), markers: markers.labels,
                                       mask: mask.foreground, width: mask.width, height: mask.height)
            let expected = try read("watershed_\(n).png").labels
            XCTAssertEqual(zip(labels, expected).filter { $0 != $1 }.count, 0, "crop \(n)")
            // 8 levels and no mask: large plateaus, where the order of pushes and neighbours decides.
            let coarse = try watershed(elevation: elevation.labels.map { Float($0 / 8192) }, markers: markers.labels,
                                       mask: [Bool](repeating: true, count: mask.labels.count),
                                       width: mask.width, height: mask.height)
            let expectedCoarse = try read("watershed_coarse_\(n).png").labels
            XCTAssertEqual(zip(coarse, expectedCoarse).filter { $0 != $1 }.count, 0, "crop \(n) coarse")
        }
    }

    func testInstanceScoresMatchTheReferences() throws {
        let data = try Data(contentsOf: folder.appendingPathComponent("scores.json"))
        let scores = try JSONSerialization.jsonObject(with: data) as! [String: [String: Any]]
        for n in crops {
            let truth = try read("crop_\(n).png")
            let merged = try read("mask_\(n).png").connectedComponents().map
            for (name, prediction) in [("watershed", try read("watershed_\(n).png")), ("components", merged)] {
                let expected = scores["crop_\(n)"]![name] as! [String: Int]
                XCTAssertEqual(try AggregatedJaccard.ajiPlus(prediction: prediction, truth: truth),
                               AggregatedJaccard(intersection: expected["aji_plus_intersection"]!,
                                                 union: expected["aji_plus_union"]!), "crop \(n) \(name)")
                XCTAssertEqual(try DetectionCounts(prediction: prediction, truth: truth),
                               DetectionCounts(truePositives: expected["tp"]!, falsePositives: expected["fp"]!,
                                               falseNegatives: expected["fn"]!), "crop \(n) \(name)")
            }
        }
    }

    func testDetectionMatchesAtIoUOneHalfOneToOne() throws {
        // A true nucleus of 4 pixels; two predictions of 2 pixels each have IoU exactly 1/2 with it: one matches.
        let truth = try Support.map(["1111"])
        let halves = try Support.map(["1122"])
        XCTAssertEqual(try DetectionCounts(prediction: halves, truth: truth),
                       DetectionCounts(truePositives: 1, falsePositives: 1, falseNegatives: 0))
        // IoU 1/3 < 1/2: no match.
        let small = try Support.map(["0100"])
        let counts = try DetectionCounts(prediction: try Support.map(["1100"]), truth: try Support.map(["1111"]))
        XCTAssertEqual(counts.f1, 1)
        XCTAssertEqual(try DetectionCounts(prediction: small, truth: truth),
                       DetectionCounts(truePositives: 0, falsePositives: 1, falseNegatives: 1))
        XCTAssertEqual(DetectionCounts(truePositives: 0, falsePositives: 0, falseNegatives: 0).f1, 1)
    }

    func testPostprocessingSplitsTouchingNucleiAlongTheBoundaryClass() throws {
        // Two nuclei side by side in one foreground blob: interior columns 1–2 and 5–6, boundary 0, 3, 4 and 7.
        let (width, height) = (8, 3)
        let interior: [Float] = [0, 0.9, 0.9, 0.2, 0.1, 0.9, 0.9, 0]
        var values = [Float](repeating: 0, count: 3 * width * height)
        for y in 0..<height {
            for x in 0..<width {
                let p = y * width + x
                values[width * height + p] = interior[x]
                values[2 * width * height + p] = 1 - interior[x]
            }
        }
        let probabilities = try Planes(channels: 3, height: height, width: width, values: values)
        let split = try InstancePostprocessing(minimumSeedArea: 1, minimumArea: 0).instances(of: probabilities)
        XCTAssertEqual(split.labels, Array(repeating: [1, 1, 1, 1, 2, 2, 2, 2] as [Int32], count: 3).flatMap { $0 })
        // A binary model with a connected-component post-processing sees one object.
        let binary = try Planes(channels: 2, height: height, width: width,
                                values: [Float](repeating: 0, count: width * height)
                                    + [Float](repeating: 1, count: width * height))
        XCTAssertEqual(Set(try InstancePostprocessing.defaults(classes: 2).instances(of: binary).labels), [1])
        // Instances under the minimum area are removed; the rest are renumbered.
        let small = try InstancePostprocessing(minimumSeedArea: 1, minimumArea: 13).instances(of: probabilities)
        XCTAssertEqual(Set(small.labels), [0])
    }

    func testOneWatershedServesEveryMinimumArea() throws {
        // Blobs of several sizes, some touching, as 2- and 3-class probabilities; instance tuning takes the maps of
        // all its minimum areas from one call.
        let (width, height) = (48, 40)
        let centres: [(x: Double, y: Double, radius: Double)] = [(8, 8, 6), (17, 9, 5), (30, 20, 9), (40, 33, 2.5),
                                                                 (10, 30, 3.5), (22, 34, 2), (44, 6, 1.5)]
        var foreground = [Float](repeating: 0, count: width * height)
        for y in 0..<height {
            for x in 0..<width {
                let nearest = centres.map { (hypot(Double(x) - $0.x, Double(y) - $0.y)) / $0.radius }.min()!
                foreground[y * width + x] = Float(1 / (1 + exp(4 * (nearest - 1))))
            }
        }
        let interior = foreground.map { $0 * $0 }
        let twoClass = try Planes(channels: 2, height: height, width: width,
                                  values: foreground.map { 1 - $0 } + foreground)
        let threeClass = try Planes(channels: 3, height: height, width: width,
                                    values: foreground.map { 1 - $0 } + interior + zip(foreground, interior).map(-))
        let areas = [0, 10, 30]
        for (probabilities, seeds) in [(twoClass, [nil, 1, 2]), (threeClass, [0.35, 0.5])] as [(Planes, [Double?])] {
            for seed in seeds {
                let parameters = InstancePostprocessing(foregroundThreshold: 0.4, seedThreshold: seed,
                                                        minimumSeedArea: 2)
                let shared = try parameters.instances(of: probabilities, minimumAreas: areas)
                var counts: [Int] = []
                for (area, map) in zip(areas, shared) {
                    var alone = parameters
                    alone.minimumArea = area
                    XCTAssertEqual(map.labels, try alone.instances(of: probabilities).labels, "seed \(seed as Any)")
                    counts.append(Set(map.labels).count - 1)
                }
                XCTAssertEqual(counts.sorted(by: >), counts)
                XCTAssertGreaterThan(counts[0], counts[2], "the areas remove instances")
            }
        }
    }
}

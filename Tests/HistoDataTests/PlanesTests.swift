import Foundation
import HistoCore
import HistoData
import XCTest

final class PlanesTests: XCTestCase {
    func testColorPlanesScaleAndLayout() throws {
        // 2×1 RGB: pixel 0 = (0, 255, 51), pixel 1 = (255, 127, 0).
        let image = try Image(width: 2, height: 1, channels: 3, bitDepth: 8, samples: [0, 255, 51, 255, 127, 0])
        let signed = image.colorPlanes(range: .minusOneToOne)
        XCTAssertEqual(signed.shape, [3, 1, 2])
        XCTAssertEqual(signed.values, [0, 255, 255, 127, 51, 0].map { Float($0) / 127.5 - 1 })
        XCTAssertEqual(image.colorPlanes(range: .zeroToOne).values, [0, 255, 255, 127, 51, 0].map { Float($0) / 255 })

        let grayAlpha = try Image(width: 1, height: 1, channels: 2, bitDepth: 16, samples: [65535, 0])
        XCTAssertEqual(grayAlpha.colorPlanes(range: .zeroToOne).values, [1, 1, 1], "gray repeated, alpha dropped")
    }

    func testTensorsAndBatches() throws {
        let a = try Support.image(width: 4, height: 3, channels: 3, bitDepth: 8, seed: 1).colorPlanes()
        let b = try Support.image(width: 4, height: 3, channels: 3, bitDepth: 8, seed: 2).colorPlanes()
        XCTAssertEqual(a.tensor().shape, [3, 3, 4])
        XCTAssertEqual(try a.tensor().toArray(), a.values)
        let batch = Planes.batch([a, b])
        XCTAssertEqual(batch.shape, [2, 3, 3, 4])
        XCTAssertEqual(try batch.toArray(), a.values + b.values)

        let mask = try Image(width: 4, height: 3, channels: 1, bitDepth: 8, samples: (0..<12).map { UInt16($0 % 3) }).labelPlanes()
        XCTAssertEqual(mask.labelTensor().shape, [3, 4])
        XCTAssertEqual(try mask.labelTensor().toArray(), (0..<12).map { Float($0 % 3) })
        XCTAssertEqual(Planes.labelBatch([mask, mask, mask]).shape, [3, 3, 4])

        XCTAssertThrowsError(try Planes.batch([a, try a.resized(height: 2, width: 2, filter: .bilinear)]).eval())
        XCTAssertThrowsError(try Planes.batch([]).eval())
        XCTAssertThrowsError(try Planes.labelBatch([a]).eval())
        XCTAssertThrowsError(try a.labelTensor().eval())
        XCTAssertThrowsError(try Support.image(width: 2, height: 2, channels: 3, bitDepth: 8, seed: 1).labelPlanes())
    }

    func testNonOverlappingPatchesReassembleTheImageExactly() throws {
        let image = try Support.image(width: 23, height: 17, channels: 3, bitDepth: 8, seed: 5).colorPlanes()
        for padding in [PatchPadding.reflect, .zero] {
            for size in [1, 4, 8, 17, 23, 32] {
                let patches = try image.patches(size: size, stride: size, padding: padding)
                XCTAssertEqual(patches.count, ((17 + size - 1) / size) * ((23 + size - 1) / size))
                XCTAssertTrue(patches.allSatisfy { $0.planes.shape == [3, size, size] })
                XCTAssertEqual(try Planes.stitch(patches, height: 17, width: 23), image, "size \(size), \(padding)")
            }
        }
    }

    func testOverlappingPatchesCoverTheImageAndStitchByAveraging() throws {
        let image = try Support.image(width: 30, height: 21, channels: 2, bitDepth: 16, seed: 9).colorPlanes(range: .zeroToOne)
        let patches = try image.patches(size: 8, stride: 5, padding: .reflect)
        XCTAssertEqual(Set(patches.map(\.y)), [0, 5, 10, 15])
        XCTAssertEqual(Set(patches.map(\.x)), [0, 5, 10, 15, 20, 25])
        let stitched = try Planes.stitch(patches, height: 21, width: 30)
        for (got, want) in zip(stitched.values, image.values) { XCTAssertEqual(got, want, accuracy: 1e-6) }
        XCTAssertThrowsError(try Planes.stitch(Array(patches.dropFirst()), height: 21, width: 30), "a hole")
        XCTAssertThrowsError(try image.patches(size: 4, stride: 5, padding: .zero), "stride > size skips pixels")
    }

    func testPaddingReflectsWithoutRepeatingTheEdgeOrFillsZeros() throws {
        let row = try Planes(channels: 1, height: 1, width: 4, values: [10, 11, 12, 13])
        XCTAssertEqual(try row.crop(y: 0, x: -3, height: 1, width: 11, padding: .reflect).values,
                       [13, 12, 11, 10, 11, 12, 13, 12, 11, 10, 11])
        XCTAssertEqual(try row.crop(y: 0, x: -2, height: 1, width: 8, padding: .zero).values, [0, 0, 10, 11, 12, 13, 0, 0])
        XCTAssertEqual(try row.crop(y: -1, x: 0, height: 3, width: 4, padding: .reflect).values,
                       [10, 11, 12, 13, 10, 11, 12, 13, 10, 11, 12, 13], "one row reflects to itself")
        let patches = try row.patches(size: 6, stride: 6, padding: .reflect)
        XCTAssertEqual(patches.map(\.planes.values), [[10, 11, 12, 13, 12, 11,
                                                       10, 11, 12, 13, 12, 11,
                                                       10, 11, 12, 13, 12, 11,
                                                       10, 11, 12, 13, 12, 11,
                                                       10, 11, 12, 13, 12, 11,
                                                       10, 11, 12, 13, 12, 11]])
    }

    /// Against PyTorch's F.interpolate (tools/make_png_fixtures.py wrote resize.json).
    func testResizeMatchesPyTorch() throws {
        struct Case: Decodable { let filter: String; let height, width: Int; let values: [Float] }
        struct Fixture: Decodable { let shape: [Int]; let values: [Float]; let cases: [Case] }
        let fixture = try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: Support.fixtures.appendingPathComponent("resize.json")))
        let source = try Planes(channels: fixture.shape[0], height: fixture.shape[1], width: fixture.shape[2], values: fixture.values)
        XCTAssertEqual(fixture.cases.count, 10)
        for c in fixture.cases {
            let resized = try source.resized(height: c.height, width: c.width, filter: c.filter == "bilinear" ? .bilinear : .nearest)
            XCTAssertEqual(resized.shape, [source.channels, c.height, c.width])
            for (i, (got, want)) in zip(resized.values, c.values).enumerated() {
                XCTAssertEqual(got, want, accuracy: 1e-5, "\(c.filter) \(c.height)×\(c.width) element \(i)")
            }
        }
    }

    func testNearestResizeKeepsLabelIds() throws {
        let labels = try Image(width: 9, height: 7, channels: 1, bitDepth: 16,
                               samples: (0..<63).map { UInt16([0, 1, 2, 40000][$0 % 4]) }).labelPlanes()
        for (h, w) in [(3, 4), (20, 31)] {
            XCTAssertTrue(Set(try labels.resized(height: h, width: w, filter: .nearest).values).isSubset(of: [0, 1, 2, 40000]))
        }
        XCTAssertThrowsError(try labels.resized(height: 0, width: 3, filter: .nearest))
    }
}

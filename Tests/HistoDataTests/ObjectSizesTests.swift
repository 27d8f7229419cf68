import Foundation
import HistoCore
import HistoData
import XCTest

final class ObjectSizesTests: XCTestCase {
    private func write(_ image: Image, _ root: URL, _ folder: String, _ name: String) throws {
        let directory = root.appendingPathComponent(folder)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try PNG.write(image, to: directory.appendingPathComponent(name + ".png").path)
    }

    private func gray(bitDepth: Int = 8, _ value: (_ y: Int, _ x: Int) -> Int) throws -> Image {
        try Image(width: 40, height: 30, channels: 1, bitDepth: bitDepth,
                  samples: (0..<1200).map { UInt16(value($0 / 40, $0 % 40)) })
    }

    /// a: a 10×10 square and a 3×6 bar (mask components); b: a 4×8 block whose instance map splits it into two
    /// 4×4 nuclei; c: no mask. Diameters 2√(area/π): 11.284, 4.787, 4.514, 4.514; extents 10, 6, 4, 4.
    private func dataset() throws -> Dataset {
        let root = try Support.temporaryFolder(self)
        for name in ["a", "b", "c"] {
            try write(try Support.image(width: 40, height: 30, channels: 3, bitDepth: 8, seed: 1), root, "images", name)
        }
        try write(try gray { y, x in (2..<12).contains(y) && (2..<12).contains(x)
                  || (20..<23).contains(y) && (20..<26).contains(x) ? 255 : 0 }, root, "masks", "a")
        let block = { (y: Int, x: Int) in (10..<14).contains(y) && (5..<13).contains(x) }
        try write(try gray { block($0, $1) ? 255 : 0 }, root, "masks", "b")
        try write(try gray(bitDepth: 16) { block($0, $1) ? ($1 < 9 ? 1 : 2) : 0 }, root, "instances", "b")
        return try Dataset.open(path: root.path)
    }

    func testObjectsAreInstancesOrMaskComponentsOfTheLabelledImages() throws {
        let data = try dataset()
        let sizes = try XCTUnwrap(ObjectSizes.measure(data, indices: [0, 1, 2]))
        XCTAssertEqual(sizes.images, 2)
        XCTAssertEqual(sizes.objects, 4)
        let small = 2 * (16 / Double.pi).squareRoot(), bar = 2 * (18 / Double.pi).squareRoot()
        XCTAssertEqual(sizes.medianDiameter, (small + bar) / 2, accuracy: 1e-12)
        XCTAssertEqual(sizes.medianExtent, 5)

        let first = try XCTUnwrap(ObjectSizes.measure(data, indices: [0]))
        XCTAssertEqual(first.objects, 2)
        XCTAssertEqual(first.medianExtent, 8)
        XCTAssertNil(try ObjectSizes.measure(data, indices: [2]), "an image without a mask has no objects")
    }

    func testAPatchUnderTwoMedianDiametersGetsANoticeNamingTheSmallestPatch() {
        let sizes = ObjectSizes(images: 3, objects: 40, medianDiameter: 123.2, medianExtent: 153)
        XCTAssertEqual(sizes.smallestPatch(multiple: 32), 256)
        XCTAssertEqual(sizes.smallestPatch(multiple: 1), 247)
        XCTAssertNil(sizes.notice(patch: 256, multiple: 32))
        let notice = try? XCTUnwrap(sizes.notice(patch: 64, multiple: 32))
        XCTAssertEqual(notice?.contains("the 64² patch is smaller than 2× the median object diameter"), true)
        XCTAssertEqual(notice?.contains("(123 px over 40 objects)"), true)
        XCTAssertEqual(notice?.hasSuffix("pass --patch 256 (or larger), or downscale the images first (--resize; "
                                         + "genselfdiff: --preset gland)"), true)
        // MoNuSeg's nuclei (median diameter 21 px) fit the nucleus presets' 64² patches.
        XCTAssertNil(ObjectSizes(images: 3, objects: 900, medianDiameter: 21, medianExtent: 25)
            .notice(patch: 64, multiple: 4))
    }
}

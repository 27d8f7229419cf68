import Foundation
import HistoCore
import HistoData
import XCTest

final class DatasetTests: XCTestCase {
    /// Writes `folder/NAME.png` (creating the folder) and returns its path.
    @discardableResult
    private func write(_ image: Image, _ root: URL, _ folder: String, _ name: String) throws -> String {
        let directory = root.appendingPathComponent(folder)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let path = directory.appendingPathComponent(name + ".png").path
        try PNG.write(image, to: path)
        return path
    }

    private func rgb(_ width: Int, _ height: Int, seed: UInt64 = 1) throws -> Image {
        try Support.image(width: width, height: height, channels: 3, bitDepth: 8, seed: seed)
    }

    private func gray(_ width: Int, _ height: Int, bitDepth: Int = 8, _ value: (Int) -> Int) throws -> Image {
        try Image(width: width, height: height, channels: 1, bitDepth: bitDepth, samples: (0..<(width * height)).map { UInt16(value($0)) })
    }

    func testValidDatasetLoadsImagesMasksAndInstances() throws {
        let root = try Support.temporaryFolder(self)
        let image = try rgb(6, 4)
        try write(image, root, "images", "b")
        try write(try rgb(5, 5, seed: 2), root, "images", "a")
        try write(try gray(6, 4) { $0 % 2 == 0 ? 255 : 0 }, root, "masks", "b")
        try write(try gray(5, 5) { $0 < 5 ? 7 : 0 }, root, "masks", "a")
        try write(try gray(6, 4, bitDepth: 16) { $0 * 2000 + 1 }, root, "instances", "b")

        let dataset = try Dataset.open(path: root.path, requireMasks: true)
        XCTAssertEqual(dataset.items.map(\.name), ["a", "b"])
        XCTAssertEqual(dataset.items.map(\.width), [5, 6])
        XCTAssertNil(dataset.items[0].instancePath)
        let sample = try dataset.sample(at: 1)
        XCTAssertEqual(sample.name, "b")
        XCTAssertEqual(sample.image, image)
        XCTAssertEqual(sample.mask?.values, (0..<24).map { $0 % 2 == 0 ? 1 : 0 }, "binary: any value > 0 is class 1")
        XCTAssertEqual(sample.instances?.values, (0..<24).map { Float($0 * 2000 + 1) }, "16-bit ids exact")
        XCTAssertEqual(try dataset.sample(at: 0).mask?.values, (0..<25).map { $0 < 5 ? 1 : 0 })
        XCTAssertThrowsError(try dataset.sample(at: 2))
    }

    func testClassIdsAreKept() throws {
        let root = try Support.temporaryFolder(self)
        try write(try rgb(4, 3), root, "images", "x")
        try write(try gray(4, 3) { $0 % 3 }, root, "masks", "x")
        let dataset = try Dataset.open(path: root.path, requireMasks: true, classes: .ids(count: 3))
        XCTAssertEqual(try dataset.sample(at: 0).mask?.values, (0..<12).map { Float($0 % 3) })
    }

    func testEveryOffendingFileIsListed() throws {
        let root = try Support.temporaryFolder(self)
        for name in ["ok", "nomask1", "nomask2", "small", "wide", "badvalues1", "badvalues2", "color", "instsize"] {
            try write(try rgb(6, 4), root, "images", name)
        }
        try write(try gray(6, 4) { $0 == 5 ? 255 : $0 % 3 }, root, "masks", "ok")  // 255: ignore, not an error
        try write(try gray(5, 4) { _ in 0 }, root, "masks", "small")
        try write(try gray(6, 5) { _ in 0 }, root, "masks", "wide")
        try write(try gray(6, 4) { $0 == 3 ? 5 : 0 }, root, "masks", "badvalues1")
        try write(try gray(6, 4, bitDepth: 16) { $0 == 0 ? 300 : 1 }, root, "masks", "badvalues2")
        try write(try rgb(6, 4), root, "masks", "color")
        try write(try gray(6, 4) { _ in 0 }, root, "masks", "instsize")
        try write(try gray(4, 6, bitDepth: 16) { $0 }, root, "instances", "instsize")
        try write(try gray(6, 4) { _ in 0 }, root, "masks", "orphan")
        try Data("junk".utf8).write(to: root.appendingPathComponent("images/corrupt.png"))
        try Data("a note".utf8).write(to: root.appendingPathComponent("images/README.txt"))

        let error = Support.fileError { _ = try Dataset.open(path: root.path, requireMasks: true, classes: .ids(count: 3)) }
        let message = try XCTUnwrap(error?.message)
        XCTAssertEqual(error?.path, root.standardizedFileURL.path)
        let lines = message.split(separator: "\n").dropFirst()
        XCTAssertTrue(message.hasPrefix("invalid dataset, 10 problems:"), message)
        XCTAssertEqual(lines.count, 10, message)
        for (file, why) in [("images/nomask1.png", "no mask"), ("images/nomask2.png", "no mask"),
                            ("masks/small.png", "5×4 but its image is 6×4"), ("masks/wide.png", "6×5 but its image is 6×4"),
                            ("masks/badvalues1.png", "mask values 5 are outside the 3 declared classes"),
                            ("masks/badvalues2.png", "mask values 300 are outside"),
                            ("masks/color.png", "3 channels"), ("instances/instsize.png", "4×6 but its image is 6×4"),
                            ("masks/orphan.png", "has no image"), ("images/corrupt.png", "cannot read PNG")] {
            XCTAssertTrue(lines.contains { $0.contains("/" + file + ": ") && $0.contains(why) }, "\(file) (\(why)) not in:\n\(message)")
        }
        XCTAssertFalse(message.contains("ok.png"), message)
    }

    /// Unlabelled use (pretraining) reads the images alone: masks of any kind do not matter; decoding every image up
    /// front finds a damaged file that a header read misses.
    func testMasksCanBeIgnoredAndImagesDecodedUpFront() throws {
        let root = try Support.temporaryFolder(self)
        try write(try rgb(6, 4), root, "images", "a")
        let valid = try write(try rgb(64, 64, seed: 3), root, "images", "b")
        try write(try gray(5, 4) { _ in 0 }, root, "masks", "a")
        try write(try gray(6, 4) { _ in 0 }, root, "masks", "orphan")
        XCTAssertNotNil(Support.fileError { _ = try Dataset.open(path: root.path) })
        let unlabelled = try Dataset.open(path: root.path, ignoringMasks: true, decodingImages: true)
        XCTAssertEqual(unlabelled.items.map(\.name), ["a", "b"])
        XCTAssertEqual(unlabelled.items.map(\.maskPath), [nil, nil])
        XCTAssertNotNil(Support.fileError {
            _ = try Dataset.open(path: root.path, requireMasks: true, ignoringMasks: true)
        })

        // Cut in the image data: the header still reads.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: valid))
        try bytes.prefix(bytes.count - 40).write(to: URL(fileURLWithPath: valid))
        XCTAssertNoThrow(try Dataset.open(path: root.path, ignoringMasks: true))
        let error = Support.fileError {
            _ = try Dataset.open(path: root.path, ignoringMasks: true, decodingImages: true)
        }
        XCTAssertTrue(error?.message.contains("images/b.png: cannot read PNG") ?? false, error?.message ?? "")
    }

    func testAPatchLargerThanEveryImageIsRefusedNamingTheLargest() throws {
        let root = try Support.temporaryFolder(self)
        try write(try rgb(30, 12), root, "images", "wide")
        try write(try rgb(20, 20), root, "images", "square")
        let dataset = try Dataset.open(path: root.path)
        XCTAssertNoThrow(try dataset.checkPatchFits(20))
        let error = Support.fileError { try dataset.checkPatchFits(21) }
        XCTAssertEqual(error?.message, "a patch of 21×21 is larger than every image (the largest, square, is 20×20); "
                       + "use a patch of at most 20")
    }

    func testMasksOptionalUnlessRequired() throws {
        let root = try Support.temporaryFolder(self)
        try write(try rgb(4, 4), root, "images", "p")
        try write(try rgb(4, 4), root, "images", "q")
        try write(try gray(4, 4) { $0 }, root, "masks", "p")
        let dataset = try Dataset.open(path: root.path)
        XCTAssertNotNil(try dataset.sample(at: 0).mask)
        XCTAssertNil(try dataset.sample(at: 1).mask)
        let error = Support.fileError { _ = try Dataset.open(path: root.path, requireMasks: true) }
        XCTAssertTrue(error?.message.contains("images/q.png: no mask") ?? false, error?.message ?? "")
    }

    func testUnlabelledFolders() throws {
        let flat = try Support.temporaryFolder(self)
        try write(try rgb(3, 3), flat, ".", "one")
        try write(try rgb(3, 3), flat, ".", "two")
        let dataset = try Dataset.open(path: flat.path)
        XCTAssertEqual(dataset.items.map(\.name), ["one", "two"])
        XCTAssertNil(dataset.items[0].maskPath)
        XCTAssertTrue(Support.fileError { _ = try Dataset.open(path: flat.path, requireMasks: true) }?.message.contains("no masks/ folder") ?? false)

        let layered = try Support.temporaryFolder(self)
        try write(try rgb(3, 3), layered, "images", "only")
        XCTAssertEqual(try Dataset.open(path: layered.path).count, 1)
    }

    func testMissingAndEmptyFoldersAreErrors() throws {
        let root = try Support.temporaryFolder(self)
        let missing = root.appendingPathComponent("nothing-here").path
        XCTAssertEqual(Support.fileError { _ = try Dataset.open(path: missing) }?.path, missing)
        try FileManager.default.createDirectory(at: root.appendingPathComponent("images"), withIntermediateDirectories: true)
        let empty = Support.fileError { _ = try Dataset.open(path: root.path) }
        XCTAssertTrue(empty?.message.contains("no PNG images") ?? false, empty?.message ?? "")
        XCTAssertNotNil(Support.fileError { _ = try Dataset.open(path: root.path, classes: .ids(count: 1)) })
    }

    /// One MoNuSeg image, mask and instance map from the shared data folder.
    func testRealMoNuSegSample() throws {
        guard let data = Support.realData else {
            throw XCTSkip("real data not found: set HISTODIFF_DATA or provide <package root>/../shared/data")
        }
        let dataset = try Dataset.open(path: data.appendingPathComponent("monuseg-train").path, requireMasks: true)
        XCTAssertEqual(dataset.count, 30)
        let index = try XCTUnwrap(dataset.items.firstIndex { $0.instancePath != nil })
        let sample = try dataset.sample(at: index)
        XCTAssertEqual([sample.image.width, sample.image.height, sample.image.channels, sample.image.bitDepth], [1000, 1000, 3, 8])
        let mask = try XCTUnwrap(sample.mask)
        let instances = try XCTUnwrap(sample.instances)
        XCTAssertEqual(mask.shape, [1, 1000, 1000])
        XCTAssertEqual(instances.shape, [1, 1000, 1000])
        let foreground = mask.values.reduce(0, +) / Float(mask.values.count)
        XCTAssertTrue((0.1...0.4).contains(foreground), "foreground fraction \(foreground)")
        // Instances lie inside the foreground, and there are many of them.
        XCTAssertTrue(zip(instances.values, mask.values).allSatisfy { $0.0 == 0 || $0.1 == 1 })
        XCTAssertGreaterThan(Set(instances.values).count, 100)
        XCTAssertEqual(sample.image.colorPlanes().tensor().shape, [3, 1000, 1000])
    }
}

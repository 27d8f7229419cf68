import Foundation
import HistoCore
import HistoData
import XCTest

extension Support {
    /// Writes `root/folder/NAME.png`, creating the folder.
    static func writePNG(_ image: Image, _ root: URL, _ folder: String, _ name: String) throws {
        let directory = root.appendingPathComponent(folder)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try PNG.write(image, to: directory.appendingPathComponent(name + ".png").path)
    }

    /// A dataset folder of `count` random RGB images `img00`, `img01`, … of `width × height` whose masks are a
    /// function of the image (red above 127), plus `unmasked` images without masks (`raw00`, …).
    static func syntheticDataset(_ test: XCTestCase, count: Int, unmasked: Int = 0, width: Int = 40, height: Int = 30) throws -> Dataset {
        let root = try temporaryFolder(test)
        for i in 0..<count {
            let name = String(format: "img%02d", i)
            let rgb = try image(width: width, height: height, channels: 3, bitDepth: 8, seed: UInt64(100 + i))
            try writePNG(rgb, root, "images", name)
            let mask = (0..<(width * height)).map { UInt16(rgb.samples[3 * $0] > 127 ? 255 : 0) }
            try writePNG(try Image(width: width, height: height, channels: 1, bitDepth: 8, samples: mask), root, "masks", name)
        }
        for i in 0..<unmasked {
            try writePNG(try image(width: width, height: height, channels: 3, bitDepth: 8, seed: UInt64(900 + i)),
                         root, "images", String(format: "raw%02d", i))
        }
        return try Dataset.open(path: root.path)
    }
}

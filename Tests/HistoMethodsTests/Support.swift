import Foundation
import XCTest
import HistoCore
import HistoData

extension XCTestCase {
    /// A fresh folder under the temporary directory, removed when the test ends.
    func temporaryFolder() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("histomethods-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    /// A synthetic dataset: noisy images with bright squares, masks marking the squares; `unlabelled` more images
    /// without masks.
    func syntheticDataset(count: Int, size: Int, unlabelled: Int = 0) throws -> Dataset {
        let root = try temporaryFolder()
        for folder in ["images", "masks"] {
            try FileManager.default.createDirectory(at: root.appendingPathComponent(folder),
                                                    withIntermediateDirectories: true)
        }
        for i in 0..<(count + unlabelled) {
            let noise = try RandomGenerator(seed: UInt64(i)).uniform([size * size], 0, 60).toArray()
            var mask = [UInt16](repeating: 0, count: size * size)
            for y in (4 + i % 5)..<(size / 2) { for x in 6..<(size / 2 + i % 7) { mask[y * size + x] = 255 } }
            let rgb = (0..<(size * size)).flatMap { p in
                [UInt16](repeating: UInt16(noise[p]) + (mask[p] > 0 ? 150 : 40), count: 3)
            }
            try PNG.write(try Image(width: size, height: size, channels: 3, bitDepth: 8, samples: rgb),
                          to: root.appendingPathComponent("images/s\(i).png").path)
            if i < count {
                try PNG.write(try Image(width: size, height: size, channels: 1, bitDepth: 8, samples: mask),
                              to: root.appendingPathComponent("masks/s\(i).png").path)
            }
        }
        return try Dataset.open(path: root.path)
    }
}

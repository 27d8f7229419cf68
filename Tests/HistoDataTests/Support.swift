import Foundation
import HistoCore
import HistoData
import XCTest

enum Support {
    static let fixtures = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!

    /// The real datasets: `$HISTODIFF_DATA`, else `<package root>/../shared/data`; nil when neither exists.
    static var realData: URL? {
        let candidates = [ProcessInfo.processInfo.environment["HISTODIFF_DATA"].map { URL(fileURLWithPath: $0) },
                          packageRoot.deletingLastPathComponent().appendingPathComponent("shared/data")]
        return candidates.compactMap { $0 }.first { FileManager.default.fileExists(atPath: $0.path) }
    }

    static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// A fresh empty folder, removed when the test ends.
    static func temporaryFolder(_ test: XCTestCase) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("histodata-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        test.addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    /// An image with deterministic pseudo-random samples.
    static func image(width: Int, height: Int, channels: Int, bitDepth: Int, seed: UInt64) throws -> Image {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        let top = UInt64(bitDepth == 16 ? 65536 : 256)
        let samples = (0..<(width * height * channels)).map { _ -> UInt16 in
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return UInt16(state % top)
        }
        return try Image(width: width, height: height, channels: channels, bitDepth: bitDepth, samples: samples)
    }

    /// Runs `body`, which must throw `EngineError.file`; returns its path and message.
    static func fileError(_ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) -> (path: String, message: String)? {
        do {
            try body()
            XCTFail("expected an error", file: file, line: line)
        } catch let EngineError.file(path, message) {
            return (path, message)
        } catch {
            XCTFail("expected EngineError.file, got \(error)", file: file, line: line)
        }
        return nil
    }
}

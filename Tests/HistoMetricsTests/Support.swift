import Foundation
import HistoCore
import HistoData
import HistoMetrics
import XCTest

enum Support {
    static let fixtures = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!

    /// The real datasets: `$HISTODIFF_DATA`, else `<package root>/../shared/data`; nil when neither exists.
    static var realData: URL? {
        let candidates = [ProcessInfo.processInfo.environment["HISTODIFF_DATA"].map { URL(fileURLWithPath: $0) },
                          packageRoot.deletingLastPathComponent().appendingPathComponent("shared/data")]
        return candidates.compactMap { $0 }.first { FileManager.default.fileExists(atPath: $0.path) }
    }

    /// The real data folder, or a skip that says why there is none.
    static func requireRealData() throws -> URL {
        guard let data = realData else {
            throw XCTSkip("no real data: set HISTODIFF_DATA or put it at \(packageRoot.deletingLastPathComponent().path)/shared/data")
        }
        return data
    }

    static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// A fresh empty folder, removed when the test ends.
    static func temporaryFolder(_ test: XCTestCase) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("histometrics-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        test.addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    /// A label map from rows of digits, e.g. `["0110", "0220"]`.
    static func map(_ rows: [String]) throws -> LabelMap {
        let labels = rows.flatMap { $0.map { Int32(String($0))! } }
        return try LabelMap(width: rows[0].count, height: rows.count, labels: labels)
    }

    /// A deterministic pseudo-random binary mask with about `density` foreground.
    static func randomMask(width: Int, height: Int, density: Double, seed: UInt64) throws -> LabelMap {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        let labels = (0..<(width * height)).map { _ -> Int32 in
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return Double(state % 1_000_000) / 1_000_000 < density ? 1 : 0
        }
        return try LabelMap(width: width, height: height, labels: labels)
    }

    /// Runs `body`, which must throw `EngineError.invalidValue`; returns its message.
    static func invalidValue(_ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) -> String? {
        do {
            try body()
            XCTFail("expected an error", file: file, line: line)
        } catch let EngineError.invalidValue(_, message) {
            return message
        } catch {
            XCTFail("expected EngineError.invalidValue, got \(error)", file: file, line: line)
        }
        return nil
    }
}

/// The deterministic modifications of tools/make_metric_fixtures.py (out-of-image pixels read as 0).
enum Recipes {
    /// b[y, x] = a[y + dy, x + dx], 0 outside.
    static func neighbour(_ a: LabelMap, dy: Int, dx: Int) -> [Int32] {
        var out = [Int32](repeating: 0, count: a.labels.count)
        for y in 0..<a.height where (0..<a.height).contains(y + dy) {
            for x in 0..<a.width where (0..<a.width).contains(x + dx) {
                out[y * a.width + x] = a.labels[(y + dy) * a.width + x + dx]
            }
        }
        return out
    }

    /// Each instance eroded by a 3×3 cross: a pixel keeps its label where its four 4-neighbours all share it.
    static func eroded(_ t: LabelMap) throws -> LabelMap {
        let around = [(-1, 0), (1, 0), (0, -1), (0, 1)].map { neighbour(t, dy: $0.0, dx: $0.1) }
        let labels = t.labels.indices.map { i in
            t.labels[i] > 0 && around.allSatisfy({ $0[i] == t.labels[i] }) ? t.labels[i] : 0
        }
        return try LabelMap(width: t.width, height: t.height, labels: labels)
    }

    /// P[y, x] = T[y − dy, x − dx] for the fixture's shift (dy, dx) = (3, −2).
    static func shifted(_ t: LabelMap, by shift: [Int]) throws -> LabelMap {
        try LabelMap(width: t.width, height: t.height, labels: neighbour(t, dy: -shift[0], dx: -shift[1]))
    }

    /// The number of foreground pixels in the 5×5 window centred on each pixel (from a summed-area table).
    static func windowCount(_ t: LabelMap) -> [Int] {
        let (w, h) = (t.width, t.height)
        var sums = [Int](repeating: 0, count: (w + 1) * (h + 1))  // sums[y * (w + 1) + x]: pixels above-left of (x, y)
        for y in 0..<h {
            for x in 0..<w {
                sums[(y + 1) * (w + 1) + x + 1] = (t.labels[y * w + x] > 0 ? 1 : 0)
                    + sums[y * (w + 1) + x + 1] + sums[(y + 1) * (w + 1) + x] - sums[y * (w + 1) + x]
            }
        }
        return (0..<(w * h)).map { i in
            let (y0, y1) = (max(0, i / w - 2), min(h, i / w + 3))
            let (x0, x1) = (max(0, i % w - 2), min(w, i % w + 3))
            return sums[y1 * (w + 1) + x1] - sums[y0 * (w + 1) + x1] - sums[y1 * (w + 1) + x0] + sums[y0 * (w + 1) + x0]
        }
    }

    /// The binary mask S ≥ 13 (a majority of the 5×5 window).
    static func blurred(_ t: LabelMap) throws -> LabelMap {
        try LabelMap(width: t.width, height: t.height, labels: windowCount(t).map { $0 >= 13 ? 1 : 0 })
    }
}

extension Support {
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

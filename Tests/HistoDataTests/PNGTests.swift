import Foundation
import HistoCore
import HistoData
import XCTest

final class PNGTests: XCTestCase {
    private struct Expected: Decodable {
        let width, height, channels, bitDepth: Int
        let samples: [Int]
    }

    func testRoundTripEveryWriteFormat() throws {
        let folder = try Support.temporaryFolder(self)
        for (channels, bitDepth) in [(1, 8), (2, 8), (3, 8), (4, 8), (1, 16), (3, 16)] {
            let image = try Support.image(width: 13, height: 6, channels: channels, bitDepth: bitDepth, seed: UInt64(channels * bitDepth))
            let path = folder.appendingPathComponent("c\(channels)b\(bitDepth).png").path
            try PNG.write(image, to: path)
            let header = try PNG.readHeader(path: path)
            XCTAssertEqual([header.width, header.height, header.channels, header.bitDepth], [13, 6, channels, bitDepth])
            XCTAssertEqual(try PNG.read(path: path), image, "\(channels) channels, \(bitDepth)-bit")
        }
    }

    func testSixteenBitGrayKeepsEveryValue() throws {
        let path = try Support.temporaryFolder(self).appendingPathComponent("ids.png").path
        let samples = (0..<65536).map { UInt16($0) }
        let image = try Image(width: 256, height: 256, channels: 1, bitDepth: 16, samples: samples)
        try PNG.write(image, to: path)
        XCTAssertEqual(try PNG.read(path: path).samples, samples)
    }

    func testWritingSixteenBitAlphaIsRefused() throws {
        let path = try Support.temporaryFolder(self).appendingPathComponent("rgba16.png").path
        let image = try Support.image(width: 2, height: 2, channels: 4, bitDepth: 16, seed: 1)
        let error = Support.fileError { try PNG.write(image, to: path) }
        XCTAssertEqual(error?.path, path)
        XCTAssertTrue(error?.message.contains("alpha") ?? false, error?.message ?? "")
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
    }

    /// Files from the independent numpy + zlib encoder in tools/make_png_fixtures.py.
    func testReadsEveryFormatLikeThePythonEncoderWroteIt() throws {
        let json = try Data(contentsOf: Support.fixtures.appendingPathComponent("png.json"))
        let expected = try JSONDecoder().decode([String: Expected].self, from: json)
        XCTAssertEqual(Set(expected.keys), ["gray8", "gray16", "gray_alpha8", "gray_alpha16", "rgb8", "rgb16",
                                            "rgba8", "rgba16", "palette8", "palette4", "palette8_trns"])
        for (name, want) in expected.sorted(by: { $0.key < $1.key }) {
            let image = try PNG.read(path: Support.fixtures.appendingPathComponent(name + ".png").path)
            XCTAssertEqual([image.width, image.height, image.channels, image.bitDepth],
                           [want.width, want.height, want.channels, want.bitDepth], name)
            guard image.samples.count == want.samples.count else { XCTFail(name); continue }
            let premultiplied = want.bitDepth == 16 && (want.channels == 2 || want.channels == 4)
            for pixel in 0..<(want.width * want.height) {
                let base = pixel * want.channels
                let alpha = want.samples[base + want.channels - 1]
                for c in 0..<want.channels {
                    let got = Int(image.samples[base + c]), value = want.samples[base + c]
                    let isColor = c < want.channels - 1
                    if premultiplied && isColor && alpha < 65535 {
                        // libpng premultiplies 16-bit colour; dividing back is exact up to its rounding.
                        let tolerance = alpha == 0 ? 65535 : 65535 / (2 * alpha) + 1
                        XCTAssertLessThanOrEqual(abs(got - value), tolerance, "\(name) pixel \(pixel) channel \(c)")
                    } else {
                        XCTAssertEqual(got, value, "\(name) pixel \(pixel) channel \(c)")
                    }
                }
            }
        }
    }

    func testCorruptTruncatedMissingAndNonPNGFilesAreErrorsNamingTheFile() throws {
        let folder = try Support.temporaryFolder(self)
        let valid = folder.appendingPathComponent("valid.png").path
        try PNG.write(try Support.image(width: 40, height: 30, channels: 3, bitDepth: 8, seed: 7), to: valid)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: valid))
        XCTAssertGreaterThan(bytes.count, 100)

        var generator = SystemRandomNumberGenerator()
        let files: [(String, Data?)] = [
            ("random.png", Data((0..<4096).map { _ in UInt8.random(in: 0...255, using: &generator) })),
            ("truncated.png", bytes.prefix(100)),
            ("text.png", Data("not an image at all\n".utf8)),
            ("empty.png", Data()),
            ("bad-crc.png", { var d = bytes; d[bytes.count / 2] ^= 0xFF; return d }()),
            ("missing.png", nil),
        ]
        for (name, content) in files {
            let path = folder.appendingPathComponent(name).path
            if let content { try content.write(to: URL(fileURLWithPath: path)) }
            let error = Support.fileError { _ = try PNG.read(path: path) }
            XCTAssertEqual(error?.path, path, name)
            XCTAssertTrue(error?.message.hasPrefix("cannot read PNG: ") ?? false, "\(name): \(error?.message ?? "")")
            XCTAssertFalse(error?.message.contains("no message") ?? true, "\(name) has libpng's message: \(error?.message ?? "")")
            XCTAssertTrue(EngineError.file(path: path, message: error?.message ?? "").description.contains(name))
        }
        XCTAssertNotNil(Support.fileError { _ = try PNG.readHeader(path: folder.appendingPathComponent("text.png").path) })
        let error = Support.fileError { _ = try PNG.read(path: folder.path) }
        XCTAssertEqual(error?.path, folder.path)
        XCTAssertEqual(error?.message, "is a directory, not a PNG image")
    }

    /// Every read path (8/16-bit, alpha, palette) fails cleanly, with libpng's message, wherever the file is cut.
    func testEveryFormatTruncatedAnywhereIsAnError() throws {
        let folder = try Support.temporaryFolder(self)
        let names = try FileManager.default.contentsOfDirectory(atPath: Support.fixtures.path).filter { $0.hasSuffix(".png") }
        XCTAssertEqual(names.count, 11)
        for name in names {
            let bytes = try Data(contentsOf: Support.fixtures.appendingPathComponent(name))
            for length in [20, 41, 60, bytes.count / 2, bytes.count - 20] {
                let path = folder.appendingPathComponent("\(length)-\(name)").path
                try bytes.prefix(length).write(to: URL(fileURLWithPath: path))
                let error = Support.fileError { _ = try PNG.read(path: path) }
                XCTAssertEqual(error?.path, path)
                XCTAssertFalse(error?.message.contains("no message") ?? true, "\(name) cut at \(length): \(error?.message ?? "")")
            }
        }
    }

    func testWritingToAnUnwritablePlaceIsAnError() throws {
        let path = try Support.temporaryFolder(self).appendingPathComponent("no/such/folder/out.png").path
        let error = Support.fileError { try PNG.write(try Support.image(width: 2, height: 2, channels: 1, bitDepth: 8, seed: 3), to: path) }
        XCTAssertEqual(error?.path, path)
    }

    func testImageInitializerRejectsBadLayouts() {
        XCTAssertThrowsError(try Image(width: 2, height: 2, channels: 3, bitDepth: 8, samples: [0, 1]))
        XCTAssertThrowsError(try Image(width: 1, height: 1, channels: 1, bitDepth: 8, samples: [300]))
        XCTAssertThrowsError(try Image(width: 1, height: 1, channels: 5, bitDepth: 8, samples: [0, 0, 0, 0, 0]))
        XCTAssertThrowsError(try Image(width: 1, height: 1, channels: 1, bitDepth: 12, samples: [0]))
        XCTAssertThrowsError(try Image(width: 0, height: 1, channels: 1, bitDepth: 8, samples: []))
    }
}

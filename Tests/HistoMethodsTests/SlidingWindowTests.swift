import HistoCore
import HistoData
import XCTest
@testable import HistoMethods

final class SlidingWindowTests: XCTestCase {
    /// Image sizes against a 16-pixel tile: smaller, equal, larger and not a multiple of any stride, mixed.
    static let sizes = [(9, 12), (16, 16), (37, 29), (16, 41), (50, 7)]
    static let blendings: [SlidingWindow.Blending] = [.constant, .gaussian()]

    func testIdentityModelReproducesTheImage() throws {
        for (height, width) in Self.sizes {
            let image = try Self.image(channels: 3, height: height, width: width, seed: UInt64(height * 100 + width))
            for blending in Self.blendings {
                for (overlap, batchSize) in [(Float(0.25), 1), (0.5, 3), (0, 4)] {
                    let window = try SlidingWindow(tile: 16, overlap: overlap, blending: blending, batchSize: batchSize)
                    let output = try window.infer(image) { $0 }
                    XCTAssertEqual(output.shape, image.shape)
                    let error = zip(output.values, image.values).map { abs($0 - $1) }.max()!
                    XCTAssertLessThanOrEqual(error, 1e-6, "\(height)×\(width) \(blending) overlap \(overlap)")
                }
            }
        }
    }

    func testPerPixelModelIsReproduced() throws {
        let image = try Self.image(channels: 2, height: 37, width: 29, seed: 7)
        let window = try SlidingWindow(tileHeight: 16, tileWidth: 12, overlap: 0.5, blending: .gaussian(), batchSize: 5)
        // Four output channels from two input channels, each a function of the pixel alone.
        let output = try window.infer(image) { x in Tensor.concat([x.sigmoid(), x * x - 1], axis: 1) }
        XCTAssertEqual(output.shape, [4, 37, 29])
        let plane = 37 * 29
        for c in 0..<2 {
            for p in 0..<plane {
                let v = image.values[c * plane + p]
                XCTAssertEqual(output.values[c * plane + p], 1 / (1 + exp(-v)), accuracy: 1e-6)
                XCTAssertEqual(output.values[(2 + c) * plane + p], v * v - 1, accuracy: 1e-6)
            }
        }
    }

    /// A model that answers 1 everywhere gives 1 everywhere exactly when each pixel's weights sum to one; a model
    /// that answers a different constant per tile stays within the range of those constants.
    func testBlendingWeightsSumToOne() throws {
        for (height, width) in Self.sizes {
            let image = try Self.image(channels: 1, height: height, width: width, seed: 3)
            for blending in Self.blendings {
                let window = try SlidingWindow(tile: 16, overlap: 0.6, blending: blending, batchSize: 2)
                let ones = try window.infer(image) { x in Tensor.ones(x.shape) }
                XCTAssertLessThanOrEqual(ones.values.map { abs($0 - 1) }.max()!, 1e-6, "\(height)×\(width) \(blending)")
                var call: Float = 0
                let tiles = try window.infer(image) { x in
                    call += 1
                    let perTile = (0..<x.shape[0]).flatMap { n in [Float](repeating: call * 10 + Float(n), count: 16 * 16) }
                    return Tensor(perTile, shape: [x.shape[0], 1, 16, 16])
                }
                XCTAssertGreaterThanOrEqual(tiles.values.min()!, 10)
                XCTAssertLessThanOrEqual(tiles.values.max()!, call * 10 + 1)
            }
        }
    }

    func testTilesFollowMONAI() throws {
        let window = try SlidingWindow(tile: 32, overlap: 0.25)
        // Stride ⌊32 · 0.75⌋ = 24; the last tile ends at the edge.
        XCTAssertEqual(SlidingWindow.starts(length: 70, tile: 32, overlap: 0.25), [0, 24, 38])
        XCTAssertEqual(SlidingWindow.starts(length: 80, tile: 32, overlap: 0.25), [0, 24, 48])
        XCTAssertEqual(SlidingWindow.starts(length: 32, tile: 32, overlap: 0.25), [0])
        // Smaller than the tile: padded 6 before and 7 after (MONAI's diff // 2 first).
        XCTAssertEqual(SlidingWindow.starts(length: 19, tile: 32, overlap: 0.25), [-6])
        XCTAssertEqual(SlidingWindow.starts(length: 33, tile: 32, overlap: 0.9), [0, 1])
        let origins = window.origins(height: 19, width: 70)
        XCTAssertEqual(origins.map(\.y), [-6, -6, -6])
        XCTAssertEqual(origins.map(\.x), [0, 24, 38])

        // MONAI's Gaussian importance map: σ = 0.125 · 32 = 4, centre between pixels 15 and 16, floor 1e-3.
        let weights = try SlidingWindow(tile: 32, blending: .gaussian()).tileWeights()
        let g = { (t: Float) in exp(-t * t / 32) }
        XCTAssertEqual(weights[15 * 32 + 16], g(0.5) * g(0.5), accuracy: 1e-7)
        XCTAssertEqual(weights[10 * 32 + 20], g(5.5) * g(4.5), accuracy: 1e-7)
        XCTAssertEqual(weights[0], 1e-3)
        XCTAssertEqual(Set(try SlidingWindow(tile: 8).tileWeights()), [1])
    }

    func testBadInputIsReported() throws {
        XCTAssertThrowsError(try SlidingWindow(tile: 16, overlap: 1))
        XCTAssertThrowsError(try SlidingWindow(tile: 0))
        XCTAssertThrowsError(try SlidingWindow(tile: 16, batchSize: 0))
        XCTAssertThrowsError(try SlidingWindow(tile: 16, blending: .gaussian(sigmaScale: 0)))
        let image = try Self.image(channels: 1, height: 20, width: 20, seed: 1)
        let window = try SlidingWindow(tile: 16, batchSize: 2)
        XCTAssertThrowsError(try window.infer(image) { x in x.slice(axis: 3, start: 0, end: 8) }) { error in
            XCTAssertTrue("\(error)".contains("expected [2, K, 16, 16]"), "\(error)")
        }
    }

    static func image(channels: Int, height: Int, width: Int, seed: UInt64) throws -> Planes {
        let values = try RandomGenerator(seed: seed).uniform([channels, height, width], -1, 1).toArray()
        return try Planes(channels: channels, height: height, width: width, values: values)
    }
}

import Foundation
import XCTest
import HistoCore
import HistoDiffusion
import HistoNN
@testable import HistoMethods

/// PathSegDiff's features of an SSL-guided LDM (SPEC §4): each tile is conditioned on its own HIPT embedding.
final class PathSegDiffConditioningTests: XCTestCase {
    /// `PathSegDiffTests.tinyRun`'s autoencoder and UNet layout, the UNet conditioned through an `SSLEmbedder` on a
    /// random 16-wide one-block ViT.
    static func conditionedRun() throws -> DiffusionRun {
        let unconditional = try PathSegDiffTests.tinyRun()
        let configuration = GuidedUNet.Configuration(
            inChannels: 3, outChannels: 3, modelChannels: 8, channelMult: [1, 1, 1, 1], numResBlocks: 2,
            attentionResolutions: [8], heads: .channels(8), normGroups: 4)
        let model = try SSLGuidedUNet(configuration, embeddingDim: 16, generator: RandomGenerator(seed: 2))
        // The spatial transformers' zero-initialised proj_out would hide the context from the features.
        let draws = RandomGenerator(seed: 7)
        for (_, p) in model.parameters() where try p.values().allSatisfy({ $0 == 0 }) {
            p.assign(try draws.normal(p.shape, std: 0.05).toArray())
        }
        let hipt = VisionTransformer(.init(embedDim: 16, depth: 1, heads: 2), generator: RandomGenerator(seed: 6))
        var spec = unconditional.spec
        spec.conditioning = .init(hipt: "random", embeddingDim: 16)
        return try DiffusionRun(spec: spec, model: model, latentSpace: unconditional.latentSpace, hipt: hipt)
    }

    /// A tile's features are those of the UNet conditioned on that tile's HIPT embedding (not another tile's), and
    /// the features of a 768² image at a tile's place still equal the tile's computed alone.
    func testTilesAreConditionedOnTheirOwnEmbeddingAndStayIndependent() throws {
        let run = try Self.conditionedRun()
        let features = try PathSegDiffFeatures(run: run, tile: 256, noiseSeed: 3)
        XCTAssertEqual(features.channels, 13 * 8)
        let image = try RandomGenerator(seed: 4).uniform([1, 3, 768, 768], -1, 1).materialized()
        func tile(_ row: Int, _ column: Int) -> Tensor {
            image.slice(axis: 2, start: 256 * row, end: 256 * (row + 1))
                .slice(axis: 3, start: 256 * column, end: 256 * (column + 1))
        }
        func conditioned(_ tile: Tensor, on source: Tensor) throws -> [Float] {
            let maps = try features.extractor.recordedMaps(features.latentSpace.meanLatents(tile),
                                                           context: run.context(source))
            return try Tensor.concat(features.extractor.resized(maps), axis: 1).toArray()
        }
        let own = try features.ofTiles(tile(1, 2)).toArray()
        XCTAssertEqual(own, try conditioned(tile(1, 2), on: tile(1, 2)))
        let other = try conditioned(tile(1, 2), on: tile(0, 0))
        let change = relativeError(other, own)
        print("pathsegdiff conditioned: relative change of a tile's features on another tile's embedding: \(change)")
        XCTAssertGreaterThan(change, 1e-4)

        let whole = try features(image).materialized()
        var worst: Float = 0
        for (row, column) in [(0, 0), (1, 2), (2, 1)] {
            let placed = try whole.slice(axis: 2, start: 64 * row, end: 64 * (row + 1))
                .slice(axis: 3, start: 64 * column, end: 64 * (column + 1)).toArray()
            worst = max(worst, relativeError(placed, try features.ofTiles(tile(row, column)).toArray()))
        }
        print("pathsegdiff conditioned tiles: largest relative difference, whole image vs tile alone: \(worst)")
        XCTAssertLessThan(worst, 1e-5)
    }
}

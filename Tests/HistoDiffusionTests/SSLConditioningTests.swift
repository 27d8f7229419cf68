import Foundation
import XCTest
import HistoCore
import HistoNN
@testable import HistoDiffusion

/// PathSegDiff's SSL conditioning (SPEC §4): the `SSLEmbedder` tokens, the conditioned UNet and its run.
final class SSLConditioningTests: XCTestCase {
    /// context = [W_p·y/‖y‖₂ + b_p, b_r]: the ℓ2-normalised embedding's projection and the zero region token's
    /// bias, for embeddings of any scale.
    func testEmbedderTokensAreTheNormalisedProjectionAndTheRegionBias() throws {
        let embedder = SSLEmbedder(embeddingDim: 4, regionDim: 6, contextDim: 3, generator: RandomGenerator(seed: 5))
        XCTAssertEqual(embedder.parameterCount(), 4 * 3 + 3 + 6 * 3 + 3)
        let y: [Float] = [3, -4, 0, 12, 0.5, 0.5, -0.5, 0.5]
        let context = embedder(Tensor(y, shape: [2, 4]))
        XCTAssertEqual(context.shape, [2, 2, 3])
        let values = try context.toArray()
        let w = try embedder.patchProjection.weight.values(), b = try embedder.patchProjection.bias!.values()
        let regionBias = try embedder.regionProjection.bias!.values()
        var worst: Float = 0
        for n in 0..<2 {
            let row = Array(y[(4 * n)..<(4 * n + 4)])
            let norm = row.map { $0 * $0 }.reduce(0, +).squareRoot()
            for c in 0..<3 {
                let patch = (0..<4).map { w[4 * c + $0] * row[$0] / norm }.reduce(b[c], +)
                worst = max(worst, abs(values[6 * n + c] - patch), abs(values[6 * n + 3 + c] - regionBias[c]))
            }
        }
        XCTAssertLessThan(worst, 1e-6)
        // Scaling an embedding changes nothing (the ℓ2 normalisation).
        let scaled = try embedder(Tensor(y.map { 10 * $0 }, shape: [2, 4])).toArray()
        XCTAssertLessThan(zip(scaled, values).map { abs($0 - $1) }.max()!, 1e-6)
    }

    /// An unconditional run of a preset with cross-attention (`pathsegdiff`) attends to its own tokens (LDM's
    /// `context_dim=None`): a small configuration so built runs without a context, which the 512-wide one refuses.
    func testUnconditionalSpatialTransformersAttendToTheirOwnTokens() throws {
        XCTAssertNil(DiffusionModelSpec.unconditional(.pathSegDiffLDM).crossAttention?.contextDim)
        XCTAssertEqual(DiffusionModelSpec.unconditional(.pathSegDiffLDM).crossAttention?.depth, 1)
        var c = GuidedUNet.Configuration(inChannels: 3, outChannels: 3, modelChannels: 8, channelMult: [1, 1],
                                         numResBlocks: 1, attentionResolutions: [2], heads: .count(1),
                                         crossAttention: .init(contextDim: 16), normGroups: 4)
        let x = try RandomGenerator(seed: 3).normal([1, 3, 8, 8]).materialized(), t = Tensor([10], shape: [1])
        let conditioned = try GuidedUNet(c, generator: RandomGenerator(seed: 1))
        XCTAssertThrowsError(try conditioned(x, timesteps: t, context: nil).toArray())
        c = DiffusionModelSpec.unconditional(c)
        let unconditional = try GuidedUNet(c, generator: RandomGenerator(seed: 1))
        let names = Set(unconditional.parameters().map(\.name))
        XCTAssert(names.contains("middle_block.1.transformer_blocks.0.attn2.to_k.weight"))
        let output = try unconditional(x, timesteps: t, context: nil).toArray()
        XCTAssertEqual(output.count, 3 * 64)
        XCTAssert(output.allSatisfy(\.isFinite))
        XCTAssertThrowsError(try unconditional(x, timesteps: t, context: .zeros([1, 2, 16])).toArray()) {
            XCTAssert("\($0)".contains("takes no context"), "\($0)")
        }
    }

    /// The conditioned `cpu` UNet gains 512-wide cross-attention; its UNet keeps the unconditional names and the
    /// embedder lies under `cond_stage_model.`; the pathsegdiff preset's embedder (HIPT-256 → 512) has 590,848
    /// parameters. Without an embedding the forward pass is refused; different embeddings give different outputs.
    func testConditionedUNetNamesAndContext() throws {
        let spec = DiffusionModelSpec(family: "guided", preset: "cpu", recipe: .vCosine,
                                      conditioning: .init(hipt: "/h.safetensors", embeddingDim: 32))
        let model = try XCTUnwrap(try spec.makeModel(generator: RandomGenerator(seed: 2)) as? SSLGuidedUNet)
        XCTAssertEqual(model.unet.configuration.crossAttention, GuidedUNet.CrossAttention(contextDim: 512))
        let names = Set(model.parameters().map(\.name))
        XCTAssert(names.contains("cond_stage_model.patch_projection.weight"))
        XCTAssert(names.contains("cond_stage_model.region_projection.bias"))
        XCTAssert(names.contains("middle_block.1.transformer_blocks.0.attn2.to_k.weight"))
        XCTAssertFalse(names.contains { $0.hasPrefix("unet.") || $0.hasPrefix(".") })
        XCTAssertEqual(model.parameterCount(), model.unet.parameterCount() + model.embedder.parameterCount())
        XCTAssertEqual(SSLEmbedder(generator: RandomGenerator(seed: 1)).parameterCount(), 590_848)

        // The zero-initialised output convolutions (spatial transformers' proj_out, out.2) would hide the context.
        let draws = RandomGenerator(seed: 7)
        for (_, p) in model.parameters() where try p.values().allSatisfy({ $0 == 0 }) {
            p.assign(try draws.normal(p.shape, std: 0.05).toArray())
        }
        model.train(false)
        let x = try RandomGenerator(seed: 3).normal([2, 3, 16, 16]).materialized(), t = Tensor([10, 500], shape: [2])
        XCTAssertThrowsError(try model(x, timesteps: t, context: nil).toArray()) { error in
            XCTAssert("\(error)".contains("conditioned on SSL (HIPT) embeddings; none were given"), "\(error)")
        }
        let embeddings = RandomGenerator(seed: 4).normal([2, 32])
        let first = try model(x, timesteps: t, context: embeddings).toArray()
        let second = try model(x, timesteps: t, context: embeddings.flip(axes: [0])).toArray()
        XCTAssertGreaterThan(zip(first, second).map { abs($0 - $1) }.max()!, 1e-4)
    }

    /// A spec records the conditioning and reads back; a spec written before it existed reads as unconditional;
    /// a run needs the encoder exactly when its spec is conditioned.
    func testSpecRecordsTheConditioningAndRunsCheckTheEncoder() throws {
        let conditioned = DiffusionModelSpec(family: "guided", preset: "cpu", recipe: .ldm,
                                             conditioning: .init(hipt: "/weights/hipt.safetensors", embeddingDim: 32))
        let decoded = try JSONDecoder().decode(DiffusionModelSpec.self, from: JSONEncoder().encode(conditioned))
        XCTAssertEqual(decoded, conditioned)
        let old = try JSONDecoder().decode(DiffusionModelSpec.self,
                                           from: Data(#"{"family": "guided", "preset": "cpu", "recipe": "ldm"}"#.utf8))
        XCTAssertNil(old.conditioning)

        let hipt = VisionTransformer(.init(embedDim: 32, depth: 1, heads: 2), generator: RandomGenerator(seed: 1))
        let model = try conditioned.makeModel(generator: RandomGenerator(seed: 2))
        XCTAssertNoThrow(try DiffusionRun(spec: conditioned, model: model, latentSpace: nil, hipt: hipt))
        XCTAssertThrowsError(try DiffusionRun(spec: conditioned, model: model, latentSpace: nil)) { error in
            XCTAssert("\(error)".contains("conditioned on 32-wide HIPT embeddings; no encoder was given"), "\(error)")
        }
        XCTAssertThrowsError(try DiffusionModelSpec(family: "genselfdiff", preset: "cpu", recipe: .ldm,
                                                    conditioning: conditioned.conditioning)
            .makeModel(generator: RandomGenerator(seed: 2))) { error in
            XCTAssert("\(error)".contains("HIPT conditioning needs the guided family"), "\(error)")
        }
    }
}

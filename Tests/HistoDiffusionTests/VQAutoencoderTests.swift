import Foundation
import XCTest
import HistoCore
import HistoNN
@testable import HistoDiffusion

final class VQAutoencoderTests: XCTestCase {
    typealias Support = AutoencoderTestSupport

    /// A randomly initialised LDM `VQModel` (tools/convert_ldm_vq.py: LDM names, a `.ckpt` with `loss.*` decoys,
    /// converted) loads through the first-stage loader and encodes and decodes as the float64 PyTorch model.
    func testConvertedLDMExportMatchesPyTorch() throws {
        let loaded = try LatentSpace.loadFirstStage(from: Support.fixture("vq_f4_tiny.safetensors"))
        let model = try XCTUnwrap(loaded as? VQAutoencoder, "the vq-f4-tiny preset builds a VQAutoencoder")
        XCTAssertEqual(model.configuration, .vqF4Tiny)
        XCTAssertEqual(model.parameterCount(), 44_338)

        let io = try SafeTensors.read(Support.fixture("vq_f4_tiny_io.safetensors")).tensors
        let latents = model.encode(io["x"]!.tensor)
        let indices = model.quantizer.indices(latents)
        let reconstruction = model.decode(latents)
        try eval([latents, indices, reconstruction])
        let latentError = try Support.largestDifference(latents, io["latents"]!)
        let reconstructionError = try Support.largestDifference(reconstruction, io["reconstruction"]!)
        print("vq-f4-tiny against PyTorch: latents \(latentError), reconstruction \(reconstructionError)")
        XCTAssertLessThan(latentError, 1e-4)
        XCTAssertEqual(try indices.toArray(), io["indices"]!.values)
        XCTAssertLessThan(reconstructionError, 1e-4)
        // Decoding quantises: the codebook entries themselves decode to the same images.
        let entries = model.quantizer(latents)
        XCTAssertEqual(try model.decode(entries).toArray(), try reconstruction.toArray())
        XCTAssertNotEqual(try entries.toArray(), try latents.toArray())
    }

    /// LDM vq-f4 (SPEC §1 step 1), counted by tools/convert_ldm_vq.py's PyTorch model.
    func testPaperPresetParameterCountAndLDMNames() throws {
        let model = try VQAutoencoder(.vqF4, generator: RandomGenerator(seed: 1))
        XCTAssertEqual(model.parameterCount(), 55_322_782)
        XCTAssertEqual(model.configuration.downsamplingFactor, 4)
        let shapes = Dictionary(uniqueKeysWithValues: model.parameters().map { ($0.name, $0.parameter.shape) })
        XCTAssertEqual(shapes["quantize.embedding.weight"], [8192, 3])
        XCTAssertEqual(shapes["encoder.conv_out.weight"], [3, 512, 3, 3], "no double_z")
        XCTAssertEqual(shapes["quant_conv.weight"], [3, 3, 1, 1])
        XCTAssertEqual(shapes["post_quant_conv.weight"], [3, 3, 1, 1])
        XCTAssertEqual(shapes["decoder.up.0.block.2.conv2.weight"], [128, 128, 3, 3])
        XCTAssertEqual(shapes["encoder.mid.attn_1.proj_out.weight"], [512, 512, 1, 1])
        XCTAssertFalse(shapes.keys.contains { $0.hasPrefix("encoder.down.2.downsample") })
        XCTAssertThrowsError(try VQAutoencoder(.init(channels: 8, channelMultipliers: [1], resBlocksPerLevel: 1,
                                                     latentChannels: 3, codebookSize: 0, normGroups: 4),
                                               generator: RandomGenerator(seed: 1))) { error in
            XCTAssert("\(error)".contains("codebookSize 0 must be positive"), "\(error)")
        }
    }

    /// A file whose tensors do not fit its preset fails in one line naming the file and the tensors.
    func testMissingOrMisshapenTensorsNameTheFileAndTensor() throws {
        let directory = try Support.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let file = try SafeTensors.read(Support.fixture("vq_f4_tiny.safetensors"))
        var tensors = file.tensors
        tensors["quantize.embedding.weight"] = HostTensor(shape: [32, 3], values: Array(repeating: 0, count: 96))
        tensors["decoder.conv_out.bias"] = nil
        let path = directory + "/broken.safetensors"
        try SafeTensors.write(tensors.keys.sorted().map { ($0, tensors[$0]!) }, metadata: file.metadata, to: path)

        XCTAssertThrowsError(try LatentSpace.loadFirstStage(from: path)) { error in
            guard case let EngineError.file(errorPath, message) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(errorPath, path)
            XCTAssertFalse("\(error)".contains("\n"), "one line: \(error)")
            for fragment in ["1 missing: decoder.conv_out.bias",
                             "quantize.embedding.weight (file [32, 3], model [64, 3])"] {
                XCTAssert(message.contains(fragment), "\"\(message)\" lacks \"\(fragment)\"")
            }
        }
    }

    /// A latent space on the VQ model: [N, 3, H/4, W/4] latents, deterministic whatever the posterior, LDM's
    /// scale factor 1, and the run copy that `pretrain` saves loads back as the VQ model.
    func testLatentSpaceOnTheVQModel() throws {
        let model = try VQAutoencoder(.vqF4Tiny, generator: RandomGenerator(seed: 3))
        let images = Support.smoothImages(2, size: 32)
        let space = try LatentSpace.ldmScaled(autoencoder: model, firstBatch: images, posterior: .sample,
                                              generator: RandomGenerator(seed: 4))
        XCTAssertEqual(space.scaleFactor, 1)
        XCTAssertEqual(space.downsamplingFactor, 4)
        XCTAssertEqual(space.latentChannels, 3)
        let drawn = try space.encode(images, drawingFrom: RandomGenerator(seed: 5))
        XCTAssertEqual(drawn.shape, [2, 3, 8, 8])
        XCTAssertEqual(try drawn.toArray(), try space.encodeMean(images).toArray())
        XCTAssertEqual(try drawn.toArray(), try model.encode(images).toArray())
        XCTAssertEqual(space.decode(drawn).shape, [2, 3, 32, 32])

        let directory = try Support.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let copy = directory + "/" + DiffusionRun.autoencoderFileName
        try model.saveWithPreset(to: copy)
        let reloaded = try XCTUnwrap(LatentSpace.loadFirstStage(from: copy) as? VQAutoencoder)
        XCTAssertEqual(try reloaded.encode(images).toArray(), try model.encode(images).toArray())
        XCTAssertEqual(try reloaded.decode(drawn).toArray(), try model.decode(drawn).toArray())
    }
}

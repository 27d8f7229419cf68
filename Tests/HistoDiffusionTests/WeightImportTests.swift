import Foundation
import XCTest
import HistoCore
import HistoNN
@testable import HistoDiffusion

final class WeightImportTests: XCTestCase {
    typealias Support = AutoencoderTestSupport

    /// The model's state under the names `rename` gives, written with `SafeTensors.write`.
    func export(_ model: Module, to path: String, extra: [(String, HostTensor)] = [],
                rename: (String) -> String) throws {
        let tensors = try model.stateTensors().map { (rename($0.name), try HostTensor($0.tensor.value)) }
        try SafeTensors.write(tensors + extra, to: path)
    }

    func outputs(_ model: AutoencoderKL) throws -> [Float] {
        let (mean, logvar) = model.encode(Support.smoothImages(2, size: 16))
        return try mean.toArray() + logvar.toArray() + model.decode(mean).toArray()
    }

    func assertImportError(_ path: String, contains fragments: [String], file: StaticString = #filePath, line: UInt = #line,
                           _ body: () throws -> Void) {
        do {
            try body()
            XCTFail("expected an import error for \(path)", file: file, line: line)
        } catch let EngineError.file(errorPath, message) {
            XCTAssertEqual(errorPath, path, file: file, line: line)
            for f in fragments where !message.contains(f) { XCTFail("message \"\(message)\" lacks \"\(f)\"", file: file, line: line) }
        } catch {
            XCTFail("unexpected error \(error)", file: file, line: line)
        }
    }

    /// A full LDM checkpoint holds the autoencoder under `first_stage_model.` beside the diffusion model.
    func testRoundTripThroughFullLDMCheckpointNames() throws {
        let directory = try Support.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/ldm.safetensors"
        let original = try AutoencoderKL(Support.tiny, generator: RandomGenerator(seed: 1))
        let decoys: [(String, HostTensor)] = [
            ("model.diffusion_model.input_blocks.0.0.weight", HostTensor(shape: [2, 3, 3, 3], values: Array(repeating: 0.5, count: 54))),
            ("model_ema.decay", HostTensor(shape: [], values: [0.9999])),
            ("betas", HostTensor(shape: [3], values: [1, 2, 3])),
        ]
        try export(original, to: path, extra: decoys) { "first_stage_model." + $0 }

        let fresh = try AutoencoderKL(Support.tiny, generator: RandomGenerator(seed: 2))
        XCTAssertNotEqual(try outputs(fresh), try outputs(original))
        let report = try WeightImport.load(into: fresh, from: path, map: .ldmFirstStage)
        XCTAssertEqual(try outputs(fresh), try outputs(original))
        XCTAssertEqual(report.loaded.count, 152)
        XCTAssertEqual(report.skipped.sorted(), ["betas", "model.diffusion_model.input_blocks.0.0.weight", "model_ema.decay"])
        XCTAssert(report.loaded.contains { $0 == ("first_stage_model.quant_conv.weight", "quant_conv.weight") })
        XCTAssertEqual(report.kept, [])
    }

    /// Another exporter's names (diffusers-like level and block names, a differently named moments conv),
    /// mirrored by a map of prefix and exact renames.
    func testRoundTripThroughRenameMap() throws {
        let directory = try Support.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/external.safetensors"
        let original = try AutoencoderKL(Support.tiny, generator: RandomGenerator(seed: 3))
        func external(_ name: String) -> String {
            if name.hasPrefix("quant_conv.") { return "vae.moments_conv." + name.dropFirst("quant_conv.".count) }
            if name == "post_quant_conv.weight" { return "vae.latent_in.w" }
            if name == "post_quant_conv.bias" { return "vae.latent_in.b" }
            return "vae." + name.replacingOccurrences(of: "encoder.down.", with: "enc.down_blocks.")
                .replacingOccurrences(of: "decoder.", with: "dec.")
        }
        try export(original, to: path, extra: [("optimizer.step", HostTensor(shape: [1], values: [7]))], rename: external)

        let map = NameMap([.exact("vae.latent_in.w", "post_quant_conv.weight"), .exact("vae.latent_in.b", "post_quant_conv.bias"),
                           .prefix("vae.moments_conv.", "quant_conv."), .prefix("vae.enc.down_blocks.", "encoder.down."),
                           .prefix("vae.dec.", "decoder."), .prefix("vae.", ""), .skip("optimizer.*")])
        let fresh = try AutoencoderKL(Support.tiny, generator: RandomGenerator(seed: 4))
        let report = try WeightImport.load(into: fresh, from: path, map: map)
        XCTAssertEqual(try outputs(fresh), try outputs(original))
        XCTAssertEqual(report.loaded.count, 152)
        XCTAssertEqual(report.skipped, ["optimizer.step"])
        XCTAssert(report.loaded.contains { $0 == ("vae.dec.up.1.upsample.conv.weight", "decoder.up.1.upsample.conv.weight") })
    }

    func testMismatchesNameEveryOffendingTensorAndLoadNothing() throws {
        let directory = try Support.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let source = try AutoencoderKL(Support.tiny, generator: RandomGenerator(seed: 5))
        var tensors = try source.checkpointState().tensors
        tensors["encoder.conv_in.weight"] = nil
        tensors["decoder.conv_out.bias"] = nil
        tensors["quant_conv.weight"] = HostTensor(shape: [6, 6], values: Array(repeating: 0, count: 36))
        tensors["encoder.mid.attn_1.proj.weight"] = HostTensor(shape: [1], values: [0])
        let path = directory + "/broken.safetensors"
        try SafeTensors.write(tensors.keys.sorted().map { ($0, tensors[$0]!) }, to: path)

        let target = try AutoencoderKL(Support.tiny, generator: RandomGenerator(seed: 6))
        let before = try target.checkpointState().tensors
        assertImportError(path, contains: [
            "no module tensor for 1 file tensor: encoder.mid.attn_1.proj.weight",
            "no file tensor for 2 module tensors: encoder.conv_in.weight, decoder.conv_out.bias",
            "shape mismatch for 1 tensor: quant_conv.weight (file [6, 6], module [6, 6, 1, 1])",
        ]) { try WeightImport.load(into: target, from: path, map: .identity) }
        XCTAssertEqual(try target.checkpointState().tensors, before, "a failed import must change nothing")

        // A renamed source names both sides; two sources for one tensor are reported with both.
        assertImportError(path, contains: [
            "encoder.mid.attn_1.proj.weight → encoder.mid.attn_1.proj_out.weight (file [1], module [8, 8, 1, 1])",
            "several file tensors for 1 module tensor: encoder.mid.attn_1.proj_out.weight ← encoder.mid.attn_1.proj.weight, encoder.mid.attn_1.proj_out.weight",
        ]) { try WeightImport.load(into: target, from: path, map: NameMap([.exact("encoder.mid.attn_1.proj.weight", "encoder.mid.attn_1.proj_out.weight")])) }

        // Missing tensors a `keep` pattern covers keep their values.
        var partial = try source.checkpointState().tensors
        partial = partial.filter { !$0.key.hasPrefix("decoder.") }
        let partialPath = directory + "/encoder-only.safetensors"
        try SafeTensors.write(partial.keys.sorted().map { ($0, partial[$0]!) }, to: partialPath)
        let report = try WeightImport.load(into: target, from: partialPath, map: NameMap(keep: ["decoder.*"]))
        XCTAssertEqual(report.kept.count, target.stateTensors().filter { $0.name.hasPrefix("decoder.") }.count)
        XCTAssertEqual(try target.checkpointState().tensors["decoder.conv_in.weight"], before["decoder.conv_in.weight"])
        XCTAssertEqual(try target.checkpointState().tensors["encoder.conv_in.weight"], partial["encoder.conv_in.weight"])

        assertImportError(directory + "/absent.safetensors", contains: ["cannot be read"]) {
            try WeightImport.load(into: target, from: directory + "/absent.safetensors", map: .identity)
        }
    }

    func testRulesApplyInOrderAndGlobsMatch() {
        let map = NameMap([.exact("a.b", "x"), .skip("a.*"), .prefix("a", "z")])
        XCTAssertEqual(map.target(for: "a.b"), "x")
        XCTAssertNil(map.target(for: "a.c"))
        XCTAssertEqual(map.target(for: "ab"), "zb")
        XCTAssertEqual(map.target(for: "other"), "other")
        XCTAssertEqual(NameMap.ldmFirstStage.target(for: "first_stage_model.encoder.conv_in.weight"), "encoder.conv_in.weight")
        XCTAssertNil(NameMap.ldmFirstStage.target(for: "cond_stage_model.proj.weight"))
        XCTAssertNil(NameMap.ldmAutoencoder.target(for: "loss.perceptual_loss.net.slice1.0.weight"))
        XCTAssertEqual(NameMap.ldmAutoencoder.target(for: "lossy"), "lossy")

        for (pattern, text, expected) in [("*", "", true), ("*", "a.b", true), ("a*c", "abbc", true), ("a*c", "abcd", false),
                                          ("*.weight", "x.weight", true), ("*.weight", "x.bias", false),
                                          ("a*b*c", "aXbYbZc", true), ("a*b*c", "aXcYb", false), ("abc", "abc", true),
                                          ("abc", "ab", false), ("**a", "ba", true), ("a.*", "a", false)] {
            XCTAssertEqual(globMatches(pattern, text), expected, "\(pattern) ~ \(text)")
        }
    }
}

import Foundation
import XCTest
import HistoCore
import HistoNN
@testable import HistoDiffusion

/// HIPT's ViT-256/16 against tools/hipt_export.py's PyTorch model (fixtures: `--fixtures`).
final class HIPTTests: XCTestCase {
    typealias Support = AutoencoderTestSupport

    /// The tiny export (embed 32, 2 heads, depth 2, patch 16, positions for 224²) gives PyTorch's CLS within 1e-4
    /// at its native 14×14 grid (224²) and at 4×4 (64², interpolated), and DINO's interpolated positions for 4×6.
    func testTinyExportMatchesPyTorch() throws {
        let model = try VisionTransformer.load(from: Support.fixture("hipt_vit_tiny.safetensors"))
        XCTAssertEqual(model.configuration, .init(embedDim: 32, depth: 2, heads: 2, patch: 16, positionGrid: 14))
        XCTAssertEqual(model.parameterCount(), 56_416, "tools/hipt_export.py --fixtures prints it")
        XCTAssertEqual(model.parameterCount(trainableOnly: true), 0, "loaded frozen")
        let io = try SafeTensors.read(Support.fixture("hipt_vit_tiny_io.safetensors")).tensors
        let cls64 = model(io["input64"]!.tensor)
        let cls224 = model(io["input56"]!.tensor.interpolateNearest(scale: 4))
        try eval([cls64, cls224])
        let error64 = try Support.largestDifference(cls64, io["cls64"]!)
        let error224 = try Support.largestDifference(cls224, io["cls224"]!)
        let positions = try model.positions(rows: 4, columns: 6)
        let positionError = try Support.largestDifference(positions, io["pos4x6"]!)
        print("HIPT tiny ViT against PyTorch: CLS at 64² \(error64), at 224² \(error224), "
              + "positions 4×6 \(positionError)")
        XCTAssertLessThan(error64, 1e-4)
        XCTAssertLessThan(error224, 1e-4)
        XCTAssertLessThan(positionError, 1e-5)
    }

    /// DINO ViT-S/16 as HIPT-256: 21,665,664 parameters (tools/hipt_export.py's count, and paper 003's Table 1),
    /// under DINO's names.
    func testHIPT256ParameterCountAndNames() throws {
        let model = VisionTransformer(.hipt256, generator: RandomGenerator(seed: 1))
        XCTAssertEqual(model.parameterCount(), 21_665_664)
        let shapes = Dictionary(uniqueKeysWithValues: model.parameters().map { ($0.name, $0.parameter.shape) })
        XCTAssertEqual(shapes["patch_embed.proj.weight"], [384, 3, 16, 16])
        XCTAssertEqual(shapes["cls_token"], [1, 1, 384])
        XCTAssertEqual(shapes["pos_embed"], [1, 197, 384])
        XCTAssertEqual(shapes["blocks.11.attn.qkv.bias"], [1152])
        XCTAssertEqual(shapes["blocks.0.attn.proj.weight"], [384, 384])
        XCTAssertEqual(shapes["blocks.0.mlp.fc1.weight"], [1536, 384])
        XCTAssertEqual(shapes["blocks.0.norm2.weight"], [384])
        XCTAssertEqual(shapes["norm.bias"], [384])
    }

    /// An export that does not fit is refused in one line naming the file and the tensor: missing, unexpected,
    /// misshapen; and one without the architecture's metadata.
    func testImportRefusalsNameFileAndTensor() throws {
        let source = try SafeTensors.read(Support.fixture("hipt_vit_tiny.safetensors"))
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("hipt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        func refusal(_ name: String, metadata: [String: String]? = nil,
                     _ edit: (inout [String: HostTensor]) -> Void) throws -> String {
            var tensors = source.tensors
            edit(&tensors)
            let path = directory.appendingPathComponent(name).path
            try SafeTensors.write(tensors.keys.sorted().map { ($0, tensors[$0]!) },
                                  metadata: metadata ?? source.metadata, to: path)
            do {
                _ = try VisionTransformer.load(from: path)
                XCTFail("\(name) loaded")
                return ""
            } catch {
                let message = "\(error)"
                XCTAssert(message.hasPrefix(path + ": "), message)
                XCTAssertFalse(message.contains("\n"), message)
                return message
            }
        }
        let missing = try refusal("missing.safetensors") { $0["blocks.1.attn.qkv.bias"] = nil }
        XCTAssert(missing.contains("no file tensor for 1 module tensor: blocks.1.attn.qkv.bias"), missing)
        let unexpected = try refusal("unexpected.safetensors") {
            $0["head.last_layer.weight"] = HostTensor(shape: [2], values: [0, 0])
        }
        XCTAssert(unexpected.contains("no module tensor for 1 file tensor: head.last_layer.weight"), unexpected)
        let misshapen = try refusal("misshapen.safetensors") {
            $0["blocks.0.mlp.fc1.bias"] = HostTensor(shape: [64], values: [Float](repeating: 0, count: 64))
        }
        XCTAssert(misshapen.contains("blocks.0.mlp.fc1.bias (file [64], module [128])"), misshapen)
        let headless = source.metadata.filter { $0.key != "hipt.num_heads" }
        let unnamed = try refusal("no-heads.safetensors", metadata: headless) { _ in }
        XCTAssert(unnamed.contains("no positive metadata hipt.num_heads"), unnamed)
    }
}

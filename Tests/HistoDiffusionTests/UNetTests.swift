import Foundation
import XCTest
import HistoCore
import HistoNN
import HistoOpenCL
@testable import HistoDiffusion

/// Every element within atol + rtol·|expected| (shared by this target's tests).
func assertClose(_ actual: [Float], _ expected: [Float], atol: Float, rtol: Float, _ message: String,
                 file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.count, expected.count, "\(message): count", file: file, line: line)
    var worst: (index: Int, error: Float) = (0, 0)
    for (i, (a, e)) in zip(actual, expected).enumerated() {
        let error = abs(a - e) - rtol * abs(e)
        if !(error <= worst.error) { worst = (i, error) }
    }
    if !(worst.error <= atol) {
        XCTFail("\(message): element \(worst.index) is \(actual[worst.index]), expected \(expected[worst.index])", file: file, line: line)
    }
}

private func fixturePath(_ name: String) -> String {
    Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent(name).path
}

/// Forward passes of small models against PyTorch re-implementations of the references (tools/unet_reference.py):
/// the weights load by their reference names (strict: every name and shape must match), then the output and a few
/// recorded blocks must equal PyTorch's (float64) results.
final class UNetReferenceTests: XCTestCase {
    private func check(_ model: any FeatureExtractingModel, fixture: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let path = fixturePath("unet_\(fixture).safetensors")
        let stored = try SafeTensors.read(path)
        let weights = stored.tensors.filter { !$0.key.hasPrefix("test.") }
        let report = try model.load(weights, source: path)
        XCTAssertEqual(report.loaded.count, weights.count, file: file, line: line)
        XCTAssertEqual(model.parameterCount(), Int(stored.metadata["parameters"] ?? ""), "parameter count", file: file, line: line)
        model.train(false)
        let x = stored.tensors["test.x"]!.tensor, t = stored.tensors["test.t"]!.tensor
        let context = stored.tensors["test.context"]?.tensor
        let blocks = stored.tensors.keys.filter { $0.hasPrefix("test.block.") }.map { String($0.dropFirst("test.block.".count)) }
        let recorder = FeatureRecorder(blocks)
        let out = model.forward(x, timesteps: t, context: context, recorder: recorder)
        let expected = stored.tensors["test.output"]!
        XCTAssertEqual(out.shape, expected.shape, file: file, line: line)
        assertClose(try out.toArray(), expected.values, atol: 2e-4, rtol: 2e-4, "\(fixture) output", file: file, line: line)
        for block in blocks {
            let reference = stored.tensors["test.block.\(block)"]!
            let recorded = try XCTUnwrap(recorder.recorded[block], "\(block) not recorded", file: file, line: line)
            XCTAssertEqual(recorded.shape, reference.shape, block, file: file, line: line)
            assertClose(try recorded.toArray(), reference.values, atol: 2e-4, rtol: 2e-4, "\(fixture) \(block)", file: file, line: line)
        }
    }

    func testGuidedUNetWithScaleShiftMatchesReference() throws {
        let configuration = GuidedUNet.Configuration(
            inChannels: 3, outChannels: 3, modelChannels: 8, channelMult: [1, 2, 2], numResBlocks: 1,
            attentionResolutions: [2], heads: .channels(4), useScaleShiftNorm: true, normGroups: 4)
        try check(GuidedUNet(configuration, generator: RandomGenerator(seed: 1)), fixture: "guided_scale_shift")
    }

    func testGuidedUNetWithCrossAttentionMatchesReference() throws {
        let configuration = GuidedUNet.Configuration(
            inChannels: 4, outChannels: 2, modelChannels: 8, channelMult: [1, 2], numResBlocks: 2,
            attentionResolutions: [1, 2], heads: .count(2), crossAttention: .init(contextDim: 6), normGroups: 4,
            decoderLayout: .mirrored)
        try check(GuidedUNet(configuration, generator: RandomGenerator(seed: 2)), fixture: "guided_cross_attention")
    }

    func testAttentionUNetSegmentationMatchesReference() throws {
        let configuration = AttentionUNet.Configuration(
            dim: 4, dimMults: [1, 2, 4], outChannels: 3, resnetGroups: 4, attentionHeads: 2, attentionHeadDim: 4,
            softmaxOutput: true)
        try check(AttentionUNet(configuration, generator: RandomGenerator(seed: 3)), fixture: "attention_segmentation")
    }

    func testConditionalUNetMatchesReference() throws {
        let configuration = ConditionalUNet.Configuration(targetChannels: 2, conditionChannels: 3, dim: 8,
                                                          dimMults: [1, 2], dropouts: [0.05, 0.1, 0.2])
        try check(ConditionalUNet(configuration, generator: RandomGenerator(seed: 4)), fixture: "conditional_mask")
    }
}

final class UNetPresetTests: XCTestCase {
    /// The counts printed by tools/unet_reference.py for the same presets.
    func testParameterCountsMatchTheReferences() throws {
        let g = RandomGenerator(seed: 7)
        XCTAssertEqual(try GuidedUNet(.bench828k, generator: g).parameterCount(), 828_387)
        XCTAssertEqual(try GuidedUNet(.cpu, generator: g).parameterCount(), 762_083)
        XCTAssertEqual(try AttentionUNet(.cpu, generator: g).parameterCount(), 605_755)
        XCTAssertEqual(try AttentionUNet(.cpuSegmentation(classes: 2), generator: g).parameterCount(), 605_738)
        XCTAssertEqual(try ConditionalUNet(.cpuMask(), generator: g).parameterCount(), 465_858)
        XCTAssertEqual(try ConditionalUNet(.cpuImage(), generator: g).parameterCount(), 466_003)
        XCTAssertEqual(try ConditionalUNet(.ciampiMask(), generator: g).parameterCount(), 7_411_458)
        XCTAssertEqual(try ConditionalUNet(.ciampiImage(), generator: g).parameterCount(), 7_412_035)
    }

    /// GenSelfDiff's paper network: 31,267,083 parameters ("about 31.27M"), as the PyTorch build of the reference
    /// architecture counts; its forward keeps the input size.
    func testGenSelfDiffPaperModel() throws {
        let model = try AttentionUNet(.genSelfDiff, generator: RandomGenerator(seed: 8))
        XCTAssertEqual(model.parameterCount(), 31_267_083)
        let out = model(RandomGenerator(seed: 9).normal([1, 3, 8, 8]), timesteps: Tensor([500], shape: [1]), context: nil)
        XCTAssertEqual(try out.eval().shape, [1, 3, 8, 8])
    }

    func testCPUPresetForwardShapes() throws {
        let g = RandomGenerator(seed: 10)
        let x = g.normal([2, 3, 32, 32]), t = Tensor([0, 999], shape: [2])
        for configuration in [GuidedUNet.Configuration.cpu, .bench828k] {
            let model = try GuidedUNet(configuration, generator: g)
            XCTAssertEqual(try model(x, timesteps: t, context: nil).eval().shape, [2, 3, 32, 32])
        }
        XCTAssertEqual(try AttentionUNet(.cpu, generator: g)(x, timesteps: t, context: nil).eval().shape, [2, 3, 32, 32])
        let probabilities = try AttentionUNet(.cpuSegmentation(classes: 4), generator: g)(x, timesteps: t, context: nil).toArray()
        XCTAssertEqual(probabilities.count, 2 * 4 * 32 * 32)
        let pixel0 = (0..<4).map { probabilities[$0 * 32 * 32] }
        XCTAssertEqual(pixel0.reduce(0, +), 1, accuracy: 1e-5, "softmax over the class axis")
        let mask = g.normal([2, 2, 32, 32])
        XCTAssertEqual(try ConditionalUNet(.cpuMask(), generator: g)(mask, timesteps: t, context: x).eval().shape, [2, 2, 32, 32])
        XCTAssertEqual(try ConditionalUNet(.cpuImage(), generator: g)(x, timesteps: t, context: mask).eval().shape, [2, 3, 32, 32])
    }

    func testParameterNamesFollowTheReferences() throws {
        let g = RandomGenerator(seed: 11)
        func shapes(_ model: Module) -> [String: [Int]] {
            Dictionary(uniqueKeysWithValues: model.stateTensors().map { ($0.name, $0.tensor.shape) })
        }
        let guided = shapes(try GuidedUNet(.cpu, generator: g))
        XCTAssertEqual(guided["time_embed.2.weight"], [128, 128])
        XCTAssertEqual(guided["input_blocks.1.0.in_layers.0.weight"], [32])
        XCTAssertEqual(guided["input_blocks.1.0.emb_layers.1.weight"], [32, 128])
        XCTAssertEqual(guided["input_blocks.3.0.op.weight"], [32, 32, 3, 3])
        XCTAssertEqual(guided["input_blocks.7.1.qkv.weight"], [96, 32, 1])
        XCTAssertEqual(guided["middle_block.1.proj_out.bias"], [32])
        XCTAssertEqual(guided["output_blocks.0.0.skip_connection.weight"], [32, 64, 1, 1])
        XCTAssertEqual(guided["output_blocks.8.1.conv.weight"], [32, 32, 3, 3])
        XCTAssertEqual(guided["out.2.weight"], [3, 32, 3, 3])
        let ldm = shapes(try GuidedUNet(.init(inChannels: 3, outChannels: 3, modelChannels: 32, channelMult: [1, 2],
                                              numResBlocks: 1, attentionResolutions: [2], heads: .count(1),
                                              crossAttention: .init(contextDim: 16)), generator: g))
        XCTAssertEqual(ldm["input_blocks.3.1.proj_in.weight"], [64, 64, 1, 1])
        XCTAssertEqual(ldm["input_blocks.3.1.transformer_blocks.0.attn2.to_k.weight"], [64, 16])
        XCTAssertEqual(ldm["input_blocks.3.1.transformer_blocks.0.ff.net.0.proj.weight"], [512, 64])
        XCTAssertEqual(ldm["middle_block.1.transformer_blocks.0.attn1.to_out.0.bias"], [64])
        let genSelfDiff = shapes(try AttentionUNet(.cpu, generator: g))
        XCTAssertEqual(genSelfDiff["init_conv.weight"], [10, 3, 7, 7])
        XCTAssertEqual(genSelfDiff["time_mlp.3.weight"], [64, 64])
        XCTAssertEqual(genSelfDiff["downs.0.0.mlp.1.weight"], [16, 64])
        XCTAssertEqual(genSelfDiff["downs.0.0.res_conv.weight"], [16, 10, 1, 1])
        XCTAssertEqual(genSelfDiff["downs.1.2.fn.fn.to_out.1.weight"], [32])
        XCTAssertEqual(genSelfDiff["mid_attn.fn.fn.to_qkv.weight"], [384, 64, 1, 1])
        XCTAssertEqual(genSelfDiff["ups.1.3.weight"], [16, 16, 4, 4])
        XCTAssertEqual(genSelfDiff["final_conv.1.weight"], [3, 16, 1, 1])
        let ciampi = shapes(try ConditionalUNet(.cpuMask(), generator: g))
        XCTAssertEqual(ciampi["init_conv.conv_conv.0.weight"], [16, 5, 3, 3])
        XCTAssertEqual(ciampi["downs.3.0.maxpool_conv.1.conv_conv.5.running_var"], [128])
        XCTAssertEqual(ciampi["ups.0.0.conv1x1.weight"], [64, 128, 1, 1])
        XCTAssertEqual(ciampi["ups.3.0.conv.conv.3.weight"], [16, 16, 3, 3])
        XCTAssertEqual(ciampi["final_conv.weight"], [2, 16, 3, 3])
    }

    func testInvalidInputsAndConfigurationsAreReported() throws {
        let g = RandomGenerator(seed: 12)
        XCTAssertThrowsError(try GuidedUNet(.init(inChannels: 3, outChannels: 3, modelChannels: 24, channelMult: [1],
                                                  numResBlocks: 1, attentionResolutions: [], heads: .count(1)), generator: g)) {
            XCTAssertTrue("\($0)".contains("24 channels do not split into 32 groups"), "\($0)")
        }
        let model = try GuidedUNet(.bench828k, generator: g)
        XCTAssertThrowsError(try model(Tensor.zeros([1, 3, 30, 30]), timesteps: Tensor([1], shape: [1]), context: nil).eval()) {
            XCTAssertTrue("\($0)".contains("divisible by 4"), "\($0)")
        }
        XCTAssertThrowsError(try model(Tensor.zeros([1, 3, 32, 32]), timesteps: Tensor([1], shape: [1]),
                                       context: Tensor.zeros([1, 2, 4])).eval()) {
            XCTAssertTrue("\($0)".contains("takes no context"), "\($0)")
        }
        let conditional = try ConditionalUNet(.cpuMask(), generator: g)
        XCTAssertThrowsError(try conditional(Tensor.zeros([1, 2, 32, 32]), timesteps: Tensor([1], shape: [1]), context: nil).eval()) {
            XCTAssertTrue("\($0)".contains("conditioner [1, 3, 32, 32]"), "\($0)")
        }
    }
}

final class UNetTrainingTests: XCTestCase {
    /// One Adam step on a fixed batch lowers the MSE to a fixed target, for each family (small configurations).
    func testOneStepLowersTheLoss() throws {
        let g = RandomGenerator(seed: 13)
        let models: [(String, any FeatureExtractingModel, Tensor?)] = [
            ("guided", try GuidedUNet(.init(inChannels: 3, outChannels: 3, modelChannels: 32, channelMult: [1, 2],
                                            numResBlocks: 1, attentionResolutions: [2], heads: .count(2),
                                            useScaleShiftNorm: true), generator: g), nil),
            ("attention", try AttentionUNet(.init(dim: 8, dimMults: [1, 2], resnetGroups: 4, attentionHeads: 2,
                                                  attentionHeadDim: 8), generator: g), nil),
            ("conditional", try ConditionalUNet(.init(targetChannels: 3, conditionChannels: 2, dim: 8, dimMults: [1, 2],
                                                      dropouts: [0, 0, 0]), generator: g),
             try g.normal([2, 2, 16, 16]).materialized()),
        ]
        let x = try g.normal([2, 3, 16, 16]).materialized(), target = try g.normal([2, 3, 16, 16]).materialized()
        let t = Tensor([10, 600], shape: [2])
        for (name, model, context) in models {
            let optimizer = Adam([ParameterGroup(model.trainableParameters())], learningRate: 1e-3)
            let (before, grads) = try Gradients.of(Loss.mse(model(x, timesteps: t, context: context), target),
                                                   wrt: model.trainableParameters(), alongside: model.pendingBufferUpdates())
            try model.commitBufferUpdates()
            try optimizer.step(grads)
            let after = try Loss.mse(model(x, timesteps: t, context: context), target).item()
            XCTAssertLessThan(after, before, name)
        }
    }
}

final class UNetBackendParityTests: XCTestCase {
    /// The CPU presets' forward passes agree between the CPU and OpenCL backends (PoCL in CI).
    func testCPUPresetsMatchBetweenBackends() throws {
        guard let device = try OpenCLBackend.make() else { throw XCTSkip("no OpenCL device on this machine") }
        let g = RandomGenerator(seed: 14)
        let x = try g.normal([1, 3, 32, 32]).materialized(), mask = try g.normal([1, 2, 32, 32]).materialized()
        let t = Tensor([250], shape: [1])
        let models: [(String, any FeatureExtractingModel, Tensor, Tensor?)] = [
            ("guided", try GuidedUNet(.cpu, generator: g), x, nil),
            ("attention", try AttentionUNet(.cpu, generator: g), x, nil),
            ("conditional", try ConditionalUNet(.cpuMask(), generator: g), mask, x),
        ]
        for (name, model, input, context) in models {
            model.train(false)
            let cpu = try model(input, timesteps: t, context: context).toArray(on: CPUBackend.shared)
            let opencl = try model(input, timesteps: t, context: context).toArray(on: device)
            assertClose(opencl, cpu, atol: 1e-4, rtol: 1e-3, "\(name) forward on OpenCL")
        }
    }
}

import Foundation
import XCTest
import HistoCore
import HistoNN
import HistoData
@testable import HistoDiffusion

/// Helpers shared by the autoencoder and weight-import tests.
enum AutoencoderTestSupport {
    static func fixture(_ name: String) -> String {
        Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent(name).path
    }

    /// The largest absolute difference from a fixture's tensor (shapes must agree).
    static func largestDifference(_ actual: Tensor, _ expected: HostTensor) throws -> Float {
        XCTAssertEqual(actual.shape, expected.shape)
        return zip(try actual.toArray(), expected.values).map { abs($0 - $1) }.max() ?? .infinity
    }

    /// The tiny configuration of tools/fixtures_autoencoder.py.
    static let tiny = AutoencoderKL.Configuration(channels: 4, channelMultipliers: [1, 2, 2], resBlocksPerLevel: 1,
                                                  latentChannels: 3, normGroups: 2)

    static func temporaryDirectory(_ name: String = #function) throws -> String {
        let safe = name.filter { $0.isLetter || $0.isNumber }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("histodiffusion-\(safe)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static func assertClose(_ actual: [Float], _ expected: [Float], atol: Float, _ message: String,
                            file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, "\(message): count", file: file, line: line)
        let worst = zip(actual, expected).map { abs($0 - $1) }.max() ?? 0
        XCTAssert(worst <= atol, "\(message): largest difference \(worst) exceeds \(atol)", file: file, line: line)
    }

    /// Smooth images in [−1, 1] (sums of sinusoids), [n, 3, size, size].
    static func smoothImages(_ n: Int, size: Int) -> Tensor {
        var values: [Float] = []
        for i in 0..<n {
            for c in 0..<3 {
                for y in 0..<size {
                    for x in 0..<size {
                        let u = Float(x) / Float(size), v = Float(y) / Float(size)
                        values.append(0.6 * sin(6 * u + Float(c) + Float(i)) * cos(4 * v - Float(c)) + 0.2 * Float(c - 1))
                    }
                }
            }
        }
        return Tensor(values, shape: [n, 3, size, size])
    }
}

final class AutoencoderTests: XCTestCase {
    typealias Support = AutoencoderTestSupport

    func testCPUPresetShapesAndLDMNames() throws {
        let model = try AutoencoderKL(.cpu, generator: RandomGenerator(seed: 1))
        let x = RandomGenerator(seed: 2).uniform([2, 3, 32, 32], -1, 1)
        let (mean, logvar) = model.encode(x)
        XCTAssertEqual(mean.shape, [2, 3, 8, 8])
        XCTAssertEqual(logvar.shape, [2, 3, 8, 8])
        let z = model.sample(mean: mean, logvar: logvar, generator: RandomGenerator(seed: 3))
        let reconstruction = model.decode(z)
        XCTAssertEqual(reconstruction.shape, [2, 3, 32, 32])
        XCTAssert(try reconstruction.toArray().allSatisfy(\.isFinite))
        XCTAssertEqual(AutoencoderKL.Configuration.cpu.downsamplingFactor, 4)

        let names = Set(model.parameters().map(\.name))
        for expected in ["encoder.conv_in.weight", "encoder.down.0.block.0.norm1.weight", "encoder.down.0.block.0.conv2.bias",
                         "encoder.down.1.block.0.nin_shortcut.weight", "encoder.down.1.downsample.conv.weight",
                         "encoder.mid.block_1.norm2.bias", "encoder.mid.attn_1.q.weight", "encoder.mid.attn_1.proj_out.bias",
                         "encoder.norm_out.weight", "encoder.conv_out.weight", "quant_conv.weight", "post_quant_conv.bias",
                         "decoder.conv_in.weight", "decoder.mid.block_2.conv1.weight", "decoder.up.2.block.0.norm1.weight",
                         "decoder.up.2.upsample.conv.weight", "decoder.up.0.block.1.conv2.weight",
                         "decoder.up.1.block.0.nin_shortcut.weight", "decoder.norm_out.bias", "decoder.conv_out.bias"] {
            XCTAssert(names.contains(expected), "missing \(expected)")
        }
        XCTAssertFalse(names.contains { $0.contains("encoder.down.2.downsample") || $0.contains("decoder.up.0.upsample") })
        XCTAssertEqual(model.parameters().first { $0.name == "encoder.mid.attn_1.k.weight" }?.parameter.shape, [128, 128, 1, 1])
        // Counts from tools/fixtures_autoencoder.py's layout (the paper preset's 55,312,063 is checked there too).
        XCTAssertEqual(model.parameterCount(), 2_698_591)
    }

    func testPaperPresetParameterCount() throws {
        let model = try AutoencoderKL(.paper, generator: RandomGenerator(seed: 1))
        XCTAssertEqual(model.parameterCount(), 55_312_063) // LDM kl-f4
        XCTAssertEqual(model.parameters().count, 204)
    }

    /// A tiny LDM-named checkpoint and the outputs of an independent float64 PyTorch forward pass.
    func testMatchesPyTorchReference() throws {
        let model = try AutoencoderKL(Support.tiny, generator: RandomGenerator(seed: 9))
        let report = try WeightImport.load(into: model, from: Support.fixture("autoencoder_ldm_tiny.safetensors"),
                                           map: .ldmAutoencoder)
        XCTAssertEqual(report.loaded.count, model.stateTensors().count)
        XCTAssertEqual(report.skipped.sorted(), ["loss.discriminator.main.0.weight", "loss.logvar"])
        XCTAssertEqual(model.parameterCount(), 16_339)

        let io = try SafeTensors.read(Support.fixture("autoencoder_ldm_tiny_io.safetensors")).tensors
        let (mean, logvar) = model.encode(io["x"]!.tensor)
        let reconstruction = model.decode(mean)
        let kl = AutoencoderKL.klDivergence(mean: mean, logvar: logvar)
        try eval([mean, logvar, reconstruction, kl])
        XCTAssertEqual(mean.shape, [2, 3, 4, 4])
        Support.assertClose(try mean.toArray(), io["mean"]!.values, atol: 2e-5, "mean")
        Support.assertClose(try logvar.toArray(), io["logvar"]!.values, atol: 2e-5, "logvar")
        Support.assertClose(try reconstruction.toArray(), io["reconstruction"]!.values, atol: 5e-5, "reconstruction")
        Support.assertClose([try kl.item()], io["kl"]!.values, atol: 1e-4, "kl")
    }

    func testKLMatchesHandComputation() throws {
        let mean: [Float] = [0.5, -1, 0, 2, 0.25, -0.75, 1.5, 0]
        let logvar: [Float] = [0, 0.5, -1, 0.2, -0.3, 1, 0, -2]
        var expected = 0.0
        for (m, l) in zip(mean, logvar) { expected += 0.5 * (Double(m * m) + exp(Double(l)) - 1 - Double(l)) }
        expected /= 2 // batch of two [1, 2, 2] posteriors
        let kl = AutoencoderKL.klDivergence(mean: Tensor(mean, shape: [2, 1, 2, 2]), logvar: Tensor(logvar, shape: [2, 1, 2, 2]))
        XCTAssertEqual(Double(try kl.item()), expected, accuracy: 1e-6)
        // N(0, I) has none.
        XCTAssertEqual(try AutoencoderKL.klDivergence(mean: .zeros([3, 2, 2, 2]), logvar: .zeros([3, 2, 2, 2])).item(), 0)
        XCTAssertThrowsError(try AutoencoderKL.klDivergence(mean: .zeros([2, 3]), logvar: .zeros([2, 4])).item()) { error in
            XCTAssert("\(error)".contains("autoencoder_kl"), "\(error)")
        }
    }

    func testLossTermsAndReparameterisation() throws {
        let model = try AutoencoderKL(Support.tiny, generator: RandomGenerator(seed: 4))
        let x = Support.smoothImages(2, size: 16)
        for kind in AutoencoderKL.ReconstructionLoss.allCases {
            let terms = model.loss(x, generator: RandomGenerator(seed: 5), klWeight: 0.25, reconstruction: kind)
            try eval([terms.total, terms.reconstruction, terms.kl, terms.output])
            let (xs, outputs) = (try x.toArray(), try terms.output.toArray())
            let perPixel = zip(xs, outputs).map { kind == .l1 ? abs($0 - $1) : ($0 - $1) * ($0 - $1) }
            XCTAssertEqual(try terms.reconstruction.item(), perPixel.reduce(0, +) / 2, accuracy: 1e-3)
            XCTAssertEqual(try terms.total.item(), try terms.reconstruction.item() + 0.25 * terms.kl.item(), accuracy: 1e-3)

            // The decoded sample is mean + exp(logvar/2)·ε with ε from the same generator state.
            let (mean, logvar) = model.encode(x)
            let epsilon = RandomGenerator(seed: 5).normal(mean.shape)
            let expected = model.decode(mean + (logvar * 0.5).exp() * epsilon)
            Support.assertClose(outputs, try expected.toArray(), atol: 1e-5, "output (\(kind))")
        }
        XCTAssertThrowsError(try model.loss(Support.smoothImages(1, size: 18), generator: RandomGenerator(seed: 1), klWeight: 1).total.item()) { error in
            XCTAssert("\(error)".contains("multiples of 4"), "\(error)")
        }
        XCTAssertThrowsError(try model.encode(.zeros([1, 1, 8, 8])).mean.item()) { error in
            XCTAssert("\(error)".contains("autoencoder_encode") && "\(error)".contains("[1, 1, 8, 8]"), "\(error)")
        }
    }

    func testInvalidConfigurationIsReported() {
        var configuration = AutoencoderKL.Configuration.cpu
        configuration.channels = 24
        configuration.channelMultipliers = [1, 0]
        XCTAssertThrowsError(try AutoencoderKL(configuration, generator: RandomGenerator(seed: 0))) { error in
            let text = "\(error)"
            XCTAssert(text.contains("channelMultipliers [1, 0]") && text.contains("[24] are not divisible by normGroups 32"), text)
        }
    }

    /// 20 Adam steps on one fixed batch halve the loss of the CPU preset.
    func testTrainingLowersTheLoss() throws {
        let model = try AutoencoderKL(.cpu, generator: RandomGenerator(seed: 11))
        let optimizer = Adam([ParameterGroup(model.trainableParameters())], learningRate: 1e-3)
        var seen: [Int] = []
        let records = try AutoencoderTraining.run(
            model: model, batches: [Support.smoothImages(2, size: 16)], optimizer: optimizer,
            options: .init(steps: 20, klWeight: 1e-6, reconstruction: .l1), generator: RandomGenerator(seed: 12),
            schedule: ConstantSchedule(1e-3)) { seen.append($0.step) }
        XCTAssertEqual(seen, Array(1...20))
        XCTAssertEqual(records.count, 20)
        XCTAssert(records.allSatisfy { $0.learningRate == 1e-3 && abs($0.loss - ($0.reconstruction + 1e-6 * $0.kl)) <= 1e-3 * $0.loss })
        let first = records.prefix(3).map(\.loss).reduce(0, +) / 3, last = records.suffix(3).map(\.loss).reduce(0, +) / 3
        print(String(format: "autoencoder loss %.1f → %.1f over 20 steps", first, last))
        XCTAssertLessThan(last, 0.5 * first, "20 steps should at least halve the loss")
    }

    func testLatentsAndDatasetEncoding() throws {
        let model = try AutoencoderKL(Support.tiny, generator: RandomGenerator(seed: 6))
        let batches = [Support.smoothImages(2, size: 16), Support.smoothImages(1, size: 16)]
        let latents = try AutoencoderTraining.encodeDataset(model: model, batches: batches, scaleFactor: 0.5)
        XCTAssertEqual(latents.shape, [3, 3, 4, 4])
        let direct = try (model.encode(batches[0]).mean * 0.5).toArray() + (model.encode(batches[1]).mean * 0.5).toArray()
        XCTAssertEqual(latents.values, direct)

        // scale_by_std: scaled latents have unit standard deviation, and decodeLatents undoes the scale.
        let scale = try AutoencoderKL.latentScaleFactor(latents.tensor)
        XCTAssertEqual(try (latents.tensor * scale).std().item(), 1, accuracy: 1e-5)
        let z = model.latents(batches[0], scaleFactor: scale)
        Support.assertClose(try model.decodeLatents(z, scaleFactor: scale).toArray(),
                            try model.decode(model.encode(batches[0]).mean).toArray(), atol: 1e-5, "decodeLatents")
        let drawn = model.latents(batches[0], mode: .sample(RandomGenerator(seed: 7)))
        XCTAssertNotEqual(try drawn.toArray(), try model.latents(batches[0]).toArray())

        XCTAssertThrowsError(try AutoencoderTraining.encodeDataset(
            model: model, batches: [Support.smoothImages(1, size: 16), Support.smoothImages(1, size: 32)])) { error in
            XCTAssert("\(error)".contains("use one patch size"), "\(error)")
        }
        XCTAssertThrowsError(try AutoencoderKL.latentScaleFactor(.zeros([4])))
    }

    /// The BatchLoader entry points: training stops after `steps` on an endless stream; encoding a finite grid
    /// pass keeps the loader order and the items.
    func testLoaderTrainingAndEncoding() throws {
        let directory = try Support.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for (i, name) in ["a", "b"].enumerated() {
            let samples = (0..<(24 * 16 * 3)).map { UInt16(($0 * (7 + i) + 31 * i) % 256) }
            try PNG.write(try Image(width: 24, height: 16, channels: 3, bitDepth: 8, samples: samples), to: "\(directory)/\(name).png")
        }
        let dataset = try Dataset.open(path: directory)
        let model = try AutoencoderKL(Support.tiny, generator: RandomGenerator(seed: 8))

        var trainingOptions = LoaderOptions(batchSize: 2, patches: .randomCrops(size: 16, perImage: 1), labelled: false)
        trainingOptions.seed = 3
        let stream = try BatchLoader(dataset: dataset, indices: [0, 1], options: trainingOptions)
        let records = try AutoencoderTraining.run(model: model, loader: stream, optimizer: Adam([ParameterGroup(model.trainableParameters())]),
                                                  options: .init(steps: 3), generator: RandomGenerator(seed: 4))
        stream.close()
        XCTAssertEqual(records.map(\.step), [1, 2, 3])

        var gridOptions = LoaderOptions(batchSize: 3, patches: .grid(size: 16, stride: 8), labelled: false)
        gridOptions.shuffle = false
        gridOptions.epochs = 1
        let pass = try BatchLoader(dataset: dataset, indices: [0, 1], options: gridOptions)
        let encoded = try AutoencoderTraining.encodeDataset(model: model, loader: pass, scaleFactor: 2)
        XCTAssertEqual(encoded.latents.shape, [4, 3, 4, 4]) // two 16² windows (x 0 and 8) per 24×16 image
        XCTAssertEqual(encoded.items.map(\.name), ["a", "a", "b", "b"])
        XCTAssertEqual(encoded.items.map(\.x), [0, 8, 0, 8])

        gridOptions.epochs = nil
        let endless = try BatchLoader(dataset: dataset, indices: [0], options: gridOptions)
        defer { endless.close() }
        XCTAssertThrowsError(try AutoencoderTraining.encodeDataset(model: model, loader: endless)) { error in
            XCTAssert("\(error)".contains("endless"), "\(error)")
        }
    }
}

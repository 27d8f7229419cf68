import Foundation
import XCTest
import HistoCore
import HistoNN
import HistoData
@testable import HistoDiffusion

/// The library side of `histodiff sample`, `features` and `pretrain --autoencoder`: run folders, recipes, latent
/// spaces.
final class DiffusionRunTests: XCTestCase {
    typealias Support = AutoencoderTestSupport

    /// A pretrain-like run folder: the spec and the (random) weights as ema.safetensors.
    func writeRun(_ spec: DiffusionModelSpec, model: Module, to directory: String) throws {
        try spec.write(toDirectory: directory)
        try model.save(to: (directory as NSString).appendingPathComponent(DiffusionRun.weightsFileName))
    }

    func testSpecRoundTripsWithRecipeAndLatentAndOldFilesNameTheMissingRecipe() throws {
        let directory = try Support.temporaryDirectory()
        let spec = DiffusionModelSpec(family: "guided", preset: "cpu", recipe: .ddpm,
                                      latent: .init(scaleFactor: 0.8125, posterior: .mean, source: "ae/checkpoint/model.safetensors"))
        try spec.write(toDirectory: directory)
        let path = (directory as NSString).appendingPathComponent(DiffusionModelSpec.fileName)
        XCTAssertEqual(try DiffusionModelSpec.read(path), spec)
        // The recipe rebuilds the training schedule: DDPM's linear β.
        let run = try DiffusionRun(spec: DiffusionModelSpec(family: "guided", preset: "cpu", recipe: .ddpm),
                                   model: GuidedUNet(.cpu, generator: RandomGenerator(seed: 0)), latentSpace: nil)
        XCTAssertEqual(run.schedule.betas, NoiseSchedule(.linear).betas)
        XCTAssertEqual(run.target, .epsilon)

        try Data(#"{"family": "genselfdiff", "preset": "cpu"}"#.utf8).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try DiffusionModelSpec.read(path)) { error in
            guard case EngineError.file(let file, let message) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(file, path)
            XCTAssertTrue(message.contains("\"recipe\": \"genselfdiff\""), message)
        }
        try Data(#"{"family": "genselfdiff", "preset": "cpu", "recipe": "cosine"}"#.utf8).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try DiffusionModelSpec.read(path))
    }

    /// The sample command's path: load a run folder, sample, write the grid and one PNG per sample.
    func testSamplesWriteAGridOfTheRightSizeAndDependOnlyOnTheSeed() throws {
        let directory = try Support.temporaryDirectory()
        let spec = DiffusionModelSpec(family: "genselfdiff", preset: "cpu", recipe: .genselfdiff)
        try writeRun(spec, model: spec.makeModel(generator: RandomGenerator(seed: 5)), to: directory)
        let run = try DiffusionRun.load(directory)
        XCTAssertFalse(run.model.isTraining)
        let grid = directory + "/out/grid.png", individual = directory + "/each"
        let images = try run.writeSamples(count: 3, size: 16, sampler: .ddim(steps: 4, eta: 0), seed: 7, grid: grid,
                                          individual: individual)
        XCTAssertEqual(images.shape, [3, 3, 16, 16])
        // ⌈√3⌉ = 2 columns and 2 rows of 16 px with 2 px of padding around and between them.
        let png = try PNG.read(path: grid)
        XCTAssertEqual([png.width, png.height, png.channels], [38, 38, 3])
        for index in 0..<3 {
            let single = try PNG.read(path: individual + String(format: "/sample_%03d.png", index))
            XCTAssertEqual([single.width, single.height], [16, 16])
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: individual + "/sample_003.png"))

        // An explicit weights file loads the same model; the seed alone decides the samples.
        let again = try DiffusionRun.load(directory + "/" + DiffusionRun.weightsFileName)
        XCTAssertEqual(try again.sample(count: 3, size: 16, sampler: .ddim(steps: 4, eta: 0), seed: 7).toArray(), try images.toArray())
        XCTAssertNotEqual(try run.sample(count: 3, size: 16, sampler: .ddim(steps: 4, eta: 0), seed: 8).toArray(), try images.toArray())
        var steps: [Int] = []
        let ddpm = try run.sample(count: 2, size: 16, sampler: .ddpm(steps: 5), seed: 3) { steps.append($0.index) }
        XCTAssertEqual(steps, Array(0..<5))
        XCTAssertEqual(try run.sample(count: 2, size: 16, sampler: .ddpm(steps: 5), seed: 3).toArray(), try ddpm.toArray())

        // The cpu genselfdiff UNet halves twice: 18 px does not fit.
        XCTAssertThrowsError(try run.sample(count: 1, size: 18, sampler: .ddim(steps: 2, eta: 0), seed: 0)) { error in
            XCTAssertTrue("\(error)".contains("multiples of 4"), "\(error)")
        }
    }

    /// The features command's path: the documented block shapes of the guided cpu preset (on 32² inputs) under
    /// their file names, and the errors for unknown blocks and timesteps outside the schedule.
    func testFeaturesHaveTheDocumentedShapesPerBlockAndRejectUnknownBlocks() throws {
        let g = RandomGenerator(seed: 9)
        let run = try DiffusionRun(spec: DiffusionModelSpec(family: "guided", preset: "cpu", recipe: .genselfdiff),
                                   model: GuidedUNet(.cpu, generator: g), latentSpace: nil)
        let images = try run.modelInput(g.normal([1, 3, 32, 32]).materialized())
        let extractor = try run.featureExtractor(blocks: ["middle_block", "output_blocks.7"], timesteps: [50, 150])
        let features = try extractor(images)
        let perTimestep = try features.namedTensors(image: 0, concatenated: false)
        XCTAssertEqual(perTimestep.map(\.name), ["middle_block.t50", "middle_block.t150", "output_blocks.7.t50", "output_blocks.7.t150"])
        XCTAssertEqual(perTimestep.map(\.tensor.shape), [[32, 4, 4], [32, 4, 4], [32, 16, 16], [32, 16, 16]])
        let concatenated = try features.namedTensors(image: 0, concatenated: true)
        XCTAssertEqual(concatenated.map(\.name), ["middle_block", "output_blocks.7"])
        XCTAssertEqual(concatenated.map(\.tensor.shape), [[64, 4, 4], [64, 16, 16]])
        XCTAssertEqual(Array(concatenated[1].tensor.values[(32 * 256)...]), perTimestep[3].tensor.values)
        let resized = try run.featureExtractor(blocks: ["middle_block"], timesteps: [50], noisedSeed: 4, outputSize: [32, 32])(images)
        XCTAssertEqual(try resized.namedTensors(image: 0, concatenated: true).map(\.tensor.shape), [[32, 32, 32]])

        XCTAssertThrowsError(try run.featureExtractor(blocks: ["middle_block", "output_blocks.99"], timesteps: [50])) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("output_blocks.99") && message.contains("known: input_blocks.0"), message)
            XCTAssertTrue(message.contains("output_blocks.11"), message)
        }
        XCTAssertThrowsError(try run.featureExtractor(blocks: ["middle_block"], timesteps: [50, 1000])) { error in
            XCTAssertTrue("\(error)".contains("0..<1000"), "\(error)")
        }
    }

    /// Latent diffusion: the scale factor is 1/std of the first batch's latents, a pretraining step runs on scaled
    /// latents, and a run folder with its autoencoder copy samples decoded images.
    func testLatentPretrainingStepAndDecodedSamples() throws {
        let g = RandomGenerator(seed: 12)
        let autoencoder = try AutoencoderKL(.cpu, generator: g)
        let images = Support.smoothImages(2, size: 16)
        let space = try LatentSpace.fitted(autoencoder: autoencoder, firstBatch: images, posterior: .sample,
                                           generator: RandomGenerator(seed: 3))
        let unscaled = autoencoder.latents(images, mode: .sample(RandomGenerator(seed: 3)))
        XCTAssertEqual(space.scaleFactor, try AutoencoderKL.latentScaleFactor(unscaled), accuracy: 1e-6)

        let spec = DiffusionModelSpec(family: "genselfdiff", preset: "cpu", recipe: .genselfdiff,
                                      latent: .init(scaleFactor: space.scaleFactor, posterior: .sample, source: "test"))
        let network = try spec.makeModel(generator: g)
        let latents = try space.encode(images, drawingFrom: RandomGenerator(seed: 4))
        XCTAssertEqual(latents.shape, [2, 3, 4, 4])
        let before = try network.trainableParameters()[0].value.toArray()
        let optimizer = Adam([ParameterGroup(network.trainableParameters())], learningRate: 1e-3)
        let (loss, _) = try DiffusionPretraining(spec.recipe.configuration).step(network, x0: latents, optimizer: optimizer, ema: nil,
                                                                                  generator: RandomGenerator(seed: 5))
        XCTAssertTrue(loss.isFinite && loss > 0, "loss \(loss)")
        XCTAssertNotEqual(try network.trainableParameters()[0].value.toArray(), before)

        let directory = try Support.temporaryDirectory()
        try writeRun(spec, model: network, to: directory)
        try autoencoder.saveWithPreset(to: (directory as NSString).appendingPathComponent(DiffusionRun.autoencoderFileName))
        let run = try DiffusionRun.load(directory)
        XCTAssertEqual(run.imageMultiple, 16, "the UNet's 4 times the autoencoder's 4")
        let samples = try run.sample(count: 2, size: 16, sampler: .ddim(steps: 3, eta: 0), seed: 1)
        XCTAssertEqual(samples.shape, [2, 3, 16, 16])
        XCTAssertTrue(try samples.toArray().allSatisfy(\.isFinite))
        XCTAssertEqual(try run.modelInput(images).toArray(), try space.encodeMean(images).toArray())
        XCTAssertThrowsError(try run.sample(count: 1, size: 8, sampler: .ddim(steps: 2, eta: 0), seed: 0))
        XCTAssertThrowsError(try AutoencoderKL(Support.tiny, generator: g).saveWithPreset(to: directory + "/tiny.safetensors"))
    }
}

import Foundation
import XCTest
import HistoCore
import HistoData
import HistoDiffusion
import HistoNN
@testable import HistoMethods

/// DTSeg's two methods around the decoder and head (`UNetFormerTests` checks those against PyTorch): the frozen
/// features, training, the cards that rebuild the runs, and the messages for runs that do not fit.
final class DTSegTests: XCTestCase {
    /// F₁, F₂, F₃ are output blocks 7, 8 and 9, each concatenated over the timesteps in order and resized
    /// bilinearly to the input: the same numbers as the feature extractor's own resize-then-group path.
    func testFeaturesAreBlocksSevenToNineConcatenatedOverTimesteps() throws {
        let run = try PathSegDiffTests.tinyRun()
        let features = try DTSegFeatures(run: run, timesteps: [50, 150, 250], noiseSeed: nil)
        XCTAssertEqual(features.channels, [24, 24, 24])
        let images = try RandomGenerator(seed: 4).uniform([2, 3, 64, 96], -1, 1).materialized()
        let maps = try features(images)
        let latents = try XCTUnwrap(run.latentSpace).encodeMean(images)
        let extractor = try run.featureExtractor(blocks: DTSegFeatures.blocks, timesteps: [50, 150, 250],
                                                 outputSize: [64, 96])
        let expected = try extractor(latents)
        for (index, block) in DTSegFeatures.blocks.enumerated() {
            XCTAssertEqual(maps[index].shape, [2, 24, 64, 96], block)
            XCTAssertLessThan(relativeError(try maps[index].toArray(), try expected.block(block).toArray()), 1e-5,
                              block)
        }
        let noised = try DTSegFeatures(run: run, timesteps: [50], noiseSeed: 7)(images)
        XCTAssertGreaterThan(relativeError(try noised[0].toArray(), try maps[0].slice(axis: 1, start: 0, end: 8)
            .toArray()), 1e-3, "z_t differs from the clean latent")
    }

    /// A dtseg run and a supervised arch=fpn run of 64² images, one step each: the frozen inputs of dtseg-collab.
    static func writeFrozenRuns(data: String, to root: String) throws -> [String: String] {
        let latentRun = try PathSegDiffTests.writeLatentRun(to: root + "/ldm")
        for (method, options) in [("dtseg", ["model": latentRun]), ("supervised", ["arch": "fpn"])] {
            var request = TrainingRequest(method: method, data: data, directory: root + "/" + method)
            request.methodOptions = options
            request.labels = "1/1"
            request.validation = "1/4"
            request.patch = 64
            request.batch = 2
            request.iterations = 1
            request.progress = .none
            _ = try MethodTraining.run(request)
        }
        return ["dtseg": root + "/dtseg", "fpn": root + "/supervised"]
    }

    /// dtseg trains only its decoder and dtseg-collab only its head; each run segments again through its card
    /// (the frozen runs reloaded from the paths the card records), and `{cell}` names an experiment's own run.
    func testTrainingBothStagesAndReloadingThemThroughTheirCards() throws {
        let root = try temporaryFolder().path
        let dataset = try syntheticDataset(count: 4, size: 64)
        let options = try Self.writeFrozenRuns(data: dataset.root, to: root)
        let dtseg = try TrainedModel(path: options["dtseg"]!)
        let decoder = try XCTUnwrap(dtseg.network as? DTSegSegmenter).decoder
        XCTAssertEqual(dtseg.card.dtseg?.timesteps, [50, 150, 250])
        XCTAssertNil(dtseg.card.dtseg?.noiseSeed)
        XCTAssertEqual(Set(dtseg.network.parameters().map(\.name)),
                       Set(decoder.parameters().map { "decoder." + $0.name }))

        var request = TrainingRequest(method: "dtseg-collab", data: dataset.root, directory: root + "/collab")
        request.methodOptions = options
        request.labels = "1/1"
        request.validation = "1/4"
        request.patch = 64
        request.batch = 2
        request.iterations = 2
        request.progress = .none
        let result = try MethodTraining.run(request)
        let segmenter = try XCTUnwrap(result.model as? CollaborativeSegmenter)
        XCTAssertEqual(Set(segmenter.parameters().map(\.name)),
                       Set(segmenter.head.parameters().map { "head." + $0.name }))
        XCTAssertEqual(segmenter.head.configuration.dtsegChannels, decoder.featureChannels)
        let loaded = try TrainedModel(path: root + "/collab")
        let x = try RandomGenerator(seed: 9).uniform([1, 3, 64, 96], -1, 1).materialized()
        XCTAssertEqual(try loaded.network(x).toArray(), try result.model(x).toArray())

        var plan = TrainingPlan(labelRatio: try Ratio("1/10"), validationRatio: try Ratio("1/5"))
        plan.seed = 2
        XCTAssertEqual(Experiment.resolvingCell("E/runs/dtseg/{cell}", plan: plan), "E/runs/dtseg/labels-1_10/seed-2")
    }

    /// Runs that do not fit say so in one line naming the option or the file.
    func testMisfittingRunsAreRefusedWithTheReason() throws {
        let root = try temporaryFolder().path
        let dataset = try syntheticDataset(count: 4, size: 64)
        func message(_ method: String, _ options: [String: String], preset: String = "cpu") -> String {
            var request = TrainingRequest(method: method, data: dataset.root, directory: root + "/refused")
            request.methodOptions = options
            request.preset = preset
            request.iterations = 1
            request.progress = .none
            do { _ = try MethodTraining.run(request) } catch { return "\(error)" }
            return "accepted"
        }
        XCTAssertTrue(message("dtseg", [:]).contains("needs --option model=RUN"))
        let latentRun = try PathSegDiffTests.writeLatentRun(to: root + "/ldm")
        XCTAssertTrue(message("dtseg", ["model": latentRun], preset: "paper").contains("use preset cpu"))
        XCTAssertTrue(message("dtseg", ["model": latentRun, "timesteps": "50,x"]).contains("timesteps=50,x"))
        XCTAssertTrue(message("dtseg-collab", ["dtseg": latentRun]).contains("needs --option dtseg=RUN"))
        let unet = root + "/unet"
        var request = TrainingRequest(method: "supervised", data: dataset.root, directory: unet)
        (request.patch, request.iterations, request.progress) = (64, 1, .none)
        _ = try MethodTraining.run(request)
        let refused = message("dtseg-collab", ["dtseg": unet, "fpn": unet])
        XCTAssertTrue(refused.contains("is a unet run, not a dtseg run"), refused)
    }
}

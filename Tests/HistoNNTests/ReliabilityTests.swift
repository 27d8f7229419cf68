import Foundation
import XCTest
import HistoCore
@testable import HistoNN

/// Weights are checked before they are saved, step memory is estimated before it is allocated, and Foundation's
/// file errors read as one line.
final class ReliabilityTests: XCTestCase {
    /// The bytes of every file in `directory`, by name.
    func contents(of directory: String) throws -> [String: Data] {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
        return try Dictionary(uniqueKeysWithValues: names.map {
            ($0, try Data(contentsOf: URL(fileURLWithPath: directory + "/" + $0)))
        })
    }

    func testNonFiniteWeightsAreNeverSavedAndTheLastGoodCheckpointStays() throws {
        let root = try temporaryDirectory()
        let model = Linear(3, 2, generator: RandomGenerator(seed: 1))
        let optimizer = Adam([ParameterGroup(model.trainableParameters())], learningRate: 0.1)
        let checkpoint = root + "/checkpoint"
        try TrainingCheckpoint.replace(checkpoint, model: model, step: 1, components: ["optimizer": optimizer])
        let saved = try contents(of: checkpoint)

        var weights = try model.weight.values()
        weights[4] = .nan
        model.weight.assign(weights)
        assertFileError(checkpoint, contains: ["checkpoint of step 2 not saved",
                                               "model tensor weight holds 1 NaN of 6 values",
                                               "the last good checkpoint \(checkpoint) is kept"]) {
            try TrainingCheckpoint.replace(checkpoint, model: model, step: 2, components: ["optimizer": optimizer])
        }
        XCTAssertEqual(try contents(of: checkpoint), saved)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: root), ["checkpoint"])
        assertFileError(root + "/fresh", contains: ["there is no earlier checkpoint"]) {
            try TrainingCheckpoint.replace(root + "/fresh", model: model, step: 2, components: [:])
        }

        let file = root + "/model.safetensors"
        model.weight.assign([Float](repeating: 0.5, count: 6))
        try model.save(to: file)
        let good = try Data(contentsOf: URL(fileURLWithPath: file))
        model.bias!.assign([.infinity, -.infinity])
        assertFileError(file, contains: ["not saved: tensor bias holds 2 infinite of 2 values",
                                         "the file already there is kept"]) {
            try model.save(to: file)
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: file)), good)
    }

    /// A component's tensors are checked too, and named with their component.
    func testNonFiniteOptimizerStateIsNamedWithItsComponent() throws {
        let model = Linear(2, 1, generator: RandomGenerator(seed: 2))
        let optimizer = Adam([ParameterGroup(model.trainableParameters())], learningRate: 0.1)
        var gradients = Gradients()
        try gradients.set([1e30, 1e30], for: model.weight)
        try gradients.set([0], for: model.bias!)
        try optimizer.step(gradients)  // the weights stay finite, but Adam's v = (1 − β2) g² overflows to infinity
        XCTAssertTrue(try model.weight.values().allSatisfy(\.isFinite))
        let directory = try temporaryDirectory() + "/checkpoint"
        assertFileError(directory, contains: ["optimizer tensor exp_avg_sq/", "infinite"]) {
            try TrainingCheckpoint.save(to: directory, model: model, step: 1, components: ["optimizer": optimizer])
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory))
    }

    func testStepMemoryEstimateCountsTheRecordedGraphAndNamesWhatFits() throws {
        let input = StepMemoryEstimate.input(shape: [10, 4])
        // The input, its product with a constant (realised: not counted), the relu, the reshape (a view: not
        // counted) and the sum.
        let values = (input * Tensor(scalar: 2)).relu().reshape([40]).sum()
        XCTAssertEqual(StepMemoryEstimate.computedBytes(of: values), 4 * (40 + 40 + 40 + 1))
        let model = Linear(4, 8, generator: RandomGenerator(seed: 3))
        let loss = model(input).relu().sum()
        let estimate = StepMemoryEstimate(model: model, extraWeightCopies: 1, batch: 10, loss: loss)
        XCTAssertEqual(estimate.weightBytes, 4 * 40)
        XCTAssertEqual(estimate.totalBytes, 5 * 160 + estimate.activationBytes)
        XCTAssertEqual(estimate.largestBatch(within: estimate.totalBytes), 10)
        XCTAssertNoThrow(try estimate.check(patch: 4, limit: estimate.totalBytes))
        do {
            try estimate.check(patch: 4, limit: 5 * 160 + 5 * (estimate.activationBytes / 10))
            XCTFail("expected a refusal")
        } catch let EngineError.invalidValue(_, message) {
            XCTAssertTrue(message.contains("one training step at batch 10 of 4×4 patches needs about 0 MB"), message)
            XCTAssertTrue(message.contains("the largest batch that fits is 5 (--batch)"), message)
        }
        do {
            try estimate.check(patch: 64, patchMultiple: 8, limit: 5 * 160 + estimate.activationBytes / 40 + 10)
            XCTFail("expected a refusal")
        } catch let EngineError.invalidValue(_, message) {
            // One sample takes 1/10 of the activations; 1/40 of them allows half the side: 32.
            XCTAssertTrue(message.contains("at batch 1 the largest patch that fits is about 32 (--patch)"), message)
        }
        XCTAssertThrowsError(try input.eval()) { XCTAssertTrue("\($0)".contains("shape-only input"), "\($0)") }
    }

    func testFoundationFileErrorsReadAsOneLineNamingThePath() throws {
        let root = try temporaryDirectory()
        let file = root + "/file"
        try "x".write(toFile: file, atomically: true, encoding: .utf8)
        do {
            try FileManager.default.createDirectory(atPath: file + "/sub", withIntermediateDirectories: true)
            XCTFail("expected an error")
        } catch {
            XCTAssertEqual(FileSystem.describe(error), "\(file)/sub: Not a directory")
        }
        XCTAssertNil(FileSystem.describe(EngineError.file(path: file, message: "x")))
        assertFileError(file, contains: ["is a file, not a folder; choose another output folder"]) {
            try FileSystem.createFolder(file, purpose: "output")
        }
        assertFileError(file + "/sub", contains: ["cannot create the run folder: Not a directory"]) {
            try FileSystem.createFolder(file + "/sub", purpose: "run")
        }
    }
}

import Foundation
import XCTest
import HistoCore
@testable import HistoNN

private final class TinyRegressor: Module {
    let hidden: Linear
    let dropout: Dropout
    let output: Linear

    init(seed: UInt64, dropoutGenerator: RandomGenerator) {
        let g = RandomGenerator(seed: seed)
        hidden = Linear(3, 6, generator: g)
        dropout = Dropout(0.3, generator: dropoutGenerator)
        output = Linear(6, 2, generator: g)
        super.init()
    }

    func callAsFunction(_ x: Tensor) -> Tensor { output(dropout(hidden(x).relu())) }
}

/// The same layers under other names: a checkpoint of `TinyRegressor` does not fit it.
private final class RenamedRegressor: Module {
    let hidden: Linear
    let head: Linear

    override init() {
        let g = RandomGenerator(seed: 0)
        hidden = Linear(3, 6, generator: g)
        head = Linear(6, 2, generator: g)
        super.init()
    }
}

private final class TextSink { var text = "" }

/// A tiny model trained with Adam, dropout and a cosine schedule; each step's data is drawn from its index.
private final class Trainer {
    let dropoutGenerator = RandomGenerator(seed: 77)
    let model: TinyRegressor
    let optimizer: Adam
    let run: TrainingRun
    let output = TextSink()
    let schedule = CosineSchedule(base: 0.05, totalSteps: 8)
    var losses: [Float] = []
    /// Where the forward and backward run (the default backend when nil).
    var backend: (any Backend)?

    init(directory: String, initSeed: UInt64, checkpointEvery: Int = 3,
         configure: (inout TrainingRun.Options) -> Void = { _ in }) throws {
        model = TinyRegressor(seed: initSeed, dropoutGenerator: dropoutGenerator)
        optimizer = Adam([ParameterGroup(model.trainableParameters())], learningRate: 0.05)
        var options = TrainingRun.Options(totalSteps: 8, checkpointEvery: checkpointEvery)
        options.label = "tiny"
        options.resumeHint = "rerun with --resume"
        options.progress = .custom(terminal: false) { [output] in output.text += $0 }
        configure(&options)
        run = try TrainingRun(directory: directory, model: model,
                              components: ["optimizer": optimizer, "dropout": dropoutGenerator], options: options)
    }

    func step(_ index: Int) throws -> StepReport {
        let data = RandomGenerator(seed: 1000 + UInt64(index))
        let x = data.normal([5, 3]), y = data.normal([5, 2])
        let (loss, gradients) = try Gradients.of((model(x) - y).square().mean(), wrt: model.trainableParameters(), on: backend)
        optimizer.learningRate = schedule.learningRate(at: index)
        try optimizer.step(gradients)
        losses.append(loss)
        return StepReport(loss: loss, learningRate: optimizer.learningRate)
    }

    func parameterBits() throws -> [[UInt32]] { try model.parameters().map { bits(try $0.parameter.values()) } }
}

private struct SimulatedCrash: Error {}

/// Stands in for a device that fails mid-run (out of resources, device lost): computes on the CPU until told to
/// fail, then throws from its next execution the error a device backend throws.
private final class FailingBackend: Backend {
    let name = "failing"
    var failsNextExecution = false

    func supports(_ op: any HistoCore.Operation) -> Bool { true }
    func allocate(elementCount: Int) throws -> any BackendBuffer { try CPUBackend.shared.allocate(elementCount: elementCount) }
    func read(_ buffer: any BackendBuffer, offset: Int, count: Int, into destination: UnsafeMutablePointer<Float>) throws {
        try CPUBackend.shared.read(buffer, offset: offset, count: count, into: destination)
    }
    func upload(_ source: UnsafePointer<Float>, count: Int) throws -> any BackendBuffer {
        try CPUBackend.shared.upload(source, count: count)
    }
    func execute(_ split: GraphSplit) throws {
        if failsNextExecution {
            throw EngineError.backend(name: "failing", message: "waiting for the queue (after kernel matmul): CL_OUT_OF_RESOURCES")
        }
        try CPUBackend.shared.execute(split)
    }
}

final class TrainingRunTests: XCTestCase {
    private func metricsPath(_ directory: String) -> String { directory + "/" + TrainingRun.metricsFileName }

    /// Eight steps without a break.
    private func uninterrupted() throws -> Trainer {
        let trainer = try Trainer(directory: try temporaryDirectory(), initSeed: 1)
        XCTAssertEqual(try trainer.run.train(trainer.step), .completed)
        return trainer
    }

    func testResumingAfterSIGINTRepeatsTheUninterruptedRunBitForBit() throws {
        let straight = try uninterrupted()
        XCTAssertTrue(straight.output.text.contains("tiny: finished 8/8 steps (8 steps in"), straight.output.text)

        let dir = try temporaryDirectory()
        let first = try Trainer(directory: dir, initSeed: 1)
        let outcome = try first.run.train { index in
            let report = try first.step(index)
            if index == 3 { raise(SIGINT) }
            return report
        }
        XCTAssertEqual(outcome, .interrupted(signal: SIGINT))
        XCTAssertEqual(first.run.step, 4)
        XCTAssertTrue(first.output.text.contains("tiny: stopped by SIGINT after step 4/8"), first.output.text)
        XCTAssertTrue(first.output.text.contains("checkpoint saved in \(dir)/checkpoint; rerun with --resume"), first.output.text)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).sorted(), ["checkpoint", "metrics.csv"])

        // A different initialisation: everything must come back from the checkpoint.
        let second = try Trainer(directory: dir, initSeed: 2)
        XCTAssertEqual(try second.run.resume(), 4)
        XCTAssertEqual(second.dropoutGenerator.offset, first.dropoutGenerator.offset)
        XCTAssertEqual(try second.run.train(second.step), .completed)

        XCTAssertEqual(bits(first.losses + second.losses), bits(straight.losses))
        XCTAssertEqual(try second.parameterBits(), try straight.parameterBits())
        let straightAdam = try straight.optimizer.checkpointState(), resumedAdam = try second.optimizer.checkpointState()
        XCTAssertEqual(straightAdam.metadata, resumedAdam.metadata)
        for (key, t) in straightAdam.tensors { XCTAssertEqual(bits(t.values), bits(resumedAdam.tensors[key]!.values), key) }

        let log = try MetricsLog.read(path: metricsPath(dir))
        XCTAssertEqual(log.columns, ["step", "loss", "lr", "seconds"])
        XCTAssertEqual(try log.series("loss").map(\.step), Array(1...8))
        XCTAssertEqual(try log.series("loss").map { Float($0.value).bitPattern }, bits(straight.losses))
        XCTAssertEqual(try log.series("lr").map { Float($0.value) }, (0..<8).map { straight.schedule.learningRate(at: $0) })
        let seconds = try log.series("seconds").map(\.value)
        XCTAssertEqual(seconds, seconds.sorted(), "seconds continue across the resume")
    }

    func testResumingAfterACrashDropsTheRowsWrittenAfterTheCheckpoint() throws {
        let straight = try uninterrupted()
        let dir = try temporaryDirectory()
        let crashed = try Trainer(directory: dir, initSeed: 1, checkpointEvery: 4)
        XCTAssertThrowsError(try crashed.run.train { index in
            if index == 5 { throw SimulatedCrash() }
            return try crashed.step(index)
        }) { XCTAssert($0 is SimulatedCrash) }
        // Steps 1–5 are logged, the checkpoint is at step 4; the process also died writing row 6.
        XCTAssertEqual(try MetricsLog.read(path: metricsPath(dir)).rows.count, 5)
        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: metricsPath(dir)))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data("6,0.12".utf8))
        try handle.close()

        let resumed = try Trainer(directory: dir, initSeed: 3, checkpointEvery: 4)
        XCTAssertEqual(try resumed.run.resume(), 4)
        XCTAssertEqual(try resumed.run.train(resumed.step), .completed)
        let losses = try MetricsLog.read(path: metricsPath(dir)).series("loss")
        XCTAssertEqual(losses.map(\.step), Array(1...8))
        XCTAssertEqual(losses.map { Float($0.value).bitPattern }, bits(straight.losses))
        XCTAssertEqual(try resumed.parameterBits(), try straight.parameterBits())
    }

    func testABackendErrorMidRunLeavesTheCheckpointLoadableAndTheRunResumable() throws {
        let straight = try uninterrupted()
        let dir = try temporaryDirectory(), device = FailingBackend()
        let failed = try Trainer(directory: dir, initSeed: 1, checkpointEvery: 4)
        failed.backend = device
        XCTAssertThrowsError(try failed.run.train { index in
            if index == 5 { device.failsNextExecution = true }
            return try failed.step(index)
        }) { error in
            guard case let EngineError.backend(name, message) = error else { return XCTFail("unexpected error \(error)") }
            XCTAssertEqual(name, "failing")
            XCTAssert(message.contains("CL_OUT_OF_RESOURCES"), message)
        }
        XCTAssertEqual(failed.run.step, 5)
        XCTAssertNotNil(failed.run.latestCheckpoint)

        // The checkpoint of step 4 restores a differently initialised model, and the run finishes on a working
        // backend exactly as the uninterrupted one did.
        let resumed = try Trainer(directory: dir, initSeed: 3, checkpointEvery: 4)
        XCTAssertEqual(try resumed.run.resume(), 4)
        XCTAssertEqual(try resumed.run.train(resumed.step), .completed)
        XCTAssertEqual(try resumed.parameterBits(), try straight.parameterBits())
        XCTAssertEqual(try MetricsLog.read(path: metricsPath(dir)).series("loss").map(\.step), Array(1...8))
    }

    func testBestCheckpointKeepsTheBestValidationScoreAcrossAResume() throws {
        let scores = [0.5, 0.7, 0.6, 0.65]  // measured after steps 2, 4, 6, 8
        func trainer(_ dir: String, seed: UInt64) throws -> Trainer {
            try Trainer(directory: dir, initSeed: seed) {
                $0.columns = ["val_dice"]
                $0.best = TrainingRun.BestCheckpoint(column: "val_dice", higherIsBetter: true)
            }
        }
        func step(_ trainer: Trainer, _ index: Int) throws -> StepReport {
            var report = try trainer.step(index)
            if index % 2 == 1 { report.values["val_dice"] = scores[index / 2] }
            return report
        }
        let dir = try temporaryDirectory()
        let first = try trainer(dir, seed: 1)
        var bestAfterStep4: [[UInt32]] = []
        let outcome = try first.run.train { index in
            let report = try step(first, index)
            if index == 3 { bestAfterStep4 = try first.parameterBits() }
            if index == 4 { raise(SIGTERM) }
            return report
        }
        XCTAssertEqual(outcome, .interrupted(signal: SIGTERM))
        XCTAssertEqual(first.run.best?.value, 0.7)
        XCTAssertEqual(first.run.best?.step, 4)
        XCTAssertTrue(first.output.text.contains("best val_dice 0.7 after step 4; checkpoint saved"), first.output.text)

        let second = try trainer(dir, seed: 2)
        XCTAssertEqual(try second.run.resume(), 5)
        XCTAssertEqual(second.run.best?.step, 4, "the best score so far comes back with the checkpoint")
        XCTAssertEqual(try second.run.train { try step(second, $0) }, .completed)
        XCTAssertEqual(second.run.best?.value, 0.7)
        XCTAssertTrue(second.output.text.contains("best val_dice 0.7 after step 4"), second.output.text)

        let reloaded = try trainer(try temporaryDirectory(), seed: 3)
        let best = try XCTUnwrap(second.run.bestWeights)
        XCTAssertEqual(best, dir + "/best.safetensors")
        try reloaded.model.load(from: best)
        XCTAssertEqual(try SafeTensors.read(best).metadata["run.best_step"], "4")
        XCTAssertEqual(try reloaded.parameterBits(), bestAfterStep4)
        let scoresLogged = try MetricsLog.read(path: metricsPath(dir)).series("val_dice")
        XCTAssertEqual(scoresLogged.map(\.step), [2, 4, 6, 8])
        XCTAssertEqual(scoresLogged.map(\.value), scores)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).sorted(),
                       ["best.safetensors", "checkpoint", "metrics.csv"])
    }

    /// A NaN loss or a NaN value of a finite column ends the run naming the step and the column; the checkpoint
    /// stays the last good one.
    func testNonFiniteLossEndsTheRunKeepingTheLastCheckpoint() throws {
        for (column, poison) in [("loss", { (report: inout StepReport) in report.loss = .infinity }),
                                 ("term", { (report: inout StepReport) in report.values["term"] = .nan })] {
            let dir = try temporaryDirectory()
            let trainer = try Trainer(directory: dir, initSeed: 1, checkpointEvery: 2) {
                $0.columns = ["term"]
                $0.finiteColumns = ["term"]
            }
            XCTAssertThrowsError(try trainer.run.train { index in
                var report = try trainer.step(index)
                report.values["term"] = 1
                if index == 4 { poison(&report) }
                return report
            }) { error in
                XCTAssertTrue("\(error)".contains("step 5: \(column) is"), "\(error)")
                XCTAssertTrue("\(error)".contains("the checkpoint of step 4"), "\(error)")
            }
            XCTAssertEqual(trainer.run.savedStep, 4)
            let checkpoint = try XCTUnwrap(trainer.run.latestCheckpoint)
            XCTAssertEqual(try SafeTensors.read(checkpoint + "/model.safetensors").metadata["histodiff.step"], "4")
        }
    }

    func testEarlyStopSavesTheCheckpoint() throws {
        let dir = try temporaryDirectory()
        let trainer = try Trainer(directory: dir, initSeed: 1, checkpointEvery: 0)
        let outcome = try trainer.run.train { index in
            var report = try trainer.step(index)
            report.stop = index == 2
            return report
        }
        XCTAssertEqual(outcome, .stoppedEarly)
        XCTAssertTrue(trainer.output.text.contains("stopped early after step 3/8"), trainer.output.text)
        let resumed = try Trainer(directory: dir, initSeed: 1)
        XCTAssertEqual(try resumed.run.resume(), 3)
        XCTAssertEqual(resumed.run.resumedMetadata, [:])
    }

    func testResumingACheckpointOfAnotherModelNamesTheMismatchedTensors() throws {
        let dir = try temporaryDirectory()
        let trainer = try Trainer(directory: dir, initSeed: 1)
        XCTAssertEqual(try trainer.run.train(trainer.step), .completed)

        let other = RenamedRegressor()
        let optimizer = Adam([ParameterGroup(other.trainableParameters())])
        let run = try TrainingRun(directory: dir, model: other, components: ["optimizer": optimizer, "dropout": RandomGenerator(seed: 77)],
                                  options: TrainingRun.Options(totalSteps: 8, checkpointEvery: 3))
        assertFileError(dir + "/checkpoint/" + TrainingCheckpoint.weightsFileName,
                        contains: ["cannot resume the run", "2 missing: head.weight, head.bias", "2 unknown: output.bias, output.weight"]) {
            try run.resume()
        }
    }

    func testMisuseIsReported() throws {
        let dir = try temporaryDirectory()
        let trainer = try Trainer(directory: dir, initSeed: 1)
        XCTAssertEqual(try trainer.run.train(trainer.step), .completed)

        // A second run into the same directory must resume, not overwrite.
        let again = try Trainer(directory: dir, initSeed: 1)
        assertFileError(dir + "/checkpoint", contains: ["already holds a checkpoint"]) { try again.run.train(again.step) }

        // A log written with other columns is not appended to.
        let logged = try Trainer(directory: dir, initSeed: 1) { $0.columns = ["grad_norm"] }
        try logged.run.resume()
        assertFileError(metricsPath(dir), contains: ["has columns step,loss,lr,seconds but this run logs step,loss,lr,seconds,grad_norm"]) {
            try logged.run.train(logged.step)
        }

        // Values for undeclared columns.
        let fresh = try Trainer(directory: try temporaryDirectory(), initSeed: 1)
        XCTAssertThrowsError(try fresh.run.train { index in
            var report = try fresh.step(index)
            report.values["grad_norm"] = 1
            return report
        }) { XCTAssertTrue("\($0)".contains("columns that were not declared: grad_norm"), "\($0)") }

        let model = TinyRegressor(seed: 1, dropoutGenerator: RandomGenerator(seed: 0))
        var options = TrainingRun.Options(totalSteps: 0, checkpointEvery: -1)
        options.columns = ["loss", "a,b"]
        options.best = TrainingRun.BestCheckpoint(column: "val", higherIsBetter: true)
        options.metadata = ["run.seconds": "1"]
        XCTAssertThrowsError(try TrainingRun(directory: try temporaryDirectory(), model: model, components: [:], options: options)) { error in
            for fragment in ["totalSteps 0 is below 1", "checkpointEvery -1 is negative", "without commas", "columns appear twice",
                             "best-checkpoint column val", "metadata keys run.seconds are reserved"] {
                XCTAssertTrue("\(error)".contains(fragment), "\(error) lacks \(fragment)")
            }
        }
    }

    func testProgressLinesAreRateLimitedAndFormatted() {
        var now = 100.0
        let lines = TextSink()
        let reporter = ProgressReporter(total: 10, label: "pretrain", startStep: 2, output: .custom(terminal: false) { lines.text += $0 },
                                        interval: 0.5, clock: { now })
        reporter.update(step: 3, values: [("loss", 0.25)])
        now += 0.2
        reporter.update(step: 4, values: [("loss", 0.2)])
        now += 0.4
        reporter.update(step: 5, values: [("loss", 0.125), ("lr", 1.5e-5)])
        now += 10
        reporter.update(step: 6)
        reporter.message("done")
        XCTAssertEqual(lines.text.split(separator: "\n"), [
            "pretrain  step 3/10  loss 0.25",
            "pretrain  step 5/10  loss 0.125  lr 1.5e-05  5.00 it/s  ETA 1s",
            "pretrain  step 6/10  2.65 s/it  ETA 11s",
            "pretrain: done",
        ])
        XCTAssertEqual(reporter.summary(step: 6), "4 steps in 11s, 0.38 it/s")

        let screen = TextSink()
        let terminal = ProgressReporter(total: 4, output: .custom(terminal: true) { screen.text += $0 }, interval: 0.5, clock: { now })
        terminal.update(step: 1)
        terminal.message("saved")
        terminal.message("finished")
        XCTAssertEqual(screen.text, "\rstep 1/4\u{1B}[K\r\u{1B}[Ksaved\nfinished\n")

        XCTAssertEqual([5, 59.6, 245, 7620].map(ProgressReporter.duration), ["5s", "1m00s", "4m05s", "2h07m"])
    }
}

import Foundation
import XCTest
import HistoCore
import HistoData
import HistoNN

/// Issue 19 on the built `histodiff` under `mpirun -np 2`: data-parallel pretraining of the `cpu` GenSelfDiff
/// U-Net (GroupNorm, so no per-rank BatchNorm statistics) ends where one process ends, its checkpoints resume on
/// one and on two ranks, and a rank that fails or disagrees ends the job with its message.
final class DataParallelTests: XCTestCase {
    /// Largest weight difference allowed between 2 ranks and 1 process after 5 Adam steps at lr 1e-3: the
    /// ranks sum each shard's gradient in another order (measured: 6.6e-7); a step that trained on one shard's
    /// gradient, or dropped a shard, moves weights by ~1e-3.
    static let tolerance: Float = 1e-5

    /// `mpirun`, or a skip saying how to get it.
    func mpirun() throws -> URL {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for folder in path.split(separator: ":") {
            let candidate = URL(fileURLWithPath: String(folder)).appendingPathComponent("mpirun")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        throw XCTSkip("mpirun is not installed (tools/install-deps.sh installs Open MPI: openmpi-bin)")
    }

    /// A synthetic dataset of four 64² tiles, in a fresh folder.
    func dataset() throws -> (root: String, data: String) {
        let root = try temporaryFolder().path
        try SyntheticHistology.makeDataset(at: root + "/data", count: 4, size: 64, seed: 3)
        return (root, root + "/data")
    }

    /// Tiny v-cosine pretraining (batch mean, gradients clipped at norm 1): 32² patches, global batch 8.
    func pretrain(data: String, out: String, steps: Int, _ extra: [String] = []) -> [String] {
        ["pretrain", "--data", data, "--out", out, "--patch", "32", "--batch", "8", "--samples", "1",
         "--recipe", "v-cosine", "--lr", "1e-3", "--steps", String(steps), "--checkpoint-every", "0"] + extra
    }

    /// Runs `histodiff` on `ranks` ranks (each given its own arguments: MPMD when they differ); fails the test
    /// after 120 s instead of hanging.
    func launch(ranks: [[String]]) throws -> (status: Int32, output: String) {
        let tool = try commandLineTool()
        let process = Process()
        process.executableURL = try mpirun()
        process.arguments = ["--oversubscribe", "--allow-run-as-root"]
            + ranks.enumerated().flatMap { i, arguments in (i == 0 ? [] : [":"]) + ["-np", "1", tool.path] + arguments }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let watchdog = DispatchWorkItem { if process.isRunning { process.terminate() } }
        DispatchQueue.global().asyncAfter(deadline: .now() + 120, execute: watchdog)
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        watchdog.cancel()
        XCTAssertNotEqual(process.terminationReason, .uncaughtSignal, "the job hung and was terminated:\n\(output)")
        return (process.terminationStatus, output)
    }

    /// The largest difference between the tensors of two safetensors files with the same names.
    func largestDifference(_ a: String, _ b: String) throws -> Float {
        let first = try SafeTensors.read(a), second = try SafeTensors.read(b)
        XCTAssertEqual(first.names.sorted(), second.names.sorted())
        return first.tensors.reduce(0) { largest, entry in
            let other = second.tensors[entry.key]?.values ?? []
            return zip(entry.value.values, other).reduce(largest) { max($0, abs($1.0 - $1.1)) }
        }
    }

    func weights(_ run: String) -> String { run + "/checkpoint/" + TrainingCheckpoint.weightsFileName }

    func testTwoRanksEndWithTheWeightsOfOneProcessAndTheirCheckpointResumesOnOneAndTwo() throws {
        let (root, data) = try dataset()
        let alone = try launch(ranks: [pretrain(data: data, out: root + "/alone", steps: 5)])
        XCTAssertEqual(alone.status, 0, alone.output)
        let pair = try launch(ranks: Array(repeating: pretrain(data: data, out: root + "/pair", steps: 5), count: 2))
        XCTAssertEqual(pair.status, 0, pair.output)
        XCTAssertEqual(pair.output.components(separatedBy: "finished 5/5 steps").count, 2,
                       "rank 0 alone reports progress:\n\(pair.output)")
        XCTAssertLessThanOrEqual(try largestDifference(weights(root + "/alone"), weights(root + "/pair")),
                                 Self.tolerance)
        let losses = try [root + "/alone", root + "/pair"].map {
            try MetricsLog.read(path: $0 + "/" + TrainingRun.metricsFileName).series("loss").map(\.value)
        }
        XCTAssertEqual(losses[1].count, 5)
        for (one, two) in zip(losses[0], losses[1]) { XCTAssertEqual(one, two, accuracy: 1e-5) }

        // Three steps on two ranks, then the last two on one and on two.
        let first = try launch(ranks: Array(repeating: pretrain(data: data, out: root + "/split", steps: 3), count: 2))
        XCTAssertEqual(first.status, 0, first.output)
        for (name, count) in [("one", 1), ("two", 2)] {
            let run = root + "/resumed-" + name
            try FileManager.default.copyItem(atPath: root + "/split", toPath: run)
            let resumed = try launch(ranks: Array(repeating: pretrain(data: data, out: run, steps: 5), count: count))
            XCTAssertEqual(resumed.status, 0, resumed.output)
            XCTAssertTrue(resumed.output.contains("resuming from step 3 of 5"), resumed.output)
            XCTAssertLessThanOrEqual(try largestDifference(weights(root + "/alone"), weights(run)), Self.tolerance,
                                     "resumed on \(count)")
        }
    }

    /// The method layer on two ranks: the supervised U-Net (BatchNorm per rank) trains, rank 0 validates and
    /// alone writes the folder.
    func testTwoRanksTrainAMethodOfTheRegistry() throws {
        let (root, data) = try dataset()
        let run = ["train", "--method", "supervised", "--data", data, "--out", root + "/run", "--labels", "3",
                   "--validation", "1", "--iterations", "2", "--batch", "4", "--patch", "32", "--crops-per-image", "2"]
        let result = try launch(ranks: [run, run])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertEqual(result.output.components(separatedBy: "best validation score").count, 2, result.output)
        let log = try MetricsLog.read(path: root + "/run/" + TrainingRun.metricsFileName)
        XCTAssertEqual(try log.series("val_dice").map(\.step), [2])
    }

    func testARankThatFailsEndsTheJobWithItsMessage() throws {
        let (root, data) = try dataset()
        let good = pretrain(data: data, out: root + "/run", steps: 5)
        let bad = pretrain(data: root + "/nowhere", out: root + "/run", steps: 5)
        let result = try launch(ranks: [good, bad])
        XCTAssertNotEqual(result.status, 0, result.output)
        XCTAssertTrue(result.output.contains("histodiff rank 1 of 2: Error: \(root)/nowhere: no such dataset folder"),
                      result.output)
    }

    func testDifferentOptionsAnUnevenBatchOrACommandThatDoesNotTrainAreRefused() throws {
        let (root, data) = try dataset()
        let run = pretrain(data: data, out: root + "/run", steps: 5)
        let differing = try launch(ranks: [run, run + ["--seed", "1"]])
        XCTAssertNotEqual(differing.status, 0, differing.output)
        XCTAssertTrue(differing.output.contains("the 2 ranks do not agree on the options and initial model"),
                      differing.output)
        let uneven = try launch(ranks: Array(repeating: run + ["--batch", "3"], count: 2))
        XCTAssertNotEqual(uneven.status, 0, uneven.output)
        XCTAssertTrue(uneven.output.contains("--batch 3 is not divisible by the 2 ranks; give a multiple of 2"),
                      uneven.output)
        let synth = try launch(ranks: Array(repeating: ["synth", "--out", root + "/synth"], count: 2))
        XCTAssertNotEqual(synth.status, 0, synth.output)
        XCTAssertTrue(synth.output.contains("only pretrain, train and train-autoencoder run on several MPI ranks"),
                      synth.output)
    }
}

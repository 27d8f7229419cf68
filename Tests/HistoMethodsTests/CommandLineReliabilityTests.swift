import Foundation
import XCTest
import HistoCore
import HistoData
import HistoDiffusion
import HistoNN
@testable import HistoMethods

/// Issue 12 on the built `histodiff`: options in range, sizes that fit, weights that are finite, one run per folder,
/// one-line file errors, pretraining's resume and exit codes. Runs are tiny (32² patches, batch 2, 1 sample).
final class CommandLineReliabilityTests: XCTestCase {
    /// A dataset of four 64² synthetic images in a fresh folder, with the folder.
    func dataset() throws -> (root: String, data: String) {
        let root = try temporaryFolder().path
        try SyntheticHistology.makeDataset(at: root + "/data", count: 4, size: 64, seed: 3)
        return (root, root + "/data")
    }

    /// The top-left `width × height` of `image`.
    func topLeft(of image: Image, width: Int, height: Int) throws -> Image {
        let rowLength = image.width * image.channels
        let samples = (0..<height).flatMap { y in
            image.samples[(y * rowLength)..<(y * rowLength + width * image.channels)]
        }
        return try Image(width: width, height: height, channels: image.channels, bitDepth: image.bitDepth,
                         samples: samples)
    }

    /// `histodiff pretrain` of a tiny run: 32² patches, batch 2, one sample in the grids.
    func pretrainArguments(data: String, out: String, _ options: [String]) -> [String] {
        ["pretrain", "--data", data, "--out", out, "--patch", "32", "--batch", "2", "--samples", "1"] + options
    }

    func pretrain(_ tool: URL, data: String, out: String,
                  _ options: [String]) throws -> (status: Int32, output: String) {
        try launch(tool, pretrainArguments(data: data, out: out, options))
    }

    func assertRefused(_ result: (status: Int32, output: String), _ fragments: [String], status: Int32? = nil,
                       file: StaticString = #filePath, line: UInt = #line) {
        if let status { XCTAssertEqual(result.status, status, result.output, file: file, line: line) }
        XCTAssertNotEqual(result.status, 0, result.output, file: file, line: line)
        for fragment in fragments where !result.output.contains(fragment) {
            XCTFail("\"\(fragment)\" not in:\n\(result.output)", file: file, line: line)
        }
    }

    /// Rows 6, 7, 11: values out of range stop at parsing (exit 64) with what is allowed.
    func testOptionsOutOfRangeAreRefusedSayingWhatIsAllowed() throws {
        let tool = try commandLineTool()
        let run = ["--data", "D", "--out", "O", "--steps", "1"]
        let cases: [([String], String)] = [
            (["pretrain", "--lr", "nan"] + run, "--lr nan is not allowed: it must be a finite number > 0"),
            (["pretrain", "--lr", "inf"] + run, "--lr inf is not allowed: it must be a finite number > 0"),
            (["pretrain", "--ema-decay", "nan"] + run, "--ema-decay nan is not allowed: it must be a number in [0, 1)"),
            (["pretrain", "--ema-decay=-1"] + run, "--ema-decay -1.0 is not allowed: it must be a number in [0, 1)"),
            (["pretrain", "--ema-decay", "1"] + run, "--ema-decay 1.0 is not allowed"),
            (["pretrain", "--batch", "0"] + run, "--batch 0 is not allowed: it must be an integer ≥ 1"),
            (["pretrain", "--patch", "0"] + run, "--patch 0 is not allowed: it must be an integer ≥ 1"),
            (["pretrain", "--resize", "0"] + run, "--resize 0 is not allowed: it must be an integer ≥ 1"),
            (["pretrain", "--data", "D", "--out", "O", "--steps", "0"],
             "--steps 0 is not allowed: it must be an integer ≥ 1"),
            (["pretrain", "--checkpoint-every=-1"] + run,
             "--checkpoint-every -1 is not allowed: it must be an integer ≥ 0"),
            (["train-autoencoder", "--lr", "nan"] + run, "--lr nan is not allowed: it must be a finite number > 0"),
            (["train-autoencoder", "--kl-weight=-1"] + run,
             "--kl-weight -1.0 is not allowed: it must be a finite number ≥ 0"),
            (["sample", "--model", "M", "--eta", "nan"], "--eta nan is not allowed: it must be a finite number ≥ 0"),
            (["sample", "--model", "M", "--count", "0"], "--count 0 is not allowed: it must be an integer ≥ 1"),
            (["segment", "--model", "M", "--out", "O", "I", "--tile", "0"],
             "--tile 0 is not allowed: it must be an integer ≥ 1"),
            (["segment", "--model", "M", "--out", "O", "I", "--overlap", "1"],
             "--overlap 1.0 is not allowed: it must be a number in [0, 1)"),
            (["features", "--model", "M", "--blocks", "b", "--out", "O", "I", "--size", "0"],
             "--size 0 is not allowed"),
        ]
        for (arguments, message) in cases {
            assertRefused(try launch(tool, arguments), [message], status: 64)
        }
    }

    /// Rows 7, 8: a checkpoint is never written with NaN or infinity; the run stops naming the step and the tensor.
    func testNonFiniteWeightsStopTheRunUnsaved() throws {
        let tool = try commandLineTool()
        let (root, data) = try dataset()
        let result = try pretrain(tool, data: data, out: root + "/run",
                                  ["--steps", "4", "--checkpoint-every", "1", "--lr", "1e38"])
        assertRefused(result, ["\(root)/run/checkpoint: checkpoint of step ", " not saved: ", "holds"])
        let kept = "the last good checkpoint \(root)/run/checkpoint is kept"
        XCTAssertTrue(result.output.contains("there is no earlier checkpoint") || result.output.contains(kept),
                      result.output)
        if FileManager.default.fileExists(atPath: root + "/run/checkpoint") {
            let weights = try SafeTensors.read(root + "/run/checkpoint/" + TrainingCheckpoint.weightsFileName)
            XCTAssertTrue(weights.tensors.values.allSatisfy { $0.values.allSatisfy(\.isFinite) })
        }
    }

    /// Rows 3, 4, 5: a patch larger than every image and a step larger than the machine's memory are refused before
    /// anything is allocated; a tile larger than the image is shrunk to it.
    func testSizesLargerThanTheImagesOrTheMemoryAreRefusedOrClamped() throws {
        let tool = try commandLineTool()
        let (root, data) = try dataset()
        assertRefused(try launch(tool, ["pretrain", "--data", data, "--out", root + "/big", "--steps", "1",
                                        "--patch", "100000", "--batch", "2"]),
                      ["a patch of 100000×100000 is larger than every image", "is 64×64); use a patch of at most 64"])
        assertRefused(try pretrain(tool, data: data, out: root + "/huge", ["--steps", "1", "--batch", "100000000"]),
                      ["one training step at batch 100000000 of 32×32 patches needs about", "more than this machine's",
                       "the largest batch that fits is"])

        try writeRun(ModelCard(architecture: "unet", preset: "cpu", classes: 2, pixelRange: .minusOneToOne), seed: 1,
                     to: root + "/model")
        let image = root + "/small.png"
        try PNG.write(try topLeft(of: PNG.read(path: data + "/images/synth0000.png"), width: 56, height: 40), to: image)
        let segment = try launch(tool, ["segment", "--model", root + "/model", image, "--out", root + "/masks",
                                        "--tile", "100000"])
        XCTAssertEqual(segment.status, 0, segment.output)
        XCTAssertTrue(segment.output.contains("tile 100000×100000 is larger than \(image) (56×40); using 64×48, "
                                              + "the image rounded up to a multiple of 16"), segment.output)
        let mask = try PNG.readHeader(path: root + "/masks/masks/small.png")
        XCTAssertEqual([mask.width, mask.height], [56, 40])
    }

    /// Rows 12, 13: file-system problems are one line naming the path and the reason.
    func testFileSystemErrorsAreOneLineNamingThePath() throws {
        let tool = try commandLineTool()
        let (root, data) = try dataset()
        let file = root + "/existing.png"
        try PNG.write(try PNG.read(path: data + "/images/synth0000.png"), to: file)
        assertRefused(try pretrain(tool, data: data, out: file, ["--steps", "1"]),
                      ["Error: \(file): is a file, not a folder; choose another run folder"])
        assertRefused(try pretrain(tool, data: data, out: file + "/run", ["--steps", "1"]),
                      ["Error: \(file)/run: cannot create the run folder: Not a directory"])
        try writeRun(ModelCard(architecture: "unet", preset: "cpu", classes: 2, pixelRange: .minusOneToOne), seed: 1,
                     to: root + "/model")
        assertRefused(try launch(tool, ["segment", "--model", root + "/model", data, "--out", root + "/masks"]),
                      ["Error: \(data): is a directory, not a PNG image"])
        assertRefused(try launch(tool, ["segment", "--model", root + "/model", file, "--out", file]),
                      ["Error: \(file): is a file, not a folder; choose another output folder"])
        // Foundation's own errors (here `train` creating its folder) reach the user through the central formatter.
        let train = try launch(tool, ["train", "--data", data, "--out", file + "/run", "--epochs", "1",
                                      "--patch", "32"])
        assertRefused(train, ["\(file)/run: ", "Not a directory"])
        XCTAssertFalse(train.output.contains("Domain="), train.output)
        XCTAssertEqual(train.output.split(separator: "\n").filter { $0.hasPrefix("Error:") }.count, 1, train.output)
    }

    /// Rows 14, 16: pretraining reads no masks (an orphan or a mask of the wrong size is fine) and decodes every
    /// image before it starts.
    func testPretrainIgnoresMasksAndChecksEveryImageUpFront() throws {
        let tool = try commandLineTool()
        let (root, data) = try dataset()
        try PNG.write(try topLeft(of: PNG.read(path: data + "/masks/synth0000.png"), width: 10, height: 10),
                      to: data + "/masks/synth0001.png")
        try FileManager.default.copyItem(atPath: data + "/masks/synth0000.png", toPath: data + "/masks/orphan.png")
        let ran = try pretrain(tool, data: data, out: root + "/run", ["--steps", "1"])
        XCTAssertEqual(ran.status, 0, ran.output)

        let image = data + "/images/synth0002.png"
        let bytes = try Data(contentsOf: URL(fileURLWithPath: image))
        try bytes.prefix(bytes.count - 40).write(to: URL(fileURLWithPath: image))
        let refused = try pretrain(tool, data: data, out: root + "/damaged",
                                   ["--steps", "100", "--checkpoint-every", "0"])
        assertRefused(refused, ["invalid dataset, 1 problem", "\(image): cannot read PNG"])
        XCTAssertFalse(refused.output.contains("step 1/"), refused.output)
    }

    /// Rows 9, 10: a second run on a folder in use stops naming the holder; a dead holder's lock is taken over.
    func testOneRunPerFolder() throws {
        let tool = try commandLineTool()
        let (root, data) = try dataset()
        let run = root + "/run"
        let lock = try RunLock.acquire(directory: run)
        assertRefused(try pretrain(tool, data: data, out: run, ["--steps", "1"]),
                      ["Error: \(run): is in use by the run of process \(getpid()) on ",
                       "wait for it or choose another folder"])
        assertRefused(try launch(tool, ["train-autoencoder", "--data", data, "--out", run, "--steps", "1"]),
                      ["is in use by the run of process \(getpid())"])
        lock.release()

        let finished = Process()
        finished.executableURL = URL(fileURLWithPath: "/bin/sh")
        finished.arguments = ["-c", "exit 0"]
        try finished.run()
        finished.waitUntilExit()
        let host = RunLock.hostName()
        try "{\"host\":\"\(host)\",\"pid\":\(finished.processIdentifier),\"started\":\"2025-01-01T00:00:00Z\"}"
            .write(toFile: run + "/" + RunLock.fileName, atomically: true, encoding: .utf8)
        let result = try pretrain(tool, data: data, out: run, ["--steps", "1"])
        XCTAssertEqual(result.status, 0, result.output)
        let notice = "\(run)/.lock: taken over from process \(finished.processIdentifier) on \(host)"
        XCTAssertTrue(result.output.contains(notice), result.output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: run + "/" + RunLock.fileName), "released at the end")
    }

    /// Row 17: a resumed pretraining run says where it continues, and refuses options that change what a step
    /// computes.
    func testPretrainResumeSaysWhereAndRefusesChangedOptions() throws {
        let tool = try commandLineTool()
        let (root, data) = try dataset()
        let run = root + "/run"
        XCTAssertEqual(try pretrain(tool, data: data, out: run, ["--steps", "2"]).status, 0)
        let resumed = try pretrain(tool, data: data, out: run, ["--steps", "3", "--checkpoint-every", "5"])
        XCTAssertEqual(resumed.status, 0, resumed.output)
        XCTAssertTrue(resumed.output.contains("resuming from step 2 of 3"), resumed.output)
        assertRefused(try pretrain(tool, data: data, out: run, ["--steps", "4", "--lr", "0.5", "--ema-decay", "0.9"]),
                      ["\(run) holds a run started with other options: --ema-decay 0.9 (the run has 0.999), "
                       + "--lr 0.5 (the run has 0.0001); resume it with the options it was started with "
                       + "(--steps may grow"])
        assertRefused(try pretrain(tool, data: data, out: run, ["--steps", "2"]),
                      ["--steps 2 is below the 3 steps the run in \(run) has done"])
    }

    /// `pretrain --hipt` (issue 17) trains the guided `cpu` UNet conditioned on a HIPT export's CLS embeddings: the
    /// run records the export's path and the embedder's weights, resumes with the same --hipt and refuses another
    /// one, or none, in one line.
    func testPretrainWithHIPTRecordsTheWeightsAndResumesOnlyWithThem() throws {
        let tool = try commandLineTool()
        let (root, data) = try dataset()
        let hipt = root + "/hipt.safetensors", other = root + "/other/hipt.safetensors"
        try FileManager.default.createDirectory(atPath: root + "/other", withIntermediateDirectories: true)
        try VisionTransformer(.init(embedDim: 32, depth: 1, heads: 2), generator: RandomGenerator(seed: 1))
            .export(to: hipt)
        try FileManager.default.copyItem(atPath: hipt, toPath: other)
        let run = root + "/run"
        let conditioned = ["--model", "guided", "--recipe", "v-cosine", "--hipt", hipt]
        let started = try pretrain(tool, data: data, out: run, ["--steps", "2"] + conditioned)
        XCTAssertEqual(started.status, 0, started.output)
        let spec = try DiffusionModelSpec.read(run + "/" + DiffusionModelSpec.fileName)
        XCTAssertEqual(spec.conditioning, .init(hipt: hipt, embeddingDim: 32))
        let weights = try SafeTensors.read(run + "/" + DiffusionRun.weightsFileName).tensors
        XCTAssertEqual(weights["cond_stage_model.patch_projection.weight"]?.shape, [512, 32])
        let resumed = try pretrain(tool, data: data, out: run, ["--steps", "3"] + conditioned)
        XCTAssertEqual(resumed.status, 0, resumed.output)
        XCTAssertTrue(resumed.output.contains("resuming from step 2 of 3"), resumed.output)
        XCTAssertNotNil(try DiffusionRun.load(run).hipt, "reloaded from the recorded path")
        let image = try XCTUnwrap(try Dataset.open(path: data).items.first?.imagePath)
        let sampled = try launch(tool, ["sample", "--model", run, "--count", "2", "--size", "32", "--steps", "2",
                                        "--out", root + "/grid.png", "--condition", image])
        XCTAssertEqual(sampled.status, 0, sampled.output)
        assertRefused(try launch(tool, ["sample", "--model", run, "--steps", "2", "--out", root + "/grid.png"]),
                      ["is conditioned on HIPT embeddings (pretrained with --hipt): give --condition IMAGE…"])
        let refusal = "\(run) holds a run of guided/cpu, recipe v-cosine, on pixels, conditioned on --hipt \(hipt); "
            + "resume it with the options it was started with"
        assertRefused(try pretrain(tool, data: data, out: run, ["--steps", "4", "--model", "guided", "--recipe",
                                                               "v-cosine", "--hipt", other]), [refusal])
        assertRefused(try pretrain(tool, data: data, out: run, ["--steps", "4", "--model", "guided", "--recipe",
                                                               "v-cosine"]), [refusal])
        assertRefused(try pretrain(tool, data: data, out: root + "/attention", ["--steps", "1", "--hipt", hipt]),
                      ["--hipt needs --model guided"])
    }

    /// `pretrain --resize` (issue 21's gland scale) trains on the resized images: a patch larger than the side is
    /// refused naming it, and a resumed run keeps its side.
    func testPretrainResizesTheImagesAndKeepsTheSideOnResume() throws {
        let tool = try commandLineTool()
        let (root, data) = try dataset()
        assertRefused(try pretrain(tool, data: data, out: root + "/small", ["--steps", "1", "--resize", "16"]),
                      ["a patch of 32×32 is larger than every image", "use a patch of at most 16"])
        let run = root + "/run"
        XCTAssertEqual(try pretrain(tool, data: data, out: run, ["--steps", "1", "--resize", "48"]).status, 0)
        assertRefused(try pretrain(tool, data: data, out: run, ["--steps", "2"]),
                      ["\(run) holds a run started with other options: --resize none (the run has 48)"])
    }

    /// Row 18: SIGTERM and SIGINT stop the run after saving, with the shells' exit codes 143 and 130.
    func testSignalsStopAfterSavingWithTheShellsExitCodes() throws {
        let tool = try commandLineTool()
        let (root, data) = try dataset()
        for (signal, status) in [(SIGTERM, Int32(143)), (SIGINT, Int32(130))] {
            let run = root + "/run\(signal)"
            let process = Process()
            process.executableURL = tool
            process.arguments = pretrainArguments(data: data, out: run,
                                                  ["--steps", "100000", "--checkpoint-every", "0"])
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = pipe
            try process.run()
            // Signals once a step is logged, so that the stop handler is installed.
            let deadline = Date().addingTimeInterval(60)
            func loggedLines() -> Int {
                let log = (try? String(contentsOfFile: run + "/metrics.csv", encoding: .utf8)) ?? ""
                return log.split(separator: "\n").count
            }
            while process.isRunning, Date() < deadline, loggedLines() < 2 { Thread.sleep(forTimeInterval: 0.05) }
            kill(process.processIdentifier, signal)
            let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            XCTAssertEqual(process.terminationStatus, status, output)
            XCTAssertTrue(output.contains("stopped by \(signal == SIGTERM ? "SIGTERM" : "SIGINT")"), output)
            let weights = run + "/checkpoint/" + TrainingCheckpoint.weightsFileName
            XCTAssertTrue(FileManager.default.fileExists(atPath: weights), "no \(weights)")
        }
    }
}

import Foundation
import XCTest
import HistoCore
import HistoData
@testable import HistoMethods

/// `histodiff experiment`'s runner on generated data: the grid, shards, skipping finished runs, the report files.
final class ExperimentTests: XCTestCase {
    func testShardsCoverTheGridExactlyOnce() {
        var plan = ExperimentPlan(methods: ["a", "b"], labels: ["1/8", "1/4"], seeds: [0, 1], data: "", directory: "")
        plan.baseline = "a"
        let grid = Experiment.grid(plan)
        XCTAssertEqual(grid.count, 8)
        let shards = (1...3).map { Experiment.shard(grid, index: $0, count: 3) }
        XCTAssertEqual(shards.map(\.count), [3, 3, 2])
        XCTAssertEqual(shards.flatMap { $0 }.map(\.folder).sorted(), grid.map(\.folder).sorted())
        XCTAssertEqual(Set(grid.map(\.folder)).count, 8, "every run has its own folder")
        XCTAssertEqual(grid[0].folder, "a/labels-1_8/seed-0")
    }

    /// 2 methods × 2 label shares × 2 seeds with one tiny epoch each: shard 1/3 trains its three runs only, a plain
    /// run trains the other five and writes every report file, a rerun trains nothing.
    func testTwoMethodsTwoSharesTwoSeedsRunShardedThenAggregate() throws {
        let root = try temporaryFolder().path
        try SyntheticHistology.makeDataset(at: root + "/data", count: 10, size: 32, seed: 5)
        var plan = ExperimentPlan(methods: ["supervised", "genselfdiff"], labels: ["1/4", "1/2"], seeds: [0, 1],
                                  data: root + "/data", directory: root + "/experiment")
        plan.baseline = "supervised"
        plan.configure = { _, request in
            request.patch = 32
            request.batch = 2
            request.cropsPerImage = 1
            request.epochs = 1
            request.validation = "1/5"
            request.progress = .none
        }
        var log: [String] = []
        plan.shard = (1, 3)
        var scores = try Experiment.run(plan) { log.append($0) }
        XCTAssertEqual(scores.count, 3, log.joined(separator: "\n"))
        XCTAssertTrue(log.last!.contains("3 of 8 runs scored"), log.joined(separator: "\n"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: root + "/experiment/results.json"))

        plan.shard = nil
        log = []
        scores = try Experiment.run(plan) { log.append($0) }
        XCTAssertEqual(scores.count, 8)
        for score in scores {
            let (iou, miou) = (score.metrics["iou"]!, score.metrics["miou"]!)
            XCTAssertTrue(miou >= iou / 2 && miou <= (iou + 1) / 2 && score.metrics["mf1"] != nil, "\(score)")
            let accuracy = try XCTUnwrap(score.metrics["accuracy"], "pixel accuracy (issue 17's metrics)")
            XCTAssertTrue(accuracy >= 0 && accuracy <= 1, "\(score)")
            // Pixel accuracy is the share of pixels right: specificity and sensitivity weighted by the classes.
            let (specificity, sensitivity) = try (XCTUnwrap(score.metrics["specificity"]),
                                                  XCTUnwrap(score.metrics["sensitivity"]))
            XCTAssertTrue(accuracy >= min(specificity, sensitivity) - 1e-12
                          && accuracy <= max(specificity, sensitivity) + 1e-12, "\(score)")
        }
        XCTAssertEqual(log.filter { $0.hasSuffix("done, skipped") }.count, 3, log.joined(separator: "\n"))
        for file in ["results.md", "results.csv", "results.json", "results.png"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: root + "/experiment/" + file), file)
        }
        let results = URL(fileURLWithPath: root + "/experiment/results.json")
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: results))
        let rows = try XCTUnwrap((json as? [String: Any])?["rows"] as? [[String: Any]])
        XCTAssertEqual(rows.count, 4)
        XCTAssertEqual(rows.map { $0["method"] as? String }, ["supervised", "supervised", "genselfdiff", "genselfdiff"])
        XCTAssertNil(rows[0]["p_vs_baseline"], "no test of the baseline against itself")
        XCTAssertNotNil(rows[2]["p_vs_baseline"])

        log = []
        let weights = root + "/experiment/runs/supervised/labels-1_4/seed-0/best.safetensors"
        func modified() throws -> Date? {
            try FileManager.default.attributesOfItem(atPath: weights)[.modificationDate] as? Date
        }
        let trained = try modified()
        _ = try Experiment.run(plan) { log.append($0) }
        XCTAssertEqual(log.filter { $0.hasSuffix("done, skipped") }.count, 8, log.joined(separator: "\n"))
        XCTAssertEqual(try modified(), trained, "a rerun trains nothing")
    }

    /// `histodiff experiment` with standard output and error in one pipe (as `> log 2>&1`): its own lines appear
    /// when they happen, between the training's progress lines, not all at exit (block buffering).
    func testCommandLineLinesAppearInTheOrderTheyHappen() throws {
        let tool = try commandLineTool()
        let root = try temporaryFolder().path
        try SyntheticHistology.makeDataset(at: root + "/data", count: 6, size: 32, seed: 4)
        let run = try launch(tool, ["experiment", "--methods", "supervised", "--labels", "1/2", "--seeds", "0",
                                    "--data", root + "/data", "--out", root + "/experiment", "--",
                                    "--patch", "32", "--batch", "2", "--epochs", "1", "--crops-per-image", "1"])
        XCTAssertEqual(run.status, 0, run.output)
        let lines = run.output.split(separator: "\n").map(String.init)
        let start = try XCTUnwrap(lines.firstIndex { $0.hasPrefix("[1/1] supervised labels 1/2 seed 0") }, run.output)
        let firstStep = try XCTUnwrap(lines.firstIndex { $0.contains("step 1/") }, run.output)
        let scored = try XCTUnwrap(lines.firstIndex { $0.contains("supervised labels 1/2 seed 0: Dice") }, run.output)
        let finished = try XCTUnwrap(lines.firstIndex { $0.contains("finished") }, run.output)
        XCTAssertLessThan(start, firstStep, run.output)
        XCTAssertLessThan(finished, scored, run.output)
        XCTAssertTrue(lines.last!.hasPrefix("results: "), run.output)
    }

    /// A run of one iteration on 32² patches, batch 2, one crop per image, without progress lines.
    static func oneTinyIteration(_ request: inout TrainingRequest) {
        request.patch = 32
        request.batch = 2
        request.cropsPerImage = 1
        request.iterations = 1
        request.progress = .none
    }

    /// `METHOD@VARIANT` trains METHOD with the variant's own options in its own folder and report row.
    func testAVariantIsTheMethodWithItsOwnOptionsAndRow() throws {
        let root = try temporaryFolder().path
        try SyntheticHistology.makeDataset(at: root + "/data", count: 6, size: 32, seed: 6)
        var plan = ExperimentPlan(methods: ["supervised", "supervised@dice"], labels: ["1/2"], seeds: [0],
                                  data: root + "/data", directory: root + "/experiment")
        plan.configure = { entry, request in
            Self.oneTinyIteration(&request)
            if entry == "supervised@dice" { request.methodOptions["loss"] = "dice" }
        }
        let scores = try Experiment.run(plan) { _ in }
        XCTAssertEqual(scores.map(\.method), ["supervised", "supervised@dice"])
        for (entry, loss) in [("supervised", nil), ("supervised@dice", "dice")] {
            let run = "\(root)/experiment/runs/\(entry)/labels-1_2/seed-0/"
            let settings = try JSONDecoder().decode([String: String].self, from: Data(contentsOf: URL(
                fileURLWithPath: run + MethodTrainer.settingsFileName)))
            XCTAssertEqual(settings["method"], "supervised")
            XCTAssertEqual(settings["option.loss"], loss, entry)
        }
    }

    /// A run's scores are those of the masks `histodiff segment` writes: the experiment's probabilities equal the
    /// ones of `segment`'s window (training patch, overlap, Gaussian blending, reflect padding) on images larger
    /// than the patch, where tiles overlap.
    func testScoresAreOfTheOutputsSegmentWrites() throws {
        let root = try temporaryFolder().path
        try SyntheticHistology.makeDataset(at: root + "/data", count: 5, size: 56, seed: 8)
        var plan = ExperimentPlan(methods: ["supervised"], labels: ["1/2"], seeds: [0], data: root + "/data",
                                  directory: root + "/experiment")
        plan.configure = { _, request in Self.oneTinyIteration(&request) }
        try Experiment.run(plan) { _ in }
        let run = root + "/experiment/runs/supervised/labels-1_2/seed-0"
        let model = try TrainedModel(path: run)
        let segment = try ImageSegmenter(model: model, window: .segmentation(tile: model.card.defaultTile))
        let written = try FileManager.default.contentsOfDirectory(atPath: run + "/eval/probabilities").sorted()
        XCTAssertFalse(written.isEmpty)
        try segment.segment(written.map { root + "/data/images/" + $0 }, to: root + "/segment")
        for name in written {
            XCTAssertEqual(FileManager.default.contents(atPath: run + "/eval/probabilities/" + name),
                           FileManager.default.contents(atPath: root + "/segment/probabilities/" + name), name)
            // Scored with the tuned post-processing, as `segment` reads it from postprocess.json.
            XCTAssertEqual(FileManager.default.contents(atPath: run + "/eval/instances/" + name),
                           FileManager.default.contents(atPath: root + "/segment/instances/" + name), name)
        }
    }

    /// Tuning (dataset samples) and scoring (`segment`'s PNG reads) meet in the memo: the images scoring reads
    /// are found, so each validation image is segmented once; another image is computed.
    func testTuningAndScoringSegmentEachImageOnce() throws {
        let root = try temporaryFolder().path
        try SyntheticHistology.makeDataset(at: root + "/data", count: 3, size: 40, seed: 2)
        let dataset = try Dataset.open(path: root + "/data")
        let memo = ProbabilityMemo()
        let planes = try Planes(channels: 1, height: 2, width: 2, values: [0, 1, 2, 3])
        var computed = 0
        func count() -> Planes { computed += 1; return planes }
        for index in 0..<2 { _ = try memo.probabilities(of: try dataset.sample(at: index).image, compute: count) }
        XCTAssertEqual(computed, 2)
        for item in dataset.items.prefix(2) {
            XCTAssertEqual(try memo.probabilities(of: try PNG.read(path: item.imagePath), compute: count), planes)
        }
        XCTAssertEqual(computed, 2, "scoring's reads of the tuned images are found")
        _ = try memo.probabilities(of: try PNG.read(path: dataset.items[2].imagePath), compute: count)
        XCTAssertEqual(computed, 3)
    }

    func testBadGridsAreRefusedNamingTheOption() throws {
        let base = ExperimentPlan(methods: ["supervised"], labels: ["1/8"], seeds: [0], data: "/nonexistent",
                                  directory: "/tmp/x")
        var plan = base
        plan.methods = ["nope"]
        XCTAssertThrowsError(try Experiment.run(plan) { _ in }) {
            XCTAssertTrue("\($0)".contains("unknown method 'nope'"), "\($0)")
        }
        for entry in ["nope@x", "supervised@", "supervised@a@b"] {
            plan = base
            plan.methods = [entry]
            XCTAssertThrowsError(try Experiment.run(plan) { _ in }) {
                let expected = entry.hasPrefix("nope") ? "unknown method 'nope'" : "--methods"
                XCTAssertTrue("\($0)".contains(expected), "\($0)")
            }
        }
        plan = base
        plan.baseline = "genselfdiff"
        XCTAssertThrowsError(try Experiment.run(plan) { _ in }) {
            XCTAssertTrue("\($0)".contains("--baseline"), "\($0)")
        }
        plan = base
        plan.shard = (4, 3)
        XCTAssertThrowsError(try Experiment.run(plan) { _ in }) { XCTAssertTrue("\($0)".contains("--shard"), "\($0)") }
        plan = base
        plan.seeds = [0, 0]
        XCTAssertThrowsError(try Experiment.run(plan) { _ in }) { XCTAssertTrue("\($0)".contains("twice"), "\($0)") }
    }
}

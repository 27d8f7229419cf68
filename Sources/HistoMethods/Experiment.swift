import Foundation
import HistoCore
import HistoData
import HistoMetrics
import HistoNN

/// The protocol runner of the papers (`histodiff experiment`): every method × label share × seed trained on the
/// same data and scored the same way, then aggregated into a paper-style table, CSV, JSON and a plot
/// (`ExperimentReport`).
///
/// Each run has its own folder, `<directory>/runs/<method>/labels-<share>/seed-<seed>`, a `histodiff train` run
/// folder plus `score.json` once it is scored. A method entry `METHOD@VARIANT` is that method again under its own
/// name, with its own options (e.g. `genselfdiff@pretrained` beside `genselfdiff`), so that variants of one method
/// are rows of one table. A rerun skips scored runs and resumes the others where they stopped,
/// so a killed experiment goes on where it was; `shard` gives a job array's task its share of the grid, and a final
/// plain run (or `reportOnly`) aggregates what all shards wrote.
public struct ExperimentPlan {
    /// Method entries: `METHOD` or `METHOD@VARIANT`.
    public var methods: [String]
    public var labels: [String]
    public var seeds: [UInt64]
    public var data: String
    /// A dataset folder with masks to score every run on; nil: each run's validation images.
    public var test: String?
    /// The method the others are compared with (paired t-test over seeds).
    public var baseline: String?
    /// This task's share of the grid: runs i, i + n, i + 2n, … (1-based i of n).
    public var shard: (index: Int, count: Int)?
    public var directory: String
    /// Aggregate the scored runs only; train nothing.
    public var reportOnly = false
    /// Everything of a run's request besides method, labels, seed, data and folder (the options after `--`, and
    /// per-entry options from a configuration file), given the run's method entry.
    public var configure: (_ entry: String, _ request: inout TrainingRequest) throws -> Void = { _, _ in }

    public init(methods: [String], labels: [String], seeds: [UInt64], data: String, directory: String) {
        self.methods = methods
        self.labels = labels
        self.seeds = seeds
        self.data = data
        self.directory = directory
    }
}

public enum Experiment {
    /// One run of the grid.
    public struct Cell: Equatable, Sendable {
        /// The method entry (`METHOD` or `METHOD@VARIANT`).
        public let method: String
        public let labels: String
        public let seed: UInt64

        /// The run's folder under the experiment's `runs/`.
        public var folder: String {
            let share = labels.map { "0123456789.".contains($0) ? String($0) : "_" }.joined()
            return "\(method)/labels-\(share)/seed-\(seed)"
        }
    }

    public static let scoreFileName = "score.json"

    /// The registered method a method entry trains: the entry up to its `@`.
    public static func method(ofEntry entry: String) -> String { String(entry.prefix { $0 != "@" }) }

    /// `path` with `{cell}` replaced by the `labels-…/seed-…` of a run of `plan`'s label share and seed: how a
    /// later stage names the earlier stage's run of its own split (diffusion-ts, dtseg-collab).
    public static func resolvingCell(_ path: String, plan: TrainingPlan) -> String {
        let folder = Cell(method: "", labels: plan.labelRatio.description, seed: plan.seed).folder
        return path.replacingOccurrences(of: "{cell}", with: String(folder.dropFirst()))
    }

    /// Methods × labels × seeds in that nesting order.
    public static func grid(_ plan: ExperimentPlan) -> [Cell] {
        plan.methods.flatMap { method in
            plan.labels.flatMap { labels in plan.seeds.map { Cell(method: method, labels: labels, seed: $0) } }
        }
    }

    /// The cells of shard `index` of `count` (1-based): every `count`-th cell from the `index`-th.
    public static func shard(_ cells: [Cell], index: Int, count: Int) -> [Cell] {
        cells.enumerated().filter { $0.offset % count == index - 1 }.map(\.element)
    }

    /// Runs (or skips, or resumes) this task's cells, then writes the report when every cell of the grid is scored.
    /// Returns the scores of the grid's scored runs. A run stopped by SIGINT/SIGTERM (its checkpoint saved) ends the
    /// experiment with `TrainingInterrupted`.
    @discardableResult
    public static func run(_ plan: ExperimentPlan,
                           log: (String) -> Void = { print($0) }) throws -> [ExperimentRunScore] {
        try check(plan)
        let cells = grid(plan)
        let mine = plan.reportOnly ? [] : plan.shard.map { shard(cells, index: $0.index, count: $0.count) } ?? cells
        // Opened once for the experiment (opening checks every mask).
        let testSet = try plan.test.map { try Dataset.open(path: $0, requireMasks: true) }
        for (number, cell) in mine.enumerated() {
            let folder = runFolder(plan, cell)
            let name = "\(cell.method) labels \(cell.labels) seed \(cell.seed)"
            if FileManager.default.fileExists(atPath: folder + "/" + scoreFileName) {
                log("[\(number + 1)/\(mine.count)] \(name): done, skipped")
                continue
            }
            log("[\(number + 1)/\(mine.count)] \(name) in \(folder)")
            var request = TrainingRequest(method: method(ofEntry: cell.method), data: plan.data, directory: folder)
            try plan.configure(cell.method, &request)
            request.labels = cell.labels
            request.seed = cell.seed
            let dataset = try request.openDataset()
            let result = try MethodTraining.run(request, dataset: dataset)
            if case let .interrupted(signal) = result.outcome { throw TrainingInterrupted(signal: signal) }
            // One segmenter (one model load) tunes and scores; without a test set both segment the same
            // validation images: once, through the memo.
            var segmenter = try ImageSegmenter.ofRun(at: folder, backend: request.backend, cachingFeatures: true)
            if testSet == nil { segmenter.memo = ProbabilityMemo() }
            let tuned = try InstanceTuning.run(after: result, request: request, dataset: dataset, segmenter: segmenter)
            segmenter.model.postprocessing = tuned.chosen  // what a reload reads from postprocess.json
            log("\(name): instances \(tuned.chosen.description) (validation AJI "
                + String(format: "%.4f", tuned.aji) + ")")
            let scored = testSet.map { ($0, $0.items.map(\.name)) } ?? dataset.wholeImages(of: result.split.validation)
            let score = try self.score(cell, with: segmenter, on: scored)
            log(String(format: "%@: Dice %.4f, IoU %.4f, AJI %.4f, detection F1 %.4f, HD95 %.2f", name,
                       score.metrics["dice"] ?? .nan, score.metrics["iou"] ?? .nan, score.metrics["aji"] ?? .nan,
                       score.metrics["detection_f1"] ?? .nan, score.metrics["hd95"] ?? .nan))
        }
        let scores = try cells.compactMap { cell -> ExperimentRunScore? in
            let path = runFolder(plan, cell) + "/" + scoreFileName
            guard let data = FileManager.default.contents(atPath: path) else { return nil }
            do { return try MethodTrainer.jsonDecoder.decode(ExperimentRunScore.self, from: data) } catch {
                throw EngineError.file(path: path, message: "unreadable run score: \(error)")
            }
        }
        guard scores.count == cells.count else {
            log("\(scores.count) of \(cells.count) runs scored; the report is written once every shard has finished "
                + "(rerun without --shard, or with --report, to aggregate)")
            return scores
        }
        try ExperimentReport.write(scores, methods: plan.methods, labels: plan.labels, baseline: plan.baseline,
                                   to: plan.directory)
        log("results: \(plan.directory)/results.md, results.csv, results.json, results.png")
        return scores
    }

    static func runFolder(_ plan: ExperimentPlan, _ cell: Cell) -> String {
        (plan.directory as NSString).appendingPathComponent("runs/" + cell.folder)
    }

    /// Segments the images `names` of `dataset` (the run's validation images, or every image of `--test`) with
    /// `segmenter` (the run's kept weights as `segment` segments, `ImageSegmenter.ofRun`), scores them
    /// (`ModelEvaluation`, outputs in the run's `eval`; pixel accuracy, specificity and sensitivity beside Dice and
    /// IoU, CDCL's binary DC/JC/ACC/SP/SE; mIoU and mF1 are DTSeg's means over background and foreground) and writes
    /// `score.json`.
    static func score(_ cell: Cell, with segmenter: ImageSegmenter,
                      on images: (dataset: Dataset, names: [String])) throws -> ExperimentRunScore {
        let folder = segmenter.model.directory
        let evaluation = try ModelEvaluation.run(segmenter, dataset: images.dataset, names: images.names,
                                                 output: folder + "/eval")
        let pooled = evaluation.pooled, background = evaluation.pooledCounts.complement.scores
        let score = ExperimentRunScore(method: cell.method, labels: cell.labels, seed: cell.seed, metrics: [
            "dice": pooled.scores.dice, "iou": pooled.scores.iou, "aji": pooled.aji, "aji_plus": pooled.ajiPlus,
            "detection_f1": pooled.detectionF1, "hd95": pooled.hausdorff95,
            "precision": pooled.scores.precision, "sensitivity": pooled.scores.sensitivity,
            "accuracy": pooled.scores.accuracy, "specificity": pooled.scores.specificity,
            "miou": (pooled.scores.iou + background.iou) / 2, "mf1": (pooled.scores.dice + background.dice) / 2])
        try MethodTrainer.writeJSON(score, to: folder + "/" + scoreFileName)
        return score
    }

    static func check(_ plan: ExperimentPlan) throws {
        func invalid(_ option: String, _ message: String) -> EngineError { .invalidValue(op: option, message: message) }
        guard !plan.methods.isEmpty else { throw invalid("--methods", "names no method") }
        guard !plan.labels.isEmpty else { throw invalid("--labels", "names no label share") }
        guard !plan.seeds.isEmpty else { throw invalid("--seeds", "names no seed") }
        for entry in plan.methods {
            _ = try MethodRegistry.method(named: method(ofEntry: entry))
            if entry.hasSuffix("@") || entry.filter({ $0 == "@" }).count > 1 {
                throw invalid("--methods", "'\(entry)' is not METHOD or METHOD@VARIANT")
            }
        }
        for labels in plan.labels { _ = try Ratio(labels) }
        let lists = [("--methods", plan.methods), ("--labels", plan.labels), ("--seeds", plan.seeds.map(String.init))]
        for (option, values) in lists where Set(values).count != values.count {
            throw invalid(option, "names a value twice: \(values.joined(separator: ","))")
        }
        if let baseline = plan.baseline, !plan.methods.contains(baseline) {
            throw invalid("--baseline", "\(baseline) is not one of --methods \(plan.methods.joined(separator: ","))")
        }
        if let shard = plan.shard, !(1...max(shard.count, 1)).contains(shard.index) || shard.count < 1 {
            throw invalid("--shard", "\(shard.index)/\(shard.count) must be i/n with 1 ≤ i ≤ n")
        }
    }
}

import Foundation
import HistoCore
import HistoData
import HistoMetrics

/// One finished run of an experiment: which method, label share (as written, e.g. "1/8"), seed, and its scores.
public struct ExperimentRunScore: Codable, Equatable, Sendable {
    public var method: String
    public var labels: String
    public var seed: UInt64
    /// "dice", "iou", "aji", "hd95" at least (others are carried into the CSV).
    public var metrics: [String: Double]

    public init(method: String, labels: String, seed: UInt64, metrics: [String: Double]) {
        self.method = method
        self.labels = labels
        self.seed = seed
        self.metrics = metrics
    }

    /// `mt 1/8 seed 3`, for messages.
    var name: String { "\(method) \(labels) seed \(seed)" }
}

/// The report of an experiment (methods × label shares × seeds): for each (method, labels) the mean, sample SD and
/// 90% confidence interval of each score over its seeds, and paired t-tests against a baseline method, written as
/// paper-style Markdown tables, the raw runs as CSV, the rows as JSON and a chart of Dice against label share.
public enum ExperimentReport {
    /// The scores that rows summarise and tests compare: Dice, IoU and AJI in [0, 1], HD95 in pixels.
    public static let metrics = ["dice", "iou", "aji", "hd95"]
    /// The level of the confidence intervals (`Summary.ci90`, the chart's error bars).
    public static let confidenceLevel = 0.90
    /// p below this is marked `*` in results.md.
    public static let significanceLevel = 0.05
    /// results.png's size: large enough for the chart's text to be drawn at 2×.
    static let chartWidth = 1000, chartHeight = 640

    /// One score over the runs of a row. Runs whose value is not finite (HD95 when a mask is empty) are left out,
    /// so nil stands for "undefined" (JSON null, never NaN).
    public struct Summary: Codable, Equatable, Sendable {
        /// nil when no run has a finite value.
        public var mean: Double?
        /// The sample SD (n − 1 in the denominator); nil for fewer than 2 values.
        public var sd: Double?
        /// [mean − h, mean + h] with h = `Statistics.confidenceHalfWidth(values, level: 0.90)`
        /// (t_{0.95, n−1} · sd / √n); nil for fewer than 2 values.
        public var ci90: [Double]?

        public init(_ values: [Double]) {
            let finite = values.filter(\.isFinite)
            let summary = RunSummary(finite, level: ExperimentReport.confidenceLevel)
            mean = finite.isEmpty ? nil : summary.mean
            sd = finite.count < 2 ? nil : summary.standardDeviation
            ci90 = finite.count < 2 ? nil : [summary.mean - summary.halfWidth, summary.mean + summary.halfWidth]
        }

        /// Writes every key, undefined values as null (the synthesised encoder would leave the keys out).
        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(mean, forKey: .mean)
            try container.encode(sd, forKey: .sd)
            try container.encode(ci90, forKey: .ci90)
        }
    }

    /// The runs of one method at one label share, summarised.
    public struct Row: Codable, Equatable, Sendable {
        public var method: String
        public var labels: String
        /// How many runs (seeds) the row aggregates.
        public var runs: Int
        /// A `Summary` of each of `ExperimentReport.metrics`.
        public var metrics: [String: Summary]
        /// For each of `ExperimentReport.metrics`, the p of the two-sided paired t-test (`Statistics.pairedTTest`)
        /// of this method against the baseline at the same labels, paired by seed over the seeds both ran; nil
        /// (absent from JSON) for the baseline's own rows, without a baseline, or when fewer than 2 seeds pair.
        /// A p is nil (null) where the test is undefined: identical pairs, or fewer than 2 pairs of finite values.
        public var pValueVsBaseline: [String: Double?]?

        enum CodingKeys: String, CodingKey {
            case method, labels, runs, metrics
            case pValueVsBaseline = "p_vs_baseline"
        }
    }

    /// Aggregates `runs` by (method, labels) in the order of `methods` then `labels` and writes into `directory`
    /// (created if missing): results.md, results.csv, results.json, results.png. Returns the rows (also what
    /// results.json holds, as `{"rows": [...]}`). Errors are `EngineError`s naming the offending run, name or file.
    @discardableResult
    public static func write(_ runs: [ExperimentRunScore], methods: [String], labels: [String], baseline: String?,
                             to directory: String) throws -> [Row] {
        let rows = try aggregate(runs, methods: methods, labels: labels, baseline: baseline)
        try FileSystem.createFolder(directory, purpose: "report")
        let sortedRuns = runs.sorted {
            order(of: $0, methods: methods, labels: labels) < order(of: $1, methods: methods, labels: labels)
        }
        try FolderEvaluation.write(json(rows), to: directory + "/results.json")
        try FolderEvaluation.write(csv(sortedRuns), to: directory + "/results.csv")
        try FolderEvaluation.write(markdown(rows, methods: methods, labels: labels, baseline: baseline),
                                   to: directory + "/results.md")
        try PNG.write(chart(rows, methods: methods, labels: labels, baseline: baseline), to: directory + "/results.png")
        return rows
    }

    /// The rows `write` reports, without writing files: one per (method, labels) that has runs, in the order of
    /// `methods` then `labels`. Throws for no runs, a name listed twice, a baseline that is not among `methods`,
    /// a run whose method or labels is not listed, a run without one of `metrics`, or a (method, labels, seed)
    /// that appears twice.
    public static func aggregate(_ runs: [ExperimentRunScore], methods: [String], labels: [String],
                                 baseline: String?) throws -> [Row] {
        func invalid(_ message: String) -> EngineError { .invalidValue(op: "ExperimentReport", message: message) }
        guard !runs.isEmpty else { throw invalid("no runs to report") }
        for (kind, names) in [("method", methods), ("labels", labels)] {
            if let twice = names.first(where: { name in names.filter { $0 == name }.count > 1 }) {
                throw invalid("\(kind) '\(twice)' is listed twice")
            }
        }
        if let baseline, !methods.contains(baseline) {
            throw invalid("baseline '\(baseline)' is not among the methods \(methods.joined(separator: ", "))")
        }
        var seen = Set<[String]>()
        for run in runs {
            guard methods.contains(run.method) else {
                throw invalid("run \(run.name): method '\(run.method)' is not among the methods "
                              + methods.joined(separator: ", "))
            }
            guard labels.contains(run.labels) else {
                throw invalid("run \(run.name): labels '\(run.labels)' is not among the labels "
                              + labels.joined(separator: ", "))
            }
            if let missing = metrics.first(where: { run.metrics[$0] == nil }) {
                throw invalid("run \(run.name) has no '\(missing)' score")
            }
            guard seen.insert([run.method, run.labels, "\(run.seed)"]).inserted else {
                throw invalid("run \(run.name) appears twice")
            }
        }

        func cell(_ method: String, _ labels: String) -> [ExperimentRunScore] {
            runs.filter { $0.method == method && $0.labels == labels }.sorted { $0.seed < $1.seed }
        }
        var rows: [Row] = []
        for method in methods {
            for share in labels {
                let runs = cell(method, share)
                guard !runs.isEmpty else { continue }
                let summaries = Dictionary(uniqueKeysWithValues: metrics.map { metric in
                    (metric, Summary(runs.map { $0.metrics[metric]! }))
                })
                var tests: [String: Double?]?
                if let baseline, baseline != method { tests = pValues(runs, against: cell(baseline, share)) }
                rows.append(Row(method: method, labels: share, runs: runs.count, metrics: summaries,
                                pValueVsBaseline: tests))
            }
        }
        return rows
    }

    /// The paired t-test's p of each metric, pairing runs by seed; nil for fewer than 2 pairs.
    static func pValues(_ runs: [ExperimentRunScore],
                        against baselineRuns: [ExperimentRunScore]) -> [String: Double?]? {
        let baselineBySeed = Dictionary(uniqueKeysWithValues: baselineRuns.map { ($0.seed, $0.metrics) })
        let pairs = runs.compactMap { run in baselineBySeed[run.seed].map { (run.metrics, $0) } }
        guard pairs.count >= 2 else { return nil }
        return Dictionary(uniqueKeysWithValues: metrics.map { metric -> (String, Double?) in
            let values = pairs.map { ($0.0[metric]!, $0.1[metric]!) }.filter { $0.0.isFinite && $0.1.isFinite }
            guard values.count >= 2, let test = try? Statistics.pairedTTest(values.map(\.0), values.map(\.1)),
                  !test.p.isNaN else { return (metric, nil) }
            return (metric, test.p)
        })
    }

    /// Sorts runs like the rows, then by seed.
    private static func order(of run: ExperimentRunScore, methods: [String], labels: [String]) -> (Int, Int, UInt64) {
        (methods.firstIndex(of: run.method)!, labels.firstIndex(of: run.labels)!, run.seed)
    }

    // MARK: files

    /// `{"rows": [...]}`, keys sorted, indented, non-finite numbers as strings (`MethodTrainer.jsonEncoder`).
    static func json(_ rows: [Row]) throws -> String {
        String(decoding: try MethodTrainer.jsonEncoder.encode(["rows": rows]), as: UTF8.self) + "\n"
    }

    /// One line per run: method, labels, seed, then every metric any run has, sorted by name. Values are written
    /// in full precision; NaN and missing values are empty cells.
    static func csv(_ runs: [ExperimentRunScore]) -> String {
        let columns = Set(runs.flatMap(\.metrics.keys)).sorted()
        var lines = [(["method", "labels", "seed"] + columns).joined(separator: ",")]
        for run in runs {
            let values = columns.map { column in run.metrics[column].map { $0.isNaN ? "" : "\($0)" } ?? "" }
            let key = [FolderEvaluation.csvField(run.method), FolderEvaluation.csvField(run.labels), "\(run.seed)"]
            lines.append((key + values).joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// The scores as the papers print them: Dice, IoU and AJI in percent, HD95 in pixels, both with 2 decimals.
    private static func formatted(_ value: Double, metric: String) -> String {
        String(format: "%.2f", metric == "hd95" ? value : 100 * value)
    }

    /// `78.93 ± 1.20`; the mean alone for a single run; `–` when undefined.
    static func cell(_ summary: Summary?, metric: String) -> String {
        guard let mean = summary?.mean else { return "–" }
        guard let sd = summary?.sd else { return formatted(mean, metric: metric) }
        return formatted(mean, metric: metric) + " ± " + formatted(sd, metric: metric)
    }

    /// `0.012*` (`*`: p < 0.05), `<0.001*`, `n/a` for an undefined test.
    static func pCell(_ p: Double?) -> String {
        guard let p else { return "n/a" }
        let mark = p < significanceLevel ? "*" : ""
        return (p < 0.001 ? "<0.001" : String(format: "%.3f", p)) + mark
    }

    /// A Dice table (methods × label shares, the best mean of each column in bold), a table of every score per
    /// row with the p of Dice against the baseline, and a legend.
    static func markdown(_ rows: [Row], methods: [String], labels: [String], baseline: String?) -> String {
        func escaped(_ text: String) -> String { text.replacingOccurrences(of: "|", with: "\\|") }
        func tableLine(_ cells: [String]) -> String { "| " + cells.joined(separator: " | ") + " |" }
        func separator(_ count: Int) -> String { "|" + String(repeating: "---|", count: count) }
        let rowOf = { (method: String, labels: String) in rows.first { $0.method == method && $0.labels == labels } }

        var dice = [tableLine(["method"] + labels.map(escaped)), separator(labels.count + 1)]
        let bestDice = labels.map { labels in
            rows.filter { $0.labels == labels }.compactMap { $0.metrics["dice"]?.mean }.max()
        }
        for method in methods where rows.contains(where: { $0.method == method }) {
            dice.append(tableLine([escaped(method)] + zip(labels, bestDice).map { labels, best in
                let summary = rowOf(method, labels)?.metrics["dice"]
                let text = cell(summary, metric: "dice")
                return summary?.mean != nil && summary?.mean == best ? "**\(text)**" : text
            }))
        }

        let pTitle = baseline.map { ["p (Dice) vs \(escaped($0))"] } ?? []
        var all = [tableLine(["method", "labels", "n", "Dice (%)", "IoU (%)", "AJI (%)", "HD95 (px)"] + pTitle),
                   separator(7 + pTitle.count)]
        for row in rows {
            let p = baseline == nil ? []
                : [row.method == baseline ? "baseline" : row.pValueVsBaseline.map { pCell($0["dice"] ?? nil) } ?? "–"]
            all.append(tableLine([escaped(row.method), escaped(row.labels), "\(row.runs)"]
                                 + metrics.map { cell(row.metrics[$0], metric: $0) } + p))
        }

        let counts = Set(rows.map(\.runs))
        let n = counts.count == 1 ? "n = \(counts.first!) seed\(counts.first! == 1 ? "" : "s") per cell"
            : "n = \(counts.min()!)–\(counts.max()!) seeds per cell (column n)"
        let test = baseline.map {
            "; p: two-sided paired t-test over the seeds both ran against the baseline **\(escaped($0))** "
                + "(* p < \(significanceLevel); n/a: identical or too few pairs; –: fewer than 2 seeds pair)"
        } ?? "; no baseline, so no significance tests"
        let legend = "\(n); ± is the sample SD (n − 1) over seeds, shown only for n ≥ 2; the 90% CI "
            + "(results.json, error bars of results.png) is mean ± t₀.₉₅,ₙ₋₁ · SD / √n\(test)."
        return """
        # Experiment results

        Dice (%) by labelled share, mean ± SD over seeds (best per column in bold):

        \(dice.joined(separator: "\n"))

        All scores (Dice, IoU, AJI in %; HD95 in pixels), mean ± SD over seeds:

        \(all.joined(separator: "\n"))

        \(legend)

        Every run's scores: `results.csv`; means, SDs, 90% CIs and the p of every score: `results.json`; \
        Dice against label share: `results.png`.

        """
    }

    /// Dice (%) against label share, one line per method with its 90% CI as error bars. Shares that all parse as
    /// a `Ratio` ("1/8", "12.5%") are placed by value on a log axis; otherwise (counts like "5") the labels are
    /// categories in the given order. Ticks show the labels as written.
    static func chart(_ rows: [Row], methods: [String], labels: [String], baseline: String?) throws -> Image {
        let shares = try? labels.map { label -> Double in
            let share = try Ratio(label)
            guard share.fixedCount == nil else { throw EngineError.invalidValue(op: "chart", message: "a count") }
            return share.value
        }
        let position = { (index: Int) in shares?[index] ?? Double(index) }
        var options = Charts.LineChartOptions()
        options.width = chartWidth
        options.height = chartHeight
        options.xTicks = labels.indices.map { Charts.AxisTick(position($0), labels[$0]) }
        options.logScaleX = shares != nil
        options.xTitle = shares != nil ? "labelled share (log scale)" : "labels"
        options.yTitle = "Dice (%): mean and 90% CI over seeds"
        options.dodge = 8
        let series = methods.enumerated().compactMap { index, method -> Charts.LineSeries? in
            let points = rows.filter { $0.method == method }.compactMap { row -> Charts.LinePoint? in
                guard let dice = row.metrics["dice"], let mean = dice.mean else { return nil }
                return Charts.LinePoint(x: position(labels.firstIndex(of: row.labels)!), y: 100 * mean,
                                        low: dice.ci90.map { 100 * $0[0] }, high: dice.ci90.map { 100 * $0[1] })
            }
            // Colours follow the order of `methods`, so a method keeps its colour when another has no rows.
            guard !points.isEmpty else { return nil }
            return Charts.LineSeries(name: method == baseline ? "\(method) (baseline)" : method, points: points,
                                     color: Charts.palette[index % Charts.palette.count])
        }
        return try Charts.lineChart(series, options: options).image
    }
}

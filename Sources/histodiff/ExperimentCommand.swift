import ArgumentParser
import Foundation
import HistoMethods

/// `histodiff experiment`: the papers' protocol — methods × label shares × seeds on one dataset, each run scored the
/// same way, aggregated into results.md/csv/json/png (the work is `HistoMethods.Experiment`).
struct ExperimentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "experiment",
        abstract: "Train and score a grid of methods × label shares × seeds; write a paper-style table, CSV, JSON "
            + "and plot.",
        discussion: """
        Each run trains in OUT/runs/METHOD/labels-SHARE/seed-SEED (a `histodiff train` run folder) and is scored on \
        --test, or on its validation images, into score.json. A rerun skips scored runs and resumes interrupted ones. \
        --shard i/n runs every n-th run from the i-th (a job array's task); a final run without --shard, or with \
        --report, aggregates. Options after `--` apply to every run (any `histodiff train` option but --method, \
        --data, --out, --labels, --seed, --split); --config FILE adds per-method ones: \
        {"genselfdiff": ["--pretrained", "PRETRAIN_RUN", "--lr", "2e-3"]}. A method twice with other options: \
        METHOD@VARIANT, e.g. --methods genselfdiff,genselfdiff@pretrained with the config keyed by those names.
        """)

    @Option(help: "Comma-separated methods (METHOD or METHOD@VARIANT).") var methods: String
    @Option(help: "Comma-separated label shares (1/8, 12.5%, or counts).") var labels: String
    @Option(help: "Comma-separated seeds (each seeds the split, the weights and the batches).") var seeds = "0,1,2"
    @Option(help: "Dataset folder (images/, masks/; images without a mask are unlabelled).") var data: String
    @Option(help: "Dataset folder with masks to score every run on (default: each run's validation images).")
    var test: String?
    @Option(help: "Method the others are compared with (paired t-test over seeds).") var baseline: String?
    @Option(help: "This task's share of the grid, i/n.") var shard: String?
    @Option(help: "Experiment folder.") var out: String
    @Option(help: "JSON file of per-entry training options: {\"METHOD[@VARIANT]\": [\"--option\", \"value\", …]}.")
    var config: String?
    @Flag(help: "Only aggregate the scored runs.") var report = false
    @Argument(parsing: .postTerminator, help: "Training options for every run, after `--`.")
    var trainingArguments: [String] = []

    func run() throws {
        var plan = ExperimentPlan(methods: list(methods), labels: list(labels),
                                  seeds: try list(seeds).map { text in
                                      guard let seed = UInt64(text) else {
                                          throw ValidationError("--seeds: '\(text)' is not a whole number ≥ 0")
                                      }
                                      return seed
                                  },
                                  data: data, directory: out)
        plan.test = test
        plan.baseline = baseline
        plan.reportOnly = report
        if let shard {
            let parts = shard.split(separator: "/").map { Int($0) }
            guard parts.count == 2, let index = parts[0], let count = parts[1] else {
                throw ValidationError("--shard '\(shard)' is not i/n")
            }
            plan.shard = (index, count)
        }
        let common = trainingArguments
        let perMethod = try config.map(readConfig) ?? [:]
        let unknown = Set(perMethod.keys).subtracting(plan.methods).sorted()
        guard unknown.isEmpty else {
            throw ValidationError("\(config!) names methods that are not in --methods: "
                                  + unknown.joined(separator: ", "))
        }
        // Parsed once up front, so that a bad option stops the experiment before its first run.
        var options: [String: TrainingOptions] = [:]
        for method in plan.methods {
            do { options[method] = try TrainingOptions.parse(common + (perMethod[method] ?? [])) } catch {
                throw ValidationError("options of \(method): \(TrainingOptions.message(for: error))")
            }
        }
        plan.configure = { entry, request in try options[entry]!.apply(to: &request) }
        try Experiment.run(plan)
    }

    func list(_ text: String) -> [String] {
        text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    func readConfig(_ path: String) throws -> [String: [String]] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ValidationError("--config \(path): cannot be read")
        }
        do { return try JSONDecoder().decode([String: [String]].self, from: data) } catch {
            throw ValidationError("--config \(path): not a JSON object of method names to option lists: \(error)")
        }
    }
}

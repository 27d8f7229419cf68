import Foundation
import HistoCore
import Synchronization

// MARK: - progress line

/// Where a `ProgressReporter` writes.
public enum ProgressOutput {
    /// Standard error: one line rewritten in place (carriage return) when it is a terminal, newline-terminated lines
    /// otherwise (log files, CI).
    case standardError
    case none
    /// `write` receives the text a stream would (with `\r` and the erase-line escape when `terminal`).
    case custom(terminal: Bool, write: (String) -> Void)
}

/// A rate-limited progress line for long jobs: `label  step 120/1000  loss 0.4321  …  3.21 it/s  ETA 4m35s`.
/// Rate and ETA count the steps done since `startStep` (a resumed job's first step is not the job's first).
public final class ProgressReporter {
    public let total: Int
    public let label: String
    /// The least number of seconds between two progress updates.
    public let interval: Double
    private let startStep: Int
    private let terminal: Bool
    private let write: (String) -> Void
    private let clock: () -> Double
    private let startTime: Double
    private var lastUpdate: Double?
    /// A carriage-return line is on screen and not yet ended by a newline.
    private var lineOpen = false

    /// `interval` defaults to 0.5 s on a terminal and 5 s for line output, so logs stay short. `clock` returns
    /// seconds (monotonic).
    public init(total: Int, label: String = "", startStep: Int = 0, output: ProgressOutput = .standardError,
                interval: Double? = nil, clock: @escaping () -> Double = { ProcessInfo.processInfo.systemUptime }) {
        switch output {
        case .standardError:
            terminal = isatty(STDERR_FILENO) != 0
            write = { FileHandle.standardError.write(Data($0.utf8)) }
        case .none:
            terminal = false
            write = { _ in }
        case let .custom(isTerminal, writer):
            terminal = isTerminal
            write = writer
        }
        self.total = total
        self.label = label
        self.startStep = startStep
        self.interval = interval ?? (terminal ? 0.5 : 5)
        self.clock = clock
        startTime = clock()
    }

    /// Shows `step` (steps done) and `values` unless the last update was less than `interval` ago; the first
    /// update always shows.
    public func update(step: Int, values: [(name: String, value: Double)] = []) {
        let now = clock()
        if let last = lastUpdate, now - last < interval { return }
        lastUpdate = now
        var parts = ["step \(step)/\(total)"] + values.map { "\($0.name) \(Self.number($0.value))" }
        let done = step - startStep, elapsed = now - startTime
        if done > 0 && elapsed > 0 {
            let rate = Double(done) / elapsed
            parts.append(rate >= 1 ? String(format: "%.2f it/s", rate) : String(format: "%.2f s/it", 1 / rate))
            parts.append("ETA " + Self.duration(Double(max(total - step, 0)) / rate))
        }
        let line = (label.isEmpty ? [] : [label]) + parts
        if terminal {
            write("\r" + line.joined(separator: "  ") + "\u{1B}[K")
            lineOpen = true
        } else {
            write(line.joined(separator: "  ") + "\n")
        }
    }

    /// Prints `text` (prefixed by the label) on a line of its own, ending the in-place progress line first.
    public func message(_ text: String) {
        let line = label.isEmpty ? text : "\(label): \(text)"
        write((lineOpen ? "\r\u{1B}[K" : "") + line + "\n")
        lineOpen = false
    }

    /// `"40 steps in 12s, 3.33 it/s"`: the steps done since `startStep` by `step`, and the time they took.
    public func summary(step: Int) -> String {
        let done = step - startStep, elapsed = clock() - startTime
        let rate = elapsed > 0 && done > 0 ? String(format: ", %.2f it/s", Double(done) / elapsed) : ""
        return "\(done) step\(done == 1 ? "" : "s") in \(Self.duration(elapsed))\(rate)"
    }

    /// Four significant digits: `0.4321`, `1.5e-05`.
    static func number(_ value: Double) -> String { String(format: "%.4g", value) }

    /// `12s`, `4m05s`, `2h07m`.
    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite else { return "?" }
        let t = Int(seconds.rounded())
        if t < 60 { return "\(t)s" }
        if t < 3600 { return "\(t / 60)m" + String(format: "%02ds", t % 60) }
        return "\(t / 3600)h" + String(format: "%02dm", t % 3600 / 60)
    }
}

// MARK: - stop signals

/// The signal (SIGINT or SIGTERM) that asked the running training loop to stop; 0 when none. The handler does
/// nothing but store into it (an atomic store is async-signal-safe); the loop polls it between steps.
private let stopSignal = Atomic<Int32>(0)

/// The stop handler for SIGINT and SIGTERM, installed until `restore()`. `SA_RESETHAND` puts the default action
/// back once a signal has arrived, so a second Ctrl-C while the checkpoint is written ends the process at once
/// (checkpoint directories are replaced whole, so that leaves the previous checkpoint intact).
public struct StopSignalHandlers {
    private var previous: [(signal: Int32, action: sigaction)] = []

    public init() {
        stopSignal.store(0, ordering: .relaxed)
        for signal in [SIGINT, SIGTERM] {
            var action = sigaction()
            #if os(Linux)
            action.__sigaction_handler.sa_handler = { stopSignal.store($0, ordering: .relaxed) }
            action.sa_flags = Int32(bitPattern: UInt32(SA_RESETHAND) | UInt32(SA_RESTART))
            #else
            action.__sigaction_u.__sa_handler = { stopSignal.store($0, ordering: .relaxed) }
            action.sa_flags = SA_RESETHAND | SA_RESTART
            #endif
            sigemptyset(&action.sa_mask)
            var old = sigaction()
            sigaction(signal, &action, &old)
            previous.append((signal, old))
        }
    }

    public func restore() {
        for (signal, action) in previous {
            var old = action
            sigaction(signal, &old, nil)
        }
        stopSignal.store(0, ordering: .relaxed)
    }

    /// The pending stop signal, 0 when none.
    public var pending: Int32 { stopSignal.load(ordering: .relaxed) }
}

/// `SIGINT`, `SIGTERM`.
public func signalName(_ signal: Int32) -> String {
    switch signal {
    case SIGINT: return "SIGINT"
    case SIGTERM: return "SIGTERM"
    default: return "signal \(signal)"
    }
}

// MARK: - metrics log

/// The per-step log a `TrainingRun` writes (`metrics.csv`): a header row of column names, then one row per step;
/// an empty cell is a value not measured at that step. The first column is `step`.
public struct MetricsLog {
    public let columns: [String]
    /// `rows[i][j]` is column `j` of row `i`; nil for an empty cell.
    public let rows: [[Double?]]

    /// Reads a log. A last line without its newline (cut off by a crash mid-write) is ignored.
    public static func read(path: String) throws -> MetricsLog {
        let parsed = try parse(path: path)
        return MetricsLog(columns: parsed.columns, rows: parsed.rows.map(\.values))
    }

    /// The (step, value) pairs of the rows where `column` has a value, in file order.
    public func series(_ column: String) throws -> [(step: Int, value: Double)] {
        guard let index = columns.firstIndex(of: column) else {
            throw EngineError.invalidValue(op: "MetricsLog", message: "no column \(column); the log has \(columns.joined(separator: ", "))")
        }
        return rows.compactMap { row in
            guard let step = row.first ?? nil, let value = row[index] else { return nil }
            return (Int(step), value)
        }
    }

    /// The header and rows of a log, each row with its text as written.
    static func parse(path: String) throws -> (columns: [String], rows: [(line: Substring, values: [Double?])]) {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw EngineError.file(path: path, message: "cannot be read: \(error.localizedDescription)")
        }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        lines.removeLast()  // the text after the last newline: empty, or a torn row
        guard let header = lines.first, header.split(separator: ",").first == "step" else {
            throw EngineError.file(path: path, message: "not a metrics log: the first line must be a header starting with \"step\"")
        }
        let columns = header.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        let rows = try lines.dropFirst().enumerated().map { offset, line in
            let cells = line.split(separator: ",", omittingEmptySubsequences: false)
            guard cells.count == columns.count else {
                throw EngineError.file(path: path, message: "line \(offset + 2) has \(cells.count) cells, the header has \(columns.count)")
            }
            let values = try cells.enumerated().map { column, cell -> Double? in
                if cell.isEmpty { return nil }
                guard let value = Double(cell) else {
                    throw EngineError.file(path: path, message: "line \(offset + 2), column \(columns[column]): \"\(cell)\" is not a number")
                }
                return value
            }
            guard values[0] != nil else { throw EngineError.file(path: path, message: "line \(offset + 2) has no step") }
            return (line, values)
        }
        return (columns, rows)
    }
}

// MARK: - training runs

/// What one training step reports to its `TrainingRun`.
public struct StepReport {
    public var loss: Float
    public var learningRate: Float
    /// Values of extra columns (`TrainingRun.Options.columns`) measured at this step, such as a gradient norm or a
    /// validation score; columns without a value are left empty in the log.
    public var values: [String: Double]
    /// Ends the run after this step (early stopping); the checkpoint is saved first.
    public var stop: Bool
    /// A line printed after this step's progress update (e.g. a validation result).
    public var message: String?

    public init(loss: Float, learningRate: Float, values: [String: Double] = [:], stop: Bool = false,
                message: String? = nil) {
        self.loss = loss
        self.learningRate = learningRate
        self.values = values
        self.stop = stop
        self.message = message
    }
}

/// How `TrainingRun.train` ended.
public enum TrainingOutcome: Equatable {
    /// All `totalSteps` are done.
    case completed
    /// A step asked to stop (`StepReport.stop`).
    case stoppedEarly
    /// SIGINT or SIGTERM arrived; the checkpoint of the last completed step is saved.
    case interrupted(signal: Int32)
}

/// A training job's run directory and step loop: progress line, per-step metrics log, periodic and best
/// checkpoints, clean stop on SIGINT/SIGTERM, and resumption.
///
/// The run directory holds:
/// - `checkpoint/`: the latest `TrainingCheckpoint` of `model` and `components`, saved every `checkpointEvery`
///   steps, when the run ends and when it is interrupted;
/// - `best.safetensors`: the model's weights and buffers after the step with the best value so far of
///   `Options.best`'s column (metadata: that step and value), written atomically;
/// - `metrics.csv`: columns `step,loss,lr,seconds` and `Options.columns`, one row per step (`MetricsLog`).
///
/// A step whose loss, or a value of one of `Options.finiteColumns`, is NaN or infinite ends the run with an error
/// naming the step and the column; nothing is saved after it, so the last checkpoint stays the one to resume.
///
/// A checkpoint directory is replaced whole (`TrainingCheckpoint.replace`), so a crash at any point leaves a
/// complete checkpoint.
///
/// Resumed runs repeat uninterrupted ones bit for bit when a step's randomness comes from the checkpointed
/// components (random generators, optimizer state) and from the step index `train` passes, and learning rates
/// are functions of the step. Rows of `metrics.csv` after the resumed step (written before a crash) are dropped.
public final class TrainingRun {
    /// Keeps `best/` at the best value of a logged column.
    public struct BestCheckpoint {
        public var column: String
        public var higherIsBetter: Bool
        public init(column: String, higherIsBetter: Bool) {
            self.column = column
            self.higherIsBetter = higherIsBetter
        }
    }

    public struct Options {
        public var totalSteps: Int
        /// Saves `checkpoint/` every this many steps; 0 saves it only when the run ends or is interrupted.
        public var checkpointEvery: Int
        /// Extra columns of `metrics.csv`, after `step,loss,lr,seconds`.
        public var columns: [String] = []
        /// Columns whose values must be finite (loss terms), besides `loss`.
        public var finiteColumns: [String] = []
        public var best: BestCheckpoint?
        /// Saved with every checkpoint (keys must not start with `run.` or `histodiff.`).
        public var metadata: [String: String] = [:]
        /// Weight of the past in the loss the progress line shows (a bias-corrected exponential moving average).
        public var lossSmoothing = 0.9
        /// Prefix of progress lines and messages, e.g. the command name.
        public var label = ""
        public var progress = ProgressOutput.standardError
        /// Seconds between progress updates (`ProgressReporter`'s default when nil).
        public var progressInterval: Double?
        /// Told to the user after an interrupt, e.g. "rerun the same command with --resume".
        public var resumeHint = "run the same command again to resume"
        /// The ranks training this model together: all run the loop, rank 0 alone writes the directory's files
        /// and progress, and a stop signal that reaches any rank stops every rank after the same step.
        public var group: any ProcessGroup = SingleProcess.shared

        public init(totalSteps: Int, checkpointEvery: Int) {
            self.totalSteps = totalSteps
            self.checkpointEvery = checkpointEvery
        }
    }

    public static let metricsFileName = "metrics.csv"
    public static let checkpointDirectoryName = "checkpoint"
    public static let bestFileName = "best.safetensors"
    static let secondsKey = "run.seconds", bestValueKey = "run.best_value", bestStepKey = "run.best_step"
    static let fixedColumns = ["step", "loss", "lr", "seconds"]

    public let directory: String
    public let model: Module
    public let components: [String: any CheckpointableState]
    public let options: Options
    /// Steps completed: set by `resume`, advanced by `train`.
    public private(set) var step = 0
    /// The step the latest checkpoint holds; nil when none was saved or resumed.
    public private(set) var savedStep: Int?
    /// The best value of `options.best`'s column so far and the step after which it was measured.
    public private(set) var best: (value: Double, step: Int)?
    /// The caller's metadata saved with the checkpoint `resume` restored.
    public private(set) var resumedMetadata: [String: String] = [:]
    private var resumed = false
    /// Training seconds before this process (saved in checkpoints), so the `seconds` column continues.
    private var earlierSeconds = 0.0

    /// Checks the options and creates `directory` if needed.
    public init(directory: String, model: Module, components: [String: any CheckpointableState], options: Options) throws {
        var problems: [String] = []
        if options.totalSteps < 1 { problems.append("totalSteps \(options.totalSteps) is below 1") }
        if options.checkpointEvery < 0 { problems.append("checkpointEvery \(options.checkpointEvery) is negative") }
        if !(options.lossSmoothing >= 0 && options.lossSmoothing < 1) {
            problems.append("lossSmoothing \(options.lossSmoothing) is outside [0, 1)")
        }
        let malformed = options.columns.filter { $0.isEmpty || $0.contains { ",\"\n\r".contains($0) } }
        if !malformed.isEmpty { problems.append("column names must be non-empty without commas, quotes or newlines: \(malformed)") }
        let all = Self.fixedColumns + options.columns
        let repeated = Set(all.filter { name in all.filter { $0 == name }.count > 1 }).sorted()
        if !repeated.isEmpty { problems.append("columns appear twice (step, loss, lr and seconds are always logged): \(repeated.joined(separator: ", "))") }
        let unknownFinite = options.finiteColumns.filter { !options.columns.contains($0) }
        if !unknownFinite.isEmpty { problems.append("finite columns \(unknownFinite) are not among the columns") }
        if let best = options.best, !options.columns.contains(best.column) {
            problems.append("the best-checkpoint column \(best.column) is not one of the columns \(options.columns)")
        }
        let reserved = options.metadata.keys.filter { $0.hasPrefix("run.") || $0.hasPrefix("histodiff.") }.sorted()
        if !reserved.isEmpty { problems.append("metadata keys \(reserved.joined(separator: ", ")) are reserved") }
        guard problems.isEmpty else {
            throw EngineError.invalidValue(op: "TrainingRun", message: problems.joined(separator: "; "))
        }
        if options.group.isRoot { try FileSystem.createFolder(directory, purpose: "run") }
        self.directory = directory
        self.model = model
        self.components = components
        self.options = options
    }

    private func path(_ name: String) -> String { URL(fileURLWithPath: directory).appendingPathComponent(name).path }

    /// The directory of the latest checkpoint, nil when the run directory holds none.
    public var latestCheckpoint: String? { existingCheckpoint(Self.checkpointDirectoryName) }

    /// The best weights file, nil when none was saved.
    public var bestWeights: String? {
        let file = path(Self.bestFileName)
        return FileManager.default.fileExists(atPath: file) ? file : nil
    }

    private func existingCheckpoint(_ name: String) -> String? { TrainingCheckpoint.existing(path(name)) }

    /// Restores `model` and `components` from the latest checkpoint and returns the step to continue from (the
    /// steps it had completed); 0, changing nothing, when the directory holds no checkpoint. A checkpoint of a
    /// different model or different components is an `EngineError.file` listing the missing and unknown names.
    @discardableResult
    public func resume() throws -> Int {
        if let checkpoint = latestCheckpoint {
            let restored: (step: Int, metadata: [String: String])
            do {
                restored = try TrainingCheckpoint.load(from: checkpoint, model: model, components: components)
            } catch let EngineError.file(path, message) {
                throw EngineError.file(path: path, message: "cannot resume the run: \(message)")
            }
            step = restored.step
            savedStep = step
            earlierSeconds = restored.metadata[Self.secondsKey].flatMap(Double.init) ?? 0
            if let value = restored.metadata[Self.bestValueKey].flatMap(Double.init),
               let bestStep = restored.metadata[Self.bestStepKey].flatMap(Int.init) {
                best = (value, bestStep)
            }
            resumedMetadata = restored.metadata.filter { !$0.key.hasPrefix("run.") }
        }
        resumed = true
        return step
    }

    /// Runs `body(step)` for step = `self.step` ..< `totalSteps`, where `step` counts the steps done before (0 for
    /// the first: the position for `LearningRateSchedule`s and step-indexed data); the body does one optimizer
    /// step and reports it. Logs every step and saves checkpoints. Polls for
    /// SIGINT/SIGTERM between steps: on one it saves the checkpoint, prints how to resume and returns
    /// `.interrupted` (the caller exits). A run directory that holds a checkpoint must be `resume`d first. An
    /// error thrown by `body` ends the run without a checkpoint (the last saved one stays).
    @discardableResult
    public func train(_ body: (_ step: Int) throws -> StepReport) throws -> TrainingOutcome {
        if !resumed, let existing = latestCheckpoint {
            throw EngineError.file(path: existing, message:
                "the run directory already holds a checkpoint: resume it, or choose another directory to start over")
        }
        let writes = options.group.isRoot
        let log = try writes ? MetricsWriter(path: path(Self.metricsFileName),
                                             columns: Self.fixedColumns + options.columns, keepingThrough: step) : nil
        defer { log?.close() }
        let signals = StopSignalHandlers()
        defer { signals.restore() }
        let reporter = ProgressReporter(total: options.totalSteps, label: options.label, startStep: step,
                                        output: writes ? options.progress : .none, interval: options.progressInterval)
        let clock = { ProcessInfo.processInfo.systemUptime }
        let sessionStart = clock()
        var seconds: Double { earlierSeconds + clock() - sessionStart }
        var smoothed = 0.0, smoothedCount = 0
        var lastValues: [String: Double] = [:]

        func saveLatest() throws {
            guard savedStep != step else { return }
            if writes { try saveCheckpoint(seconds: seconds) }
            savedStep = step
        }
        func bestNote() -> String {
            guard let column = options.best?.column, let best else { return "" }
            return "; best \(column) \(ProgressReporter.number(best.value)) after step \(best.step)"
        }

        while step < options.totalSteps {
            let signal = try agreedSignal(signals.pending)
            if signal != 0 {
                try saveLatest()
                reporter.message("stopped by \(signalName(signal)) after step \(step)/\(options.totalSteps) "
                                 + "(\(reporter.summary(step: step)))\(bestNote()); checkpoint saved in \(path(Self.checkpointDirectoryName)); "
                                 + options.resumeHint)
                return .interrupted(signal: signal)
            }
            let report = try body(step)
            let undeclared = report.values.keys.filter { !options.columns.contains($0) }.sorted()
            guard undeclared.isEmpty else {
                throw EngineError.invalidValue(op: "TrainingRun", message:
                    "step \(step + 1) reports values for columns that were not declared: \(undeclared.joined(separator: ", ")) (declared: \(options.columns.joined(separator: ", ")))")
            }
            // The terms first: a NaN total is named by the term that made it.
            let nonFinite = (options.finiteColumns.compactMap { column in report.values[column].map { (column, $0) } }
                             + [("loss", Double(report.loss))]).first { !$0.1.isFinite }
            if let (column, value) = nonFinite {
                let checkpoint = path(Self.checkpointDirectoryName)
                let kept = savedStep.map { "the checkpoint of step \($0) in \(checkpoint) stays; " }
                    ?? "no checkpoint was saved yet; "
                throw EngineError.invalidValue(op: "training", message:
                    "step \(step + 1): \(column) is \(value); the run stopped without saving it: \(kept)"
                    + "fix the cause (a lower learning rate?) before resuming")
            }
            step += 1
            let cells = ["\(step)", "\(report.loss)", "\(report.learningRate)", String(format: "%.3f", seconds)]
                + options.columns.map { report.values[$0].map { "\($0)" } ?? "" }
            try log?.append(cells)

            if let criterion = options.best, let value = report.values[criterion.column], value.isFinite,
               best.map({ criterion.higherIsBetter ? value > $0.value : value < $0.value }) ?? true {
                best = (value, step)
                if writes { try model.save(to: path(Self.bestFileName), metadata: [Self.bestStepKey: String(step),
                    Self.bestValueKey: String(value), "run.best_column": criterion.column]) }
            }

            let beta = options.lossSmoothing
            smoothed = beta * smoothed + (1 - beta) * Double(report.loss)
            smoothedCount += 1
            lastValues.merge(report.values) { $1 }
            reporter.update(step: step, values: [("loss", smoothed / (1 - Foundation.pow(beta, Double(smoothedCount)))),
                                                 ("lr", Double(report.learningRate))]
                                                + options.columns.compactMap { c in lastValues[c].map { (c, $0) } })
            if let message = report.message { reporter.message(message) }

            if report.stop {
                try saveLatest()
                reporter.message("stopped early after step \(step)/\(options.totalSteps) (\(reporter.summary(step: step)))"
                                 + bestNote() + "; checkpoint saved in \(path(Self.checkpointDirectoryName))")
                return .stoppedEarly
            }
            if options.checkpointEvery > 0 && step % options.checkpointEvery == 0 { try saveLatest() }
        }
        try saveLatest()
        let loss = smoothedCount > 0
            ? "; loss \(ProgressReporter.number(smoothed / (1 - Foundation.pow(options.lossSmoothing, Double(smoothedCount))))) (smoothed)" : ""
        reporter.message("finished \(step)/\(options.totalSteps) steps (\(reporter.summary(step: step)))\(loss)\(bestNote())")
        return .completed
    }

    /// The stop signal of any rank (SIGTERM before SIGINT), so that every rank stops after the same step.
    private func agreedSignal(_ own: Int32) throws -> Int32 {
        guard options.group.size > 1 else { return own }
        var raised: [Float] = [own == SIGINT ? 1 : 0, own == SIGTERM ? 1 : 0]
        try raised.withUnsafeMutableBufferPointer { try options.group.sumInPlace($0) }
        return raised[1] > 0 ? SIGTERM : raised[0] > 0 ? SIGINT : 0
    }

    /// Saves the model and components at the current step into `checkpoint/`, replacing it whole
    /// (`TrainingCheckpoint.replace`).
    private func saveCheckpoint(seconds: Double) throws {
        var metadata = options.metadata
        metadata[Self.secondsKey] = String(seconds)
        if let best {
            metadata[Self.bestValueKey] = String(best.value)
            metadata[Self.bestStepKey] = String(best.step)
        }
        try TrainingCheckpoint.replace(path(Self.checkpointDirectoryName), model: model, step: step,
                                       components: components, metadata: metadata)
    }
}

/// Appends rows to `metrics.csv`. Opening it keeps the rows up to a step (a resumed run drops the rows a crashed
/// run wrote after its checkpoint) and checks that the header is this run's.
private final class MetricsWriter {
    private let path: String
    private let handle: FileHandle

    init(path: String, columns: [String], keepingThrough step: Int) throws {
        self.path = path
        let header = columns.joined(separator: ",")
        if FileManager.default.fileExists(atPath: path) {
            let existing = try MetricsLog.parse(path: path)
            guard existing.columns == columns else {
                throw EngineError.file(path: path, message:
                    "has columns \(existing.columns.joined(separator: ",")) but this run logs \(header); move it away or use another run directory")
            }
            let kept = existing.rows.filter { $0.values[0]! <= Double(step) }.map { String($0.line) + "\n" }
            try writeAtomically(Data((header + "\n" + kept.joined()).utf8), to: path)
        } else {
            try writeAtomically(Data((header + "\n").utf8), to: path)
        }
        guard let handle = FileHandle(forWritingAtPath: path) else {
            throw EngineError.file(path: path, message: "cannot be opened for appending")
        }
        self.handle = handle
        do { try handle.seekToEnd() } catch {
            throw EngineError.file(path: path, message: "cannot be opened for appending: \(error.localizedDescription)")
        }
    }

    /// One row, written with a single call so that a crash can only cut off the last line.
    func append(_ cells: [String]) throws {
        do { try handle.write(contentsOf: Data((cells.joined(separator: ",") + "\n").utf8)) } catch {
            throw EngineError.file(path: path, message: "cannot be appended to: \(error.localizedDescription)")
        }
    }

    func close() { try? handle.close() }
}

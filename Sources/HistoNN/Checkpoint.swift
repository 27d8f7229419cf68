import Foundation
import HistoCore

/// Named host tensors and string metadata: what one stateful training component saves.
public struct CheckpointState {
    public var tensors: [String: HostTensor]
    public var metadata: [String: String]
    public init(tensors: [String: HostTensor] = [:], metadata: [String: String] = [:]) {
        self.tensors = tensors; self.metadata = metadata
    }
}

/// A training component whose state a checkpoint saves and restores exactly (optimizers, Lookahead, EMA,
/// random generators, modules).
public protocol CheckpointableState: AnyObject {
    func checkpointState() throws -> CheckpointState
    /// Restores what `checkpointState()` produced; errors are `EngineError.file` naming `source`.
    func restore(from state: CheckpointState, source: String) throws
}

// MARK: - modules

/// What `Module.load` did. Names are relative to the module loaded into.
public struct LoadReport: Equatable {
    public var loaded: [String] = []
    /// In the module but not in the file (only when not strict).
    public var missing: [String] = []
    /// In the file but not in the module (only when not strict).
    public var unexpected: [String] = []
    /// Skipped because they lie under an ignored prefix (in the module, the file or both).
    public var ignored: [String] = []
}

extension Module: CheckpointableState {
    /// Parameters then buffers, with names relative to this module (its `state_dict`).
    public func stateTensors() -> [(name: String, tensor: ModuleTensor)] {
        parameters().map { ($0.name, $0.parameter as ModuleTensor) } + buffers().map { ($0.name, $0.buffer as ModuleTensor) }
    }

    public func checkpointState() throws -> CheckpointState {
        var state = CheckpointState()
        for (name, t) in stateTensors() { state.tensors[name] = try HostTensor(t.value) }
        return state
    }

    public func restore(from state: CheckpointState, source: String) throws { try load(state.tensors, source: source) }

    /// Writes parameters and buffers to a safetensors file (atomically). Weights holding NaN or infinity are never
    /// written: that throws `EngineError.file(path:…)` naming the tensor, and a file already at `path` stays.
    public func save(to path: String, metadata: [String: String] = [:]) throws {
        let tensors = try stateTensors().map { ($0.name, try HostTensor($0.tensor.value)) }
        if let problem = nonFiniteProblem(tensors) {
            let kept = FileManager.default.fileExists(atPath: path) ? "the file already there is kept"
                : "nothing was written"
            throw EngineError.file(path: path, message: "not saved: \(problem); \(kept)")
        }
        try SafeTensors.write(tensors, metadata: metadata, to: path)
    }

    /// Loads parameters and buffers from a safetensors file; see `load(_:source:strict:ignoring:)`.
    @discardableResult
    public func load(from path: String, strict: Bool = true, ignoring prefixes: [String] = []) throws -> LoadReport {
        try load(SafeTensors.read(path).tensors, source: path, strict: strict, ignoring: prefixes)
    }

    /// Loads tensors by name. Names under any of `prefixes` (dotted-path prefixes, e.g. `head`) are skipped on
    /// both sides: fine-tuning loads everything but a new head. Otherwise, when `strict`, every module tensor
    /// must be present and every file tensor known; shapes must always match. Any violation throws
    /// `EngineError.file(path: source, …)` listing every offending name, and nothing is loaded.
    @discardableResult
    public func load(_ tensors: [String: HostTensor], source: String, strict: Bool = true,
                     ignoring prefixes: [String] = []) throws -> LoadReport {
        let ignored = { (name: String) in prefixes.contains { hasPathPrefix(name, $0) } }
        let own = stateTensors()
        var report = LoadReport()
        var mismatches: [String] = []
        var assignments: [(ModuleTensor, [Float])] = []
        for (name, t) in own {
            if ignored(name) { report.ignored.append(name); continue }
            guard let stored = tensors[name] else { report.missing.append(name); continue }
            guard stored.shape == t.shape else {
                mismatches.append("\(name) (file \(describe(stored.shape)), model \(describe(t.shape)))"); continue
            }
            assignments.append((t, stored.values))
            report.loaded.append(name)
        }
        let ownNames = Set(own.map(\.name))
        for name in tensors.keys.sorted() where !ownNames.contains(name) {
            if ignored(name) { report.ignored.append(name) } else { report.unexpected.append(name) }
        }
        var problems: [String] = []
        if strict && !report.missing.isEmpty {
            problems.append("\(report.missing.count) missing: \(report.missing.joined(separator: ", "))")
        }
        if strict && !report.unexpected.isEmpty {
            problems.append("\(report.unexpected.count) unknown: \(report.unexpected.joined(separator: ", "))")
        }
        if !mismatches.isEmpty {
            problems.append("\(mismatches.count) shape mismatches: \(mismatches.joined(separator: ", "))")
        }
        guard problems.isEmpty else {
            throw EngineError.file(path: source, message: "does not match the model: " + problems.joined(separator: "; "))
        }
        for (t, values) in assignments { t.assign(values) }
        return report
    }
}

// MARK: - random generators

extension RandomGenerator: CheckpointableState {
    /// Metadata `seed` and `offset` (the stream position).
    public func checkpointState() throws -> CheckpointState {
        CheckpointState(metadata: ["seed": String(seed), "offset": String(offset)])
    }

    /// Moves this generator to the saved stream position; its seed must be the saved one.
    public func restore(from state: CheckpointState, source: String) throws {
        guard let savedSeed = state.metadata["seed"].flatMap(UInt64.init),
              let savedOffset = state.metadata["offset"].flatMap(UInt64.init) else {
            throw EngineError.file(path: source, message: "random generator state: seed or offset metadata is missing or malformed")
        }
        guard savedSeed == seed else {
            throw EngineError.file(path: source, message: "random generator state: saved with seed \(savedSeed), but this generator has seed \(seed)")
        }
        offset = savedOffset
    }
}

// MARK: - training checkpoints

/// A resumable training checkpoint: a directory holding two safetensors files.
/// - `model.safetensors`: the model's parameters and buffers under their dotted names, loadable on its own
///   (`Module.load(from:)`, e.g. for evaluation or fine-tuning). Metadata: the caller's entries plus
///   `histodiff.step` and `histodiff.checkpoint_id`.
/// - `training_state.safetensors`: each component's tensors as `<component>/<name>` and metadata as
///   `<component>.<key>` (e.g. `optimizer/exp_avg/encoder.conv.weight`, `optimizer.step_count`,
///   `dropout_rng.offset`), plus the same step and checkpoint id.
///
/// The step is the position of learning-rate schedules (pure functions of the step). Each file is replaced
/// atomically; the shared checkpoint id detects a pair torn by a crash between the two renames. Save at an
/// optimizer-step boundary (a `GradientAccumulator` with pending micro-batches is not saved).
public enum TrainingCheckpoint {
    public static let weightsFileName = "model.safetensors"
    public static let stateFileName = "training_state.safetensors"
    static let stepKey = "histodiff.step", idKey = "histodiff.checkpoint_id", componentsKey = "histodiff.components"

    /// Saves `model` and `components` (names must be non-empty and free of `.` and `/`) into `directory`,
    /// creating it if needed. A model or component tensor holding NaN or infinity is never saved: that throws
    /// `EngineError.file(path: directory, …)` naming the step, the tensor and its component before anything is
    /// written (`replace` then keeps the previous checkpoint).
    public static func save(to directory: String, model: Module, step: Int,
                            components: [String: any CheckpointableState], metadata: [String: String] = [:]) throws {
        try checkComponentNames(components.keys, directory: directory)
        let reserved = metadata.keys.filter { $0.hasPrefix("histodiff.") }
        guard reserved.isEmpty else {
            throw EngineError.file(path: directory, message: "metadata keys \(reserved.sorted().joined(separator: ", ")) are reserved")
        }
        let id = UUID().uuidString
        let stamp = [stepKey: String(step), idKey: id]

        var stateTensors: [(name: String, tensor: HostTensor)] = []
        var stateMetadata = stamp
        stateMetadata[componentsKey] = try encodeJSON(components.keys.sorted())
        for name in components.keys.sorted() {
            let state = try components[name]!.checkpointState()
            for key in state.tensors.keys.sorted() { stateTensors.append(("\(name)/\(key)", state.tensors[key]!)) }
            for (key, value) in state.metadata { stateMetadata["\(name).\(key)"] = value }
        }
        let modelState = try model.checkpointState()
        let weights = modelState.tensors.keys.sorted().map { ($0, modelState.tensors[$0]!) }
        if let problem = nonFiniteProblem(weights, component: "model") ?? nonFiniteProblem(stateTensors) {
            throw EngineError.file(path: directory, message: "checkpoint of step \(step) not saved: \(problem)")
        }
        try FileSystem.createFolder(directory, purpose: "checkpoint")

        let directoryURL = URL(fileURLWithPath: directory)
        try SafeTensors.write(stateTensors, metadata: stateMetadata, to: directoryURL.appendingPathComponent(stateFileName).path)
        try SafeTensors.write(weights, metadata: metadata.merging(stamp) { a, _ in a },
                              to: directoryURL.appendingPathComponent(weightsFileName).path)
    }

    /// Restores `model` (strictly) and every component from `directory`. The components must be exactly the
    /// saved ones. Returns the saved step and the caller's metadata. The files and the component list are
    /// checked before anything changes; a component whose own state does not fit throws after the model and the
    /// components before it (in name order) were restored, so start over with fresh objects after an error.
    public static func load(from directory: String, model: Module,
                            components: [String: any CheckpointableState]) throws -> (step: Int, metadata: [String: String]) {
        try checkComponentNames(components.keys, directory: directory)
        let directoryURL = URL(fileURLWithPath: directory)
        let weightsPath = directoryURL.appendingPathComponent(weightsFileName).path
        let statePath = directoryURL.appendingPathComponent(stateFileName).path
        let weights = try SafeTensors.read(weightsPath)
        let state = try SafeTensors.read(statePath)
        guard let id = weights.metadata[idKey], let step = weights.metadata[stepKey].flatMap(Int.init) else {
            throw EngineError.file(path: weightsPath, message: "not a training checkpoint (no \(stepKey)/\(idKey) metadata)")
        }
        guard state.metadata[idKey] == id, state.metadata[stepKey] == String(step) else {
            throw EngineError.file(path: statePath, message:
                "belongs to a different save than \(weightsFileName) (step \(state.metadata[stepKey] ?? "?") vs \(step)); the checkpoint is torn")
        }

        guard let saved = state.metadata[componentsKey].flatMap({ try? decodeJSON([String].self, $0) }) else {
            throw EngineError.file(path: statePath, message: "\(componentsKey) metadata is missing or malformed")
        }
        try checkNames(expected: Array(components.keys), found: saved, what: "components") {
            .file(path: statePath, message: "training state does not match: \($0)")
        }
        var split = Dictionary(saved.map { ($0, CheckpointState()) }, uniquingKeysWith: { a, _ in a })
        for (key, tensor) in state.tensors {
            guard let slash = key.firstIndex(of: "/") else {
                throw EngineError.file(path: statePath, message: "tensor \(key) names no component")
            }
            let component = String(key[..<slash])
            guard split[component] != nil else {
                throw EngineError.file(path: statePath, message: "tensor \(key) belongs to no saved component")
            }
            split[component]!.tensors[String(key[key.index(after: slash)...])] = tensor
        }
        for (key, value) in state.metadata where !key.hasPrefix("histodiff.") {
            guard let dot = key.firstIndex(of: ".") else {
                throw EngineError.file(path: statePath, message: "metadata key \(key) names no component")
            }
            let component = String(key[..<dot])
            guard split[component] != nil else {
                throw EngineError.file(path: statePath, message: "metadata key \(key) belongs to no saved component")
            }
            split[component]!.metadata[String(key[key.index(after: dot)...])] = value
        }

        try model.load(weights.tensors, source: weightsPath)
        for name in components.keys.sorted() {
            try components[name]!.restore(from: split[name]!, source: "\(statePath) [\(name)]")
        }
        return (step, weights.metadata.filter { !$0.key.hasPrefix("histodiff.") })
    }

    /// Saves like `save`, replacing `directory` whole: the new checkpoint is written as `<directory>.partial`, the
    /// old one renamed to `<directory>.previous`, the new one renamed into place, then the old one removed, so a
    /// crash at any point leaves a complete checkpoint (`existing` finds it).
    /// A tensor with NaN or infinity is not saved (see `save`): the error says which, and that the last good
    /// checkpoint stays where resuming finds it.
    public static func replace(_ directory: String, model: Module, step: Int,
                               components: [String: any CheckpointableState], metadata: [String: String] = [:]) throws {
        let partial = directory + ".partial", previous = directory + ".previous"
        try removeIfPresent(partial)
        do {
            try save(to: partial, model: model, step: step, components: components, metadata: metadata)
        } catch let EngineError.file(path, message) where path == partial {
            let kept = existing(directory).map { "the last good checkpoint \($0) is kept" }
                ?? "there is no earlier checkpoint"
            throw EngineError.file(path: directory, message: "\(message); \(kept)")
        }
        if FileManager.default.fileExists(atPath: directory) {
            try removeIfPresent(previous)
            try move(directory, to: previous)
        }
        try move(partial, to: directory)
        try removeIfPresent(previous)
    }

    /// The complete checkpoint that `replace` left at `directory`: the directory itself, or `<directory>.previous`
    /// when a crash came between its renames; nil when neither exists.
    public static func existing(_ directory: String) -> String? {
        [directory, directory + ".previous"].first { FileManager.default.fileExists(atPath: $0) }
    }

    private static func checkComponentNames(_ names: Dictionary<String, any CheckpointableState>.Keys, directory: String) throws {
        let bad = names.filter { $0.isEmpty || $0.contains(".") || $0.contains("/") }
        guard bad.isEmpty else {
            throw EngineError.file(path: directory, message:
                "component names must be non-empty without '.' or '/': \(bad.sorted().joined(separator: ", "))")
        }
    }
}

// MARK: - non-finite weights

/// What is wrong with the first tensor holding NaN or infinity, nil when every value is finite: "model tensor
/// encoder.weight holds 3 NaN and 1 infinite of 432 values". Names `component/tensor` are shown as the
/// component's tensor.
func nonFiniteProblem(_ tensors: [(name: String, tensor: HostTensor)], component: String? = nil) -> String? {
    for (name, tensor) in tensors where !tensor.values.allSatisfy(\.isFinite) {
        let nan = tensor.values.lazy.filter(\.isNaN).count
        let infinite = tensor.values.lazy.filter(\.isInfinite).count
        let counts = [nan > 0 ? "\(nan) NaN" : nil, infinite > 0 ? "\(infinite) infinite" : nil].compactMap { $0 }
        let owner: String
        if let component {
            owner = "\(component) tensor \(name)"
        } else if let slash = name.firstIndex(of: "/") {
            owner = "\(name[..<slash]) tensor \(name[name.index(after: slash)...])"
        } else {
            owner = "tensor \(name)"
        }
        return "\(owner) holds \(counts.joined(separator: " and ")) of \(tensor.values.count) values"
    }
    return nil
}

// MARK: - JSON helpers for metadata values

/// `value` as JSON text (keys sorted), for a checkpoint's string metadata.
public func encodeJSON<T: Encodable>(_ value: T) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

/// A `T` from JSON metadata text.
public func decodeJSON<T: Decodable>(_ type: T.Type, _ text: String) throws -> T {
    try JSONDecoder().decode(type, from: Data(text.utf8))
}

private func removeIfPresent(_ path: String) throws {
    guard FileManager.default.fileExists(atPath: path) else { return }
    do { try FileManager.default.removeItem(atPath: path) } catch {
        throw EngineError.file(path: path, message: "cannot be removed: \(error.localizedDescription)")
    }
}

private func move(_ source: String, to destination: String) throws {
    guard rename(source, destination) == 0 else {
        throw EngineError.file(path: destination, message: "cannot rename \(source) to it: \(String(cString: strerror(errno)))")
    }
}

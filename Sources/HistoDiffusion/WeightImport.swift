import HistoCore
import HistoNN

/// How tensor names in an external checkpoint become parameter/buffer names of a module.
///
/// Each source (file) name goes through `rules` in order; the first rule that matches decides:
/// - `.exact(from, to)`: the name `from` becomes `to`;
/// - `.prefix(from, to)`: a name starting with `from` gets `to` in its place (plain text, so include the dot:
///   `.prefix("first_stage_model.", "")`);
/// - `.skip(pattern)`: the tensor is ignored (training-only state, other sub-models).
/// A name no rule matches is kept as it is. Patterns are globs in which `*` matches any run of characters
/// (dots included) and every other character itself.
///
/// `keep` lists glob patterns of module names that may receive nothing from the file; they keep their current
/// values (e.g. a new head). Every other module tensor must receive exactly one file tensor.
public struct NameMap: Equatable, Sendable {
    public enum Rule: Equatable, Sendable {
        case exact(String, String)
        case prefix(String, String)
        case skip(String)
    }

    public var rules: [Rule]
    public var keep: [String]

    public init(_ rules: [Rule] = [], keep: [String] = []) {
        self.rules = rules
        self.keep = keep
    }

    /// Names unchanged, nothing skipped.
    public static let identity = NameMap()

    /// A standalone LDM `AutoencoderKL` checkpoint (e.g. `kl-f4/model.ckpt` converted to safetensors) into
    /// `AutoencoderKL`: names are the same; the loss module's tensors (`loss.logvar`, LPIPS, discriminator) are
    /// skipped.
    public static let ldmAutoencoder = NameMap([.skip("loss.*")])

    /// The first stage of a full LDM checkpoint (`first_stage_model.*`) into `AutoencoderKL`; the diffusion
    /// model, its EMA, the conditioning model and the schedule buffers are skipped.
    public static let ldmFirstStage = NameMap([.prefix("first_stage_model.", ""), .skip("*")])

    /// The module name for `source`, or nil when a rule skips it.
    public func target(for source: String) -> String? {
        for rule in rules {
            switch rule {
            case let .exact(from, to) where source == from: return to
            case let .prefix(from, to) where source.hasPrefix(from): return to + source.dropFirst(from.count)
            case let .skip(pattern) where globMatches(pattern, source): return nil
            default: continue
            }
        }
        return source
    }

    /// Whether the module tensor `name` may stay unloaded.
    public func keeps(_ name: String) -> Bool { keep.contains { globMatches($0, name) } }
}

/// `*` matches any run of characters; everything else matches itself.
func globMatches(_ pattern: String, _ text: String) -> Bool {
    let p = Array(pattern.unicodeScalars), t = Array(text.unicodeScalars)
    // Greedy matching with backtracking to the last star: linear in practice, correct for `*`-only globs.
    var (i, j) = (0, 0)
    var star: (pattern: Int, text: Int)?
    while j < t.count {
        if i < p.count, p[i] == "*" {
            star = (i, j)
            i += 1
        } else if i < p.count, p[i] == t[j] {
            i += 1; j += 1
        } else if let s = star {
            star = (s.pattern, s.text + 1)
            (i, j) = (s.pattern + 1, s.text + 1)
        } else {
            return false
        }
    }
    while i < p.count, p[i] == "*" { i += 1 }
    return i == p.count
}

/// Loading external checkpoints into modules through a `NameMap`.
public enum WeightImport {
    /// What an import did.
    public struct Report: Sendable {
        /// (file name, module name) of every loaded tensor, in file order.
        public var loaded: [(source: String, target: String)] = []
        /// File tensors a skip rule ignored.
        public var skipped: [String] = []
        /// Module tensors left as they were (matched by `keep`, absent from the file).
        public var kept: [String] = []
    }

    /// Loads the safetensors file at `path` into `module`'s parameters and buffers through `map`. Nothing is
    /// assigned unless everything fits; otherwise throws `EngineError.file(path:)` naming every offending tensor:
    /// file tensors whose mapped name is not in the module, module tensors nothing maps to (unless kept), module
    /// tensors two file tensors map to, and shape mismatches.
    @discardableResult
    public static func load(into module: Module, from path: String, map: NameMap) throws -> Report {
        let file = try SafeTensors.read(path)
        return try load(into: module, tensors: file.tensors, order: file.names, source: path, map: map)
    }

    /// Loads named host tensors (e.g. a parsed file) as `load(into:from:map:)` does; `source` names them in
    /// errors, `order` fixes the report order (default: sorted names).
    @discardableResult
    public static func load(into module: Module, tensors: [String: HostTensor], order: [String]? = nil,
                            source: String, map: NameMap) throws -> Report {
        let state = module.stateTensors()
        let own = Dictionary(state.map { ($0.name, $0.tensor) }, uniquingKeysWith: { a, _ in a })
        var report = Report()
        var sourcesOf: [String: [String]] = [:]
        var unknown: [String] = [], mismatched: [String] = []
        for name in order ?? tensors.keys.sorted() {
            guard let stored = tensors[name] else { continue }
            guard let target = map.target(for: name) else { report.skipped.append(name); continue }
            let arrow = target == name ? name : "\(name) → \(target)"
            guard let destination = own[target] else { unknown.append(arrow); continue }
            sourcesOf[target, default: []].append(name)
            if stored.shape != destination.shape {
                mismatched.append("\(arrow) (file \(describe(stored.shape)), module \(describe(destination.shape)))")
            } else {
                report.loaded.append((name, target))
            }
        }
        let ownNames = state.map(\.name)
        let unfed = ownNames.filter { sourcesOf[$0] == nil }
        report.kept = unfed.filter(map.keeps)
        let missing = unfed.filter { !map.keeps($0) }
        let duplicated = ownNames.compactMap { name in
            sourcesOf[name].flatMap { $0.count > 1 ? "\(name) ← \($0.joined(separator: ", "))" : nil }
        }

        func counted(_ n: Int, _ noun: String) -> String { "\(n) \(noun)\(n == 1 ? "" : "s")" }
        var problems: [String] = []
        if !unknown.isEmpty { problems.append("no module tensor for \(counted(unknown.count, "file tensor")): \(unknown.joined(separator: ", "))") }
        if !missing.isEmpty { problems.append("no file tensor for \(counted(missing.count, "module tensor")): \(missing.joined(separator: ", "))") }
        if !duplicated.isEmpty { problems.append("several file tensors for \(counted(duplicated.count, "module tensor")): \(duplicated.joined(separator: "; "))") }
        if !mismatched.isEmpty { problems.append("shape mismatch for \(counted(mismatched.count, "tensor")): \(mismatched.joined(separator: ", "))") }
        guard problems.isEmpty else {
            throw EngineError.file(path: source, message: "cannot be imported: " + problems.joined(separator: "; "))
        }
        for (name, target) in report.loaded { own[target]!.assign(tensors[name]!.values) }
        return report
    }
}

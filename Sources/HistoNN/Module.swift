import HistoCore

/// A tensor a module holds by name: a trainable `Parameter` or a non-trainable `ModuleBuffer`.
///
/// The value is always a leaf (an optimizer step or a checkpoint load replaces it with a new leaf; nothing is
/// updated in place), so a forward graph built from `value` keeps reading the value it was built with.
public class ModuleTensor {
    public var value: Tensor
    /// The module holding this tensor and the key it holds it under (set when the module tree is linked).
    weak var owner: Module?
    var key: String

    init(initialValue initial: Tensor, name: String) {
        // A draw or any other lazy initialiser is realised once here; if it cannot be (a bad shape), the
        // invalid tensor is kept so that the first `eval` that uses it reports the recorded error.
        value = (try? initial.materialized()) ?? initial
        key = name
    }

    public var shape: [Int] { value.shape }
    public var count: Int { value.count }

    /// The dotted path from the root of the module tree, e.g. `encoder.down.0.conv1.weight`. A tensor that no
    /// module holds has the name it was created with.
    public var name: String { owner.map { joinPath($0.path, key) } ?? key }

    /// The current values, row-major.
    public func values() throws -> [Float] { try value.toArray() }

    /// Replaces the value with a leaf holding `values` (same shape).
    public func assign(_ values: [Float]) { value = Tensor(values, shape: shape, label: name) }
}

/// A trainable tensor. `requiresGrad == false` (see `Module.freeze`) keeps it out of `trainableParameters()` and
/// makes optimizers leave it unchanged.
public final class Parameter: ModuleTensor {
    public var requiresGrad: Bool

    public init(_ initial: Tensor, requiresGrad: Bool = true, name: String = "") {
        self.requiresGrad = requiresGrad
        super.init(initialValue: initial, name: name)
    }

    public convenience init(_ values: [Float], shape: [Int], requiresGrad: Bool = true, name: String = "") {
        self.init(Tensor(values, shape: shape, label: name), requiresGrad: requiresGrad, name: name)
    }
}

/// Non-trainable state that belongs to a module and is checkpointed with it (PyTorch's buffers), such as
/// BatchNorm running statistics.
public final class ModuleBuffer: ModuleTensor {
    public init(_ initial: Tensor, name: String = "") { super.init(initialValue: initial, name: name) }
    public convenience init(_ values: [Float], shape: [Int], name: String = "") {
        self.init(Tensor(values, shape: shape, label: name), name: name)
    }
}

/// What a module holds under a key.
public enum ModuleMember {
    case module(Module)
    case parameter(Parameter)
    case buffer(ModuleBuffer)
}

/// Base class of layers and models: a tree of sub-modules, parameters and buffers with stable dotted names.
///
/// Naming rule (the same as PyTorch's `state_dict` for the same structure):
/// - The members of a module are found by reflection over its stored properties (`Mirror`), superclass
///   properties first, each in declaration order. The key is the property name.
/// - A property of type `Module`, `Parameter` or `ModuleBuffer` (optional or not; `nil` is skipped) is one member.
///   An array of them gives keys `name.0`, `name.1`, …; a `[String: …]` dictionary gives `name.<key>` in sorted
///   key order. Other properties (sizes, constant tensors, generators) are not members.
/// - A module can choose its keys by overriding `members()` (`Sequential` names its layers `0`, `1`, … as
///   `nn.Sequential` does).
/// - A full name joins the keys from the root with dots: `encoder.down.0.conv1.weight`. A tensor or module held
///   in two places keeps the first name reached (collections list it once).
///
/// Links from members to their holder are made when a module finishes `init` (so a model has its names as soon
/// as it is built) and refreshed whenever a collection walks the tree, so a child assigned later (a replaced
/// head) is named by the next `parameters()` call on the root.
open class Module {
    public private(set) var isTraining = true
    weak var parent: Module?
    var key = ""

    public init() { linkMembers() }

    /// The dotted path of this module from the root ("" for the root).
    public var path: String { parent.map { joinPath($0.path, key) } ?? "" }

    /// The direct members with their keys. The default reflects over stored properties (see the type's doc).
    open func members() -> [(key: String, member: ModuleMember)] {
        var mirrors: [Mirror] = []
        var next: Mirror? = Mirror(reflecting: self)
        while let mirror = next, mirror.subjectType != Module.self {
            mirrors.append(mirror)
            next = mirror.superclassMirror
        }
        var found: [(key: String, member: ModuleMember)] = []
        for mirror in mirrors.reversed() {
            for child in mirror.children {
                guard let label = child.label, !label.hasPrefix("$") else { continue }
                Module.collectMembers(child.value, key: label, into: &found)
            }
        }
        return found
    }

    private static func collectMembers(_ value: Any, key: String, into found: inout [(key: String, member: ModuleMember)]) {
        if let module = value as? Module {
            found.append((key, .module(module)))
        } else if let parameter = value as? Parameter {
            found.append((key, .parameter(parameter)))
        } else if let buffer = value as? ModuleBuffer {
            found.append((key, .buffer(buffer)))
        } else if let list = value as? [Module] {
            for (i, m) in list.enumerated() { found.append(("\(key).\(i)", .module(m))) }
        } else if let list = value as? [Parameter] {
            for (i, p) in list.enumerated() { found.append(("\(key).\(i)", .parameter(p))) }
        } else if let list = value as? [ModuleBuffer] {
            for (i, b) in list.enumerated() { found.append(("\(key).\(i)", .buffer(b))) }
        } else if let nested = value as? [[Module]] {
            for (i, list) in nested.enumerated() { collectMembers(list, key: "\(key).\(i)", into: &found) }
        } else if let table = value as? [String: Module] {
            for k in table.keys.sorted() { found.append(("\(key).\(k)", .module(table[k]!))) }
        } else if let table = value as? [String: Parameter] {
            for k in table.keys.sorted() { found.append(("\(key).\(k)", .parameter(table[k]!))) }
        } else if let table = value as? [String: ModuleBuffer] {
            for k in table.keys.sorted() { found.append(("\(key).\(k)", .buffer(table[k]!))) }
        }
    }

    /// The members that are children: a member that is this module or one of its ancestors (a back-reference)
    /// is not.
    private func childMembers() -> [(key: String, member: ModuleMember)] {
        members().filter { _, member in
            guard case .module(let m) = member else { return true }
            var current: Module? = self
            while let c = current { if c === m { return false }; current = c.parent }
            return true
        }
    }

    private func link(_ member: ModuleMember, key: String) {
        switch member {
        case .module(let m): m.parent = self; m.key = key
        case .parameter(let p): p.owner = self; p.key = key
        case .buffer(let b): b.owner = self; b.key = key
        }
    }

    /// Links the members no other module holds yet (a member shared with an earlier-built module keeps the
    /// name it has there).
    private func linkMembers() {
        for (key, member) in childMembers() {
            switch member {
            case .module(let m) where m.parent != nil: continue
            case .parameter(let p) where p.owner != nil: continue
            case .buffer(let b) where b.owner != nil: continue
            default: link(member, key: key)
            }
        }
    }

    /// Depth-first walk in member order. Each module, parameter and buffer is visited (and linked to its holder)
    /// once, under the first path that reaches it (relative to the receiver).
    private func walk(_ visit: (String, ModuleMember) -> Void) {
        var seen = Set<ObjectIdentifier>([ObjectIdentifier(self)])
        func descend(_ module: Module, prefix: String) {
            for (key, member) in module.childMembers() {
                let id: ObjectIdentifier
                switch member {
                case .module(let m): id = ObjectIdentifier(m)
                case .parameter(let p): id = ObjectIdentifier(p)
                case .buffer(let b): id = ObjectIdentifier(b)
                }
                guard seen.insert(id).inserted else { continue }
                module.link(member, key: key)
                let name = joinPath(prefix, key)
                visit(name, member)
                if case .module(let m) = member { descend(m, prefix: name) }
            }
        }
        descend(self, prefix: "")
    }

    /// Every parameter of this module and its descendants, with names relative to this module (equal to
    /// `Parameter.name` when called on the root).
    public func parameters() -> [(name: String, parameter: Parameter)] {
        var out: [(name: String, parameter: Parameter)] = []
        walk { name, member in if case .parameter(let p) = member { out.append((name, p)) } }
        return out
    }

    /// The parameters with `requiresGrad`, in `parameters()` order: what gradients are taken for.
    public func trainableParameters() -> [Parameter] { parameters().map(\.parameter).filter(\.requiresGrad) }

    /// Every buffer, with names relative to this module.
    /// Buffers whose new value is still a recorded graph (e.g. BatchNorm running statistics after a training
    /// forward): pass them to `Gradients.of(_:wrt:alongside:)` so they are computed with the step.
    public func pendingBufferUpdates() -> [Tensor] {
        buffers().map(\.buffer.value).filter { !($0.node.op is Leaf) }
    }

    /// Replaces every pending buffer update by its value (a leaf), evaluating what is not evaluated yet, so that
    /// the graph of the step that produced it can be freed.
    public func commitBufferUpdates(on backend: (any Backend)? = nil) throws {
        let pending = buffers().map(\.buffer).filter { !($0.value.node.op is Leaf) }
        if pending.isEmpty { return }
        try eval(pending.map(\.value), on: backend)
        for buffer in pending { buffer.value = try buffer.value.materialized(on: backend) }
    }

    public func buffers() -> [(name: String, buffer: ModuleBuffer)] {
        var out: [(name: String, buffer: ModuleBuffer)] = []
        walk { name, member in if case .buffer(let b) = member { out.append((name, b)) } }
        return out
    }

    /// This module ("") and every descendant module, depth-first.
    public func modules() -> [(name: String, module: Module)] {
        var out: [(name: String, module: Module)] = [("", self)]
        walk { name, member in if case .module(let m) = member { out.append((name, m)) } }
        return out
    }

    /// Number of parameter elements (all, or only trainable ones).
    public func parameterCount(trainableOnly: Bool = false) -> Int {
        parameters().map(\.parameter).filter { !trainableOnly || $0.requiresGrad }.reduce(0) { $0 + $1.count }
    }

    /// Sets training mode (dropout active, BatchNorm batch statistics) on this module and every descendant;
    /// `train(false)` is evaluation mode.
    public func train(_ on: Bool = true) {
        for (_, m) in modules() { m.isTraining = on }
    }

    /// Stops gradients for the parameters whose relative name is `prefix` or starts with `prefix.` (all of
    /// them when `prefix` is nil). Returns how many parameters matched.
    @discardableResult
    public func freeze(prefix: String? = nil) -> Int { setRequiresGrad(false, prefix: prefix) }

    /// Undoes `freeze` for the matching parameters. Returns how many parameters matched.
    @discardableResult
    public func unfreeze(prefix: String? = nil) -> Int { setRequiresGrad(true, prefix: prefix) }

    private func setRequiresGrad(_ value: Bool, prefix: String?) -> Int {
        var matched = 0
        for (name, p) in parameters() where prefix.map({ hasPathPrefix(name, $0) }) ?? true {
            p.requiresGrad = value
            matched += 1
        }
        return matched
    }
}

/// A module with one tensor in and one out; `Sequential` chains these.
public protocol UnaryLayer: Module {
    func callAsFunction(_ x: Tensor) -> Tensor
}

func joinPath(_ prefix: String, _ key: String) -> String {
    prefix.isEmpty ? key : key.isEmpty ? prefix : prefix + "." + key
}

/// Whether dotted `name` is `prefix` or lies under it (`encoder` matches `encoder.conv.weight`, not `encoder2.w`).
func hasPathPrefix(_ name: String, _ prefix: String) -> Bool {
    prefix.isEmpty || name == prefix || name.hasPrefix(prefix + ".")
}

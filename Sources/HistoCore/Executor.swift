import Foundation

/// Runs graphs: orders the unrealised nodes, plans buffer lifetimes, splits the order into runs of ops the
/// backend supports, and sends the rest to the CPU reference (counted in `FallbackReport`).
public enum Executor {
    public static func eval(_ targets: [Tensor], on backend: any Backend) throws {
        let order = try schedule(targets.map(\.node))
        if order.isEmpty { return }

        // Liveness: the last step that reads each node computed in this run. Targets are kept.
        let keep = Set(targets.map { ObjectIdentifier($0.node) })
        var position: [ObjectIdentifier: Int] = [:]
        for (i, node) in order.enumerated() { position[ObjectIdentifier(node)] = i }
        var lastUse: [ObjectIdentifier: Int] = [:]
        for (i, node) in order.enumerated() {
            for input in node.inputs where position[ObjectIdentifier(input)] != nil {
                lastUse[ObjectIdentifier(input)] = i
            }
        }
        var releaseAt = [[Node]](repeating: [], count: order.count)
        for node in order where !keep.contains(ObjectIdentifier(node)) {
            if let last = lastUse[ObjectIdentifier(node)] { releaseAt[last].append(node) }
        }

        // Split by backend support; the CPU reference takes what the backend lacks. A validating op ends the
        // split before it, so that its inputs exist when it is checked.
        var i = 0
        while i < order.count {
            let onBackend = backend.supports(order[i].op)
            let runner: any Backend = onBackend ? backend : CPUBackend.shared
            var split = GraphSplit(steps: [])
            while i < order.count && (backend.supports(order[i].op) == onBackend) {
                let node = order[i]
                if let check = node.op as? any ValidatingOperation {
                    if !split.steps.isEmpty { break }
                    try validate(node, check)
                }
                if !onBackend { FallbackReport.shared.record(node.op.name, backend: backend.name) }
                try makeResident(node.inputs, on: runner)
                split.steps.append(.init(node: node, release: releaseAt[i]))
                i += 1
            }
            try runner.execute(split)
        }
    }

    static func validate(_ node: Node, _ check: any ValidatingOperation) throws {
        let hosts = try node.inputs.map { input -> [Float] in
            let buffer = input.buffer!
            return try [Float](unsafeUninitializedCapacity: input.count) { out, n in
                try buffer.backend.read(buffer, offset: input.offset, count: input.count, into: out.baseAddress!)
                n = input.count
            }
        }
        let message = hosts.withUnsafeBufferPointers { check.validate($0, shapes: node.inputs.map(\.shape)) }
        if let message { throw EngineError.invalidValue(op: node.op.description, message: message) }
    }

    /// Unrealised nodes reachable from `targets`, inputs before consumers. Throws the first recorded error.
    static func schedule(_ targets: [Node]) throws -> [Node] {
        var seen = Set<ObjectIdentifier>()
        var order: [Node] = []
        var stack = targets
        while let node = stack.popLast() {
            if node.isRealized || !seen.insert(ObjectIdentifier(node)).inserted { continue }
            if let error = node.error { throw error }
            order.append(node)
            stack.append(contentsOf: node.inputs)
        }
        // Node ids increase with creation, and a node's inputs exist before it: id order is topological.
        order.sort { $0.id < $1.id }
        return order
    }

    /// Moves realised inputs that live on another backend to `backend` (the copy replaces the node's buffer).
    static func makeResident(_ nodes: [Node], on backend: any Backend) throws {
        for node in nodes {
            guard let buffer = node.buffer, buffer.backend !== backend else { continue }
            let host = UnsafeMutablePointer<Float>.allocate(capacity: max(node.count, 1))
            defer { host.deallocate() }
            try buffer.backend.read(buffer, offset: node.offset, count: node.count, into: host)
            node.setBuffer(try backend.upload(host, count: node.count))
        }
    }
}

/// Counts ops that ran on the CPU because the chosen backend lacks them; each op kind is printed once.
public final class FallbackReport: @unchecked Sendable {
    public static let shared = FallbackReport()
    private let lock = NSLock()
    public private(set) var counts: [String: Int] = [:]
    /// Set to false to count without printing.
    public var printsFirstOccurrence = true

    func record(_ op: String, backend: String) {
        lock.lock()
        let first = counts[op] == nil
        counts[op, default: 0] += 1
        lock.unlock()
        if first && printsFirstOccurrence {
            FileHandle.standardError.write(Data("note: \(op) is not supported on \(backend); running it on the CPU\n".utf8))
        }
    }

    public var total: Int { lock.lock(); defer { lock.unlock() }; return counts.values.reduce(0, +) }
    public func reset() { lock.lock(); counts = [:]; lock.unlock() }
}

extension Array where Element == [Float] {
    /// Calls `body` with pointers to every inner array's storage.
    func withUnsafeBufferPointers<R>(_ body: ([UnsafeBufferPointer<Float>]) -> R) -> R {
        func nest(_ i: Int, _ acc: [UnsafeBufferPointer<Float>]) -> R {
            if i == count { return body(acc) }
            return self[i].withUnsafeBufferPointer { nest(i + 1, acc + [$0]) }
        }
        return nest(0, [])
    }
}

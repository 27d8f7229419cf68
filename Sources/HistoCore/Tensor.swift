/// A float32 tensor: a value type over a recorded graph node. Ops record lazily; `eval` runs the graph.
public struct Tensor {
    public let node: Node

    public init(node: Node) { self.node = node }

    public var shape: [Int] { node.shape }
    public var rank: Int { node.shape.count }
    public var count: Int { node.count }

    /// Records `op` applied to `inputs`. Shape errors are kept in the node and thrown by `eval`.
    public static func record(_ op: some Operation, _ inputs: [Tensor]) -> Tensor {
        let nodes = inputs.map(\.node)
        if let inherited = nodes.lazy.compactMap(\.error).first {
            return Tensor(node: Node(op: op, inputs: nodes, shape: [], error: inherited))
        }
        do {
            let shape = try op.outputShape(nodes.map(\.shape))
            return Tensor(node: Node(op: op, inputs: nodes, shape: shape, error: nil))
        } catch {
            let shapes = nodes.map { describe($0.shape) }.joined(separator: ", ")
            let message = shapes.isEmpty ? error.message : "\(error.message) (input shapes \(shapes))"
            return Tensor(node: Node(op: op, inputs: nodes, shape: [],
                                     error: .invalidOp(op: op.description, message: message)))
        }
    }

    /// A tensor that reports `message` for `op` when evaluated (for API misuse caught before an op is recorded).
    public static func invalid(_ op: String, _ message: String) -> Tensor {
        Tensor(node: Node(op: Leaf(label: op), inputs: [], shape: [], error: .invalidOp(op: op, message: message)))
    }

    // MARK: leaves

    /// A constant holding `values` in row-major order.
    public init(_ values: [Float], shape: [Int], label: String = "constant") {
        guard values.count == Shape.count(shape), shape.allSatisfy({ $0 >= 0 }) else {
            node = Node(op: Leaf(label: label), inputs: [], shape: [], error: .invalidOp(
                op: "tensor", message: "\(values.count) values do not fill shape \(describe(shape))"))
            return
        }
        node = Node(op: Leaf(label: label), inputs: [], shape: shape, error: nil)
        let buffer = CPUBackend.shared.pool.take(values.count)
        values.withUnsafeBufferPointer { buffer.pointer.update(from: $0.baseAddress!, count: values.count) }
        node.setBuffer(buffer)
    }

    /// A leaf wrapping an existing realised buffer (e.g. an optimizer's updated parameter values).
    public init(buffer: any BackendBuffer, shape: [Int], label: String = "buffer") {
        node = Node(op: Leaf(label: label), inputs: [], shape: shape, error: nil)
        node.setBuffer(buffer)
    }

    public init(scalar value: Float) { self.init([value], shape: []) }

    public static func full(_ shape: [Int], _ value: Float) -> Tensor {
        Tensor([Float](repeating: value, count: Shape.count(shape)), shape: shape)
    }
    public static func zeros(_ shape: [Int]) -> Tensor { full(shape, 0) }
    public static func ones(_ shape: [Int]) -> Tensor { full(shape, 1) }

    // MARK: evaluation

    /// Evaluates this tensor (and whatever it needs that is not yet realised).
    @discardableResult
    public func eval(on backend: (any Backend)? = nil) throws -> Tensor {
        try Executor.eval([self], on: backend ?? Engine.defaultBackend)
        return self
    }

    /// Evaluates and copies the values to host memory, row-major.
    public func toArray(on backend: (any Backend)? = nil) throws -> [Float] {
        try eval(on: backend)
        let buffer = node.buffer!
        return try [Float](unsafeUninitializedCapacity: count) { out, initialized in
            try buffer.backend.read(buffer, offset: node.offset, count: count, into: out.baseAddress!)
            initialized = count
        }
    }

    /// The single value of a one-element tensor.
    public func item(on backend: (any Backend)? = nil) throws -> Float {
        guard count == 1 else {
            throw EngineError.invalidOp(op: "item", message: "tensor of shape \(describe(shape)) has \(count) elements, not 1")
        }
        return try toArray(on: backend)[0]
    }

    /// A leaf holding this tensor's current value, cut off from the graph that produced it.
    public func materialized(on backend: (any Backend)? = nil) throws -> Tensor {
        try eval(on: backend)
        if node.op is Leaf { return self }
        let values = try toArray(on: backend)
        return Tensor(values, shape: shape)
    }
}

/// Evaluates several tensors in one graph run (shared subgraphs run once).
public func eval(_ tensors: [Tensor], on backend: (any Backend)? = nil) throws {
    try Executor.eval(tensors, on: backend ?? Engine.defaultBackend)
}

public enum Engine {
    /// The backend `eval` uses when none is named.
    nonisolated(unsafe) public static var defaultBackend: any Backend = CPUBackend.shared
}

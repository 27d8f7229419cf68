import Foundation

/// A recorded op application. Nodes are immutable except for their realised buffer, which the executor sets
/// when the node is evaluated and drops again once the last consumer in that evaluation has run (unless the node
/// is a leaf or was asked for).
public final class Node {
    public let op: any Operation
    public let inputs: [Node]
    public let shape: [Int]
    /// Set when the op was recorded with inputs it cannot take; reported by `eval`.
    public let error: EngineError?
    /// Monotonic creation index: a topological order of any graph.
    public let id: Int

    /// The realised value: a buffer and the element offset of this tensor inside it (views share buffers).
    public internal(set) var buffer: (any BackendBuffer)?
    public internal(set) var offset: Int = 0

    private static let counter = AtomicCounter()

    init(op: any Operation, inputs: [Node], shape: [Int], error: EngineError?) {
        self.op = op
        self.inputs = inputs
        self.shape = shape
        self.error = error
        self.id = Node.counter.next()
    }

    public var count: Int { Shape.count(shape) }
    public var isRealized: Bool { buffer != nil }

    public func setBuffer(_ buffer: (any BackendBuffer)?, offset: Int = 0) {
        self.buffer = buffer
        self.offset = offset
    }
}

final class AtomicCounter: @unchecked Sendable {
    private var value = 0
    private let lock = NSLock()
    func next() -> Int { lock.lock(); defer { lock.unlock() }; value += 1; return value }
}

/// A leaf: data that exists before the graph runs (constants, parameters, inputs).
public struct Leaf: Operation {
    public let label: String
    public var name: String { "leaf" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] { [] }
    public func cpuForward(_ args: CPUArgs) {}
    public func vjp(_ ctx: VJPContext) -> [Tensor?] { [] }
}

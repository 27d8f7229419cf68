/// A compute backend (ggml's backend seam): which ops it runs, its buffers, and executing a graph split.
/// The executor hands a backend only nodes whose ops it supports, with inputs already resident on it.
public protocol Backend: AnyObject {
    var name: String { get }
    func supports(_ op: any Operation) -> Bool
    /// A buffer of at least `elementCount` floats.
    func allocate(elementCount: Int) throws -> any BackendBuffer
    /// Copies `count` floats from `buffer` at `offset` into host memory.
    func read(_ buffer: any BackendBuffer, offset: Int, count: Int, into destination: UnsafeMutablePointer<Float>) throws
    /// Makes a buffer of this backend holding the given host values.
    func upload(_ source: UnsafePointer<Float>, count: Int) throws -> any BackendBuffer
    /// Runs the split in order. For each step the backend realises the node's output (a fresh buffer, or an
    /// alias for view ops) and afterwards drops the buffers of `step.release`.
    func execute(_ split: GraphSplit) throws
    /// Waits until all submitted work has finished (for timing; reads already wait).
    func synchronize() throws
}

extension Backend {
    public func synchronize() throws {}
}

/// A maximal run of consecutive nodes that one backend executes.
public struct GraphSplit {
    public struct Step {
        public let node: Node
        /// Nodes whose last consumer in this evaluation is this step: their buffers can be reused after it.
        public let release: [Node]
    }
    public var steps: [Step]
}

/// Realises a view node as an alias of its input's buffer: shared by every backend.
public func realizeView(_ node: Node, offset: Int) {
    let source = node.inputs[0]
    node.setBuffer(source.buffer, offset: source.offset + offset)
}

extension Node {
    /// Realises the output of a non-view node in a fresh buffer of `backend`.
    public func allocateOutput(on backend: any Backend) throws {
        setBuffer(try backend.allocate(elementCount: count), offset: 0)
    }
    /// Drops this node's buffer (its memory returns to the pool once no view holds it).
    public func release() { setBuffer(nil) }
}

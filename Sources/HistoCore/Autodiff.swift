/// Reverse-mode autodiff over recorded graphs. The backward pass is itself a recorded graph built from each
/// op's VJP, so it runs on any backend and is evaluated together with the forward pass.
public enum Autodiff {
    /// Gradients of `output` (summed over its elements, or weighted by `seed`) with respect to `wrt`.
    /// A tensor the output does not depend on gets zeros.
    public static func gradients(of output: Tensor, wrt: [Tensor], seed: Tensor? = nil) -> [Tensor] {
        let targets = Set(wrt.map { ObjectIdentifier($0.node) })

        // Nodes between the targets and the output, in creation (topological) order.
        var reachable: [Node] = []
        var seen = Set<ObjectIdentifier>()
        var stack = [output.node]
        while let node = stack.popLast() {
            guard seen.insert(ObjectIdentifier(node)).inserted else { continue }
            reachable.append(node)
            if !(node.op is StopGradient) { stack.append(contentsOf: node.inputs) }
        }
        reachable.sort { $0.id < $1.id }
        var dependsOnTarget = Set<ObjectIdentifier>()
        for node in reachable {
            let id = ObjectIdentifier(node)
            if targets.contains(id) || (!(node.op is StopGradient)
                && node.inputs.contains { dependsOnTarget.contains(ObjectIdentifier($0)) }) {
                dependsOnTarget.insert(id)
            }
        }

        var cotangents: [ObjectIdentifier: Tensor] = [:]
        cotangents[ObjectIdentifier(output.node)] = seed ?? Tensor.ones(output.shape)
        for node in reachable.reversed() {
            let id = ObjectIdentifier(node)
            guard dependsOnTarget.contains(id), !node.inputs.isEmpty, let cotangent = cotangents[id] else { continue }
            let inputs = node.inputs.map { Tensor(node: $0) }
            let grads = node.op.vjp(VJPContext(inputs: inputs, output: Tensor(node: node), cotangent: cotangent))
            for (input, grad) in zip(node.inputs, grads) {
                let inputID = ObjectIdentifier(input)
                guard let grad, dependsOnTarget.contains(inputID) else { continue }
                if let existing = cotangents[inputID] { cotangents[inputID] = existing + grad } else { cotangents[inputID] = grad }
            }
        }
        return wrt.map { cotangents[ObjectIdentifier($0.node)] ?? Tensor.zeros($0.shape) }
    }
}

/// Identity whose gradient is zero: `detach()`.
public struct StopGradient: Operation {
    public var name: String { "stop_gradient" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] { inputs[0] }
    public func cpuForward(_ args: CPUArgs) {}
    public func vjp(_ ctx: VJPContext) -> [Tensor?] { [nil] }
    public func viewOffset(_ inputs: [[Int]]) -> Int? { 0 }
}

extension Tensor {
    /// The same values with no gradient flowing back through them.
    public func detach() -> Tensor { .record(StopGradient(), [self]) }
}

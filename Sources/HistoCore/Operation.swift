/// The one declaration of an op: its name, shape rule, CPU reference forward and vector-Jacobian product.
/// Backends other than the CPU look ops up by `name` (their kernel tables are keyed by it); an op a backend
/// does not support runs on the CPU reference instead, and the executor counts that fallback.
public protocol Operation: CustomStringConvertible {
    /// Stable op name, e.g. "conv2d", "unary.exp". Used for kernel lookup, fallback reports and harness filters.
    var name: String { get }
    /// Output shape for the given input shapes; throws with a message that names the offending shapes.
    func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int]
    /// CPU reference: reads `args.inputs`, writes every element of `args.output`.
    func cpuForward(_ args: CPUArgs)
    /// Cotangents for each input given the cotangent of the output (nil: no gradient flows to that input).
    func vjp(_ ctx: VJPContext) -> [Tensor?]
    /// Non-nil when the output is input 0's buffer read at this element offset, contiguous, without a copy.
    func viewOffset(_ inputs: [[Int]]) -> Int?
}

extension Operation {
    public func viewOffset(_ inputs: [[Int]]) -> Int? { nil }
    public var description: String { name }
}

/// What a CPU reference forward sees: input and output memory with their shapes.
public struct CPUArgs {
    public let inputs: [UnsafeBufferPointer<Float>]
    public let inputShapes: [[Int]]
    public let output: UnsafeMutableBufferPointer<Float>
    public let outputShape: [Int]

    public init(inputs: [UnsafeBufferPointer<Float>], inputShapes: [[Int]],
                output: UnsafeMutableBufferPointer<Float>, outputShape: [Int]) {
        self.inputs = inputs; self.inputShapes = inputShapes; self.output = output; self.outputShape = outputShape
    }
}

/// What a VJP sees: the op's inputs and output as tensors, and the output's cotangent.
public struct VJPContext {
    public let inputs: [Tensor]
    public let output: Tensor
    public let cotangent: Tensor
}

/// Ops without a gradient (argmax, comparisons, random sampling) return this from `vjp`.
@inlinable public func noGradient(_ ctx: VJPContext) -> [Tensor?] { [Tensor?](repeating: nil, count: ctx.inputs.count) }

/// An op whose input values must be checked before it runs (labels in range, a loss that must be finite).
/// The executor reads the inputs to the host, calls `validate`, and throws `EngineError.invalidValue` naming the op
/// with the returned message. Checks are rare and cheap next to the work they guard.
public protocol ValidatingOperation: Operation {
    /// nil when the inputs are acceptable, else what is wrong (which element, which value).
    func validate(_ inputs: [UnsafeBufferPointer<Float>], shapes: [[Int]]) -> String?
}

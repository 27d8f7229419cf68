import Foundation
import HistoCore

/// A rough estimate of the memory one training step takes, made before anything is allocated, so that a run too
/// large for the machine stops at once with the numbers (and the largest batch or patch that fits) instead of
/// allocating until the kernel kills it.
///
/// `bytes = 4 · parameters · weightCopies + activations`:
/// - `weightCopies` float32 copies of the trainable weights: the weights, their gradients, Adam's two moments, and
///   whatever copies the caller keeps (an EMA, a model to sample with);
/// - `activations`: 1.25 × the bytes of every value the step's forward graph computes, read from the graph recorded
///   on a shape-only input (`input(shape:)`). Recording is shape inference only, so this costs nothing at any size.
///   The backward pass keeps most of these values alive until it reads them; the gradients of activations, a few
///   at a time, and the allocator's slack come on top, which the factor covers: pretraining the genselfdiff cpu
///   preset on 64² patches peaked at 55 MB more resident memory per sample (batch 4 → 16: 298 → 956 MB) against
///   49 MB of graph values per sample. Views (reshapes) share their input's memory and are not counted.
///
/// Left out: the data loader's decoded images and prefetched batches, and backend workspaces. The estimate is meant
/// to stop the runs that cannot fit, not to be exact.
public struct StepMemoryEstimate: Equatable {
    /// Real peaks over the graph's values (see the type's comment).
    static let activationFactor = 1.25

    /// Bytes of one float32 copy of the trainable weights.
    public let weightBytes: Int
    public let weightCopies: Int
    /// The activations' share of the estimate, for `batch`.
    public let activationBytes: Int
    public let batch: Int

    public var totalBytes: Int { weightBytes * weightCopies + activationBytes }

    /// The estimate for `model` (its trainable parameters) whose step records `loss` on a batch of `batch` inputs
    /// made with `input(shape:)`. `extraWeightCopies` are the caller's copies beyond weights, gradients and Adam's
    /// moments.
    public init(model: Module, extraWeightCopies: Int = 0, batch: Int, loss: Tensor) {
        weightBytes = 4 * model.trainableParameters().reduce(0) { $0 + Shape.count($1.shape) }
        weightCopies = 4 + extraWeightCopies
        activationBytes = Int(Double(Self.computedBytes(of: loss)) * Self.activationFactor)
        self.batch = batch
    }

    /// The largest batch whose estimate fits `limit` bytes (activations grow in proportion to the batch); 0 when
    /// not even one sample fits.
    public func largestBatch(within limit: Int) -> Int {
        let perSample = max(1, activationBytes / max(batch, 1))
        return max(0, (limit - weightBytes * weightCopies) / perSample)
    }

    /// Throws `EngineError.invalidValue` when the estimate exceeds `limit` bytes (default: the machine's physical
    /// memory), saying how much the step needs, what fits and what to change: the largest batch, or, when not even
    /// a batch of one fits, the largest patch (activations grow with the patch's area) as a multiple of
    /// `patchMultiple`.
    public func check(patch: Int, patchMultiple: Int = 1,
                      limit: Int = Int(clamping: ProcessInfo.processInfo.physicalMemory)) throws {
        guard totalBytes > limit else { return }
        let fixed = weightBytes * weightCopies
        var advice: String
        let fitting = largestBatch(within: limit)
        if fitting >= 1 {
            advice = "the largest batch that fits is \(fitting) (--batch)"
        } else {
            let perSample = Double(activationBytes) / Double(max(batch, 1))
            let scale = (Double(limit - fixed) / perSample).squareRoot()
            let side = Int(Double(patch) * scale) / patchMultiple * patchMultiple
            advice = side >= patchMultiple
                ? "not even a batch of 1 fits; at batch 1 the largest patch that fits is about \(side) (--patch)"
                : "not even a batch of 1 of the smallest patch fits"
        }
        throw EngineError.invalidValue(op: "memory estimate", message:
            "one training step at batch \(batch) of \(patch)×\(patch) patches needs about \(Self.readable(totalBytes)) "
            + "(activations \(Self.readable(activationBytes)); weights, gradients, optimizer state and copies "
            + "\(Self.readable(fixed))), more than this machine's \(Self.readable(limit)) of memory; \(advice)")
    }

    /// A tensor of `shape` that has no values: ops recorded on it cost nothing, and evaluating it is an error.
    public static func input(shape: [Int]) -> Tensor { Tensor.record(ShapeOnlyInput(shape: shape), []) }

    /// Bytes of the values that evaluating `output` computes: every node it depends on that is not realised yet
    /// (parameters and constants are) and is not a view of its input.
    public static func computedBytes(of output: Tensor) -> Int {
        var seen: Set<Int> = []
        var pending = [output.node]
        var bytes = 0
        while let node = pending.popLast() {
            guard !node.isRealized, seen.insert(node.id).inserted else { continue }
            if node.op.viewOffset(node.inputs.map(\.shape)) == nil { bytes += 4 * node.count }
            pending += node.inputs
        }
        return bytes
    }

    /// `12.3 GB`, or `45 MB` below a gigabyte.
    static func readable(_ bytes: Int) -> String {
        bytes < 1_000_000_000 ? String(format: "%.0f MB", Double(bytes) / 1e6)
            : String(format: "%.1f GB", Double(bytes) / 1e9)
    }
}

/// The input of a memory estimate: only its shape matters.
private struct ShapeOnlyInput: ValidatingOperation {
    let shape: [Int]
    var name: String { "shape_only_input" }
    func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] { shape }
    func cpuForward(_ args: CPUArgs) {}
    func vjp(_ ctx: VJPContext) -> [Tensor?] { [] }
    func validate(_ inputs: [UnsafeBufferPointer<Float>], shapes: [[Int]]) -> String? {
        "a shape-only input has no values; it serves memory estimates"
    }
}

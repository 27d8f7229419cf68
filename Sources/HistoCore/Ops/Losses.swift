import Foundation
import HistoAVX512

// Losses: cross-entropy / NLL over integer class targets as one fused op with a dedicated backward op, the
// finite-check marker every public loss ends in, and composite losses (soft Dice variants, focal, GenSelfDiff's
// structural-similarity loss, MSE, KL, entropy) built from existing ops, and CDCL's cross-patch InfoNCE as one fused
// op whose backward recomputes the similarities.
//
// Conventions: scores (logits or probabilities) are [N, C, d…] with the class axis 1; labels are float tensors
// of integer class ids of shape [N, d…] ([N] for [N, C] scores) and never receive a gradient.
// Bad labels: a CPU forward cannot throw, so a label outside 0..<C (and not the ignore index) makes that
// element's loss NaN, and every public loss ends in `checkedFinite(name)`, whose evaluation turns NaN/inf into an
// error naming the loss.

/// Identity view that marks a value for a finite check: the executor is to report NaN or inf in it as
/// `EngineError.invalidValue(op: label, …)` (its side of the contract lives in Executor; the op itself only
/// passes values and gradients through).
public struct CheckFinite: Operation {
    public let label: String
    public init(label: String) { self.label = label }
    public var name: String { "check_finite" }
    public var description: String { "check_finite(\(label))" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] { inputs[0] }
    public func cpuForward(_ args: CPUArgs) {}
    public func viewOffset(_ inputs: [[Int]]) -> Int? { 0 }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] { [ctx.cotangent] }
}

extension CheckFinite: ValidatingOperation, DeviceOperation {
    public func validate(_ inputs: [UnsafeBufferPointer<Float>], shapes: [[Int]]) -> String? {
        guard let bad = inputs[0].firstIndex(where: { !$0.isFinite }) else { return nil }
        return "value is \(inputs[0][bad]) at element \(bad) of \(describe(shapes[0])) (NaN/inf: check labels, learning rate, inputs)"
    }
    /// A view: nothing to launch.
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] { [] }
}

extension Tensor {
    /// This value, checked for NaN/inf when evaluated; an error names `label`.
    public func checkedFinite(_ label: String) -> Tensor { .record(CheckFinite(label: label), [self]) }
}

/// Checks that `labels` is `scores` without its class axis 1 ([N, C, d…] → [N, d…]).
func checkClassTargets(_ scores: [Int], _ labels: [Int]) throws(ShapeError) {
    guard scores.count >= 2 else { throw ShapeError("scores \(describe(scores)) need a class axis 1 ([N, C, ...])") }
    var expected = scores
    expected.remove(at: 1)
    guard labels == expected else {
        throw ShapeError("labels \(describe(labels)) must have shape \(describe(expected)) for scores \(describe(scores))")
    }
}

/// Negative log-likelihood of integer class targets, fused with its input transform: from logits through a
/// max-subtracted log-sum-exp (`cross_entropy`), or from log-probabilities (`nll_loss`). PyTorch semantics:
/// element loss wᵧ·(−log pᵧ), 0 for ignored targets; `.mean` divides by the sum of wᵧ over non-ignored targets
/// (NaN when every target is ignored, as in PyTorch).
public struct ClassTargetLoss: Operation {
    public enum Input: Sendable { case logits, logProbabilities }
    public let input: Input
    public let weights: [Float]?
    public let ignoreIndex: Int?
    public let reduction: Loss.Reduction
    public init(_ input: Input, weights: [Float]?, ignoreIndex: Int?, reduction: Loss.Reduction) {
        self.input = input; self.weights = weights; self.ignoreIndex = ignoreIndex; self.reduction = reduction
    }

    public var name: String { input == .logits ? "cross_entropy" : "nll_loss" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        try checkClassTargets(inputs[0], inputs[1])
        if let weights, weights.count != inputs[0][1] {
            throw ShapeError("\(weights.count) class weights for \(inputs[0][1]) classes")
        }
        return reduction == .none ? inputs[1] : []
    }

    enum Target { case ignored, outOfRange, index(Int, weight: Float) }

    @inline(__always) func target(_ label: Float, classes: Int) -> Target {
        if let ignoreIndex, label == Float(ignoreIndex) { return .ignored }
        guard label >= 0, label < Float(classes), label == label.rounded() else { return .outOfRange }
        let c = Int(label)
        return .index(c, weight: weights?[c] ?? 1)
    }

    /// Σ wᵧ over the non-ignored targets (the `.mean` divisor); NaN when a label is out of range.
    func weightSum(_ labels: UnsafeBufferPointer<Float>, classes: Int) -> Double {
        var total: Double = 0
        for label in labels {
            switch target(label, classes: classes) {
            case .ignored: continue
            case .outOfRange: return .nan
            case .index(_, let w): total += Double(w)
            }
        }
        return total
    }

    public func cpuForward(_ args: CPUArgs) {
        let shape = args.inputShapes[0], classes = shape[1], inner = shape[2...].reduce(1, *)
        let x = args.inputs[0], labels = args.inputs[1], count = labels.count
        let losses = UnsafeMutableBufferPointer<Float>.allocate(capacity: Swift.max(count, 1))
        defer { losses.deallocate() }
        parallelFor(count, grain: Swift.max(1, 4096 / Swift.max(classes, 1))) { range in
            for e in range {
                let base = (e / inner) * classes * inner + e % inner
                switch target(labels[e], classes: classes) {
                case .ignored: losses[e] = 0
                case .outOfRange: losses[e] = .nan
                case .index(let c, let w):
                    let picked = x[base + c * inner]
                    switch input {
                    case .logits:
                        let (m, s) = maxAndSumExp(x, base: base, count: classes, stride: inner)
                        losses[e] = w * (m + Foundation.log(s) - picked)
                    case .logProbabilities: losses[e] = -w * picked
                    }
                }
            }
        }
        switch reduction {
        case .none: args.output.baseAddress!.update(from: losses.baseAddress!, count: count)
        case .sum, .mean:
            var total: Double = 0
            for e in 0..<count { total += Double(losses[e]) }
            if reduction == .mean { total /= weightSum(labels, classes: classes) }
            args.output[0] = Float(total)
        }
    }

    public func vjp(_ ctx: VJPContext) -> [Tensor?] {
        [.record(ClassTargetLossBackward(self), [ctx.inputs[0], ctx.inputs[1], ctx.cotangent]), nil]
    }
}

/// Max and Σ exp(x − max) of `count` values read at `base + j·stride`.
@inline(__always) func maxAndSumExp(_ x: UnsafeBufferPointer<Float>, base: Int, count: Int, stride: Int) -> (Float, Float) {
    var m = -Float.infinity
    for j in 0..<count { m = Swift.max(m, x[base + j * stride]) }
    var s: Float = 0
    for j in 0..<count { s += Foundation.exp(x[base + j * stride] - m) }
    return (m, s)
}

/// The gradient of `ClassTargetLoss` with respect to its scores: for a target y with weight w and output
/// cotangent g (divided by Σw for `.mean`), w·g·(softmax − onehot(y)) from logits, −w·g·onehot(y) from
/// log-probabilities; zero for ignored targets, NaN for out-of-range labels.
public struct ClassTargetLossBackward: Operation {
    public let forward: ClassTargetLoss
    public init(_ forward: ClassTargetLoss) { self.forward = forward }

    public var name: String { forward.name + "_backward" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        let lossShape = try forward.outputShape(Array(inputs[0...1]))
        guard inputs[2] == lossShape else {
            throw ShapeError("cotangent \(describe(inputs[2])) does not match loss shape \(describe(lossShape))")
        }
        return inputs[0]
    }
    public func cpuForward(_ args: CPUArgs) {
        let shape = args.inputShapes[0], classes = shape[1], inner = shape[2...].reduce(1, *)
        let x = args.inputs[0], labels = args.inputs[1], dy = args.inputs[2], dx = args.output
        let forward = forward, perElement = forward.reduction == .none
        let scale: Float = forward.reduction == .mean ? Float(1 / forward.weightSum(labels, classes: classes)) : 1
        parallelFor(labels.count, grain: Swift.max(1, 4096 / Swift.max(classes, 1))) { range in
            for e in range {
                let base = (e / inner) * classes * inner + e % inner
                switch forward.target(labels[e], classes: classes) {
                case .ignored: for j in 0..<classes { dx[base + j * inner] = 0 }
                case .outOfRange: for j in 0..<classes { dx[base + j * inner] = .nan }
                case .index(let c, let w):
                    let g = w * scale * (perElement ? dy[e] : dy[0])
                    switch forward.input {
                    case .logits:
                        let (m, s) = maxAndSumExp(x, base: base, count: classes, stride: inner)
                        let inv = 1 / s
                        for j in 0..<classes {
                            let p = Foundation.exp(x[base + j * inner] - m) * inv
                            dx[base + j * inner] = g * (j == c ? p - 1 : p)
                        }
                    case .logProbabilities:
                        for j in 0..<classes { dx[base + j * inner] = j == c ? -g : 0 }
                    }
                }
            }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] { noGradient(ctx) }
}

// MARK: device launches (Kernels/losses.cl)

extension ClassTargetLoss {
    /// Work-group size of the loss reductions (LOSS_LOCAL in Kernels/losses.cl); it also caps the partials.
    static let groupSize = 256
    /// Constants per `store_constants` launch (CONSTANT_CHUNK in Kernels/losses.cl).
    static let constantChunk = 64

    /// The constants buffer: class weights, then the gradient scale.
    static func constants(_ classes: Int) -> KernelArgument { .scratch(index: 0, count: classes + 1) }

    /// Scores, labels and constants: the leading arguments of every loss kernel.
    static func sources(_ classes: Int) -> [KernelArgument] { [.input(0), .input(1), constants(classes)] }

    /// Stores the op constants in scratch 0 where the kernels read them: the class weights (ones when unweighted)
    /// and, after them, the gradient scale 1 (`.mean` overwrites it with 1/Σw). By value, in chunks.
    func constantLaunches(classes: Int) -> [KernelLaunch] {
        let values = (weights ?? [Float](repeating: 1, count: classes)) + [1]
        return stride(from: 0, to: values.count, by: Self.constantChunk).map { start in
            let chunk = values[start..<Swift.min(start + Self.constantChunk, values.count)]
            let bits = chunk.map { Int32(bitPattern: $0.bitPattern) } + [Int32](repeating: 0, count: Self.constantChunk - chunk.count)
            return elementwiseLaunch("losses", "store_constants", [Self.constants(classes), .ints(bits), .int(Int32(start))],
                                     count: chunk.count)
        }
    }

    /// What the kernels need to resolve a position's target: classes, inner size, input kind and ignore index.
    func targetArguments(classes: Int, inner: Int) -> [KernelArgument] {
        [.int(Int32(classes)), .int(Int32(inner)), .int(input == .logits ? 1 : 0), .int(ignoreIndex == nil ? 0 : 1),
         .float(Float(ignoreIndex ?? 0))]
    }

    /// What `loss_total` makes of Σ loss and Σ weight (its `result` codes).
    enum Total: Int32 { case sum, mean, meanGradientScale }

    /// Σ loss and Σ weight over `count` positions as per-group partials (scratch 1), then one group writes the
    /// `total` to `destination[slot]`.
    func reductionLaunches(count: Int, classes: Int, inner: Int, withLoss: Bool, total: Total,
                           destination: KernelArgument, slot: Int) -> [KernelLaunch] {
        let groups = Swift.min((count + Self.groupSize - 1) / Self.groupSize, Self.groupSize)
        let partials = KernelArgument.scratch(index: 1, count: 2 * Swift.max(groups, 1))
        return [
            .kernel(file: "losses", name: "class_target_loss_partials",
                    args: Self.sources(classes) + [partials] + targetArguments(classes: classes, inner: inner)
                        + [.int(withLoss ? 1 : 0), .int(Int32(count))],
                    global: [groups * Self.groupSize], local: [Self.groupSize]),
            .kernel(file: "losses", name: "loss_total",
                    args: [partials, destination, .int(Int32(slot)), .int(Int32(groups)), .int(total.rawValue)],
                    global: [Self.groupSize], local: [Self.groupSize]),
        ]
    }
}

extension ClassTargetLoss: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let classes = inputShapes[0][1], inner = inputShapes[0][2...].reduce(1, *), count = Shape.count(inputShapes[1])
        let target = targetArguments(classes: classes, inner: inner)
        switch reduction {
        case .none:
            return constantLaunches(classes: classes)
                + [elementwiseLaunch("losses", "class_target_loss", Self.sources(classes) + [.output] + target, count: count)]
        case .sum, .mean:
            return constantLaunches(classes: classes)
                + reductionLaunches(count: count, classes: classes, inner: inner, withLoss: true,
                                    total: reduction == .mean ? .mean : .sum, destination: .output, slot: 0)
        }
    }
}

extension ClassTargetLossBackward: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let classes = inputShapes[0][1], inner = inputShapes[0][2...].reduce(1, *), count = Shape.count(inputShapes[1])
        let scale = forward.reduction == .mean
            ? forward.reductionLaunches(count: count, classes: classes, inner: inner, withLoss: false, total: .meanGradientScale,
                                        destination: ClassTargetLoss.constants(classes), slot: classes)
            : []
        return forward.constantLaunches(classes: classes) + scale
            + [elementwiseLaunch("losses", "class_target_loss_backward",
                                 ClassTargetLoss.sources(classes) + [.input(2), .output] + forward.targetArguments(classes: classes, inner: inner)
                                     + [.int(forward.reduction == .none ? 1 : 0)], count: count)]
    }
}

// MARK: CDCL's cross-patch InfoNCE (Kernels/losses.cl)

/// CDCL's cross-patch InfoNCE over a bank of keys (SPEC §5; paper 004 Eq. 7–10), fused so that its memory is
/// O(anchors + keys) rather than the [anchors, keys] tensors a composite keeps for its backward (issue 14): the
/// similarities are recomputed a block of anchors × a chunk of keys at a time, in the forward and in the backward.
/// Inputs: anchors q [P, D], their positives [P, D] and the keys [K, D] (ℓ2-normalised by the caller), the anchors'
/// pseudo-labels and patch foreground scores FS [P], and the keys' [K]. Key k is a negative of q (J = 1) when their
/// labels differ and their patches are of opposite types (one FS ≤ `background`, the other ≥ `foreground`: the
/// paper) or, with a `scoreLimit`, FS_q + FS_k ≤ scoreLimit (the released code). With p = q·k₊/τ,
/// n = q·k/τ and m = max(p, maxₖ n) over every key, negative or not:
/// l(q) = −log(e^{p−m}/(e^{p−m} + Σₖ J·e^{n−m} + ε) + ε), output [P]. Gradients reach q, the positives
/// and the keys (m's, through the ε terms, shared by its ties as `max` shares it); labels and scores get none.
public struct CrossPatchInfoNCE: Operation {
    public let temperature: Float
    public let background: Float
    public let foreground: Float
    /// The released code's rule when set; the paper's opposite patch types when nil.
    public let scoreLimit: Float?
    public let epsilon: Float

    public init(temperature: Float, background: Float, foreground: Float, scoreLimit: Float?, epsilon: Float = 1e-8) {
        self.temperature = temperature; self.background = background; self.foreground = foreground
        self.scoreLimit = scoreLimit; self.epsilon = epsilon
    }

    public var name: String { "cross_patch_info_nce" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        guard inputs.count == 7, inputs[0].count == 2, inputs[1] == inputs[0], inputs[2].count == 2,
              inputs[2][1] == inputs[0][1], inputs[3] == [inputs[0][0]], inputs[4] == inputs[3],
              inputs[5] == [inputs[2][0]], inputs[6] == inputs[5] else {
            throw ShapeError("takes anchors and positives [P, D], keys [K, D], the anchors' labels and scores [P] and "
                + "the keys' [K] (got \(inputs.map(describe).joined(separator: ", ")))")
        }
        return [inputs[0][0]]
    }
    public func cpuForward(_ args: CPUArgs) {
        let sweep = ContrastSweep(self, args.inputs, args.inputShapes), out = args.output.baseAddress!
        let epsilon = epsilon
        parallelSingleThreadedGemms(sweep.blocks, scratch: sweep.makeScratch) { block, scratch in
            for (row, statistics) in zip(sweep.rows(ofBlock: block), sweep.statistics(block: block, scratch)) {
                out[row] = statistics.loss(epsilon: epsilon)
            }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] {
        let packed = Tensor.record(CrossPatchInfoNCEBackward(self), ctx.inputs + [ctx.cotangent])
        var start = 0
        return ctx.inputs.indices.map { index in
            guard index < 3 else { return nil }
            let input = ctx.inputs[index]
            defer { start += input.count }
            return packed.slice(axis: 0, start: start, end: start + input.count).reshape(input.shape)
        }
    }

    /// Whether key k is a negative of anchor q: different labels and the rule on their patches' scores.
    @inline(__always) func isNegative(labels: (q: Float, k: Float), scores: (q: Float, k: Float)) -> Bool {
        guard labels.q != labels.k else { return false }
        if let scoreLimit { return scores.q + scores.k <= scoreLimit }
        return (scores.q <= background && scores.k >= foreground) || (scores.q >= foreground && scores.k <= background)
    }
}

/// The gradients of `CrossPatchInfoNCE` from its inputs and the cotangent [P], packed flat as [dq, dpositives, dkeys].
/// Per anchor, with E = e^{p−m}, A = E + Σ J·e^{n−m} + ε, r = E/A and a = −1/(r + ε) (∂l/∂r):
/// ∂l/∂p = a·E·(A − E)/A², ∂l/∂n = −a·E·J·e^{n−m}/A² and ∂l/∂m = −a·E·ε/A², shared by
/// the ties of m; dq = (w₊·k₊ + Σₖ wₖ·k)/τ, dk₊ = w₊·q/τ and dk = Σ_q wₖ·q/τ with w the
/// cotangent times these.
/// First per block of anchors (their statistics, then dq and dk₊ over the key chunks), then per chunk of keys (dk
/// over the anchor blocks, the weights recomputed from the statistics).
public struct CrossPatchInfoNCEBackward: Operation {
    public let forward: CrossPatchInfoNCE
    public init(_ forward: CrossPatchInfoNCE) { self.forward = forward }

    public var name: String { "cross_patch_info_nce_backward" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        guard inputs.count == 8 else {
            throw ShapeError("takes the 7 inputs of cross_patch_info_nce and its cotangent")
        }
        let loss = try forward.outputShape(Array(inputs[0..<7]))
        guard inputs[7] == loss else {
            throw ShapeError("cotangent \(describe(inputs[7])) does not match loss shape \(describe(loss))")
        }
        return [(2 * inputs[0][0] + inputs[2][0]) * inputs[0][1]]
    }
    public func cpuForward(_ args: CPUArgs) {
        let sweep = ContrastSweep(forward, Array(args.inputs[0..<7]), Array(args.inputShapes[0..<7]))
        let dy = args.inputs[7].baseAddress!, depth = sweep.depth, epsilon = forward.epsilon
        let inverseTemperature = 1 / forward.temperature
        let dq = args.output.baseAddress!, dPositives = dq + sweep.anchors * depth
        let dKeys = dPositives + sweep.anchors * depth
        let weights = UnsafeMutablePointer<ContrastSweep.RowWeights>.allocate(capacity: Swift.max(sweep.anchors, 1))
        defer { weights.deallocate() }
        parallelSingleThreadedGemms(sweep.blocks, scratch: sweep.makeScratch) { block, scratch in
            let rows = sweep.rows(ofBlock: block)
            for (row, statistics) in zip(rows, sweep.statistics(block: block, scratch)) {
                let w = statistics.weights(cotangent: dy[row], epsilon: epsilon)
                weights[row] = w
                for e in row * depth..<(row + 1) * depth {
                    dq[e] = w.positive * sweep.positives[e] * inverseTemperature
                    dPositives[e] = w.positive * sweep.q[e] * inverseTemperature
                }
            }
            for chunk in 0..<sweep.chunks {
                let keys = sweep.keys(ofChunk: chunk)
                sweep.weights(rows, keys, weights, scratch)
                openBLASGemm(false, false, rows.count, depth, keys.count, inverseTemperature, scratch.logits,
                             keys.count, sweep.keys + keys.lowerBound * depth, depth, 1,
                             dq + rows.lowerBound * depth, depth)
            }
        }
        parallelSingleThreadedGemms(sweep.chunks, scratch: sweep.makeScratch) { chunk, scratch in
            let keys = sweep.keys(ofChunk: chunk)
            for block in 0..<sweep.blocks {
                let rows = sweep.rows(ofBlock: block)
                sweep.weights(rows, keys, weights, scratch)
                openBLASGemm(true, false, keys.count, depth, rows.count, inverseTemperature, scratch.logits,
                             keys.count, sweep.q + rows.lowerBound * depth, depth, block == 0 ? 0 : 1,
                             dKeys + keys.lowerBound * depth, depth)
            }
        }
        if sweep.blocks == 0 { dKeys.update(repeating: 0, count: sweep.keyCount * depth) }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] { noGradient(ctx) }
}

/// The CPU loops of `CrossPatchInfoNCE` and its backward: the anchors in blocks of `rowsPerBlock`, the keys in
/// chunks of `keysPerChunk`, and a block × chunk of similarities n = q·kᵀ/τ at a time, always through the same
/// GEMM call so that every pass sees the same values (m and its ties).
struct ContrastSweep {
    static let rowsPerBlock = 256, keysPerChunk = 1024

    let op: CrossPatchInfoNCE
    let q: UnsafePointer<Float>, positives: UnsafePointer<Float>, keys: UnsafePointer<Float>
    let anchorLabels: UnsafePointer<Float>, anchorScores: UnsafePointer<Float>
    let keyLabels: UnsafePointer<Float>, keyScores: UnsafePointer<Float>
    let anchors: Int, keyCount: Int, depth: Int

    init(_ op: CrossPatchInfoNCE, _ inputs: [UnsafeBufferPointer<Float>], _ shapes: [[Int]]) {
        self.op = op
        let base = inputs.map { $0.baseAddress ?? UnsafePointer(bitPattern: MemoryLayout<Float>.alignment)! }
        (q, positives, keys) = (base[0], base[1], base[2])
        (anchorLabels, anchorScores, keyLabels, keyScores) = (base[3], base[4], base[5], base[6])
        (anchors, keyCount, depth) = (shapes[0][0], shapes[2][0], shapes[0][1])
    }

    var blocks: Int { (anchors + Self.rowsPerBlock - 1) / Self.rowsPerBlock }
    var chunks: Int { (keyCount + Self.keysPerChunk - 1) / Self.keysPerChunk }
    func rows(ofBlock block: Int) -> Range<Int> {
        block * Self.rowsPerBlock..<Swift.min(anchors, (block + 1) * Self.rowsPerBlock)
    }
    func keys(ofChunk chunk: Int) -> Range<Int> {
        chunk * Self.keysPerChunk..<Swift.min(keyCount, (chunk + 1) * Self.keysPerChunk)
    }

    /// A worker's block × chunk of similarities (or weights) and one row of their exponentials.
    final class Scratch {
        let logits = UnsafeMutablePointer<Float>.allocate(capacity: rowsPerBlock * keysPerChunk)
        let exponentials = UnsafeMutablePointer<Float>.allocate(capacity: keysPerChunk)
        deinit { logits.deallocate(); exponentials.deallocate() }
    }
    func makeScratch() -> Scratch { Scratch() }

    /// n = q·kᵀ/τ of anchors `rows` and keys `keys` into `logits` [rows, keys], row-major.
    func logits(_ rows: Range<Int>, _ keys: Range<Int>, into logits: UnsafeMutablePointer<Float>) {
        openBLASGemm(false, true, rows.count, keys.count, depth, 1, q + rows.lowerBound * depth, depth,
                     self.keys + keys.lowerBound * depth, depth, 0, logits, keys.count)
        let temperature = op.temperature
        vectorMap(logits, logits, count: rows.count * keys.count) { $0 / temperature }
    }

    @inline(__always) func isNegative(_ row: Int, _ key: Int) -> Bool {
        op.isNegative(labels: (anchorLabels[row], keyLabels[key]), scores: (anchorScores[row], keyScores[key]))
    }

    /// What one anchor's loss and gradient need: p, m and its ties among p and every n, Σ J·e^{n−m}.
    struct RowStatistics {
        var positive: Float
        var max: Float
        var ties: Int = 1
        var negatives: Double = 0

        init(positive: Float) { self.positive = positive; max = positive }

        func loss(epsilon: Float) -> Float {
            let e = Foundation.exp(positive - max)
            return -Foundation.log(e / (e + Float(negatives) + epsilon) + epsilon)
        }

        /// The cotangent g times ∂l/∂n per J·e^{n−m} (`negative`), per tie of m (`tie`), and ∂l/∂p in all
        /// (`positive`).
        func weights(cotangent g: Float, epsilon: Float) -> RowWeights {
            let e = Foundation.exp(positive - max), denominator = e + Float(negatives) + epsilon
            let outer = -1 / (e / denominator + epsilon), squared = denominator * denominator
            let tie = -outer * e * epsilon / squared / Float(ties)
            return RowWeights(max: max, negative: -g * outer * e / squared, tie: g * tie,
                              positive: g * (outer * e * (denominator - e) / squared + (positive == max ? tie : 0)))
        }
    }

    struct RowWeights { var max: Float, negative: Float, tie: Float, positive: Float }

    /// The statistics of the anchors of `block`, the keys streamed once (Σ rescaled when the running max rises).
    func statistics(block: Int, _ scratch: Scratch) -> [RowStatistics] {
        let rows = rows(ofBlock: block)
        var statistics = rows.map { row in
            var dot: Float = 0
            for e in row * depth..<(row + 1) * depth { dot += q[e] * positives[e] }
            return RowStatistics(positive: dot / op.temperature)
        }
        for chunk in 0..<chunks {
            let keys = keys(ofChunk: chunk), width = keys.count
            logits(rows, keys, into: scratch.logits)
            for (index, row) in rows.enumerated() {
                let n = scratch.logits + index * width
                var chunkMax = -Float.infinity
                for j in 0..<width { chunkMax = Swift.max(chunkMax, n[j]) }
                if chunkMax > statistics[index].max {
                    let rise = Foundation.exp(statistics[index].max - chunkMax)
                    statistics[index].negatives *= Double(rise)
                    statistics[index].max = chunkMax
                    statistics[index].ties = 0
                }
                let m = statistics[index].max
                if chunkMax == m { for j in 0..<width where n[j] == m { statistics[index].ties += 1 } }
                vectorMap(n, scratch.exponentials, count: width) { exp16($0 - m) }
                var sum: Double = 0
                for j in 0..<width where isNegative(row, keys.lowerBound + j) { sum += Double(scratch.exponentials[j]) }
                statistics[index].negatives += sum
            }
        }
        return statistics
    }

    /// The weights w of anchors `rows` × `keys` into `scratch.logits` (their similarities recomputed):
    /// `negative`·J·e^{n−m} plus `tie` where n = m.
    func weights(_ rows: Range<Int>, _ keys: Range<Int>, _ rowWeights: UnsafePointer<RowWeights>, _ scratch: Scratch) {
        let width = keys.count
        logits(rows, keys, into: scratch.logits)
        for (index, row) in rows.enumerated() {
            let n = scratch.logits + index * width, w = rowWeights[row]
            vectorMap(n, scratch.exponentials, count: width) { exp16($0 - w.max) }
            for j in 0..<width {
                let negative = isNegative(row, keys.lowerBound + j) ? w.negative * scratch.exponentials[j] : 0
                n[j] = negative + (n[j] == w.max ? w.tie : 0)
            }
        }
    }
}

extension CrossPatchInfoNCE: DeviceOperation {
    /// The seven inputs, as every contrast kernel takes them first.
    static let kernelInputs: [KernelArgument] = (0..<7).map { .input($0) }

    /// The kernels' trailing arguments (CONTRAST_ARGUMENTS in Kernels/losses.cl).
    func kernelArguments(_ inputShapes: [[Int]]) -> [KernelArgument] {
        [.int(Int32(inputShapes[0][0])), .int(Int32(inputShapes[2][0])), .int(Int32(inputShapes[0][1])),
         .float(temperature), .float(background), .float(foreground), .int(scoreLimit == nil ? 0 : 1),
         .float(scoreLimit ?? 0), .float(epsilon)]
    }

    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        [elementwiseLaunch("losses", "cross_patch_info_nce",
                           Self.kernelInputs + [.output] + kernelArguments(inputShapes), count: inputShapes[0][0])]
    }
}

extension CrossPatchInfoNCEBackward: DeviceOperation {
    /// Per anchor: its weights (m, `negative`, `tie`) into a scratch buffer, dq and dk₊; then per key: dk.
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let weights = KernelArgument.scratch(index: 0, count: 3 * inputShapes[0][0])
        let inputs = CrossPatchInfoNCE.kernelInputs, tail = forward.kernelArguments(inputShapes)
        return [elementwiseLaunch("losses", "cross_patch_info_nce_backward_anchors",
                                  inputs + [.input(7), weights, .output] + tail, count: inputShapes[0][0]),
                elementwiseLaunch("losses", "cross_patch_info_nce_backward_keys", inputs + [weights, .output] + tail,
                                  count: inputShapes[2][0])]
    }
}

/// The losses of the engine. Each returns its value through `checkedFinite(<loss name>)`.
public enum Loss {
    public enum Reduction: Sendable { case mean, sum, none }

    /// The label of pixels no loss or metric counts: 255 in multi-class masks (SPEC §1). The supervised losses
    /// ignore it by default, as PyTorch's default −100: a value that is never a class.
    public static let ignoredLabel = 255

    /// Soft Dice variants on probabilities p and one-hot targets y (Σ over the axes named per case).
    public enum DiceVariant: Sendable {
        /// pytorch_toolbelt `DiceLoss("multiclass")` (DTSeg): per class c, sums over batch and pixels,
        /// D_c = 2Σpy / max(Σp + Σy, 1e-7) (smooth 0); loss = mean_c (1 − D_c)·1{Σy_c > 0}, so classes absent from
        /// the batch add 0 but still count in the mean.
        case toolbelt
        /// XNet `DiceLoss` (Ciampi's baselines): per sample and class, sums over pixels,
        /// 1 − (2Σpy + 1)/(Σp² + Σy² + 1); mean over samples and classes.
        case xnet
        /// SSL4MIS `DiceLoss`: per class, sums over batch and pixels, 1 − (2Σpy + 1e-5)/(Σp² + Σy² + 1e-5);
        /// mean over classes.
        case ssl4mis
    }

    /// PyTorch `F.cross_entropy(logits, labels, weight, ignore_index, reduction)` as one fused op.
    /// A label outside 0..<C that is not `ignoreIndex` fails the finite check.
    public static func crossEntropy(logits: Tensor, labels: Tensor, weights: [Float]? = nil,
                                    ignoreIndex: Int? = ignoredLabel,
                                    reduction: Reduction = .mean) -> Tensor {
        Tensor.record(ClassTargetLoss(.logits, weights: weights, ignoreIndex: ignoreIndex, reduction: reduction),
                      [logits, labels]).checkedFinite("cross_entropy")
    }

    /// `F.nll_loss(log(p + epsilon), labels, …)` for models that end in a softmax (GenSelfDiff). The default
    /// epsilon keeps log finite where a probability underflows to 0 (the reference code has none).
    public static func nll(probabilities: Tensor, labels: Tensor, weights: [Float]? = nil,
                           ignoreIndex: Int? = ignoredLabel,
                           reduction: Reduction = .mean, epsilon: Float = 1e-7) -> Tensor {
        logLikelihood(probabilities: probabilities, labels: labels, weights: weights, ignoreIndex: ignoreIndex,
                      reduction: reduction, epsilon: epsilon).checkedFinite("nll")
    }

    static func logLikelihood(probabilities: Tensor, labels: Tensor, weights: [Float]?, ignoreIndex: Int?,
                              reduction: Reduction, epsilon: Float) -> Tensor {
        .record(ClassTargetLoss(.logProbabilities, weights: weights, ignoreIndex: ignoreIndex, reduction: reduction),
                [(probabilities + epsilon).log(), labels])
    }

    /// Soft Dice loss (see `DiceVariant`) of probabilities [N, C, d…] (softmax of the logits) against labels.
    /// Positions labelled `ignoreIndex` count nowhere: their p and one-hot y are zeroed before every sum, as
    /// pytorch_toolbelt's `DiceLoss(ignore_index=…)`.
    public static func dice(probabilities: Tensor, labels: Tensor, variant: DiceVariant,
                            ignoreIndex: Int? = ignoredLabel) -> Tensor {
        let kept = ignoreIndex.map { labels.notEqual(Tensor(scalar: Float($0))) }
        // Ignored positions become class 0 for the one-hot, then are zeroed.
        let y = kept.map { oneHot(labels * $0, like: probabilities, loss: "dice") * $0.unsqueeze(1) }
            ?? oneHot(labels, like: probabilities, loss: "dice")
        let p = kept.map { probabilities * $0.unsqueeze(1) } ?? probabilities
        let pixels = Array(2..<Swift.max(p.rank, 2))
        let value: Tensor
        switch variant {
        case .toolbelt:
            let axes = [0] + pixels
            let dice = 2 * (p * y).sum(axes: axes) / (p + y).sum(axes: axes).clamp(min: 1e-7)
            value = ((1 - dice) * y.sum(axes: axes).greater(0)).mean()
        case .xnet, .ssl4mis:
            let (axes, smooth): ([Int], Float) = variant == .xnet ? (pixels, 1) : ([0] + pixels, 1e-5)
            // y² = y for a one-hot target.
            let ratio = (2 * (p * y).sum(axes: axes) + smooth) / (p.square().sum(axes: axes) + y.sum(axes: axes) + smooth)
            value = (1 - ratio).mean()
        }
        return value.checkedFinite("dice")
    }

    /// GenSelfDiff focal loss on probabilities: −(1/(N·d…)) Σ (1 − p)^γ·y·log(p + ε), with ε guarding log(0).
    public static func focal(probabilities p: Tensor, labels: Tensor, gamma: Float = 2, epsilon: Float = 1e-7) -> Tensor {
        focal(p, logP: (p + epsilon).log(), labels: labels, gamma: gamma)
    }

    /// The focal loss from logits, with log p = log_softmax(logits) (no ε needed).
    public static func focal(logits: Tensor, labels: Tensor, gamma: Float = 2) -> Tensor {
        let logP = logits.logSoftmax(axis: 1)
        return focal(logP.exp(), logP: logP, labels: labels, gamma: gamma)
    }

    static func focal(_ p: Tensor, logP: Tensor, labels: Tensor, gamma: Float) -> Tensor {
        let y = oneHot(labels, like: p, loss: "focal")
        // N·d… positions: one label each.
        return (-((1 - p).pow(gamma) * y * logP).sum() / Float(labels.count)).checkedFinite("focal")
    }

    /// GenSelfDiff's structural-similarity loss on probabilities p [N, C, H, W]. Per (n, c), with μ and σ over
    /// (h, w) (σ unbiased, torch.std): e = |(y − μ_y + C₁)/(σ_y + C₁) − (p − μ_p + C₁)/(σ_p + C₁)|; the hard pixels
    /// f = 1{e > β·max_hw e}; L = L_CE·Σ(e·f)/Σf with L_CE = −(1/(N·H·W)) Σ y·log(p + ε). Gradients flow through
    /// both factors (not through f).
    public static func structuralSimilarity(probabilities p: Tensor, labels: Tensor, c1: Float = 0.01, beta: Float = 0.1,
                                            epsilon: Float = 1e-7) -> Tensor {
        let y = oneHot(labels, like: p, loss: "structural_similarity")
        let pixels = Array(2..<Swift.max(p.rank, 2))
        func standardized(_ t: Tensor) -> Tensor {
            (t - t.mean(axes: pixels, keepDims: true) + c1) / (t.std(axes: pixels, keepDims: true) + c1)
        }
        let e = (standardized(y) - standardized(p)).abs()
        let hard = e.greater(e.max(axes: pixels, keepDims: true) * beta)
        let crossEntropy = logLikelihood(probabilities: p, labels: labels, weights: nil, ignoreIndex: nil,
                                         reduction: .mean, epsilon: epsilon)
        return (crossEntropy * (e * hard).sum() / hard.sum()).checkedFinite("structural_similarity")
    }

    /// Mean squared error (F.mse_loss); shapes must be equal.
    public static func mse(_ prediction: Tensor, _ target: Tensor, reduction: Reduction = .mean) -> Tensor {
        guard prediction.shape == target.shape else {
            return .invalid("mse", "prediction \(describe(prediction.shape)) and target \(describe(target.shape)) differ")
        }
        return reduced((prediction - target).square(), reduction).checkedFinite("mse")
    }

    /// KL(p ‖ q) pointwise as `F.kl_div(logQ, p, reduction)`: p·(log p − log q), with 0·log 0 = 0.
    /// `.mean` is PyTorch's elementwise "mean"; its "batchmean" is `.sum` / N. URPC's variance is the `.none` map
    /// summed over classes with p the mean prediction and logQ = log of one scale's prediction.
    public static func klDivergence(_ p: Tensor, logQ: Tensor, reduction: Reduction = .mean) -> Tensor {
        guard p.shape == logQ.shape else {
            return .invalid("kl_divergence", "p \(describe(p.shape)) and logQ \(describe(logQ.shape)) differ")
        }
        // log 1 where p = 0 gives that element 0, and its gradient 0 instead of 0·(−inf) = NaN.
        let pointwise = p * (Tensor.where(p.greater(0), p, Tensor(scalar: 1)).log() - logQ)
        return reduced(pointwise, reduction).checkedFinite("kl_divergence")
    }

    /// Entropy of probabilities [N, C, d…] over the class axis, −Σ_c p·log(p + ε), divided by log C when
    /// `normalized` (SSL4MIS/XNet entropy minimisation: ε = 1e-6, normalized, mean).
    public static func entropy(probabilities p: Tensor, epsilon: Float = 1e-6, normalized: Bool = true,
                               reduction: Reduction = .mean) -> Tensor {
        entropy(p, logP: (p + epsilon).log(), normalized: normalized, reduction: reduction)
    }

    /// Entropy from logits with log p = log_softmax (CDCL's L_ent: not normalized, mean).
    public static func entropy(logits: Tensor, normalized: Bool = false, reduction: Reduction = .mean) -> Tensor {
        let logP = logits.logSoftmax(axis: 1)
        return entropy(logP.exp(), logP: logP, normalized: normalized, reduction: reduction)
    }

    static func entropy(_ p: Tensor, logP: Tensor, normalized: Bool, reduction: Reduction) -> Tensor {
        guard p.rank >= 2 else { return .invalid("entropy", "probabilities \(describe(p.shape)) need a class axis 1") }
        let perPosition = -(p * logP).sum(axes: [1])
        let value = normalized ? perPosition / Foundation.log(Float(p.shape[1])) : perPosition
        return reduced(value, reduction).checkedFinite("entropy")
    }

    /// CDCL's cross-patch InfoNCE per anchor [P] (`CrossPatchInfoNCE`): anchors and their positives [P, D] against
    /// the keys [K, D], with the anchors' and the keys' pseudo-labels and patch scores.
    public static func crossPatchInfoNCE(_ loss: CrossPatchInfoNCE, anchors: Tensor, positives: Tensor, keys: Tensor,
                                         anchorLabels: Tensor, anchorScores: Tensor, keyLabels: Tensor,
                                         keyScores: Tensor) -> Tensor {
        Tensor.record(loss, [anchors, positives, keys, anchorLabels, anchorScores, keyLabels, keyScores])
            .checkedFinite("cross_patch_info_nce")
    }

    static func reduced(_ t: Tensor, _ reduction: Reduction) -> Tensor {
        switch reduction {
        case .mean: return t.mean()
        case .sum: return t.sum()
        case .none: return t
        }
    }

    /// One-hot [N, C, d…] of labels [N, d…] for scores shaped like `scores`, built by comparing against class ids
    /// [1, C, 1…]. A label outside 0..<C gives a NaN row (0/0), so the loss's finite check reports it.
    static func oneHot(_ labels: Tensor, like scores: Tensor, loss: String) -> Tensor {
        do { try checkClassTargets(scores.shape, labels.shape) } catch { return .invalid(loss, error.message) }
        let classes = scores.shape[1]
        let ids = Tensor((0..<classes).map(Float.init), shape: [1, classes] + [Int](repeating: 1, count: scores.rank - 2))
        let hot = labels.unsqueeze(1).equal(ids)
        return hot / hot.sum(axes: [1], keepDims: true)
    }
}

extension HarnessCatalog {
    static var losses: [HarnessCase] {
        let s = [2, 3, 4, 5]
        let logits = HarnessCase.Input.normal(s), labels = HarnessCase.Input.integers([2, 4, 5], 0, 3)
        // Labels 0..<4 with 3 classes: label 3 is the ignore index.
        let withIgnored = HarnessCase.Input.integers([2, 4, 5], 0, 4)
        let w: [Float] = [0.2, 1.0, 2.5]
        /// 1 where the value is NaN: checks the out-of-range poison without tripping the finite check.
        func isNaN(_ t: Tensor) -> Tensor { t.notEqual(t) }
        let badLabels = HarnessCase.Input.values([0, 3, 2, -1, 1.5, 1], [2, 3])
        return [
            HarnessCase("loss.cross_entropy", [logits, labels]) { Loss.crossEntropy(logits: $0[0], labels: $0[1]) },
            HarnessCase("loss.cross_entropy.weighted", [logits, labels]) {
                Loss.crossEntropy(logits: $0[0], labels: $0[1], weights: w)
            },
            HarnessCase("loss.cross_entropy.ignore", [logits, withIgnored]) {
                Loss.crossEntropy(logits: $0[0], labels: $0[1], ignoreIndex: 3)
            },
            HarnessCase("loss.cross_entropy.weighted_ignore", [logits, withIgnored]) {
                Loss.crossEntropy(logits: $0[0], labels: $0[1], weights: w, ignoreIndex: 3)
            },
            HarnessCase("loss.cross_entropy.sum", [logits, withIgnored]) {
                Loss.crossEntropy(logits: $0[0], labels: $0[1], weights: w, ignoreIndex: 3, reduction: .sum)
            },
            HarnessCase("loss.cross_entropy.none", [logits, withIgnored]) {
                Loss.crossEntropy(logits: $0[0] * 3, labels: $0[1], weights: w, ignoreIndex: 3, reduction: .none)
            },
            HarnessCase("loss.cross_entropy.vectors", [.normal([6, 4]), .integers([6], 0, 4)]) {
                Loss.crossEntropy(logits: $0[0], labels: $0[1])
            },
            // The adversarial baseline's discriminator: 2-way CE on [N, 2] logits.
            HarnessCase("loss.cross_entropy.two_way", [.normal([5, 2]), .integers([5], 0, 2)]) {
                Loss.crossEntropy(logits: $0[0], labels: $0[1])
            },
            HarnessCase("loss.cross_entropy.out_of_range", [.normal([2, 3, 3]), badLabels], frozen: [1]) { x in
                isNaN(.record(ClassTargetLoss(.logits, weights: nil, ignoreIndex: nil, reduction: .none), [x[0], x[1]]))
            },
            HarnessCase("loss.nll", [.uniform(s, 0.05, 1), labels]) { Loss.nll(probabilities: $0[0], labels: $0[1]) },
            HarnessCase("loss.nll.weighted_ignore", [.uniform(s, 0.05, 1), withIgnored]) {
                Loss.nll(probabilities: $0[0], labels: $0[1], weights: w, ignoreIndex: 3)
            },
            HarnessCase("loss.nll.none", [.uniform(s, 0.05, 1), withIgnored]) {
                Loss.nll(probabilities: $0[0], labels: $0[1], weights: w, ignoreIndex: 3, reduction: .none)
            },
            // 4 classes, labels 0..<3: class 3 is absent and masked out of the toolbelt mean.
            HarnessCase("loss.dice.toolbelt", [.normal([2, 4, 4, 5]), labels]) {
                Loss.dice(probabilities: $0[0].softmax(axis: 1), labels: $0[1], variant: .toolbelt)
            },
            HarnessCase("loss.dice.toolbelt.ignore", [logits, withIgnored]) {
                Loss.dice(probabilities: $0[0].softmax(axis: 1), labels: $0[1], variant: .toolbelt, ignoreIndex: 3)
            },
            HarnessCase("loss.dice.toolbelt.all_present", [logits, labels]) {
                Loss.dice(probabilities: $0[0].softmax(axis: 1), labels: $0[1], variant: .toolbelt)
            },
            HarnessCase("loss.dice.xnet", [.normal([2, 4, 4, 5]), labels]) {
                Loss.dice(probabilities: $0[0].softmax(axis: 1), labels: $0[1], variant: .xnet)
            },
            HarnessCase("loss.dice.ssl4mis", [logits, labels]) {
                Loss.dice(probabilities: $0[0].softmax(axis: 1), labels: $0[1], variant: .ssl4mis)
            },
            HarnessCase("loss.one_hot.out_of_range", [badLabels], frozen: [0]) { x in
                isNaN(Loss.oneHot(x[0], like: .zeros([2, 3, 3]), loss: "one_hot"))
            },
            HarnessCase("loss.focal", [logits, labels]) {
                Loss.focal(probabilities: $0[0].softmax(axis: 1), labels: $0[1])
            },
            HarnessCase("loss.focal.logits", [logits, labels]) { Loss.focal(logits: $0[0], labels: $0[1], gamma: 1.5) },
            HarnessCase("loss.structural_similarity", [logits, labels], fdStep: 1e-3) {
                Loss.structuralSimilarity(probabilities: $0[0].softmax(axis: 1), labels: $0[1])
            },
            HarnessCase("loss.structural_similarity.binary", [.normal([2, 2, 5, 6]), .integers([2, 5, 6], 0, 2)],
                        fdStep: 1e-3) {
                Loss.structuralSimilarity(probabilities: $0[0].softmax(axis: 1), labels: $0[1])
            },
            HarnessCase("loss.mse", [.normal(s), .normal(s)]) { Loss.mse($0[0], $0[1]) },
            HarnessCase("loss.mse.sum", [.normal(s), .normal(s)]) { Loss.mse($0[0], $0[1], reduction: .sum) },
            HarnessCase("loss.mse.none", [.normal(s), .normal(s)]) { Loss.mse($0[0], $0[1], reduction: .none) },
            HarnessCase("loss.kl", [logits, .normal(s)]) {
                Loss.klDivergence($0[0].softmax(axis: 1), logQ: $0[1].logSoftmax(axis: 1), reduction: .none)
            },
            HarnessCase("loss.kl.mean", [logits, .normal(s)]) {
                Loss.klDivergence($0[0].softmax(axis: 1), logQ: $0[1].logSoftmax(axis: 1))
            },
            // Exact zeros in p; p is frozen (the finite difference would straddle the 0·log 0 kink).
            HarnessCase("loss.kl.zero_target", [.values([0, 0.25, 0.75, 0.5, 0.5, 0, 1, 0], [2, 4]), .normal([2, 4])],
                        frozen: [0]) {
                Loss.klDivergence($0[0], logQ: $0[1].logSoftmax(axis: 1), reduction: .sum)
            },
            HarnessCase("loss.entropy", [logits]) { Loss.entropy(probabilities: $0[0].softmax(axis: 1)) },
            HarnessCase("loss.entropy.none", [logits]) {
                Loss.entropy(probabilities: $0[0].softmax(axis: 1), normalized: false, reduction: .none)
            },
            HarnessCase("loss.entropy.logits", [logits]) { Loss.entropy(logits: $0[0] * 2) },
            HarnessCase("loss.cross_patch_info_nce.paper", crossPatchInputs, frozen: [4, 6]) {
                crossPatchInfoNCECase($0, scoreLimit: nil, epsilon: 1e-8)
            },
            HarnessCase("loss.cross_patch_info_nce.code", crossPatchInputs, frozen: [4, 6]) {
                crossPatchInfoNCECase($0, scoreLimit: 0.3 + 0.7 + 1e-4, epsilon: 1e-8)
            },
            // A large ε gives m's gradient (through the ε terms) a size the finite differences see.
            HarnessCase("loss.cross_patch_info_nce.epsilon", crossPatchInputs, frozen: [4, 6]) {
                crossPatchInfoNCECase($0, scoreLimit: nil, epsilon: 0.05)
            },
        ]
    }

    /// 6 anchors, their positives and 9 keys, with labels and with scores of both patch types, mixed patches and
    /// the thresholds themselves (0.3, 0.7; 0.3 + 0.7 under the score rule).
    static var crossPatchInputs: [HarnessCase.Input] {
        [.normal([6, 4]), .normal([6, 4]), .normal([9, 4]), .integers([6], 0, 2),
         .values([0, 0.2, 0.5, 0.8, 1, 0.3], [6]), .integers([9], 0, 2),
         .values([1, 0.75, 0.7, 0.5, 0.25, 0, 0.9, 0.1, 0.3], [9])]
    }

    /// CDCL's cross-patch InfoNCE on ℓ2-normalised rows at τ 0.5 (milder logits for the finite differences).
    static func crossPatchInfoNCECase(_ x: [Tensor], scoreLimit: Float?, epsilon: Float) -> Tensor {
        Loss.crossPatchInfoNCE(CrossPatchInfoNCE(temperature: 0.5, background: 0.3, foreground: 0.7,
                                                 scoreLimit: scoreLimit, epsilon: epsilon),
                               anchors: x[0].l2Normalize(axis: 1), positives: x[1].l2Normalize(axis: 1),
                               keys: x[2].l2Normalize(axis: 1), anchorLabels: x[3], anchorScores: x[4],
                               keyLabels: x[5], keyScores: x[6])
    }
}

import Foundation
import HistoCore

/// Host copies of gradients, keyed by parameter: what optimizers consume. Accumulation, averaging and clipping
/// work on these host arrays.
///
/// The training-step pattern:
/// ```swift
/// let params = model.trainableParameters()
/// let loss = lossFunction(model(x), y)                         // records the forward graph
/// let (lossValue, grads) = try Gradients.of(loss, wrt: params)  // backward graph, one eval, copies to host
/// grads.clipByGlobalNorm(1.0)                                   // optional
/// optimizer.learningRate = schedule.learningRate(at: optimizer.stepCount)
/// try optimizer.step(grads)
/// try ema?.update(from: model)
/// ```
public struct Gradients {
    var entries: [(parameter: Parameter, values: [Float])] = []
    private var index: [ObjectIdentifier: Int] = [:]

    public init() {}

    /// Evaluates `tensors` in one graph run and pairs them with `parameters` (same order, same shapes).
    public init(parameters: [Parameter], tensors: [Tensor]) throws {
        guard parameters.count == tensors.count else {
            throw EngineError.invalidOp(op: "gradients", message: "\(parameters.count) parameters but \(tensors.count) gradient tensors")
        }
        try eval(tensors)
        for (p, g) in zip(parameters, tensors) { try set(try g.toArray(), for: p, shape: g.shape) }
    }

    /// Gradients of a one-element `loss` with respect to `parameters`: records the backward graph, evaluates it
    /// together with the loss, and returns the loss value with the host gradients.
    /// `alongside` are evaluated in the same graph run (e.g. `model.pendingBufferUpdates()`, BatchNorm's running
    /// statistics), so that they reuse the forward pass instead of recomputing it.
    public static func of(_ loss: Tensor, wrt parameters: [Parameter], alongside: [Tensor] = [],
                          on backend: (any Backend)? = nil) throws -> (loss: Float, gradients: Gradients) {
        guard loss.count == 1 else {
            throw EngineError.invalidOp(op: "gradients", message: "the loss has shape \(describe(loss.shape)); reduce it to one element")
        }
        let grads = Autodiff.gradients(of: loss, wrt: parameters.map(\.value))
        try eval([loss] + grads + alongside, on: backend)
        let value = try loss.item()
        return (value, try Gradients(parameters: parameters, tensors: grads))
    }

    /// The parameters that have a gradient, in insertion order.
    public var parameters: [Parameter] { entries.map(\.parameter) }

    public subscript(parameter: Parameter) -> [Float]? {
        index[ObjectIdentifier(parameter)].map { entries[$0].values }
    }

    /// Sets (replaces) the gradient of `parameter`; `values` must have the parameter's element count.
    public mutating func set(_ values: [Float], for parameter: Parameter) throws {
        try set(values, for: parameter, shape: nil)
    }

    private mutating func set(_ values: [Float], for parameter: Parameter, shape: [Int]?) throws {
        guard values.count == parameter.count, shape.map({ $0 == parameter.shape }) ?? true else {
            let got = shape.map(describe) ?? "\(values.count) values"
            throw EngineError.invalidOp(op: "gradients", message:
                "gradient for \(parameter.name) is \(got) but the parameter has shape \(describe(parameter.shape))")
        }
        if let i = index[ObjectIdentifier(parameter)] {
            entries[i].values = values
        } else {
            index[ObjectIdentifier(parameter)] = entries.count
            entries.append((parameter, values))
        }
    }

    /// Adds `other` elementwise (parameters only in `other` are inserted).
    public mutating func add(_ other: Gradients) throws {
        for (p, values) in other.entries {
            guard let i = index[ObjectIdentifier(p)] else { try set(values, for: p); continue }
            guard entries[i].values.count == values.count else {
                throw EngineError.invalidOp(op: "gradients", message:
                    "cannot add a gradient of \(values.count) values to one of \(entries[i].values.count) for \(p.name)")
            }
            entries[i].values.withUnsafeMutableBufferPointer { acc in
                values.withUnsafeBufferPointer { g in for j in 0..<g.count { acc[j] += g[j] } }
            }
        }
    }

    /// Multiplies every gradient by `factor`.
    public mutating func scale(by factor: Float) {
        for i in entries.indices {
            entries[i].values.withUnsafeMutableBufferPointer { g in for j in 0..<g.count { g[j] *= factor } }
        }
    }

    /// √(Σ g²) over all gradients (accumulated in double).
    public var globalNorm: Float {
        var total = 0.0
        for (_, values) in entries {
            var s = 0.0
            for v in values { s += Double(v) * Double(v) }
            total += s
        }
        return Float(total.squareRoot())
    }

    /// `torch.nn.utils.clip_grad_norm_`: if the global norm exceeds `maxNorm`, scales every gradient by
    /// maxNorm/(norm + 1e-6). Returns the norm before clipping. A non-finite norm leaves the gradients as they
    /// are; check the returned value to skip such a step.
    @discardableResult
    public mutating func clipByGlobalNorm(_ maxNorm: Float) -> Float {
        let norm = globalNorm
        let coefficient = maxNorm / (norm + 1e-6)
        if norm.isFinite && coefficient < 1 { scale(by: coefficient) }
        return norm
    }

    /// `torch.nn.utils.clip_grad_value_`: clamps every gradient element to [−limit, limit].
    public mutating func clipByValue(_ limit: Float) {
        for i in entries.indices {
            entries[i].values.withUnsafeMutableBufferPointer { g in
                for j in 0..<g.count { g[j] = Swift.min(Swift.max(g[j], -limit), limit) }
            }
        }
    }
}

/// Combines the gradients of several micro-batches into one optimizer step (gradient accumulation).
public struct GradientAccumulator {
    public enum Reduction { case sum, mean }
    public let microBatches: Int
    public let reduction: Reduction
    /// Micro-batches added since the last combined result.
    public private(set) var pending = 0
    private var total = Gradients()

    public init(microBatches: Int, reduction: Reduction = .mean) {
        self.microBatches = max(microBatches, 1)
        self.reduction = reduction
    }

    /// Adds one micro-batch. Returns the combined gradients (sum, or sum/microBatches) when this completes a
    /// group of `microBatches`, and starts the next group; nil otherwise.
    public mutating func add(_ gradients: Gradients) throws -> Gradients? {
        try total.add(gradients)
        pending += 1
        guard pending == microBatches else { return nil }
        var result = total
        if reduction == .mean { result.scale(by: 1 / Float(microBatches)) }
        total = Gradients()
        pending = 0
        return result
    }
}

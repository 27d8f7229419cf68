import Foundation

/// A learning rate as a function of the optimizer step (0 for the first step; pass `optimizer.stepCount`).
/// Schedules are pure functions of the step, so a resumed run only needs the step count.
public protocol LearningRateSchedule {
    func learningRate(at step: Int) -> Float
}

public struct ConstantSchedule: LearningRateSchedule {
    public let value: Float
    public init(_ value: Float) { self.value = value }
    public func learningRate(at step: Int) -> Float { value }
}

/// `StepLR`: base·γ^⌊step/stepSize⌋.
public struct StepSchedule: LearningRateSchedule {
    public let base: Float, stepSize: Int, gamma: Float
    public init(base: Float, stepSize: Int, gamma: Float) {
        self.base = base; self.stepSize = max(stepSize, 1); self.gamma = gamma
    }
    public func learningRate(at step: Int) -> Float {
        Float(Double(base) * Foundation.pow(Double(gamma), Double(max(step, 0) / stepSize)))
    }
}

/// Polynomial decay (`PolynomialLR`, the SSL4MIS/CDCL "poly" rule): (base − minimum)·(1 − min(step, total)/total)^power + minimum.
public struct PolySchedule: LearningRateSchedule {
    public let base: Float, totalSteps: Int, power: Float, minimum: Float
    public init(base: Float, totalSteps: Int, power: Float = 0.9, minimum: Float = 0) {
        self.base = base; self.totalSteps = max(totalSteps, 1); self.power = power; self.minimum = minimum
    }
    public func learningRate(at step: Int) -> Float {
        let progress = Double(min(max(step, 0), totalSteps)) / Double(totalSteps)
        return Float(Double(base - minimum) * Foundation.pow(1 - progress, Double(power)) + Double(minimum))
    }
}

/// Cosine annealing (`CosineAnnealingLR` closed form): minimum + (base − minimum)·(1 + cos(π·min(step, total)/total))/2.
/// For warm-up, wrap it: `LinearWarmup(steps: w, then: CosineSchedule(base:, totalSteps: total − w))`.
public struct CosineSchedule: LearningRateSchedule {
    public let base: Float, totalSteps: Int, minimum: Float
    public init(base: Float, totalSteps: Int, minimum: Float = 0) {
        self.base = base; self.totalSteps = max(totalSteps, 1); self.minimum = minimum
    }
    public func learningRate(at step: Int) -> Float {
        let progress = Double(min(max(step, 0), totalSteps)) / Double(totalSteps)
        return Float(Double(minimum) + Double(base - minimum) * (1 + Foundation.cos(Double.pi * progress)) / 2)
    }
}

/// Linear warm-up in front of another schedule: for step < steps the rate rises linearly from
/// startFactor·target to target, target = `then.learningRate(at: 0)` (`LinearLR(start_factor, total_iters)`);
/// afterwards it is `then.learningRate(at: step − steps)`, so the wrapped schedule starts when warm-up ends.
public struct LinearWarmup: LearningRateSchedule {
    public let steps: Int
    public let startFactor: Float
    public let then: any LearningRateSchedule

    public init(steps: Int, startFactor: Float = 0, then: any LearningRateSchedule) {
        self.steps = max(steps, 0); self.startFactor = startFactor; self.then = then
    }

    public func learningRate(at step: Int) -> Float {
        guard step < steps else { return then.learningRate(at: step - steps) }
        let fraction = Double(startFactor) + Double(1 - startFactor) * Double(max(step, 0)) / Double(steps)
        return Float(Double(then.learningRate(at: 0)) * fraction)
    }
}

import Foundation
import XCTest
import HistoCore
@testable import HistoDiffusion

/// The schedule's graph helpers over the fused diffusion ops, the timestep checks and the simple loss.
final class DiffusionOpsTests: XCTestCase {
    let schedule = NoiseSchedule(.linear)
    let shape = [4, 3, 5, 5]
    /// Early, middle and late steps, including both ends.
    let steps: [Float] = [0, 17, 500, 999]

    func draws() -> (x0: Tensor, noise: Tensor, t: Tensor) {
        let g = RandomGenerator(seed: 42)
        return (g.uniform(shape, -1, 1), g.normal(shape), Tensor(steps, shape: [4]))
    }

    func assertClose(_ a: Tensor, _ b: Tensor, accuracy: Float, _ what: String, line: UInt = #line) throws {
        let x = try a.toArray(), y = try b.toArray()
        XCTAssertEqual(a.shape, b.shape, what, line: line)
        let worst = zip(x, y).map { Swift.abs($0 - $1) }.max() ?? 0
        XCTAssertLessThanOrEqual(worst, accuracy, what, line: line)
    }

    func testQSampleMatchesTheForwardProcess() throws {
        let (x0, noise, t) = draws()
        let xt = try schedule.qSample(x0: x0, noise: noise, t: t).toArray()
        let x = try x0.toArray(), e = try noise.toArray(), inner = xt.count / 4
        for i in xt.indices {
            let a = schedule.alphaBars[Int(steps[i / inner])]
            XCTAssertEqual(Double(xt[i]), a.squareRoot() * Double(x[i]) + (1 - a).squareRoot() * Double(e[i]), accuracy: 2e-6)
        }
    }

    /// x₀ → x_t → (x̂₀, ε̂) for every kind of model output, back to x₀ and ε.
    func testConversionsRoundTrip() throws {
        let (x0, noise, t) = draws()
        let xt = schedule.qSample(x0: x0, noise: noise, t: t)
        // x̂₀ from ε̂ divides by √ᾱ (≈ 0.006 at t = 999): float32 rounding of x_t grows to ~1e-4 there.
        try assertClose(schedule.predictX0(xt: xt, output: noise, t: t, target: .epsilon), x0, accuracy: 2e-4, "x0 from ε")
        try assertClose(schedule.epsilon(xt: xt, output: x0, t: t, target: .x0), noise, accuracy: 2e-4, "ε from x0")
        let v = schedule.velocityTarget(x0: x0, noise: noise, t: t)
        try assertClose(schedule.predictX0(xt: xt, output: v, t: t, target: .v), x0, accuracy: 2e-5, "x0 from v")
        try assertClose(schedule.epsilon(xt: xt, output: v, t: t, target: .v), noise, accuracy: 2e-5, "ε from v")
        try assertClose(schedule.trainingTarget(.v, x0: x0, noise: noise, t: t), v, accuracy: 0, "v target")
        XCTAssertIdentical(schedule.trainingTarget(.epsilon, x0: x0, noise: noise, t: t).node, noise.node)
        XCTAssertIdentical(schedule.predictX0(xt: xt, output: x0, t: t, target: .x0).node, x0.node)
    }

    /// The conversions are differentiable: d/dx₀ of Σ q_sample = √ᾱ_t per element.
    func testQSampleGradient() throws {
        let (x0, noise, t) = draws()
        let grads = Autodiff.gradients(of: schedule.qSample(x0: x0, noise: noise, t: t).sum(), wrt: [x0, noise])
        let dx0 = try grads[0].toArray(), dnoise = try grads[1].toArray(), inner = dx0.count / 4
        for i in stride(from: 0, to: dx0.count, by: 7) {
            let a = schedule.alphaBars[Int(steps[i / inner])]
            XCTAssertEqual(Double(dx0[i]), a.squareRoot(), accuracy: 1e-6)
            XCTAssertEqual(Double(dnoise[i]), (1 - a).squareRoot(), accuracy: 1e-6)
        }
    }

    func testTimestepsOutOfRangeAreErrors() {
        let x = Tensor.zeros([2, 1, 2, 2])
        for bad: Float in [1000, -1, 2.5] {
            let t = Tensor([3, bad], shape: [2])
            XCTAssertThrowsError(try schedule.qSample(x0: x, noise: x, t: t).eval()) { error in
                guard case let EngineError.invalidValue(op, message) = error else { return XCTFail("\(error)") }
                XCTAssertEqual(op, "diffusion.q_sample")
                XCTAssert(message.contains("sample 1") && message.contains("0..<1000"), message)
            }
            XCTAssertThrowsError(try schedule.p2Weight(t: t, gamma: 1).eval())
        }
        // Timesteps computed in the graph are checked too.
        XCTAssertThrowsError(try schedule.qSample(x0: x, noise: x, t: Tensor([999, 999], shape: [2]) + 1).eval())
        XCTAssertThrowsError(try schedule.qSample(x0: x, noise: x, t: Tensor([1, 2, 3], shape: [3])).eval()) { error in
            XCTAssert("\(error)".contains("one entry per sample"), "\(error)")
        }
    }

    /// The fused embedding against SPEC §0.2 in float64 (the layer in HistoNN, which wraps it, has PyTorch fixtures).
    func testTimestepEmbeddingFollowsTheSpec() throws {
        let steps: [Double] = [0, 1, 250, 999]
        for (dimension, convention) in [(8, TimestepEmbedding.Convention.guidedDiffusion), (9, .guidedDiffusion), (64, .lucidrains)] {
            let emb = Tensor(steps.map { Float($0) }, shape: [4]).timestepEmbedding(dimension: dimension, convention: convention)
            XCTAssertEqual(emb.shape, [4, dimension])
            let values = try emb.toArray(), half = dimension / 2
            for (n, t) in steps.enumerated() {
                for j in 0..<dimension {
                    let i = j % half, first = j < half
                    let f = Foundation.exp(-Foundation.log(10000.0) * Double(i) / Double(convention == .lucidrains ? half - 1 : half))
                    let sinFirst = convention == .lucidrains
                    let expected = j >= 2 * half ? 0 : (first == sinFirst ? Foundation.sin(t * f) : Foundation.cos(t * f))
                    // Float32 frequencies move t·f by up to ~1e-4 rad at t = 999.
                    XCTAssertEqual(Double(values[n * dimension + j]), expected, accuracy: 2e-4, "\(convention) d \(dimension) [\(n), \(j)]")
                }
            }
        }
        XCTAssertThrowsError(try Tensor.zeros([3]).timestepEmbedding(dimension: 7, convention: .lucidrains).eval())
        XCTAssertThrowsError(try Tensor.zeros([3, 1]).timestepEmbedding(dimension: 8, convention: .guidedDiffusion).eval())
    }

    func testSimpleLossReducesPerSampleThenOverTheBatch() throws {
        let predicted = Tensor([1, 2, 3, 4, 0, 0, 0, 0], shape: [2, 1, 2, 2]), target = Tensor.zeros([2, 1, 2, 2])
        let weights = Tensor([0.5, 2], shape: [2])
        // Per-sample means of squares: 7.5 and 0.
        XCTAssertEqual(try DiffusionLoss.simple(predicted: predicted, target: target).item(), 3.75)
        XCTAssertEqual(try DiffusionLoss.simple(predicted: predicted, target: target, batchReduction: .sum).item(), 7.5)
        XCTAssertEqual(try DiffusionLoss.simple(predicted: predicted, target: target, weights: weights, batchReduction: .sum).item(), 3.75)
        XCTAssertEqual(try DiffusionLoss.simple(predicted: predicted, target: target, weights: weights).item(), 1.875)
        XCTAssertThrowsError(try DiffusionLoss.simple(predicted: predicted, target: Tensor.zeros([2, 4])).eval())
        XCTAssertThrowsError(try DiffusionLoss.simple(predicted: predicted, target: target, weights: Tensor.ones([3])).eval())
    }

    /// GenSelfDiff's pre-training objective end to end: Σ_b λ_{t_b}·mean(ε − ε̂)², with gradients into the prediction.
    func testP2WeightedLossGradient() throws {
        let quadratic = NoiseSchedule(.quadratic)
        let (_, noise, t) = draws()
        let predicted = RandomGenerator(seed: 7).normal(shape)
        let weights = quadratic.p2Weight(t: t, k: 1, gamma: 1)
        let loss = DiffusionLoss.simple(predicted: predicted, target: noise, weights: weights, batchReduction: .sum)
        let grad = try Autodiff.gradients(of: loss, wrt: [predicted])[0].toArray()
        let p = try predicted.toArray(), e = try noise.toArray(), inner = p.count / 4
        var expectedLoss = 0.0
        for i in p.indices {
            let w = quadratic.p2Weights(gamma: 1)[Int(steps[i / inner])], d = Double(p[i] - e[i])
            expectedLoss += w * d * d / Double(inner)
            XCTAssertEqual(Double(grad[i]), 2 * w * d / Double(inner), accuracy: 1e-6)
        }
        XCTAssertEqual(Double(try loss.item()), expectedLoss, accuracy: 1e-5 * expectedLoss)
    }
}

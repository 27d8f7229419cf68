import Foundation
import XCTest
import HistoCore
import HistoNN

final class OptimizerTests: XCTestCase {
    /// Builds the optimizer a fixture case describes over parameters named `w` and `b`.
    private func makeOptimizer(_ spec: [String: Any], _ params: [String: Parameter]) -> any Optimizer {
        let groups = (spec["groups"] as! [[String: Any]]).map { g in
            ParameterGroup((g["params"] as! [String]).map { params[$0]! },
                           weightDecay: Float((g["weight_decay"] as! NSNumber).doubleValue),
                           learningRateScale: Float((g["lr_scale"] as! NSNumber).doubleValue))
        }
        func number(_ key: String) -> Float { Float((spec[key] as! NSNumber).doubleValue) }
        let lr = number("lr")
        switch spec["type"] as! String {
        case "SGD":
            return SGD(groups, learningRate: lr, momentum: number("momentum"), dampening: number("dampening"),
                       nesterov: spec["nesterov"] as! Bool)
        case "Adam":
            return Adam(groups, learningRate: lr, beta1: number("beta1"), beta2: number("beta2"), epsilon: number("eps"))
        case "AdamW":
            return AdamW(groups, learningRate: lr, beta1: number("beta1"), beta2: number("beta2"), epsilon: number("eps"))
        default:
            return RAdam(groups, learningRate: lr, beta1: number("beta1"), beta2: number("beta2"), epsilon: number("eps"),
                         decoupledWeightDecay: spec["decoupled"] as! Bool)
        }
    }

    private func fixtureParameters(_ spec: [String: Any]) -> [String: Parameter] {
        let initial = spec["initial"] as! [String: [String: Any]]
        return initial.mapValues { Parameter(floats($0["values"]), shape: ints($0["shape"])) }
    }

    func testOptimizersFollowPyTorchTrajectories() throws {
        let cases = Fixtures.section("optimizers")
        XCTAssertEqual(cases.count, 8)
        for (name, raw) in cases.sorted(by: { $0.key < $1.key }) {
            let spec = raw as! [String: Any]
            let params = fixtureParameters(spec)
            let optimizer = makeOptimizer(spec, params)
            for (i, step) in (spec["steps"] as! [[String: Any]]).enumerated() {
                var grads = Gradients()
                for (p, values) in step["grads"] as! [String: Any] { try grads.set(floats(values), for: params[p]!) }
                try optimizer.step(grads)
                for (p, values) in step["after"] as! [String: Any] {
                    assertClose(try params[p]!.values(), floats(values), atol: 1e-6, rtol: 2e-6, "\(name) step \(i + 1) \(p)")
                }
            }
            XCTAssertEqual(optimizer.stepCount, 10)
        }
    }

    func testEngineGradientsMatchPyTorchOnTheFixtureProblem() throws {
        let problem = Fixtures.section("problem")
        let spec = Fixtures.section("optimizers")["adam"] as! [String: Any]
        let params = fixtureParameters(spec)
        let x = Tensor(floats(problem["x"]), shape: [6, 4]), y = Tensor(floats(problem["y"]), shape: [6, 3])
        let loss = (x.linear(weight: params["w"]!.value, bias: params["b"]!.value) - y).square().mean()
        let (_, grads) = try Gradients.of(loss, wrt: [params["w"]!, params["b"]!])
        let expected = (spec["steps"] as! [[String: Any]])[0]["grads"] as! [String: Any]
        for p in ["w", "b"] { assertClose(grads[params[p]!]!, floats(expected[p]), atol: 1e-6, rtol: 1e-5, p) }
    }

    func testFrozenOrGradientlessParametersAreLeftAlone() throws {
        let a = Parameter([1, 2], shape: [2]), b = Parameter([3], shape: [1]), c = Parameter([4], shape: [1])
        let adam = Adam([ParameterGroup([a, b, c])], learningRate: 0.1)
        b.requiresGrad = false
        var grads = Gradients()
        try grads.set([1, 1], for: a)
        try grads.set([1], for: b)
        try adam.step(grads)
        XCTAssertNotEqual(try a.values(), [1, 2])
        XCTAssertEqual(try b.values(), [3])
        XCTAssertEqual(try c.values(), [4])
        XCTAssertEqual(adam.state(of: a)?.step, 1)
        XCTAssertNil(adam.state(of: b))
        XCTAssertNil(adam.state(of: c))
    }

    func testConfigurationErrorsAreReportedByStep() {
        let p = Parameter([1], shape: [1])
        var grads = Gradients()
        try! grads.set([1], for: p)
        XCTAssertThrowsError(try Adam([ParameterGroup([p]), ParameterGroup([p])], beta1: 1.5).step(grads)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("beta1 1.5 is outside [0, 1)") && text.contains("more than one place"), text)
        }
        XCTAssertThrowsError(try SGD([ParameterGroup([p])], learningRate: 0.1, nesterov: true).step(grads))
        XCTAssertThrowsError(try Gradients(parameters: [p], tensors: [Tensor.zeros([2])])) { error in
            XCTAssertTrue("\(error)".contains("gradient for"), "\(error)")
        }
    }

    func testWeightDecaySplitFollowsTimm() {
        let model = Sequential(Linear(3, 2, generator: RandomGenerator(seed: 1)))
        let groups = ParameterGroup.weightDecaySplit(model.trainableParameters(), weightDecay: 1e-5)
        XCTAssertEqual(groups.map { $0.parameters.map(\.name) }, [["0.weight"], ["0.bias"]])
        XCTAssertEqual(groups.map(\.weightDecay), [1e-5, 0])
    }

    func testLookaheadAgainstHandComputation() throws {
        // SGD lr 0.1 with a constant gradient (1, −1): each fast step moves (−0.1, +0.1). k = 2, α = 0.5.
        let expected: [(Lookahead.SlowStart, [[Float]])] = [
            (.initialWeights, [[0.9, 2.1], [0.9, 2.1], [0.8, 2.2], [0.8, 2.2]]),
            (.firstSync, [[0.9, 2.1], [0.8, 2.2], [0.7, 2.3], [0.7, 2.3]]),
        ]
        for (start, trajectory) in expected {
            let p = Parameter([1, 2], shape: [2])
            let lookahead = Lookahead(SGD([ParameterGroup([p])], learningRate: 0.1), k: 2, alpha: 0.5, slowStart: start)
            var grads = Gradients()
            try grads.set([1, -1], for: p)
            for (i, values) in trajectory.enumerated() {
                try lookahead.step(grads)
                assertClose(try p.values(), values, atol: 1e-6, rtol: 0, "\(start) step \(i + 1)")
            }
            assertClose(lookahead.slowWeights(of: p)!, trajectory[3], atol: 1e-6, rtol: 0, "\(start) slow")
            XCTAssertEqual(lookahead.stepCount, 4)
        }
        lookaheadLearningRateForwards()
    }

    private func lookaheadLearningRateForwards() {
        let inner = RAdam([ParameterGroup([Parameter([0], shape: [1])])], learningRate: 1e-3)
        let lookahead = Lookahead(inner)
        lookahead.learningRate = 5e-4
        XCTAssertEqual(inner.learningRate, 5e-4)
    }

    func testSchedulesMatchPyTorch() {
        let torch = Fixtures.section("schedules")
        let schedules: [(String, any LearningRateSchedule)] = [
            ("step", StepSchedule(base: 0.1, stepSize: 3, gamma: 0.5)),
            ("poly", PolySchedule(base: 0.1, totalSteps: 10, power: 0.9)),
            ("cosine", CosineSchedule(base: 0.1, totalSteps: 10, minimum: 0.001)),
            ("linear_warmup", LinearWarmup(steps: 4, startFactor: 0.25, then: ConstantSchedule(0.1))),
        ]
        for (name, schedule) in schedules {
            let expected = floats(torch[name])
            assertClose((0..<expected.count).map { schedule.learningRate(at: $0) }, expected, atol: 1e-9, rtol: 1e-6, name)
        }
    }

    func testWarmupComposesWithCosineAndClamps() {
        let s = LinearWarmup(steps: 2, then: CosineSchedule(base: 1, totalSteps: 4, minimum: 0.1))
        let got = [0, 1, 2, 3, 4, 6, 100].map { s.learningRate(at: $0) }
        assertClose(got, [0, 0.5, 1, 0.1 + 0.9 * 0.853553390, 0.55, 0.1, 0.1], atol: 1e-6, rtol: 0, "warmup+cosine")
        XCTAssertEqual(ConstantSchedule(3).learningRate(at: 99), 3)
        XCTAssertEqual(PolySchedule(base: 1, totalSteps: 4, power: 1, minimum: 0.2).learningRate(at: 2), 0.6, accuracy: 1e-7)
    }

    /// SPEC §0.5's ramps against numpy (`np.exp(-5 * (1 - np.clip(c, 0, L) / L) ** 2)`, `min(c / L, 1)`, and the
    /// sigmoid ramp shifted to start at `start`).
    func testRampsMatchTheirFormulas() {
        let sigmoid = Ramp.sigmoid(length: 200)
        assertClose([0, 50, 100, 200, 300].map { Float(sigmoid.value(at: $0)) },
                    [0.006737947, 0.060054668, 0.286504797, 1, 1], atol: 1e-7, rtol: 0, "sigmoid")
        assertClose([-1, 0, 10, 40, 50].map { Float(Ramp.linear(length: 40).value(at: $0)) }, [0, 0, 0.25, 1, 1],
                    atol: 0, rtol: 0, "linear")
        assertClose([0, 4.9, 5, 10, 15, 30].map { Float(Ramp.gaussian(start: 5, length: 10).value(at: $0)) },
                    [0, 0, 0.006737947, 0.286504797, 1, 1], atol: 1e-7, rtol: 0, "gaussian")
        XCTAssertEqual(Ramp.sigmoid(length: 0).value(at: 0), 1, "a zero-length ramp is already up")
        XCTAssertEqual(Ramp.constant.value(at: -5), 1)
    }

    func testEMAWarmupAndUpdate() throws {
        let model = Sequential(Linear(1, 1, bias: false, generator: RandomGenerator(seed: 1)))
        let weight = (model.layers[0] as! Linear).weight
        weight.assign([2])
        let ema = ExponentialMovingAverage(tracking: model, decay: 0.99, warmup: .meanTeacher)
        XCTAssertEqual(ema.shadows.map(\.name), ["0.weight"])
        XCTAssertEqual(ema.effectiveDecay, 0)
        weight.assign([4])
        try ema.update(from: model) // α = 0: copy
        XCTAssertEqual(try ema.shadows[0].parameter.values(), [4])
        XCTAssertEqual(ema.effectiveDecay, 0.5)
        weight.assign([8])
        try ema.update(from: model) // α = 0.5
        XCTAssertEqual(try ema.shadows[0].parameter.values(), [6])
        for _ in 2..<9 { try ema.update(from: model) }
        XCTAssertEqual(ema.effectiveDecay, 0.9, accuracy: 1e-7)
        for _ in 9..<500 { try ema.update(from: model) }
        XCTAssertEqual(ema.effectiveDecay, 0.99)

        let lit = ExponentialMovingAverage(tracking: model, decay: 0.9999, warmup: .litEma)
        XCTAssertEqual(lit.effectiveDecay, 2.0 / 11.0, accuracy: 1e-7)
        XCTAssertEqual(ExponentialMovingAverage(tracking: model, decay: 0.9).effectiveDecay, 0.9)

        // Mean teacher: the teacher's own parameters are the shadows; copy(to:) exports shadows.
        let teacher = Sequential(Linear(1, 1, bias: false, generator: RandomGenerator(seed: 2)))
        let teacherWeight = (teacher.layers[0] as! Linear).weight
        let before = try teacherWeight.values()[0]
        let meanTeacher = ExponentialMovingAverage(teacher: teacher, decay: 0.5)
        try meanTeacher.update(from: model)
        XCTAssertTrue(meanTeacher.shadows[0].parameter === teacherWeight)
        XCTAssertFalse(teacherWeight.requiresGrad)
        XCTAssertEqual(try teacherWeight.values()[0], before - 0.5 * (before - 8))
        let evaluated = Sequential(Linear(1, 1, bias: false, generator: RandomGenerator(seed: 3)))
        try ema.copy(to: evaluated)
        XCTAssertEqual(try (evaluated.layers[0] as! Linear).weight.values(), try ema.shadows[0].parameter.values())
        XCTAssertThrowsError(try ema.update(from: Linear(1, 1, generator: RandomGenerator(seed: 1)))) { error in
            XCTAssertTrue("\(error)".contains("1 missing parameters: 0.weight"), "\(error)")
        }
    }

    func testGradientClippingAndAccumulation() throws {
        let a = Parameter([0, 0], shape: [2]), b = Parameter([0], shape: [1])
        var grads = Gradients()
        try grads.set([3, 0], for: a)
        try grads.set([4], for: b)
        XCTAssertEqual(grads.globalNorm, 5)
        var clipped = grads
        XCTAssertEqual(clipped.clipByGlobalNorm(1), 5)
        assertClose(clipped[a]! + clipped[b]!, [0.6, 0, 0.8], atol: 1e-6, rtol: 0, "clipped")
        var untouched = grads
        untouched.clipByGlobalNorm(10)
        XCTAssertEqual(untouched[a]! + untouched[b]!, [3, 0, 4])
        var byValue = grads
        byValue.clipByValue(3.5)
        XCTAssertEqual(byValue[a]! + byValue[b]!, [3, 0, 3.5])

        var mean = GradientAccumulator(microBatches: 2)
        XCTAssertNil(try mean.add(grads))
        XCTAssertEqual(mean.pending, 1)
        var second = Gradients()
        try second.set([1, 2], for: a)
        let combined = try mean.add(second)!
        XCTAssertEqual(combined[a]!, [2, 1])
        XCTAssertEqual(combined[b]!, [2])
        XCTAssertEqual(mean.pending, 0)
        var sum = GradientAccumulator(microBatches: 2, reduction: .sum)
        _ = try sum.add(grads)
        XCTAssertEqual(try sum.add(grads)![b]!, [8])
    }
}

import XCTest
import HistoCore
@testable import HistoDiffusion

/// Noise schedules (SPEC §0.1), timestep spacing and respacing.
final class ScheduleTests: XCTestCase {
    func testSpecVectors() {
        let vectors: [(NoiseSchedule.Kind, Int, Double)] = [
            (.linear, 50, 0.969951), (.quadratic, 50, 0.990844), (.ldmLinear, 50, 0.916687), (.sigmoid, 50, 0.982431),
            (.ldmLinear, 150, 0.721031), (.ldmLinear, 250, 0.508424),
        ]
        for (kind, t, expected) in vectors {
            XCTAssertEqual(NoiseSchedule(kind).alphaBars[t], expected, accuracy: 5e-7, "\(kind) ᾱ[\(t)]")
        }
        XCTAssertEqual(NoiseSchedule(.ldmLinear).alphaBars[999], 1.42e-4, accuracy: 5e-7)
    }

    func testEverySchedule() {
        for kind in NoiseSchedule.Kind.allCases {
            let s = NoiseSchedule(kind)
            XCTAssertEqual(s.steps, 1000)
            XCTAssert(s.betas.allSatisfy { $0 > 0 && $0 <= 0.999 }, "\(kind): β outside (0, 0.999]")
            XCTAssert(zip(s.alphaBars, s.alphaBars.dropFirst()).allSatisfy { $0 > $1 }, "\(kind): ᾱ not decreasing")
            XCTAssertEqual(s.alphaBars[0], 1 - s.betas[0], accuracy: 1e-15)
        }
    }

    /// guided-diffusion's `betas_for_alpha_bar` with the cosine ᾱ, evaluated in Python (float64).
    func testCosineFollowsGuidedDiffusion() {
        let s = NoiseSchedule(.cosine)
        XCTAssertEqual(s.alphaBars[50], 0.9917246846116903, accuracy: 1e-12)
        XCTAssertEqual(s.alphaBars[250], 0.8458879864968832, accuracy: 1e-12)
        XCTAssertEqual(s.betas[999], 0.999, "the last β is clipped")
    }

    /// lucidrains' sigmoid reaches ᾱ = 0 at s = 1, so its last β is clipped to 0.999.
    func testSigmoidClipsTheLastBeta() {
        let s = NoiseSchedule(.sigmoid)
        XCTAssertEqual(s.betas[999], 0.999)
        XCTAssertEqual(s.alphaBars[999], 3.002869867999664e-07, accuracy: 1e-15)
    }

    func testLinearScalesWithTheStepCount() {
        let s = NoiseSchedule(.linear, steps: 100)
        XCTAssertEqual(s.betas.first!, 0.001, accuracy: 1e-15)
        XCTAssertEqual(s.betas.last!, 0.2, accuracy: 1e-15)
        XCTAssertEqual(NoiseSchedule(.quadratic, steps: 10).betas.last!, 0.02, accuracy: 1e-15)
    }

    func testTableRowsAreRoundedOnce() throws {
        let s = NoiseSchedule(.linear, steps: 20)
        XCTAssertEqual(s.table.shape, [3, 20])
        let values = try s.table.toArray()
        XCTAssertEqual(Array(values[0..<20]), s.alphaBars.map { Float($0) })
        XCTAssertEqual(Array(values[20..<40]), s.alphaBars.map { Float(1 - $0) })
        XCTAssertEqual(Array(values[40..<60]), s.betas.map { Float($0) })
    }

    /// ᾱ = 0.5, 0.2: SNR 1 and 0.25.
    func testSNRAndP2Weights() throws {
        let s = NoiseSchedule(betas: [0.5, 0.6])
        XCTAssertEqual(s.alphaBars[1], 0.2, accuracy: 1e-15)
        XCTAssertEqual(s.snr[0], 1, accuracy: 1e-15)
        XCTAssertEqual(s.snr[1], 0.25, accuracy: 1e-15)
        let p2 = s.p2Weights(k: 1, gamma: 1), p2Half = s.p2Weights(k: 1, gamma: 0.5)
        XCTAssertEqual(p2[0], 0.5, accuracy: 1e-15)
        XCTAssertEqual(p2[1], 0.8, accuracy: 1e-15)
        XCTAssertEqual(p2Half[0], 1 / 2.0.squareRoot(), accuracy: 1e-15)
        XCTAssertEqual(p2Half[1], 1 / 1.25.squareRoot(), accuracy: 1e-15)
        let t = Tensor([1, 0, 1], shape: [3])
        let device = try s.p2Weight(t: t, gamma: 1).toArray(), deviceHalf = try s.p2Weight(t: t, gamma: 0.5).toArray()
        for (i, row) in [1, 0, 1].enumerated() {
            XCTAssertEqual(Double(device[i]), p2[row], accuracy: 1e-6)
            XCTAssertEqual(Double(deviceHalf[i]), p2Half[row], accuracy: 1e-6)
        }
        // GenSelfDiff's weights (k = 1, γ = 1, quadratic) at a few steps, against the host values.
        let quadratic = NoiseSchedule(.quadratic)
        let steps: [Float] = [0, 10, 500, 999]
        let weights = try quadratic.p2Weight(t: Tensor(steps, shape: [4]), gamma: 1).toArray()
        for (w, t) in zip(weights, steps) { XCTAssertEqual(Double(w), quadratic.p2Weights(gamma: 1)[Int(t)], accuracy: 1e-6 * Double(w) + 1e-9) }
    }

    /// guided-diffusion `space_timesteps`.
    func testSpacing() throws {
        XCTAssertEqual(try TimestepSpacing.ddim.timesteps(50, of: 1000), Array(stride(from: 0, to: 1000, by: 20)))
        XCTAssertEqual(try TimestepSpacing.ddim.timesteps(30, of: 1000), Array(stride(from: 0, to: 1000, by: 34)))
        XCTAssertEqual(try TimestepSpacing.even.timesteps(10, of: 1000), (0..<10).map { $0 * 111 })
        // Fractional strides 999/3 and 9/4: 0, 2.25, 4.5, 6.75, 9 round to 0, 2, 4, 7, 9 (half to even, as Python's round).
        XCTAssertEqual(try TimestepSpacing.even.timesteps(4, of: 1000), [0, 333, 666, 999])
        XCTAssertEqual(try TimestepSpacing.even.timesteps(5, of: 10), [0, 2, 4, 7, 9])
        XCTAssertEqual(try TimestepSpacing.ddim.timesteps(1000, of: 1000), Array(0..<1000))
        XCTAssertThrowsError(try TimestepSpacing.ddim.timesteps(300, of: 1000)) { error in
            XCTAssert("\(error)".contains("no integer stride"), "\(error)")
        }
        XCTAssertThrowsError(try TimestepSpacing.even.timesteps(0, of: 1000))
        XCTAssertThrowsError(try TimestepSpacing.even.timesteps(1001, of: 1000))
    }

    func testRespacedKeepsAlphaBars() throws {
        let s = NoiseSchedule(.linear)
        let kept = try TimestepSpacing.ddim.timesteps(50, of: 1000)
        let spaced = try s.respaced(keeping: kept)
        XCTAssertEqual(spaced.steps, 50)
        for (i, t) in kept.enumerated() { XCTAssertEqual(spaced.alphaBars[i], s.alphaBars[t], accuracy: 1e-14) }
        XCTAssertEqual(spaced.betas[0], s.betas[0], accuracy: 1e-15)
        XCTAssertThrowsError(try s.respaced(keeping: [5, 3]))
        XCTAssertThrowsError(try s.respaced(keeping: [0, 1000]))
        XCTAssertThrowsError(try s.respaced(keeping: []))
    }
}

import XCTest
import HistoCore
import HistoNN
import HistoOpenCL
@testable import HistoDiffusion

/// The optimal denoiser for a dataset that is the single image x*: x̂₀ = x*, so ε̂ = (x_t − √ᾱ_t·x*)/√(1 − ᾱ_t) and
/// v̂ = √ᾱ_t·ε̂ − √(1 − ᾱ_t)·x*, whichever the sampler is told the model predicts.
final class PerfectPredictor: Module, NoisePredictor {
    let schedule: NoiseSchedule
    let image: Tensor
    let target: DiffusionTarget
    var imageChannels: Int { image.shape[1] }

    init(schedule: NoiseSchedule, image: Tensor, target: DiffusionTarget) {
        self.schedule = schedule; self.image = image; self.target = target
        super.init()
    }

    func callAsFunction(_ x: Tensor, timesteps: Tensor, context: Tensor?) -> Tensor {
        let x0 = image.expand(x.shape)
        let epsilon = schedule.epsilon(xt: x, output: x0, t: timesteps, target: .x0)
        switch target {
        case .epsilon: return epsilon
        case .x0: return x0
        case .v: return schedule.velocityTarget(x0: x0, noise: epsilon, t: timesteps)
        }
    }
}

final class SamplerTests: XCTestCase {
    let schedule = NoiseSchedule(.linear)
    let shape = [2, 3, 4, 4]
    /// x* in [−0.9, 0.9], so clipping x̂₀ to [−1, 1] never changes it.
    lazy var image = Tensor((0..<48).map { Float($0 % 19) / 10 - 0.9 }, shape: [1, 3, 4, 4])

    func model(_ target: DiffusionTarget) -> PerfectPredictor { PerfectPredictor(schedule: schedule, image: image, target: target) }

    func assertRecovers(_ sample: Tensor, accuracy: Float, _ what: String, line: UInt = #line) throws {
        XCTAssertEqual(sample.shape, shape, what, line: line)
        let x = try sample.toArray(), star = try image.toArray()
        let worst = x.indices.map { Swift.abs(x[$0] - star[$0 % star.count]) }.max()!
        XCTAssertLessThanOrEqual(worst, accuracy, "\(what): worst error \(worst)", line: line)
    }

    func testDDIMRecoversTheImageForEveryTarget() throws {
        for target in DiffusionTarget.allCases {
            for eta: Float in [0, 1] {
                let sampler = try DDIMSampler(schedule: schedule, steps: 20, eta: eta)
                XCTAssertEqual(sampler.timesteps, Array(stride(from: 0, to: 1000, by: 50)))
                let x0 = try sampler.sample(model(target), shape: shape, target: target, generator: RandomGenerator(seed: 3))
                try assertRecovers(x0, accuracy: 1e-4, "DDIM \(target) η = \(eta)")
            }
        }
    }

    /// Deterministic DDIM keeps the noise direction of x_T: after each step x = √ᾱ·x* + √(1 − ᾱ)·ε with one ε.
    func testDeterministicDDIMStaysOnTheNoisePath() throws {
        let sampler = try DDIMSampler(schedule: schedule, steps: 10, spacing: .even)
        let kept = sampler.timesteps, star = try image.toArray()
        var epsilon: [Double] = [], reported: [Int] = []
        _ = try sampler.sample(model(.epsilon), shape: shape, generator: RandomGenerator(seed: 11)) { step in
            reported.append(step.timestep)
            XCTAssertEqual(step.count, 10)
            guard step.index < step.count - 1 else { return }
            let a = self.schedule.alphaBars[kept[kept.count - 2 - step.index]]
            let x = try! step.sample.toArray().map(Double.init)
            let star = x.indices.map { Double(star[$0 % star.count]) }
            if epsilon.isEmpty { epsilon = x.indices.map { (x[$0] - a.squareRoot() * star[$0]) / (1 - a).squareRoot() } }
            let worst = x.indices.map { Swift.abs(x[$0] - a.squareRoot() * star[$0] - (1 - a).squareRoot() * epsilon[$0]) }.max()!
            XCTAssertLessThan(worst, 1e-4, "step \(step.index)")
        }
        XCTAssertEqual(reported, kept.reversed())
        XCTAssertEqual(kept.first, 0)
        XCTAssertEqual(kept.last, 999)
    }

    func testDDPMRecoversTheImage() throws {
        for (steps, variance) in [(100, DDPMVariance.posterior), (25, .beta)] {
            let sampler = try DDPMSampler(schedule: schedule, steps: steps, variance: variance)
            XCTAssertEqual(sampler.timesteps.count, steps)
            let x0 = try sampler.sample(model(.epsilon), shape: shape, generator: RandomGenerator(seed: 5))
            try assertRecovers(x0, accuracy: 1e-4, "DDPM \(steps) steps, \(variance)")
        }
        let full = try DDPMSampler(schedule: schedule)
        XCTAssertEqual(full.timesteps, Array(0..<1000))
        try assertRecovers(try full.sample(model(.v), shape: shape, target: .v, generator: RandomGenerator(seed: 6)),
                           accuracy: 1e-4, "DDPM all steps, v")
    }

    /// Ancestral steps from q(x_{t−1} | x_t, x*) keep the forward marginals: at every kept step, (x − √ᾱ·x*)/√(1 − ᾱ)
    /// over 64 samples × 48 values has mean 0 and variance 1 (within 4 standard errors).
    func testDDPMKeepsTheForwardMarginals() throws {
        let sampler = try DDPMSampler(schedule: schedule, steps: 50)
        let kept = sampler.timesteps, star = try image.toArray(), batch = [64, 3, 4, 4]
        var checked = 0
        _ = try sampler.sample(model(.epsilon), shape: batch, generator: RandomGenerator(seed: 21)) { step in
            guard step.index < step.count - 1 else { return }
            let a = self.schedule.alphaBars[kept[kept.count - 2 - step.index]]
            let x = try! step.sample.toArray()
            let z = x.indices.map { (Double(x[$0]) - a.squareRoot() * Double(star[$0 % star.count])) / (1 - a).squareRoot() }
            let mean = z.reduce(0, +) / Double(z.count), variance = z.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(z.count)
            XCTAssertEqual(mean, 0, accuracy: 4 / Double(z.count).squareRoot(), "step \(step.index)")
            XCTAssertEqual(variance, 1, accuracy: 4 * (2 / Double(z.count)).squareRoot(), "step \(step.index)")
            checked += 1
        }
        XCTAssertEqual(checked, 49)
    }

    /// Same seed, same samples; the noise comes from the generator, so its offset moves on.
    func testSamplingIsSeeded() throws {
        let sampler = try DDIMSampler(schedule: schedule, steps: 5, eta: 1)
        func midway(seed: UInt64) throws -> [Float] {
            var middle: [Float] = []
            let generator = RandomGenerator(seed: seed)
            _ = try sampler.sample(model(.epsilon), shape: shape, generator: generator) { step in
                if step.index == 2 { middle = try! step.sample.toArray() }
            }
            XCTAssertEqual(generator.offset, UInt64(5 * 96 + 96), "x_T and one noise draw per step")
            return middle
        }
        XCTAssertEqual(try midway(seed: 1), try midway(seed: 1))
        XCTAssertNotEqual(try midway(seed: 1), try midway(seed: 2))
    }

    func testBadSamplerSettingsAreErrors() throws {
        XCTAssertThrowsError(try DDIMSampler(schedule: schedule, steps: 300))
        XCTAssertThrowsError(try DDIMSampler(schedule: schedule, steps: 10, eta: -1))
        XCTAssertThrowsError(try DDPMSampler(schedule: schedule, steps: 0))
        let sampler = try DDIMSampler(schedule: schedule, steps: 10)
        XCTAssertThrowsError(try sampler.sample(model(.epsilon), shape: [2, 1, 4, 4], generator: RandomGenerator(seed: 1))) { error in
            XCTAssert("\(error)".contains("[N, 3, …]"), "\(error)")
        }
    }

    /// The fused steps on OpenCL give the CPU's trajectory (x₀ alone would say little: the predictor pins it to x*).
    func testSamplersOnOpenCLMatchTheCPU() throws {
        guard let device = try OpenCLBackend.make() else { throw XCTSkip("no OpenCL device on this machine") }
        let ddim = try DDIMSampler(schedule: schedule, steps: 10, eta: 0.5, clipDenoised: false)
        let ddpm = try DDPMSampler(schedule: schedule, steps: 10)
        typealias Run = (any Backend, @escaping (SamplingStep) -> Void) throws -> Tensor
        let runs: [(String, Run)] = [
            ("DDIM", { try ddim.sample(self.model(.x0), shape: self.shape, target: .x0, generator: RandomGenerator(seed: 9), on: $0, progress: $1) }),
            ("DDPM", { try ddpm.sample(self.model(.epsilon), shape: self.shape, generator: RandomGenerator(seed: 9), on: $0, progress: $1) }),
        ]
        for (name, run) in runs {
            func trajectory(_ backend: any Backend) throws -> [[Float]] {
                var samples: [[Float]] = []
                _ = try run(backend) { samples.append(try! $0.sample.toArray()) }
                return samples
            }
            let cpu = try trajectory(CPUBackend.shared), opencl = try trajectory(device)
            XCTAssertEqual(cpu.count, 10)
            for (step, (c, d)) in zip(cpu, opencl).enumerated() {
                XCTAssertLessThan(zip(c, d).map { Swift.abs($0 - $1) }.max()!, 1e-4, "\(name) step \(step)")
            }
        }
    }
}

import Foundation
import XCTest
import HistoCore
import HistoNN
@testable import HistoDiffusion

/// The pretraining loss and its gradient through a whole denoiser, and the pretraining pipeline around them.
final class PretrainingGradientTests: XCTestCase {
    /// GenSelfDiff's loss on a small Attention U-Net and its gradient for every parameter equal PyTorch's float64
    /// results (tools/fixtures_denoiser_gradient.py).
    func testDenoiserLossGradientMatchesPyTorch() throws {
        let path = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
            .appendingPathComponent("denoiser_gradient.safetensors").path
        let stored = try SafeTensors.read(path)
        let model = try AttentionUNet(.init(dim: 4, dimMults: [1, 2, 4], resnetGroups: 4, attentionHeads: 2, attentionHeadDim: 4),
                                      generator: RandomGenerator(seed: 0))
        try model.load(stored.tensors.filter { !$0.key.hasPrefix("test.") }, source: path)
        func input(_ name: String) -> Tensor { stored.tensors["test.\(name)"]!.tensor }
        let loss = DiffusionLoss.simple(predicted: model(input("xt"), timesteps: input("t"), context: nil), target: input("noise"),
                                        weights: input("weights"), batchReduction: .sum)
        let (value, gradients) = try Gradients.of(loss, wrt: model.trainableParameters())
        XCTAssertEqual(value, stored.tensors["test.loss"]!.values[0], accuracy: 1e-4)
        var compared = 0
        for (name, parameter) in model.parameters() {
            let expected = try XCTUnwrap(stored.tensors["test.grad.\(name)"], "no reference gradient for \(name)").values
            let actual = try XCTUnwrap(gradients[parameter], name)
            let scale = max(expected.map(abs).max() ?? 0, 1e-3)
            let worst = zip(actual, expected).map { abs($0 - $1) }.max() ?? 0
            XCTAssertLessThanOrEqual(worst, 1e-3 * scale, "\(name): gradient differs by \(worst) (largest |g| \(scale))")
            compared += 1
        }
        XCTAssertEqual(compared, stored.tensors.keys.filter { $0.hasPrefix("test.grad.") }.count)
    }

    /// A denoiser that knows x₀ predicts its target (ε or v) exactly, so the pretraining loss must vanish: x_t, the
    /// target and the P2 weights of one loss use the same draws of t and ε.
    func testTheLossOfAnOracleDenoiserIsZero() throws {
        final class Oracle: Module, NoisePredictor {
            let x0: Tensor, schedule: NoiseSchedule, target: DiffusionTarget
            init(x0: Tensor, schedule: NoiseSchedule, target: DiffusionTarget) {
                self.x0 = x0; self.schedule = schedule; self.target = target
            }
            var imageChannels: Int { 3 }
            func callAsFunction(_ x: Tensor, timesteps: Tensor, context: Tensor?) -> Tensor {
                let noise = DiffusionOps.convert(.epsilonFromX0, x, x0, table: schedule.table, timesteps: timesteps)
                return schedule.trainingTarget(target, x0: x0, noise: noise, t: timesteps)
            }
        }
        let x0 = try RandomGenerator(seed: 3).uniform([4, 3, 8, 8], -1, 1).materialized()
        for configuration in [DiffusionPretraining.Configuration.genSelfDiff, .init(), .vCosine, .ldm] {
            let pretraining = DiffusionPretraining(configuration)
            let oracle = Oracle(x0: x0, schedule: pretraining.schedule, target: configuration.target)
            let loss = try pretraining.loss(oracle, x0: x0, generator: RandomGenerator(seed: 9)).item()
            XCTAssertLessThan(loss, 1e-6, "\(configuration.schedule) \(configuration.target)")
        }
    }

    /// DTSeg's LDM recipe (SPEC §1 step 1): LDM linear β (ᾱ₅₀ = 0.916687), ε-prediction, batch mean, no
    /// clipping, AdamW with decoupled weight decay, EMA 0.9999 and LDM's scaled learning rate 2e-6 × batch.
    func testTheLDMRecipeIsDTSegs() throws {
        let recipe = DiffusionRecipe.ldm
        let pretraining = DiffusionPretraining(recipe.configuration)
        XCTAssertEqual(pretraining.schedule.alphaBars[50], 0.916687, accuracy: 1e-6)
        XCTAssertEqual(recipe.configuration.target, .epsilon)
        XCTAssertNil(recipe.configuration.p2)
        XCTAssertNil(recipe.configuration.clipNorm)
        XCTAssertEqual(recipe.configuration.batchReduction, .mean)
        XCTAssertEqual(recipe.learningRate(batch: 20), 4e-5, accuracy: 1e-12)
        XCTAssertEqual(recipe.emaDecay, 0.9999)
        let parameter = Parameter(Tensor([1, 2, 3, 4], shape: [2, 2]))
        let optimizer = recipe.optimizer([parameter], learningRate: 0.1)
        XCTAssertTrue(optimizer is AdamW)
        XCTAssertEqual(optimizer.groups[0].weightDecay, 0.01)
        XCTAssertTrue(DiffusionRecipe.ddpm.optimizer([parameter], learningRate: 0.1) is Adam)
    }
}

import XCTest
import HistoCore
@testable import HistoData
import HistoNN
@testable import HistoMethods

/// The loss recipes of the semi-supervised baselines (`--option recipe=ssl4mis|xnet`, SPEC §8).
final class RecipeTests: XCTestCase {
    func context(step: Int, totalSteps: Int, stepsPerEpoch: Int) -> StepContext {
        StepContext(step: step, totalSteps: totalSteps, stepsPerEpoch: stepsPerEpoch, backend: CPUBackend.shared)
    }

    /// xnet: λ = λ_max·min((e + 1)/E, 1), constant within an epoch; E = 10 planned epochs of 10 steps.
    func testXNetWeightIsLinearPerEpoch() {
        let recipe = LossRecipe.xnet(maximum: 5)
        for (step, epoch) in [(0, 0), (9, 0), (10, 1), (55, 5), (99, 9), (130, 13)] {
            let expected = 5 * min(Float(epoch + 1) / 10, 1)
            XCTAssertEqual(recipe.weight(in: context(step: step, totalSteps: 100, stepsPerEpoch: 10)), expected,
                           accuracy: 1e-6, "step \(step)")
        }
        // An iteration-based plan whose last epoch is partial: E counts it (25 steps of 10 = 3 epochs).
        XCTAssertEqual(recipe.weight(in: context(step: 24, totalSteps: 25, stepsPerEpoch: 10)), 5)
        XCTAssertEqual(recipe.weight(in: context(step: 12, totalSteps: 25, stepsPerEpoch: 10)), 5 * 2 / 3,
                       accuracy: 1e-6)
    }

    /// The options give ssl4mis with λ_max 0.1 over the planned run by default, xnet with λ_max 5, `lambda` for both.
    func testOptionsChooseTheRecipe() throws {
        let setup = MethodSetup(plan: TrainingPlan(labelRatio: try Ratio("1/2"), validationRatio: try Ratio("1/4")),
                                classes: 2, totalSteps: 40, stepsPerEpoch: 4)
        func recipe(_ options: [String: String]) throws -> LossRecipe {
            try SemiSupervisedRecipe.lossRecipe(options, method: "mt", setup: setup)
        }
        XCTAssertEqual(try recipe([:]), .ssl4mis(ConsistencyRamp(maximum: 0.1, length: 40)))
        XCTAssertEqual(try recipe(["recipe": "ssl4mis", "ramp": "30000"]),
                       .ssl4mis(ConsistencyRamp(maximum: 0.1, length: 30000)))
        XCTAssertEqual(try recipe(["recipe": "xnet"]), .xnet(maximum: 5))
        XCTAssertEqual(try recipe(["recipe": "xnet", "lambda": "2"]), .xnet(maximum: 2))
        XCTAssertEqual(LossRecipe.xnet(maximum: 5).supervisedLoss, .dice)
        XCTAssertEqual(LossRecipe.ssl4mis(ConsistencyRamp(maximum: 0.1, length: 1)).supervisedLoss, .crossEntropyDice)
        XCTAssertThrowsError(try recipe(["recipe": "xnet", "ramp": "100"])) { error in
            XCTAssertTrue("\(error)".contains("option ramp applies to recipe=ssl4mis"), "\(error)")
        }
    }

    /// An unknown recipe is refused naming the option, by the registry's check (`histodiff train`) and by the
    /// factory itself; `train --help` shows the option and its default.
    func testUnknownRecipeIsRefusedNamingTheOption() throws {
        for name in ["mt", "uamt", "em", "cps", "cct", "urpc"] {
            var request = TrainingRequest(method: name, data: "unused", directory: "unused")
            request.methodOptions = ["recipe": "fixmatch"]
            XCTAssertThrowsError(try MethodTraining.plan(for: request), name) { error in
                XCTAssertTrue("\(error)".contains("option recipe=fixmatch is not one of ssl4mis, xnet"), "\(error)")
            }
            let setup = MethodSetup(plan: try MethodTraining.plan(for: TrainingRequest(method: name, data: "",
                                                                                       directory: "")),
                                    classes: 2, totalSteps: 10, stepsPerEpoch: 5)
            XCTAssertThrowsError(try MethodRegistry.method(named: name).make("cpu", ["recipe": "fixmatch"], setup),
                                 name) { error in
                XCTAssertTrue("\(error)".contains("option recipe=fixmatch"), "\(error)")
            }
        }
        let listing = MethodRegistry.listing.split(separator: "\n").filter { $0.hasPrefix("mt:") }.joined()
        XCTAssertTrue(listing.contains("recipe ssl4mis") && listing.contains("recipe=… (ssl4mis (default"), listing)
    }

    /// One EM step (the `cpu` U-Net from the registry, batch 2 + 2 of 32², step 7 of 20 in epochs of 5) with
    /// recipe=xnet reports as its supervised term the SSL4MIS Dice loss of the labelled logits and λ = 5·2/4; with
    /// ssl4mis, ½(CE + Dice) of the same logits and the sigmoid-ramp λ. The logits come from a network built from
    /// the same seed, so weights and dropout masks match the method's first forward pass.
    func testOneXNetStepSupervisesWithDiceAndTheEpochWeight() throws {
        let generator = RandomGenerator(seed: 5)
        let labelled = try generator.uniform([2, 3, 32, 32], -1, 1).materialized()
        let labels = try generator.integers([2, 32, 32], 0, 2).materialized()
        let unlabelled = try generator.uniform([2, 3, 32, 32], -1, 1).materialized()
        let batch = MethodBatch(labelled: Batch(images: labelled, strongImages: nil, labels: labels, items: []),
                                unlabelled: Batch(images: unlabelled, strongImages: nil, labels: nil, items: []))
        let registration = try MethodRegistry.method(named: "em")
        var plan = TrainingPlan(labelRatio: try Ratio("1/2"), validationRatio: try Ratio("1/4"))
        try registration.plan("cpu", &plan, [:])
        let setup = MethodSetup(plan: plan, classes: 2, totalSteps: 20, stepsPerEpoch: 5)
        let context = context(step: 7, totalSteps: 20, stepsPerEpoch: 5)

        func labelledLogits() throws -> Tensor {
            let model = try SemiSupervisedRecipe.model("cpu", [:], setup: setup, seed: plan.seed)
            model.train(true)
            let joint = try JointBatch(batch)
            return try joint.labelled(model(joint.images)).materialized()
        }
        let logits = try labelledLogits()
        let dice = try Loss.dice(probabilities: logits.softmax(axis: 1), labels: labels, variant: .ssl4mis).item()
        let crossEntropy = try Loss.crossEntropy(logits: logits, labels: labels).item()

        let xnet = try registration.make("cpu", ["recipe": "xnet"], setup).step(batch, context: context)
        XCTAssertEqual(xnet["supervised"] ?? .nan, dice, accuracy: 1e-5)
        XCTAssertEqual(xnet["consistency_weight"], 2.5)
        XCTAssertEqual(xnet["loss"] ?? .nan, dice + 2.5 * (xnet["entropy"] ?? .nan), accuracy: 1e-5)

        let ssl4mis = try registration.make("cpu", [:], setup).step(batch, context: context)
        XCTAssertEqual(ssl4mis["supervised"] ?? .nan, 0.5 * (crossEntropy + dice), accuracy: 1e-5)
        XCTAssertEqual(ssl4mis["consistency_weight"], ConsistencyRamp(maximum: 0.1, length: 20).weight(at: 7))
        XCTAssertEqual(ssl4mis["entropy"] ?? .nan, xnet["entropy"] ?? .nan, accuracy: 1e-6,
                       "the unlabelled term does not depend on the recipe")
        print("xnet \(xnet); ssl4mis \(ssl4mis); dice \(dice), CE \(crossEntropy)")
    }
}

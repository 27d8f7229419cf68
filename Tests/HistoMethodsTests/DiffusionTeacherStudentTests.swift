import Foundation
import XCTest
import HistoCore
import HistoData
import HistoDiffusion
import HistoNN
@testable import HistoMethods

/// Ciampi et al.'s two stages (diffusion-teacher, diffusion-ts): one step of each against the PyTorch float64
/// reference (tools/diffusion_ts_reference.py) on the reference's draws, and the seeded inference.
final class DiffusionTeacherStudentTests: XCTestCase {
    struct Reference {
        static let path = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
            .appendingPathComponent("diffusion_ts_step.safetensors").path
        let tensors: [String: HostTensor]
        let metadata: [String: String]

        init() throws { (tensors, metadata) = try { ($0.tensors, $0.metadata) }(SafeTensors.read(Self.path)) }

        func tensor(_ name: String) -> Tensor { tensors[name]!.tensor }
        func value(_ name: String) -> Float { tensors[name]!.values[0] }
        func setting(_ name: String) -> Int { Int(metadata[name]!)! }

        /// The tensors under `prefix`, the prefix taken off.
        func state(_ prefix: String) -> [String: HostTensor] {
            Dictionary(uniqueKeysWithValues: tensors.filter { $0.key.hasPrefix(prefix) }
                .map { (String($0.key.dropFirst(prefix.count)), $0.value) })
        }

        func configuration(target: Int, condition: Int) -> ConditionalUNet.Configuration {
            ConditionalUNet.Configuration(targetChannels: target, conditionChannels: condition,
                                          dim: setting("dim"), dimMults: [1, 2], dropouts: [0, 0, 0])
        }

        /// The reference's teacher and student with its initial weights.
        func networks() throws -> (teacher: DiffusionTeacher, student: DiffusionMaskSegmenter) {
            let inference = DiffusionInference(schedule: .linear)
            let segmenter = try DiffusionMaskSegmenter(configuration(target: 2, condition: 3), inference: inference,
                                                       generator: RandomGenerator(seed: 0))
            let teacher = try DiffusionTeacher(segmenter: segmenter, image: configuration(target: 3, condition: 2),
                                               generator: RandomGenerator(seed: 1))
            let student = try DiffusionMaskSegmenter(configuration(target: 2, condition: 3), inference: inference,
                                                     generator: RandomGenerator(seed: 2))
            try teacher.load(state("initial.teacher."), source: Self.path)
            try student.load(state("initial.student."), source: Self.path)
            return (teacher, student)
        }

        /// Plain SGD at the reference's rate; epoch 0 of 2, so λ = 5·(0 + 1)/2.
        var setup: MethodSetup {
            get throws {
                var plan = TrainingPlan(labelRatio: try Ratio("1/2"), validationRatio: try Ratio("1/4"))
                plan.optimizer = .sgdPoly(learningRate: Float(metadata["lr"]!)!, momentum: 0, weightDecay: 0,
                                          power: 0)
                return MethodSetup(plan: plan, classes: 2, totalSteps: 2, stepsPerEpoch: 1)
            }
        }
        var context: StepContext { StepContext(step: 0, totalSteps: 2, stepsPerEpoch: 1, backend: CPUBackend.shared) }

        var joint: JointBatch {
            get throws {
                let images = tensor("input.images"), labelled = setting("labelled")
                let rows = { (start: Int, end: Int) in images.slice(axis: 0, start: start, end: end) }
                return try JointBatch(MethodBatch(
                    labelled: Batch(images: rows(0, labelled), labels: tensor("input.labels"), items: []),
                    unlabelled: Batch(images: rows(labelled, images.shape[0]), labels: nil, items: [])))
            }
        }
    }

    /// Every tensor of `module` (weights and BatchNorm statistics) against the reference's after the step, as
    /// changes from the initial ones: within 1e-4 of the largest change of the tensor, plus float32 rounding of the
    /// weight. Returns the largest difference and the largest share of its allowance used.
    @discardableResult
    func assertState(of module: Module, initial: [String: HostTensor], expected: [String: HostTensor],
                     _ label: String) throws -> (difference: Float, allowance: Float) {
        let actual = try module.checkpointState().tensors
        XCTAssertEqual(Set(actual.keys), Set(expected.keys), label)
        var worstDifference: Float = 0, usedAllowance: Float = 0
        for (name, tensor) in actual {
            let start = try XCTUnwrap(initial[name]).values, wanted = try XCTUnwrap(expected[name]).values
            let change = zip(tensor.values, start).map { $0 - $1 }, wantedChange = zip(wanted, start).map { $0 - $1 }
            let scale = wantedChange.map(abs).max() ?? 0
            let worst = zip(change, wantedChange).map { abs($0 - $1) }.max() ?? 0
            let allowed = 1e-4 * scale + 8 * (start.map(abs).max() ?? 0).ulp
            XCTAssertLessThanOrEqual(worst, allowed, "\(label): \(name) changes by up to \(scale), off by \(worst)")
            worstDifference = max(worstDifference, worst)
            usedAllowance = max(usedAllowance, worst / allowed)
        }
        return (worstDifference, usedAllowance)
    }

    func assertValue(_ value: Float?, _ wanted: Float, _ label: String) {
        XCTAssertEqual(value ?? .nan, wanted, accuracy: 1e-5 * max(1, abs(wanted)), label)
        print("\(label): ours \(value ?? .nan), reference \(wanted)")
    }

    /// Stage 1: L_teacher (ε-MSE and, from the same draws, the image form with the corrected sign), the readout's
    /// Dice, and the teacher's weights and BatchNorm statistics after one SGD step.
    func testTeacherPretrainingStepMatchesTheReference() throws {
        let reference = try Reference()
        let (teacher, _) = try reference.networks()
        let method = DiffusionTeacherPretraining(teacher: teacher, reconstruction: .noise, setup: try reference.setup)
        let draws = CycleDraws(maskTimesteps: reference.tensor("stage1.draw.mask_t"),
                               maskNoise: reference.tensor("stage1.draw.mask_noise"),
                               imageTimesteps: reference.tensor("stage1.draw.image_t"),
                               imageNoise: reference.tensor("stage1.draw.image_noise"))
        // A second teacher: the pass below leaves BatchNorm updates pending on the one it runs.
        let imageTeacher = try reference.networks().teacher
        imageTeacher.train(true)
        let imageForm = DiffusionTeacherPretraining(teacher: imageTeacher, reconstruction: .image,
                                                    setup: try reference.setup)
        assertValue(try imageForm.losses(try reference.joint, draws: draws)["reconstruction"]!.item(),
                    reference.value("stage1.image_reconstruction"), "stage 1 image reconstruction")
        let values = try method.step(try reference.joint, draws: draws, context: reference.context)
        for term in ["reconstruction", "readout_dice"] {
            assertValue(values[term], reference.value("stage1." + term), "stage 1 " + term)
        }
        let worst = try assertState(of: teacher, initial: reference.state("initial.teacher."),
                                    expected: reference.state("stage1.after.teacher."), "stage 1 teacher")
        print("stage 1: largest weight difference \(worst.difference), \(worst.allowance) of its allowance")
    }

    /// Stage 2 with R = 2: every term of Eq. 16, the total with λ = 2.5, and both networks after one SGD step.
    func testCoTrainingStepMatchesTheReference() throws {
        let reference = try Reference()
        let (teacher, student) = try reference.networks()
        let method = DiffusionTeacherStudent(teacher: teacher, student: student, rounds: reference.setting("rounds"),
                                             reconstruction: .noise, maximumWeight: 5, setup: try reference.setup)
        let pair = { (prefix: String) in (timesteps: reference.tensor(prefix + "_t"),
                                          noise: reference.tensor(prefix + "_noise")) }
        let draws = CoTrainingDraws(first: (reference.tensor("stage2.draw.t"), reference.tensor("stage2.draw.noise")),
                                    rounds: (0..<reference.setting("rounds")).map {
                                        (image: pair("stage2.round\($0).image"), mask: pair("stage2.round\($0).mask"))
                                    })
        let values = try method.step(try reference.joint, draws: draws, context: reference.context)
        XCTAssertEqual(values["consistency_weight"], Float(reference.metadata["lambda"]!)!)
        for term in method.lossTerms where term != "consistency_weight" {
            assertValue(values[term], reference.value("stage2." + term), "stage 2 " + term)
        }
        let teacherWorst = try assertState(of: teacher, initial: reference.state("initial.teacher."),
                                           expected: reference.state("stage2.after.teacher."), "stage 2 teacher")
        let studentWorst = try assertState(of: student, initial: reference.state("initial.student."),
                                           expected: reference.state("stage2.after.student."), "stage 2 student")
        for (name, worst) in [("teacher", teacherWorst), ("student", studentWorst)] {
            print("stage 2 \(name): largest weight difference \(worst.difference), \(worst.allowance) of its "
                  + "allowance")
        }
    }

    /// Inference is one x̂₀ step at t drawn from the card's seed, the same at every call; with K draws its
    /// softmax is the mean of the K single steps' softmax, in the order of the seeded stream.
    func testInferenceIsSeededAndAveragesItsDraws() throws {
        let reference = try Reference()
        let images = RandomGenerator(seed: 9).uniform([2, 3, 8, 8], -1, 1)
        let segmenter = try DiffusionMaskSegmenter(reference.configuration(target: 2, condition: 3),
                                                   inference: DiffusionInference(schedule: .linear, draws: 3, seed: 4),
                                                   generator: RandomGenerator(seed: 0))
        segmenter.train(false)
        let first = try segmenter(images).softmax(axis: 1).toArray(), second = try segmenter(images).toArray()
        XCTAssertEqual(try segmenter(images).toArray(), second)
        let stream = RandomGenerator(seed: 4)
        let single = try (0..<3).map { _ in
            segmenter.logits(maskEstimate: segmenter.maskEstimate(images: images,
                                                                  timesteps: stream.integers([2], 0, 1000),
                                                                  noise: stream.normal([2, 2, 8, 8])))
                .softmax(axis: 1)
        }.averaged().toArray()
        XCTAssertEqual(zip(first, single).map { abs($0 - $1) }.max() ?? 1, 0, accuracy: 1e-6)
    }

    /// A stage-2 run folder (card `diffusion-mask`) and a stage-1 one (`diffusion-teacher`) load as trained models
    /// for `segment` and `eval --model`, and segment as the saved networks do.
    func testRunsOfBothStagesLoadAsTrainedModels() throws {
        let root = try temporaryFolder().path
        for architecture in ["diffusion-mask", "diffusion-teacher"] {
            var card = ModelCard(architecture: architecture, preset: "cpu", classes: 2, pixelRange: .minusOneToOne)
            card.diffusion = DiffusionInference(schedule: .sigmoid, draws: 2, seed: 7)
            let saved = try writeRun(card, seed: 3, to: root + "/" + architecture)
            let trained = try TrainedModel(path: root + "/" + architecture)
            XCTAssertEqual(trained.card, card)
            let images = RandomGenerator(seed: 5).uniform([1, 3, 16, 16], -1, 1)
            XCTAssertEqual(try trained.network(images).toArray(), try saved(images).toArray(), architecture)
        }
    }

    /// `diffusion-ts --option teacher=…/{cell}` loads the stage-1 run of the same labels and seed into the teacher;
    /// a run that is not a teacher of the preset is refused naming the option.
    func testCoTrainingStartsFromTheStageOneRunOfItsCell() throws {
        let root = try temporaryFolder().path
        var card = ModelCard(architecture: "diffusion-teacher", preset: "cpu", classes: 2, pixelRange: .minusOneToOne)
        card.diffusion = DiffusionInference(schedule: .linear, seed: 3)
        let saved = try writeRun(card, seed: 8, to: root + "/runs/diffusion-teacher/labels-20_/seed-3")
        var plan = TrainingPlan(labelRatio: try Ratio("20%"), validationRatio: try Ratio("1/4"))
        plan.seed = 3
        let setup = MethodSetup(plan: plan, classes: 2, totalSteps: 4, stepsPerEpoch: 2)
        let registered = try MethodRegistry.method(named: "diffusion-ts")
        let method = try XCTUnwrap(try registered.make("cpu", ["teacher": root + "/runs/diffusion-teacher/{cell}"],
                                                       setup) as? DiffusionTeacherStudent)
        let loaded = try method.teacher.checkpointState().tensors, wanted = try saved.checkpointState().tensors
        XCTAssertEqual(Set(loaded.keys), Set(wanted.keys))
        XCTAssert(loaded.allSatisfy { $0.value.values == wanted[$0.key]!.values })
        XCTAssertEqual(method.notices.first?.contains("labels-20_/seed-3"), true)
        card.architecture = "diffusion-mask"
        try writeRun(card, seed: 8, to: root + "/student")
        XCTAssertThrowsError(try registered.make("cpu", ["teacher": root + "/student"], setup)) {
            XCTAssert("\($0)".contains("option teacher="), "\($0)")
        }
    }

    /// The paper's StepLR (×0.1 every 50 epochs) and the companion code's warm-up then StepLR (×0.5 every 50
    /// epochs after 20 warm-up epochs) count epochs of `stepsPerEpoch` optimizer steps.
    func testCiampiSchedulesStepByEpoch() {
        let paper = OptimizerRecipe.adamStepLR().make(for: [], totalSteps: 1000, stepsPerEpoch: 2).1
        XCTAssertEqual(paper.learningRate(at: 99), 0.01, accuracy: 1e-9)
        XCTAssertEqual(paper.learningRate(at: 100), 0.001, accuracy: 1e-9)
        let code = OptimizerRecipe.sgdStepLR().make(for: [], totalSteps: 1000, stepsPerEpoch: 2).1
        XCTAssertEqual(code.learningRate(at: 0), 0)
        XCTAssertEqual(code.learningRate(at: 20), 0.25, accuracy: 1e-7)
        XCTAssertEqual(code.learningRate(at: 40 + 99), 0.5, accuracy: 1e-7)
        XCTAssertEqual(code.learningRate(at: 40 + 100), 0.25, accuracy: 1e-7)
    }
}


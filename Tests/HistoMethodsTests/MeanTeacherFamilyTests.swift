import Foundation
import XCTest
import HistoCore
@testable import HistoData
import HistoNN
import HistoOpenCL
@testable import HistoMethods

/// tools/ssl_step_reference.py's network: conv3×3 (3 → 4) → BatchNorm → ReLU → conv1×1 (4 → 2), same names.
final class TinySegmenter: Module, SegmentationModel {
    let conv: Conv2d
    let norm = BatchNorm2d(4)
    let head: Conv2d

    init(generator: RandomGenerator) {
        conv = Conv2d(3, 4, kernel: 3, padding: 1, generator: generator)
        head = Conv2d(4, 2, kernel: 1, generator: generator)
        super.init()
    }

    var classes: Int { 2 }
    var inputMultiple: Int { 1 }
    override func members() -> [(key: String, member: ModuleMember)] {
        [("conv", .module(conv)), ("norm", .module(norm)), ("head", .module(head))]
    }
    func callAsFunction(_ x: Tensor) -> Tensor { head(norm(conv(x)).relu()) }
}

/// MT, UAMT and EM (SPEC §8): one step against the PyTorch reference, one step on OpenCL against the CPU, and short
/// runs through `histodiff train`'s path.
final class MeanTeacherFamilyTests: XCTestCase {
    static let methods = [MeanTeacherMethod.registration, UncertaintyAwareMeanTeacher.registration,
                          EntropyMinimisationMethod.registration]

    func batch(labelled: Tensor, labels: Tensor, unlabelled: Tensor) -> MethodBatch {
        MethodBatch(labelled: Batch(images: labelled, strongImages: nil, labels: labels, items: []),
                    unlabelled: Batch(images: unlabelled, strongImages: nil, labels: nil, items: []))
    }

    /// Fails naming every tensor of `expected` missing from `actual` or off by more than `tolerance` (absolute);
    /// returns the largest deviation.
    @discardableResult
    func assertClose(_ actual: [String: HostTensor], _ expected: [String: HostTensor], tolerance: Float,
                     _ label: String) -> Float {
        XCTAssertEqual(Set(actual.keys), Set(expected.keys), label)
        var largest: Float = 0
        for (name, want) in expected.sorted(by: { $0.key < $1.key }) {
            guard let got = actual[name] else { continue }
            XCTAssertEqual(got.shape, want.shape, "\(label) \(name)")
            let deviation = zip(got.values, want.values).map { abs($0 - $1) }.max() ?? 0
            XCTAssertLessThanOrEqual(deviation, tolerance, "\(label) \(name)")
            largest = max(largest, deviation)
        }
        return largest
    }

    /// One step of each method from the reference's state (fixture: tools/ssl_step_reference.py, which states the
    /// configuration) gives its loss terms to within 1e-5 relative and the student's and teacher's weights and
    /// BatchNorm statistics after the step (SGD, then the EMA) to within 1e-6 absolute: float32 sums in another
    /// order, and the noise from float32 polynomials instead of float64 transcendentals.
    func testOneStepOfEachMethodMatchesThePyTorchReference() throws {
        let url = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
            .appendingPathComponent("mean_teacher_family_step.safetensors")
        let fixture = try SafeTensors.read(url.path)
        func tensors(_ prefix: String) -> [String: HostTensor] {
            Dictionary(uniqueKeysWithValues: fixture.tensors.filter { $0.key.hasPrefix(prefix + ".") }
                .map { (String($0.key.dropFirst(prefix.count + 1)), $0.value) })
        }
        func setting(_ name: String) throws -> Double { try XCTUnwrap(fixture.metadata[name].flatMap(Double.init)) }
        let totalSteps = Int(try setting("total_steps"))
        var plan = TrainingPlan(labelRatio: try Ratio("1/2"), validationRatio: try Ratio("1/4"))
        plan.optimizer = .sgdPoly(learningRate: Float(try setting("learning_rate")))
        let setup = MethodSetup(plan: plan, classes: 2, totalSteps: totalSteps, stepsPerEpoch: 1)
        let recipe = LossRecipe.ssl4mis(ConsistencyRamp(maximum: Float(try setting("lambda")),
                                                        length: Int(try setting("ramp"))))
        let inputs = tensors("input")
        let batch = self.batch(labelled: inputs["labelled"]!.tensor, labels: inputs["labels"]!.tensor,
                               unlabelled: inputs["unlabelled"]!.tensor)
        let context = StepContext(step: Int(try setting("step")), totalSteps: totalSteps, stepsPerEpoch: 1,
                                  backend: CPUBackend.shared)

        for name in ["mt", "uamt", "em"] {
            let student = TinySegmenter(generator: RandomGenerator(seed: 1))
            try student.load(tensors("initial.student"), source: "fixture")
            var teacher: NoisyMeanTeacher?
            let method: any TrainingMethod
            if name == "em" {
                method = EntropyMinimisationMethod(student, recipe: recipe, setup: setup)
            } else {
                let mean = try NoisyMeanTeacher(TinySegmenter(generator: RandomGenerator(seed: 2)), student: student,
                                                decay: Float(try setting("ema_decay")),
                                                noiseSeed: UInt64(try setting("noise_seed")))
                let initial = tensors("initial.teacher")
                try mean.model.load(initial, source: "fixture")
                try mean.ema.restore(from: CheckpointState(
                    tensors: initial.filter { key, _ in mean.ema.shadows.contains { $0.name == key } },
                    metadata: ["update_count": fixture.metadata["ema_updates"]!]), source: "fixture")
                let consistency: any TeacherConsistency = name == "mt"
                    ? MeanSquaredConsistency() : UncertaintyMaskedConsistency(passes: Int(try setting("passes")))
                method = MeanTeacherMethod(student: student, teacher: mean, consistency: consistency, recipe: recipe,
                                           setup: setup)
                teacher = mean
            }
            let values = try method.step(batch, context: context)
            var report = name + ":"
            for (term, expected) in tensors("\(name).term").sorted(by: { $0.key < $1.key }) {
                let value = try XCTUnwrap(values[term], "\(name) reports no \(term)")
                XCTAssertEqual(value, expected.values[0], accuracy: 1e-5 * max(1, abs(expected.values[0])),
                               "\(name) \(term)")
                report += " \(term) \(value) (reference \(expected.values[0]))"
            }
            XCTAssertEqual(Set(values.keys), Set(method.lossTerms))
            let studentDeviation = assertClose(try student.checkpointState().tensors, tensors("\(name).student"),
                                               tolerance: 1e-6, "\(name) student")
            report += "; largest weight deviation: student \(studentDeviation)"
            if let teacher {
                let teacherDeviation = assertClose(try teacher.model.checkpointState().tensors,
                                                   tensors("\(name).teacher"), tolerance: 1e-6, "\(name) teacher")
                report += ", teacher \(teacherDeviation)"
            }
            print(report)
        }
    }

    /// One step of each method (`cpu` preset U-Net, batch 2 + 2 of 16²) on OpenCL (PoCL in CI) gives the CPU's loss
    /// terms (1e-4 relative) and weights (evaluated network and every checkpointed network, 1e-5 absolute; PoCL
    /// gives 4e-7), with no op sent to the CPU. SGD rather than the preset's Adam: Adam's first step is ±lr·sign(g),
    /// and the gradient of a bias ahead of a BatchNorm is rounding noise whose sign differs between backends.
    func testOneStepOfEachMethodOnOpenCLMatchesTheCPUWithoutFallbacks() throws {
        guard let device = try OpenCLBackend.make() else { throw XCTSkip("no OpenCL device on this machine") }
        let generator = RandomGenerator(seed: 3)
        let batch = self.batch(labelled: try generator.uniform([2, 3, 16, 16], -1, 1).materialized(),
                               labels: try generator.integers([2, 16, 16], 0, 2).materialized(),
                               unlabelled: try generator.uniform([2, 3, 16, 16], -1, 1).materialized())
        for registration in Self.methods {
            func step(on backend: any Backend) throws -> (terms: [String: Float], weights: [String: HostTensor]) {
                var plan = TrainingPlan(labelRatio: try Ratio("1/2"), validationRatio: try Ratio("1/4"))
                try registration.plan("cpu", &plan, [:])
                plan.optimizer = .sgdPoly()
                let method = try registration.make("cpu", [:], MethodSetup(plan: plan, classes: 2, totalSteps: 100,
                                                                            stepsPerEpoch: 10))
                let terms = try method.step(batch, context: StepContext(step: 60, totalSteps: 100, stepsPerEpoch: 10,
                                                                        backend: backend))
                var weights = try method.evaluatedModel.checkpointState().tensors
                for (name, component) in method.components {
                    guard let module = component as? Module else { continue }
                    for (key, value) in try module.checkpointState().tensors { weights[name + "." + key] = value }
                }
                return (terms, weights)
            }
            let cpu = try step(on: CPUBackend.shared)
            FallbackReport.shared.printsFirstOccurrence = false
            FallbackReport.shared.reset()
            let opencl = try step(on: device)
            XCTAssertEqual(FallbackReport.shared.counts, [:], "\(registration.name): ops run on the CPU")
            XCTAssertEqual(Set(cpu.terms.keys), Set(opencl.terms.keys))
            for (term, value) in cpu.terms {
                XCTAssertEqual(opencl.terms[term] ?? .nan, value, accuracy: 1e-4 * max(1, abs(value)),
                               "\(registration.name) \(term)")
            }
            let deviation = assertClose(opencl.weights, cpu.weights, tolerance: 1e-5, "\(registration.name) on OpenCL")
            print("\(registration.name): cpu \(cpu.terms), opencl \(opencl.terms); largest weight deviation "
                  + "\(deviation)")
        }
    }

    /// Each method trains through `histodiff train`'s path (registration, presets, trainer) on a few synthetic
    /// tiles: 2 labelled, 2 unlabelled, 2 validation; 2 epochs of 2 steps log a finite value of every term.
    func testShortRunOfEachMethodLogsFiniteTerms() throws {
        let root = try temporaryFolder()
        let data = root.appendingPathComponent("data").path
        try SyntheticHistology.makeDataset(at: data, count: 6, size: 64, seed: 4)
        for registration in Self.methods {
            var request = TrainingRequest(method: registration.name, data: data,
                                          directory: root.appendingPathComponent(registration.name).path)
            request.labels = "2"
            request.validation = "1/3"
            request.patch = 32
            request.batch = 2
            request.cropsPerImage = 2
            request.epochs = 2
            request.seed = 1
            request.progress = .none
            if registration.name == "uamt" { request.methodOptions = ["passes": "2"] }
            let result = try MethodTraining.run(request)
            XCTAssertEqual(result.outcome, .completed, registration.name)
            XCTAssertEqual(result.steps, 4, registration.name)
            let log = try MetricsLog.read(path: request.directory + "/metrics.csv")
            for term in ["loss", "supervised", registration.name == "em" ? "entropy" : "consistency"] {
                let values = try log.series(term).map(\.value)
                XCTAssertEqual(values.count, 4, "\(registration.name) \(term)")
                XCTAssertTrue(values.allSatisfy(\.isFinite), "\(registration.name) \(term): \(values)")
            }
        }
        var request = TrainingRequest(method: "uamt", data: data, directory: root.appendingPathComponent("bad").path)
        request.labels = "2"
        request.methodOptions = ["passes": "0"]
        request.progress = .none
        XCTAssertThrowsError(try MethodTraining.run(request)) { error in
            XCTAssertTrue("\(error)".contains("passes=0 must be a whole number ≥ 1"), "\(error)")
        }
    }
}

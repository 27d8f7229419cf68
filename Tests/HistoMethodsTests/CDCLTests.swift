import Foundation
import XCTest
import HistoCore
import HistoData
import HistoNN
@testable import HistoMethods

/// CDCL (SPEC §5): the unlabelled losses against tools/cdcl_reference.py, the DenseUNet and its torchvision encoder
/// names, short runs through the registry and an exact resume.
final class CDCLTests: XCTestCase {
    /// Largest absolute difference; fails naming `label` when the shapes differ.
    func deviation(_ actual: [Float], _ expected: HostTensor, _ label: String) -> Float {
        XCTAssertEqual(actual.count, expected.values.count, label)
        return zip(actual, expected.values).map { abs($0 - $1) }.max() ?? 0
    }

    /// L_contr under both negative rules (with the previous batch's bank), L_cons with and without the confidence
    /// threshold and L_ent match the float64 reference: values to 1e-5 relative, gradients to 1e-6 absolute
    /// (float32 sums over 1536 bank entries; gradients are at most ~0.01). The bank's gradient is 0 (detached).
    func testUnlabelledLossesMatchTheReference() throws {
        let url = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
            .appendingPathComponent("cdcl_losses.safetensors")
        let fixture = try SafeTensors.read(url.path)
        func input(_ name: String) -> Tensor { fixture.tensors["input." + name]!.tensor }
        func expected(_ name: String) -> HostTensor { fixture.tensors[name]! }
        func checkValue(_ value: Float, _ name: String) {
            let want = expected(name + ".value").values[0]
            XCTAssertEqual(value, want, accuracy: 1e-5 * max(1, abs(want)), name)
        }
        let studentLabels = CrossPatchDenseContrastMethod.projectorLabels(input("student_logits"))
        let teacherLabels = CrossPatchDenseContrastMethod.projectorLabels(input("teacher_logits"))
        for rule in CrossPatchContrast.NegativeRule.allCases {
            let name = "contrast_" + rule.rawValue
            let student = Parameter(input("student_projections")), teacher = Parameter(input("teacher_projections"))
            let previous = Parameter(input("previous_features"))
            let contrast = CrossPatchContrast(rule: rule)
            let loss = contrast.loss(
                student: contrast.entries(projections: student.value, labels: studentLabels),
                teacher: contrast.entries(projections: teacher.value, labels: teacherLabels),
                previous: .init(features: previous.value, labels: input("previous_labels"),
                                scores: input("previous_scores")),
                groups: 2)
            let (value, gradients) = try Gradients.of(loss, wrt: [student, teacher, previous])
            checkValue(value, name)
            var worst: Float = 0
            for (parameter, key) in [(student, "grad_student"), (teacher, "grad_teacher"),
                                     (previous, "grad_previous")] {
                let difference = deviation(gradients[parameter] ?? [], expected(name + "." + key), name + " " + key)
                XCTAssertLessThanOrEqual(difference, 1e-6, "\(name) \(key)")
                worst = max(worst, difference)
            }
            print("\(name): \(value) (reference \(expected(name + ".value").values[0])), largest gradient "
                  + "deviation \(worst)")
        }
        let teacherLogits = input("teacher_logits")
        let terms: [(String, (Tensor) -> Tensor)] = [
            ("consistency", { CrossPatchDenseContrastMethod.consistency(student: $0, teacher: teacherLogits,
                                                                         threshold: nil) }),
            ("consistency_threshold", {
                CrossPatchDenseContrastMethod.consistency(student: $0, teacher: teacherLogits,
                                                          threshold: Float(fixture.metadata["threshold"]!)!)
            }),
            ("entropy", { Loss.entropy(logits: $0) }),
        ]
        for (name, loss) in terms {
            let logits = Parameter(input("student_logits"))
            let (value, gradients) = try Gradients.of(loss(logits.value), wrt: [logits])
            checkValue(value, name)
            let difference = deviation(gradients[logits] ?? [], expected(name + ".grad"), name)
            XCTAssertLessThanOrEqual(difference, 1e-6, name)
            print("\(name): \(value) (reference \(expected(name + ".value").values[0])), largest gradient "
                  + "deviation \(difference)")
        }
    }

    /// The paper preset's encoder is DenseNet-161's `features`: torchvision's 26 472 000 parameters (28 681 000
    /// with the ImageNet classifier). The cpu preset with its projector has benchmarks/torch_peer.py's count.
    func testParameterCountsMatchTorchvisionAndThePeer() {
        XCTAssertEqual(ContrastiveDenseUNet(.cpu(classes: 2), generator: RandomGenerator(seed: 0)).parameterCount(),
                       111_988)
        let network = DenseUNet(.paper(classes: 2), generator: RandomGenerator(seed: 0))
        XCTAssertEqual(network.features.parameterCount(), 26_472_000)
        XCTAssertEqual(DenseUNet.Configuration.paper(classes: 2).blockChannels, [384, 768, 2112, 2208])
    }

    /// A randomly initialised torchvision-layout DenseNet exported by tools/densenet_to_safetensors.py (init 8,
    /// growth 4, blocks 1/2/2/1, bn_size 2, BatchNorm statistics randomised) loads into the encoder by name, and in
    /// eval mode the encoder's four outputs on the tool's input match PyTorch's to 1e-5.
    func testTorchvisionDenseNetLoadsIntoTheEncoderAndMatchesPyTorch() throws {
        let url = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
            .appendingPathComponent("densenet_tiny.safetensors")
        var configuration = DenseUNet.Configuration(classes: 2, initialFeatures: 8, growthRate: 4, blocks: [1, 2, 2, 1],
                                                    dropRate: 0.2, decoderChannels: 8, classifierChannels: 4)
        configuration.bottleneckFactor = 2
        let network = DenseUNet(configuration, generator: RandomGenerator(seed: 1))
        let loaded = try network.loadEncoder(fromTorchvision: url.path)
        XCTAssertEqual(loaded, network.features.stateTensors().count)
        network.train(false)
        let fixture = try SafeTensors.read(url.path)
        let outputs = network.features(fixture.tensors["reference.input"]!.tensor)
        for (index, output) in outputs.enumerated() {
            let expected = fixture.tensors["reference.output\(index)"]!
            XCTAssertEqual(output.shape, expected.shape)
            XCTAssertLessThanOrEqual(deviation(try output.toArray(), expected, "output \(index)"), 1e-5,
                                     "output \(index)")
        }
        let wrong = DenseUNet(.cpu(classes: 2), generator: RandomGenerator(seed: 1))
        XCTAssertThrowsError(try wrong.loadEncoder(fromTorchvision: url.path)) { error in
            XCTAssertTrue("\(error)".contains("shape mismatches"), "\(error)")
        }
    }

    /// A short run of `method` on 64² crops: 2 labelled images, 1 crop each, batches of 2 (+ 2), 3 epochs of 1 step.
    func request(_ method: String, _ dataset: Dataset, in folder: URL) -> TrainingRequest {
        var request = TrainingRequest(method: method, data: dataset.root, directory: folder.path)
        request.labels = "2"
        request.validation = "1"
        request.patch = 64
        request.batch = 2
        request.cropsPerImage = 1
        request.epochs = 3
        request.seed = 2
        request.progress = .none
        request.methodOptions = method == "cdcl" ? ["unlabelled-from": "1"] : ["arch": "denseunet"]
        return request
    }

    /// `histodiff train --method cdcl` on 64² crops of synthetic tiles: 2 labelled, 3 unlabelled images, batches
    /// 2 + 2, 3 epochs of 1 step with the unlabelled terms from epoch 1: every term logged finite, the contrastive
    /// term positive once it starts, and the folder segments with the DenseUNet card. The supervised baseline
    /// trains the same preset.
    func testShortRunsThroughTheRegistryFinishAndSegment() throws {
        let dataset = try syntheticDataset(count: 3, size: 64, unlabelled: 3)
        for name in ["cdcl", "supervised"] {
            let folder = try temporaryFolder()
            let result = try MethodTraining.run(request(name, dataset, in: folder), dataset: dataset)
            XCTAssertEqual(result.outcome, .completed, name)
            XCTAssertEqual(result.steps, 3, name)
            let log = try MetricsLog.read(path: folder.appendingPathComponent("metrics.csv").path)
            let terms = name == "cdcl"
                ? ["loss", "supervised", "contrastive", "consistency", "entropy", "consistency_weight"] : ["loss"]
            for term in terms {
                let values = try log.series(term).map(\.value)
                XCTAssertEqual(values.count, 3, "\(name) \(term)")
                XCTAssert(values.allSatisfy(\.isFinite), "\(name) \(term): \(values)")
            }
            if name == "cdcl" {
                let contrastive = try log.series("contrastive").map(\.value)
                XCTAssertEqual(contrastive[0], 0)
                XCTAssert(contrastive.dropFirst().allSatisfy { $0 > 0 }, "\(contrastive)")
            }
            let trained = try TrainedModel(path: folder.path)
            XCTAssertEqual(trained.card.architecture, "denseunet", name)
            let image = try dataset.sample(at: 0).image.colorPlanes(range: .minusOneToOne)
            XCTAssert(try trained.network.logits(of: image).values.allSatisfy(\.isFinite), name)
        }
    }

    /// A cdcl run interrupted after its second step (the first with a bank) and resumed ends as an uninterrupted
    /// one, bit for bit: student, optimizer, EMA, the bank and the dropout draws are in the checkpoint.
    func testInterruptedRunResumesBitForBit() throws {
        let dataset = try syntheticDataset(count: 3, size: 64, unlabelled: 3)
        var request = request("cdcl", dataset, in: try temporaryFolder())
        request.methodOptions = ["unlabelled-from": "0"]
        let resumed = try assertResumesBitForBit(request, dataset: dataset, stopAt: 1)
        XCTAssertFalse(try XCTUnwrap(resumed.components["bank"]).checkpointState().tensors.isEmpty)
    }
}

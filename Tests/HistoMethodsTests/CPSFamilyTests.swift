import Foundation
import XCTest
import HistoCore
@testable import HistoData
import HistoNN
import HistoOpenCL
@testable import HistoMethods

/// CPS, CCT and URPC: one step against the PyTorch reference (tools/ssl_cps_family_reference.py), the same step on
/// OpenCL, and short runs through the registry.
final class CPSFamilyTests: XCTestCase {
    /// The reference step's inputs, settings and results (`cps_family_step.safetensors`).
    struct Reference {
        static let path = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
            .appendingPathComponent("cps_family_step.safetensors").path
        let tensors: [String: HostTensor]

        init() throws { tensors = try SafeTensors.read(Self.path).tensors }

        func setting(_ name: String) -> Float { tensors["setting.\(name)"]!.values[0] }

        /// The width-1 SSL4MIS-variant U-Net without encoder dropout that the reference builds.
        var configuration: SegmentationUNet.Configuration {
            var configuration = SegmentationUNet.Configuration(classes: 2, width: 1, variant: .ssl4mis)
            configuration.dropout = [0, 0, 0, 0, 0]
            return configuration
        }

        var perturbations: RandomGenerator { RandomGenerator(seed: UInt64(setting("perturbation_seed"))) }
        var ramp: ConsistencyRamp {
            ConsistencyRamp(maximum: setting("lambda_max"), length: Int(setting("total_steps")))
        }

        var setup: MethodSetup {
            get throws {
                var plan = TrainingPlan(labelRatio: try Ratio("1/2"), validationRatio: try Ratio("1/4"))
                plan.optimizer = .sgdPoly(learningRate: setting("learning_rate"))
                return MethodSetup(plan: plan, classes: 2, totalSteps: Int(setting("total_steps")), stepsPerEpoch: 10)
            }
        }

        var batch: MethodBatch {
            func input(_ name: String) -> Tensor { tensors["input.\(name)"]!.tensor }
            return MethodBatch(
                labelled: Batch(images: input("labelled"), strongImages: nil, labels: input("labels"), items: []),
                unlabelled: Batch(images: input("unlabelled"), strongImages: nil, labels: nil, items: []))
        }

        func context(on backend: any Backend) -> StepContext {
            StepContext(step: Int(setting("step")), totalSteps: Int(setting("total_steps")), stepsPerEpoch: 10,
                        backend: backend)
        }

        /// `method`'s tensors under `prefix` (before or after the step), with the prefix taken off.
        func state(_ method: String, _ stage: String, _ prefix: String) -> [String: HostTensor] {
            let start = "\(method).\(stage).\(prefix)"
            return Dictionary(uniqueKeysWithValues: tensors.filter { $0.key.hasPrefix(start) }
                .map { (String($0.key.dropFirst(start.count)), $0.value) })
        }
    }

    /// A method built on the reference's networks, loaded with its initial weights: the method and its networks
    /// with their name prefixes in the fixture.
    typealias Built = (method: any TrainingMethod, networks: [(prefix: String, module: Module)])

    static func cps(_ reference: Reference) throws -> Built {
        let first = SegmentationUNet(reference.configuration, generator: RandomGenerator(seed: 0))
        let second = SegmentationUNet(reference.configuration, generator: RandomGenerator(seed: 1))
        let method = CrossPseudoSupervisionMethod(first: first, second: second,
                                                  secondLearningRate: reference.setting("second_learning_rate"),
                                                  recipe: .ssl4mis(reference.ramp), pseudoSupervisesLabelled: false,
                                                  setup: try reference.setup)
        return try loaded(method, [("net1.", first), ("net2.", second)], "cps", reference)
    }

    static func cct(_ reference: Reference) throws -> Built {
        let unet = CrossConsistencyUNet(reference.configuration, generator: RandomGenerator(seed: 0),
                                        perturbations: reference.perturbations)
        let method = CrossConsistencyTrainingMethod(unet, recipe: .ssl4mis(reference.ramp),
                                                    supervisesAuxiliary: true, setup: try reference.setup)
        return try loaded(method, [("", unet)], "cct", reference)
    }

    static func urpc(_ reference: Reference) throws -> Built {
        let unet = PyramidUNet(reference.configuration, generator: RandomGenerator(seed: 0),
                               perturbations: reference.perturbations)
        let method = UncertaintyRectifiedPyramidMethod(unet, recipe: .ssl4mis(reference.ramp),
                                                       setup: try reference.setup)
        return try loaded(method, [("", unet)], "urpc", reference)
    }

    static func loaded(_ method: any TrainingMethod, _ networks: [(prefix: String, module: Module)], _ name: String,
                       _ reference: Reference) throws -> Built {
        for (prefix, module) in networks {
            try module.load(reference.state(name, "init", prefix), source: Reference.path)
        }
        return (method, networks)
    }

    static let methods: [(name: String, build: (Reference) throws -> Built)] = [("cps", cps), ("cct", cct),
                                                                                ("urpc", urpc)]

    /// Every tensor of `networks` after a step against `expected` (name → value), compared as changes from
    /// `initial`: the largest difference of a tensor's change must be within `tolerance` of its largest change.
    func assertChanges(of networks: [(prefix: String, module: Module)], from initial: (String) -> [String: HostTensor],
                       equal expected: (String) -> [String: HostTensor], tolerance: Float, _ label: String) throws {
        var compared = 0, usedAllowance: Float = 0
        for (prefix, module) in networks {
            let before = initial(prefix), wanted = expected(prefix), tensors = try module.checkpointState().tensors
            XCTAssertEqual(tensors.count, wanted.count, "\(label): tensors of network \(prefix)")
            for (name, actual) in tensors {
                let start = try XCTUnwrap(before[name], "\(label): no initial \(prefix)\(name)").values
                let reference = try XCTUnwrap(wanted[name], "\(label): no expected \(prefix)\(name)").values
                let change = zip(actual.values, start).map { $0 - $1 }
                let referenceChange = zip(reference, start).map { $0 - $1 }
                let scale = referenceChange.map(abs).max() ?? 0
                let worst = zip(change, referenceChange).map { abs($0 - $1) }.max() ?? 0
                // A float32 weight's change is known to an ulp or two of the weight (biases before a BatchNorm
                // only change by their weight decay, ~1e-6).
                let allowed = tolerance * scale + 4 * (start.map(abs).max() ?? 0).ulp
                XCTAssertLessThanOrEqual(worst, allowed,
                                         "\(label): \(prefix)\(name) changes by up to \(scale), off by \(worst)")
                usedAllowance = max(usedAllowance, worst / allowed)
                compared += 1
            }
        }
        XCTAssertGreaterThan(compared, 0, label)
        print("\(label): \(compared) tensors, at most \(usedAllowance) of the allowed difference")
    }

    /// One step of each method equals the float64 PyTorch reference: loss terms within 1e-4 relative, and the change
    /// of every parameter and BatchNorm statistic within 2e-3 of that tensor's largest change.
    func testOneStepMatchesThePyTorchReference() throws {
        let reference = try Reference()
        for (name, build) in Self.methods {
            let (method, networks) = try build(reference)
            let values = try method.step(reference.batch, context: reference.context(on: CPUBackend.shared))
            XCTAssertEqual(Set(values.keys), Set(method.lossTerms), name)
            for term in method.lossTerms {
                let expected = try XCTUnwrap(reference.tensors["\(name).term.\(term)"], "\(name): no \(term)").values[0]
                XCTAssertEqual(values[term]!, expected, accuracy: 1e-4 * max(1, abs(expected)), "\(name) \(term)")
            }
            try assertChanges(of: networks, from: { reference.state(name, "init", $0) },
                              equal: { reference.state(name, "updated", $0) }, tolerance: 2e-3, name)
        }
    }

    /// The same step on OpenCL (PoCL in CI) gives the CPU's terms and updates, with no op falling back to the CPU.
    func testOneStepOnOpenCLMatchesTheCPU() throws {
        guard let device = try OpenCLBackend.make() else { throw XCTSkip("no OpenCL device on this machine") }
        let reference = try Reference()
        FallbackReport.shared.printsFirstOccurrence = false
        defer { FallbackReport.shared.printsFirstOccurrence = true }
        for (name, build) in Self.methods {
            let (cpuMethod, cpuNetworks) = try build(reference)
            let cpuValues = try cpuMethod.step(reference.batch, context: reference.context(on: CPUBackend.shared))
            let (deviceMethod, deviceNetworks) = try build(reference)
            FallbackReport.shared.reset()
            let deviceValues = try deviceMethod.step(reference.batch, context: reference.context(on: device))
            XCTAssertEqual(FallbackReport.shared.counts, [:], "\(name): ops that ran on the CPU")
            for term in cpuMethod.lossTerms {
                XCTAssertEqual(deviceValues[term]!, cpuValues[term]!, accuracy: 1e-4 * max(1, abs(cpuValues[term]!)),
                               "\(name) \(term)")
            }
            func state(_ networks: [(prefix: String, module: Module)]) throws -> (String) -> [String: HostTensor] {
                let states = try networks.map { ($0.prefix, try $0.module.checkpointState().tensors) }
                return { prefix in states.first { $0.0 == prefix }!.1 }
            }
            try assertChanges(of: deviceNetworks, from: { reference.state(name, "init", $0) },
                              equal: try state(cpuNetworks), tolerance: 2e-3, "\(name) on OpenCL")
        }
    }

    /// A short `histodiff train --method NAME` on 32² crops: 2 labelled images, 2 crops each, batches of 2 + 2,
    /// 2 epochs of 2 steps.
    func shortRequest(_ method: String, _ dataset: Dataset, in folder: URL) -> TrainingRequest {
        var request = TrainingRequest(method: method, data: dataset.root, directory: folder.path)
        request.labels = "2"
        request.validation = "2"
        request.patch = 32
        request.batch = 2
        request.cropsPerImage = 2
        request.epochs = 2
        request.progress = .none
        return request
    }

    /// Each method trains through the registry (`histodiff train --method …`) on synthetic data with finite loss
    /// terms, and the run folder segments: its card rebuilds the evaluated network from best.safetensors.
    func testShortRunsThroughTheRegistryFinishAndSegment() throws {
        let dataset = try syntheticDataset(count: 6, size: 32, unlabelled: 3)
        for name in ["cps", "cct", "urpc"] {
            let folder = try temporaryFolder()
            let result = try MethodTraining.run(shortRequest(name, dataset, in: folder), dataset: dataset)
            XCTAssertEqual(result.outcome, .completed, name)
            XCTAssertEqual(result.steps, 4, name)
            let log = try MetricsLog.read(path: folder.appendingPathComponent("metrics.csv").path)
            // step, loss, lr, seconds, epoch, the method's other terms, the validation scores.
            let terms = log.columns.filter { !["step", "lr", "seconds", "epoch"].contains($0) && !$0.hasPrefix("val_") }
            XCTAssert(terms.contains("loss") && terms.contains("consistency_weight"), "\(name): \(log.columns)")
            for term in terms {
                let series = try log.series(term)
                XCTAssertEqual(series.count, 4, "\(name) \(term)")
                XCTAssert(series.allSatisfy { $0.value.isFinite }, "\(name) \(term): \(series.map(\.value))")
            }
            let trained = try TrainedModel(path: folder.path)
            XCTAssertEqual(trained.card.architecture, "unet", name)
            let image = try dataset.sample(at: 0).image.colorPlanes(range: .minusOneToOne)
            XCTAssert(try trained.network.logits(of: image).values.allSatisfy(\.isFinite), name)
        }
    }

    /// A run interrupted after its first step and resumed ends as an uninterrupted one, bit for bit: the second
    /// network, the auxiliary decoders or side heads, the optimizers and the perturbation and dropout draws are all
    /// in the checkpoint.
    func testInterruptedRunsResumeBitForBit() throws {
        let dataset = try syntheticDataset(count: 6, size: 32, unlabelled: 3)
        for name in ["cps", "cct", "urpc"] {
            try assertResumesBitForBit(shortRequest(name, dataset, in: try temporaryFolder()), dataset: dataset,
                                       stopAt: 0)
        }
    }

    /// The ramp: SSL4MIS's 0.1·r(⌊it/150⌋, 200) over 30 000 iterations, stretched to other run lengths.
    func testConsistencyRampFollowsSSL4MIS() {
        let ramp = ConsistencyRamp(maximum: 0.1, length: 30_000)
        for iteration in [0, 149, 150, 7_777, 15_000, 29_999] {
            let stair = Double(iteration / 150)
            let expected = 0.1 * Foundation.exp(-5 * (1 - stair / 200) * (1 - stair / 200))
            XCTAssertEqual(Double(ramp.weight(at: iteration)), expected, accuracy: 1e-7)
        }
        XCTAssertEqual(ConsistencyRamp(maximum: 0.1, length: 500).weight(at: 250), ramp.weight(at: 15_000))
        XCTAssertEqual(ConsistencyRamp(maximum: 0.1, length: 500).weight(at: 499), 0.1, accuracy: 1e-4)
    }
}

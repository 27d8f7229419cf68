import Foundation
import XCTest
import HistoCore
import HistoData
import HistoNN
import HistoOpenCL
@testable import HistoMethods

/// Every registered method takes one training step on OpenCL (PoCL in CI) that matches the CPU reference: the same
/// loss terms and the same evaluated weights afterwards, with no op falling back to the CPU. CDCL takes 64² crops
/// (its 8×8 patch grid at 1/8 resolution) and its unlabelled terms from the first step; pathsegdiff one 64² tile
/// of a random `cpu` latent diffusion run, dtseg 64² crops of its features, dtseg-collab 64² crops on one-step
/// dtseg and FPN runs.
final class MethodBackendParityTests: XCTestCase {
    static let options = ["cdcl": ["unlabelled-from": "0"]]
    static let patches = ["cdcl": 64, "pathsegdiff": 64, "dtseg": 64, "dtseg-collab": 64]
    /// Relative tolerance of the loss terms (1e-4 otherwise). diffusion-ts's rounds reconstruct the image as
    /// √(1/ᾱ_t)·ĩ − √(1/ᾱ_t − 1)·ε̂, which multiplies ε̂'s rounding by up to 158 (t = 999, linear
    /// β) before the mask pathway sees it again; its alignment term differs by ~5e-4 between backends.
    static let valueTolerances: [String: Float] = ["diffusion-ts": 1e-3]

    func testOneStepOfEveryMethodMatchesTheCPUWithoutFallbacks() throws {
        try assertParity(of: MethodRegistry.methods)
    }

    /// The same check for Ciampi et al.'s two stages alone (covered above too): a quick run while working on them.
    func testOneStepOfTheDiffusionTeacherStudentStagesMatchesTheCPU() throws {
        try assertParity(of: MethodRegistry.methods.filter { $0.name.hasPrefix("diffusion-") })
    }

    /// The same check for pathsegdiff alone.
    func testOneStepOfPathSegDiffMatchesTheCPU() throws {
        try assertParity(of: [try MethodRegistry.method(named: "pathsegdiff")])
    }

    /// The same check for DTSeg's two methods alone.
    func testOneStepOfDTSegMatchesTheCPU() throws {
        try assertParity(of: MethodRegistry.methods.filter { $0.name.hasPrefix("dtseg") })
    }

    func assertParity(of methods: [RegisteredMethod]) throws {
        guard let device = try OpenCLBackend.make() else { throw XCTSkip("no OpenCL device on this machine") }
        let root = try temporaryFolder().path
        try SyntheticHistology.makeDataset(at: root, count: 4, size: 64, seed: 3)
        let dataset = try Dataset.open(path: root)
        func batch(_ views: BatchViews, labelled: Bool, patch: Int) throws -> Batch {
            var options = LoaderOptions(batchSize: 2, patches: .randomCrops(size: patch, perImage: 1),
                                        labelled: labelled)
            options.views = views
            options.seed = 5
            let loader = try BatchLoader(dataset: dataset, indices: [0, 1], options: options)
            defer { loader.close() }
            return try XCTUnwrap(try loader.next())
        }
        FallbackReport.shared.printsFirstOccurrence = false
        XCTAssertFalse(methods.isEmpty)
        let latentRun = try PathSegDiffTests.writeLatentRun(to: root + "/ldm")
        var options = Self.options
        options["pathsegdiff"] = ["model": latentRun]
        options["dtseg"] = ["model": latentRun]
        if methods.contains(where: { $0.name == "dtseg-collab" }) {
            options["dtseg-collab"] = try DTSegTests.writeFrozenRuns(data: root, to: root + "/frozen")
        }
        for registered in methods {
            var request = TrainingRequest(method: registered.name, data: root, directory: root)
            let patch = Self.patches[registered.name] ?? 32
            let options = options[registered.name] ?? [:]
            request.patch = patch
            var plan = try MethodTraining.plan(for: request)
            // SGD moves each weight by its gradient, so equal weights mean equal gradients; Adam's first step is
            // ±lr wherever a gradient is ~0 (conv biases before BatchNorm), whose sign is rounding noise.
            plan.optimizer = .sgdPoly(learningRate: 0.01)
            let setup = MethodSetup(plan: plan, classes: 2, totalSteps: 10, stepsPerEpoch: 5)
            var outcomes: [(values: [String: Float], weights: [String: HostTensor])] = []
            for backend in [CPUBackend.shared as any Backend, device] {
                var options = options
                // A cache of its own per backend: the OpenCL step computes its frozen features, not reads the CPU's.
                if registered.name == "pathsegdiff" { options["cache"] = root + "/feature-cache-" + backend.name }
                let method = try registered.make("cpu", options, setup)
                let needs = method.dataNeeds
                let step = MethodBatch(labelled: try batch(needs.labelledViews, labelled: true, patch: patch),
                                       unlabelled: try needs.unlabelledViews.map {
                                           try batch($0, labelled: false, patch: patch)
                                       })
                FallbackReport.shared.reset()
                let values = try method.step(step, context: StepContext(step: 0, totalSteps: 10, stepsPerEpoch: 5,
                                                                        backend: backend))
                XCTAssertEqual(FallbackReport.shared.counts, [:],
                               "\(registered.name) on \(backend.name): CPU fallbacks")
                outcomes.append((values, try method.evaluatedModel.checkpointState().tensors))
            }
            if registered.name == "pathsegdiff" {
                for backend in [CPUBackend.shared as any Backend, device] {
                    let cache = root + "/feature-cache-" + backend.name
                    let files = FileManager.default.subpaths(atPath: cache) ?? []
                    XCTAssertTrue(files.contains { $0.hasSuffix(".safetensors") }, "\(cache) holds no features")
                }
            }
            let (cpu, opencl) = (outcomes[0], outcomes[1])
            XCTAssertEqual(Set(cpu.values.keys), Set(opencl.values.keys))
            for (term, value) in cpu.values {
                XCTAssertEqual(value, opencl.values[term]!,
                               accuracy: (Self.valueTolerances[registered.name] ?? 1e-4) * max(1, abs(value)),
                               "\(registered.name) \(term)")
            }
            var worst = (name: "", difference: Float(0))
            for (name, tensor) in cpu.weights {
                for (a, b) in zip(tensor.values, opencl.weights[name]!.values) where abs(a - b) > worst.difference {
                    worst = (name, abs(a - b))
                }
            }
            XCTAssertLessThan(worst.difference, 1e-4, "\(registered.name): largest weight difference at \(worst.name)")
            let termDifference = cpu.values.map { abs($0.value - opencl.values[$0.key]!) }.max() ?? 0
            print("\(registered.name): largest loss-term difference \(termDifference), weight difference "
                  + "\(worst.difference) at \(worst.name)")
        }
    }
}

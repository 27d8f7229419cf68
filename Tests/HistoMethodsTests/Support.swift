import Foundation
import XCTest
import HistoCore
import HistoData
import HistoNN
@testable import HistoMethods

extension XCTestCase {
    /// Largest |a − b| relative to the largest |b|.
    func relativeError(_ actual: [Float], _ expected: [Float]) -> Float {
        XCTAssertEqual(actual.count, expected.count)
        let scale = max(expected.map(abs).max() ?? 0, 1e-12)
        return zip(actual, expected).map { abs($0 - $1) }.max()! / scale
    }

    /// A fresh folder under the temporary directory, removed when the test ends.
    func temporaryFolder() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("histomethods-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    /// A run folder as `histodiff train` leaves it: the card and `best.safetensors` of a network drawn with `seed`,
    /// its BatchNorm statistics moved off their initial values by one training-mode forward.
    @discardableResult
    func writeRun(_ card: ModelCard, seed: UInt64, to directory: String) throws -> any SegmentationModel {
        let model = try card.makeModel(generator: RandomGenerator(seed: seed))
        model.train(true)
        try model(RandomGenerator(seed: seed &+ 1).uniform([2, 3, 32, 32], -1, 1)).eval()
        try model.commitBufferUpdates()
        model.train(false)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try model.save(to: directory + "/" + TrainingRun.bestFileName)
        try card.write(to: directory)
        return model
    }

    /// The built `histodiff` beside the test bundle (both are products of one build).
    func commandLineTool() throws -> URL {
        // The bundle is the build folder itself on Linux, a .xctest folder inside it on macOS.
        let bundle = Bundle(for: Self.self).bundleURL
        let folder = bundle.pathExtension == "xctest" ? bundle.deletingLastPathComponent() : bundle
        let tool = folder.appendingPathComponent("histodiff")
        guard FileManager.default.isExecutableFile(atPath: tool.path) else {
            throw XCTSkip("\(tool.path) is not built (swift build -c release builds it)")
        }
        return tool
    }

    /// Runs the tool; its exit status and what it wrote to standard output and error.
    func launch(_ tool: URL, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = tool
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }

    /// A synthetic dataset: noisy images with bright squares, masks marking the squares; `unlabelled` more images
    /// without masks.
    func syntheticDataset(count: Int, size: Int, unlabelled: Int = 0) throws -> Dataset {
        let root = try temporaryFolder()
        for folder in ["images", "masks"] {
            try FileManager.default.createDirectory(at: root.appendingPathComponent(folder),
                                                    withIntermediateDirectories: true)
        }
        for i in 0..<(count + unlabelled) {
            let noise = try RandomGenerator(seed: UInt64(i)).uniform([size * size], 0, 60).toArray()
            var mask = [UInt16](repeating: 0, count: size * size)
            for y in (4 + i % 5)..<(size / 2) { for x in 6..<(size / 2 + i % 7) { mask[y * size + x] = 255 } }
            let rgb = (0..<(size * size)).flatMap { p in
                [UInt16](repeating: UInt16(noise[p]) + (mask[p] > 0 ? 150 : 40), count: 3)
            }
            try PNG.write(try Image(width: size, height: size, channels: 3, bitDepth: 8, samples: rgb),
                          to: root.appendingPathComponent("images/s\(i).png").path)
            if i < count {
                try PNG.write(try Image(width: size, height: size, channels: 1, bitDepth: 8, samples: mask),
                              to: root.appendingPathComponent("masks/s\(i).png").path)
            }
        }
        return try Dataset.open(path: root.path)
    }
}

/// Delegates to a method, raising SIGINT during step `stopAt`: the trainer saves after that step and stops.
final class InterruptedMethod: TrainingMethod {
    let inner: any TrainingMethod
    let stopAt: Int?

    init(_ inner: any TrainingMethod, stopAt: Int?) {
        self.inner = inner
        self.stopAt = stopAt
    }

    var lossTerms: [String] { inner.lossTerms }
    var dataNeeds: DataNeeds { inner.dataNeeds }
    var evaluatedModel: any SegmentationModel { inner.evaluatedModel }
    var components: [String: any CheckpointableState] { inner.components }
    var learningRate: Float { inner.learningRate }

    func step(_ batch: MethodBatch, context: StepContext) throws -> [String: Float] {
        if context.step == stopAt { raise(SIGINT) }
        return try inner.step(batch, context: context)
    }
}

extension XCTestCase {
    /// `request` (its method, preset and options, in a fresh folder) stopped by SIGINT during step `stopAt` and run
    /// again ends as an uninterrupted run in another folder, bit for bit: the validation history, the evaluated
    /// model and every checkpointed component (networks, optimizers, EMA, random generators, the method's state).
    /// Returns the resumed run's method.
    @discardableResult
    func assertResumesBitForBit(_ request: TrainingRequest, dataset: Dataset, stopAt: Int,
                                file: StaticString = #filePath, line: UInt = #line) throws -> any TrainingMethod {
        func train(in folder: String, stopAt: Int?) throws -> (TrainingResult, any TrainingMethod) {
            var session = TrainingSession(directory: folder)
            session.progress = .none
            var method: (any TrainingMethod)?
            let result = try MethodTrainer.train(plan: try MethodTraining.plan(for: request), dataset: dataset,
                                                 session: session) { setup in
                method = try MethodRegistry.method(named: request.method).make(request.preset, request.methodOptions,
                                                                              setup)
                return InterruptedMethod(method!, stopAt: stopAt)
            }
            return (result, method!)
        }
        let name = request.method
        let (whole, wholeMethod) = try train(in: try temporaryFolder().path, stopAt: nil)
        let (stopped, _) = try train(in: request.directory, stopAt: stopAt)
        XCTAssertEqual(stopped.outcome, .interrupted(signal: SIGINT), name, file: file, line: line)
        XCTAssertEqual(stopped.steps, stopAt + 1, name, file: file, line: line)
        let (resumed, resumedMethod) = try train(in: request.directory, stopAt: nil)
        XCTAssertEqual(resumed.outcome, .completed, name, file: file, line: line)
        XCTAssertEqual(resumed.history, whole.history, name, file: file, line: line)
        var states = [("evaluated", wholeMethod.evaluatedModel as CheckpointableState,
                       resumedMethod.evaluatedModel as CheckpointableState)]
        for key in wholeMethod.components.keys.sorted() {
            states.append((key, wholeMethod.components[key]!, try XCTUnwrap(resumedMethod.components[key])))
        }
        for (key, a, b) in states {
            let x = try a.checkpointState(), y = try b.checkpointState()
            XCTAssertEqual(x.tensors.keys.filter { x.tensors[$0] != y.tensors[$0] }.sorted(), [], "\(name) \(key)",
                           file: file, line: line)
            XCTAssertEqual(x.metadata, y.metadata, "\(name) \(key)", file: file, line: line)
        }
        return resumedMethod
    }
}

import Foundation
import XCTest
import HistoCore
import HistoNN

private final class TinyNet: Module {
    let body: Linear
    let dropout: Dropout
    let head: Linear
    let runningMean: ModuleBuffer

    init(seed: UInt64, dropoutGenerator: RandomGenerator, classes: Int = 2) {
        let g = RandomGenerator(seed: seed)
        body = Linear(4, 8, generator: g)
        dropout = Dropout(0.25, generator: dropoutGenerator)
        head = Linear(8, classes, generator: g)
        runningMean = ModuleBuffer([Float](repeating: 0, count: 8), shape: [8])
        super.init()
    }

    func callAsFunction(_ x: Tensor) -> Tensor { head(dropout(body(x).relu())) }
}

final class CheckpointTests: XCTestCase {
    private var fixtureTensors: [(name: String, tensor: HostTensor)] {
        (Fixtures.section("safetensors")["tensors"] as! [[String: Any]]).map {
            ($0["name"] as! String, HostTensor(shape: ints($0["shape"]), values: floats($0["values"])))
        }
    }
    private var fixtureMetadata: [String: String] { Fixtures.section("safetensors")["metadata"] as! [String: String] }

    func testSwiftWritesTheBytesPythonWritesAndReadsThem() throws {
        let python = try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("python_written.safetensors")))
        let swift = try SafeTensors.serialize(fixtureTensors, metadata: fixtureMetadata)
        XCTAssertEqual(swift, python, "the Swift writer must produce the bytes tools/fixtures_nn.py writes by the spec")

        let file = try SafeTensors.read(Fixtures.path("python_written.safetensors"))
        XCTAssertEqual(file.metadata, fixtureMetadata)
        XCTAssertEqual(file.names, ["encoder.conv.weight", "b", "scalar", "empty", "Zeta/with slash"])
        for (name, t) in fixtureTensors {
            XCTAssertEqual(file.tensors[name]?.shape, t.shape, name)
            XCTAssertEqual(bits(file.tensors[name]?.values ?? []), bits(t.values), name)
        }
    }

    func testReaderConvertsOtherDtypes() throws {
        let file = try SafeTensors.read(Fixtures.path("python_dtypes.safetensors"))
        let expected = Fixtures.section("safetensors")["dtypes"] as! [String: [String: Any]]
        for (name, e) in expected {
            XCTAssertEqual(file.tensors[name]?.shape, ints(e["shape"]), name)
            XCTAssertEqual(file.tensors[name]?.values, floats(e["values"]), name)
        }
        XCTAssertEqual(file.dtypes["half"], "F16")
        XCTAssertEqual(file.dtypes["bf"], "BF16")
    }

    func testRoundTripIsExactAndAtomic() throws {
        let dir = try temporaryDirectory()
        let path = dir + "/weights.safetensors"
        let tensors: [(name: String, tensor: HostTensor)] = [
            ("w", HostTensor(shape: [2, 2], values: [.pi, -0, .leastNonzeroMagnitude, .greatestFiniteMagnitude])),
            ("nan", HostTensor(shape: [1], values: [.nan])),
        ]
        try SafeTensors.write(tensors, metadata: ["k": "v"], to: path)
        try SafeTensors.write(tensors, to: path) // replaces the file
        let back = try SafeTensors.read(path)
        XCTAssertEqual(bits(back.tensors["w"]!.values), bits(tensors[0].tensor.values))
        XCTAssertTrue(back.tensors["nan"]!.values[0].isNaN)
        XCTAssertEqual(back.metadata, [:])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["weights.safetensors"], "no temporary files left")
        assertFileError(dir + "/x.safetensors", contains: ["used twice", "3 values for shape [2]"]) {
            try SafeTensors.write([("a", HostTensor(shape: [2], values: [1, 2, 3])), ("a", HostTensor(shape: [], values: [1]))],
                                  to: dir + "/x.safetensors")
        }
    }

    /// A file whose header is `json` followed by `data`.
    private func file(_ json: String, data: [UInt8] = [], headerLength: UInt64? = nil) -> Data {
        var out = Data()
        withUnsafeBytes(of: (headerLength ?? UInt64(json.utf8.count)).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: Array(json.utf8))
        out.append(contentsOf: data)
        return out
    }

    func testCorruptFilesAreReportedWithTheFileName() throws {
        let dir = try temporaryDirectory()
        let good = try SafeTensors.serialize(fixtureTensors, metadata: fixtureMetadata)
        let cases: [(String, Data, [String])] = [
            ("short", good.prefix(5), ["truncated", "5 bytes"]),
            ("truncated_header", good.prefix(40), ["truncated", "runs past the end of the file (40 bytes)"]),
            ("truncated_data", good.prefix(good.count - 3), ["run past the end of the data", "may be truncated"]),
            ("huge_header", file("{}", headerLength: 1 << 40), ["exceeds the limit"]),
            ("bad_json", file("{\"a\": [1, 2"), ["not valid JSON"]),
            ("not_object", file("[1, 2]"), ["not a JSON object"]),
            ("bad_metadata", file("{\"__metadata__\":{\"k\":3}}"), ["__metadata__ value for k is not a string"]),
            ("dtype", file("{\"x\":{\"dtype\":\"C64\",\"shape\":[1],\"data_offsets\":[0,8]}}", data: Array(repeating: 0, count: 8)),
             ["tensor x has unsupported dtype C64"]),
            ("size", file("{\"x\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", data: Array(repeating: 0, count: 24)),
             ["tensor x of shape [2, 3] (F32) does not fit its data_offsets [0, 20]"]),
            ("range", file("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", data: Array(repeating: 0, count: 12)),
             ["tensor x: data_offsets [8, 16] run past the end of the data (12 bytes"]),
            ("overlap", file("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"y\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                             data: Array(repeating: 0, count: 8)), ["tensors x [0, 8] and y [4, 8] overlap"]),
            ("offsets", file("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4]}}"), ["tensor x: data_offsets is missing"]),
            ("shape", file("{\"x\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}"), ["tensor x: shape is missing"]),
        ]
        for (name, bytes, fragments) in cases {
            let path = "\(dir)/\(name).safetensors"
            try bytes.write(to: URL(fileURLWithPath: path))
            assertFileError(path, contains: fragments) { _ = try SafeTensors.read(path) }
        }
        assertFileError(dir + "/absent.safetensors", contains: ["cannot be read"]) {
            _ = try SafeTensors.read(dir + "/absent.safetensors")
        }
    }

    func testModuleLoadListsEveryOffendingName() throws {
        let dir = try temporaryDirectory()
        let path = dir + "/tiny.safetensors"
        let source = TinyNet(seed: 1, dropoutGenerator: RandomGenerator(seed: 0))
        try source.save(to: path, metadata: ["epoch": "3"])
        XCTAssertEqual(try SafeTensors.read(path).metadata, ["epoch": "3"])

        let target = TinyNet(seed: 2, dropoutGenerator: RandomGenerator(seed: 0))
        let report = try target.load(from: path)
        XCTAssertEqual(report.loaded, ["body.weight", "body.bias", "head.weight", "head.bias", "runningMean"])
        for (a, b) in zip(source.stateTensors(), target.stateTensors()) {
            XCTAssertEqual(bits(try a.tensor.values()), bits(try b.tensor.values()), a.name)
        }

        // A 5-class head: shape mismatches are errors unless the head is ignored (fine-tuning).
        let fineTune = TinyNet(seed: 3, dropoutGenerator: RandomGenerator(seed: 0), classes: 5)
        let headBefore = try fineTune.head.weight.values()
        assertFileError(path, contains: ["2 shape mismatches", "head.weight (file [2, 8], model [5, 8])", "head.bias (file [2], model [5])"]) {
            try fineTune.load(from: path)
        }
        let partial = try fineTune.load(from: path, ignoring: ["head"])
        XCTAssertEqual(partial.ignored.sorted(), ["head.bias", "head.weight"])
        XCTAssertEqual(try fineTune.head.weight.values(), headBefore)
        XCTAssertEqual(try fineTune.body.weight.values(), try source.body.weight.values())

        // Unknown and missing names, all listed; non-strict loads what matches.
        var renamed = try SafeTensors.read(path).tensors
        renamed["extra.weight"] = renamed.removeValue(forKey: "body.weight")
        renamed["other"] = renamed.removeValue(forKey: "runningMean")
        let fresh = TinyNet(seed: 4, dropoutGenerator: RandomGenerator(seed: 0))
        let freshBody = try fresh.body.weight.values()
        assertFileError("renamed", contains: ["2 missing: body.weight, runningMean", "2 unknown: extra.weight, other"]) {
            try fresh.load(renamed, source: "renamed")
        }
        XCTAssertNotEqual(try fresh.head.weight.values(), try source.head.weight.values(), "a failed load changes nothing")
        let loose = try fresh.load(renamed, source: "renamed", strict: false)
        XCTAssertEqual(loose.missing, ["body.weight", "runningMean"])
        XCTAssertEqual(loose.unexpected, ["extra.weight", "other"])
        XCTAssertEqual(try fresh.body.weight.values(), freshBody)
        XCTAssertEqual(try fresh.head.weight.values(), try source.head.weight.values())
    }

    /// One training step of the tiny net: cross-entropy-free squared loss on fixed data, dropout active.
    private func trainStep(_ net: TinyNet, _ optimizer: any Optimizer, _ ema: ExponentialMovingAverage,
                           _ schedule: any LearningRateSchedule) throws {
        let x = Tensor((0..<12).map { Foundation.sin(Float($0)) }, shape: [3, 4])
        let y = Tensor([1, 0, 0, 1, 1, 1], shape: [3, 2])
        let loss = (net(x) - y).square().mean()
        var (_, grads) = try Gradients.of(loss, wrt: net.trainableParameters())
        grads.clipByGlobalNorm(0.5)
        optimizer.learningRate = schedule.learningRate(at: optimizer.stepCount)
        try optimizer.step(grads)
        try ema.update(from: net)
        net.runningMean.assign(try (net.runningMean.value * 0.9 + 0.1).toArray())
    }

    private func makeRun(seed: UInt64) -> (TinyNet, RandomGenerator, Lookahead, ExponentialMovingAverage) {
        let rng = RandomGenerator(seed: 99)
        let net = TinyNet(seed: seed, dropoutGenerator: rng)
        let radam = RAdam(ParameterGroup.weightDecaySplit(net.trainableParameters(), weightDecay: 1e-2),
                          learningRate: 1e-2, decoupledWeightDecay: true)
        let optimizer = Lookahead(radam, k: 2, alpha: 0.5)
        let ema = ExponentialMovingAverage(tracking: net, decay: 0.9, warmup: .meanTeacher)
        return (net, rng, optimizer, ema)
    }

    func testResumeIsBitExact() throws {
        let schedule = LinearWarmup(steps: 2, startFactor: 0.5, then: CosineSchedule(base: 1e-2, totalSteps: 10))
        let (straight, _, straightOptimizer, straightEMA) = makeRun(seed: 5)
        for _ in 0..<7 { try trainStep(straight, straightOptimizer, straightEMA, schedule) }

        let dir = try temporaryDirectory()
        let (first, firstRNG, firstOptimizer, firstEMA) = makeRun(seed: 5)
        for _ in 0..<3 { try trainStep(first, firstOptimizer, firstEMA, schedule) }
        try TrainingCheckpoint.save(to: dir, model: first, step: firstOptimizer.stepCount,
                                    components: ["optimizer": firstOptimizer, "ema": firstEMA, "dropout_rng": firstRNG],
                                    metadata: ["config": "tiny"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).sorted(),
                       [TrainingCheckpoint.weightsFileName, TrainingCheckpoint.stateFileName])

        // Fresh objects with a different init: everything must come from the checkpoint.
        let (resumed, resumedRNG, resumedOptimizer, resumedEMA) = makeRun(seed: 6)
        let (step, metadata) = try TrainingCheckpoint.load(
            from: dir, model: resumed, components: ["optimizer": resumedOptimizer, "ema": resumedEMA, "dropout_rng": resumedRNG])
        XCTAssertEqual(step, 3)
        XCTAssertEqual(metadata, ["config": "tiny"])
        XCTAssertEqual(resumedOptimizer.stepCount, 3)
        XCTAssertEqual(resumedRNG.offset, firstRNG.offset)
        for _ in 0..<4 { try trainStep(resumed, resumedOptimizer, resumedEMA, schedule) }

        for (a, b) in zip(straight.stateTensors(), resumed.stateTensors()) {
            XCTAssertEqual(bits(try a.tensor.values()), bits(try b.tensor.values()), "model \(a.name)")
        }
        for (a, b) in zip(straightEMA.shadows, resumedEMA.shadows) {
            XCTAssertEqual(bits(try a.parameter.values()), bits(try b.parameter.values()), "ema \(a.name)")
        }
        let straightState = try straightOptimizer.checkpointState(), resumedState = try resumedOptimizer.checkpointState()
        XCTAssertEqual(Set(straightState.tensors.keys), Set(resumedState.tensors.keys))
        for (key, t) in straightState.tensors { XCTAssertEqual(bits(t.values), bits(resumedState.tensors[key]!.values), key) }
        XCTAssertEqual(straightState.metadata, resumedState.metadata)
    }

    func testTrainingCheckpointMismatchesAreErrors() throws {
        let dir = try temporaryDirectory()
        let (net, rng, optimizer, ema) = makeRun(seed: 5)
        try trainStep(net, optimizer, ema, ConstantSchedule(1e-3))
        try TrainingCheckpoint.save(to: dir, model: net, step: 1, components: ["optimizer": optimizer, "rng": rng])
        let statePath = dir + "/" + TrainingCheckpoint.stateFileName

        let (other, otherRNG, otherOptimizer, _) = makeRun(seed: 6)
        assertFileError(statePath, contains: ["1 missing components: ema"]) {
            _ = try TrainingCheckpoint.load(from: dir, model: other, components: ["optimizer": otherOptimizer, "rng": otherRNG, "ema": ema])
        }
        let sgd = SGD([ParameterGroup(other.trainableParameters())], learningRate: 0.1)
        assertFileError(statePath + " [optimizer]", contains: ["holds Lookahead optimizer state, not SGD"]) {
            _ = try TrainingCheckpoint.load(from: dir, model: other, components: ["optimizer": sgd, "rng": otherRNG])
        }
        assertFileError(statePath + " [rng]", contains: ["saved with seed 99, but this generator has seed 1"]) {
            _ = try TrainingCheckpoint.load(from: dir, model: other, components: ["optimizer": otherOptimizer, "rng": RandomGenerator(seed: 1)])
        }
        // A torn pair: the weights of another save.
        let otherDir = try temporaryDirectory()
        try TrainingCheckpoint.save(to: otherDir, model: net, step: 2, components: ["optimizer": optimizer, "rng": rng])
        try FileManager.default.removeItem(atPath: dir + "/" + TrainingCheckpoint.weightsFileName)
        try FileManager.default.copyItem(atPath: otherDir + "/" + TrainingCheckpoint.weightsFileName,
                                         toPath: dir + "/" + TrainingCheckpoint.weightsFileName)
        assertFileError(statePath, contains: ["belongs to a different save", "torn"]) {
            _ = try TrainingCheckpoint.load(from: dir, model: other, components: ["optimizer": otherOptimizer, "rng": otherRNG])
        }
    }
}

import Foundation
import XCTest
import HistoCore
@testable import HistoData
import HistoDiffusion
import HistoNN
@testable import HistoMethods

/// PathSegDiff (SPEC §4): the FCN head and the weighted CE against the PyTorch float64 reference
/// (tools/pathsegdiff_reference.py), the paper head's size, and the frozen tile features.
final class PathSegDiffTests: XCTestCase {
    struct Reference {
        static let path = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
            .appendingPathComponent("pathsegdiff_head.safetensors").path
        let tensors: [String: HostTensor]
        let metadata: [String: String]

        init() throws { (tensors, metadata) = try { ($0.tensors, $0.metadata) }(SafeTensors.read(Self.path)) }

        func tensor(_ name: String) -> Tensor { tensors[name]!.tensor }
    }

    func testHeadAndWeightedCrossEntropyMatchTheReference() throws {
        let reference = try Reference()
        let widths = reference.metadata["widths"]!.split(separator: ",").map { Int($0)! }
        let features = reference.tensor("input.features")
        let head = PathSegDiffHead(.init(featureChannels: features.shape[1], widths: widths,
                                         classes: Int(reference.metadata["classes"]!)!),
                                   generator: RandomGenerator(seed: 0))
        let initial = Dictionary(uniqueKeysWithValues: reference.tensors.filter { $0.key.hasPrefix("initial.") }
            .map { (String($0.key.dropFirst("initial.".count)), $0.value) })
        try head.load(initial, source: Reference.path)
        head.train(true)
        let input = Parameter(features)
        let labels = reference.tensor("input.labels")
        let weights = WeightedCrossEntropy.classWeights(labels: try labels.toArray(),
                                                        classes: head.configuration.classes)
        XCTAssertLessThan(relativeError(weights, reference.tensors["class_weights"]!.values), 1e-6)
        let logits = head(input.value)
        let loss = try WeightedCrossEntropy.loss(logits: logits, labels: labels, on: CPUBackend.shared)
        let parameters = head.parameters()
        let (value, gradients) = try Gradients.of(loss, wrt: [input] + parameters.map(\.parameter),
                                                  alongside: [logits])
        print("pathsegdiff head: loss ours \(value) reference \(reference.tensors["loss"]!.values[0])")
        XCTAssertEqual(value, reference.tensors["loss"]!.values[0], accuracy: 1e-5)
        XCTAssertLessThan(relativeError(try logits.toArray(), reference.tensors["logits"]!.values), 1e-5)
        // The biases of the layers before a BatchNorm have a zero gradient in exact arithmetic (the norm removes
        // them): ours must be float32 rounding of zero, relative to the largest gradient.
        let largest = reference.tensors.filter { $0.key.hasPrefix("grad.") }.values
            .map { $0.values.map(abs).max()! }.max()!
        let normalised: Set = ["convIn.bias", "up1.bias", "up2.bias"]
        var worst: (Float, String) = (relativeError(gradients[input]!, reference.tensors["grad.features"]!.values),
                                      "features")
        for (name, parameter) in parameters {
            if normalised.contains(name) {
                XCTAssertLessThan(gradients[parameter]!.map(abs).max()!, 1e-5 * largest, name)
                continue
            }
            let error = relativeError(gradients[parameter]!, reference.tensors["grad." + name]!.values)
            if error > worst.0 { worst = (error, name) }
        }
        print("pathsegdiff head: largest relative gradient error \(worst.0) (\(worst.1))")
        XCTAssertLessThan(worst.0, 1e-4, worst.1)
    }

    func testPaperHeadHasTheSpecParameterCount() {
        let head = PathSegDiffHead(.paper(classes: 6), generator: RandomGenerator(seed: 0))
        XCTAssertEqual(head.parameterCount(), 17_470_150)
    }

    func testClassWeightsOfASingleClassBatchArePlainCrossEntropy() {
        XCTAssertEqual(WeightedCrossEntropy.classWeights(labels: [1, 1, 255, 1], classes: 3), [1, 1, 1])
        XCTAssertEqual(WeightedCrossEntropy.classWeights(labels: [0, 1, 1, 1, 255], classes: 2), [0.75, 0.25])
    }

    /// A latent diffusion run of random weights, small enough for 768² inputs in a unit test: an 8-channel f4
    /// autoencoder and an 8-channel 4-level UNet (12 output blocks, as the presets).
    static func tinyRun() throws -> DiffusionRun {
        let autoencoder = try AutoencoderKL(.init(channels: 8, channelMultipliers: [1, 1, 1], resBlocksPerLevel: 1,
                                                  latentChannels: 3, normGroups: 4),
                                            generator: RandomGenerator(seed: 1))
        let unet = try GuidedUNet(.init(inChannels: 3, outChannels: 3, modelChannels: 8, channelMult: [1, 1, 1, 1],
                                        numResBlocks: 2, attentionResolutions: [8], heads: .channels(8), normGroups: 4),
                                  generator: RandomGenerator(seed: 2))
        let spec = DiffusionModelSpec(family: "guided", preset: "cpu", recipe: .vCosine,
                                      latent: .init(scaleFactor: 0.8, posterior: .mean, source: "random"))
        return try DiffusionRun(spec: spec, model: unet,
                                latentSpace: LatentSpace(autoencoder: autoencoder, scaleFactor: 0.8, posterior: .mean))
    }

    /// The 3×3 tiles of a 768² image: the features of the whole image, at each tile's place, equal the features of
    /// that tile computed alone (SPEC §4's tile context; noise shared, nothing crosses tile borders).
    func testTileFeaturesOfALargeImageEqualEachTileAlone() throws {
        let features = try PathSegDiffFeatures(run: Self.tinyRun(), tile: 256, noiseSeed: 3)
        XCTAssertEqual(features.channels, 13 * 8)
        let image = try RandomGenerator(seed: 4).uniform([1, 3, 768, 768], -1, 1).materialized()
        let whole = try features(image).materialized()
        XCTAssertEqual(whole.shape, [1, 104, 192, 192])
        var worst: Float = 0
        for (row, column) in [(0, 0), (1, 2), (2, 1)] {
            let tile = image.slice(axis: 2, start: 256 * row, end: 256 * (row + 1))
                .slice(axis: 3, start: 256 * column, end: 256 * (column + 1))
            let alone = try features.ofTiles(tile).toArray()
            let placed = try whole.slice(axis: 2, start: 64 * row, end: 64 * (row + 1))
                .slice(axis: 3, start: 64 * column, end: 64 * (column + 1)).toArray()
            worst = max(worst, relativeError(placed, alone))
        }
        print("pathsegdiff tiles: largest relative difference, whole image vs tile alone: \(worst)")
        XCTAssertLessThan(worst, 1e-5)
    }

    /// With a cache, tile features equal the computed ones, each distinct tile is one file named by its pixels,
    /// and a later call reads the files (a file changed on disk changes what it returns).
    func testCachedTileFeaturesEqualComputedOnesAndAreReadBack() throws {
        let run = try Self.tinyRun()
        let computed = try PathSegDiffFeatures(run: run, tile: 32, noiseSeed: 3)
        let cached = try PathSegDiffFeatures(run: run, tile: 32, noiseSeed: 3)
        let folder = try temporaryFolder().path
        try cached.useCache(directory: folder, backend: CPUBackend.shared)
        let tile = try RandomGenerator(seed: 4).uniform([1, 3, 32, 32], -1, 1).materialized()
        let other = try RandomGenerator(seed: 5).uniform([1, 3, 32, 32], -1, 1).materialized()
        // A 64×64 image of tiles [tile other; other tile]: two distinct tiles.
        let image = Tensor.concat([Tensor.concat([tile, other], axis: 3), Tensor.concat([other, tile], axis: 3)],
                                  axis: 2)
        let expected = try computed(image).toArray()
        XCTAssertLessThan(relativeError(try cached(image).toArray(), expected), 1e-6)
        let store = try XCTUnwrap(cached.cache?.store)
        let files = try FileManager.default.contentsOfDirectory(atPath: store.directory).sorted()
        let tileFile = PathSegDiffFeatures.contentID(try tile.toArray()[...]) + ".safetensors"
        XCTAssertEqual(files.count, 2)
        XCTAssertTrue(files.contains(tileFile))
        let path = store.directory + "/" + tileFile
        let written = try SafeTensors.read(path)
        try SafeTensors.write(written.tensors.sorted { $0.key < $1.key }.map {
            (name: $0.key, tensor: HostTensor(shape: $0.value.shape, values: $0.value.values.map { $0 * 2 }))
        }, metadata: written.metadata, to: path)
        let again = try cached(tile).toArray()
        let alone = try computed(tile).toArray()
        XCTAssertLessThan(relativeError(again, alone.map { $0 * 2 }), 1e-6, "the second call reads the file")
    }

    /// The step's augmentation turns and flips each crop's features and labels alike, drawn from the crop's own
    /// stream: equal inputs stay equal, and the draws vary over crops.
    func testDihedralAugmentationMovesFeaturesAndLabelsTogether() throws {
        let values: [Float] = (0..<(8 * 36)).map { (p: Int) -> Float in Float((p * 7 + p / 5) % 3) }
        let labels = Tensor(values, shape: [8, 6, 6])
        let items = (0..<8).map { BatchItem(name: "c\($0)", datasetIndex: 0, epoch: 2, position: $0, y: 0, x: 0) }
        let (features, turned) = PathSegDiffMethod.dihedral(labels.reshape([8, 1, 6, 6]), labels, items: items,
                                                            seed: 7)
        XCTAssertEqual(features.shape, [8, 1, 6, 6])
        XCTAssertEqual(try features.reshape([8, 6, 6]).toArray(), try turned.toArray())
        let before = try labels.toArray(), after = try turned.toArray()
        let changed = (0..<8).filter { (i: Int) -> Bool in
            let crop = (i * 36)..<((i + 1) * 36)
            return before[crop] != after[crop]
        }
        XCTAssertGreaterThan(changed.count, 3, "most of 8 crops are turned or flipped")
        let (_, same) = PathSegDiffMethod.dihedral(labels.reshape([8, 1, 6, 6]), labels, items: items, seed: 7)
        XCTAssertEqual(try same.toArray(), after)
    }

    func testFeaturesUseTheLDMLinearScheduleAtFifty() {
        XCTAssertEqual(PathSegDiffFeatures.ldmAlphaBars[PathSegDiffFeatures.timestep], 0.916687, accuracy: 1e-6)
    }

    /// A `histodiff pretrain --autoencoder` run folder of random `cpu` networks (guided UNet, autoencoder).
    static func writeLatentRun(to directory: String) throws -> String {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let spec = DiffusionModelSpec(family: "guided", preset: "cpu", recipe: .vCosine,
                                      latent: .init(scaleFactor: 0.8, posterior: .mean, source: "random"))
        try spec.write(toDirectory: directory)
        try GuidedUNet(.cpu, generator: RandomGenerator(seed: 2))
            .save(to: directory + "/" + DiffusionRun.weightsFileName)
        try AutoencoderKL(.cpu, generator: RandomGenerator(seed: 1))
            .saveWithPreset(to: directory + "/" + DiffusionRun.autoencoderFileName)
        return directory
    }

    /// `train --method pathsegdiff` trains only the head, and its run segments again through its card (the
    /// frozen run reloaded from the path the card records).
    func testTrainingARunAndReloadingItThroughItsCard() throws {
        let root = try temporaryFolder().path
        let dataset = try syntheticDataset(count: 4, size: 64)
        var request = TrainingRequest(method: "pathsegdiff", data: dataset.root, directory: root + "/run")
        request.methodOptions = ["model": try Self.writeLatentRun(to: root + "/ldm")]
        request.labels = "1/1"
        request.validation = "1/4"
        request.patch = 64
        request.batch = 2
        request.iterations = 2
        request.progress = .none
        let result = try MethodTraining.run(request)
        let segmenter = try XCTUnwrap(result.model as? PathSegDiffSegmenter)
        XCTAssertEqual(segmenter.features.channels, 13 * 32)
        XCTAssertEqual(Set(segmenter.trainableParameters().map(ObjectIdentifier.init)),
                       Set(segmenter.head.parameters().map { ObjectIdentifier($0.parameter) }))
        let loaded = try TrainedModel(path: root + "/run")
        XCTAssertEqual(loaded.card.pathSegDiff?.tile, 64)
        let x = try RandomGenerator(seed: 9).uniform([1, 3, 64, 128], -1, 1).materialized()
        let reloaded = try loaded.network(x).toArray()
        XCTAssertLessThan(relativeError(reloaded, try result.model(x).toArray()), 1e-6,
                          "the trained model (cached features) and the reloaded one (computed) agree")
        let cache = root + "/ldm/feature-cache"
        XCTAssertEqual(loaded.card.pathSegDiff?.cache, URL(fileURLWithPath: cache).standardizedFileURL.path)
        XCTAssertNil((loaded.network as? PathSegDiffSegmenter)?.features.cache, "segment computes")
        let scoring = try ImageSegmenter.ofRun(at: root + "/run", cachingFeatures: true)
        XCTAssertEqual((scoring.model.network as? PathSegDiffSegmenter)?.features.cache?.store.directory
                        .hasPrefix(URL(fileURLWithPath: cache).standardizedFileURL.path), true, "experiment reads it")
        let cached = try FileManager.default.subpathsOfDirectory(atPath: cache).filter { $0.hasSuffix(".safetensors") }
        XCTAssertFalse(cached.isEmpty, "training kept its tiles' features in the model's run folder")
        request.directory = root + "/run-without-cache"
        request.methodOptions["cache"] = "off"
        _ = try MethodTraining.run(request)
        let after = try FileManager.default.subpathsOfDirectory(atPath: cache).filter { $0.hasSuffix(".safetensors") }
        XCTAssertEqual(after.count, cached.count, "cache=off writes nothing")
        XCTAssertNil(try TrainedModel(path: request.directory).card.pathSegDiff?.cache)
        request.methodOptions["cache"] = ""
        XCTAssertThrowsError(try MethodTraining.run(request)) {
            XCTAssertTrue("\($0)".contains("--option cache: is empty; give a folder, or off"), "\($0)")
        }
    }
}

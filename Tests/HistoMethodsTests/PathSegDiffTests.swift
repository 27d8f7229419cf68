import Foundation
import XCTest
import HistoCore
import HistoData
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
        XCTAssertEqual(try loaded.network(x).toArray(), try result.model(x).toArray())
    }
}

import Foundation
import HistoCore
import HistoNN

// Diffusion features (SPEC §1 step 2, §4, §9.2): a frozen denoiser run once per timestep on clean or noised
// images, with named intermediate outputs recorded during the forward pass, optionally resized and concatenated.

/// Collects named intermediate outputs during one forward pass. A model's forward calls `record` at every point
/// it can name (its `featureBlockNames`); only the requested names are kept. Created per pass, so nothing global
/// is involved and concurrent passes do not interfere.
public final class FeatureRecorder {
    public let requested: Set<String>
    public private(set) var recorded: [String: Tensor] = [:]

    public init<S: Sequence>(_ names: S) where S.Element == String { requested = Set(names) }

    public func record(_ name: String, _ tensor: Tensor) {
        if requested.contains(name) { recorded[name] = tensor }
    }
}

/// A denoiser whose forward pass can record named intermediate outputs (the reference's forward-hook points).
/// Names are the reference module paths whose output is recorded (`output_blocks.7`, `mid_block2`, …); every
/// model documents its list.
public protocol FeatureExtractingModel: NoisePredictor {
    /// Every name `forward(_:timesteps:context:recorder:)` records, in forward order.
    var featureBlockNames: [String] { get }
    /// Input heights and widths must be multiples of this (the product of the downsampling strides).
    var inputMultiple: Int { get }
    /// The forward pass; `recorder` (if any) receives the intermediate outputs as they are computed.
    func forward(_ x: Tensor, timesteps: Tensor, context: Tensor?, recorder: FeatureRecorder?) -> Tensor
}

extension FeatureExtractingModel {
    public func callAsFunction(_ x: Tensor, timesteps: Tensor, context: Tensor?) -> Tensor {
        forward(x, timesteps: timesteps, context: context, recorder: nil)
    }

    /// The shape [N, C, H, W] of each named block's output for inputs shaped like `x` (nothing is computed: the
    /// shapes come from recording the forward graph). Unknown names are left out.
    public func featureShapes(_ blocks: [String], for x: Tensor, context: Tensor? = nil) -> [String: [Int]] {
        let recorder = FeatureRecorder(blocks)
        _ = forward(x, timesteps: Tensor.zeros([x.shape.first ?? 1]), context: context, recorder: recorder)
        return recorder.recorded.mapValues(\.shape)
    }
}

/// What the denoiser sees at timestep t when features are extracted.
public enum FeatureInput {
    /// The clean input at every timestep: only the timestep embedding varies (DTSeg's code; SPEC §1, §9.2).
    case clean
    /// x_t = √ᾱ_t·x + √(1 − ᾱ_t)·ε (PathSegDiff, DTSeg's Algorithm 1). ε is drawn from `RandomGenerator(seed:)`,
    /// one [1, C, H, W] draw per timestep in the order given, and shared by every image, so an image's features
    /// do not depend on the batch it comes in. `alphaBar(t)` is ᾱ for the 0-based timestep t.
    case noised(seed: UInt64, alphaBar: (Int) -> Double)
}

/// Feature maps of a batch: for every block, one map per timestep (same order as `timesteps`).
public struct DiffusionFeatures {
    public let blocks: [String]
    public let timesteps: [Int]
    /// block → per-timestep maps [N, C, H, W] (evaluated leaves).
    public let maps: [String: [Tensor]]

    /// The block's maps concatenated over timesteps along channels: [N, C·T, H, W] (DTSeg's F_i).
    public func block(_ name: String) -> Tensor {
        guard let list = maps[name] else {
            return .invalid("diffusion_features", "no block \(name); extracted: \(blocks.joined(separator: ", "))")
        }
        return list.count == 1 ? list[0] : Tensor.concat(list, axis: 1)
    }

    /// Every block in `blocks` order, each concatenated over timesteps, concatenated along channels (PathSegDiff's
    /// 7296-channel stack). Needs a common spatial size (extract with an `outputSize`).
    public func stacked() -> Tensor {
        blocks.count == 1 ? block(blocks[0]) : Tensor.concat(blocks.map(block), axis: 1)
    }

    /// Image `index`'s maps as named [C, H, W] tensors, block by block: `<block>.t<T>` for each timestep T, or
    /// with `concatenated` one `<block>` holding the timesteps' maps along channels in `timesteps` order.
    public func namedTensors(image index: Int, concatenated: Bool) throws -> [(name: String, tensor: HostTensor)] {
        try blocks.flatMap { name -> [(name: String, tensor: HostTensor)] in
            let named: [(String, Tensor)] = concatenated ? [(name, block(name))] : zip(timesteps, maps[name] ?? []).map { ("\(name).t\($0)", $1) }
            return try named.map { ($0.0, FeatureExtractor.row(index, of: try HostTensor($0.1))) }
        }
    }
}

/// Where extracted features are kept between runs: one safetensors file per image, `<directory>/<id>.safetensors`,
/// holding the unresized maps as `<block>@<t>` [C, H, W]. A file is reused only when its `signature` metadata
/// equals the extractor's (blocks, timesteps, input, model type and size, and `tag`); otherwise it is rewritten.
public struct FeatureCache {
    public let directory: String
    /// Names the weights the features come from (e.g. a checkpoint path and step): the cache cannot tell two
    /// models of the same architecture apart by itself.
    public let tag: String

    public init(directory: String, tag: String) {
        self.directory = directory
        self.tag = tag
    }

    func path(for id: String) -> String { (directory as NSString).appendingPathComponent(id + ".safetensors") }
}

/// Runs a denoiser once per timestep and returns the named blocks' outputs (SPEC §1 step 2, §4): e.g. DTSeg's
/// `output_blocks.7/8/9` at t = 50, 150, 250 on the clean latent, upsampled to 256², or PathSegDiff's middle and
/// 12 output blocks at t = 50 on the noised latent, resized to 64².
///
/// The model runs in evaluation mode during extraction (dropout off, BatchNorm running statistics) and is put back
/// in the mode it was in. Only the graph up to the requested blocks is evaluated. Results are evaluated leaves
/// without a gradient graph (a frozen extractor).
public struct FeatureExtractor {
    public let model: any FeatureExtractingModel
    public let blocks: [String]
    public let timesteps: [Int]
    public let input: FeatureInput
    /// Bilinear resize (align_corners false) of every map to [H, W]; nil keeps each block's own size.
    public let outputSize: [Int]?

    static let op = "feature_extraction"

    /// Checks the block names against `model.featureBlockNames`, the timesteps and the output size.
    public init(model: any FeatureExtractingModel, blocks: [String], timesteps: [Int], input: FeatureInput = .clean,
                outputSize: [Int]? = nil) throws {
        let known = Set(model.featureBlockNames)
        let unknown = blocks.filter { !known.contains($0) }
        guard unknown.isEmpty else {
            throw EngineError.invalidOp(op: Self.op, message: "unknown block(s) \(unknown.joined(separator: ", ")) for \(type(of: model)); known: \(model.featureBlockNames.joined(separator: ", "))")
        }
        guard !blocks.isEmpty, Set(blocks).count == blocks.count else {
            throw EngineError.invalidOp(op: Self.op, message: "blocks must be a non-empty list without repeats, got \(blocks)")
        }
        guard !timesteps.isEmpty, timesteps.allSatisfy({ $0 >= 0 }) else {
            throw EngineError.invalidOp(op: Self.op, message: "timesteps must be a non-empty list of non-negative integers, got \(timesteps)")
        }
        if case .noised(_, let alphaBar) = input {
            let bad = timesteps.filter { !(alphaBar($0) > 0 && alphaBar($0) <= 1) }
            guard bad.isEmpty else {
                throw EngineError.invalidOp(op: Self.op, message: "ᾱ must lie in (0, 1]; it does not at t = \(bad)")
            }
        }
        if let outputSize {
            guard outputSize.count == 2, outputSize.allSatisfy({ $0 > 0 }) else {
                throw EngineError.invalidOp(op: Self.op, message: "outputSize must be [H, W] with positive sizes, got \(outputSize)")
            }
        }
        self.model = model
        self.blocks = blocks
        self.timesteps = timesteps
        self.input = input
        self.outputSize = outputSize
    }

    /// Features of `images` [N, C, H, W] (C = the model's `imageChannels`); `context` is passed to the model
    /// (cross-attention tokens, or the conditioner map of a `ConditionalUNet`).
    public func callAsFunction(_ images: Tensor, context: Tensor? = nil, on backend: (any Backend)? = nil) throws -> DiffusionFeatures {
        let raw = try rawMaps(images, context: context, on: backend)
        return try finish(raw, on: backend)
    }

    /// Features of `images` with a per-image cache: images whose file in `cache` matches are read, the others are
    /// computed in one batch and written. `ids[i]` names image i's file (a file name without `/`).
    public func callAsFunction(_ images: Tensor, ids: [String], cache: FeatureCache, context: Tensor? = nil,
                               on backend: (any Backend)? = nil) throws -> DiffusionFeatures {
        guard images.rank == 4, ids.count == images.shape[0] else {
            throw EngineError.invalidOp(op: Self.op, message: "\(ids.count) ids for images \(describe(images.shape))")
        }
        return try self(ids: ids, imageShape: Array(images.shape.dropFirst()), cache: cache, on: backend) { missing in
            guard missing.count < ids.count else { return (images, context) }
            let selection = Tensor(missing.map(Float.init), shape: [missing.count])
            return (images.indexSelect(axis: 0, indices: selection),
                    context?.indexSelect(axis: 0, indices: selection))
        }
    }

    /// Features of the images named `ids`, each [`imageShape`], with a per-image cache: files in `cache` that
    /// match are read; `inputs(missing)` gives the images (and context) of the others, in that order, which are
    /// computed in one batch and written. Lets a caller make only the inputs it lacks (PathSegDiff encodes only
    /// the tiles the cache does not hold).
    public func callAsFunction(ids: [String], imageShape: [Int], cache: FeatureCache, on backend: (any Backend)? = nil,
                               inputs: (_ missing: [Int]) throws -> (images: Tensor, context: Tensor?))
        throws -> DiffusionFeatures {
        let badIDs = ids.filter { $0.isEmpty || $0.contains("/") || $0.hasPrefix(".") }
        guard badIDs.isEmpty else {
            throw EngineError.invalidOp(op: Self.op, message: "ids must be plain file names, got \(badIDs)")
        }
        let signature = self.signature(tag: cache.tag, imageShape: imageShape)
        var stored: [[String: HostTensor]?] = ids.map { id in
            guard let file = try? SafeTensors.read(cache.path(for: id)), file.metadata["signature"] == signature
            else { return nil }
            let maps = file.tensors
            return keys.allSatisfy { maps[$0] != nil } ? maps : nil
        }
        let missing = stored.indices.filter { stored[$0] == nil }
        if !missing.isEmpty {
            let (subset, subContext) = try inputs(missing)
            let raw = try rawMaps(subset, context: subContext, on: backend)
            var hostMaps: [String: HostTensor] = [:]
            for (k, key) in keys.enumerated() { hostMaps[key] = try HostTensor(raw[k]) }
            try FileSystem.createFolder(cache.directory, purpose: "feature cache")
            for (row, i) in missing.enumerated() {
                let perImage = keys.map { key in (name: key, tensor: Self.row(row, of: hostMaps[key]!)) }
                try SafeTensors.write(perImage, metadata: ["signature": signature], to: cache.path(for: ids[i]))
                stored[i] = Dictionary(uniqueKeysWithValues: perImage.map { ($0.name, $0.tensor) })
            }
        }
        let batched: [Tensor] = keys.map { key in
            let rows = stored.map { $0![key]! }
            return Tensor(rows.flatMap(\.values), shape: [rows.count] + rows[0].shape)
        }
        return try finish(batched, on: backend)
    }

    /// `<block>@<t>` for every (block, timestep), block-major: the order of `rawMaps`.
    var keys: [String] { blocks.flatMap { b in timesteps.map { "\(b)@\($0)" } } }

    /// The unresized maps, evaluated, in `keys` order: one forward per timestep, all evaluated in one graph run.
    func rawMaps(_ images: Tensor, context: Tensor?, on backend: (any Backend)?) throws -> [Tensor] {
        let maps = try recordedMaps(images, context: context)
        try eval(maps, on: backend)
        return try maps.map { try $0.materialized(on: backend) }
    }

    /// The unresized maps in `keys` order as graph tensors, nothing evaluated: what `rawMaps` evaluates, for a
    /// caller that puts the frozen features inside a larger graph (PathSegDiff's segmenter).
    public func recordedMaps(_ images: Tensor, context: Tensor?) throws -> [Tensor] {
        guard images.rank == 4, images.shape[1] == model.imageChannels else {
            throw EngineError.invalidOp(op: Self.op, message: "images must be [N, \(model.imageChannels), H, W] for \(type(of: model)), got \(describe(images.shape))")
        }
        let wasTraining = model.isTraining
        model.train(false)
        defer { model.train(wasTraining) }
        let n = images.shape[0]
        var perTimestep: [[String: Tensor]] = []
        var noise: RandomGenerator?
        if case .noised(let seed, _) = input { noise = RandomGenerator(seed: seed) }
        for t in timesteps {
            var x = images
            if case .noised(_, let alphaBar) = input, let noise {
                let a = alphaBar(t)
                let epsilon = noise.normal([1] + Array(images.shape.dropFirst()))
                x = images * Float(a.squareRoot()) + epsilon * Float((1 - a).squareRoot())
            }
            let recorder = FeatureRecorder(blocks)
            _ = model.forward(x, timesteps: Tensor.full([n], Float(t)), context: context, recorder: recorder)
            perTimestep.append(recorder.recorded)
        }
        var maps: [Tensor] = []
        for block in blocks {
            for (k, t) in timesteps.enumerated() {
                guard let map = perTimestep[k][block] else {
                    throw EngineError.invalidOp(op: Self.op, message: "\(type(of: model)) did not record \(block) at t = \(t)")
                }
                maps.append(map)
            }
        }
        return maps
    }

    /// `maps` (in `keys` order) resized to `outputSize` when one is set, as graph tensors.
    public func resized(_ maps: [Tensor]) -> [Tensor] {
        guard let outputSize else { return maps }
        return maps.map {
            $0.shape.suffix(2).elementsEqual(outputSize) ? $0
                : $0.interpolateBilinear(size: outputSize, alignCorners: false)
        }
    }

    /// Resizes (if asked) and groups maps given in `keys` order.
    func finish(_ raw: [Tensor], on backend: (any Backend)?) throws -> DiffusionFeatures {
        var resized = raw
        if outputSize != nil {
            resized = self.resized(raw)
            try eval(resized, on: backend)
            resized = try resized.map { try $0.materialized(on: backend) }
        }
        var maps: [String: [Tensor]] = [:]
        for (b, block) in blocks.enumerated() {
            maps[block] = Array(resized[(b * timesteps.count)..<((b + 1) * timesteps.count)])
        }
        return DiffusionFeatures(blocks: blocks, timesteps: timesteps, maps: maps)
    }

    /// What a cache file must have been written with to be reused.
    func signature(tag: String, imageShape: [Int]) -> String {
        let inputDescription: String
        switch input {
        case .clean: inputDescription = "clean"
        case let .noised(seed, alphaBar):
            inputDescription = "noised(seed \(seed), alphaBar \(timesteps.map { String(alphaBar($0)) }.joined(separator: " ")))"
        }
        return "model \(type(of: model)) with \(model.parameterCount()) parameters; tag \(tag); blocks \(blocks.joined(separator: " ")); timesteps \(timesteps.map(String.init).joined(separator: " ")); input \(inputDescription); image \(describe(imageShape))"
    }

    /// Row `index` of a batched host tensor [N, …] as [… ].
    static func row(_ index: Int, of batch: HostTensor) -> HostTensor {
        let size = batch.values.count / max(batch.shape[0], 1)
        return HostTensor(shape: Array(batch.shape.dropFirst()), values: Array(batch.values[(index * size)..<((index + 1) * size)]))
    }
}

import Foundation
import HistoCore
import HistoData
import HistoMetrics

extension TrainingRequest {
    /// The request's data folder read with its target, plus its unlabelled folders, cut into grid crops and then
    /// resized when it or its preset asks.
    public func openDataset() throws -> Dataset {
        let dataset = try Dataset.open(path: data, classes: target).addingUnlabelled(unlabelled)
            .gridCropped(GridCrops(gridCrops))
        return try resizedSide().map { try dataset.resized(to: $0) } ?? dataset
    }

    /// The side images are resized to: `resize`, else the preset's (`TrainingPlan.resize`), else none.
    public func resizedSide() throws -> Int? {
        try resize ?? MethodTraining.plan(for: self).resize
    }
}

extension TrainingSession {
    /// Records a boundary-aware target in `training.json`, the model card and the progress label; a binary run
    /// records nothing, so that runs started before targets existed still resume. `dataset` must have been opened
    /// with that target.
    mutating func record(target: MaskClasses, dataset: Dataset) throws {
        guard dataset.classes == target else {
            throw EngineError.invalidValue(op: "--target", message: "the dataset \(dataset.root) was opened with "
                                           + "\(dataset.classes) but the run asks for \(target)")
        }
        guard case let .boundary(width) = target else { return }
        label += " boundary"
        methodSettings["target"] = "boundary"
        methodSettings["boundary_width"] = String(width)
        modelCard?.boundaryWidth = width
    }

    /// Records `--resize` in `training.json` and the model card, so that inference resizes as training did; a run
    /// without it records nothing, so that runs started before it existed still resume.
    mutating func record(resize side: Int?, dataset: Dataset) throws {
        guard dataset.resizedSide == side else {
            throw EngineError.invalidValue(op: "--resize", message: "the dataset \(dataset.root) was opened with "
                                           + "side \(dataset.resizedSide.map(String.init) ?? "none") but the run asks "
                                           + "for \(side.map(String.init) ?? "none")")
        }
        guard let side else { return }
        methodSettings["resize"] = String(side)
        modelCard?.resize = side
    }

    /// Records `--grid-crops` above 1 in `training.json` and the model card, so that inference cuts images as
    /// training did; whole images record nothing, so that runs started before grid crops existed still resume.
    mutating func record(gridCrops: Int, dataset: Dataset) throws {
        guard dataset.gridCrops?.count ?? 1 == gridCrops else {
            throw EngineError.invalidValue(op: "--grid-crops", message: "the dataset \(dataset.root) was cut into "
                                           + "\(dataset.gridCrops?.count ?? 1) crops per side but the run asks for "
                                           + "\(gridCrops)")
        }
        guard gridCrops > 1 else { return }
        methodSettings["grid_crops"] = String(gridCrops)
        modelCard?.gridCrops = gridCrops
    }
}

/// The instance post-processing of a trained model, chosen on its validation images: every candidate of a small
/// grid (`candidates(for:)`) turns the model's probabilities into instances, and the one of largest AJI, pooled
/// over the images, is written as `postprocess.json` beside the weights, where `TrainedModel` reads it for
/// `segment`, `eval --model` and `experiment`.
public enum InstanceTuning {
    public static let fileName = "postprocess.json"

    /// What `postprocess.json` holds: the chosen parameters and how they were chosen.
    public struct Record: Codable, Equatable, Sendable {
        public let chosen: InstancePostprocessing
        /// Pooled AJI of the chosen parameters and of the untuned defaults on `images`.
        public let aji: Double
        public let defaultsAJI: Double
        public let images: [String]
        public let candidates: Int
    }

    /// The grid for a model of `card`: foreground and seed thresholds and the minimum area. A boundary-aware
    /// model's seeds are p(interior) thresholds; a binary model's are distances to the background in pixels, or
    /// none (its connected components).
    public static func candidates(for card: ModelCard) -> [InstancePostprocessing] {
        let seeds: [Double?] = card.boundaryWidth != nil ? [0.35, 0.5, 0.65, 0.8] : [nil, 1, 2, 3, 4]
        return [0.35, 0.5, 0.65].flatMap { foreground in
            seeds.flatMap { seed in
                [0, 10, 30].map { area in
                    InstancePostprocessing(foregroundThreshold: foreground, seedThreshold: seed, minimumArea: area)
                }
            }
        }
    }

    /// Chooses the post-processing of `segmenter`'s model on the images `names` of `dataset` (their instance maps
    /// where present, else the 8-connected components of their masks) and writes it to the model's folder.
    @discardableResult
    public static func run(_ segmenter: ImageSegmenter, dataset: Dataset, names: [String]) throws -> Record {
        let byName = Dictionary(uniqueKeysWithValues: dataset.items.enumerated().map { ($1.name, $0) })
        var images: [(probabilities: Planes, truth: LabelMap)] = []
        for name in names {
            guard let index = byName[name] else {
                throw EngineError.invalidValue(op: "InstanceTuning",
                                               message: "\(name) is not an image of \(dataset.root)")
            }
            let sample = try dataset.sample(at: index)
            guard let mask = sample.mask else {
                throw EngineError.invalidValue(op: "InstanceTuning", message: "\(name) of \(dataset.root) has no mask")
            }
            let truth = try sample.instances.map(LabelMap.init) ?? LabelMap(mask).connectedComponents().map
            images.append((try segmenter.probabilities(of: sample.image), truth))
        }
        func aji(_ parameters: InstancePostprocessing) throws -> Double {
            try images.map { try AggregatedJaccard.aji(prediction: parameters.instances(of: $0.probabilities),
                                                       truth: $0.truth) }
                .reduce(AggregatedJaccard(intersection: 0, union: 0), +).value
        }
        // Candidates that differ only in their minimum area share one watershed per image.
        func withoutArea(_ parameters: InstancePostprocessing) -> InstancePostprocessing {
            var parameters = parameters
            parameters.minimumArea = 0
            return parameters
        }
        let grid = candidates(for: segmenter.model.card)
        var pooled = [AggregatedJaccard](repeating: AggregatedJaccard(intersection: 0, union: 0), count: grid.count)
        var start = 0
        while start < grid.count {
            let shared = withoutArea(grid[start])
            let group = grid[start...].prefix { withoutArea($0) == shared }
            for image in images {
                let maps = try shared.instances(of: image.probabilities, minimumAreas: group.map(\.minimumArea))
                for (offset, map) in maps.enumerated() {
                    pooled[start + offset] = pooled[start + offset]
                        + (try AggregatedJaccard.aji(prediction: map, truth: image.truth))
                }
            }
            start += group.count
        }
        var best = (parameters: grid[0], aji: -Double.infinity)
        for (parameters, score) in zip(grid, pooled.map(\.value)) where score > best.aji {
            best = (parameters, score)
        }
        // The defaults are a candidate of the grid: their AJI is pooled already.
        let defaults = segmenter.model.card.defaultPostprocessing
        let defaultsAJI = try grid.firstIndex(of: defaults).map { pooled[$0].value } ?? aji(defaults)
        let record = Record(chosen: best.parameters, aji: best.aji, defaultsAJI: defaultsAJI, images: names,
                            candidates: grid.count)
        let path = (segmenter.model.directory as NSString).appendingPathComponent(fileName)
        try MethodTrainer.writeJSON(record, to: path)
        return record
    }

    /// Tunes a finished training run (`MethodTraining.run`) on its validation images (whole images when the run
    /// trained on grid crops of them), segmented by `segmenter`; by default the run's as `segment` segments them
    /// (`ImageSegmenter.ofRun`), with the model's feature cache when it has one.
    @discardableResult
    public static func run(after result: TrainingResult, request: TrainingRequest, dataset: Dataset,
                           segmenter: ImageSegmenter? = nil) throws -> Record {
        let segmenter = try segmenter
            ?? ImageSegmenter.ofRun(at: request.directory, backend: request.backend, cachingFeatures: true)
        let validation = dataset.wholeImages(of: result.split.validation)
        return try run(segmenter, dataset: validation.dataset, names: validation.names)
    }
}

extension ModelCard {
    /// The post-processing before tuning (`InstancePostprocessing.defaults`).
    public var defaultPostprocessing: InstancePostprocessing {
        InstancePostprocessing.defaults(classes: boundaryWidth != nil ? 3 : 2)
    }

    /// What a model of this card uses without `postprocess.json`: the defaults, or nil for a model of more than
    /// two classes without a boundary target, whose classes are not nuclei.
    var untunedPostprocessing: InstancePostprocessing? {
        classes == 2 || boundaryWidth != nil ? defaultPostprocessing : nil
    }
}

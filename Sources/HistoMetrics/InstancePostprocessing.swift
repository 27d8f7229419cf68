import Foundation
import HistoCore
import HistoData

/// Nuclei as instances from a network's class probabilities, the one post-processing of `segment`, `eval --model`
/// and `experiment`. The foreground is 1 − p(background) > `foregroundThreshold`; seeds are the 8-connected
/// components of a seed map of at least `minimumSeedArea` pixels; a marker-controlled watershed (`watershed`) grows
/// them over the foreground; foreground components without a seed become instances of their own (a faint nucleus
/// is kept, not dropped); instances under `minimumArea` pixels are removed. Instances are numbered 1, 2, … in
/// raster order of their first pixel.
///
/// Seeds of a boundary-aware model (3 classes: background, interior, boundary) are p(interior) >
/// `seedThreshold`, flooded over 1 − p(interior): the boundary class is where interior probability is low, so
/// neighbouring seeds meet there (the DCAN / boundary-class approach; flooding the foreground probability instead
/// would split touching nuclei by flood order alone). Seeds of a binary model are the pixels farther than
/// `seedThreshold` pixels from the background, flooded over −distance (the classic distance-transform watershed);
/// `seedThreshold` nil keeps the foreground's 8-connected components as they are.
public struct InstancePostprocessing: Codable, Equatable, Sendable {
    public var foregroundThreshold: Double
    /// p(interior) for 3 classes, pixels of distance to the background for 2; nil: no watershed (2 classes only).
    public var seedThreshold: Double?
    public var minimumSeedArea: Int
    public var minimumArea: Int

    public init(foregroundThreshold: Double = 0.5, seedThreshold: Double? = 0.5, minimumSeedArea: Int = 4,
                minimumArea: Int = 10) {
        self.foregroundThreshold = foregroundThreshold
        self.seedThreshold = seedThreshold
        self.minimumSeedArea = minimumSeedArea
        self.minimumArea = minimumArea
    }

    /// The defaults for a model of `classes` classes before any tuning: argmax-like thresholds; binary models keep
    /// the connected components, as AJI was computed before instance post-processing existed.
    public static func defaults(classes: Int) -> InstancePostprocessing {
        classes == 3 ? InstancePostprocessing() : InstancePostprocessing(seedThreshold: nil, minimumArea: 0)
    }

    /// `"t_fg 0.5, t_seed 0.5, seed ≥ 4 px, area ≥ 10 px"` for logs and reports.
    public var description: String {
        String(format: "t_fg %.2f, t_seed %@, seed ≥ %d px, area ≥ %d px", foregroundThreshold,
               seedThreshold.map { String(format: "%.2f", $0) } ?? "none", minimumSeedArea, minimumArea)
    }

    /// The instance map of class probabilities `[K, H, W]` (K = 2: background, nucleus; K = 3: background,
    /// interior, boundary).
    public func instances(of probabilities: Planes) throws -> LabelMap {
        try instances(of: probabilities, minimumAreas: [minimumArea])[0]
    }

    /// The instance maps of `probabilities` with each of `minimumAreas` in place of `minimumArea`: one watershed
    /// for all of them (instance tuning's grid varies the area last).
    public func instances(of probabilities: Planes, minimumAreas: [Int]) throws -> [LabelMap] {
        let (width, height, classes) = (probabilities.width, probabilities.height, probabilities.channels)
        guard classes == 2 || classes == 3 else {
            throw EngineError.invalidValue(op: "InstancePostprocessing", message:
                "\(classes) classes; nuclei instances come from 2 (background, nucleus) or 3 (…, interior, boundary)")
        }
        if classes == 3 && seedThreshold == nil {
            throw EngineError.invalidValue(op: "InstancePostprocessing", message:
                "a boundary-aware model needs a seed threshold on p(interior)")
        }
        let plane = width * height
        let values = probabilities.values
        let foreground = (0..<plane).map { 1 - Double(values[$0]) > foregroundThreshold }
        var labels = foreground.map { Int32($0 ? 1 : 0) }
        if let seedThreshold {
            let elevation: [Float], seeds: [Bool]
            if classes == 3 {
                elevation = (0..<plane).map { 1 - values[plane + $0] }
                seeds = (0..<plane).map { foreground[$0] && Double(values[plane + $0]) > seedThreshold }
            } else {
                let squared = try squaredEuclideanDistanceTransform(foreground.map(!), width: width, height: height)
                let distance = squared.map { $0.map { Float($0).squareRoot() } }
                    ?? [Float](repeating: Float(width + height), count: plane)  // no background: all far from it
                elevation = distance.map(-)
                seeds = (0..<plane).map { foreground[$0] && Double(distance[$0]) > seedThreshold }
            }
            let markers = Self.removingSmall(InstanceGrid.connectedComponents(seeds.map { $0 ? 1 : 0 },
                                                                               width: width, height: height).labels,
                                             below: minimumSeedArea)
            labels = try watershed(elevation: elevation, markers: markers, mask: foreground,
                                   width: width, height: height)
            // Foreground without a seed: its components become instances, numbered after the seeds.
            let unseeded = InstanceGrid.connectedComponents(
                (0..<plane).map { foreground[$0] && labels[$0] == 0 ? 1 : 0 }, width: width, height: height).labels
            let offset = (labels.max() ?? 0)
            for i in 0..<plane where unseeded[i] > 0 { labels[i] = offset + unseeded[i] }
        } else {
            labels = InstanceGrid.connectedComponents(labels, width: width, height: height).labels
        }
        return try minimumAreas.map {
            try LabelMap(width: width, height: height, labels: Self.removingSmall(labels, below: $0))
        }
    }

    /// `labels` without the instances of fewer than `area` pixels, renumbered 1, 2, … in raster order of their
    /// first pixel.
    static func removingSmall(_ labels: [Int32], below area: Int) -> [Int32] {
        var areas = [Int](repeating: 0, count: Int(max(labels.max() ?? 0, 0)) + 1)
        for label in labels where label > 0 { areas[Int(label)] += 1 }
        var renumbered = [Int32](repeating: 0, count: areas.count)
        var next: Int32 = 1
        return labels.map { label in
            guard label > 0, areas[Int(label)] >= area else { return 0 }
            if renumbered[Int(label)] == 0 {
                renumbered[Int(label)] = next
                next += 1
            }
            return renumbered[Int(label)]
        }
    }
}

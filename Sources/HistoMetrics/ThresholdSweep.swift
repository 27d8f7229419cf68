import HistoCore

/// The binary evaluation protocol of Ciampi et al. (the XNet / companion-repo `evaluate`, SPEC §3): the foreground
/// score s (softmax probability of class 1) is thresholded at each θ of a list, prediction = s > θ, and TP, FP, FN
/// are pooled over every pixel of every image added. The best θ is the first with the largest Jaccard index; it is
/// chosen on validation data and then applied to the test set (`ThresholdSweep(thresholds: [θ])`).
///
/// Comparisons are made in Float32: the scores are Float32, and NumPy 1.x, which the reference code ran on, casts a
/// float64 scalar threshold to the array's float32 type. A Jaccard or Dice whose denominator is 0 is 1
/// (`BinaryCounts.scores`).
public struct ThresholdSweep: Sendable {
    /// `np.arange(0, 0.9, 0.02)`: 0, 0.02, …, 0.88 (45 values, each `i · 0.02` in double precision as NumPy makes them).
    public static let ciampiThresholds: [Double] = (0..<45).map { Double($0) * 0.02 }

    public struct Point: Equatable, Sendable {
        public let threshold: Double
        public let counts: BinaryCounts
        public var jaccard: Double { counts.scores.iou }
        public var dice: Double { counts.scores.dice }
    }

    public let thresholds: [Double]
    /// Pixel counts by the number m of thresholds the score exceeds (bins 0…thresholds.count), for true foreground
    /// and background: a pixel in bin m is predicted foreground at thresholds 0..<m.
    private var foregroundBins: [Int]
    private var backgroundBins: [Int]

    /// `thresholds` must be non-empty, finite and strictly increasing.
    public init(thresholds: [Double] = ThresholdSweep.ciampiThresholds) throws {
        guard !thresholds.isEmpty, thresholds.allSatisfy(\.isFinite),
              zip(thresholds, thresholds.dropFirst()).allSatisfy({ $0 < $1 }) else {
            throw EngineError.invalidValue(op: "ThresholdSweep", message: "thresholds \(thresholds) must be finite, strictly increasing and at least one")
        }
        self.thresholds = thresholds
        foregroundBins = [Int](repeating: 0, count: thresholds.count + 1)
        backgroundBins = foregroundBins
    }

    /// Adds one image: `scores[y * width + x]` against the truth's foreground (label > 0). O(pixels · log thresholds).
    public mutating func add(scores: [Float], truth: LabelMap) throws {
        guard scores.count == truth.labels.count else {
            throw EngineError.invalidValue(op: "ThresholdSweep", message: "\(scores.count) scores for a \(truth.sizeDescription) truth mask")
        }
        if let bad = scores.firstIndex(where: { $0.isNaN }) {
            throw EngineError.invalidValue(op: "ThresholdSweep", message: "score \(bad) (x \(bad % truth.width), y \(bad / truth.width)) is NaN")
        }
        let cuts = thresholds.map(Float.init)  // non-decreasing, as rounding keeps order
        for (score, label) in zip(scores, truth.labels) {
            // m = the number of cuts below the score: the pixel is predicted foreground at thresholds 0..<m.
            var low = 0, high = cuts.count
            while low < high {
                let middle = (low + high) / 2
                if cuts[middle] < score { low = middle + 1 } else { high = middle }
            }
            if label > 0 { foregroundBins[low] += 1 } else { backgroundBins[low] += 1 }
        }
    }

    /// The pooled counts at every threshold.
    public var points: [Point] {
        let foreground = foregroundBins.reduce(0, +), background = backgroundBins.reduce(0, +)
        var truePositives = foreground, falsePositives = background  // pixels exceeding no threshold are removed below
        return thresholds.indices.map { k in
            truePositives -= foregroundBins[k]
            falsePositives -= backgroundBins[k]
            return Point(threshold: thresholds[k],
                         counts: BinaryCounts(truePositives: truePositives, falsePositives: falsePositives,
                                              falseNegatives: foreground - truePositives,
                                              trueNegatives: background - falsePositives))
        }
    }

    /// The first threshold of largest Jaccard index (`np.argmax`).
    public var best: Point {
        points.reduce(nil as Point?) { best, point in
            guard let best, best.jaccard >= point.jaccard else { return point }
            return best
        }!
    }
}

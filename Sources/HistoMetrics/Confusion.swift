import HistoCore

/// One class against the rest: true/false positives and negatives, counted in pixels.
public struct BinaryCounts: Equatable, Sendable {
    public var truePositives: Int
    public var falsePositives: Int
    public var falseNegatives: Int
    public var trueNegatives: Int

    public init(truePositives: Int, falsePositives: Int, falseNegatives: Int, trueNegatives: Int) {
        self.truePositives = truePositives
        self.falsePositives = falsePositives
        self.falseNegatives = falseNegatives
        self.trueNegatives = trueNegatives
    }

    public var total: Int { truePositives + falsePositives + falseNegatives + trueNegatives }

    public static func + (a: BinaryCounts, b: BinaryCounts) -> BinaryCounts {
        BinaryCounts(truePositives: a.truePositives + b.truePositives, falsePositives: a.falsePositives + b.falsePositives,
                     falseNegatives: a.falseNegatives + b.falseNegatives, trueNegatives: a.trueNegatives + b.trueNegatives)
    }

    /// The same pixels counted for the other class (foreground ↔ background): the background's scores of a binary
    /// segmentation, for means over both classes (DTSeg's mIoU with background, SPEC §1).
    public var complement: BinaryCounts {
        BinaryCounts(truePositives: trueNegatives, falsePositives: falseNegatives, falseNegatives: falsePositives,
                     trueNegatives: truePositives)
    }

    /// The scores of these counts. A ratio whose denominator is 0 is 1: nothing to find and nothing found is a
    /// perfect result, as sklearn's `zero_division=1` (GenSelfDiff) and segmentation_models_pytorch's default
    /// (DTSeg) define it. So the Dice of two empty masks is 1.
    public var scores: ClassScores {
        let (tp, fp, fn, tn) = (Double(truePositives), Double(falsePositives), Double(falseNegatives), Double(trueNegatives))
        func ratio(_ numerator: Double, _ denominator: Double) -> Double { denominator == 0 ? 1 : numerator / denominator }
        return ClassScores(dice: ratio(2 * tp, 2 * tp + fp + fn), iou: ratio(tp, tp + fp + fn),
                           precision: ratio(tp, tp + fp), sensitivity: ratio(tp, tp + fn),
                           specificity: ratio(tn, tn + fp), accuracy: ratio(tp + tn, tp + fp + fn + tn))
    }
}

/// The scores of one class. On hard masks F1 equals Dice and Jaccard equals IoU.
public struct ClassScores: Equatable, Sendable {
    /// 2TP / (2TP + FP + FN), also F1.
    public var dice: Double
    /// TP / (TP + FP + FN), also the Jaccard index.
    public var iou: Double
    /// TP / (TP + FP).
    public var precision: Double
    /// TP / (TP + FN), also recall.
    public var sensitivity: Double
    /// TN / (TN + FP).
    public var specificity: Double
    /// (TP + TN) / all pixels.
    public var accuracy: Double

    public init(dice: Double, iou: Double, precision: Double, sensitivity: Double, specificity: Double, accuracy: Double) {
        self.dice = dice
        self.iou = iou
        self.precision = precision
        self.sensitivity = sensitivity
        self.specificity = specificity
        self.accuracy = accuracy
    }

    /// Every score averaged over `scores` (NaN when it is empty).
    public static func mean(_ scores: [ClassScores]) -> ClassScores {
        func average(_ value: (ClassScores) -> Double) -> Double {
            scores.isEmpty ? .nan : scores.reduce(0) { $0 + value($1) } / Double(scores.count)
        }
        return ClassScores(dice: average(\.dice), iou: average(\.iou), precision: average(\.precision),
                           sensitivity: average(\.sensitivity), specificity: average(\.specificity),
                           accuracy: average(\.accuracy))
    }
}

/// Pixel counts of (true class, predicted class) pairs for `classes` classes `0..<classes`.
public struct ConfusionMatrix: Equatable, Sendable {
    public let classes: Int
    /// `counts[truth * classes + predicted]`.
    public private(set) var counts: [Int]

    /// An empty matrix (all counts 0) for at least 2 classes.
    public init(classes: Int) throws {
        guard classes >= 2 else {
            throw EngineError.invalidValue(op: "ConfusionMatrix", message: "\(classes) classes; a segmentation has at least 2")
        }
        self.classes = classes
        counts = [Int](repeating: 0, count: classes * classes)
    }

    /// The counts of one image. Labels must lie in `0..<classes`: use `LabelMap.binarized()` for 0/255 masks.
    public init(prediction: LabelMap, truth: LabelMap, classes: Int) throws {
        try self.init(classes: classes)
        try add(prediction: prediction, truth: truth)
    }

    /// Adds one image's counts. Truth pixels labelled 255 (`Loss.ignoredLabel`, SPEC §1), when that is not a
    /// class, are not counted.
    public mutating func add(prediction: LabelMap, truth: LabelMap) throws {
        try prediction.checkSameSize(as: truth, op: "ConfusionMatrix")
        let ignored = Loss.ignoredLabel >= classes ? Int32(Loss.ignoredLabel) : -1
        for (map, role) in [(prediction, "prediction"), (truth, "truth")] {
            if let bad = map.labels.first(where: { Int($0) >= classes && (role == "prediction" || $0 != ignored) }) {
                throw EngineError.invalidValue(op: "ConfusionMatrix", message: "\(role) label \(bad) is outside the \(classes) classes 0..<\(classes)")
            }
        }
        for (p, t) in zip(prediction.labels, truth.labels) where t != ignored {
            counts[Int(t) * classes + Int(p)] += 1
        }
    }

    /// The sum of several matrices (pooling a dataset). Throws when they disagree on the class count or none are given.
    public static func pooled(_ matrices: [ConfusionMatrix]) throws -> ConfusionMatrix {
        guard let first = matrices.first else {
            throw EngineError.invalidValue(op: "ConfusionMatrix.pooled", message: "no matrices to pool")
        }
        var sum = try ConfusionMatrix(classes: first.classes)
        for (i, matrix) in matrices.enumerated() {
            guard matrix.classes == first.classes else {
                throw EngineError.invalidValue(op: "ConfusionMatrix.pooled", message: "matrix \(i) has \(matrix.classes) classes, matrix 0 has \(first.classes)")
            }
            for k in sum.counts.indices { sum.counts[k] += matrix.counts[k] }
        }
        return sum
    }

    /// Pixels of true class `truth` predicted as `predicted`.
    public subscript(truth truth: Int, predicted predicted: Int) -> Int { counts[truth * classes + predicted] }

    public var total: Int { counts.reduce(0, +) }

    /// Class `c` against all the others.
    public func counts(forClass c: Int) -> BinaryCounts {
        var predicted = 0, actual = 0
        for k in 0..<classes {
            predicted += self[truth: k, predicted: c]
            actual += self[truth: c, predicted: k]
        }
        let truePositives = self[truth: c, predicted: c]
        let falsePositives = predicted - truePositives
        let falseNegatives = actual - truePositives
        return BinaryCounts(truePositives: truePositives, falsePositives: falsePositives, falseNegatives: falseNegatives,
                            trueNegatives: total - truePositives - falsePositives - falseNegatives)
    }

    /// The scores of every class, in class order.
    public var classScores: [ClassScores] { (0..<classes).map { counts(forClass: $0).scores } }

    /// Correctly labelled pixels over all pixels (1 for an empty matrix). For 2 classes it equals either class's accuracy.
    public var pixelAccuracy: Double {
        let correct = (0..<classes).reduce(0) { $0 + self[truth: $1, predicted: $1] }
        return total == 0 ? 1 : Double(correct) / Double(total)
    }
}

/// How per-class scores are taken over a dataset.
public enum Aggregation: Sendable {
    /// From the confusion matrix summed over all images (DTSeg's `smp` stats, the Ciampi protocol).
    case pooled
    /// Per image, then averaged over images (GenSelfDiff averages over test patches).
    case perImage
}

/// Per-class scores over a dataset, and their mean over classes (mIoU, mean Dice, …).
public struct ClassScoreSummary: Equatable, Sendable {
    /// Indexed by class; class 0 is background.
    public let perClass: [ClassScores]

    public init(_ matrices: [ConfusionMatrix], aggregation: Aggregation) throws {
        let pooled = try ConfusionMatrix.pooled(matrices)  // also checks that the class counts agree
        switch aggregation {
        case .pooled:
            perClass = pooled.classScores
        case .perImage:
            let images = matrices.map(\.classScores)
            perClass = (0..<pooled.classes).map { c in ClassScores.mean(images.map { $0[c] }) }
        }
    }

    /// The mean over classes: `mean(includeBackground: true).iou` is DTSeg's mIoU, `false` the foreground-only mean
    /// that GenSelfDiff, Ciampi and CDCL report (for a binary task, the foreground class's own scores).
    public func mean(includeBackground: Bool) -> ClassScores {
        ClassScores.mean(Array(perClass.dropFirst(includeBackground ? 0 : 1)))
    }
}

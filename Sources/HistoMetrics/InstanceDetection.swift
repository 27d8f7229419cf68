/// Object-level detection counts of instance maps, as the nuclei literature reports them (HoVer-Net's detection
/// quality, Graham et al. 2019): a true and a predicted instance match when their IoU is at least 0.5, one-to-one,
/// by the assignment of largest total IoU among such pairs (above 0.5 a match is unique anyway; at exactly 0.5 an
/// instance could otherwise match twice); TP matched pairs, FP unmatched predictions, FN unmatched truths. Keep the
/// counts to pool a dataset (`+`).
public struct DetectionCounts: Equatable, Sendable {
    public var truePositives: Int
    public var falsePositives: Int
    public var falseNegatives: Int

    public init(truePositives: Int, falsePositives: Int, falseNegatives: Int) {
        self.truePositives = truePositives
        self.falsePositives = falsePositives
        self.falseNegatives = falseNegatives
    }

    /// Matches instances of `prediction` and `truth` (0 = background, each other id one object).
    public init(prediction: LabelMap, truth: LabelMap) throws {
        try prediction.checkSameSize(as: truth, op: "detection")
        let overlap = InstanceOverlap(prediction: prediction, truth: truth)
        // IoU ≥ 1/2 ⇔ 2·|G∩P| ≥ |G∪P|, in integers.
        let matched = overlap.assignment(of: overlap.pairs.filter { 2 * $0.intersection >= overlap.union($0) }).count
        self.init(truePositives: matched, falsePositives: overlap.predictionAreas.count - matched,
                  falseNegatives: overlap.truthAreas.count - matched)
    }

    /// TP / (TP + FP); 1 when nothing is predicted (no false detection was made).
    public var precision: Double { ratio(truePositives, truePositives + falsePositives) }
    /// TP / (TP + FN); 1 when there is nothing to find.
    public var recall: Double { ratio(truePositives, truePositives + falseNegatives) }
    /// 2TP / (2TP + FP + FN); 1 when both maps are empty.
    public var f1: Double { ratio(2 * truePositives, 2 * truePositives + falsePositives + falseNegatives) }

    private func ratio(_ a: Int, _ b: Int) -> Double { b == 0 ? 1 : Double(a) / Double(b) }

    public static func + (a: DetectionCounts, b: DetectionCounts) -> DetectionCounts {
        DetectionCounts(truePositives: a.truePositives + b.truePositives,
                        falsePositives: a.falsePositives + b.falsePositives,
                        falseNegatives: a.falseNegatives + b.falseNegatives)
    }
}

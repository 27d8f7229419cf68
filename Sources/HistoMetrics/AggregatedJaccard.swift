import HistoCore

/// An aggregated Jaccard index over instance maps (0 = background, each other id one object): the summed
/// intersections over the summed unions of matched instances plus the areas of unmatched ones. Keep the two sums to
/// pool a dataset (`+`); `value` is their ratio.
///
/// On binary masks, pass the 8-connected components (`LabelMap.connectedComponents()`) of both. Passing class label
/// maps as they are treats each class as one object: GenSelfDiff's class-level "AJI", which equals IoU for binary tasks.
public struct AggregatedJaccard: Equatable, Sendable {
    public var intersection: Int
    public var union: Int

    public init(intersection: Int, union: Int) {
        self.intersection = intersection
        self.union = union
    }

    /// intersection / union; 1 when the union is 0 (both maps empty).
    public var value: Double { union == 0 ? 1 : Double(intersection) / Double(union) }

    public static func + (a: AggregatedJaccard, b: AggregatedJaccard) -> AggregatedJaccard {
        AggregatedJaccard(intersection: a.intersection + b.intersection, union: a.union + b.union)
    }

    /// AJI (Kumar et al. 2017, as the official code and HoVer-Net's `get_fast_aji` compute it): every true instance G
    /// takes the overlapping predicted instance P of largest IoU (the lowest predicted id on ties) and adds |G∩P| to
    /// the intersection and |G∪P| to the union; a true instance overlapping none adds |G|; predicted instances never
    /// taken add their area. A predicted instance may be taken by several true ones.
    public static func aji(prediction: LabelMap, truth: LabelMap) throws -> AggregatedJaccard {
        try prediction.checkSameSize(as: truth, op: "aji")
        let overlap = InstanceOverlap(prediction: prediction, truth: truth)
        var result = AggregatedJaccard(intersection: 0, union: 0)
        var taken = [Bool](repeating: false, count: overlap.predictionAreas.count)
        var pair = 0
        for t in overlap.truthAreas.indices {
            var best: (intersection: Int, union: Int, prediction: Int)?
            while pair < overlap.pairs.count && overlap.pairs[pair].truth == t {
                let candidate = overlap.pairs[pair]
                let union = overlap.union(candidate)
                // IoU compared exactly: a/b > c/d ⇔ a·d > c·b. Strictly greater keeps the lowest id on ties.
                if best == nil || candidate.intersection * best!.union > best!.intersection * union {
                    best = (candidate.intersection, union, candidate.prediction)
                }
                pair += 1
            }
            if let best {
                result.intersection += best.intersection
                result.union += best.union
                taken[best.prediction] = true
            } else {
                result.union += overlap.truthAreas[t]
            }
        }
        for (p, area) in overlap.predictionAreas.enumerated() where !taken[p] { result.union += area }
        return result
    }

    /// AJI+ (Graham et al. 2019, HoVer-Net's `get_fast_aji_plus`): true and predicted instances are paired one-to-one
    /// by the assignment of largest total IoU, pairs without overlap are dropped, and every unpaired instance adds its
    /// area to the union (`InstanceOverlap.assignment`: pairs that do not overlap have IoU 0). HoVer-Net adds 1e-6
    /// to the IoU's denominator; this uses the exact IoU.
    public static func ajiPlus(prediction: LabelMap, truth: LabelMap) throws -> AggregatedJaccard {
        try prediction.checkSameSize(as: truth, op: "ajiPlus")
        let overlap = InstanceOverlap(prediction: prediction, truth: truth)
        var result = AggregatedJaccard(intersection: 0, union: 0)
        var pairedTruth = [Bool](repeating: false, count: overlap.truthAreas.count)
        var pairedPrediction = [Bool](repeating: false, count: overlap.predictionAreas.count)
        for pair in overlap.assignment(of: overlap.pairs) {
            result.intersection += pair.intersection
            result.union += overlap.union(pair)
            pairedTruth[pair.truth] = true
            pairedPrediction[pair.prediction] = true
        }
        for (t, area) in overlap.truthAreas.enumerated() where !pairedTruth[t] { result.union += area }
        for (p, area) in overlap.predictionAreas.enumerated() where !pairedPrediction[p] { result.union += area }
        return result
    }
}

/// The overlap table of two instance maps. Instances are numbered densely in ascending order of their ids.
struct InstanceOverlap {
    struct Pair {
        let truth: Int
        let prediction: Int
        let intersection: Int
    }

    /// Pixels per instance.
    let truthAreas: [Int]
    let predictionAreas: [Int]
    /// Every overlapping (truth, prediction) pair, sorted by truth then prediction.
    let pairs: [Pair]

    init(prediction: LabelMap, truth: LabelMap) {
        let (truthIndex, truthCount) = Self.denseIndices(truth.labels)
        let (predictionIndex, predictionCount) = Self.denseIndices(prediction.labels)
        var truthAreas = [Int](repeating: 0, count: truthCount)
        var predictionAreas = [Int](repeating: 0, count: predictionCount)
        var intersections: [Int: Int] = [:]  // key truth * predictionCount + prediction
        for i in truthIndex.indices {
            let (t, p) = (truthIndex[i], predictionIndex[i])
            if t >= 0 { truthAreas[t] += 1 }
            if p >= 0 { predictionAreas[p] += 1 }
            if t >= 0 && p >= 0 { intersections[t * predictionCount + p, default: 0] += 1 }
        }
        self.truthAreas = truthAreas
        self.predictionAreas = predictionAreas
        pairs = intersections.keys.sorted().map {
            Pair(truth: $0 / predictionCount, prediction: $0 % predictionCount, intersection: intersections[$0]!)
        }
    }

    func union(_ pair: Pair) -> Int { truthAreas[pair.truth] + predictionAreas[pair.prediction] - pair.intersection }

    /// The pairs of `pairs` that a one-to-one assignment of largest total IoU keeps. Solved exactly (Hungarian
    /// method) on each connected component of the graph whose edges are `pairs`, which is what
    /// `linear_sum_assignment` over the whole IoU matrix with every other entry 0 amounts to.
    func assignment(of pairs: [Pair]) -> [Pair] {
        let truthCount = truthAreas.count
        // Nodes 0..<truthCount are true instances, the rest predicted ones; the pairs are edges.
        var parent = Array(0..<(truthCount + predictionAreas.count))
        func root(_ node: Int) -> Int {
            var node = node
            while parent[node] != node { parent[node] = parent[parent[node]]; node = parent[node] }
            return node
        }
        for pair in pairs {
            let (a, b) = (root(pair.truth), root(truthCount + pair.prediction))
            if a != b { parent[max(a, b)] = min(a, b) }
        }
        var componentPairs: [Int: [Pair]] = [:]
        for pair in pairs { componentPairs[root(pair.truth), default: []].append(pair) }
        return componentPairs.keys.sorted().flatMap { bestAssignment(componentPairs[$0]!) }
    }

    /// The overlapping pairs of one component that a maximum-total-IoU one-to-one assignment keeps.
    private func bestAssignment(_ pairs: [Pair]) -> [Pair] {
        let truths = Array(Set(pairs.map(\.truth))).sorted()
        let predictions = Array(Set(pairs.map(\.prediction))).sorted()
        let truthIndex = Dictionary(uniqueKeysWithValues: truths.enumerated().map { ($1, $0) })
        let predictionIndex = Dictionary(uniqueKeysWithValues: predictions.enumerated().map { ($1, $0) })
        // The Hungarian method wants rows ≤ columns: put the smaller side in the rows.
        let truthRows = truths.count <= predictions.count
        let (rows, columns) = truthRows ? (truths.count, predictions.count) : (predictions.count, truths.count)
        var cost = [Double](repeating: 0, count: rows * columns)
        var pairAt: [Int: Pair] = [:]
        for pair in pairs {
            let (t, p) = (truthIndex[pair.truth]!, predictionIndex[pair.prediction]!)
            let cell = truthRows ? t * columns + p : p * columns + t
            cost[cell] = -Double(pair.intersection) / Double(union(pair))
            pairAt[cell] = pair
        }
        let assigned = minimumCostAssignment(cost: cost, rows: rows, columns: columns)
        return assigned.enumerated().compactMap { row, column in pairAt[row * columns + column] }
    }

    /// Each pixel's instance as a dense index (−1 for background), and the number of instances.
    private static func denseIndices(_ labels: [Int32]) -> ([Int], Int) {
        var ids = Set<Int32>()
        var last: Int32 = 0
        for label in labels where label != last {  // runs of one label are long: skip the set for them
            if label > 0 { ids.insert(label) }
            last = label
        }
        let index = Dictionary(uniqueKeysWithValues: ids.sorted().enumerated().map { ($1, $0) })
        var dense = [Int](repeating: -1, count: labels.count)
        var lastLabel: Int32 = 0, lastIndex = -1
        for (i, label) in labels.enumerated() where label > 0 {
            if label != lastLabel { lastLabel = label; lastIndex = index[label]! }
            dense[i] = lastIndex
        }
        return (dense, ids.count)
    }
}

/// The column assigned to each row by a minimum-total-cost assignment of every row to a distinct column
/// (`rows <= columns`; `cost[row * columns + column]`): the Hungarian method with potentials and shortest
/// augmenting paths, O(rows² · columns).
func minimumCostAssignment(cost: [Double], rows: Int, columns: Int) -> [Int] {
    // 1-based arrays with a sentinel column 0, as in the classic formulation.
    var rowPotential = [Double](repeating: 0, count: rows + 1)
    var columnPotential = [Double](repeating: 0, count: columns + 1)
    var rowOfColumn = [Int](repeating: 0, count: columns + 1)
    var previousColumn = [Int](repeating: 0, count: columns + 1)
    for row in 1...rows {
        rowOfColumn[0] = row
        var column = 0
        var slack = [Double](repeating: .infinity, count: columns + 1)
        var visited = [Bool](repeating: false, count: columns + 1)
        repeat {
            visited[column] = true
            let r = rowOfColumn[column]
            var delta = Double.infinity
            var next = 0
            for j in 1...columns where !visited[j] {
                let reduced = cost[(r - 1) * columns + j - 1] - rowPotential[r] - columnPotential[j]
                if reduced < slack[j] { slack[j] = reduced; previousColumn[j] = column }
                if slack[j] < delta { delta = slack[j]; next = j }
            }
            for j in 0...columns {
                if visited[j] {
                    rowPotential[rowOfColumn[j]] += delta
                    columnPotential[j] -= delta
                } else {
                    slack[j] -= delta
                }
            }
            column = next
        } while rowOfColumn[column] != 0
        repeat {
            let previous = previousColumn[column]
            rowOfColumn[column] = rowOfColumn[previous]
            column = previous
        } while column != 0
    }
    var columnOfRow = [Int](repeating: -1, count: rows)
    for j in 1...columns where rowOfColumn[j] != 0 { columnOfRow[rowOfColumn[j] - 1] = j - 1 }
    return columnOfRow
}

import HistoCore

/// The squared Euclidean distance from every pixel to the nearest feature pixel (`features`, row-major), exact in
/// integers (Meijster, Roerdink and Hesselink 2000: a column pass, then a lower envelope of parabolas per row;
/// O(pixels)). `scipy.ndimage.distance_transform_edt(~features)` is the square root of this. Nil when there is no
/// feature pixel.
public func squaredEuclideanDistanceTransform(_ features: [Bool], width: Int, height: Int) throws -> [Int]? {
    guard width > 0, height > 0, features.count == width * height else {
        throw EngineError.invalidValue(op: "squaredEuclideanDistanceTransform", message: "\(features.count) pixels do not fill \(width)×\(height)")
    }
    guard features.contains(true) else { return nil }
    // Column pass: the distance to the nearest feature in the same column; `far` where the column has none. Its
    // square exceeds every real squared distance, so such a column never wins in the row pass.
    let far = width + height
    var column = [Int](repeating: 0, count: width * height)
    for x in 0..<width {
        column[x] = features[x] ? 0 : far
        for y in 1..<height {
            let i = y * width + x
            column[i] = features[i] ? 0 : min(far, column[i - width] + 1)
        }
        for y in stride(from: height - 2, through: 0, by: -1) {
            let i = y * width + x
            if column[i + width] < column[i] { column[i] = column[i + width] + 1 }
        }
    }
    // Row pass: the lower envelope of the parabolas f_u(x) = (x − u)² + g(u)², g the column distances.
    var result = [Int](repeating: 0, count: width * height)
    var centers = [Int](repeating: 0, count: width)  // s: the parabola of each envelope segment
    var starts = [Int](repeating: 0, count: width)  // t: where each segment starts
    for y in 0..<height {
        let row = y * width
        func f(_ x: Int, _ u: Int) -> Int { (x - u) * (x - u) + column[row + u] * column[row + u] }
        /// Where parabola v (> u) crosses parabola u, rounded down: from the next column on, v is not above u.
        func separation(_ u: Int, _ v: Int) -> Int {
            let gu = column[row + u], gv = column[row + v]
            return (v * v - u * u + gv * gv - gu * gu) / (2 * (v - u))
        }
        var q = 0
        centers[0] = 0
        starts[0] = 0
        for u in 1..<width {
            while q >= 0 && f(starts[q], centers[q]) > f(starts[q], u) { q -= 1 }
            if q < 0 {
                q = 0
                centers[0] = u
            } else {
                let w = 1 + separation(centers[q], u)
                if w < width {
                    q += 1
                    centers[q] = u
                    starts[q] = w
                }
            }
        }
        for x in stride(from: width - 1, through: 0, by: -1) {
            result[row + x] = f(x, centers[q])
            if x == starts[q] { q -= 1 }
        }
    }
    return result
}

/// Which pixels of a mask the Hausdorff distances are taken between.
public enum PointSet: Sendable {
    /// The mask's surface: its foreground pixels with a background 4-neighbour or on the image border, i.e.
    /// `mask XOR binary_erosion(mask, 3×3 cross)` as medpy's `hd` / `hd95` (and the Ciampi test script) take it.
    case surface
    /// Every foreground pixel, as `scipy.spatial.distance.directed_hausdorff` over the foreground coordinates.
    case foreground
}

/// The distances, in pixels, from each point of one mask's point set to the nearest point of the other's, in both
/// directions, from an exact Euclidean distance transform. Hausdorff and HD95 follow medpy: HD is the larger of the
/// two directed maxima, HD95 the 95th percentile of both directions' distances pooled.
///
/// Empty masks: when both point sets are empty the masks agree and both distances are 0; when exactly one is empty
/// they are undefined (medpy raises) and both are NaN, which reports leave out of averages and show as n/a.
public struct SurfaceDistances: Equatable, Sendable {
    /// For each prediction point in raster order, the distance to the nearest truth point.
    public let predictionToTruth: [Double]
    /// For each truth point in raster order, the distance to the nearest prediction point.
    public let truthToPrediction: [Double]
    /// Exactly one point set is empty (the distance arrays are then empty).
    public let isUndefined: Bool

    /// Masks: foreground is label > 0.
    public init(prediction: LabelMap, truth: LabelMap, points: PointSet = .surface) throws {
        try prediction.checkSameSize(as: truth, op: "SurfaceDistances")
        let (width, height) = (truth.width, truth.height)
        let a = Self.points(of: prediction, points), b = Self.points(of: truth, points)
        let toTruth = try squaredEuclideanDistanceTransform(b, width: width, height: height)
        let toPrediction = try squaredEuclideanDistanceTransform(a, width: width, height: height)
        guard let toTruth, let toPrediction else {
            isUndefined = (toTruth == nil) != (toPrediction == nil)
            predictionToTruth = []
            truthToPrediction = []
            return
        }
        isUndefined = false
        func sample(_ squared: [Int], at set: [Bool]) -> [Double] {
            set.indices.compactMap { set[$0] ? Double(squared[$0]).squareRoot() : nil }
        }
        predictionToTruth = sample(toTruth, at: a)
        truthToPrediction = sample(toPrediction, at: b)
    }

    /// The symmetric Hausdorff distance: max over both directions.
    public var hausdorff: Double {
        isUndefined ? .nan : max(predictionToTruth.max() ?? 0, truthToPrediction.max() ?? 0)
    }

    /// HD95: the 95th percentile of both directions' distances pooled (medpy's `hd95`).
    public var hausdorff95: Double { percentile(95) }

    /// The `q`-th percentile (0…100) of both directions' distances pooled, interpolated linearly between order
    /// statistics as `numpy.percentile` does by default.
    public func percentile(_ q: Double) -> Double {
        if isUndefined { return .nan }
        let sorted = (predictionToTruth + truthToPrediction).sorted()
        guard !sorted.isEmpty else { return 0 }
        let position = Double(sorted.count - 1) * (q / 100)
        let below = Int(position.rounded(.down))
        let above = min(below + 1, sorted.count - 1)
        let fraction = position - Double(below)
        // numpy's _lerp: interpolate from the nearer end.
        let (a, b) = (sorted[below], sorted[above])
        return fraction >= 0.5 ? b - (b - a) * (1 - fraction) : a + (b - a) * fraction
    }

    private static func points(of map: LabelMap, _ points: PointSet) -> [Bool] {
        let (width, height) = (map.width, map.height)
        let inside = map.foreground
        guard points == .surface else { return inside }
        var surface = [Bool](repeating: false, count: inside.count)
        for y in 0..<height {
            for x in 0..<width where inside[y * width + x] {
                let i = y * width + x
                surface[i] = x == 0 || y == 0 || x == width - 1 || y == height - 1
                    || !inside[i - 1] || !inside[i + 1] || !inside[i - width] || !inside[i + width]
            }
        }
        return surface
    }
}

/// GenSelfDiff's Hausdorff distance (SPEC §2, §9.5): `max(directed_hausdorff(T, P), directed_hausdorff(P, T))` with
/// the binary masks (foreground = label > 0) taken as `height` row vectors in ℝ^width. Not a pixel-coordinate
/// distance: it is √(the number of pixels in which a row differs from its nearest row of the other mask). Always
/// defined (every mask has rows).
public func rowVectorHausdorff(prediction: LabelMap, truth: LabelMap) throws -> Double {
    try prediction.checkSameSize(as: truth, op: "rowVectorHausdorff")
    let words = (truth.width + 63) / 64
    /// The distinct rows as bit sets (repeated rows, e.g. empty ones, change no distance).
    func rows(_ map: LabelMap) -> [[UInt64]] {
        var distinct = Set<[UInt64]>()
        for y in 0..<map.height {
            var bits = [UInt64](repeating: 0, count: words)
            for x in 0..<map.width where map.labels[y * map.width + x] > 0 { bits[x >> 6] |= 1 << UInt64(x & 63) }
            distinct.insert(bits)
        }
        return Array(distinct)
    }
    func directed(_ from: [[UInt64]], _ to: [[UInt64]]) -> Int {
        var farthest = 0
        for a in from {
            var nearest = Int.max
            for b in to {
                var differing = 0
                for k in 0..<words { differing += (a[k] ^ b[k]).nonzeroBitCount }
                nearest = min(nearest, differing)
                if nearest <= farthest { break }  // this row can no longer raise the maximum
            }
            farthest = max(farthest, nearest)
        }
        return farthest
    }
    let (p, t) = (rows(prediction), rows(truth))
    return Double(max(directed(t, p), directed(p, t))).squareRoot()
}

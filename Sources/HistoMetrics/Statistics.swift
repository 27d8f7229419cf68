import Foundation
import HistoCore

/// Aggregation over repeated runs (splits, seeds): mean ± SD (DTSeg, GenSelfDiff), mean ± t-based confidence half-width
/// (Ciampi: 90%, t₀.₉₅,ₙ₋₁ · s/√n), and the paired t-test (DTSeg's significance over splits).
public enum Statistics {
    /// The arithmetic mean; NaN for no values.
    public static func mean(_ values: [Double]) -> Double {
        values.isEmpty ? .nan : values.reduce(0, +) / Double(values.count)
    }

    /// The sample standard deviation (n − 1 in the denominator, `np.std(ddof=1)`); NaN for fewer than 2 values.
    public static func standardDeviation(_ values: [Double]) -> Double {
        guard values.count >= 2 else { return .nan }
        let m = mean(values)
        return (values.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(values.count - 1)).squareRoot()
    }

    /// Half the width of the two-sided `level` confidence interval of the mean: t_{(1+level)/2, n−1} · s / √n.
    /// NaN for fewer than 2 values.
    public static func confidenceHalfWidth(_ values: [Double], level: Double = 0.90) -> Double {
        guard values.count >= 2 else { return .nan }
        let t = studentTQuantile((1 + level) / 2, degreesOfFreedom: Double(values.count - 1))
        return t * standardDeviation(values) / Double(values.count).squareRoot()
    }

    /// The two-sided paired t-test of `a` against `b` (`scipy.stats.ttest_rel`): t = mean(d) / (sd(d)/√n) with
    /// d = a − b, and p = 2 · P(T_{n−1} > |t|). Identical pairs give t = p = NaN; a constant non-zero difference
    /// gives t = ±∞, p = 0.
    public static func pairedTTest(_ a: [Double], _ b: [Double]) throws -> (t: Double, p: Double) {
        guard a.count == b.count, a.count >= 2 else {
            throw EngineError.invalidValue(op: "pairedTTest", message: "needs two samples of equal size ≥ 2, got \(a.count) and \(b.count)")
        }
        let differences = zip(a, b).map { $0 - $1 }
        let t = mean(differences) / (standardDeviation(differences) / Double(differences.count).squareRoot())
        guard !t.isNaN else { return (.nan, .nan) }
        return (t, 2 * upperTail(abs(t), degreesOfFreedom: Double(differences.count - 1)))
    }

    /// P(T ≤ t) for Student's t with ν > 0 degrees of freedom.
    public static func studentTCDF(_ t: Double, degreesOfFreedom nu: Double) -> Double {
        t >= 0 ? 1 - upperTail(t, degreesOfFreedom: nu) : upperTail(-t, degreesOfFreedom: nu)
    }

    /// The t with P(T ≤ t) = p, for 0 < p < 1 and ν > 0 (`scipy.stats.t.ppf`); NaN outside that domain.
    /// Solved by bisection on the upper tail to full double precision.
    public static func studentTQuantile(_ p: Double, degreesOfFreedom nu: Double) -> Double {
        guard p > 0, p < 1, nu > 0 else { return .nan }
        if p < 0.5 { return -studentTQuantile(1 - p, degreesOfFreedom: nu) }
        let tail = 1 - p
        var low = 0.0, high = 1.0
        while upperTail(high, degreesOfFreedom: nu) > tail { low = high; high *= 2 }
        for _ in 0..<200 {
            let middle = (low + high) / 2
            if middle == low || middle == high { break }
            if upperTail(middle, degreesOfFreedom: nu) > tail { low = middle } else { high = middle }
        }
        return (low + high) / 2
    }

    /// P(T > t) for t ≥ 0: ½ · I_{ν/(ν+t²)}(ν/2, ½).
    static func upperTail(_ t: Double, degreesOfFreedom nu: Double) -> Double {
        if t.isInfinite { return 0 }
        return 0.5 * regularizedIncompleteBeta(nu / (nu + t * t), a: nu / 2, b: 0.5)
    }

    /// I_x(a, b), the regularized incomplete beta function, by its continued fraction (modified Lentz), taken on
    /// the side of x where it converges fast.
    static func regularizedIncompleteBeta(_ x: Double, a: Double, b: Double) -> Double {
        if x <= 0 { return 0 }
        if x >= 1 { return 1 }
        let front = exp(lgamma(a + b) - lgamma(a) - lgamma(b) + a * log(x) + b * log1p(-x))
        if x < (a + 1) / (a + b + 2) { return front * betaContinuedFraction(x, a: a, b: b) / a }
        return 1 - front * betaContinuedFraction(1 - x, a: b, b: a) / b
    }

    private static func betaContinuedFraction(_ x: Double, a: Double, b: Double) -> Double {
        let tiny = 1e-300
        func guarded(_ v: Double) -> Double { abs(v) < tiny ? tiny : v }
        var c = 1.0
        var d = 1 / guarded(1 - (a + b) * x / (a + 1))
        var result = d
        for m in 1...1000 {
            let m = Double(m)
            let even = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
            d = 1 / guarded(1 + even * d)
            c = guarded(1 + even / c)
            result *= d * c
            let odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
            d = 1 / guarded(1 + odd * d)
            c = guarded(1 + odd / c)
            let step = d * c
            result *= step
            if abs(step - 1) < 1e-16 { break }
        }
        return result
    }
}

/// A metric over repeated runs: mean, sample SD and the half-width of its confidence interval.
public struct RunSummary: Equatable, Sendable {
    public let count: Int
    public let mean: Double
    public let standardDeviation: Double
    /// The confidence level of `halfWidth`, e.g. 0.90.
    public let level: Double
    public let halfWidth: Double

    public init(_ values: [Double], level: Double = 0.90) {
        count = values.count
        mean = Statistics.mean(values)
        standardDeviation = Statistics.standardDeviation(values)
        self.level = level
        halfWidth = Statistics.confidenceHalfWidth(values, level: level)
    }
}

import Foundation
import XCTest
@testable import HistoCore

/// The CPU norms on planes larger than one statistics chunk (2048 elements), which the op harness's small cases do
/// not reach: several chunks merged per plane, a partial chunk with a partial vector and a scalar tail, against a
/// Float64 reference of the forward and of all three gradients; and results that do not depend on how the sets are
/// spread over the cores.
final class NormalizationTests: XCTestCase {
    /// x [2, 4, 50, 50]: planes of 2500 elements, one chunk of 2048 and one of 452 (28 vectors and 4 scalars).
    static let shape = [2, 4, 50, 50]

    func testLargePlanesMatchFloat64Reference() throws {
        let random = RandomGenerator(seed: 7)
        // A shifted mean: the chunk merge must keep the variance's precision.
        let x = try (random.normal(Self.shape) * 2 + 5).materialized()
        let w = try random.normal([4]).materialized(), b = try random.normal([4]).materialized()
        let dy = try random.normal(Self.shape).materialized()
        for (statistics, activation) in [(NormStatistics.groups(2), NormActivation.identity), (.groups(2), .silu),
                                         (.batch, .identity)] {
            let y = x.channelNorm(statistics, weight: w, bias: b, eps: 1e-5, activation: activation)
            let grads = Autodiff.gradients(of: y, wrt: [x, w, b], seed: dy)
            let reference = Self.reference(x: try x.toArray(), w: try w.toArray(), b: try b.toArray(),
                                           dy: try dy.toArray(), statistics: statistics, activation: activation)
            let what = "\(statistics) \(activation)"
            try Self.assertClose(y.toArray(), reference.y, "\(what) y")
            try Self.assertClose(grads[0].toArray(), reference.dx, "\(what) dx")
            try Self.assertClose(grads[1].toArray(), reference.dw, "\(what) dweight")
            try Self.assertClose(grads[2].toArray(), reference.db, "\(what) dbias")
        }
    }

    /// Each sample's group norm and input gradient are bit-identical alone and within a batch of 8, whose 16
    /// sets (of two planes) the forward splits in two ranges: a set's statistics come from `moments` at the start of
    /// a range and from the forward's pipeline (taken while the previous set is normalised) elsewhere, and must
    /// not differ.
    func testGroupNormDoesNotDependOnTheSplitOverCores() throws {
        let random = RandomGenerator(seed: 8)
        let x = try random.normal([8, 4, 50, 50]).materialized(), dy = try random.normal([8, 4, 50, 50]).materialized()
        let w = try random.normal([4]).materialized(), b = try random.normal([4]).materialized()
        for activation in [NormActivation.identity, .silu] {
            func normAndGradient(_ x: Tensor, _ dy: Tensor) throws -> (y: [Float], dx: [Float]) {
                let y = x.groupNorm(groups: 2, weight: w, bias: b, activation: activation)
                return (try y.toArray(), try Autodiff.gradients(of: y, wrt: [x], seed: dy)[0].toArray())
            }
            let batch = try normAndGradient(x, dy), size = 4 * 50 * 50
            for sample in 0..<8 {
                let alone = try normAndGradient(x.slice(axis: 0, start: sample, end: sample + 1).materialized(),
                                                dy.slice(axis: 0, start: sample, end: sample + 1).materialized())
                let range = sample * size..<(sample + 1) * size
                XCTAssert(Array(batch.y[range]) == alone.y, "\(activation) y of sample \(sample) differs")
                XCTAssert(Array(batch.dx[range]) == alone.dx, "\(activation) dx of sample \(sample) differs")
            }
        }
    }

    static func assertClose(_ actual: [Float], _ expected: [Double], _ what: String,
                            file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, what, file: file, line: line)
        let scale = expected.map(abs).max() ?? 0
        let error = zip(actual, expected).map { abs(Double($0) - $1) }.max() ?? 0
        print("\(what): max abs error \(error) (values up to \(scale))")
        XCTAssertLessThan(error, 2e-5 * (1 + scale), "\(what): max abs error \(error)", file: file, line: line)
    }

    /// Forward and gradients in Float64, straight from the definitions (biased variance, eps inside the root).
    static func reference(x: [Float], w: [Float], b: [Float], dy: [Float], statistics: NormStatistics,
                          activation: NormActivation) -> (y: [Double], dx: [Double], dw: [Double], db: [Double]) {
        let (batch, channels, plane) = (shape[0], shape[1], shape[2] * shape[3])
        func set(_ n: Int, _ c: Int) -> Int {
            switch statistics {
            case .groups(let g): return n * g + c / (channels / g)
            case .batch: return c
            }
        }
        let sets = batch * channels
        var count = [Double](repeating: 0, count: sets), sum = count, squares = count
        for n in 0..<batch { for c in 0..<channels { for i in 0..<plane {
            let s = set(n, c); count[s] += 1; sum[s] += Double(x[(n * channels + c) * plane + i])
        } } }
        let mean = (0..<sets).map { count[$0] > 0 ? sum[$0] / count[$0] : 0 }
        for n in 0..<batch { for c in 0..<channels { for i in 0..<plane {
            let s = set(n, c), d = Double(x[(n * channels + c) * plane + i]) - mean[s]; squares[s] += d * d
        } } }
        let rstd = (0..<sets).map { count[$0] > 0 ? 1 / (squares[$0] / count[$0] + 1e-5).squareRoot() : 0 }
        var y = [Double](repeating: 0, count: x.count), g = y, normalised = y
        var dw = [Double](repeating: 0, count: channels), db = dw
        var meanWG = [Double](repeating: 0, count: sets), meanWGX = meanWG
        for n in 0..<batch { for c in 0..<channels { for i in 0..<plane {
            let j = (n * channels + c) * plane + i, s = set(n, c)
            let xhat = (Double(x[j]) - mean[s]) * rstd[s], z = xhat * Double(w[c]) + Double(b[c])
            let sigmoid = 1 / (1 + Foundation.exp(-z))
            y[j] = activation == .silu ? z * sigmoid : z
            g[j] = Double(dy[j]) * (activation == .silu ? sigmoid * (1 + z * (1 - sigmoid)) : 1)
            normalised[j] = xhat
            dw[c] += g[j] * xhat; db[c] += g[j]
            meanWG[s] += Double(w[c]) * g[j] / count[s]; meanWGX[s] += Double(w[c]) * g[j] * xhat / count[s]
        } } }
        var dx = y
        for n in 0..<batch { for c in 0..<channels { for i in 0..<plane {
            let j = (n * channels + c) * plane + i, s = set(n, c)
            dx[j] = rstd[s] * (Double(w[c]) * g[j] - meanWG[s] - normalised[j] * meanWGX[s])
        } } }
        return (y, dx, dw, db)
    }
}

import Foundation
import HistoAVX512
import XCTest
@testable import HistoCore

/// The 16-lane exp, sigmoid and tanh of VectorMath.swift against libm in double precision, rounded to float.
final class VectorMathTests: XCTestCase {
    /// f over `xs`, 16 lanes at a time through the elementwise ops' map loop (the tail included).
    func map(_ xs: [Float], _ f: (SIMD16<Float>) -> SIMD16<Float>) -> [Float] {
        var ys = [Float](repeating: 0, count: xs.count)
        xs.withUnsafeBufferPointer { x in
            ys.withUnsafeMutableBufferPointer { y in vectorMap(x.baseAddress!, y.baseAddress!, count: xs.count, f) }
        }
        return ys
    }

    /// Distance in units in the last place between two finite floats of the same sign.
    func ulps(_ a: Float, _ b: Float) -> Int { Swift.abs(Int(a.bitPattern) - Int(b.bitPattern)) }

    /// Every 2⁻¹² step of [−104, 89]: results within 1 ulp of the correctly rounded eˣ everywhere (subnormal results
    /// included; measured 1), relative error at most 1e-7 where the result is a normal float (measured 8.1e-8),
    /// +∞ past ln(FLT_MAX) and 0 below ln(2⁻¹⁵⁰).
    func testExpMatchesLibmOverTheFloatRange() {
        let xs = (0...(193 * 4096)).map { Float(-104 + Double($0) / 4096) }
        let ys = map(xs, exp16)
        var worstUlps = 0, worstRelative = 0.0, worstAt: Float = 0
        for (x, y) in zip(xs, ys) {
            let exact = Foundation.exp(Double(x)), reference = Float(exact)
            if reference.isInfinite {
                XCTAssertEqual(y, .infinity, "exp(\(x))")
                continue
            }
            XCTAssert(y.isFinite, "exp(\(x)) = \(y), expected \(reference)")
            let distance = ulps(y, reference)
            if distance > worstUlps { worstUlps = distance; worstAt = x }
            if reference >= .leastNormalMagnitude {
                worstRelative = Swift.max(worstRelative, Swift.abs(Double(y) - exact) / exact)
            }
        }
        XCTAssertLessThanOrEqual(worstUlps, 1, "worst at x = \(worstAt)")
        XCTAssertLessThanOrEqual(worstRelative, 1e-7)
    }

    func testExpSpecialValues() {
        let cases: [(Float, Float)] = [
            (0, 1), (-0.0, 1), (1, Float(M_E)), (.infinity, .infinity), (-.infinity, 0),
            (.greatestFiniteMagnitude, .infinity), (-.greatestFiniteMagnitude, 0), (1000, .infinity), (-1000, 0),
            (88.72283, Float(Foundation.exp(Double(Float(88.72283))))), (88.7229, .infinity),
            (-103.972, .leastNonzeroMagnitude), (-104, 0),
        ]
        let ys = map(cases.map(\.0), exp16)
        for ((x, expected), y) in zip(cases, ys) { XCTAssertEqual(y, expected, "exp(\(x))") }
        XCTAssert(map([.nan], exp16)[0].isNaN)
    }

    /// sigmoid within 2 ulp and tanh within 1 ulp of libm over [−20, 20] in 2⁻¹⁰ steps, both branches of tanh's
    /// polynomial switch at |x| = 0.625 and tiny arguments included; the limits at ±∞ exact.
    func testSigmoidAndTanhMatchLibm() {
        let xs = (0...(40 * 1024)).map { Float(-20 + Double($0) / 1024) } + [1e-6, -1e-6, 0.624_999_9, 0.625, -0.625]
        let sigmoids = map(xs, sigmoid16), tanhs = map(xs, tanh16)
        var worstSigmoid = 0, worstTanh = 0
        for (i, x) in xs.enumerated() {
            let sigmoid = Float(1 / (1 + Foundation.exp(-Double(x)))), tanh = Float(Foundation.tanh(Double(x)))
            worstSigmoid = Swift.max(worstSigmoid, ulps(sigmoids[i], sigmoid))
            if x != 0 { worstTanh = Swift.max(worstTanh, ulps(tanhs[i], tanh)) }
        }
        XCTAssertLessThanOrEqual(worstSigmoid, 2)
        XCTAssertLessThanOrEqual(worstTanh, 1)
        XCTAssertEqual(map([-.infinity, .infinity], sigmoid16), [0, 1])
        XCTAssertEqual(map([-.infinity, .infinity], tanh16), [-1, 1])
        XCTAssert(map([.nan], sigmoid16)[0].isNaN && map([.nan], tanh16)[0].isNaN)
    }

    /// The AVX-512 copies of the norm's SiLU loops give the bits of the Haswell ones HistoCore inlines, over inputs
    /// from −120 to 120 (both tails of the sigmoid) and a 37-element plane (a partial last vector).
    func testAVX512NormSiLUGivesTheSameBits() throws {
        guard AVX512GEMM.isSupported else { throw XCTSkip("this CPU (or OS) has no AVX-512") }
        let count = 37
        let x = (0..<count).map { Float($0) * 6.5 - 120 }, dy = (0..<count).map { Float($0 % 7) - 3 }
        var ours = [Float](repeating: .nan, count: count), inlined = ours
        AVX512Exponentials.normSiLU(x, count: count, mean: 0.25, scale: 1.5, shift: -0.5, into: &ours)
        normSiLU(x, count: count, mean: 0.25, scale: 1.5, shift: -0.5, into: &inlined)
        XCTAssertEqual(ours.indices.filter { ours[$0].bitPattern != inlined[$0].bitPattern }, [], "SiLU differs")
        XCTAssertEqual(ours[count - 1], silu16(SIMD16(repeating: (x[count - 1] - 0.25) * 1.5 - 0.5))[0])
        AVX512Exponentials.normSiLUGradient(x, dy, count: count, mean: 0.25, scale: 1.5, shift: -0.5, into: &ours)
        normSiLUGradient(x, dy, count: count, mean: 0.25, scale: 1.5, shift: -0.5, into: &inlined)
        XCTAssertEqual(ours.indices.filter { ours[$0].bitPattern != inlined[$0].bitPattern }, [], "gradient differs")
        XCTAssert(ours.allSatisfy(\.isFinite))
    }
}

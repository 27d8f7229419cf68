import CBLAS
import HistoAVX512
import XCTest

/// HistoAVX512's kernels against OpenBLAS on shapes with every kind of edge: rows past the blocks of 4, columns past
/// the blocks of 48 (A·B) or 4 (A·Bᵀ), a K tail past the multiples of 16 and K past one chunk, strided operands,
/// beta 0 and 1, on one core and spread over the cores.
final class AVX512GEMMTests: XCTestCase {
    func testKernelsMatchOpenBLAS() throws {
        guard AVX512GEMM.isSupported else { throw XCTSkip("this CPU (or OS) has no AVX-512") }
        var state: UInt32 = 12345
        func values(_ count: Int) -> [Float] {
            (0..<count).map { _ in state = state &* 1664525 &+ 1013904223; return Float(state >> 8) / Float(1 << 24) - 0.5 }
        }
        var cases = 0
        for (m, n, k) in [(4, 48, 1), (7, 101, 19), (64, 4222, 64), (13, 97, 3)] {
            for beta: Float in [0, 1] {
                for parallel in [false, true] {
                    let lda = k + 3, ldb = n + 5, ldc = n + 2
                    let a = values(m * lda), b = values(k * ldb), c = values(m * ldc)
                    var ours = c, reference = c
                    AVX512GEMM.multiply(m, n, k, a, lda, b, ldb, beta, &ours, ldc, parallel: parallel)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), 1, a, Int32(lda),
                                b, Int32(ldb), beta, &reference, Int32(ldc))
                    assertClose(ours, reference, tolerance: 1e-5 * Float(k), "A·B \(m)×\(n)×\(k) beta \(beta) parallel \(parallel)")
                    cases += 1
                }
            }
        }
        for (m, n, k) in [(4, 4, 16), (9, 7, 1047), (64, 64, 4222), (6, 66, 300)] {
            for beta: Float in [0, 1] {
                for parallel in [false, true] {
                    let lda = k + 7, ldb = k + 1, ldc = n + 3
                    let a = values(m * lda), b = values(n * ldb), c = values(m * ldc)
                    var ours = c, reference = c
                    AVX512GEMM.multiplyTransposed(m, n, k, a, lda, b, ldb, beta, &ours, ldc, parallel: parallel)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(n), Int32(k), 1, a, Int32(lda),
                                b, Int32(ldb), beta, &reference, Int32(ldc))
                    assertClose(ours, reference, tolerance: 1e-5 * Float(k), "A·Bᵀ \(m)×\(n)×\(k) beta \(beta) parallel \(parallel)")
                    cases += 1
                }
            }
        }
        XCTAssertEqual(cases, 32)
    }

    /// Elements outside C's m×n window (its row padding) must be left alone, the others within `tolerance`.
    func assertClose(_ ours: [Float], _ reference: [Float], tolerance: Float, _ label: String) {
        let worst = zip(ours, reference).map { abs($0 - $1) }.max() ?? 0
        XCTAssert(worst <= tolerance, "\(label): largest difference \(worst)")
    }
}

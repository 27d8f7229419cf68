import CBLAS
import HistoAVX512
@testable import HistoCore
import XCTest

/// HistoAVX512's kernels against OpenBLAS on shapes with every kind of edge: rows past the blocks of 4,
/// columns past the blocks of 48 (A·B, Aᵀ·B: strips of 32 and 16, then OpenBLAS) or 4 (A·Bᵀ), a K tail past
/// the multiples of 16 and K past one chunk, strided operands, beta 0 and 1, rows cut into bands, on one core
/// and spread over the cores.
final class AVX512GEMMTests: XCTestCase {
    func testKernelsMatchOpenBLAS() throws {
        guard AVX512GEMM.isSupported else { throw XCTSkip("this CPU (or OS) has no AVX-512") }
        var state: UInt32 = 12345
        func values(_ count: Int) -> [Float] {
            (0..<count).map { _ in state = state &* 1664525 &+ 1013904223; return Float(state >> 8) / Float(1 << 24) - 0.5 }
        }
        let shapes: [(transposedA: Bool, transposedB: Bool, m: Int, n: Int, k: Int)] = [
            (false, false, 4, 48, 1), (false, false, 7, 101, 19), (false, false, 64, 4222, 64),
            (false, false, 13, 97, 3), (false, false, 70, 32, 40), (false, false, 133, 45, 33),
            (false, false, 9, 123, 5), (true, false, 70, 32, 40), (true, false, 133, 45, 33), (true, false, 4, 48, 1),
            (true, false, 7, 101, 19),
            (true, false, 32, 4100, 32), (true, false, 13, 97, 3), (false, true, 4, 4, 16),
            (false, true, 9, 7, 1047), (false, true, 64, 64, 4222), (false, true, 6, 66, 300),
        ]
        var cases = 0
        for (transposedA, transposedB, m, n, k) in shapes {
            for beta: Float in [0, 1] {
                for parallel in [false, true] {
                    // A is m×k, or k×m when transposed, B k×n or n×k; every operand has padding at the end of
                    // its rows.
                    let lda = (transposedA ? m : k) + 3, ldb = (transposedB ? k : n) + 5, ldc = n + 2
                    let a = values((transposedA ? k : m) * lda), b = values((transposedB ? n : k) * ldb)
                    let c = values(m * ldc)
                    var ours = c, reference = c
                    let forEach: (Int, (Int) -> Void) -> Void = parallel
                        ? WorkerPool.shared.perform : { count, body in for i in 0..<count { body(i) } }
                    if transposedB {
                        AVX512GEMM.multiplyTransposed(m, n, k, a, lda, b, ldb, beta, &ours, ldc, forEach: forEach)
                    } else {
                        // More workers than cores in turn: bands of rows either way.
                        AVX512GEMM.multiply(m, n, k, a, lda, b, ldb, beta, &ours, ldc, transposedA: transposedA,
                                            workers: parallel ? CPUThreads.count : 3, forEach: forEach)
                    }
                    cblas_sgemm(CblasRowMajor, transposedA ? CblasTrans : CblasNoTrans,
                                transposedB ? CblasTrans : CblasNoTrans, Int32(m), Int32(n), Int32(k), 1, a, Int32(lda),
                                b, Int32(ldb), beta, &reference, Int32(ldc))
                    // Includes C's row padding, which both must leave alone.
                    let worst = zip(ours, reference).map { abs($0 - $1) }.max() ?? 0
                    let product = "\(transposedA ? "Aᵀ" : "A")·\(transposedB ? "Bᵀ" : "B")"
                    XCTAssert(worst <= 1e-5 * Float(k), "\(product) \(m)×\(n)×\(k) beta \(beta) "
                                  + "parallel \(parallel): largest difference \(worst)")
                    cases += 1
                }
            }
        }
        XCTAssertEqual(cases, 68)
    }
}

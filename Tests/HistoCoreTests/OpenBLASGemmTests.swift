import CBLAS
@testable import HistoCore
import XCTest

/// `openBLASGemm`'s bands of rows or columns (the longer side; the last band takes a remainder) against
/// one OpenBLAS call, for every transpose, with padded operands, alpha and beta; and from inside a parallel loop,
/// where the bands run in turn, with the same bits.
final class OpenBLASGemmTests: XCTestCase {
    func testBandsMatchOneCallAndGiveTheSameBitsInsideAParallelLoop() {
        XCTAssertGreaterThanOrEqual(CPUThreads.count, 1)
        XCTAssertEqual(openblas_get_num_threads(), 1, "OpenBLAS runs single-threaded once CPUThreads is known")
        var state: UInt32 = 7
        func values(_ count: Int) -> [Float] {
            (0..<count).map { _ in
                state = state &* 1664525 &+ 1013904223
                return Float(state >> 8) / Float(1 << 24) - 0.5
            }
        }
        // Rows split with a remainder, columns split 4 ways, too small to split, rows split 4 ways.
        let shapes = [(m: 97, n: 40, k: 4400), (m: 40, n: 1000, k: 520), (m: 64, n: 64, k: 64),
                      (m: 200, n: 70, k: 1300)]
        for (m, n, k) in shapes {
            for (transposeA, transposeB) in [(false, false), (true, false), (false, true), (true, true)] {
                let lda = (transposeA ? m : k) + 3, ldb = (transposeB ? k : n) + 5, ldc = n + 2
                let a = values((transposeA ? k : m) * lda), b = values((transposeB ? n : k) * ldb)
                let c = values(m * ldc)
                var banded = c, reference = c, inside = c
                openBLASGemm(transposeA, transposeB, m, n, k, 0.5, a, lda, b, ldb, 1, &banded, ldc)
                cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans,
                            transposeB ? CblasTrans : CblasNoTrans, Int32(m), Int32(n), Int32(k), 0.5, a, Int32(lda),
                            b, Int32(ldb), 1, &reference, Int32(ldc))
                inside.withUnsafeMutableBufferPointer { inside in
                    WorkerPool.shared.perform(iterations: 2) { i in
                        guard i == 0 else { return }
                        openBLASGemm(transposeA, transposeB, m, n, k, 0.5, a, lda, b, ldb, 1, inside.baseAddress!, ldc)
                    }
                }
                let name = "\(transposeA ? "Aᵀ" : "A")·\(transposeB ? "Bᵀ" : "B") \(m)×\(n)×\(k)"
                // Includes C's row padding, which both must leave alone.
                let worst = zip(banded, reference).map { abs($0 - $1) }.max() ?? 0
                XCTAssert(worst <= 1e-6 * Float(k), "\(name): largest difference \(worst)")
                XCTAssertEqual(banded, inside, name)
            }
        }
    }
}

import CBLAS
import Foundation

// SGEMM kernels for AVX-512 CPUs, for the products of stride-1 convolutions (Sources/HistoCore/Ops/
// Convolution.swift: one GEMM per kernel tap, M = output channels, N or K = the pixels of an image) and of attention's
// blocks (Ops/Attention.swift), and any other A·B with enough columns (`gemm`). This module is
// compiled for Skylake-AVX512 (Package.swift) and only called after `AVX512GEMM.isSupported` said yes. The kernels
// read the operands where they lie (no packing): the tap's operand is a strided view into a padded image.
// Measured single-threaded on Zen 5 (a standalone timing of the conv tap shapes 64×4176×64 A·B and 64×64×4208
// A·Bᵀ): A·B 210–220 GFLOP/s against OpenBLAS's 101 (Haswell kernels) and 157 (SkylakeX); A·Bᵀ 128 against 98
// and 152. Rows past the blocks of 4, columns past the strips of 16 and the A·Bᵀ K tail go through OpenBLAS.

public enum AVX512GEMM {
    /// The CPU and the OS support AVX-512 F/BW/VL/DQ/CD (Linux: the kernel lists the flags only when it saves the
    /// AVX-512 state).
    public static let isSupported: Bool = {
        #if arch(x86_64) && os(Linux)
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return false }
        return ["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"].allSatisfy { info.contains(" \($0)") }
        #else
        return false
        #endif
    }()

    /// C[m×n] = op(A)·B[k×n] + beta·C (row-major, leading dimensions lda, ldb, ldc) with op(A) = A[m×k],
    /// or Aᵀ for A[k×m] when `transposedA`, for m ≥ 4 and n ≥ 16. C is cut into strips of 48 columns, then
    /// one of 32 and one of 16 for the rest, each strip into bands of rows when there are fewer strips than
    /// twice `workers`; `forEach(count, body)` runs body(0..<count), tasks of whole pieces, over the cores or in
    /// turn. Each element's arithmetic is the same however the pieces are cut or run.
    @inline(never)
    public static func multiply(_ m: Int, _ n: Int, _ k: Int, _ a: UnsafePointer<Float>, _ lda: Int,
                                _ b: UnsafePointer<Float>, _ ldb: Int, _ beta: Float, _ c: UnsafeMutablePointer<Float>,
                                _ ldc: Int, transposedA: Bool = false, workers: Int,
                                forEach: (Int, (Int) -> Void) -> Void) {
        let m4 = m / 4 * 4, wide = n / 48, rest = n - wide * 48
        let strips = wide + (rest >= 32 ? 1 : 0) + (rest % 32 >= 16 ? 1 : 0)
        let covered = wide * 48 + rest / 16 * 16
        // Bands of at least 32 rows, so that each band reuses its strip of B.
        let bands = strips >= 2 * workers ? 1 : max(1, min(m4 / 32, (2 * workers + strips - 1) / strips))
        // Element (i, p) of op(A) lies at a[i·rowStride + p·depthStride].
        let rowStride = transposedA ? 1 : lda, depthStride = transposedA ? lda : 1
        // Pieces run in tasks of at least 2¹⁸ multiply-adds: a smaller task costs less than waking a core.
        let pieces = strips * bands, tasks = max(1, min(pieces, m * n * k >> 18))
        forEach(tasks) { task in
            for piece in (task * pieces / tasks)..<((task + 1) * pieces / tasks) {
                let strip = piece / bands, band = piece % bands
                let j0 = strip < wide ? strip * 48 : wide * 48 + (strip - wide) * 32
                let width = strip < wide ? 48 : strip == wide && rest >= 32 ? 32 : 16
                let rows = (band * m4 / bands / 4 * 4)..<((band + 1) * m4 / bands / 4 * 4)
                for i0 in stride(from: rows.lowerBound, to: rows.upperBound, by: 4) {
                    let ai = a + i0 * rowStride, bj = b + j0, cij = c + i0 * ldc + j0
                    // Separate calls, so that each inlined copy has its A strides and width as constants.
                    switch (width, transposedA) {
                    case (48, true): blockNN(vectors: 3, k, ai, 1, lda, bj, ldb, beta, cij, ldc)
                    case (48, false): blockNN(vectors: 3, k, ai, lda, 1, bj, ldb, beta, cij, ldc)
                    case (32, true): blockNN(vectors: 2, k, ai, 1, lda, bj, ldb, beta, cij, ldc)
                    case (32, false): blockNN(vectors: 2, k, ai, lda, 1, bj, ldb, beta, cij, ldc)
                    default: blockNN(vectors: 1, k, ai, rowStride, depthStride, bj, ldb, beta, cij, ldc)
                    }
                }
            }
        }
        if covered < n {
            openBLAS(transposedA, false, m4, n - covered, k, a, lda, b + covered, ldb, beta, c + covered, ldc)
        }
        if m4 < m {
            openBLAS(transposedA, false, m - m4, n, k, a + m4 * rowStride, lda, b, ldb, beta, c + m4 * ldc, ldc)
        }
    }

    /// C[m×n] = A[m×k]·B[n×k]ᵀ + beta·C, for m ≥ 4, n ≥ 4 and k ≥ 16; `forEach` as for `multiply`.
    @inline(never)
    public static func multiplyTransposed(_ m: Int, _ n: Int, _ k: Int, _ a: UnsafePointer<Float>, _ lda: Int,
                                          _ b: UnsafePointer<Float>, _ ldb: Int, _ beta: Float,
                                          _ c: UnsafeMutablePointer<Float>, _ ldc: Int,
                                          forEach: (Int, (Int) -> Void) -> Void) {
        let m4 = m / 4 * 4, n4 = n / 4 * 4, k16 = k / 16 * 16
        // K in chunks, so that the four rows of A stay in L1 while a row of blocks runs.
        let chunk = 1024
        forEach(m4 / 4) { row in
            let i0 = row * 4
            for p0 in stride(from: 0, to: k16, by: chunk) {
                let kc = min(chunk, k16 - p0)
                for j0 in stride(from: 0, to: n4, by: 4) {
                    blockNT(kc, a + i0 * lda + p0, lda, b + j0 * ldb + p0, ldb, p0 == 0 ? beta : 1, c + i0 * ldc + j0, ldc)
                }
            }
        }
        if k16 < k { openBLAS(false, true, m4, n4, k - k16, a + k16, lda, b + k16, ldb, 1, c, ldc) }
        if n4 < n { openBLAS(false, true, m4, n - n4, k, a, lda, b + n4 * ldb, ldb, beta, c + n4, ldc) }
        if m4 < m { openBLAS(false, true, m - m4, n, k, a + m4 * lda, lda, b, ldb, beta, c + m4 * ldc, ldc) }
    }

    @inline(__always) static func load(_ p: UnsafePointer<Float>) -> SIMD16<Float> {
        UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
    }
    @inline(__always) static func store(_ v: SIMD16<Float>, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD16<Float>.self)
    }

    /// A 4×(16·vectors) block of C, vectors 1, 2 or 3 (a constant where inlined): up to 12 vector accumulators,
    /// each step one row of B (`vectors` vectors) times four broadcast A values (A's element (i, p) at
    /// a[i·rowStride + p·depthStride]).
    @inline(__always) static func blockNN(vectors: Int, _ k: Int, _ a: UnsafePointer<Float>, _ rowStride: Int,
                                          _ depthStride: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                                          _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        var c00 = SIMD16<Float>(), c01 = SIMD16<Float>(), c02 = SIMD16<Float>()
        var c10 = SIMD16<Float>(), c11 = SIMD16<Float>(), c12 = SIMD16<Float>()
        var c20 = SIMD16<Float>(), c21 = SIMD16<Float>(), c22 = SIMD16<Float>()
        var c30 = SIMD16<Float>(), c31 = SIMD16<Float>(), c32 = SIMD16<Float>()
        let a1 = a + rowStride, a2 = a1 + rowStride, a3 = a2 + rowStride
        var row = b
        for p in 0..<k {
            let b0 = load(row), b1 = vectors > 1 ? load(row + 16) : b0, b2 = vectors > 2 ? load(row + 32) : b0
            let q = p * depthStride
            @inline(__always) func step(_ s: SIMD16<Float>, _ x: inout SIMD16<Float>, _ y: inout SIMD16<Float>,
                                        _ z: inout SIMD16<Float>) {
                x.addProduct(s, b0)
                if vectors > 1 { y.addProduct(s, b1) }
                if vectors > 2 { z.addProduct(s, b2) }
            }
            step(SIMD16(repeating: a[q]), &c00, &c01, &c02)
            step(SIMD16(repeating: a1[q]), &c10, &c11, &c12)
            step(SIMD16(repeating: a2[q]), &c20, &c21, &c22)
            step(SIMD16(repeating: a3[q]), &c30, &c31, &c32)
            row += ldb
        }
        func put(_ r: Int, _ x: SIMD16<Float>, _ y: SIMD16<Float>, _ z: SIMD16<Float>) {
            let q = c + r * ldc
            store(beta == 0 ? x : x + beta * load(q), q)
            if vectors > 1 { store(beta == 0 ? y : y + beta * load(q + 16), q + 16) }
            if vectors > 2 { store(beta == 0 ? z : z + beta * load(q + 32), q + 32) }
        }
        put(0, c00, c01, c02); put(1, c10, c11, c12); put(2, c20, c21, c22); put(3, c30, c31, c32)
    }

    /// A 4×4 block of C as 16 dot products over k (a multiple of 16) of rows of A and rows of B, lane-wise, summed
    /// across lanes at the end.
    @inline(__always) static func blockNT(_ k: Int, _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                                          _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        var s00 = SIMD16<Float>(), s10 = SIMD16<Float>(), s20 = SIMD16<Float>(), s30 = SIMD16<Float>()
        var s01 = SIMD16<Float>(), s11 = SIMD16<Float>(), s21 = SIMD16<Float>(), s31 = SIMD16<Float>()
        var s02 = SIMD16<Float>(), s12 = SIMD16<Float>(), s22 = SIMD16<Float>(), s32 = SIMD16<Float>()
        var s03 = SIMD16<Float>(), s13 = SIMD16<Float>(), s23 = SIMD16<Float>(), s33 = SIMD16<Float>()
        let a1 = a + lda, a2 = a1 + lda, a3 = a2 + lda, b1 = b + ldb, b2 = b1 + ldb, b3 = b2 + ldb
        for p in stride(from: 0, to: k, by: 16) {
            let x0 = load(a + p), x1 = load(a1 + p), x2 = load(a2 + p), x3 = load(a3 + p)
            var y = load(b + p)
            s00.addProduct(x0, y); s10.addProduct(x1, y); s20.addProduct(x2, y); s30.addProduct(x3, y)
            y = load(b1 + p)
            s01.addProduct(x0, y); s11.addProduct(x1, y); s21.addProduct(x2, y); s31.addProduct(x3, y)
            y = load(b2 + p)
            s02.addProduct(x0, y); s12.addProduct(x1, y); s22.addProduct(x2, y); s32.addProduct(x3, y)
            y = load(b3 + p)
            s03.addProduct(x0, y); s13.addProduct(x1, y); s23.addProduct(x2, y); s33.addProduct(x3, y)
        }
        func put(_ r: Int, _ v0: SIMD16<Float>, _ v1: SIMD16<Float>, _ v2: SIMD16<Float>, _ v3: SIMD16<Float>) {
            let q = c + r * ldc
            let sums = SIMD4<Float>(v0.sum(), v1.sum(), v2.sum(), v3.sum())
            let out = beta == 0 ? sums : sums + beta * SIMD4<Float>(q[0], q[1], q[2], q[3])
            q[0] = out[0]; q[1] = out[1]; q[2] = out[2]; q[3] = out[3]
        }
        put(0, s00, s01, s02, s03); put(1, s10, s11, s12, s13); put(2, s20, s21, s22, s23); put(3, s30, s31, s32, s33)
    }

    @inline(__always) static func openBLAS(_ transposeA: Bool, _ transposeB: Bool, _ m: Int, _ n: Int, _ k: Int,
                                           _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                                           _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        guard m > 0, n > 0, k > 0 else { return }
        cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), 1, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
}

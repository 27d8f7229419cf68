/// Batched matrix product C = op(A)·op(B) with op = transpose when flagged. Batch axes are equal on both
/// sides, or one side is a plain matrix shared by every batch. GEMM goes through `openBLASGemm` or, per batch
/// item, through `gemm`.
public struct MatMul: Operation {
    public let transposeA: Bool
    public let transposeB: Bool
    public init(transposeA: Bool = false, transposeB: Bool = false) { self.transposeA = transposeA; self.transposeB = transposeB }

    public var name: String { "matmul" }

    struct Dims { var batch: [Int]; var m: Int; var k: Int; var n: Int; var batchA: Bool; var batchB: Bool }

    func dims(_ a: [Int], _ b: [Int]) throws(ShapeError) -> Dims {
        guard a.count >= 2, b.count >= 2 else { throw ShapeError("matmul needs matrices (rank ≥ 2)") }
        let (m, ka) = transposeA ? (a[a.count - 1], a[a.count - 2]) : (a[a.count - 2], a[a.count - 1])
        let (kb, n) = transposeB ? (b[b.count - 1], b[b.count - 2]) : (b[b.count - 2], b[b.count - 1])
        guard ka == kb else { throw ShapeError("inner dimensions differ: \(ka) vs \(kb)") }
        let batchA = Array(a.dropLast(2)), batchB = Array(b.dropLast(2))
        if batchA == batchB { return Dims(batch: batchA, m: m, k: ka, n: n, batchA: !batchA.isEmpty, batchB: !batchB.isEmpty) }
        if batchB.isEmpty { return Dims(batch: batchA, m: m, k: ka, n: n, batchA: true, batchB: false) }
        if batchA.isEmpty { return Dims(batch: batchB, m: m, k: ka, n: n, batchA: false, batchB: true) }
        throw ShapeError("batch axes \(describe(batchA)) and \(describe(batchB)) differ")
    }

    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        let d = try dims(inputs[0], inputs[1])
        return d.batch + [d.m, d.n]
    }

    public func cpuForward(_ args: CPUArgs) {
        let d = try! dims(args.inputShapes[0], args.inputShapes[1])
        let batches = d.batch.reduce(1, *)
        let a = args.inputs[0].baseAddress!, b = args.inputs[1].baseAddress!, c = args.output.baseAddress!
        let lda = transposeA ? d.m : d.k, ldb = transposeB ? d.k : d.n
        if d.m * d.n * d.k == 0 { args.output.update(repeating: 0); return }
        // One product, or a shared B with a batched, untransposed A (one tall GEMM): OpenBLAS's packed GEMM in bands
        // over all cores (HistoAVX512's unpacked kernel ran sgemm 1024³ at a third of its speed).
        if batches == 1 || (d.batchA && !d.batchB && !transposeA) {
            openBLASGemm(transposeA, transposeB, batches * d.m, d.n, d.k, 1, a, lda, b, ldb, 0, c, d.n)
            return
        }
        // Batches of small products (the linear attentions' per-head 32×32 contexts over a tile's pixels, issue 21)
        // one per core at a time through `gemm` (HistoAVX512's kernels where they suit the shape): one multithreaded
        // OpenBLAS call per item cost more in dispatch than in arithmetic.
        parallelSingleThreadedGemms(batches) { i in
            gemm(transposeA, transposeB, d.m, d.n, d.k, a + (d.batchA ? i * d.m * d.k : 0), lda,
                 b + (d.batchB ? i * d.k * d.n : 0), ldb, 0, c + i * d.m * d.n, d.n)
        }
    }

    public func vjp(_ ctx: VJPContext) -> [Tensor?] {
        let a = ctx.inputs[0], b = ctx.inputs[1], dc = ctx.cotangent
        // dA = dC·op(B)ᵀ (laid out as A is), dB = op(A)ᵀ·dC (laid out as B is).
        var da = transposeA ? b.matmul(dc, transposeA: transposeB, transposeB: true)
                            : dc.matmul(b, transposeA: false, transposeB: !transposeB)
        var db = transposeB ? dc.matmul(a, transposeA: true, transposeB: transposeA)
                            : a.matmul(dc, transposeA: !transposeA, transposeB: false)
        // A shared matrix collects the gradient of every batch.
        if a.rank == 2 && da.rank > 2 { da = da.sum(axes: Array(0..<(da.rank - 2))) }
        if b.rank == 2 && db.rank > 2 { db = db.sum(axes: Array(0..<(db.rank - 2))) }
        return [da, db]
    }
}

extension Tensor {
    public func matmul(_ other: Tensor, transposeA: Bool = false, transposeB: Bool = false) -> Tensor {
        .record(MatMul(transposeA: transposeA, transposeB: transposeB), [self, other])
    }
    /// x·Wᵀ + b for x [..., in], W [out, in], b [out] (PyTorch's Linear layout).
    public func linear(weight: Tensor, bias: Tensor?) -> Tensor {
        let y = matmul(weight, transposeB: true)
        guard let bias else { return y }
        return y + bias.reshape([Int](repeating: 1, count: Swift.max(y.rank - 1, 0)) + [bias.count])
    }
}

extension HarnessCatalog {
    static var matmul: [HarnessCase] {
        [
            HarnessCase("matmul", [.normal([5, 7]), .normal([7, 3])], flops: 2 * 5 * 7 * 3) { $0[0].matmul($0[1]) },
            HarnessCase("matmul.transposed", [.normal([7, 5]), .normal([3, 7])]) { $0[0].matmul($0[1], transposeA: true, transposeB: true) },
            HarnessCase("matmul.batched", [.normal([2, 3, 4, 6]), .normal([2, 3, 6, 5])]) { $0[0].matmul($0[1]) },
            HarnessCase("matmul.batched_tb", [.normal([2, 4, 6]), .normal([2, 5, 6])]) { $0[0].matmul($0[1], transposeB: true) },
            HarnessCase("matmul.shared_weight", [.normal([2, 4, 6]), .normal([6, 5])]) { $0[0].matmul($0[1]) },
            HarnessCase("linear", [.normal([2, 4, 6]), .normal([5, 6]), .normal([5])]) { $0[0].linear(weight: $0[1], bias: $0[2]) },
        ]
    }
}

extension MatMul: DeviceOperation {
    /// One (strided-batched) SGEMM; a shared matrix has batch stride 0.
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let d = try! dims(inputShapes[0], inputShapes[1])
        let batches = d.batch.reduce(1, *)
        let lda = transposeA ? d.m : d.k, ldb = transposeB ? d.k : d.n
        if d.batchA && !d.batchB && !transposeA {
            return [.gemm(.init(transposeA: false, transposeB: transposeB, m: batches * d.m, n: d.n, k: d.k,
                                a: .input(0), aBatchStride: 0, lda: lda, b: .input(1), bBatchStride: 0, ldb: ldb,
                                c: .output, cBatchStride: 0, ldc: d.n, batches: 1))]
        }
        return [.gemm(.init(transposeA: transposeA, transposeB: transposeB, m: d.m, n: d.n, k: d.k,
                            a: .input(0), aBatchStride: d.batchA ? d.m * d.k : 0, lda: lda,
                            b: .input(1), bBatchStride: d.batchB ? d.k * d.n : 0, ldb: ldb,
                            c: .output, cBatchStride: d.m * d.n, ldc: d.n, batches: batches))]
    }
}

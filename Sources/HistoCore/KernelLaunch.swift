/// How a device backend runs an op, declared by the op itself (next to its CPU reference) so that the op is
/// defined in one place. Backends interpret launches; an op that declares none runs on the CPU reference.
public enum KernelLaunch {
    /// One kernel from `Kernels/<file>.cl` over a global range (local size chosen by the backend when nil).
    case kernel(file: String, name: String, args: [KernelArgument], global: [Int], local: [Int]? = nil)
    /// Row-major batched SGEMM C = op(A)·op(B) (CLBlast on OpenCL). Offsets and strides are in elements.
    case gemm(Gemm)

    public struct Gemm {
        public var transposeA: Bool, transposeB: Bool
        public var m: Int, n: Int, k: Int
        public var a: KernelArgument, aOffset: Int, aBatchStride: Int, lda: Int
        public var b: KernelArgument, bOffset: Int, bBatchStride: Int, ldb: Int
        public var c: KernelArgument, cOffset: Int, cBatchStride: Int, ldc: Int
        public var batches: Int
        public var alpha: Float, beta: Float
        public init(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
                    a: KernelArgument, aOffset: Int = 0, aBatchStride: Int, lda: Int,
                    b: KernelArgument, bOffset: Int = 0, bBatchStride: Int, ldb: Int,
                    c: KernelArgument, cOffset: Int = 0, cBatchStride: Int, ldc: Int,
                    batches: Int, alpha: Float = 1, beta: Float = 0) {
            self.transposeA = transposeA; self.transposeB = transposeB; self.m = m; self.n = n; self.k = k
            self.a = a; self.aOffset = aOffset; self.aBatchStride = aBatchStride; self.lda = lda
            self.b = b; self.bOffset = bOffset; self.bBatchStride = bBatchStride; self.ldb = ldb
            self.c = c; self.cOffset = cOffset; self.cBatchStride = cBatchStride; self.ldc = ldc
            self.batches = batches; self.alpha = alpha; self.beta = beta
        }
    }
}

public enum KernelArgument {
    /// Input i's buffer; kernels also receive its element offset as the following int argument.
    case input(Int)
    /// The output buffer (and its element offset).
    case output
    /// The output buffer from this many elements in (and that element offset), for an op whose output packs several
    /// results.
    case outputPart(from: Int)
    /// A temporary buffer of this many floats, shared by the launches of one op (index selects which).
    case scratch(index: Int, count: Int)
    case int(Int32)
    case float(Float)
    case ulong(UInt64)
    /// A small struct of ints passed by value (e.g. shapes and strides; the kernel declares the matching struct).
    case ints([Int32])
}

/// Ops that can run on a device declare their launches here.
public protocol DeviceOperation: Operation {
    /// The launches that compute the output, in order, for these input shapes.
    func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch]
}

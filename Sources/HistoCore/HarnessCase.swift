/// A test case of the generic op harness, declared beside the op it exercises. One case list serves the parity
/// test (every backend against the CPU reference), the finite-difference gradient check, the golden fixtures
/// (values from PyTorch/numpy, matched by `name`) and the perf mode of `bench`.
public struct HarnessCase {
    public enum Input {
        /// Standard normal values.
        case normal([Int])
        /// Normal values kept at least `margin` away from zero (for kinks such as relu, abs).
        case awayFromZero([Int], margin: Float)
        /// Uniform in lo..<hi.
        case uniform([Int], Float, Float)
        /// Integers in lo..<hi (labels, indices), never differentiated.
        case integers([Int], Int, Int)
        /// Fixed values.
        case values([Float], [Int])

        public var shape: [Int] {
            switch self {
            case .normal(let s), .awayFromZero(let s, _), .uniform(let s, _, _), .integers(let s, _, _), .values(_, let s): return s
            }
        }
        public var isDifferentiable: Bool {
            if case .integers = self { return false }
            return true
        }
    }

    public let name: String
    public let inputs: [Input]
    public let build: ([Tensor]) -> Tensor
    /// Allowed error against the reference: |a − b| ≤ atol + rtol·|b|.
    public var atol: Float
    public var rtol: Float
    /// Finite-difference step and tolerance (float32 forward, float64 accumulation in the checker).
    public var fdStep: Float
    public var fdTolerance: Float
    /// Inputs the gradient check skips beyond the non-differentiable kinds (e.g. a mask).
    public var frozen: Set<Int>
    /// Floating-point operations of one forward run, for perf mode (0: report bandwidth only).
    public var flops: Double

    public init(_ name: String, _ inputs: [Input], atol: Float = 1e-5, rtol: Float = 1e-4,
                fdStep: Float = 1e-2, fdTolerance: Float = 2e-2, frozen: Set<Int> = [], flops: Double = 0,
                build: @escaping ([Tensor]) -> Tensor) {
        self.name = name; self.inputs = inputs; self.build = build
        self.atol = atol; self.rtol = rtol; self.fdStep = fdStep; self.fdTolerance = fdTolerance
        self.frozen = frozen; self.flops = flops
    }

    public func differentiates(_ index: Int) -> Bool { inputs[index].isDifferentiable && !frozen.contains(index) }
}

/// Every harness case, by op family. A new family adds one line here; a new op adds cases to its family.
public enum HarnessCatalog {
    public static var families: [(String, [HarnessCase])] {
        [
            ("elementwise", elementwise),
            ("layout", layout),
            ("reduce", reduce),
            ("matmul", matmul),
            ("random", random),
            ("losses", losses),
            ("resample", resample),
            ("indexing", indexing),
            ("norm", norm),
            ("attention", attention),
            ("conv", conv),
            ("diffusion", diffusion),
        ]
    }
    public static var all: [HarnessCase] { families.flatMap(\.1) }
}

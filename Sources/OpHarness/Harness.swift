import Foundation
import HistoCore

/// Runs harness cases: a backend against the CPU reference, finite differences on the CPU, golden fixtures.
public struct Harness {
    public struct Failure: CustomStringConvertible {
        public let caseName: String
        public let message: String
        public var description: String { "\(caseName): \(message)" }
    }

    public private(set) var failures: [Failure] = []
    public private(set) var casesRun = 0
    /// Op names that ran in the graphs of the cases checked so far (forward and backward).
    public private(set) var opsSeen = Set<String>()

    public init() {}

    /// Every catalogue case on `backend` against the CPU reference, counting CPU fallbacks without printing them:
    /// the OpenCL parity test and `bench --parity` (the GPU check) run the same thing. `onCase` sees each case's
    /// name and the failures it added.
    public static func parityOfCatalog(on backend: any Backend,
                                       onCase: (String, [Failure]) -> Void = { _, _ in }) -> (Harness, [String: Int]) {
        let report = FallbackReport.shared
        let printed = report.printsFirstOccurrence
        report.printsFirstOccurrence = false
        report.reset()
        defer { report.printsFirstOccurrence = printed }
        var harness = Harness()
        for c in HarnessCatalog.all {
            let before = harness.failures.count
            harness.checkParity(c, backend: backend)
            onCase(c.name, Array(harness.failures[before...]))
        }
        return (harness, report.counts)
    }

    // MARK: inputs

    /// Deterministic inputs for a case (Philox, seeded by the case name).
    public static func makeInputs(_ c: HarnessCase) -> [[Float]] {
        let generator = RandomGenerator(seed: UInt64(truncatingIfNeeded: stableHash(c.name)))
        return c.inputs.map { input -> [Float] in
            let n = Shape.count(input.shape)
            switch input {
            case .normal(let s): return try! generator.normal(s).toArray(on: CPUBackend.shared)
            case .awayFromZero(let s, let margin):
                return try! generator.normal(s).toArray(on: CPUBackend.shared).map { $0 >= 0 ? $0 + margin : $0 - margin }
            case .uniform(let s, let lo, let hi): return try! generator.uniform(s, lo, hi).toArray(on: CPUBackend.shared)
            case .integers(let s, let lo, let hi): return try! generator.integers(s, lo, hi).toArray(on: CPUBackend.shared)
            case .values(let v, _): precondition(v.count == n, "\(c.name): fixed input size"); return v
            }
        }
    }

    static func stableHash(_ s: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h
    }

    /// The cotangent used for backward checks: a fixed pseudo-random pattern.
    public static func cotangent(for shape: [Int], name: String) -> [Float] {
        try! RandomGenerator(seed: stableHash(name + "/dy")).uniform(shape, -1, 1).toArray(on: CPUBackend.shared)
    }

    struct Evaluated { var output: [Float]; var shape: [Int]; var grads: [[Float]?] }

    /// Forward and (if any input differentiates) backward of a case on one backend.
    func evaluate(_ c: HarnessCase, inputs: [[Float]], cotangent: [Float]?, on backend: any Backend,
                  collectOps: inout Set<String>) throws -> Evaluated {
        let leaves = zip(inputs, c.inputs).map { Tensor($0.0, shape: $0.1.shape) }
        let out = c.build(leaves)
        let diff = leaves.indices.filter { c.differentiates($0) }
        var grads: [Tensor] = []
        if !diff.isEmpty, let out0 = Optional(out), out0.node.error == nil {
            let seed = Tensor(cotangent ?? Harness.cotangent(for: out.shape, name: c.name), shape: out.shape)
            grads = Autodiff.gradients(of: out, wrt: diff.map { leaves[$0] }, seed: seed)
        }
        collectOps.formUnion(opNames([out] + grads))
        try eval([out] + grads, on: backend)
        var gradArrays = [[Float]?](repeating: nil, count: leaves.count)
        for (k, i) in diff.enumerated() { gradArrays[i] = try grads[k].toArray(on: backend) }
        return Evaluated(output: try out.toArray(on: backend), shape: out.shape, grads: gradArrays)
    }

    func opNames(_ tensors: [Tensor]) -> Set<String> {
        var names = Set<String>(), seen = Set<ObjectIdentifier>(), stack = tensors.map(\.node)
        while let n = stack.popLast() {
            guard seen.insert(ObjectIdentifier(n)).inserted else { continue }
            if !(n.op is Leaf) { names.insert(n.op.name) }
            stack.append(contentsOf: n.inputs)
        }
        return names
    }

    // MARK: checks

    mutating func fail(_ c: HarnessCase, _ message: String) { failures.append(Failure(caseName: c.name, message: message)) }

    /// Compares `actual` with `expected` elementwise; reports NaN/inf and the worst element.
    mutating func compare(_ c: HarnessCase, _ what: String, _ actual: [Float], _ expected: [Float], atol: Float, rtol: Float) {
        guard actual.count == expected.count else { fail(c, "\(what): \(actual.count) values, expected \(expected.count)"); return }
        var worst = -1, worstExcess: Float = 0
        for i in actual.indices {
            let a = actual[i], e = expected[i]
            if !a.isFinite || !e.isFinite {
                if !(a == e || (a.isNaN && e.isNaN)) { fail(c, "\(what)[\(i)]: \(a) vs \(e) (non-finite)"); return }
                continue
            }
            let excess = Swift.abs(a - e) - (atol + rtol * Swift.abs(e))
            if excess > worstExcess { worstExcess = excess; worst = i }
        }
        if worst >= 0 {
            fail(c, "\(what)[\(worst)]: \(actual[worst]) vs expected \(expected[worst]) (atol \(atol), rtol \(rtol))")
        }
    }

    /// Runs a case on `backend` and on the CPU with the same inputs and compares output and gradients.
    public mutating func checkParity(_ c: HarnessCase, backend: any Backend) {
        casesRun += 1
        let inputs = Harness.makeInputs(c)
        do {
            let reference = try evaluate(c, inputs: inputs, cotangent: nil, on: CPUBackend.shared, collectOps: &opsSeen)
            if reference.output.contains(where: { !$0.isFinite }) { fail(c, "CPU reference output has NaN/inf"); return }
            guard backend !== CPUBackend.shared else { return }
            let other = try evaluate(c, inputs: inputs, cotangent: nil, on: backend, collectOps: &opsSeen)
            compare(c, "\(backend.name) output", other.output, reference.output, atol: c.atol, rtol: c.rtol)
            for i in inputs.indices {
                if let g = other.grads[i], let r = reference.grads[i] {
                    compare(c, "\(backend.name) grad[\(i)]", g, r, atol: c.atol * 10, rtol: c.rtol * 10)
                }
            }
        } catch { fail(c, "\(error)") }
    }

    /// Central finite differences of Σ dy·f(x) on the CPU (float64 accumulation) against the VJP.
    public mutating func checkGradients(_ c: HarnessCase, maxElements: Int = 48) {
        let diff = c.inputs.indices.filter { c.differentiates($0) }
        guard !diff.isEmpty else { return }
        casesRun += 1
        var inputs = Harness.makeInputs(c)
        do {
            var ops = Set<String>()
            let analytic = try evaluate(c, inputs: inputs, cotangent: nil, on: CPUBackend.shared, collectOps: &ops)
            let dy = Harness.cotangent(for: analytic.shape, name: c.name).map(Double.init)
            func objective(_ x: [[Float]]) throws -> Double {
                let out = try c.build(zip(x, c.inputs).map { Tensor($0.0, shape: $0.1.shape) }).toArray(on: CPUBackend.shared)
                var s = 0.0
                for (o, w) in zip(out, dy) { s += Double(o) * w }
                return s
            }
            for i in diff {
                let n = inputs[i].count
                let picks = n <= maxElements ? Array(0..<n) : (0..<maxElements).map { ($0 * 7919) % n }
                for j in picks {
                    let original = inputs[i][j]
                    let h = c.fdStep * Swift.max(1, Swift.abs(original))
                    inputs[i][j] = original + h
                    let plus = try objective(inputs)
                    inputs[i][j] = original - h
                    let minus = try objective(inputs)
                    inputs[i][j] = original
                    let numeric = (plus - minus) / Double(2 * h)
                    let a = Double(analytic.grads[i]![j])
                    if Swift.abs(a - numeric) > Double(c.fdTolerance) * Swift.max(1, Swift.abs(numeric)) {
                        fail(c, "d/dx\(i)[\(j)]: VJP \(a) vs finite difference \(numeric)")
                        return
                    }
                }
            }
        } catch { fail(c, "\(error)") }
    }

    /// Compares a case with a golden fixture (inputs, cotangent, output and gradients from PyTorch/numpy).
    public mutating func checkGolden(_ c: HarnessCase, _ golden: GoldenCase, on backend: any Backend = CPUBackend.shared,
                                     goldenOps: inout Set<String>) {
        casesRun += 1
        guard golden.inputs.count == c.inputs.count else {
            fail(c, "golden has \(golden.inputs.count) inputs, case has \(c.inputs.count)"); return
        }
        do {
            let result = try evaluate(c, inputs: golden.inputs, cotangent: golden.cotangent, on: backend, collectOps: &goldenOps)
            let atol = golden.atol ?? c.atol, rtol = golden.rtol ?? c.rtol
            compare(c, "golden output", result.output, golden.output, atol: atol, rtol: rtol)
            if let shape = golden.outputShape, shape != result.shape {
                fail(c, "golden output shape \(describe(shape)) vs \(describe(result.shape))")
            }
            for (i, expected) in (golden.grads ?? []).enumerated() {
                guard let expected else { continue }
                guard let g = result.grads[i] else { fail(c, "golden has a gradient for input \(i), the case none"); continue }
                compare(c, "golden grad[\(i)]", g, expected, atol: atol * 10, rtol: rtol * 10)
            }
        } catch { fail(c, "\(error)") }
    }
}

/// One golden case as written by tools/make_fixtures.py.
public struct GoldenCase: Decodable {
    public let inputs: [[Float]]
    public let output: [Float]
    public let outputShape: [Int]?
    public let cotangent: [Float]?
    public let grads: [[Float]?]?
    public let atol: Float?
    public let rtol: Float?

    enum CodingKeys: String, CodingKey { case inputs, output, outputShape = "output_shape", cotangent, grads, atol, rtol }

    /// Reads `{"cases": {name: GoldenCase}}`.
    public static func load(_ url: URL) throws -> [String: GoldenCase] {
        struct File: Decodable { let cases: [String: GoldenCase] }
        do { return try JSONDecoder().decode(File.self, from: Data(contentsOf: url)).cases } catch {
            throw EngineError.file(path: url.path, message: "cannot read golden fixture: \(error)")
        }
    }
}

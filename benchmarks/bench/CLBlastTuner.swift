import Foundation
import HistoCore
import HistoOpenCL

/// `bench --tune-clblast`: a small search over CLBlast's Xgemm parameters (no local-memory staging, a few dozen
/// candidates, not CLBlast's full tuner) on the SGEMM shapes the engine runs, against CLBlast's defaults for the
/// device. Prints the table and the `CLBlastTuning.xgemm(…)` call of the winner to ship in HistoOpenCL.
enum CLBlastTuner {
    /// (m, n, k, batches): the 1024³ workload and the im2col convolution's batched product (conv2d 3×3 64→64 on
    /// 8×64×64×64). Smaller products run CLBlast's XgemmDirect kernel, which these parameters do not touch.
    static let shapes = [(m: 1024, n: 1024, k: 1024, batches: 1), (m: 64, n: 4096, k: 576, batches: 8)]

    static var candidates: [[String: Int]] {
        var list: [[String: Int]] = []
        for (mwg, nwg) in [(64, 64), (64, 128), (128, 64), (128, 128)] {
            for (mdimc, ndimc) in [(8, 8), (8, 16), (16, 8), (16, 16)] {
                for (vwm, vwn) in [(4, 4), (4, 8), (8, 4), (8, 8)] where mwg % (mdimc * vwm) == 0 && nwg % (ndimc * vwn) == 0 {
                    list.append(CLBlastTuning.xgemm(mwg: mwg, nwg: nwg, kwg: 32, mdimc: mdimc, ndimc: ndimc, vwm: vwm, vwn: vwn))
                }
            }
        }
        return list
    }

    static func run(backend: OpenCLBackend, seconds: Double) throws {
        let workloads = shapes.enumerated().map { i, s in
            let a = Workloads.leaf([s.batches, s.m, s.k], seed: 40 + UInt64(i)), b = Workloads.leaf([s.batches, s.k, s.n], seed: 50 + UInt64(i))
            return Workload.forward("sgemm \(s.m)x\(s.n)x\(s.k) batch \(s.batches)",
                                    flops: 2 * Double(s.m * s.n * s.k * s.batches), inputs: [a, b]) { $0[0].matmul($0[1]) }
        }
        /// Median ms per shape; nil when CLBlast cannot build or run the parameters.
        func measure() -> [Double]? {
            try? workloads.map { try $0.measure(on: backend, minSeconds: seconds, maxRuns: 20).median * 1e3 }
        }
        func row(_ label: String, _ ms: [Double]) -> String {
            label.padding(toLength: 58, withPad: " ", startingAt: 0)
                + zip(ms, workloads).map { String(format: "%9.2f ms %6.1f GF/s", $0, $1.flops / $0 / 1e6) }.joined(separator: " |")
        }
        print("device: \(backend.device)\nshapes: " + workloads.map(\.name).joined(separator: ", "))
        guard let defaults = measure() else { throw EngineError.backend(name: "opencl", message: "SGEMM failed with CLBlast's defaults") }
        print(row("CLBlast defaults", defaults))
        var best: (parameters: [String: Int], ms: [Double])?
        for parameters in candidates {
            try CLBlastTuning.apply(["Xgemm": parameters], to: backend.device)
            let label = ["MWG", "NWG", "MDIMC", "NDIMC", "VWM", "VWN"].map { "\($0)=\(parameters[$0]!)" }.joined(separator: " ")
            guard let ms = measure() else { print(label + "  (failed)"); continue }
            print(row(label, ms))
            if ms.reduce(0, +) < best.map({ $0.ms.reduce(0, +) }) ?? .infinity { best = (parameters, ms) }
        }
        guard let best else { return }
        print(row("best", best.ms))
        print(String(format: "speed-up over defaults: %@", zip(defaults, best.ms).map { String(format: "×%.2f", $0 / $1) }.joined(separator: ", ")))
        let p = best.parameters
        print("ship: CLBlastTuning.xgemm(mwg: \(p["MWG"]!), nwg: \(p["NWG"]!), kwg: \(p["KWG"]!), mdimc: \(p["MDIMC"]!), ndimc: \(p["NDIMC"]!), vwm: \(p["VWM"]!), vwn: \(p["VWN"]!))")
    }
}

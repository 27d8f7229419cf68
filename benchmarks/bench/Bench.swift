import ArgumentParser
import CBLAS
import Foundation
import HistoCore
import HistoData
import HistoNN
import HistoOpenCL
import OpHarness

/// `bench`: times the engine's workloads on a backend and writes JSON. Peers measured in the same run
/// (OpenBLAS for GEMM) give the ratios; benchmarks/torch_peer.py gives PyTorch's figures.
@main
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Time HistoDiff's op workloads.")

    @Option(help: "Backend: cpu, opencl or opencl:N.") var backend = "cpu"
    @Option(help: "Write results as JSON to this file.") var json: String?
    @Option(help: "Only workloads whose name contains this.") var filter: String?
    @Option(help: "Minimum measuring time per workload, seconds.") var seconds = 1.0
    @Flag(help: "Small shapes and one repetition: checks that every workload runs.") var quick = false
    @Flag(help: "After timing each workload, run it 3 more times and print CPU time per op name (ms per run).")
    var profile = false
    @Flag(help: "Search CLBlast's Xgemm parameters on the OpenCL device (CLBlast defaults vs each candidate) and print the winner.")
    var tuneClblast = false
    @Option(help: "Dataset folder for the loader benchmark (default: ../shared/data/monuseg-train when present).")
    var data: String?
    @Flag(help: ArgumentHelp("Instead of timing: run every op harness case on --backend against the CPU reference "
                             + "(outputs and gradients), print each case and failure, exit 1 on a failure or a "
                             + "CPU fallback."))
    var parity = false

    func run() throws {
        OpenBLASTuning.reexecWithTunedSettingsIfNeeded()
        // Lines reach a log file as they are printed (the GPU check reads its logs after a time limit).
        setvbuf(stdout, nil, _IOLBF, 0)
        let machine = Machine.probe()
        print("machine: \(machine.description); fp32 peak ≈ \(Int(machine.peakGFLOPs)) GFLOP/s (estimate); OpenBLAS kernels: \(OpenBLASTuning.coreName)")
        if tuneClblast {
            guard let device = OpenCLDevice.choose(index: backend.split(separator: ":").last.flatMap { Int($0) }) else {
                throw ValidationError("--tune-clblast needs an OpenCL device")
            }
            try CLBlastTuner.run(backend: OpenCLBackend(device: device, tunesCLBlast: false), seconds: seconds)
            return
        }
        let target = try BackendSelection.backend(backend)
        if let cl = target as? OpenCLBackend { print("device: \(cl.device)") }
        if parity { return try checkParity(on: target) }
        var results: [[String: Any]] = []
        var copyGBs: Double?
        for workload in Workloads.all(quick: quick) where filter.map({ workload.name.contains($0) }) ?? true {
            let pool = CPUBackend.shared.pool
            pool.resetPeak()
            let liveBefore = pool.liveElements
            let timing = try workload.measure(on: target, minSeconds: quick ? 0 : seconds, maxRuns: quick ? 1 : 200)
            var row: [String: Any] = ["name": workload.name, "backend": target.name,
                                      "median_ms": timing.median * 1e3, "min_ms": timing.min * 1e3, "runs": timing.runs]
            var line = workload.name.padding(toLength: 42, withPad: " ", startingAt: 0)
                + String(format: "%9.3f ms (min %8.3f, %3d runs)", timing.median * 1e3, timing.min * 1e3, timing.runs)
            if target is CPUBackend {
                // Host memory the workload's graphs held at once beyond what was live before it (weights it built
                // included), from the CPU backend's buffer pool.
                let peakMB = Double(pool.peakLiveElements - liveBefore) * 4 / 1e6
                row["engine_peak_mb"] = peakMB
                line += String(format: "  engine peak %.0f MB", peakMB)
                row["user_ms"] = timing.user * 1e3
                row["system_ms"] = timing.system * 1e3
                line += String(format: "  sys %.0f%% of user", 100 * timing.system / Swift.max(timing.user, 1e-9))
            }
            if workload.flops > 0 {
                let gflops = workload.flops / timing.median / 1e9
                row["gflops"] = gflops
                row["peak_percent"] = 100 * gflops / machine.peakGFLOPs
                line += String(format: "  %7.1f GFLOP/s  %5.1f%% of peak", gflops, 100 * gflops / machine.peakGFLOPs)
            } else if workload.bytes > 0 {
                let gbs = workload.bytes / timing.median / 1e9
                row["gbytes_per_s"] = gbs
                line += String(format: "  %7.1f GB/s", gbs)
                if workload.isCopyReference { copyGBs = gbs } else if let copyGBs {
                    row["copy_percent"] = 100 * gbs / copyGBs
                    line += String(format: "  %5.1f%% of copy", 100 * gbs / copyGBs)
                }
            }
            if let peer = workload.peer {
                let p = try peer.measure(minSeconds: quick ? 0 : seconds, maxRuns: quick ? 1 : 200)
                row["peer"] = peer.name
                row["peer_median_ms"] = p.median * 1e3
                row["ratio_vs_peer"] = timing.median / p.median
                line += String(format: "  | %@ %8.3f ms, ×%.2f", peer.name as NSString, p.median * 1e3, timing.median / p.median)
            }
            print(line)
            if profile { row["profile_ms"] = try printProfile(of: workload, on: target, runs: quick ? 1 : 3) }
            results.append(row)
        }
        if filter.map({ "loader".contains($0) }) ?? true, let folder = data ?? defaultData() {
            let dataset = try Dataset.open(path: folder)
            let rate = try LoaderBenchmark.patchesPerSecond(dataset: dataset, patchSize: 256, seconds: quick ? 1 : 5 * seconds)
            print("loader 256² patches (load + augment)".padding(toLength: 42, withPad: " ", startingAt: 0)
                  + String(format: "%9.1f patches/s  (%@)", rate, folder as NSString))
            results.append(["name": "loader 256 patches", "patches_per_s": rate, "data": folder])
        }
        if let json {
            let document: [String: Any] = ["machine": machine.description, "peak_gflops_estimate": machine.peakGFLOPs,
                                           "backend": target.name, "results": results]
            let data = try JSONSerialization.data(withJSONObject: document, options: [.prettyPrinted, .sortedKeys])
            try data.write(to: URL(fileURLWithPath: json), options: .atomic)
            print("wrote \(json)")
        }
        if FallbackReport.shared.total > 0 {
            print("CPU fallbacks: " + FallbackReport.shared.counts.sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }.joined(separator: ", "))
        }
    }

    /// Runs the workload `runs` times with `OpProfile` on and prints each op name's time per run (ops on the CPU
    /// backend only; what is left of the step time is recording, scheduling and work outside the graph).
    func printProfile(of workload: Workload, on backend: any Backend, runs: Int) throws -> [String: Double] {
        let profile = OpProfile.shared
        profile.reset()
        profile.isEnabled = true
        defer { profile.isEnabled = false }
        for _ in 0..<runs { try workload.run(backend) }
        let totals = profile.totals
        let all = totals.reduce(0) { $0 + $1.entry.seconds } / Double(runs)
        print(String(format: "    all CPU ops %9.3f ms per run", all * 1e3))
        var perOp: [String: Double] = [:]
        for (name, entry) in totals {
            let ms = entry.seconds / Double(runs) * 1e3
            perOp[name] = ms
            guard ms >= 0.05 else { continue }
            print("    " + name.padding(toLength: 42, withPad: " ", startingAt: 0)
                  + String(format: "%9.3f ms  %5.1f%%  %4d calls", ms, 100 * ms / (all * 1e3), entry.calls / runs))
        }
        return perOp
    }

    /// The OpenCL parity test's check (`Harness.parityOfCatalog`) as a command, for machines without XCTest.
    func checkParity(on target: any Backend) throws {
        let (harness, fallbacks) = Harness.parityOfCatalog(on: target) { name, failures in
            print((failures.isEmpty ? "ok    " : "FAIL  ") + name)
            for failure in failures { print("      \(failure.message)") }
        }
        let fallbackList = fallbacks.sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }
        print("parity on \(target.name): \(harness.casesRun) cases, \(harness.failures.count) failures; CPU fallbacks: "
              + (fallbackList.isEmpty ? "none" : fallbackList.joined(separator: ", ")))
        if !harness.failures.isEmpty || !fallbacks.isEmpty { throw ExitCode(1) }
    }

    func defaultData() -> String? {
        let path = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
            .appendingPathComponent("../shared/data/monuseg-train").standardizedFileURL.path
        return FileManager.default.fileExists(atPath: path) ? path : nil
    }
}

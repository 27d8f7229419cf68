import Foundation
import HistoAVX512

/// OpenBLAS settings that are fixed when the library loads, so an executable re-runs itself once, first thing,
/// with them in its environment (only where one is missing):
/// - OpenBLAS 0.3.21 (Debian 12) identifies some AVX-512 CPUs (AMD Zen 4/5) as "Haswell" and runs its AVX2 kernels
///   there; its SkylakeX kernels are about 1.7× faster on those machines (conv2d fwd+bwd 41 → 28 ms). A virtual
///   Xeon that reports no model it knows gets its SSE3 "Prescott" kernels: sgemm 1024³ 12.8 → 77 GFLOP/s on a 2-core
///   AVX-512 Xeon. So on any AVX-512 CPU without an AVX-512 kernel set: `OPENBLAS_CORETYPE=SkylakeX`.
/// - A data-parallel rank's share of the cores, `OPENBLAS_NUM_THREADS` (read as `CPUThreads.count`; OpenBLAS itself
///   then runs single-threaded, its GEMMs split over our worker pool, `openBLASGemm`).
public enum OpenBLASTuning {
    @_silgen_name("openblas_get_corename") static func openblasCoreName() -> UnsafeMutablePointer<CChar>?

    /// The kernel set OpenBLAS runs ("Haswell", "SkylakeX", …).
    public static var coreName: String { openblasCoreName().map { String(cString: $0) } ?? "unknown" }

    /// Whether that kernel set is one of OpenBLAS's AVX-512 ones.
    public static var runsAVX512Kernels: Bool {
        ["skylakex", "cooperlake", "sapphirerapids"].contains(coreName.lowercased())
    }

    /// Replaces the process with itself under the settings above that are not set yet; returns when none is missing
    /// (or `HISTODIFF_NO_REEXEC` is set). `threads` (a data-parallel rank's share of the machine's cores) also
    /// sets `OPENBLAS_NUM_THREADS` unless given, so that ranks sharing a machine do not oversubscribe its cores.
    public static func reexecWithTunedSettingsIfNeeded(threads: Int? = nil) {
        let environment = ProcessInfo.processInfo.environment
        guard environment["HISTODIFF_NO_REEXEC"] == nil else { return }
        var missing: [(name: String, value: String)] = []
        if let threads, environment["OPENBLAS_NUM_THREADS"] == nil {
            missing.append(("OPENBLAS_NUM_THREADS", String(threads)))
        }
        if environment["OPENBLAS_CORETYPE"] == nil, !runsAVX512Kernels, AVX512GEMM.isSupported {
            missing.append(("OPENBLAS_CORETYPE", "SkylakeX"))
        }
        guard !missing.isEmpty else { return }
        for setting in missing { setenv(setting.name, setting.value, 1) }
        // execv returns only on failure: then carry on with the settings already loaded.
        _ = execv("/proc/self/exe", CommandLine.unsafeArgv)
    }
}

import Foundation

/// OpenBLAS 0.3.21 (Debian 12) identifies some AVX-512 CPUs (AMD Zen 4/5) as "Haswell" and runs its AVX2 kernels
/// there; its SkylakeX kernels are about 1.7× faster on those machines (conv2d fwd+bwd 41 → 28 ms). The kernel set is
/// fixed when the library loads, so an executable re-runs itself once, first thing, with `OPENBLAS_CORETYPE` set.
public enum OpenBLASTuning {
    @_silgen_name("openblas_get_corename") static func openblasCoreName() -> UnsafeMutablePointer<CChar>?

    /// The kernel set OpenBLAS runs ("Haswell", "SkylakeX", …).
    public static var coreName: String { openblasCoreName().map { String(cString: $0) } ?? "unknown" }

    /// Replaces the process with itself under `OPENBLAS_CORETYPE=SkylakeX` when that helps; otherwise returns.
    public static func reexecWithWidestKernelsIfNeeded() {
        let environment = ProcessInfo.processInfo.environment
        guard environment["OPENBLAS_CORETYPE"] == nil, environment["HISTODIFF_NO_REEXEC"] == nil,
              coreName.lowercased() == "haswell",
              let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              ["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"].allSatisfy({ info.contains(" \($0)") })
        else { return }
        setenv("OPENBLAS_CORETYPE", "SkylakeX", 1)
        // execv returns only on failure: then carry on with the kernels already loaded.
        _ = execv("/proc/self/exe", CommandLine.unsafeArgv)
    }
}

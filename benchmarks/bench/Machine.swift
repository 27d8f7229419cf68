import Foundation

/// What this machine can do in theory, for "% of peak" columns: cores × clock × fp32 FLOPs per cycle
/// (two FMA pipes of the widest vector unit the CPU reports). An estimate from /proc/cpuinfo, stated as such.
struct Machine {
    let cores: Int
    let mhz: Double
    let flopsPerCycle: Double
    let description: String

    var peakGFLOPs: Double { Double(cores) * mhz / 1000 * flopsPerCycle }

    static func probe() -> Machine {
        let info = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let mhz = info.split(separator: "\n").first { $0.hasPrefix("cpu MHz") }
            .flatMap { Double($0.split(separator: ":").last!.trimmingCharacters(in: .whitespaces)) } ?? 2000
        let name = info.split(separator: "\n").first { $0.hasPrefix("model name") }
            .map { String($0.split(separator: ":").last!).trimmingCharacters(in: .whitespaces) } ?? "unknown CPU"
        let lanes: Double = info.contains(" avx512f") ? 16 : info.contains(" avx2") ? 8 : 4
        let perCycle = lanes * 2 /* FMA */ * 2 /* pipes */
        return Machine(cores: cores, mhz: mhz, flopsPerCycle: perCycle,
                       description: "\(name), \(cores) cores at \(Int(mhz)) MHz, \(Int(perCycle)) fp32 FLOP/cycle/core")
    }
}

import Foundation
import HistoCore

/// Chooses a backend from a `--device` value: `cpu`, `opencl` (a GPU if there is one, else any device) or `opencl:N`.
/// Asking for OpenCL on a machine without a driver or device falls back to the CPU with a one-line notice.
/// `localRank` (a data-parallel rank's index among the ranks on its machine) makes `opencl` take that GPU, so that
/// the ranks of one machine share out its GPUs.
public enum BackendSelection {
    public static func backend(_ spec: String, localRank: Int = 0,
                               notice: (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) })
        throws -> any Backend {
        let parts = spec.split(separator: ":", maxSplits: 1).map(String.init)
        switch parts.first {
        case "cpu": return CPUBackend.shared
        case "opencl":
            var index: Int?
            if parts.count == 2 {
                guard let n = Int(parts[1]), n >= 0 else {
                    throw EngineError.backend(name: "opencl", message: "device index '\(parts[1])' is not a number (use opencl:N)")
                }
                index = n
            }
            let devices = OpenCLDevice.all()
            if devices.isEmpty {
                notice("note: no OpenCL platform or device found; using the CPU backend")
                return CPUBackend.shared
            }
            if let index, !devices.indices.contains(index) {
                throw EngineError.backend(name: "opencl", message: "device \(index) does not exist; devices: "
                    + devices.enumerated().map { "\($0.offset): \($0.element.name)" }.joined(separator: ", "))
            }
            if index == nil && localRank > 0 {
                let gpus = devices.filter(\.isGPU)
                guard localRank < gpus.count else {
                    throw EngineError.backend(name: "opencl", message: "local rank \(localRank) has no GPU of its own: "
                        + "this machine has \(gpus.count); start at most that many ranks per machine")
                }
                return try OpenCLBackend(device: gpus[localRank])
            }
            return try OpenCLBackend(device: OpenCLDevice.choose(index: index)!)
        default:
            throw EngineError.backend(name: spec, message: "unknown device '\(spec)' (cpu, opencl, opencl:N)")
        }
    }
}

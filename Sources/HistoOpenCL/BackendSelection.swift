import Foundation
import HistoCore

/// Chooses a backend from a `--device` value: `cpu`, `opencl` (a GPU if there is one, else any device) or `opencl:N`.
/// Asking for OpenCL on a machine without a driver or device falls back to the CPU with a one-line notice.
public enum BackendSelection {
    public static func backend(_ spec: String, notice: (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }) throws -> any Backend {
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
            return try OpenCLBackend(device: OpenCLDevice.choose(index: index)!)
        default:
            throw EngineError.backend(name: spec, message: "unknown device '\(spec)' (cpu, opencl, opencl:N)")
        }
    }
}

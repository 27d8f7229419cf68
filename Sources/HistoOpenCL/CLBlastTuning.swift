import CCLBlast
import COpenCL
import Foundation
import HistoCore

/// CLBlast kernel parameters measured on a class of devices, applied once per device with
/// `CLBlastOverrideParameters` when the backend starts; other devices keep CLBlast's own database.
/// `bench --tune-clblast` searches the Xgemm parameters on the device at hand and prints an entry to add here.
public struct CLBlastTuning: Sendable {
    /// What a tuning entry is keyed by: loosely the driver and the device type, so the same driver on another
    /// CPU still gets the entry (the parameters suit the driver's code generation more than one CPU model).
    public struct DeviceKey: Sendable {
        public var platformName: String, vendor: String, driverVersion: String, isCPU: Bool
        public init(platformName: String, vendor: String, driverVersion: String, isCPU: Bool) {
            self.platformName = platformName; self.vendor = vendor; self.driverVersion = driverVersion; self.isCPU = isCPU
        }
        public init(_ device: OpenCLDevice) {
            self.init(platformName: device.platformName, vendor: device.vendor, driverVersion: device.driverVersion, isCPU: device.isCPU)
        }
        /// PoCL's CPU device: platform "Portable Computing Language", or "pocl" in the vendor or driver version.
        var isPoCLCPU: Bool {
            let text = [platformName, vendor, driverVersion].joined(separator: " ").lowercased()
            return isCPU && (text.contains("portable computing language") || text.contains("pocl"))
        }
    }

    public let name: String
    /// CLBlast kernel name ("Xgemm", …) → every one of its parameters (CLBlast rejects a partial set).
    public let kernels: [String: [String: Int]]
    let matches: @Sendable (DeviceKey) -> Bool

    /// The shipped entries, first match wins.
    public static let shipped: [CLBlastTuning] = [pocl]

    /// Measured with `bench --tune-clblast --seconds 0.3` on PoCL 3.1 (pthread, 2 shared cores of an AMD EPYC,
    /// AVX-512), the best total over both shapes of the first 17 candidates (the search was cut short): SGEMM 1024³
    /// 118.6 ms against 652 ms with CLBlast's defaults, the im2col product 512 ms against 653 ms (cores busy with other
    /// work; on idle cores SGEMM 1024³ 20.7 ms against 71.0 ms).
    /// No local-memory staging (SA = SB = 0): on a CPU the caches do that.
    static let pocl = CLBlastTuning(name: "PoCL CPU", kernels: ["Xgemm": xgemm(mwg: 64, nwg: 128, kwg: 32, mdimc: 8, ndimc: 8, vwm: 8, vwn: 8)],
                                    matches: { $0.isPoCLCPU })

    /// The shipped entry for this device, if any.
    public static func entry(for key: DeviceKey) -> CLBlastTuning? { shipped.first { $0.matches(key) } }

    /// An Xgemm parameter set without local-memory staging or strided access, the form `bench --tune-clblast` searches.
    public static func xgemm(mwg: Int, nwg: Int, kwg: Int, mdimc: Int, ndimc: Int, vwm: Int, vwn: Int, kwi: Int = 2) -> [String: Int] {
        ["GEMMK": 0, "KREG": 1, "KWG": kwg, "KWI": kwi, "MDIMA": mdimc, "MDIMC": mdimc, "MWG": mwg, "NDIMB": ndimc,
         "NDIMC": ndimc, "NWG": nwg, "SA": 0, "SB": 0, "STRM": 0, "STRN": 0, "VWM": vwm, "VWN": vwn]
    }

    /// Overrides CLBlast's single-precision parameters for `device` (process-wide) and drops CLBlast's compiled
    /// programs, so the next SGEMM builds with them.
    public func apply(to device: OpenCLDevice) throws { try Self.apply(kernels, to: device) }

    /// Overrides the given kernels' parameters (kernel name → every parameter) for `device`; see `apply(to:)`.
    public static func apply(_ kernels: [String: [String: Int]], to device: OpenCLDevice) throws {
        for (kernel, parameters) in kernels.sorted(by: { $0.key < $1.key }) {
            let sorted = parameters.sorted { $0.key < $1.key }
            let names = sorted.map { strdup($0.key)! }
            defer { names.forEach { free($0) } }
            var pointers: [UnsafePointer<CChar>?] = names.map { UnsafePointer($0) }
            var values = sorted.map(\.value)
            let status = CLBlastOverrideParameters(device.id, kernel, CLBlastPrecisionSingle, sorted.count, &pointers, &values)
            guard status == CLBlastSuccess else {
                throw EngineError.backend(name: "opencl (\(device.name))",
                                          message: "CLBlast rejected the \(kernel) parameters \(parameters): \(clBlastStatusName(status.rawValue))")
            }
        }
        CLBlastClearCache()
    }
}

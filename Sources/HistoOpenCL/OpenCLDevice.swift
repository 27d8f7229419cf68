import COpenCL
import Foundation
import HistoCore

/// A device found on this machine, with what kernels need to know about it.
public struct OpenCLDevice: CustomStringConvertible {
    public let platform: cl_platform_id
    public let id: cl_device_id
    public let name: String
    public let vendor: String
    public let platformName: String
    public let driverVersion: String
    public let isGPU: Bool
    /// A CPU device (PoCL's pthread device): kernels get `-D CPU_DEVICE` and pick CPU-friendly access orders.
    public let isCPU: Bool
    /// "OpenCL C 1.2 …" as the device reports it; kernels are built with a matching -cl-std.
    public let openCLCVersion: String
    public let extensions: Set<String>
    public let maxWorkGroupSize: Int
    public let localMemoryBytes: Int
    public let computeUnits: Int
    public let globalMemoryBytes: Int

    public var supportsFP16: Bool { extensions.contains("cl_khr_fp16") }
    public var supportsFP64: Bool { extensions.contains("cl_khr_fp64") }
    public var description: String {
        "\(name) (\(platformName), driver \(driverVersion), \(openCLCVersion), \(computeUnits) CUs, max work-group \(maxWorkGroupSize))"
    }

    /// The -cl-std option the device accepts: OpenCL C 1.2 where offered (all our kernels are 1.2), never higher.
    var standardOption: String {
        openCLCVersion.contains("1.1") && !openCLCVersion.contains("1.2") ? "-cl-std=CL1.1" : "-cl-std=CL1.2"
    }

    /// Every OpenCL device on this machine; empty when no driver or platform is installed (status -1001).
    public static func all() -> [OpenCLDevice] {
        var count: cl_uint = 0
        guard clGetPlatformIDs(0, nil, &count) == CL_SUCCESS, count > 0 else { return [] }
        var platforms = [cl_platform_id?](repeating: nil, count: Int(count))
        guard clGetPlatformIDs(count, &platforms, nil) == CL_SUCCESS else { return [] }
        var devices: [OpenCLDevice] = []
        for case let platform? in platforms {
            var n: cl_uint = 0
            guard clGetDeviceIDs(platform, cl_device_type(CL_DEVICE_TYPE_ALL), 0, nil, &n) == CL_SUCCESS, n > 0 else { continue }
            var ids = [cl_device_id?](repeating: nil, count: Int(n))
            guard clGetDeviceIDs(platform, cl_device_type(CL_DEVICE_TYPE_ALL), n, &ids, nil) == CL_SUCCESS else { continue }
            for case let id? in ids { devices.append(OpenCLDevice(platform: platform, id: id)) }
        }
        return devices
    }

    /// The device `HISTODIFF_OPENCL_DEVICE=N` or `index` names, else the first GPU, else the first device.
    public static func choose(index: Int? = nil) -> OpenCLDevice? {
        let devices = all()
        let requested = index ?? ProcessInfo.processInfo.environment["HISTODIFF_OPENCL_DEVICE"].flatMap { Int($0) }
        if let requested { return devices.indices.contains(requested) ? devices[requested] : nil }
        return devices.first(where: \.isGPU) ?? devices.first
    }

    init(platform: cl_platform_id, id: cl_device_id) {
        self.platform = platform
        self.id = id
        func string(_ param: cl_device_info) -> String {
            var size = 0
            clGetDeviceInfo(id, param, 0, nil, &size)
            var bytes = [CChar](repeating: 0, count: size + 1)
            clGetDeviceInfo(id, param, size, &bytes, nil)
            return String(cString: bytes).trimmingCharacters(in: .whitespaces)
        }
        func value<T: FixedWidthInteger>(_ param: cl_device_info, _ type: T.Type) -> Int {
            var v: T = 0
            clGetDeviceInfo(id, param, MemoryLayout<T>.size, &v, nil)
            return Int(v)
        }
        var size = 0
        clGetPlatformInfo(platform, cl_platform_info(CL_PLATFORM_NAME), 0, nil, &size)
        var bytes = [CChar](repeating: 0, count: size + 1)
        clGetPlatformInfo(platform, cl_platform_info(CL_PLATFORM_NAME), size, &bytes, nil)
        platformName = String(cString: bytes)
        name = string(cl_device_info(CL_DEVICE_NAME))
        vendor = string(cl_device_info(CL_DEVICE_VENDOR))
        driverVersion = string(cl_device_info(CL_DRIVER_VERSION))
        openCLCVersion = string(cl_device_info(CL_DEVICE_OPENCL_C_VERSION))
        extensions = Set(string(cl_device_info(CL_DEVICE_EXTENSIONS)).split(separator: " ").map(String.init))
        var type: cl_device_type = 0
        clGetDeviceInfo(id, cl_device_info(CL_DEVICE_TYPE), MemoryLayout<cl_device_type>.size, &type, nil)
        isGPU = type & cl_device_type(CL_DEVICE_TYPE_GPU) != 0
        isCPU = type & cl_device_type(CL_DEVICE_TYPE_CPU) != 0
        maxWorkGroupSize = value(cl_device_info(CL_DEVICE_MAX_WORK_GROUP_SIZE), Int.self)
        localMemoryBytes = value(cl_device_info(CL_DEVICE_LOCAL_MEM_SIZE), UInt64.self)
        computeUnits = value(cl_device_info(CL_DEVICE_MAX_COMPUTE_UNITS), UInt32.self)
        globalMemoryBytes = value(cl_device_info(CL_DEVICE_GLOBAL_MEM_SIZE), UInt64.self)
    }
}

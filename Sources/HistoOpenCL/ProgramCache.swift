import COpenCL
import Foundation
import HistoCore

/// Builds programs once per device and keeps the binaries on disk, keyed by SHA-256 of (source, options, device,
/// driver, platform, format version). Entries are written atomically (temporary file + rename); an unreadable or
/// stale entry is rebuilt from source. A failed build throws with the build log and the kernel file name.
struct ProgramCache {
    static let formatVersion = "1"
    let directory: URL?

    init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        if environment["HISTODIFF_OPENCL_CACHE"] == "off" { directory = nil; return }
        let base = environment["HISTODIFF_CACHE_DIR"].map { URL(fileURLWithPath: $0) }
            ?? environment["XDG_CACHE_HOME"].map { URL(fileURLWithPath: $0).appendingPathComponent("histodiff") }
            ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/histodiff")
        directory = base.appendingPathComponent("opencl")
    }

    func key(source: String, options: String, device: OpenCLDevice) -> String {
        SHA256.hex([Self.formatVersion, source, options, device.name, device.driverVersion, device.platformName,
                    device.openCLCVersion].joined(separator: "\u{0}"))
    }

    /// A built program for `source` on `device`: from the cache when possible, else compiled (and cached).
    func program(file: String, source: String, options: String, context: cl_context, device: OpenCLDevice) throws -> cl_program {
        let key = key(source: source, options: options, device: device)
        let entry = directory?.appendingPathComponent(key + ".bin")
        if let entry, let binary = try? Data(contentsOf: entry), !binary.isEmpty,
           let program = try? fromBinary(binary, options: options, context: context, device: device) {
            return program
        }
        let program = try compile(file: file, source: source, options: options, context: context, device: device)
        if let entry, let binary = binary(of: program) { store(binary, at: entry) }
        return program
    }

    private func compile(file: String, source: String, options: String, context: cl_context, device: OpenCLDevice) throws -> cl_program {
        var status: cl_int = 0
        let program: cl_program? = source.withCString { text in
            var pointer: UnsafePointer<CChar>? = text
            var length = strlen(text)
            return clCreateProgramWithSource(context, 1, &pointer, &length, &status)
        }
        try check(status, "creating program \(file)", device: device.name)
        var id: cl_device_id? = device.id
        let built = clBuildProgram(program, 1, &id, options, nil, nil)
        guard built == CL_SUCCESS else {
            let log = buildLog(program!, device: device)
            clReleaseProgram(program)
            throw EngineError.backend(name: "opencl (\(device.name))",
                                      message: "building Kernels/\(file).cl failed (\(clErrorName(built))), options \"\(options)\":\n\(log)")
        }
        return program!
    }

    private func fromBinary(_ binary: Data, options: String, context: cl_context, device: OpenCLDevice) throws -> cl_program {
        var status: cl_int = 0, binaryStatus: cl_int = 0
        var id: cl_device_id? = device.id
        let program: cl_program? = binary.withUnsafeBytes { raw in
            var pointer: UnsafePointer<UInt8>? = raw.bindMemory(to: UInt8.self).baseAddress
            var length = binary.count
            return clCreateProgramWithBinary(context, 1, &id, &length, &pointer, &binaryStatus, &status)
        }
        guard status == CL_SUCCESS, binaryStatus == CL_SUCCESS, let program else {
            throw EngineError.backend(name: "opencl", message: "cached binary rejected")
        }
        guard clBuildProgram(program, 1, &id, options, nil, nil) == CL_SUCCESS else {
            clReleaseProgram(program)
            throw EngineError.backend(name: "opencl", message: "cached binary does not build")
        }
        return program
    }

    private func binary(of program: cl_program) -> Data? {
        var size = 0
        guard clGetProgramInfo(program, cl_program_info(CL_PROGRAM_BINARY_SIZES), MemoryLayout<Int>.size, &size, nil) == CL_SUCCESS,
              size > 0 else { return nil }
        var bytes = [UInt8](repeating: 0, count: size)
        let ok = bytes.withUnsafeMutableBufferPointer { buffer -> Bool in
            var pointer: UnsafeMutablePointer<UInt8>? = buffer.baseAddress
            return clGetProgramInfo(program, cl_program_info(CL_PROGRAM_BINARIES), MemoryLayout<UnsafeMutablePointer<UInt8>?>.size, &pointer, nil) == CL_SUCCESS
        }
        return ok ? Data(bytes) : nil
    }

    private func store(_ binary: Data, at url: URL) {
        // A cache that cannot be written is only slower: failures are ignored.
        let dir = url.deletingLastPathComponent()
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let temporary = dir.appendingPathComponent(".\(url.lastPathComponent).\(ProcessInfo.processInfo.processIdentifier).tmp")
        guard (try? binary.write(to: temporary)) != nil else { return }
        if rename(temporary.path, url.path) != 0 { try? FileManager.default.removeItem(at: temporary) }
    }

    private func buildLog(_ program: cl_program, device: OpenCLDevice) -> String {
        var size = 0
        clGetProgramBuildInfo(program, device.id, cl_program_build_info(CL_PROGRAM_BUILD_LOG), 0, nil, &size)
        var bytes = [CChar](repeating: 0, count: size + 1)
        clGetProgramBuildInfo(program, device.id, cl_program_build_info(CL_PROGRAM_BUILD_LOG), size, &bytes, nil)
        return String(cString: bytes)
    }
}

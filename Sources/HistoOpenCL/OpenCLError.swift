import COpenCL
import HistoCore

/// OpenCL status codes by name, for error messages.
func clErrorName(_ code: cl_int) -> String {
    let names: [cl_int: String] = [
        0: "CL_SUCCESS", -1: "CL_DEVICE_NOT_FOUND", -2: "CL_DEVICE_NOT_AVAILABLE", -3: "CL_COMPILER_NOT_AVAILABLE",
        -4: "CL_MEM_OBJECT_ALLOCATION_FAILURE", -5: "CL_OUT_OF_RESOURCES", -6: "CL_OUT_OF_HOST_MEMORY",
        -7: "CL_PROFILING_INFO_NOT_AVAILABLE", -11: "CL_BUILD_PROGRAM_FAILURE",
        -14: "CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST", -30: "CL_INVALID_VALUE",
        -33: "CL_INVALID_DEVICE", -34: "CL_INVALID_CONTEXT", -36: "CL_INVALID_COMMAND_QUEUE",
        -38: "CL_INVALID_MEM_OBJECT", -44: "CL_INVALID_PROGRAM", -45: "CL_INVALID_PROGRAM_EXECUTABLE",
        -46: "CL_INVALID_KERNEL_NAME", -48: "CL_INVALID_KERNEL", -49: "CL_INVALID_ARG_INDEX",
        -50: "CL_INVALID_ARG_VALUE", -51: "CL_INVALID_ARG_SIZE", -52: "CL_INVALID_KERNEL_ARGS",
        -53: "CL_INVALID_WORK_DIMENSION", -54: "CL_INVALID_WORK_GROUP_SIZE", -55: "CL_INVALID_WORK_ITEM_SIZE",
        -56: "CL_INVALID_GLOBAL_OFFSET", -61: "CL_INVALID_BUFFER_SIZE", -63: "CL_INVALID_GLOBAL_WORK_SIZE",
        -1001: "CL_PLATFORM_NOT_FOUND_KHR",
    ]
    return names[code] ?? "OpenCL error \(code)"
}

/// CLBlast's status: OpenCL's codes (out of resources, allocation failure) by name, its own (from -1024) by number.
func clBlastStatusName(_ code: Int32) -> String {
    code > -1000 ? clErrorName(cl_int(code)) : "CLBlast status \(code)"
}

/// Throws `EngineError.backend` naming the device and what was being done when `code` is not CL_SUCCESS.
func check(_ code: cl_int, _ what: @autoclosure () -> String, device: String) throws {
    guard code == CL_SUCCESS else {
        throw EngineError.backend(name: "opencl (\(device))", message: "\(what()): \(clErrorName(code))")
    }
}

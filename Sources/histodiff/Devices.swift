import ArgumentParser
import HistoCore
import HistoOpenCL

/// `histodiff devices`: the compute devices this machine offers.
struct Devices: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the CPU backend and every OpenCL device.")

    func run() throws {
        print("cpu: the reference backend (OpenBLAS kernels: \(OpenBLASTuning.coreName), \(CPUThreads.count) threads)")
        let devices = OpenCLDevice.all()
        if devices.isEmpty { print("opencl: no platform or device found") }
        for (i, d) in devices.enumerated() { print("opencl:\(i): \(d)") }
    }
}

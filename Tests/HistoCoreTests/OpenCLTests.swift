import Foundation
import XCTest
import HistoCore
@testable import HistoOpenCL
import OpHarness

/// The OpenCL backend against the CPU reference, on whatever OpenCL device this machine has (PoCL in CI).
final class OpenCLTests: XCTestCase {
    /// PoCL is a CI dependency: where it is installed, a missing OpenCL device is a failure, not a skip.
    static var poclInstalled: Bool { FileManager.default.fileExists(atPath: "/etc/OpenCL/vendors/pocl.icd") }

    static let backend: OpenCLBackend? = try? OpenCLBackend.make()

    func requireBackend() throws -> OpenCLBackend {
        if let backend = Self.backend { return backend }
        if Self.poclInstalled { XCTFail("PoCL is installed but no OpenCL device could be opened"); throw XCTSkip("no device") }
        throw XCTSkip("no OpenCL platform or device on this machine")
    }

    func testEveryKernelFileBuilds() throws {
        let backend = try requireBackend()
        let files = KernelSources.files.keys.filter { $0.hasSuffix(".cl") }.sorted()
        for file in files {
            XCTAssertNoThrow(try backend.program(file: String(file.dropLast(3))), "Kernels/\(file)")
        }
        print("built \(files.count) kernel files on \(backend.device)")
        XCTAssertGreaterThan(files.count, 0, "no kernel file was built")
    }

    func testEmbeddedKernelsMatchKernelsDirectory() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let dir = root.appendingPathComponent("Kernels")
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".cl") || $0.hasSuffix(".h") }
        XCTAssertEqual(Set(names), Set(KernelSources.files.keys), "the EmbedKernels plugin did not embed every kernel file")
        for name in names {
            let text = try String(contentsOf: dir.appendingPathComponent(name), encoding: .utf8)
            XCTAssertEqual(text.trimmingCharacters(in: .newlines), KernelSources.files[name]?.trimmingCharacters(in: .newlines),
                           "Kernels/\(name) differs from the embedded copy")
        }
    }

    func testBuildFailureNamesFileAndLog() throws {
        let backend = try requireBackend()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("histodiff-bad-kernels-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try "__kernel void broken(__global float* x) { x[0] = undefined_name; }".write(
            to: dir.appendingPathComponent("broken.cl"), atomically: true, encoding: .utf8)
        setenv("HISTODIFF_KERNEL_DIR", dir.path, 1)
        defer { unsetenv("HISTODIFF_KERNEL_DIR") }
        let fresh = try OpenCLBackend(device: backend.device)
        XCTAssertThrowsError(try fresh.program(file: "broken")) { error in
            let text = "\(error)"
            XCTAssert(text.contains("broken.cl") && text.contains("undefined_name"), text)
        }
    }

    func testParityWithCPUReference() throws {
        let backend = try requireBackend()
        let (harness, fallbacks) = Harness.parityOfCatalog(on: backend)
        print("opencl parity: \(harness.casesRun) cases on \(backend.device.name); CPU fallbacks: \(fallbacks.keys.sorted())")
        XCTAssertGreaterThan(harness.casesRun, 0, "OpenCL ran zero cases")
        XCTAssert(fallbacks.isEmpty, "ops without an OpenCL kernel: \(fallbacks.keys.sorted())")
        for f in harness.failures { XCTFail(f.description) }
    }

    func testRandomDrawsAreBitIdentical() throws {
        let backend = try requireBackend()
        for distribution in [RandomDistribution.normal(mean: 0.5, std: 2), .uniform(-3, 1), .integer(-5, 17), .bernoulli(0.3)] {
            let op = { RandomGenerator(seed: 0x1234_5678_9ABC, offset: 6).draw([1001], distribution) }
            let cpu = try op().toArray(on: CPUBackend.shared), device = try op().toArray(on: backend)
            XCTAssertEqual(cpu.map(\.bitPattern), device.map(\.bitPattern), "\(distribution)")
        }
    }

    func testCLBlastTuningIsKeyedToPoCLCPUDevices() {
        let here = CLBlastTuning.DeviceKey(platformName: "Portable Computing Language", vendor: "AuthenticAMD",
                                           driverVersion: "3.1+debian", isCPU: true)
        XCTAssertEqual(CLBlastTuning.entry(for: here)?.name, "PoCL CPU")
        // PoCL on another CPU and driver version still gets the entry.
        let otherCPU = CLBlastTuning.DeviceKey(platformName: "Portable Computing Language", vendor: "GenuineIntel",
                                               driverVersion: "6.0", isCPU: true)
        XCTAssertEqual(CLBlastTuning.entry(for: otherCPU)?.name, "PoCL CPU")
        // PoCL's GPU devices, other CPU drivers and GPUs keep CLBlast's defaults.
        var poclGPU = here
        poclGPU.isCPU = false
        XCTAssertNil(CLBlastTuning.entry(for: poclGPU))
        XCTAssertNil(CLBlastTuning.entry(for: .init(platformName: "Intel(R) OpenCL", vendor: "Intel(R) Corporation",
                                                    driverVersion: "2023.16.7", isCPU: true)))
        XCTAssertNil(CLBlastTuning.entry(for: .init(platformName: "NVIDIA CUDA", vendor: "NVIDIA Corporation",
                                                    driverVersion: "550.54", isCPU: false)))
    }

    /// SGEMM on the backend, which applied the shipped CLBlast parameters when it started (where its device has an
    /// entry), against the CPU: products large enough for CLBlast's indirect Xgemm kernel, which the overrides
    /// change, with sizes that divide no tile.
    func testSGEMMUnderShippedCLBlastParametersMatchesCPU() throws {
        let backend = try requireBackend()
        print("CLBlast tuning on \(backend.device.name): \(CLBlastTuning.entry(for: .init(backend.device))?.name ?? "CLBlast defaults")")
        for (m, n, k, batches) in [(700, 513, 390, 1), (64, 1030, 577, 3)] {
            let a = try RandomGenerator(seed: 77).normal([batches, m, k]).materialized()
            let b = try RandomGenerator(seed: 78).normal([batches, k, n]).materialized()
            let cpu = try a.matmul(b).toArray(on: CPUBackend.shared), device = try a.matmul(b).toArray(on: backend)
            let worst = zip(cpu, device).map { abs($0 - $1) }.max() ?? 0
            XCTAssertLessThan(worst, 1e-3 * Float(k).squareRoot(), "sgemm \(m)×\(n)×\(k) batch \(batches)")
        }
    }
}

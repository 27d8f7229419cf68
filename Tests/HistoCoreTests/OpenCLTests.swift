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
        FallbackReport.shared.printsFirstOccurrence = false
        FallbackReport.shared.reset()
        var harness = Harness()
        for c in HarnessCatalog.all { harness.checkParity(c, backend: backend) }
        let fallbacks = FallbackReport.shared.counts
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
}

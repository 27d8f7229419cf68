// swift-tools-version: 6.0
import PackageDescription

// Numeric targets are compiled with -Ounchecked in release builds: their loops index by construction
// (shapes are validated when an op is recorded), and bounds checks would block vectorisation.
let numeric: [SwiftSetting] = [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]

let package = Package(
    name: "HistoDiff",
    platforms: [.macOS(.v13)],
    products: [
        .library(name: "HistoCore", targets: ["HistoCore"]),
        .library(name: "HistoNN", targets: ["HistoNN"]),
        .executable(name: "histodiff", targets: ["histodiff"]),
        .executable(name: "bench", targets: ["bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // System libraries (Debian packages named in README.md).
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS"),
        .systemLibrary(name: "COpenCL", path: "Sources/COpenCL"),
        .systemLibrary(name: "CCLBlast", path: "Sources/CCLBlast"),
        .systemLibrary(name: "CPNG", path: "Sources/CPNG"),

        // Tensors, ops (shape rule + CPU reference + VJP + harness cases), graph executor, autodiff, CPU backend.
        .target(name: "HistoCore", dependencies: ["CBLAS"], swiftSettings: numeric),
        // The generic op harness: parity against the CPU reference, finite differences, golden fixtures, perf.
        .target(name: "OpHarness", dependencies: ["HistoCore"], swiftSettings: numeric),
        // Layers, optimizers, schedules, EMA, safetensors checkpoints.
        .target(name: "HistoNN", dependencies: ["HistoCore"], swiftSettings: numeric),

        .executableTarget(
            name: "histodiff",
            dependencies: ["HistoCore", "HistoNN", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: numeric),
        .executableTarget(
            name: "bench",
            dependencies: ["HistoCore", "HistoNN", "OpHarness", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "benchmarks/bench",
            swiftSettings: numeric),

        .testTarget(name: "HistoCoreTests", dependencies: ["HistoCore", "OpHarness"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "HistoNNTests", dependencies: ["HistoCore", "HistoNN"],
                    resources: [.copy("Fixtures")]),
    ],
    swiftLanguageModes: [.v5]
)

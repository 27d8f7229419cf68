// swift-tools-version: 6.0
import PackageDescription

// Numeric targets are compiled with -Ounchecked in release builds: their loops index by construction
// (shapes are validated when an op is recorded), and bounds checks would block vectorisation. On x86-64 they
// target Haswell (AVX2 + FMA units; every x86 server since 2013): Swift never contracts a*b+c into an FMA on its
// own, so results stay identical to the kernels' (see Philox.swift).
#if arch(x86_64)
let cpuFlags = ["-target-cpu", "haswell"]
let avx512Flags = ["-target-cpu", "skylake-avx512"]
#else
let cpuFlags: [String] = []
let avx512Flags: [String] = []
#endif
let numeric: [SwiftSetting] = [.unsafeFlags(["-Ounchecked"] + cpuFlags, .when(configuration: .release))]

let package = Package(
    name: "HistoDiff",
    platforms: [.macOS(.v13)],
    products: [
        .library(name: "HistoCore", targets: ["HistoCore"]),
        .library(name: "HistoNN", targets: ["HistoNN"]),
        .library(name: "HistoData", targets: ["HistoData"]),
        .library(name: "HistoMetrics", targets: ["HistoMetrics"]),
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
        .systemLibrary(name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi"),

        // Tensors, ops (shape rule + CPU reference + VJP + harness cases), graph executor, autodiff, CPU backend.
        .target(name: "HistoCore", dependencies: ["CBLAS", "HistoAVX512"], swiftSettings: numeric),
        // GEMM and exponential kernels for AVX-512 CPUs, compiled for them and called only after a runtime check.
        .target(name: "HistoAVX512", dependencies: ["CBLAS"],
                swiftSettings: [.unsafeFlags(["-Ounchecked"] + avx512Flags, .when(configuration: .release))]),
        // The generic op harness: parity against the CPU reference, finite differences, golden fixtures, perf.
        .target(name: "OpHarness", dependencies: ["HistoCore"], swiftSettings: numeric),
        // The OpenCL backend: device discovery, program cache, kernel launches, CLBlast GEMM. Kernels/ is embedded.
        .target(name: "HistoOpenCL", dependencies: ["HistoCore", "COpenCL", "CCLBlast"], swiftSettings: numeric,
                plugins: ["EmbedKernels"]),
        .executableTarget(name: "kernel-embedder", path: "tools/kernel-embedder"),
        .plugin(name: "EmbedKernels", capability: .buildTool(), dependencies: ["kernel-embedder"],
                path: "tools/EmbedKernelsPlugin"),
        // Layers, optimizers, schedules, EMA, safetensors checkpoints.
        .target(name: "HistoNN", dependencies: ["HistoCore"], swiftSettings: numeric),
        // Data-parallel training on MPI: MPI_COMM_WORLD as HistoNN's ProcessGroup.
        .target(name: "HistoMPI", dependencies: ["HistoCore", "HistoNN", "CMPI"]),
        // PNG reading/writing (libpng's simplified API), dataset folders, conversion to tensors, patches, resizing.
        .target(name: "HistoData", dependencies: ["HistoCore", "CPNG"], swiftSettings: numeric),
        // Segmentation metrics on host label maps: confusion scores, AJI/AJI+, Hausdorff/HD95, threshold sweeps, run statistics.
        .target(name: "HistoMetrics", dependencies: ["HistoCore", "HistoData"], swiftSettings: numeric),

        // Noise schedules, diffusion UNets, sampling, pretraining, feature extraction, latent autoencoder.
        .target(name: "HistoDiffusion", dependencies: ["HistoCore", "HistoNN", "HistoData"], swiftSettings: numeric),
        // Segmentation models and methods (supervised baselines, GenSelfDiff, sliding-window inference, demo).
        .target(name: "HistoMethods", dependencies: ["HistoCore", "HistoNN", "HistoData", "HistoMetrics", "HistoDiffusion"],
                swiftSettings: numeric),

        .executableTarget(
            name: "histodiff",
            dependencies: ["HistoCore", "HistoNN", "HistoData", "HistoMetrics", "HistoOpenCL", "HistoDiffusion",
                           "HistoMethods", "HistoMPI",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: numeric),
        .executableTarget(
            name: "bench",
            dependencies: ["HistoCore", "HistoNN", "HistoData", "HistoDiffusion", "HistoMethods", "OpHarness", "HistoOpenCL", "CBLAS", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "benchmarks/bench",
            swiftSettings: numeric),

        .testTarget(name: "HistoCoreTests", dependencies: ["HistoCore", "OpHarness", "HistoOpenCL", "HistoAVX512", "CBLAS"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "HistoNNTests", dependencies: ["HistoCore", "HistoNN", "HistoData", "HistoOpenCL"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "HistoDiffusionTests", dependencies: ["HistoCore", "HistoNN", "HistoData", "HistoDiffusion", "HistoOpenCL"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "HistoMethodsTests",
                    dependencies: ["HistoCore", "HistoNN", "HistoData", "HistoMetrics", "HistoDiffusion",
                                   "HistoMethods", "HistoOpenCL"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "HistoDataTests", dependencies: ["HistoCore", "HistoData"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "HistoMetricsTests", dependencies: ["HistoCore", "HistoData", "HistoMetrics"],
                    resources: [.copy("Fixtures")]),
    ],
    swiftLanguageModes: [.v5]
)

import Foundation
import PackagePlugin

/// Build-tool plugin: embeds Kernels/*.cl and Kernels/*.h into the HistoOpenCL module as Swift string literals
/// at build time, so the binary needs no kernel files beside it and the repository holds no generated copy.
@main
struct EmbedKernels: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let kernels = context.package.directoryURL.appending(path: "Kernels")
        let files = try FileManager.default.contentsOfDirectory(at: kernels, includingPropertiesForKeys: nil)
            .filter { ["cl", "h"].contains($0.pathExtension) }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
        let output = context.pluginWorkDirectoryURL.appending(path: "KernelSources.swift")
        return [.buildCommand(displayName: "Embedding \(files.count) OpenCL kernel files",
                              executable: try context.tool(named: "kernel-embedder").url,
                              arguments: [output.path] + files.map(\.path),
                              inputFiles: files, outputFiles: [output])]
    }
}

import Foundation
import HistoCore

/// OpenCL C sources: the copies embedded at build time (the EmbedKernels build-tool plugin reads Kernels/),
/// or the files of `HISTODIFF_KERNEL_DIR` when set, for kernel development.
/// `#include "name.h"` lines are resolved here, from the same place, so no OpenCL compiler needs include paths.
struct KernelLibrary {
    let overrideDirectory: URL?

    init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        overrideDirectory = environment["HISTODIFF_KERNEL_DIR"].map { URL(fileURLWithPath: $0) }
    }

    var where_: String { overrideDirectory.map { "directory \($0.path)" } ?? "embedded kernels" }

    func raw(_ file: String) throws -> String {
        if let dir = overrideDirectory {
            let url = dir.appendingPathComponent(file)
            do { return try String(contentsOf: url, encoding: .utf8) } catch {
                throw EngineError.file(path: url.path, message: "cannot read kernel source (HISTODIFF_KERNEL_DIR): \(error.localizedDescription)")
            }
        }
        guard let text = KernelSources.files[file] else {
            throw EngineError.backend(name: "opencl", message: "no kernel file \(file) in the \(where_) (known: \(KernelSources.files.keys.sorted().joined(separator: ", ")))")
        }
        return text
    }

    /// The source of `Kernels/<family>.cl` with its includes inlined (each at most once).
    func source(family: String) throws -> String {
        var included = Set<String>()
        func expand(_ file: String) throws -> String {
            try raw(file).split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                guard trimmed.hasPrefix("#include \""), let name = trimmed.split(separator: "\"").dropFirst().first else { return String(line) }
                let header = String(name)
                guard included.insert(header).inserted else { return "// \(header) already included" }
                return "// begin \(header)\n" + (try expand(header)) + "\n// end \(header)"
            }.joined(separator: "\n")
        }
        return try expand(family + ".cl")
    }
}

import Foundation

// kernel-embedder OUTPUT FILE... : writes `enum KernelSources { static let files: [name: source] }`.
let arguments = CommandLine.arguments.dropFirst()
guard let output = arguments.first else {
    FileHandle.standardError.write(Data("usage: kernel-embedder OUTPUT.swift KERNEL...\n".utf8))
    exit(2)
}
var swift = "// Generated at build time from Kernels/ by tools/kernel-embedder. Do not edit.\n\n"
swift += "enum KernelSources {\n    static let files: [String: String] = [\n"
for path in arguments.dropFirst() {
    let url = URL(fileURLWithPath: path)
    let text = try String(contentsOf: url, encoding: .utf8)
    // A raw string delimited by more #s than any run of #s in the text cannot be closed early.
    var hashes = "#"
    while text.contains("\"" + hashes) { hashes += "#" }
    swift += "        \"\(url.lastPathComponent)\": \(hashes)\"\"\"\n\(text)\n\"\"\"\(hashes),\n"
}
swift += "    ]\n}\n"
try swift.write(toFile: output, atomically: true, encoding: .utf8)

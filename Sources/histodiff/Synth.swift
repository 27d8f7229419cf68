import ArgumentParser
import HistoData

/// `histodiff synth`: a synthetic H&E dataset with exact masks and instance maps.
struct Synth: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a seeded synthetic H&E nuclei dataset (images/, masks/, instances/).")

    @Option(help: "Output folder (must be empty or absent).") var out: String
    @Option(help: "Number of tiles.") var count = 24
    @Option(help: "Tile size in pixels.") var size = 256
    @Option(help: "Seed.") var seed: UInt64 = 0

    func run() throws {
        try SyntheticHistology.makeDataset(at: out, count: count, size: size, seed: seed)
        print("wrote \(count) synthetic \(size)×\(size) tiles to \(out)")
    }
}

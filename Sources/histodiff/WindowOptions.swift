import ArgumentParser
import HistoMethods

/// The sliding window of `segment` and `eval --model`. Options are optional so that `eval` can tell whether they
/// were given (they do not apply to `eval --pred`); `window()` fills in the defaults.
struct WindowOptions: ParsableArguments {
    @Option(help: "Tile size, a multiple of the network's downsampling (default 256).") var tile: Int?
    @Option(help: "Tile overlap fraction (default 0.25).") var overlap: Float?
    @Option(help: "Blending of overlapping tiles: gaussian (default) or constant.") var blending: String?

    var given: Bool { tile != nil || overlap != nil || blending != nil }

    func validate() throws {
        if let tile { try OptionCheck.positive(tile, "--tile") }
        if let overlap { try OptionCheck.fraction(overlap, "--overlap") }
    }

    func window() throws -> SlidingWindow {
        let weights: SlidingWindow.Blending
        switch blending ?? "gaussian" {
        case "gaussian": weights = .gaussian()
        case "constant": weights = .constant
        case let other: throw ValidationError("unknown blending '\(other)' (gaussian, constant)")
        }
        return try SlidingWindow(tile: tile ?? 256, overlap: overlap ?? 0.25, blending: weights, batchSize: 4, padding: .reflect)
    }
}

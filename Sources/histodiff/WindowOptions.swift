import ArgumentParser
import HistoMethods

/// The sliding window of `segment` and `eval --model`. Options are optional so that `eval` can tell whether they
/// were given (they do not apply to `eval --pred`); `window(for:)` fills in the defaults.
struct WindowOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Tile size, a multiple of the network's downsampling (default: the model's training "
                               + "patch; 256 for models trained before it was recorded).")) var tile: Int?
    @Option(help: "Tile overlap fraction (default 0.25).") var overlap: Float?
    @Option(help: "Blending of overlapping tiles: gaussian (default) or constant.") var blending: String?

    var given: Bool { tile != nil || overlap != nil || blending != nil }

    func validate() throws {
        if let tile { try OptionCheck.positive(tile, "--tile") }
        if let overlap { try OptionCheck.fraction(overlap, "--overlap") }
    }

    /// The window for `model`: its card's default tile unless --tile is given.
    func window(for model: TrainedModel) throws -> SlidingWindow {
        let weights: SlidingWindow.Blending?
        switch blending {
        case nil: weights = nil
        case "gaussian": weights = .gaussian()
        case "constant": weights = .constant
        case let other?: throw ValidationError("unknown blending '\(other)' (gaussian, constant)")
        }
        return try SlidingWindow.segmentation(tile: tile ?? model.card.defaultTile, overlap: overlap, blending: weights)
    }
}

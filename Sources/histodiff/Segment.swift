import ArgumentParser
import HistoMethods
import HistoNN

/// `histodiff segment`: whole images of any size by sliding-window inference with blended tiles.
struct Segment: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Segment images: writes masks/NAME.png, probabilities/NAME.png, instances/NAME.png (16-bit ids, the "
            + "run's postprocess.json) and overlays/NAME.png (one colour per instance) under --out.")

    @Option(help: "Trained model: a run folder of `histodiff train` or its best.safetensors (model.json beside it).")
    var model: String
    @Argument(help: "PNG images.") var images: [String]
    @Option(help: "Output folder.") var out: String
    @OptionGroup var window: WindowOptions
    @OptionGroup var device: DeviceOptions

    func validate() throws {
        guard !images.isEmpty else { throw ValidationError("no images given: name at least one PNG image") }
    }

    func run() throws {
        let trained = try TrainedModel(path: model)
        let segmenter = try ImageSegmenter(model: trained, window: window.window(for: trained),
                                           backend: device.backend())
        let progress = ProgressReporter(total: images.count, label: "segment")
        try segmenter.segment(images, to: out, notice: { progress.message($0) }) { done, _ in
            progress.update(step: done)
        }
        progress.message("\(progress.summary(step: images.count)); masks, probabilities, instances and overlays "
                         + "in \(out)")
    }
}

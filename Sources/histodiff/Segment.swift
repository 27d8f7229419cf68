import ArgumentParser
import Foundation
import HistoCore
import HistoData
import HistoMethods
import HistoNN

/// `histodiff segment`: whole images of any size by sliding-window inference with blended tiles.
struct Segment: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Segment images: writes masks/NAME.png, probabilities/NAME.png and overlays/NAME.png under --out.")

    @Option(help: "Trained model: a run folder of `histodiff train` or its best.safetensors.") var model: String
    @Argument(help: "PNG images.") var images: [String]
    @Option(help: "Output folder.") var out: String
    @Option(help: "Tile size.") var tile = 256
    @Option(help: "Tile overlap fraction.") var overlap: Float = 0.25
    @Option(help: "Blending: gaussian or constant.") var blending = "gaussian"
    @OptionGroup var device: DeviceOptions

    func run() throws {
        let backend = try device.backend()
        let network = try Segment.load(model)
        let window = try SlidingWindow(tile: tile, overlap: overlap, blending: blending == "constant" ? .constant : .gaussian(),
                                       batchSize: 4, padding: .reflect)
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        for path in images {
            let image = try PNG.read(path: path)
            let name = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
            let probabilities = try window.infer(image.colorPlanes(), on: backend) { network($0).softmax(axis: 1) }
            try SegmentationOutputs.write(image: image, probabilities: probabilities, to: out, name: name)
            print("\(path) → \(out)/masks/\(name).png")
        }
    }

    /// The network described by the model card beside `weights`, with those weights, in eval mode.
    static func load(_ weights: String) throws -> any SegmentationModel {
        let (card, file) = try ModelCard.read(near: weights)
        let network = try card.segmentationArchitecture.makeModel(generator: RandomGenerator(seed: 0))
        _ = try network.load(from: file)
        network.train(false)
        return network
    }
}

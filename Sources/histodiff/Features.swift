import ArgumentParser
import Foundation
import HistoCore
import HistoData
import HistoDiffusion
import HistoNN

/// `histodiff features`: diffusion features of images, one safetensors file each.
struct FeaturesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "features",
        abstract: "Diffusion features: per image, OUT/NAME.safetensors holding the named blocks' outputs [C, H, W] at each timestep.")

    @Option(help: "A pretrain run folder (its ema.safetensors), or a .safetensors file in one.") var model: String
    @Option(help: "Comma-separated block names, e.g. middle_block,output_blocks.7 (an unknown name lists the valid ones).")
    var blocks: String
    @Option(help: "Comma-separated timesteps.") var timesteps = "50,150,250"
    @Flag(help: "Feed x_t (noise from --seed, the same for every image) instead of the clean image.") var noised = false
    @Option(help: "Seed of the --noised noise.") var seed: UInt64 = 0
    @Option(help: "Resize every map to SIZE×SIZE (bilinear); default: each block's own size.") var size: Int?
    @Flag(help: "One tensor per block (<block>), its timesteps concatenated along channels, instead of <block>.t<T>.")
    var concat = false
    @Option(help: "Cache folder of unresized maps, reused while the model file, blocks, timesteps and input stay the same.")
    var cache: String?
    @Option(help: "Output folder.") var out: String
    @Argument(help: "PNG images; sides must be multiples of the model's downsampling.") var images: [String]
    @OptionGroup var device: DeviceOptions

    func validate() throws {
        if let size { try OptionCheck.positive(size, "--size") }
    }

    func run() throws {
        let blockNames = blocks.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        let steps = try timesteps.split(separator: ",").map { text -> Int in
            guard let t = Int(text.trimmingCharacters(in: .whitespaces)), t >= 0 else {
                throw ValidationError("--timesteps: '\(text)' is not a non-negative integer")
            }
            return t
        }
        let names = images.map { (($0 as NSString).lastPathComponent as NSString).deletingPathExtension }
        let repeated = Set(names.filter { name in names.filter { $0 == name }.count > 1 })
        guard repeated.isEmpty else {
            throw ValidationError("images with the same file name would write the same feature file: \(repeated.sorted().joined(separator: ", "))")
        }
        let backend = try device.backend()
        let diffusion = try DiffusionRun.load(model)
        let extractor = try diffusion.featureExtractor(blocks: blockNames, timesteps: steps, noisedSeed: noised ? seed : nil,
                                                       outputSize: size.map { [$0, $0] })
        let weights = DiffusionRun.weightsFile(model)
        let modified = try FileManager.default.attributesOfItem(atPath: weights)[.modificationDate] as? Date
        // The cache tells models apart by this tag: the weights file and when it was written.
        let featureCache = cache.map {
            FeatureCache(directory: $0, tag: "\(URL(fileURLWithPath: weights).standardizedFileURL.path) \(modified?.timeIntervalSince1970 ?? 0)")
        }
        let metadata = ["model": weights, "timesteps": steps.map(String.init).joined(separator: ","),
                        "input": noised ? "noised, seed \(seed)" : "clean"]
        try FileSystem.createFolder(out, purpose: "output")
        let progress = ProgressReporter(total: images.count, label: "features")
        for (index, (path, name)) in zip(images, names).enumerated() {
            let image = try PNG.read(path: path)
            try diffusion.checkImageSize(height: image.height, width: image.width, path)
            let pixels = Planes.batch([image.colorPlanes()])
            let input = try diffusion.modelInput(pixels, on: backend)
            // A conditioned run (pretrain --hipt) sees the image's own HIPT embedding.
            let context = try diffusion.context(pixels, on: backend)
            let features = try featureCache.map {
                try extractor(input, ids: [name], cache: $0, context: context, on: backend)
            } ?? extractor(input, context: context, on: backend)
            let named = try features.namedTensors(image: 0, concatenated: concat)
            let file = (out as NSString).appendingPathComponent(name + ".safetensors")
            try SafeTensors.write(named, metadata: metadata, to: file)
            progress.message("\(path) → \(file): " + named.map { "\($0.name) \(describe($0.tensor.shape))" }.joined(separator: ", "))
            progress.update(step: index + 1)
        }
    }
}

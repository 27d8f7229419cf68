import ArgumentParser
import HistoMethods

/// `histodiff demo`: the main job (see `Demo` in HistoMethods).
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Pretrain a small diffusion model, fine-tune it with GenSelfDiff on a few labels, train the supervised "
            + "baseline on the same labels, and compare both on held-back images (synthetic H&E data unless --data).")

    @Option(help: "Dataset folder (images/, masks/), e.g. ../shared/data/monuseg-train; default: generated synthetic data.")
    var data: String?
    @Option(help: "Output folder.") var out = "histodiff-demo"
    @Flag(help: "A reduced run (small data, few steps), as CI runs it.") var quick = false
    @Option(help: "Labelled fraction of the training images.") var labels = "1/8"
    @Option(help: "Seed.") var seed: UInt64 = 0
    @Flag(help: "Also fine-tune GenSelfDiff from random initialisation, to see what pretraining adds.") var compareRandomInit = false
    @Option(help: "Diffusion pretraining steps (default 250; 20 with --quick).") var pretrainSteps: Int?
    @Option(help: "Epochs of fine-tuning and of the supervised baseline (default 15; 2 with --quick).") var epochs: Int?
    @Option(help: "Fine-tune these cpu GenSelfDiff weights (ema.safetensors of `histodiff pretrain`) instead of pretraining; they must not have seen the held-back images.")
    var pretrained: String?
    @OptionGroup var device: DeviceOptions

    func run() throws {
        var configuration = Demo.Configuration(data: data, output: out)
        configuration.quick = quick
        configuration.seed = seed
        configuration.labelRatio = labels
        configuration.includeRandomInit = compareRandomInit
        configuration.pretrainSteps = pretrainSteps
        configuration.epochs = epochs
        configuration.pretrained = pretrained
        configuration.backend = try device.backend()
        _ = try Demo.run(configuration)
    }
}

import ArgumentParser
import Foundation
import HistoCore
import HistoData
import HistoMethods
import HistoNN

/// The options of one training run besides the method, the labels, the seed and the folder: shared by `train` and
/// by `experiment` (which takes them after `--` for every run of its grid).
struct TrainingOptions: ParsableArguments {
    @Option(help: "Model size: cpu or paper (sets the method's recipe; see the list above); genselfdiff also gland.")
    var preset = "cpu"
    @Option(help: "Image-only folder added as unlabelled images (repeatable).") var unlabelled: [String] = []
    @Option(help: "How the label share is rounded: nearest, floor (DTSeg) or ceil (Ciampi).") var rounding = "nearest"
    @Option(help: "Validation share of the images with masks.") var validation = "1/5"
    @Flag(help: "Validate on the label share of the validation images only (DTSeg).")
    var validationFollowsLabels = false
    @Option(help: "Patch size (a multiple of the network's downsampling).") var patch: Int?
    @Option(help: "Batch size (labelled).") var batch: Int?
    @Option(help: "Unlabelled batch size of semi-supervised methods (default: --batch).") var unlabelledBatch: Int?
    @Option(help: "Random crops per labelled image and epoch.") var cropsPerImage: Int?
    @Option(help: "Epochs.") var epochs: Int?
    @Option(help: "Iterations instead of epochs (SSL4MIS counts iterations).") var iterations: Int?
    @Option(help: "Validations without a better score before stopping (0: never stop early).") var patience: Int?
    @Option(help: "Base learning rate of the method's optimizer.") var lr: Float?
    @Option(help: "Validate every N steps (default: every epoch).") var validateEvery: Int?
    @Option(help: "Save the resume checkpoint every N steps (default: every epoch).") var checkpointEvery: Int?
    @Option(help: "Validation metric that keeps the best weights: dice, miou or jaccard-sweep.") var metric: String?
    @Option(help: "Validate on the centred square of this side of each validation image.") var validationCrop: Int?
    @Option(help: ArgumentHelp("Cut every image, mask and instance map into N×N non-overlapping crops first, each "
                               + "an item of the split (labels count crops; validation keeps an image's crops "
                               + "together), before --resize (CDCL's MoNuSeg: 4 with --resize 320); segment and "
                               + "eval --model cut alike and stitch.", valueName: "n"))
    var gridCrops = 1
    @Option(help: ArgumentHelp("Resize every image (bilinear) and mask (nearest) to SIDE×SIDE first (XNet's GlaS: "
                               + "128); segment and eval --model resize alike and write masks at the image's size.",
                               valueName: "side"))
    var resize: Int?
    @Option(help: ArgumentHelp("Input normalisation: range (the method's pixel range) or dataset (per-channel "
                               + "mean/std of the split's training images, recorded in model.json; XNet)."))
    var normalize = "range"
    @Option(help: ArgumentHelp("What the network learns: binary (the masks) or boundary (nuclei: background, "
                               + "interior, boundary, from instances/ where present, else the masks' components)."))
    var target = "binary"
    @Option(help: "With --target boundary: boundary width in pixels.") var boundaryWidth = 2
    @Option(help: ArgumentHelp("Training augmentation instead of the method's: "
                               + Augmentation.presets.map(\.name).joined(separator: ", ")
                               + " (dtseg: DTSeg's MONAI transforms, SPEC §1).", valueName: "preset"))
    var augment: String?
    @Option(help: "A method option NAME=VALUE (repeatable; see the list above).") var option: [String] = []
    @Option(help: "supervised: unet or fpn (same as --option arch=…).") var arch: String?
    @Option(help: "supervised: ce, dice or ce+dice (same as --option loss=…).") var loss: String?
    @Option(help: "genselfdiff: a `histodiff pretrain` run folder or its ema.safetensors (= --option pretrained=…).")
    var pretrained: String?
    @OptionGroup var device: DeviceOptions

    /// `request` with these options applied.
    func apply(to request: inout TrainingRequest) throws {
        guard let rounding = Rounding(rawValue: rounding) else {
            throw ValidationError("unknown --rounding '\(rounding)' (nearest, floor, ceil)")
        }
        request.preset = preset
        request.unlabelled = unlabelled
        request.rounding = rounding
        request.validation = validation
        request.validationFollowsLabels = validationFollowsLabels
        request.patch = patch
        request.batch = batch
        request.unlabelledBatch = unlabelledBatch
        request.cropsPerImage = cropsPerImage
        request.epochs = epochs
        request.iterations = iterations
        request.patience = patience
        request.learningRate = lr
        request.validateEvery = validateEvery
        request.checkpointEvery = checkpointEvery
        request.validationCrop = validationCrop
        if gridCrops < 1 { throw ValidationError("--grid-crops \(gridCrops) must be at least 1 (1: whole images)") }
        request.gridCrops = gridCrops
        if let resize, resize <= 0 { throw ValidationError("--resize \(resize) must be a positive side") }
        request.resize = resize
        request.augmentation = augment
        switch normalize {
        case "range": request.normalizesByDataset = false
        case "dataset": request.normalizesByDataset = true
        default: throw ValidationError("unknown --normalize '\(normalize)' (range, dataset)")
        }
        switch target {
        case "binary": request.target = .binary
        case "boundary":
            guard boundaryWidth >= 1 else {
                throw ValidationError("--boundary-width \(boundaryWidth) must be at least 1")
            }
            request.target = .boundary(width: boundaryWidth)
        default: throw ValidationError("unknown --target '\(target)' (binary, boundary)")
        }
        if let metric {
            guard let value = TrainingPlan.ValidationMetric(rawValue: metric) else {
                throw ValidationError("unknown --metric '\(metric)' (dice, miou, jaccard-sweep)")
            }
            request.metric = value
        }
        var options: [String: String] = [:]
        for pair in option {
            guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
                throw ValidationError("--option '\(pair)' is not NAME=VALUE")
            }
            options[String(pair[..<equals])] = String(pair[pair.index(after: equals)...])
        }
        for (name, value) in [("arch", arch), ("loss", loss), ("pretrained", pretrained)] {
            if let value { options[name] = value }
        }
        request.methodOptions = options
        request.backend = try device.backend()
        request.group = Parallel.group
    }
}

/// `histodiff train`: a segmentation method of the registry on a dataset folder, validated on held-back images.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a segmentation method on a dataset folder (labelled share by ratio or count, validation "
            + "by image).",
        discussion: """
        Images with a mask are labelled candidates; images without one (and --unlabelled folders) are unlabelled. \
        RUN gets best.safetensors (the kept weights), model.json, split.json and training.json at once, \
        metrics.csv, loss_curve.png and checkpoint/, and at the end postprocess.json: the instance \
        post-processing (thresholds, minimum area) of largest AJI on the validation images, used by segment, \
        eval --model and experiment. A run stopped by Ctrl-C, SIGTERM or a crash resumes when the \
        same command is run again (the settings must match; only --device may change).

        Methods:
        \(MethodRegistry.listing)
        """)

    @Option(help: "Method (see the list above).") var method = "supervised"
    @Option(help: "Dataset folder with images/ and masks/ (images without a mask are unlabelled).") var data: String
    @Option(help: "Run folder.") var out: String
    @Option(help: "Labelled share of the training images: 1/8, 12.5%, or a count such as 5.") var labels = "1/8"
    @Option(help: "Reuse the split of this split.json instead of making one.") var split: String?
    @Option(help: "Seed of the split, the weights, the noise and the batches.") var seed: UInt64 = 0
    @OptionGroup var training: TrainingOptions

    func run() throws {
        var request = TrainingRequest(method: method, data: data, directory: out)
        request.labels = labels
        request.splitFile = split
        request.seed = seed
        try training.apply(to: &request)
        let dataset = try request.openDataset()
        let result = try MethodTraining.run(request, dataset: dataset)
        if case .interrupted = result.outcome { throw result.outcome.exitCode }
        guard Parallel.group.isRoot else { return }  // rank 0 tunes and reports
        let tuned = try InstanceTuning.run(after: result, request: request, dataset: dataset)
        print(String(format: "instances: %@ (validation AJI %.4f; untuned %.4f)", tuned.chosen.description,
                     tuned.aji, tuned.defaultsAJI))
        let best = result.best.map {
            String(format: "best validation score %.4f (Dice %.4f, IoU %.4f) after step %d (epoch %.4g)",
                   $0.score, $0.dice, $0.iou, $0.step, $0.epoch)
        } ?? "no validation yet"
        print("\(best); \(result.steps)/\(result.totalSteps) steps; weights \(result.bestWeights ?? "not written")")
    }
}

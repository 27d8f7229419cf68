import ArgumentParser
import Foundation
import HistoData
import HistoMethods
import HistoMetrics
import HistoNN

/// `histodiff eval`: scores predicted masks against ground truth (the work is `HistoMetrics.FolderEvaluation`), either
/// from folders of masks (`--pred --gt`) or by segmenting a dataset with a trained model first (`--model --data`).
struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Score predicted binary masks against ground truth: Dice (F1), IoU, AJI, AJI+, detection F1, HD, "
            + "HD95, accuracy, specificity, sensitivity.",
        discussion: """
        Two modes. --pred DIR --gt DIR scores a folder of predicted masks against a folder of ground-truth masks. \
        --model RUN --data DIR segments the dataset's images with a trained model first (by default the validation \
        images of the run's split.json; --split another split file; --all every image with a mask), writing masks/, \
        probabilities/, instances/ (the run's postprocess.json) and overlays/ under --out (default RUN/eval), then \
        scores them against DIR/masks (AJI, AJI+ and detection F1 of those instances against DIR/instances when \
        every evaluated image has an instance map). Detection F1 matches instances one-to-one at IoU ≥ 0.5. \
        Masks are PNG files matched by name (NAME.png in both folders); 0 is background, any value above 0 foreground. \
        Every missing, unmatched or size-mismatched file is reported at once. The table shows the pooled scores \
        (pixel counts, AJI intersections and unions summed over all images), the per-image mean, and one row per \
        image. --classes K (K > 2, with --pred/--gt) reads the masks as class ids 0..K-1 with 255 = ignore and adds \
        per-class IoU and F1 and their means over the K classes, background included, pooled over all pixels \
        (DTSeg's mIoU).
        """)

    @Option(help: "Folder of predicted masks (with --gt).") var pred: String?
    @Option(help: "Folder of ground-truth masks (with --pred).") var gt: String?
    @Option(help: "With --pred: folder of ground-truth instance maps (16-bit ids, 0 = background) for AJI; without it the ground truth's 8-connected components are the instances.")
    var instances: String?
    @Option(help: ArgumentHelp("With --pred: folder of predicted instance maps (e.g. segment's instances/); "
                               + "without it the predictions' 8-connected components are the instances."))
    var predInstances: String?

    @Option(help: "Trained model to evaluate (with --data): a run folder of `histodiff train` or its best.safetensors.")
    var model: String?
    @Option(help: "With --model: dataset folder (images/, masks/, optional instances/).") var data: String?
    @Option(help: "With --model: the split whose validation images are evaluated (default: the run's split.json).")
    var split: String?
    @Flag(help: "With --model: evaluate every image of the dataset that has a mask.") var all = false
    @Option(help: "With --model: output folder; its masks/, probabilities/, overlays/ and truth/ hold this evaluation's images only (default: RUN/eval).")
    var out: String?
    @OptionGroup var window: WindowOptions
    @OptionGroup var device: DeviceOptions

    @Option(help: ArgumentHelp("With --pred: the masks' number of classes; above 2 they are class ids (255 = ignore) "
                               + "scored per class too.", valueName: "K"))
    var classes = 2

    @Option(help: "Write the scores as JSON to this file (with --model default: OUT/scores.json).") var json: String?
    @Option(help: "Write the scores as CSV to this file.") var csv: String?

    func validate() throws {
        guard classes >= 2 else { throw ValidationError("--classes \(classes): a segmentation has at least 2") }
        let modelOptions = [("--data", data != nil), ("--split", split != nil), ("--all", all), ("--out", out != nil),
                            ("--tile/--overlap/--blending", window.given)].filter(\.1).map(\.0)
        if model != nil {
            let folderOptions = [("--pred", pred != nil), ("--gt", gt != nil), ("--instances", instances != nil),
                                 ("--pred-instances", predInstances != nil)].filter(\.1).map(\.0)
            guard folderOptions.isEmpty else {
                throw ValidationError("\(folderOptions.joined(separator: ", ")) cannot be combined with --model: give either --model RUN --data DIR or --pred DIR --gt DIR")
            }
            guard data != nil else { throw ValidationError("--model needs --data DIR, the dataset to segment and score") }
            guard classes == 2 else {
                throw ValidationError("--classes goes with --pred/--gt: segment writes binary masks")
            }
            guard !(all && split != nil) else { throw ValidationError("--split and --all exclude each other") }
        } else if pred != nil || gt != nil {
            guard pred != nil, gt != nil else { throw ValidationError("--pred and --gt go together") }
            guard modelOptions.isEmpty else {
                throw ValidationError("\(modelOptions.joined(separator: ", ")) only apply with --model; --pred/--gt score existing masks")
            }
        } else {
            throw ValidationError("give --model RUN --data DIR (segment and score) or --pred DIR --gt DIR (score masks)")
        }
    }

    func run() throws {
        let evaluation: FolderEvaluation
        var json = self.json
        if let model, let data {
            let trained = try TrainedModel(path: model)
            let segmenter = try ImageSegmenter(model: trained, window: window.window(for: trained),
                                               backend: device.backend())
            let dataset = try Dataset.open(path: data)
            let names: [String]
            if all {
                names = dataset.items.filter { $0.maskPath != nil }.map(\.name)
            } else {
                let splitPath = split ?? trained.splitPath
                guard split != nil || FileManager.default.fileExists(atPath: splitPath) else {
                    throw ValidationError("\(splitPath) does not exist: give --split SPLIT.json or --all")
                }
                // A run of grid crops splits crops; its validation images are those the crops come from.
                let cropped = try dataset.gridCropped(GridCrops(trained.card.gridCrops ?? 1))
                names = cropped.sources(of: try DataSplit.read(path: splitPath, dataset: cropped).validation)
                guard !names.isEmpty else { throw ValidationError("\(splitPath) has no validation images: give --all") }
            }
            let output = out ?? (trained.directory as NSString).appendingPathComponent("eval")
            json = json ?? (output as NSString).appendingPathComponent("scores.json")
            let progress = ProgressReporter(total: names.count, label: "segment")
            evaluation = try ModelEvaluation.run(segmenter, dataset: dataset, names: names, output: output) { done, _ in
                progress.update(step: done)
            }
            progress.message("\(progress.summary(step: evaluation.images.count)); masks, probabilities, instances "
                             + "and overlays in \(output)")
        } else {
            evaluation = try FolderEvaluation(predictionFolder: pred!, truthFolder: gt!, instanceFolder: instances,
                                              predictionInstanceFolder: predInstances, classes: classes)
        }
        print(evaluation.table())
        if let json {
            try FolderEvaluation.write(evaluation.json(), to: json)
            print("scores written to \(json)")
        }
        if let csv { try FolderEvaluation.write(evaluation.csv(), to: csv) }
    }
}

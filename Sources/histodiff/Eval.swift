import ArgumentParser
import HistoMetrics

/// `histodiff eval`: scores predicted masks against ground truth (the work is `HistoMetrics.FolderEvaluation`).
struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Score predicted binary masks against ground truth: Dice (F1), IoU, AJI, AJI+, HD, HD95, accuracy, specificity, sensitivity.",
        discussion: """
        Masks are PNG files matched by name (NAME.png in both folders); 0 is background, any value above 0 foreground. \
        Every missing, unmatched or size-mismatched file is reported at once. The table shows the pooled scores \
        (pixel counts, AJI intersections and unions summed over all images), the per-image mean, and one row per image.
        """)

    @Option(help: "Folder of predicted masks.")
    var pred: String

    @Option(help: "Folder of ground-truth masks.")
    var gt: String

    @Option(help: "Folder of ground-truth instance maps (16-bit ids, 0 = background) for AJI; without it the ground truth's 8-connected components are the instances.")
    var instances: String?

    @Option(help: "Write the scores as JSON to this file.")
    var json: String?

    @Option(help: "Write the scores as CSV to this file.")
    var csv: String?

    func run() throws {
        let evaluation = try FolderEvaluation(predictionFolder: pred, truthFolder: gt, instanceFolder: instances)
        print(evaluation.table())
        if let json { try FolderEvaluation.write(evaluation.json(), to: json) }
        if let csv { try FolderEvaluation.write(evaluation.csv(), to: csv) }
    }
}

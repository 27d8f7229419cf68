import ArgumentParser
import Foundation
import HistoCore
import HistoData
import HistoNN
import HistoOpenCL

/// `--device`: where the graph runs.
struct DeviceOptions: ParsableArguments {
    @Option(help: "cpu, opencl (a GPU if any, else any OpenCL device) or opencl:N (see `histodiff devices`).")
    var device = "cpu"

    func backend() throws -> any Backend { try BackendSelection.backend(device) }
}

/// Options every training command shares.
struct RunOptions: ParsableArguments {
    @Option(help: "Run directory: checkpoints, metrics.csv, loss curve and images. Resumes when it holds a checkpoint.")
    var out: String
    @Option(help: "Optimizer steps.") var steps: Int
    @Option(help: "Checkpoint every N steps (0: only at the end or on Ctrl-C).") var checkpointEvery = 200
    @Option(help: "Seed for initialisation, data order, augmentation and noise.") var seed: UInt64 = 0
}

extension TrainingOutcome {
    /// Exit code for the CLI: 130 after Ctrl-C (as shells report it), 0 otherwise.
    var exitCode: ExitCode { if case .interrupted = self { return ExitCode(130) }; return .success }
}

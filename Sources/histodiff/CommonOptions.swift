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

    /// A rank of a data-parallel job takes the GPU of its local rank for `opencl`.
    func backend() throws -> any Backend { try BackendSelection.backend(device, localRank: Parallel.localRank) }
}

/// Options every training command shares.
struct RunOptions: ParsableArguments {
    @Option(help: "Run directory: checkpoints, metrics.csv, loss curve and images. Resumes when it holds a checkpoint.")
    var out: String
    @Option(help: "Optimizer steps.") var steps: Int
    @Option(help: "Checkpoint every N steps (0: only at the end or on Ctrl-C).") var checkpointEvery = 200
    @Option(help: "Seed for initialisation, data order, augmentation and noise.") var seed: UInt64 = 0

    func validate() throws {
        try OptionCheck.positive(steps, "--steps")
        try OptionCheck.nonNegative(checkpointEvery, "--checkpoint-every", zero: "only at the end or on Ctrl-C")
    }

    /// Says where a resumed run continues ("resuming from step N of M"); throws when `--steps` is below the steps
    /// it has done.
    func announceResume(done: Int) throws {
        guard done > 0, Parallel.group.isRoot else { return }
        guard steps >= done else {
            throw CommandError("--steps \(steps) is below the \(done) steps the run in \(out) has done; "
                               + "give --steps \(done) or more to resume it, or choose another --out")
        }
        print("resuming from step \(done) of \(steps)")
    }

    /// Takes the run folder's lock (`RunLock`), printing the notice when a stale lock was taken over; nil on
    /// the ranks of a data-parallel job but rank 0, which alone writes the folder.
    func lockRunFolder() throws -> RunLock? {
        guard Parallel.group.isRoot else { return nil }
        let lock = try RunLock.acquire(directory: out)
        if let notice = lock.takenOver { print(notice) }
        return lock
    }
}

extension TrainingOutcome {
    /// Exit code for the CLI: 128 + the signal after SIGINT or SIGTERM, as shells report a process the signal
    /// ended (130 for Ctrl-C, 143 for SIGTERM), although the run stopped cleanly after saving; 0 otherwise.
    var exitCode: ExitCode {
        if case let .interrupted(signal) = self { return ExitCode(128 + signal) }
        return .success
    }
}

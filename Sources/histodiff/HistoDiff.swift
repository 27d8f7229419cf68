import ArgumentParser
import Foundation
import HistoCore
import HistoMethods
import HistoMPI
import HistoNN

/// The `histodiff` command line. Each subcommand lives in its own file in this folder.
@main
struct HistoDiff: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "histodiff",
        abstract: "Semi-supervised segmentation of nuclei and glands in H&E histopathology with diffusion models.",
        subcommands: [DemoCommand.self, Devices.self, Synth.self, Pretrain.self, SampleCommand.self, FeaturesCommand.self,
                      Train.self, ExperimentCommand.self, Segment.self, Eval.self, TrainAutoencoder.self])

    static func main() {
        OpenBLASTuning.reexecWithTunedSettingsIfNeeded(threads: MPIProcessGroup.coreShare())
        // Line-buffered stdout: printed lines appear when they happen, also in a log file, in order with the
        // progress lines on stderr.
        setvbuf(stdout, nil, _IOLBF, 0)
        do {
            Parallel.mpi = try MPIProcessGroup.launched()
            var command = try parseAsRoot()
            try Parallel.checkDataParallel(command)
            try command.run()
        } catch let stop as TrainingInterrupted {
            // A run stopped by a signal after saving (the experiment's or the demo's): exit as the signal would.
            Parallel.exit(after: TrainingOutcome.interrupted(signal: stop.signal).exitCode)
        } catch {
            Parallel.exit(after: FileSystem.describe(error).map(CommandError.init) ?? error)
        }
        Parallel.exit(after: nil)
    }
}

/// An error the command line shows as its text alone, without the usage that a `ValidationError` adds: refusals
/// found while a command runs, and Foundation's file errors as "PATH: REASON" (`FileSystem.describe`) instead of
/// their `Error Domain=NSCocoaErrorDomain … UserInfo={…}` dump.
struct CommandError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

import ArgumentParser
import HistoMPI
import HistoNN

/// The ranks of this job: MPI_COMM_WORLD when `mpirun` (or `srun`) started this process, this process alone
/// otherwise. Set once by `HistoDiff.main` before a command runs.
enum Parallel {
    static var mpi: MPIProcessGroup?
    static var group: any ProcessGroup { mpi ?? SingleProcess.shared }
    /// This rank's index among the ranks on its machine (0 alone): the GPU `--device opencl` takes.
    static var localRank: Int { mpi?.localRank ?? 0 }

    /// Ends this rank. A rank that fails (not a clean exit or a stop every rank agreed on) ends every rank with
    /// its message, since the others would wait for it in their next allreduce.
    static func exit(after error: Error?) -> Never {
        if let error, let mpi, mpi.size > 1, !(error is ExitCode || error is CleanExit) {
            mpi.abort(printing: HistoDiff.fullMessage(for: error))
        }
        mpi?.finalize()
        HistoDiff.exit(withError: error)
    }

    /// Refuses to run a command that does not train data-parallel on several ranks: each would do the whole job.
    static func checkDataParallel(_ command: ParsableCommand) throws {
        guard group.size > 1, !(command is Pretrain || command is Train || command is TrainAutoencoder) else { return }
        throw CommandError("only pretrain, train and train-autoencoder run on several MPI ranks; run this command "
                           + "without mpirun (experiment spreads its grid with --shard i/n)")
    }

    /// Refuses to start unless every rank was given the same `settings` and built the same `model`.
    static func checkSameOnEveryRank(_ model: Module, settings: [String: String]) throws {
        try group.checkSameOnEveryRank(model.fingerprint(settings: settings), what: "the options and initial model")
    }
}

import CMPI
import Foundation
import HistoCore
import HistoNN

/// MPI_COMM_WORLD of a process started by `mpirun` (or a scheduler's launcher such as `srun`): the ranks of
/// data-parallel training. A process that was not launched that way never calls MPI_Init (a singleton init is
/// slow and prints warnings where no launcher runs), so the build and the tests stay single-process.
public final class MPIProcessGroup: ProcessGroup {
    public let rank: Int
    public let size: Int
    /// This rank's index among the ranks on its machine: which GPU it takes.
    public let localRank: Int

    private init() {
        rank = Int(histo_mpi_rank())
        size = Int(histo_mpi_size())
        localRank = Self.local(ProcessInfo.processInfo.environment).rank
    }

    /// Variables that Open MPI's mpirun, PMIx and PMI launchers (srun) set in every process they start.
    static let launchVariables = ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"]

    /// The ranks on this machine from the launcher's variables: this rank's index among them and their number.
    static func local(_ environment: [String: String]) -> (rank: Int, size: Int) {
        func first(_ names: [String]) -> Int? { names.lazy.compactMap { environment[$0].flatMap(Int.init) }.first }
        return (first(["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"]) ?? 0,
                max(1, first(["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"]) ?? 1))
    }

    /// The group of this process when a launcher started it (MPI_Init is called here); nil otherwise.
    public static func launched(environment: [String: String] = ProcessInfo.processInfo.environment) throws
        -> MPIProcessGroup? {
        guard launchVariables.contains(where: { environment[$0] != nil }) else { return nil }
        try check(histo_mpi_init(), "MPI_Init_thread")
        return MPIProcessGroup()
    }

    /// The CPU threads each rank uses when several ranks share this machine: its cores split evenly; nil when
    /// this process was not launched with other ranks beside it.
    public static func coreShare(environment: [String: String] = ProcessInfo.processInfo.environment) -> Int? {
        let local = local(environment)
        guard launchVariables.contains(where: { environment[$0] != nil }), local.size > 1 else { return nil }
        return max(1, ProcessInfo.processInfo.activeProcessorCount / local.size)
    }

    public func sumInPlace(_ values: UnsafeMutableBufferPointer<Float>) throws {
        guard let base = values.baseAddress, let count = Int32(exactly: values.count) else {
            if values.isEmpty { return }
            throw EngineError.invalidValue(op: "MPI", message: "\(values.count) values exceed one allreduce")
        }
        try Self.check(histo_mpi_allreduce_sum_in_place(base, count), "MPI_Allreduce")
    }

    public func agree(on value: UInt64) throws -> Bool {
        var least: UInt64 = 0, largest: UInt64 = 0
        try Self.check(histo_mpi_min_max(value, &least, &largest), "MPI_Allreduce")
        return least == largest
    }

    /// Prints `message` (prefixed by the rank) on standard error and ends every rank of the job: the others
    /// would otherwise wait forever in their next allreduce.
    public func abort(printing message: String) -> Never {
        FileHandle.standardError.write(Data("histodiff rank \(rank) of \(size): \(message)\n".utf8))
        _ = histo_mpi_abort(1)
        exit(1)
    }

    /// Ends MPI after the last collective; every rank must call it.
    public func finalize() { _ = histo_mpi_finalize() }

    private static func check(_ status: Int32, _ call: String) throws {
        guard status == 0 else {
            throw EngineError.invalidValue(op: "MPI", message: "\(call) failed (error \(status))")
        }
    }
}

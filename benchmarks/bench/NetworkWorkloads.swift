import HistoCore

extension Workloads {
    /// Workloads of the convolution, normalisation and attention families.
    static func extraWorkloads(quick: Bool) -> [Workload] { [] }
}

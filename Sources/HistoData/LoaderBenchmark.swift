import Foundation
import HistoCore

public enum LoaderBenchmark {
    /// Patches per second a `BatchLoader` delivers from all of `dataset`: random `patchSize²` crops in batches of 8,
    /// the full default augmentation with weak and strong views (and labels when every image has a mask), consumed as
    /// tensors. Timing starts after one warm-up epoch has decoded every image into the cache and runs for `seconds`.
    public static func patchesPerSecond(dataset: Dataset, patchSize: Int = 256, seconds: Double) throws -> Double {
        var options = LoaderOptions(batchSize: 8, patches: .randomCrops(size: patchSize, perImage: 1),
                                    labelled: dataset.items.allSatisfy { $0.maskPath != nil })
        options.views = .weakAndStrong
        options.prefetch = 4
        let loader = try BatchLoader(dataset: dataset, indices: Array(dataset.items.indices), options: options)
        defer { loader.close() }
        while let batch = try loader.next(), batch.items.last!.epoch == 0 {}
        let start = DispatchTime.now().uptimeNanoseconds
        var elapsed = 0.0, patches = 0
        repeat {
            guard let batch = try loader.next() else { break }
            patches += batch.count
            elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        } while elapsed < seconds
        return Double(patches) / elapsed
    }
}

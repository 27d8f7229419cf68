import HistoCore

extension Dataset {
    /// The per-channel mean and standard deviation (population, numpy's default `ddof=0`) of the colour planes
    /// in [0, 1] (`colorPlanes(range: .zeroToOne)`) of the images `indices`, over every pixel of every image
    /// pooled, as the samples come (resized when the dataset is): XNet's normalisation statistics. One image is
    /// decoded at a time.
    public func colorStatistics(indices: [Int]) throws -> (mean: [Float], std: [Float]) {
        guard !indices.isEmpty else {
            throw EngineError.invalidValue(op: "colorStatistics", message: "no images to measure in \(root)")
        }
        var sums = [Double](repeating: 0, count: 3), squares = sums
        var count = 0.0
        for index in indices {
            let planes = try sample(at: index).image.colorPlanes(range: .zeroToOne)
            let plane = planes.height * planes.width
            for c in 0..<3 {
                for value in planes.values[c * plane..<(c + 1) * plane] {
                    sums[c] += Double(value)
                    squares[c] += Double(value) * Double(value)
                }
            }
            count += Double(plane)
        }
        let mean = sums.map { $0 / count }
        let std = (0..<3).map { ((squares[$0] / count - mean[$0] * mean[$0]).magnitude).squareRoot() }
        guard std.allSatisfy({ $0 > 0 }) else {
            throw EngineError.invalidValue(op: "colorStatistics", message:
                "a colour channel is constant over the \(indices.count) images of \(root): it cannot be standardized")
        }
        return (mean.map(Float.init), std.map(Float.init))
    }
}

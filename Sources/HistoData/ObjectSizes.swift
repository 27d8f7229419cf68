import Foundation
import HistoCore

/// How large the labelled objects of a dataset are, so that a training patch can see them whole: a 64² patch
/// holds a few MoNuSeg nuclei (median equivalent diameter 21 px) but only part of a GlaS gland (123 px), and a
/// network that never sees a whole gland under-segments it (issue 21). Objects are the instances of an item's
/// instance map where it has one, else the 8-connected components of its mask's foreground.
public struct ObjectSizes: Codable, Equatable, Sendable {
    /// The patch side, in median equivalent diameters, below which a patch is too small: two objects across.
    public static let patchFactor = 2.0

    public let images: Int
    public let objects: Int
    /// The median of each object's equivalent-circle diameter 2√(area/π), pixels.
    public let medianDiameter: Double
    /// The median of each object's larger bounding-box side, pixels.
    public let medianExtent: Double

    public init(images: Int, objects: Int, medianDiameter: Double, medianExtent: Double) {
        self.images = images
        self.objects = objects
        self.medianDiameter = medianDiameter
        self.medianExtent = medianExtent
    }

    /// Measures the objects of the items at `indices` of `dataset` (those with a mask); nil when there is none.
    public static func measure(_ dataset: Dataset, indices: [Int]) throws -> ObjectSizes? {
        var diameters: [Double] = [], extents: [Double] = [], images = 0
        for index in indices where dataset.items[index].maskPath != nil {
            let sample = try dataset.sample(at: index)
            guard let mask = sample.mask else { continue }
            images += 1
            let (width, height) = (mask.width, mask.height)
            let ids: [Int32]
            if let instances = sample.instances {
                ids = instances.values.map { Int32($0) }
            } else {
                ids = InstanceGrid.connectedComponents(mask.values.map { $0 > 0 ? 1 : 0 }, width: width,
                                                       height: height).labels
            }
            var boxes: [Int32: (area: Int, minY: Int, maxY: Int, minX: Int, maxX: Int)] = [:]
            for y in 0..<height {
                for x in 0..<width {
                    let id = ids[y * width + x]
                    guard id > 0 else { continue }
                    if let box = boxes[id] {
                        boxes[id] = (box.area + 1, min(box.minY, y), max(box.maxY, y), min(box.minX, x),
                                     max(box.maxX, x))
                    } else {
                        boxes[id] = (1, y, y, x, x)
                    }
                }
            }
            for box in boxes.values {
                diameters.append(2 * (Double(box.area) / Double.pi).squareRoot())
                extents.append(Double(max(box.maxY - box.minY, box.maxX - box.minX) + 1))
            }
        }
        guard !diameters.isEmpty else { return nil }
        return ObjectSizes(images: images, objects: diameters.count, medianDiameter: median(diameters),
                           medianExtent: median(extents))
    }

    /// The smallest patch side that is a multiple of `multiple` and at least `patchFactor` median diameters.
    public func smallestPatch(multiple: Int) -> Int {
        let side = Int((Self.patchFactor * medianDiameter).rounded(.up))
        return max(multiple, (side + multiple - 1) / multiple * multiple)
    }

    /// A one-line warning when `patch` is smaller than `smallestPatch(multiple:)`, nil otherwise.
    public func notice(patch: Int, multiple: Int) -> String? {
        let smallest = smallestPatch(multiple: multiple)
        guard patch < smallest else { return nil }
        return String(format: "the %d² patch is smaller than %.0f× the median object diameter of the labelled "
                      + "masks (%.0f px over %d objects): the network cannot see whole objects and tends to "
                      + "under-segment them; pass --patch %d (or larger), or downscale the images first "
                      + "(--resize; genselfdiff: --preset gland)", patch, Self.patchFactor, medianDiameter,
                      objects, smallest)
    }

    /// The median of a non-empty list (the mean of the middle two for an even count).
    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted(), middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }
}

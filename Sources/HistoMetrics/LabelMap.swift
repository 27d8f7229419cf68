import HistoCore
import HistoData

/// A 2-D map of non-negative integer labels, row-major: `labels[y * width + x]`. It holds class ids (0 = background)
/// or instance ids (0 = background, one id per object). Every metric reads masks in this form: PNG masks, dataset
/// label planes and argmax outputs all convert to it.
public struct LabelMap: Equatable, Sendable {
    public let width: Int
    public let height: Int
    public let labels: [Int32]

    /// Validates the layout: a positive size, `width * height` labels, none negative.
    public init(width: Int, height: Int, labels: [Int32]) throws {
        guard width > 0, height > 0 else { throw Self.invalid("size \(width)×\(height) must be positive") }
        guard labels.count == width * height else {
            throw Self.invalid("\(labels.count) labels do not fill \(width)×\(height)")
        }
        if let negative = labels.firstIndex(where: { $0 < 0 }) {
            throw Self.invalid("label \(labels[negative]) at (x \(negative % width), y \(negative / width)) is negative")
        }
        self.init(unchecked: width, height: height, labels: labels)
    }

    /// A binary mask: `true` becomes label 1.
    public init(mask: [Bool], width: Int, height: Int) throws {
        try self.init(width: width, height: height, labels: mask.map { $0 ? 1 : 0 })
    }

    /// A one-channel image's samples as labels: an 8-bit mask (0/255 or class ids) or a 16-bit instance map.
    public init(_ image: Image) throws {
        guard image.channels == 1 else {
            throw Self.invalid("a label map is a one-channel image, this one is \(image.layoutDescription)")
        }
        self.init(unchecked: image.width, height: image.height, labels: image.samples.map(Int32.init))
    }

    /// A one-channel plane of label values (`Sample.mask`, `Sample.instances`, an argmax): whole numbers ≥ 0.
    public init(_ planes: Planes) throws {
        guard planes.channels == 1 else {
            throw Self.invalid("a label map has 1 channel, these planes have shape \(describe(planes.shape))")
        }
        if let bad = planes.values.firstIndex(where: { !($0 >= 0 && $0 < 16_777_216 && $0.rounded() == $0) }) {
            throw Self.invalid("value \(planes.values[bad]) at (x \(bad % planes.width), y \(bad / planes.width)) is not a label (a whole number in 0..<2^24)")
        }
        self.init(unchecked: planes.width, height: planes.height, labels: planes.values.map { Int32($0) })
    }

    init(unchecked width: Int, height: Int, labels: [Int32]) {
        self.width = width
        self.height = height
        self.labels = labels
    }

    /// `true` where the label is above 0.
    public var foreground: [Bool] { labels.map { $0 > 0 } }

    /// Foreground (label > 0) as 1, background as 0: the form a binary `ConfusionMatrix` takes.
    public func binarized() -> LabelMap {
        LabelMap(unchecked: width, height: height, labels: labels.map { $0 > 0 ? 1 : 0 })
    }

    /// `"W×H"` for messages.
    public var sizeDescription: String { "\(width)×\(height)" }

    /// Throws unless `other` has the same size; `op` names the metric in the message.
    func checkSameSize(as other: LabelMap, op: String) throws {
        guard width == other.width, height == other.height else {
            throw EngineError.invalidValue(op: op, message: "prediction is \(sizeDescription) but truth is \(other.sizeDescription)")
        }
    }

    private static func invalid(_ message: String) -> EngineError { .invalidValue(op: "LabelMap", message: message) }
}

extension LabelMap {
    /// The 8-connected components of the foreground (label > 0), numbered 1, 2, … in raster order of each
    /// component's first pixel (`InstanceGrid.connectedComponents`).
    public func connectedComponents() -> (map: LabelMap, count: Int) {
        let (components, count) = InstanceGrid.connectedComponents(labels, width: width, height: height)
        return (LabelMap(unchecked: width, height: height, labels: components), count)
    }
}

import HistoCore

/// Host-side float data laid out `[channels, height, width]` (channel-major, row-major): the form images and label
/// maps take between decoding and becoming tensors. Patches and resizing work on planes.
public struct Planes: Equatable, Sendable {
    public let channels: Int
    public let height: Int
    public let width: Int
    /// `values[(c * height + y) * width + x]`.
    public let values: [Float]

    public init(channels: Int, height: Int, width: Int, values: [Float]) throws {
        guard channels > 0, height > 0, width > 0 else {
            throw EngineError.invalidValue(op: "Planes", message: "layout [\(channels), \(height), \(width)] must be positive")
        }
        guard values.count == channels * height * width else {
            throw EngineError.invalidValue(op: "Planes", message: "\(values.count) values do not fill [\(channels), \(height), \(width)]")
        }
        self.init(unchecked: channels, height: height, width: width, values: values)
    }

    /// For producers whose output has the layout by construction.
    init(unchecked channels: Int, height: Int, width: Int, values: [Float]) {
        self.channels = channels
        self.height = height
        self.width = width
        self.values = values
    }

    public var shape: [Int] { [channels, height, width] }

    /// The value at channel `c`, row `y`, column `x`.
    public subscript(c: Int, y: Int, x: Int) -> Float { values[(c * height + y) * width + x] }

    // MARK: tensors

    /// A `[C, H, W]` tensor.
    public func tensor() -> Tensor { Tensor(values, shape: shape) }

    /// A `[H, W]` tensor of a one-channel label map (class ids or instance ids as float).
    public func labelTensor() -> Tensor {
        guard channels == 1 else {
            return Tensor.invalid("labelTensor", "a label map has 1 channel, these planes have shape \(describe(shape))")
        }
        return Tensor(values, shape: [height, width])
    }

    /// Stacks planes of one shape into a `[N, C, H, W]` tensor (images).
    public static func batch(_ items: [Planes]) -> Tensor {
        stack(items, op: "batch") { [items.count] + $0.shape }
    }

    /// Stacks one-channel label maps of one size into a `[N, H, W]` tensor (masks).
    public static func labelBatch(_ items: [Planes]) -> Tensor {
        if let wide = items.first(where: { $0.channels != 1 }) {
            return Tensor.invalid("labelBatch", "label maps have 1 channel, found planes of shape \(describe(wide.shape))")
        }
        return stack(items, op: "labelBatch") { [items.count, $0.height, $0.width] }
    }

    private static func stack(_ items: [Planes], op: String, shape: (Planes) -> [Int]) -> Tensor {
        guard let first = items.first else { return Tensor.invalid(op, "no items to stack") }
        if let odd = items.firstIndex(where: { $0.shape != first.shape }) {
            return Tensor.invalid(op, "item \(odd) has shape \(describe(items[odd].shape)), item 0 has \(describe(first.shape))")
        }
        var values = [Float]()
        values.reserveCapacity(items.count * first.values.count)
        for item in items { values += item.values }
        return Tensor(values, shape: shape(first))
    }
}

/// How image samples map to floats.
public enum PixelRange: Equatable, Sendable {
    /// `x / (max / 2) − 1`, e.g. `x / 127.5 − 1` for 8-bit: the range diffusion models work in.
    case minusOneToOne
    /// `x / max`, e.g. `x / 255` for 8-bit.
    case zeroToOne
    /// `(x / max − mean[c]) / std[c]` per colour channel c: a dataset's own statistics (XNet normalises GlaS so),
    /// `mean` and `std` in [0, 1] units (`Dataset.colorStatistics`).
    case standardized(mean: [Float], std: [Float])

    /// `value` in [0, 1] of colour channel `channel` mapped to a standardized range; nil for the fixed ranges,
    /// whose own arithmetic is kept so that their values stay bit-for-bit as before.
    func standardized(_ value: Float, channel: Int) -> Float? {
        guard case let .standardized(mean, std) = self else { return nil }
        return (value - mean[channel]) / std[channel]
    }
}

extension Image {
    /// The image as three colour planes `[3, H, W]` scaled to `range`. Gray is repeated into three planes; an
    /// alpha channel is dropped.
    public func colorPlanes(range: PixelRange = .minusOneToOne) -> Planes {
        let maxValue = Float(self.maxValue)
        let (divisor, offset): (Float, Float) = range == .minusOneToOne ? (maxValue / 2, -1) : (maxValue, 0)
        let colorChannels = channels >= 3 ? 3 : 1
        let plane = width * height
        var values = [Float](repeating: 0, count: 3 * plane)
        for c in 0..<3 {
            let source = colorChannels == 3 ? c : 0
            for p in 0..<plane {
                let value = Float(samples[p * channels + source]) / divisor + offset
                values[c * plane + p] = range.standardized(value, channel: c) ?? value
            }
        }
        return Planes(unchecked: 3, height: height, width: width, values: values)
    }

    /// A one-channel image's raw values as a label map `[1, H, W]` (ids stay exact: floats hold integers < 2^24).
    public func labelPlanes() throws -> Planes {
        guard channels == 1 else {
            throw EngineError.invalidValue(op: "labelPlanes", message: "a label map is a one-channel image, this one is \(layoutDescription)")
        }
        let values = samples.map(Float.init)
        return Planes(unchecked: 1, height: height, width: width, values: values)
    }
}

import HistoCore

/// A decoded raster image: interleaved samples, row-major, `samples[(y * width + x) * channels + c]`.
/// Channels are 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA); `bitDepth` is 8 or 16. Samples are stored as
/// `UInt16` so that 16-bit values (instance ids) stay exact.
public struct Image: Equatable, Sendable {
    public let width: Int
    public let height: Int
    public let channels: Int
    public let bitDepth: Int
    public let samples: [UInt16]

    /// Validates the layout: positive size, 1–4 channels, bit depth 8 or 16, `width * height * channels` samples,
    /// every sample at most `maxValue`.
    public init(width: Int, height: Int, channels: Int, bitDepth: Int, samples: [UInt16]) throws {
        func invalid(_ message: String) -> EngineError { .invalidValue(op: "Image", message: message) }
        guard width > 0, height > 0 else { throw invalid("size \(width)×\(height) must be positive") }
        guard (1...4).contains(channels) else { throw invalid("\(channels) channels; expected 1 to 4") }
        guard bitDepth == 8 || bitDepth == 16 else { throw invalid("bit depth \(bitDepth); expected 8 or 16") }
        guard samples.count == width * height * channels else {
            throw invalid("\(samples.count) samples do not fill \(width)×\(height)×\(channels)")
        }
        if bitDepth == 8, let large = samples.first(where: { $0 > 255 }) {
            throw invalid("sample value \(large) does not fit bit depth 8")
        }
        self.init(unchecked: width, height: height, channels: channels, bitDepth: bitDepth, samples: samples)
    }

    /// For decoders whose output has the layout by construction.
    init(unchecked width: Int, height: Int, channels: Int, bitDepth: Int, samples: [UInt16]) {
        self.width = width
        self.height = height
        self.channels = channels
        self.bitDepth = bitDepth
        self.samples = samples
    }

    /// The largest value a sample can take: 255 or 65535.
    public var maxValue: UInt16 { bitDepth == 16 ? 65535 : 255 }

    /// `"W×H, C channels, B-bit"` for messages.
    public var layoutDescription: String { "\(width)×\(height), \(channels) channel\(channels == 1 ? "" : "s"), \(bitDepth)-bit" }
}

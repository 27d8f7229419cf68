import CPNG
import Foundation
import HistoCore

/// PNG files through libpng's simplified `png_image_*` API, which reports failures in the `png_image` struct
/// instead of long-jumping: a missing, corrupt or truncated file is a thrown `EngineError.file`, never an abort.
///
/// Values are returned as stored, with two consequences of the simplified API: a file whose gAMA/sRGB/iCCP chunks
/// disagree with the API's defaults (8-bit files sRGB, 16-bit files linear) is converted to those defaults, and
/// the colour of a 16-bit file with alpha comes back premultiplied by libpng, so it is divided back out: exact where
/// the pixel is opaque, within 65535 / (2 · alpha) where it is translucent, and 0 where alpha is 0.
public enum PNG {
    /// The size and layout a file decodes to (palette files decode to RGB, or RGBA when they have transparency;
    /// gray below 8 bits decodes to 8-bit).
    public struct Header: Equatable, Sendable {
        public let width: Int
        public let height: Int
        public let channels: Int
        public let bitDepth: Int
    }

    /// Reads only the header (cheap: no pixel data is decoded).
    public static func readHeader(path: String) throws -> Header {
        try Control(reading: path).header
    }

    /// Reads gray, gray + alpha, RGB, RGBA (8 or 16 bits) and palette files.
    public static func read(path: String) throws -> Image {
        let control = try Control(reading: path)
        let layout = control.header
        let count = layout.width * layout.height * layout.channels
        // Headers of damaged files can claim sizes that would exhaust memory before libpng notices the damage.
        guard count <= maxSamples else {
            throw EngineError.file(path: path, message: "image of \(layout.width)×\(layout.height)×\(layout.channels) samples is too large to read")
        }
        // Palette files are expanded: the output format is the file's format without the colour-map flag.
        control.image.pointee.format &= ~PNG_FORMAT_FLAG_COLORMAP
        let samples: [UInt16]
        if layout.bitDepth == 16 {
            var raw = [UInt16](repeating: 0, count: count)
            try raw.withUnsafeMutableBytes { try control.finishRead(into: $0.baseAddress!, path: path) }
            if layout.channels == 2 || layout.channels == 4 { unpremultiply(&raw, channels: layout.channels) }
            samples = raw
        } else {
            var raw = [UInt8](repeating: 0, count: count)
            try raw.withUnsafeMutableBytes { try control.finishRead(into: $0.baseAddress!, path: path) }
            samples = raw.map(UInt16.init)
        }
        return Image(unchecked: layout.width, height: layout.height, channels: layout.channels,
                     bitDepth: layout.bitDepth, samples: samples)
    }

    /// Writes 8-bit gray, gray + alpha, RGB, RGBA and 16-bit gray or RGB. 16-bit files with alpha are refused:
    /// the simplified API would take the colour as premultiplied and alter it.
    public static func write(_ source: Image, to path: String) throws {
        if source.bitDepth == 16 && (source.channels == 2 || source.channels == 4) {
            throw EngineError.file(path: path, message: "cannot write a 16-bit image with alpha (\(source.layoutDescription)): libpng's simplified API would premultiply its colour; write 8-bit or drop alpha")
        }
        let control = Control()
        let image = control.image
        image.pointee.width = png_uint_32(source.width)
        image.pointee.height = png_uint_32(source.height)
        image.pointee.format = format(channels: source.channels, bitDepth: source.bitDepth)
        let written: Int32
        if source.bitDepth == 16 {
            written = source.samples.withUnsafeBytes { png_image_write_to_file(image, path, 0, $0.baseAddress, 0, nil) }
        } else {
            let bytes = source.samples.map { UInt8(truncatingIfNeeded: $0) }
            written = bytes.withUnsafeBytes { png_image_write_to_file(image, path, 0, $0.baseAddress, 0, nil) }
        }
        if written == 0 || control.failed { throw EngineError.file(path: path, message: "cannot write PNG: \(control.message)") }
    }

    // MARK: libpng plumbing

    /// 2^31 samples (4 GiB as UInt16): far above any histology tile, far below what would crash allocation.
    static let maxSamples = 1 << 31

    /// A `png_image` at one heap address for its whole life: libpng keeps the address it was first given (its
    /// error handler writes the message there and finds its jump buffer through it), whereas Swift's `&value`
    /// promises an address for the duration of one call only.
    private final class Control {
        let image: UnsafeMutablePointer<png_image>

        init() {
            image = .allocate(capacity: 1)
            image.initialize(to: png_image())
            image.pointee.version = png_uint_32(PNG_IMAGE_VERSION)
        }

        /// Opens `path` and reads its header.
        convenience init(reading path: String) throws {
            self.init()
            if png_image_begin_read_from_file(image, path) == 0 || failed {
                // libpng reports a folder as a "Read Error".
                var isFolder: ObjCBool = false
                if FileManager.default.fileExists(atPath: path, isDirectory: &isFolder), isFolder.boolValue {
                    throw EngineError.file(path: path, message: "is a directory, not a PNG image")
                }
                throw EngineError.file(path: path, message: "cannot read PNG: \(message)")
            }
        }

        deinit {
            png_image_free(image)
            image.deinitialize(count: 1)
            image.deallocate()
        }

        var header: Header { PNG.header(of: image.pointee) }

        func finishRead(into buffer: UnsafeMutableRawPointer, path: String) throws {
            if png_image_finish_read(image, nil, buffer, 0, nil) == 0 || failed {
                throw EngineError.file(path: path, message: "cannot read PNG: \(message)")
            }
        }

        /// The low two bits of `warning_or_error` are 2 or 3 after an error (1 is a warning, which does not fail).
        var failed: Bool { image.pointee.warning_or_error & 3 > 1 }

        var message: String {
            let text = withUnsafeBytes(of: image.pointee.message) { bytes in
                String(decoding: bytes.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            return text.isEmpty ? "libpng reported no message" : text
        }
    }

    private static func header(of image: png_image) -> Header {
        let flags = image.format
        let channels = 1 + (flags & PNG_FORMAT_FLAG_COLOR != 0 ? 2 : 0) + (flags & PNG_FORMAT_FLAG_ALPHA != 0 ? 1 : 0)
        return Header(width: Int(image.width), height: Int(image.height), channels: channels,
                      bitDepth: flags & PNG_FORMAT_FLAG_LINEAR != 0 ? 16 : 8)
    }

    private static func format(channels: Int, bitDepth: Int) -> png_uint_32 {
        var flags: png_uint_32 = bitDepth == 16 ? PNG_FORMAT_FLAG_LINEAR : 0
        if channels >= 3 { flags |= PNG_FORMAT_FLAG_COLOR }
        if channels == 2 || channels == 4 { flags |= PNG_FORMAT_FLAG_ALPHA }
        return flags
    }

    /// Linear output with alpha is premultiplied by libpng (colour · alpha / 65535, rounded); this divides it back.
    private static func unpremultiply(_ samples: inout [UInt16], channels: Int) {
        for pixel in stride(from: 0, to: samples.count, by: channels) {
            let alpha = UInt32(samples[pixel + channels - 1])
            guard alpha != 0xFFFF else { continue }
            for c in pixel..<(pixel + channels - 1) {
                samples[c] = alpha == 0 ? 0 : UInt16(min(65535, (UInt32(samples[c]) * 65535 + alpha / 2) / alpha))
            }
        }
    }
}

import Foundation
import HistoCore
import HistoData

/// The files `segment` writes for one image NAME: `masks/NAME.png` (argmax, 0/255; the layout `eval --pred` reads),
/// `probabilities/NAME.png` (foreground probability, 0–255) and `overlays/NAME.png` (mask contours on the image).
public enum SegmentationOutputs {
    /// Argmax class per pixel of probabilities [K, H, W], row-major.
    public static func labels(_ probabilities: Planes) -> [Int] {
        let plane = probabilities.height * probabilities.width
        return (0..<plane).map { p in
            var best = 0
            for k in 1..<probabilities.channels where probabilities.values[k * plane + p] > probabilities.values[best * plane + p] { best = k }
            return best
        }
    }

    public static func write(image: Image, probabilities: Planes, to directory: String, name: String) throws {
        let (h, w) = (probabilities.height, probabilities.width)
        let labels = labels(probabilities)
        for folder in ["masks", "probabilities", "overlays"] {
            try FileSystem.createFolder(directory + "/" + folder, purpose: "output")
        }
        try PNG.write(Image(width: w, height: h, channels: 1, bitDepth: 8,
                            samples: labels.map { $0 > 0 ? 255 : 0 }), to: directory + "/masks/" + name + ".png")
        let foregroundStart = probabilities.channels > 1 ? h * w : 0
        let foreground = probabilities.values[foregroundStart..<(foregroundStart + h * w)]
        try PNG.write(Image(width: w, height: h, channels: 1, bitDepth: 8,
                            samples: foreground.map { UInt16(max(0, min(255, ($0 * 255).rounded()))) }), to: directory + "/probabilities/" + name + ".png")
        try PNG.write(overlay(image: image, labels: labels), to: directory + "/overlays/" + name + ".png")
    }

    /// The image (as 8-bit RGB) with the boundary pixels of the foreground drawn in bright green.
    public static func overlay(image: Image, labels: [Int]) throws -> Image {
        let (h, w) = (image.height, image.width)
        let rgb = image.colorPlanes(range: .zeroToOne)
        var samples = [UInt16](repeating: 0, count: h * w * 3)
        func isBackground(_ y: Int, _ x: Int) -> Bool { y < 0 || y >= h || x < 0 || x >= w || labels[y * w + x] == 0 }
        for y in 0..<h {
            for x in 0..<w {
                let p = y * w + x
                let inside = labels[p] > 0
                let boundary = inside && (isBackground(y - 1, x) || isBackground(y + 1, x)
                                          || isBackground(y, x - 1) || isBackground(y, x + 1))
                for c in 0..<3 {
                    let value: Float = boundary ? (c == 1 ? 1 : 0) : rgb.values[c * h * w + p]
                    samples[p * 3 + c] = UInt16(max(0, min(255, (value * 255).rounded())))
                }
            }
        }
        return try Image(width: w, height: h, channels: 3, bitDepth: 8, samples: samples)
    }
}

extension Planes {
    /// Softmax over the channel axis of logits [K, H, W].
    func softmaxOverChannels() throws -> Planes {
        let plane = height * width
        var out = values
        for p in 0..<plane {
            var m = -Float.infinity
            for k in 0..<channels { m = max(m, values[k * plane + p]) }
            var s: Float = 0
            for k in 0..<channels { let e = Foundation.exp(values[k * plane + p] - m); out[k * plane + p] = e; s += e }
            for k in 0..<channels { out[k * plane + p] /= s }
        }
        return try Planes(channels: channels, height: height, width: width, values: out)
    }
}

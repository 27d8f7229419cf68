import Foundation
import HistoCore
import HistoData
import HistoMetrics

/// The files `segment` writes for one image NAME: `masks/NAME.png` (argmax foreground, any class above 0, or
/// p(foreground) above a threshold chosen on validation, as 0/255; the layout `eval --pred` reads),
/// `probabilities/NAME.png` (foreground probability 1 − p(background), 0–255), and with instances
/// `instances/NAME.png` (16-bit ids, 0 = background: the layout of a dataset's `instances/`) and
/// `overlays/NAME.png` (each nucleus outlined in its own colour on the image); without them the overlay outlines
/// the foreground in green.
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

    /// Class 1 where p(class 1) of binary probabilities [2, H, W] exceeds `threshold` (as `ThresholdSweep`
    /// counts it), else 0.
    public static func labels(_ probabilities: Planes, threshold: Double) -> [Int] {
        let plane = probabilities.height * probabilities.width, cut = Float(threshold)
        return probabilities.values[plane..<2 * plane].map { $0 > cut ? 1 : 0 }
    }

    /// `threshold` (a binary model's, `TrainedModel.threshold`) makes the mask instead of the argmax.
    public static func write(image: Image, probabilities: Planes, instances: LabelMap?, to directory: String,
                             name: String, threshold: Double? = nil) throws {
        let (h, w) = (probabilities.height, probabilities.width)
        let labels = threshold.map { Self.labels(probabilities, threshold: $0) } ?? Self.labels(probabilities)
        for folder in ["masks", "probabilities", "overlays"] + (instances == nil ? [] : ["instances"]) {
            try FileSystem.createFolder(directory + "/" + folder, purpose: "output")
        }
        try PNG.write(Image(width: w, height: h, channels: 1, bitDepth: 8,
                            samples: labels.map { $0 > 0 ? 255 : 0 }), to: directory + "/masks/" + name + ".png")
        let foreground = (0..<(h * w)).map { p in
            (1..<probabilities.channels).reduce(Float(0)) { $0 + probabilities.values[$1 * h * w + p] }
        }
        try PNG.write(Image(width: w, height: h, channels: 1, bitDepth: 8,
                            samples: foreground.map { UInt16(max(0, min(255, ($0 * 255).rounded()))) }), to: directory + "/probabilities/" + name + ".png")
        if let instances {
            let path = directory + "/instances/" + name + ".png"
            guard let largest = instances.labels.max(), largest <= Int32(UInt16.max) else {
                throw EngineError.file(path: path, message: "more than 65535 instances do not fit a 16-bit map")
            }
            try PNG.write(Image(width: w, height: h, channels: 1, bitDepth: 16,
                                samples: instances.labels.map { UInt16($0) }), to: path)
        }
        try PNG.write(overlay(image: image, labels: instances?.labels.map(Int.init) ?? labels,
                              coloured: instances != nil), to: directory + "/overlays/" + name + ".png")
    }

    /// The image (as 8-bit RGB) with the boundary pixels of each region drawn: in bright green, or with `coloured`
    /// each label in its own colour (instances: a pixel is on the boundary where a 4-neighbour has another label).
    public static func overlay(image: Image, labels: [Int], coloured: Bool = false) throws -> Image {
        let (h, w) = (image.height, image.width)
        let rgb = image.colorPlanes(range: .zeroToOne)
        var samples = [UInt16](repeating: 0, count: h * w * 3)
        func differs(_ y: Int, _ x: Int, _ label: Int) -> Bool {
            y < 0 || y >= h || x < 0 || x >= w || (coloured ? labels[y * w + x] != label : labels[y * w + x] == 0)
        }
        for y in 0..<h {
            for x in 0..<w {
                let p = y * w + x, label = labels[p]
                let boundary = label > 0 && (differs(y - 1, x, label) || differs(y + 1, x, label)
                                             || differs(y, x - 1, label) || differs(y, x + 1, label))
                let colour = coloured ? distinctColour(label) : [0, 1, 0]
                for c in 0..<3 {
                    let value: Float = boundary ? colour[c] : rgb.values[c * h * w + p]
                    samples[p * 3 + c] = UInt16(max(0, min(255, (value * 255).rounded())))
                }
            }
        }
        return try Image(width: w, height: h, channels: 3, bitDepth: 8, samples: samples)
    }

    /// A saturated colour for label `label`: hues by the golden angle, so neighbouring ids differ clearly.
    static func distinctColour(_ label: Int) -> [Float] {
        let hue = (Float(label) * 0.618_034).truncatingRemainder(dividingBy: 1) * 6
        let fraction = hue - hue.rounded(.down)
        switch Int(hue) {
        case 0: return [1, fraction, 0]
        case 1: return [1 - fraction, 1, 0]
        case 2: return [0, 1, fraction]
        case 3: return [0, 1 - fraction, 1]
        case 4: return [fraction, 0, 1]
        default: return [1, 0, 1 - fraction]
        }
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

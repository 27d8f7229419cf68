import HistoCore

/// The random augmentation of training samples: the ranges and probabilities its parameters are drawn from.
///
/// Geometry (flips, quarter turns, rotation with reflect fill, zoom) applies to the image, mask and instance map
/// alike, and to both views of a weak/strong pair. Photometric changes (colour jitter, H&E stain jitter, grayscale,
/// blur, noise) apply to the strong view's image only. The defaults are the full pipeline; `Augmentation.none`
/// changes nothing.
public struct Augmentation: Equatable, Sendable {
    /// Probability of mirroring left–right, and (independently) of mirroring top–bottom.
    public var flipProbability: Float = 0.5
    /// Turn by 0–3 quarter turns, uniformly (tissue has no up).
    public var quarterTurns = true
    /// Rotation uniform in ±`maxRotationDegrees`.
    public var maxRotationDegrees: Float = 15
    /// Zoom factor uniform in this range (above 1 magnifies).
    public var scaleRange: ClosedRange<Float> = 0.8...1.2

    /// Probability of colour jitter: brightness and contrast and saturation factors uniform in 1 ± the given
    /// amount, hue shift uniform in ±`hue` turns.
    public var colorJitterProbability: Float = 0.8
    public var brightness: Float = 0.25
    public var contrast: Float = 0.25
    public var saturation: Float = 0.25
    public var hue: Float = 0.04
    /// Probability of stain jitter: per stain channel, scale uniform in 1 ± `stainScale` and shift uniform in
    /// ±`stainShift` (in skimage's HED units, where stained tissue has amounts of about 0.02–0.1).
    public var stainJitterProbability: Float = 0.5
    public var stainScale: Float = 0.1
    public var stainShift: Float = 0.02
    public var grayscaleProbability: Float = 0.1
    /// Probability of a Gaussian blur with sigma uniform in `blurSigma` pixels.
    public var blurProbability: Float = 0.2
    public var blurSigma: ClosedRange<Float> = 0.1...1.5
    /// Probability of additive Gaussian noise with standard deviation uniform in `noiseStd`.
    public var noiseProbability: Float = 0.2
    public var noiseStd: ClosedRange<Float> = 0.01...0.04

    /// The full pipeline with the default ranges.
    public init() {}

    /// No change at all.
    public static let none: Augmentation = {
        var none = Augmentation()
        none.flipProbability = 0
        none.quarterTurns = false
        none.maxRotationDegrees = 0
        none.scaleRange = 1...1
        none.colorJitterProbability = 0
        none.stainJitterProbability = 0
        none.grayscaleProbability = 0
        none.blurProbability = 0
        none.noiseProbability = 0
        return none
    }()

    /// The parameters of sample `sample` in epoch `epoch`, drawn from their own stream under `seed`: the same on every
    /// run and thread, and independent of every other sample's.
    public func parameters(seed: UInt64, epoch: Int, sample: Int) -> AugmentationParameters {
        var stream = PhiloxStream(seed: seed, path: [UInt64(epoch), UInt64(sample)])
        return parameters(drawingFrom: &stream)
    }

    /// Draws parameters from `stream`. Every parameter is drawn whether or not it is used, always in the same order
    /// and number (24 positions), so changing one probability never changes the other parameters.
    public func parameters(drawingFrom stream: inout PhiloxStream) -> AugmentationParameters {
        var p = AugmentationParameters()
        p.horizontalFlip = stream.chance(flipProbability)
        p.verticalFlip = stream.chance(flipProbability)
        let turns = stream.integer(0, 4)
        p.quarterTurns = quarterTurns ? turns : 0
        p.degrees = stream.uniform(-maxRotationDegrees, maxRotationDegrees)
        p.scale = stream.uniform(scaleRange.lowerBound, scaleRange.upperBound)

        let jitter = stream.chance(colorJitterProbability)
        let factors = (stream.uniform(1 - brightness, 1 + brightness), stream.uniform(1 - contrast, 1 + contrast),
                       stream.uniform(1 - saturation, 1 + saturation), stream.uniform(-hue, hue))
        if jitter {
            p.colorJitter = .init(brightness: factors.0, contrast: factors.1, saturation: factors.2, hue: factors.3)
        }
        let stains = stream.chance(stainJitterProbability)
        let scales = (0..<3).map { _ in stream.uniform(1 - stainScale, 1 + stainScale) }
        let shifts = (0..<3).map { _ in stream.uniform(-stainShift, stainShift) }
        if stains { p.stainJitter = .init(scale: scales, shift: shifts) }
        p.grayscale = stream.chance(grayscaleProbability)
        let blur = stream.chance(blurProbability)
        let sigma = stream.uniform(blurSigma.lowerBound, blurSigma.upperBound)
        if blur { p.blurSigma = sigma }
        let noise = stream.chance(noiseProbability)
        let std = stream.uniform(noiseStd.lowerBound, noiseStd.upperBound)
        let noiseSeed = stream.nextSeed()
        if noise { p.noise = .init(std: std, seed: noiseSeed) }
        return p
    }
}

/// The augmentation of one sample. The default value changes nothing.
public struct AugmentationParameters: Equatable, Sendable {
    public struct ColorJitter: Equatable, Sendable {
        public var brightness: Float
        public var contrast: Float
        public var saturation: Float
        /// In turns.
        public var hue: Float
        public init(brightness: Float, contrast: Float, saturation: Float, hue: Float) {
            (self.brightness, self.contrast, self.saturation, self.hue) = (brightness, contrast, saturation, hue)
        }
    }
    public struct StainJitter: Equatable, Sendable {
        /// Per stain channel (H, E, DAB).
        public var scale: [Float]
        public var shift: [Float]
        public init(scale: [Float], shift: [Float]) { (self.scale, self.shift) = (scale, shift) }
    }
    public struct Noise: Equatable, Sendable {
        public var std: Float
        public var seed: UInt64
        public init(std: Float, seed: UInt64) { (self.std, self.seed) = (std, seed) }
    }

    public var horizontalFlip = false
    public var verticalFlip = false
    public var quarterTurns = 0
    public var degrees: Float = 0
    public var scale: Float = 1
    public var colorJitter: ColorJitter?
    public var stainJitter: StainJitter?
    public var grayscale = false
    public var blurSigma: Float?
    public var noise: Noise?

    public init() {}

    /// `window` flipped, turned, rotated and zoomed.
    public func geometry(_ window: Geometry) -> Geometry {
        window.flipped(horizontally: horizontalFlip, vertically: verticalFlip).turned(quarterTurns: quarterTurns)
            .rotated(degrees: Double(degrees)).zoomed(Double(scale))
    }

    /// The strong view's colour changes of RGB planes in [0, 1], in this order: colour jitter (brightness, contrast,
    /// saturation, hue), stain jitter, grayscale, blur, noise.
    public func photometric(_ image: Planes) throws -> Planes {
        var image = image
        if let jitter = colorJitter {
            image = try image.adjustedBrightness(jitter.brightness).adjustedContrast(jitter.contrast)
                .adjustedSaturation(jitter.saturation).hueShifted(jitter.hue)
        }
        if let stains = stainJitter { image = try image.stainJittered(scale: stains.scale, shift: stains.shift) }
        if grayscale { image = try image.grayscaled() }
        if let sigma = blurSigma { image = try image.gaussianBlurred(sigma: sigma) }
        if let noise { image = image.addingGaussianNoise(std: noise.std, seed: noise.seed) }
        return image
    }
}

/// A sample cut and augmented: views share one geometry, so pixel (y, x) shows the same tissue in each.
public struct AugmentedViews: Sendable {
    /// Geometry only: RGB `[3, h, w]` in [0, 1].
    public let weak: Planes
    /// The same geometry, then the photometric changes; nil unless asked for.
    public let strong: Planes?
    /// Class ids and instance ids `[1, h, w]`, resampled nearest; nil when the sample has none.
    public let mask: Planes?
    public let instances: Planes?
}

extension Sample {
    /// The sample seen through `parameters.geometry(window)` (see `Geometry.window`), with the strong view when
    /// `strong`. Positions outside the image are reflected.
    public func augmented(window: Geometry, parameters: AugmentationParameters, strong: Bool) throws -> AugmentedViews {
        let geometry = parameters.geometry(window)
        let weak = image.warpedColorPlanes(geometry)
        return AugmentedViews(weak: weak, strong: strong ? try parameters.photometric(weak) : nil,
                              mask: mask?.warped(geometry, filter: .nearest),
                              instances: instances?.warped(geometry, filter: .nearest))
    }
}

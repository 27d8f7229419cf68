import HistoCore

/// The random augmentation of training samples: the ranges and probabilities its parameters are drawn from.
///
/// Geometry (flips, quarter turns, rotation with reflect fill, zoom) applies to the image, mask and instance map
/// alike, and to both views of a weak/strong pair. Photometric changes (colour jitter, H&E stain jitter, grayscale,
/// blur, noise) apply to the strong view's image only. MONAI's transforms of a training recipe (axis flip, rotate-90,
/// noise, contrast, smoothing, histogram shift, keep-size zoom; all off by default) belong to every view, since they
/// make the training sample itself. The defaults are the full pipeline without the MONAI transforms;
/// `Augmentation.none` changes nothing; `Augmentation.dtseg` is DTSeg's MONAI recipe.
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

    /// MONAI `RandAxisFlip`: with this probability, mirror along one of the two axes, chosen uniformly (on top of
    /// the flips above).
    public var axisFlipProbability: Float = 0
    /// MONAI `RandRotate90(max_k: 3)`: with this probability, turn by 1, 2 or 3 quarter turns, uniformly (on top of
    /// the turns above).
    public var quarterTurnProbability: Float = 0
    /// MONAI `RandGaussianNoise` on the 0–255 image: with this probability add noise whose standard deviation is
    /// drawn uniformly in (0, `intensityNoiseStd`) (MONAI's `sample_std`), in 0–255 units, unclamped.
    public var intensityNoiseProbability: Float = 0
    public var intensityNoiseStd: Float = 0.1
    /// MONAI `RandAdjustContrast`: with this probability, `Planes.adjustedGamma` with γ uniform in `contrastGamma`.
    public var contrastProbability: Float = 0
    public var contrastGamma: ClosedRange<Float> = 0.5...4.5
    /// MONAI `RandGaussianSmooth`: with this probability, `Planes.gaussianSmoothed` with σ_x (down the columns) and
    /// σ_y (along them) uniform in their ranges (MONAI's defaults 0.25…1.5).
    public var smoothProbability: Float = 0
    public var smoothSigmaX: ClosedRange<Float> = 0.25...1.5
    public var smoothSigmaY: ClosedRange<Float> = 0.25...1.5
    /// MONAI `RandHistogramShift`: with this probability, `Planes.histogramShifted` through this many control points
    /// (at least 3), the inner ones floating: point i uniform between points i − 1 and i + 1, in order.
    public var histogramShiftProbability: Float = 0
    public var histogramControlPoints = 10
    /// MONAI `RandZoom(keep_size: true)`: with this probability, `Planes.zoomedKeepingSize` by one factor uniform in
    /// `keepSizeZoom` for both axes (`area` for the image, `nearest` for the mask and instances).
    public var keepSizeZoomProbability: Float = 0
    public var keepSizeZoom: ClosedRange<Float> = 0.9...1.1

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

    /// DTSeg's training augmentation (SPEC §1 "Augmentations"), MONAI's transforms in its order: axis flip p .5,
    /// rotate-90 p .5, Gaussian noise p .25 (σ 0.1 on 0–255), contrast p .25 (γ ∈ (1, 2)), Gaussian smoothing
    /// p .25 (σ_x ∈ (1, 2), σ_y MONAI's default), histogram shift p .25 (3 control points), zoom p .15
    /// (∈ [0.5, 2]).
    public static let dtseg: Augmentation = {
        var dtseg = Augmentation.none
        dtseg.axisFlipProbability = 0.5
        dtseg.quarterTurnProbability = 0.5
        dtseg.intensityNoiseProbability = 0.25
        dtseg.contrastProbability = 0.25
        dtseg.contrastGamma = 1...2
        dtseg.smoothProbability = 0.25
        dtseg.smoothSigmaX = 1...2
        dtseg.histogramShiftProbability = 0.25
        dtseg.histogramControlPoints = 3
        dtseg.keepSizeZoomProbability = 0.15
        dtseg.keepSizeZoom = 0.5...2
        return dtseg
    }()

    /// The augmentation as a run's training.json records it: its description without the MONAI transforms'
    /// fields while they are all at their defaults (off), as runs recorded it before those fields existed, so that
    /// such runs still resume (`recorded(_:)` reads either form).
    public var recordedDescription: String { Self.recorded(String(describing: self)) }

    /// A description, as recorded before or after the MONAI fields existed, in `recordedDescription`'s form.
    public static func recorded(_ description: String) -> String {
        guard let tail = defaultMONAITail, description.hasSuffix(tail) else { return description }
        return String(description.dropLast(tail.count)) + ")"
    }

    /// The end of a description whose MONAI fields are their defaults: ", axisFlipProbability: 0.0, … )".
    static let defaultMONAITail: String? = {
        let text = String(describing: Augmentation())
        return text.range(of: ", axisFlipProbability:").map { String(text[$0.lowerBound...]) }
    }()

    /// The augmentations `histodiff train --augment` names.
    public static let presets: [(name: String, augmentation: Augmentation)] =
        [("default", Augmentation()), ("none", .none), ("dtseg", .dtseg)]

    /// The parameters of sample `sample` in epoch `epoch`, drawn from their own stream under `seed`: the same on every
    /// run and thread, and independent of every other sample's.
    public func parameters(seed: UInt64, epoch: Int, sample: Int) -> AugmentationParameters {
        var stream = PhiloxStream(seed: seed, path: [UInt64(epoch), UInt64(sample)])
        return parameters(drawingFrom: &stream)
    }

    /// Draws parameters from `stream`. Every parameter is drawn whether or not it is used, always in the same order
    /// and number (24 positions, then the MONAI transforms' 16 + histogramControlPoints − 2, last), so changing one
    /// probability never changes the other parameters.
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
        drawMONAI(into: &p, from: &stream)
        return p
    }

    /// The MONAI transforms' parameters, after the others so that they never move them.
    private func drawMONAI(into p: inout AugmentationParameters, from stream: inout PhiloxStream) {
        let axisFlip = stream.chance(axisFlipProbability), axis = stream.integer(0, 2)
        if axisFlip { axis == 0 ? p.verticalFlip.toggle() : p.horizontalFlip.toggle() }
        let turn = stream.chance(quarterTurnProbability), turns = stream.integer(1, 4)
        if turn { p.quarterTurns = (p.quarterTurns + turns) % 4 }
        let noise = stream.chance(intensityNoiseProbability)
        let std = stream.uniform(0, intensityNoiseStd), seed = stream.nextSeed()
        if noise { p.intensityNoise = .init(std: std, seed: seed) }
        let contrast = stream.chance(contrastProbability)
        let gamma = stream.uniform(contrastGamma.lowerBound, contrastGamma.upperBound)
        if contrast { p.contrastGamma = gamma }
        let smooth = stream.chance(smoothProbability)
        let sigmaX = stream.uniform(smoothSigmaX.lowerBound, smoothSigmaX.upperBound)
        let sigmaY = stream.uniform(smoothSigmaY.lowerBound, smoothSigmaY.upperBound)
        if smooth { p.smoothing = .init(sigmaX: sigmaX, sigmaY: sigmaY) }
        let zoom = stream.chance(keepSizeZoomProbability)
        let factor = stream.uniform(keepSizeZoom.lowerBound, keepSizeZoom.upperBound)
        if zoom { p.keepSizeZoom = factor }
        let shift = stream.chance(histogramShiftProbability)
        var points = (0..<max(histogramControlPoints, 3)).map { Float($0) / Float(max(histogramControlPoints, 3) - 1) }
        for i in 1..<points.count - 1 { points[i] = stream.uniform(points[i - 1], points[i + 1]) }
        if shift { p.histogramControlPoints = points }
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
    /// MONAI's transforms (`Augmentation`'s axis flip and rotate-90 are folded into the flips and turns above).
    /// Noise on the 0–255 image, unclamped.
    public var intensityNoise: Noise?
    public var contrastGamma: Float?
    public var smoothing: Smoothing?
    /// The floating control points of the histogram shift, as fractions of the value range.
    public var histogramControlPoints: [Float]?
    public var keepSizeZoom: Float?

    public struct Smoothing: Equatable, Sendable {
        /// MONAI's σ_x, down the columns of channel-first planes, and σ_y, along the rows.
        public var sigmaX: Float
        public var sigmaY: Float
        public init(sigmaX: Float, sigmaY: Float) { (self.sigmaX, self.sigmaY) = (sigmaX, sigmaY) }
    }

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

    /// MONAI's intensity transforms of RGB planes in [0, 1], on the 0–255 image as DTSeg applies them before
    /// normalising (SPEC §1), in its order: noise, contrast, smoothing, histogram shift. Values are not clamped.
    public func intensity(_ image: Planes) throws -> Planes {
        guard intensityNoise != nil || contrastGamma != nil || smoothing != nil || histogramControlPoints != nil else {
            return image
        }
        var image = Planes(unchecked: image.channels, height: image.height, width: image.width,
                           values: image.values.map { $0 * 255 })
        if let noise = intensityNoise {
            image = image.addingGaussianNoise(std: noise.std, seed: noise.seed, clamped: false)
        }
        if let gamma = contrastGamma { image = image.adjustedGamma(gamma) }
        if let smoothing {
            image = try image.gaussianSmoothed(sigmaDown: smoothing.sigmaX, sigmaAcross: smoothing.sigmaY)
        }
        if let points = histogramControlPoints { image = try image.histogramShifted(floating: points) }
        return Planes(unchecked: image.channels, height: image.height, width: image.width,
                      values: image.values.map { $0 / 255 })
    }
}

/// A sample cut and augmented: views share one geometry, so pixel (y, x) shows the same tissue in each.
public struct AugmentedViews: Sendable {
    /// Geometry (and MONAI's intensity transforms, when drawn): RGB `[3, h, w]` in [0, 1] (MONAI's noise may step
    /// slightly outside).
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
        var weak = try parameters.intensity(image.warpedColorPlanes(geometry))
        var mask = mask?.warped(geometry, filter: .nearest), instances = instances?.warped(geometry, filter: .nearest)
        // MONAI's zoom comes last in DTSeg's recipe, after the intensity transforms (SPEC §1).
        if let zoom = parameters.keepSizeZoom.map(Double.init) {
            weak = try weak.zoomedKeepingSize(zoom, filter: .area)
            mask = try mask?.zoomedKeepingSize(zoom, filter: .nearest)
            instances = try instances?.zoomedKeepingSize(zoom, filter: .nearest)
        }
        return AugmentedViews(weak: weak, strong: strong ? try parameters.photometric(weak) : nil, mask: mask,
                              instances: instances)
    }
}

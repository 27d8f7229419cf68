import Foundation
import HistoCore
@testable import HistoData
import XCTest

final class AugmentationTests: XCTestCase {
    // MARK: geometry

    /// Flips and quarter turns follow numpy's conventions exactly (np.fliplr, np.flipud, np.rot90).
    func testFlipsAndTurnsMatchNumpyConventions() throws {
        let (h, w) = (3, 4)
        let planes = try Planes(channels: 2, height: h, width: w, values: (0..<(2 * h * w)).map(Float.init))
        let whole = Geometry.window(y: 0, x: 0, height: h, width: w)
        func expect(_ geometry: Geometry, _ shape: (Int, Int), _ source: (Int, Int) -> (Int, Int), _ what: String) {
            for filter in [ResizeFilter.nearest, .bilinear] {
                let out = planes.warped(geometry, filter: filter)
                XCTAssertEqual(out.shape, [2, shape.0, shape.1], what)
                for c in 0..<2 {
                    for i in 0..<shape.0 {
                        for j in 0..<shape.1 {
                            let (y, x) = source(i, j)
                            XCTAssertEqual(out[c, i, j], planes[c, y, x], "\(what) (\(i), \(j)) \(filter)")
                        }
                    }
                }
            }
        }
        expect(whole.flipped(horizontally: true, vertically: false), (h, w), { ($0, w - 1 - $1) }, "fliplr")
        expect(whole.flipped(horizontally: false, vertically: true), (h, w), { (h - 1 - $0, $1) }, "flipud")
        expect(whole.turned(quarterTurns: 1), (w, h), { ($1, w - 1 - $0) }, "rot90 k=1")
        expect(whole.turned(quarterTurns: 2), (h, w), { (h - 1 - $0, w - 1 - $1) }, "rot90 k=2")
        expect(whole.turned(quarterTurns: 3), (w, h), { (h - 1 - $1, $0) }, "rot90 k=3")
        expect(whole.turned(quarterTurns: -1), (w, h), { (h - 1 - $1, $0) }, "rot90 k=-1")
        expect(whole.flipped(horizontally: true, vertically: false).turned(quarterTurns: 1), (w, h), { ($1, $0) }, "transpose")
        expect(Geometry.window(y: 1, x: 2, height: 2, width: 2), (2, 2), { ($0 + 1, $1 + 2) }, "window")

        // A 90° rotation is one quarter turn.
        let square = try Planes(channels: 1, height: 5, width: 5, values: (0..<25).map(Float.init))
        let box = Geometry.window(y: 0, x: 0, height: 5, width: 5)
        XCTAssertEqual(square.warped(box.rotated(degrees: 90), filter: .nearest), square.warped(box.turned(quarterTurns: 1), filter: .nearest))
    }

    /// Rotation and zoom against scipy.ndimage (tools/make_aug_fixtures.py): bilinear, reflect fill, about the centre.
    func testRotationAndZoomMatchScipy() throws {
        let fixture = try AugmentFixture.load()
        let g = fixture.geometry
        let plane = try Planes(channels: 1, height: g.height, width: g.width, values: g.input)
        XCTAssertEqual(g.cases.count, 4)
        for c in g.cases {
            let geometry = Geometry.window(y: 0, x: 0, height: g.height, width: g.width).rotated(degrees: c.degrees).zoomed(c.scale)
            let out = plane.warped(geometry, filter: .bilinear)
            for (i, (got, want)) in zip(out.values, c.values).enumerated() {
                XCTAssertEqual(got, want, accuracy: 1e-5, "\(c.degrees)° ×\(c.scale) element \(i)")
            }
        }
    }

    /// The mask and the instance map must follow the image through every geometric transform. The image encodes
    /// each pixel's source position (red = 1000·y, green = 1000·x, 16-bit) and the mask and instance map are
    /// functions of that position, so after any transform mask = M(image) must still hold pixel by pixel: a mask
    /// turned, flipped or rotated the other way breaks it.
    func testMaskAndInstancesFollowTheImageThroughEveryGeometricTransform() throws {
        let (h, w) = (37, 45)
        let truth = try CoordinateData(self, height: h, width: w)
        let sample = truth.sample
        let whole = Geometry.window(y: 0, x: 0, height: h, width: w)
        let crop = Geometry.window(y: 5, x: 9, height: 24, width: 24)
        let exact: [(String, Geometry)] = [
            ("identity", whole), ("crop", crop),
            ("horizontal flip", crop.flipped(horizontally: true, vertically: false)),
            ("vertical flip", crop.flipped(horizontally: false, vertically: true)),
            ("quarter turn", whole.turned(quarterTurns: 1)), ("half turn", crop.turned(quarterTurns: 2)),
            ("three quarter turns", whole.turned(quarterTurns: 3)),
            ("crop past the edge", Geometry.window(y: -6, x: 30, height: 20, width: 20)),
        ]
        let interpolated: [(String, Geometry)] = [
            ("rotation +15°", crop.rotated(degrees: 15)), ("rotation -15°", crop.rotated(degrees: -15)),
            ("zoom in", crop.zoomed(1.3)), ("zoom out", crop.zoomed(0.7)),
            ("everything", crop.flipped(horizontally: true, vertically: true).turned(quarterTurns: 3).rotated(degrees: 11).zoomed(0.85)),
        ]
        for (name, geometry) in exact + interpolated {
            var parameters = AugmentationParameters()
            parameters.scale = 1
            let views = try sample.augmented(window: geometry, parameters: parameters, strong: false)
            let result = truth.check(image: views.weak, mask: try XCTUnwrap(views.mask), instances: try XCTUnwrap(views.instances),
                                     integral: exact.contains { $0.0 == name })
            XCTAssertEqual(result.mismatches, 0, name)
            // Zooms put whole rows and columns on rounding ties, which are not checked.
            XCTAssertGreaterThan(result.checked, geometry.height * geometry.width * 2 / 3, name)
        }

        // Parameters drawn by the full augmentation, through the same path the loader uses.
        for index in 0..<40 {
            let parameters = Augmentation().parameters(seed: 5, epoch: 0, sample: index)
            let views = try sample.augmented(window: crop, parameters: parameters, strong: true)
            let result = truth.check(image: views.weak, mask: try XCTUnwrap(views.mask), instances: try XCTUnwrap(views.instances), integral: false)
            XCTAssertEqual(result.mismatches, 0, "sample \(index): \(parameters)")
            XCTAssertEqual(views.strong, try parameters.photometric(views.weak), "the strong view shares the weak view's geometry")
        }

        // The check has teeth: a mask rotated the other way, flipped alone, or turned the other way fails it.
        let image = sample.image.warpedColorPlanes(crop.rotated(degrees: 15))
        let instances = try XCTUnwrap(sample.instances)
        for (name, wrong) in [("rotated the other way", crop.rotated(degrees: -15)), ("not rotated", crop)] {
            let result = truth.check(image: image, mask: try XCTUnwrap(sample.mask).warped(wrong, filter: .nearest),
                                     instances: instances.warped(wrong, filter: .nearest), integral: false)
            XCTAssertGreaterThan(result.mismatches, result.checked / 4, name)
        }
        let turned = sample.image.warpedColorPlanes(whole.turned(quarterTurns: 1))
        let otherWay = truth.check(image: turned, mask: try XCTUnwrap(sample.mask).warped(whole.turned(quarterTurns: 3), filter: .nearest),
                                   instances: instances.warped(whole.turned(quarterTurns: 3), filter: .nearest), integral: true)
        XCTAssertGreaterThan(otherWay.mismatches, otherWay.checked / 2)
    }

    func testIdentityParametersCopyTheWindowExactly() throws {
        let dataset = try Support.syntheticDataset(self, count: 1, width: 23, height: 17)
        let sample = try dataset.sample(at: 0)
        let window = Geometry.window(y: 3, x: 4, height: 10, width: 12)
        let views = try sample.augmented(window: window, parameters: AugmentationParameters(), strong: true)
        XCTAssertEqual(views.weak, try sample.image.colorPlanes(range: .zeroToOne).crop(y: 3, x: 4, height: 10, width: 12, padding: .reflect))
        XCTAssertEqual(views.strong, views.weak)
        XCTAssertEqual(views.mask, try sample.mask?.crop(y: 3, x: 4, height: 10, width: 12, padding: .reflect))
        XCTAssertNil(views.instances)
        XCTAssertEqual(sample.image.warpedColorPlanes(window, range: .minusOneToOne),
                       try sample.image.colorPlanes(range: .minusOneToOne).crop(y: 3, x: 4, height: 10, width: 12, padding: .reflect))
        XCTAssertEqual(Augmentation.none.parameters(seed: 3, epoch: 1, sample: 2), AugmentationParameters())
    }

    // MARK: parameters

    func testParametersAreReproducibleIndependentAndInRange() throws {
        let augmentation = Augmentation()
        let first = augmentation.parameters(seed: 11, epoch: 2, sample: 5)
        XCTAssertEqual(first, augmentation.parameters(seed: 11, epoch: 2, sample: 5))
        XCTAssertNotEqual(first, augmentation.parameters(seed: 11, epoch: 2, sample: 6))
        XCTAssertNotEqual(first, augmentation.parameters(seed: 11, epoch: 3, sample: 5))
        XCTAssertNotEqual(first, augmentation.parameters(seed: 12, epoch: 2, sample: 5))

        // Switching one change off leaves every other parameter as it was.
        var noBlur = augmentation
        noBlur.blurProbability = 0
        for sample in 0..<50 {
            var expected = augmentation.parameters(seed: 1, epoch: 0, sample: sample)
            expected.blurSigma = nil
            XCTAssertEqual(noBlur.parameters(seed: 1, epoch: 0, sample: sample), expected)
        }

        let draws = (0..<4000).map { augmentation.parameters(seed: 99, epoch: 0, sample: $0) }
        func rate(_ predicate: (AugmentationParameters) -> Bool) -> Double { Double(draws.filter(predicate).count) / Double(draws.count) }
        XCTAssertEqual(rate(\.horizontalFlip), 0.5, accuracy: 0.03)
        XCTAssertEqual(rate(\.verticalFlip), 0.5, accuracy: 0.03)
        for k in 0..<4 { XCTAssertEqual(rate { $0.quarterTurns == k }, 0.25, accuracy: 0.03) }
        XCTAssertEqual(rate { $0.colorJitter != nil }, 0.8, accuracy: 0.03)
        XCTAssertEqual(rate { $0.stainJitter != nil }, 0.5, accuracy: 0.03)
        XCTAssertEqual(rate(\.grayscale), 0.1, accuracy: 0.02)
        XCTAssertEqual(rate { $0.blurSigma != nil }, 0.2, accuracy: 0.03)
        XCTAssertEqual(rate { $0.noise != nil }, 0.2, accuracy: 0.03)
        XCTAssertTrue(draws.allSatisfy { abs($0.degrees) <= 15 && (0.8...1.2).contains($0.scale) })
        XCTAssertGreaterThan(draws.map(\.degrees).max()!, 14)
        XCTAssertLessThan(draws.map(\.degrees).min()!, -14)
        let jitters = draws.compactMap(\.colorJitter)
        XCTAssertTrue(jitters.allSatisfy { (0.75...1.25).contains($0.brightness) && abs($0.hue) <= 0.04 })
        XCTAssertTrue(draws.compactMap(\.stainJitter).allSatisfy { $0.scale.allSatisfy { abs($0 - 1) <= 0.1 } && $0.shift.allSatisfy { abs($0) <= 0.02 } })
        XCTAssertEqual(Set(draws.compactMap(\.noise?.seed)).count, draws.filter { $0.noise != nil }.count)
    }

    // MARK: photometric

    /// Against numpy references of skimage's rgb2hed/hed2rgb and torchvision's colour definitions
    /// (tools/make_aug_fixtures.py).
    func testPhotometricOpsMatchNumpyReferences() throws {
        let fixture = try AugmentFixture.load()
        let image = try Planes(channels: fixture.shape[0], height: fixture.shape[1], width: fixture.shape[2], values: fixture.image)
        let cases = fixture.cases
        func check(_ name: String, _ out: Planes, accuracy: Float = 1e-5) throws {
            let want = try XCTUnwrap(cases[name], name).values
            XCTAssertEqual(out.shape, image.shape, name)
            for (i, (got, expected)) in zip(out.values, want).enumerated() {
                XCTAssertEqual(got, expected, accuracy: accuracy, "\(name) element \(i)")
            }
        }
        try check("rgbToHED", try image.rgbToHED())
        let stains = try Planes(channels: 3, height: image.height, width: image.width, values: try XCTUnwrap(cases["hedToRGB"]?.input))
        try check("hedToRGB", try stains.hedToRGB())
        try check("roundTrip", try image.rgbToHED().hedToRGB())
        let jitter = try XCTUnwrap(cases["stainJitter"])
        try check("stainJitter", try image.stainJittered(scale: try XCTUnwrap(jitter.scale), shift: try XCTUnwrap(jitter.shift)))
        try check("brightness", try image.adjustedBrightness(try XCTUnwrap(cases["brightness"]?.factor)))
        for name in ["contrastLow", "contrastHigh"] { try check(name, try image.adjustedContrast(try XCTUnwrap(cases[name]?.factor))) }
        for name in ["saturationLow", "saturationHigh"] { try check(name, try image.adjustedSaturation(try XCTUnwrap(cases[name]?.factor))) }
        for name in ["huePlus", "hueMinus"] { try check(name, try image.hueShifted(try XCTUnwrap(cases[name]?.turns))) }
        try check("grayscale", try image.grayscaled())
        for name in ["blurSmall", "blurWide"] { try check(name, try image.gaussianBlurred(sigma: try XCTUnwrap(cases[name]?.sigma))) }

        let gray = try Planes(channels: 1, height: 2, width: 2, values: [0, 0.5, 1, 0.25])
        for op in [{ try gray.rgbToHED() }, { try gray.hedToRGB() }, { try gray.adjustedBrightness(1.1) }, { try gray.hueShifted(0.1) },
                   { try gray.grayscaled() }, { try image.stainJittered(scale: [1], shift: [0, 0, 0]) }, { try gray.gaussianBlurred(sigma: 0) }] {
            XCTAssertThrowsError(try op())
        }
    }

    func testNoiseIsTheEnginesNormalStreamAndClamped() throws {
        let planes = try Planes(channels: 3, height: 4, width: 5, values: [Float](repeating: 0.5, count: 60))
        let noisy = planes.addingGaussianNoise(std: 0.1, seed: 77)
        let normals = try RandomGenerator(seed: 77).normal([3, 4, 5]).toArray()
        XCTAssertEqual(noisy.values, normals.map { min(max(0.5 + 0.1 * $0, 0), 1) })
        XCTAssertEqual(noisy, planes.addingGaussianNoise(std: 0.1, seed: 77))
        let wild = planes.addingGaussianNoise(std: 10, seed: 1).values
        XCTAssertTrue(wild.allSatisfy { (0...1).contains($0) } && wild.contains(0) && wild.contains(1))
    }

    /// Stain jitter moves colour along the stain directions: more haematoxylin darkens and blues a pink pixel.
    func testStainJitterActsOnStains() throws {
        let pink = try Planes(channels: 3, height: 1, width: 1, values: [0.85, 0.55, 0.75])
        XCTAssertEqual(try pink.stainJittered(scale: [1, 1, 1], shift: [0, 0, 0]).values, try pink.rgbToHED().hedToRGB().values)
        let moreH = try pink.stainJittered(scale: [1, 1, 1], shift: [0.05, 0, 0]).values
        XCTAssertLessThan(moreH[0], 0.85 - 0.1)
        XCTAssertGreaterThan(moreH[2] / moreH[0], 0.75 / 0.85)
    }
}

// MARK: MONAI transforms (DTSeg, SPEC §1)

extension AugmentationTests {
    /// Contrast, smoothing, histogram shift and keep-size zoom against tools/make_monai_fixtures.py on a 0–255 image:
    /// within 1e-4, labels exactly, 255 (ignore) included.
    func testMONAITransformsMatchNumpyReferences() throws {
        let fixture = try MONAIFixture.load()
        let image = try Planes(channels: 3, height: fixture.shape[1], width: fixture.shape[2], values: fixture.image)
        var worst: Float = 0
        func check(_ name: String, _ got: Planes, _ want: [Float]) {
            XCTAssertEqual(got.values.count, want.count, name)
            for (i, (g, w)) in zip(got.values, want).enumerated() {
                worst = max(worst, abs(g - w))
                XCTAssertEqual(g, w, accuracy: 1e-4, "\(name) element \(i)")
            }
        }
        for c in fixture.contrast { check("contrast γ \(c.gamma)", image.adjustedGamma(c.gamma), c.output) }
        for c in fixture.smooth {
            check("smooth σ \(c.sigma_down)/\(c.sigma_across)",
                  try image.gaussianSmoothed(sigmaDown: c.sigma_down, sigmaAcross: c.sigma_across), c.output)
        }
        for c in fixture.histogram_shift {
            check("histogram shift \(c.floating)", try image.histogramShifted(floating: c.floating), c.output)
        }
        let label = try Planes(channels: 1, height: fixture.shape[1], width: fixture.shape[2], values: fixture.label)
        XCTAssertTrue(fixture.label.contains(255))
        for c in fixture.zoom {
            check("zoom \(c.factor) image", try image.zoomedKeepingSize(c.factor, filter: .area), c.image)
            XCTAssertEqual(try label.zoomedKeepingSize(c.factor, filter: .nearest).values, c.label,
                           "zoom \(c.factor) label")
        }
        print("MONAI transforms: max abs error \(worst) on 0–255 values")
        XCTAssertThrowsError(try image.gaussianSmoothed(sigmaDown: 0, sigmaAcross: 1))
        XCTAssertThrowsError(try image.histogramShifted(floating: [0, 0.6, 0.4, 1]))
        XCTAssertThrowsError(try image.zoomedKeepingSize(0.05, filter: .area))
    }

    /// The intensity chain works on the 0–255 image: its noise is the engine's normal stream times σ on that scale,
    /// unclamped; a sample's mask and instances follow the zoom pixel for pixel, 255 (ignore) kept.
    func testMONAIIntensityScaleAndZoomedLabelsFollowTheImage() throws {
        let planes = try Planes(channels: 3, height: 4, width: 5, values: [Float](repeating: 0, count: 60))
        var parameters = AugmentationParameters()
        parameters.intensityNoise = .init(std: 0.1, seed: 5)
        let normals = try RandomGenerator(seed: 5).normal([3, 4, 5]).toArray()
        let noisy = try parameters.intensity(planes).values
        for (got, normal) in zip(noisy, normals) { XCTAssertEqual(got, 0.1 * normal / 255, accuracy: 1e-9) }
        XCTAssertTrue(noisy.contains { $0 < 0 })

        // An image whose red plane is the class id (as a fraction of 255): at zoom 2, area and nearest both copy
        // each source pixel into a 2×2 block, so the zoomed image and mask still agree everywhere.
        let (h, w) = (6, 8)
        let ids: [Float] = (0..<(h * w)).map { (p: Int) -> Float in p % 7 == 3 ? 255 : Float(p * 5 / 3 % 4) }
        let rgb: [UInt16] = ids.flatMap { (id: Float) -> [UInt16] in [UInt16(id), 128, 128] }
        let sample = Sample(name: "ids", image: try Image(width: w, height: h, channels: 3, bitDepth: 8, samples: rgb),
                            mask: try Planes(channels: 1, height: h, width: w, values: ids),
                            instances: try Planes(channels: 1, height: h, width: w, values: ids))
        var zoom = AugmentationParameters()
        zoom.keepSizeZoom = 2
        let views = try sample.augmented(window: .window(y: 0, x: 0, height: h, width: w), parameters: zoom,
                                         strong: false)
        let mask = try XCTUnwrap(views.mask), instances = try XCTUnwrap(views.instances)
        XCTAssertEqual(mask.values, instances.values)
        XCTAssertTrue(mask.values.contains(255))
        for p in 0..<(h * w) {
            XCTAssertEqual(views.weak.values[p] * 255, mask.values[p], accuracy: 1e-3, "pixel \(p)")
        }
        XCTAssertNotEqual(mask.values, ids)
    }

    /// The dtseg preset draws MONAI's transforms at the SPEC's rates and ranges, reproducibly; the MONAI draws come
    /// after the others, so every other preset's parameters are unchanged.
    func testDTSegPresetDrawsMONAIParameters() throws {
        let dtseg = Augmentation.dtseg
        XCTAssertEqual(dtseg.parameters(seed: 4, epoch: 1, sample: 2), dtseg.parameters(seed: 4, epoch: 1, sample: 2))
        var offAgain = dtseg
        (offAgain.axisFlipProbability, offAgain.quarterTurnProbability) = (0, 0)
        (offAgain.intensityNoiseProbability, offAgain.contrastProbability, offAgain.smoothProbability) = (0, 0, 0)
        (offAgain.histogramShiftProbability, offAgain.keepSizeZoomProbability) = (0, 0)
        XCTAssertEqual(offAgain.parameters(seed: 4, epoch: 1, sample: 2), AugmentationParameters())

        let draws = (0..<4000).map { dtseg.parameters(seed: 7, epoch: 0, sample: $0) }
        func rate(_ predicate: (AugmentationParameters) -> Bool) -> Double {
            Double(draws.filter(predicate).count) / Double(draws.count)
        }
        XCTAssertEqual(rate { $0.horizontalFlip || $0.verticalFlip }, 0.5, accuracy: 0.03)
        XCTAssertEqual(rate { $0.horizontalFlip && $0.verticalFlip }, 0)
        XCTAssertEqual(rate { $0.quarterTurns != 0 }, 0.5, accuracy: 0.03)
        for k in 1...3 { XCTAssertEqual(rate { $0.quarterTurns == k }, 1.0 / 6, accuracy: 0.03) }
        XCTAssertEqual(rate { $0.intensityNoise != nil }, 0.25, accuracy: 0.03)
        XCTAssertEqual(rate { $0.contrastGamma != nil }, 0.25, accuracy: 0.03)
        XCTAssertEqual(rate { $0.smoothing != nil }, 0.25, accuracy: 0.03)
        XCTAssertEqual(rate { $0.histogramControlPoints != nil }, 0.25, accuracy: 0.03)
        XCTAssertEqual(rate { $0.keepSizeZoom != nil }, 0.15, accuracy: 0.03)
        XCTAssertTrue(draws.allSatisfy { $0.colorJitter == nil && $0.noise == nil && $0.degrees == 0 && $0.scale == 1 })
        XCTAssertTrue(draws.compactMap(\.intensityNoise).allSatisfy { (0...0.1).contains($0.std) })
        XCTAssertTrue(draws.compactMap(\.contrastGamma).allSatisfy { (1...2).contains($0) })
        XCTAssertTrue(draws.compactMap(\.smoothing).allSatisfy {
            (1...2).contains($0.sigmaX) && (0.25...1.5).contains($0.sigmaY)
        })
        XCTAssertTrue(draws.compactMap(\.keepSizeZoom).allSatisfy { (0.5...2).contains($0) })
        XCTAssertTrue(draws.compactMap(\.histogramControlPoints).allSatisfy {
            $0.count == 3 && $0[0] == 0 && $0[2] == 1 && (0...1).contains($0[1])
        })
        XCTAssertEqual(Augmentation.presets.map(\.name), ["default", "none", "dtseg"])
    }
}

/// tools/make_monai_fixtures.py's output.
struct MONAIFixture: Decodable {
    struct Contrast: Decodable { let gamma: Float; let output: [Float] }
    struct Smooth: Decodable { let sigma_down, sigma_across: Float; let output: [Float] }
    struct Shift: Decodable { let floating: [Float]; let output: [Float] }
    struct Zoom: Decodable { let factor: Double; let image, label: [Float] }
    let shape: [Int]
    let image, label: [Float]
    let contrast: [Contrast]
    let smooth: [Smooth]
    let histogram_shift: [Shift]
    let zoom: [Zoom]

    static func load() throws -> MONAIFixture {
        try JSONDecoder().decode(MONAIFixture.self,
                                 from: Data(contentsOf: Support.fixtures.appendingPathComponent("monai.json")))
    }
}

/// tools/make_aug_fixtures.py's output.
struct AugmentFixture: Decodable {
    struct Case: Decodable {
        let values: [Float]
        let input: [Float]?
        let factor: Float?
        let turns: Float?
        let sigma: Float?
        let scale: [Float]?
        let shift: [Float]?
    }
    struct GeometryCase: Decodable { let degrees: Double; let scale: Double; let values: [Float] }
    struct GeometryFixture: Decodable { let height, width: Int; let input: [Float]; let cases: [GeometryCase] }
    let shape: [Int]
    let image: [Float]
    let cases: [String: Case]
    let geometry: GeometryFixture

    static func load() throws -> AugmentFixture {
        try JSONDecoder().decode(AugmentFixture.self, from: Data(contentsOf: Support.fixtures.appendingPathComponent("augment.json")))
    }
}

/// A sample whose image encodes each pixel's position, with a mask and an instance map that are functions of the
/// position, written as files and read back through `Dataset` (16-bit RGB image, 8-bit class ids, 16-bit instances).
struct CoordinateData {
    let height: Int
    let width: Int
    let sample: Sample
    let classes: [Float]
    let ids: [Float]

    init(_ test: XCTestCase, height: Int, width: Int) throws {
        self.height = height
        self.width = width
        let root = try Support.temporaryFolder(test)
        var rgb: [UInt16] = []
        for y in 0..<height { for x in 0..<width { rgb += [UInt16(1000 * y), UInt16(1000 * x), UInt16((y * 31 + x * 17) % 65536)] } }
        // Asymmetric in every direction: no flip or turn maps it onto itself.
        classes = (0..<(height * width)).map { p in Float((p / width * 7 + p % width * 3 + p * p / 11) % 5) }
        ids = (0..<(height * width)).map { Float($0 + 1) }
        try Support.writePNG(try Image(width: width, height: height, channels: 3, bitDepth: 16, samples: rgb), root, "images", "coords")
        try Support.writePNG(try Image(width: width, height: height, channels: 1, bitDepth: 8, samples: classes.map { UInt16($0) }), root, "masks", "coords")
        try Support.writePNG(try Image(width: width, height: height, channels: 1, bitDepth: 16, samples: ids.map { UInt16($0) }), root, "instances", "coords")
        sample = try Dataset.open(path: root.path, requireMasks: true, classes: .ids(count: 5)).sample(at: 0)
    }

    /// Compares mask and instances with the values at the source position each output pixel's colour names.
    /// `integral`: the transform maps pixels to pixels, so every position must be a whole pixel and every pixel is
    /// checked; otherwise pixels whose position is within 0.01 of a rounding tie are skipped.
    func check(image: Planes, mask: Planes, instances: Planes, integral: Bool) -> (checked: Int, mismatches: Int) {
        var checked = 0, mismatches = 0
        let plane = image.height * image.width
        for p in 0..<plane {
            let y = Double(image.values[p]) * 65.535, x = Double(image.values[plane + p]) * 65.535
            let fy = y - y.rounded(.down), fx = x - x.rounded(.down)
            if integral {
                if abs(y - y.rounded()) > 1e-3 || abs(x - x.rounded()) > 1e-3 { mismatches += 1; checked += 1; continue }
            } else if abs(fy - 0.5) < 0.01 || abs(fx - 0.5) < 0.01 {
                continue
            }
            let source = Int(y.rounded()) * width + Int(x.rounded())
            checked += 1
            if mask.values[p] != classes[source] || instances.values[p] != ids[source] { mismatches += 1 }
        }
        return (checked, mismatches)
    }
}

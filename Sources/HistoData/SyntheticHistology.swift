import Foundation
import HistoCore

/// Synthetic H&E-like tiles with exact labels, for tests, demos and smoke training where real data is absent or
/// labels must be known exactly.
///
/// A tile is rendered in optical density: haematoxylin and eosin amounts per pixel times the image's two stain
/// vectors (Macenko's reference vectors, jittered per image), `RGB = white · exp(−OD)`, then blurred and given
/// sensor noise. The tissue is eosin-pink stroma of wavy fibres (ridges of anisotropic value noise, domain-warped),
/// denser or looser by region, purple-pink cytoplasm where epithelium clusters, and white lumen. Nuclei are
/// ellipses perturbed by a few random radial harmonics, of three kinds: epithelial (large, pale centre, granular
/// chromatin, dark rim, sometimes a nucleolus), lymphocytes (small, round, dark) and fibroblasts (thin, elongated
/// along the fibres). A pixel covered by several nuclei belongs to the last one drawn; each instance is then kept as
/// its largest 4-connected piece (other pieces become background) and ids are renumbered 1…n in drawing order, so the
/// image, the mask and the instance map agree exactly.
///
/// Every random choice comes from Philox streams under the tile's seed (`PhiloxStream`), so a seed gives the same
/// tile on every run; transcendental functions come from the platform's libm, whose last-bit differences between
/// platforms can move a boundary pixel.
public enum SyntheticHistology {
    /// How densely nuclei are packed, and how often they touch.
    public enum Crowding: String, CaseIterable, Sendable {
        /// Mostly stroma: fibroblasts and lymphocytes, nuclei kept apart; about 12–15% of pixels are nuclei.
        case sparse
        /// Mixed stroma and epithelium, a few touching pairs; about 19–25%.
        case moderate
        /// Epithelial sheets: nuclei in clusters, many touching or overlapping; about 31–39%.
        case crowded
    }

    /// One generated tile.
    public struct Tile: Sendable {
        /// 8-bit RGB.
        public let image: Image
        /// 8-bit gray, 255 on nuclei and 0 elsewhere (exactly where `instances` is nonzero).
        public let mask: Image
        /// 16-bit gray instance ids 1…`nucleusCount` in drawing order, 0 for background.
        public let instances: Image
        public let nucleusCount: Int
    }

    /// A `width × height` tile drawn from `seed` at the given crowding.
    public static func tile(width: Int, height: Int, seed: UInt64, crowding: Crowding) throws -> Tile {
        guard width > 0, height > 0 else {
            throw EngineError.invalidValue(op: "SyntheticHistology.tile", message: "size \(width)×\(height) must be positive")
        }
        var styleStream = PhiloxStream(seed: seed, path: [Purpose.style.rawValue])
        let style = Style(&styleStream)
        var tissueStream = PhiloxStream(seed: seed, path: [Purpose.tissue.rawValue])
        let tissue = TissueFields(width: width, height: height, style: style, crowding: crowding, stream: &tissueStream)
        var nucleusStream = PhiloxStream(seed: seed, path: [Purpose.nuclei.rawValue])
        var layout = NucleusLayout(width: width, height: height)
        layout.place(crowding: crowding, tissue: tissue, style: style, stream: &nucleusStream)
        let nuclei = layout.finish()
        guard nuclei.count <= Int(UInt16.max) else {
            throw EngineError.invalidValue(op: "SyntheticHistology.tile", message: "\(nuclei.count) nuclei do not fit 16-bit instance ids; draw a smaller tile")
        }

        let rgb = render(layout: layout, nuclei: nuclei, tissue: tissue, style: style)
        let blurred = try rgb.gaussianBlurred(sigma: style.blurSigma)
        let noisy = blurred.addingGaussianNoise(std: style.noiseStd, seed: PhiloxStream.derive(seed: seed, path: [Purpose.noise.rawValue]))

        let plane = width * height
        var samples = [UInt16](repeating: 0, count: 3 * plane)
        for p in 0..<plane {
            for c in 0..<3 { samples[3 * p + c] = UInt16((noisy.values[c * plane + p] * 255).rounded()) }
        }
        let ids = layout.labels.map { UInt16($0) }
        return Tile(image: Image(unchecked: width, height: height, channels: 3, bitDepth: 8, samples: samples),
                    mask: Image(unchecked: width, height: height, channels: 1, bitDepth: 8, samples: ids.map { $0 > 0 ? 255 : 0 }),
                    instances: Image(unchecked: width, height: height, channels: 1, bitDepth: 16, samples: ids),
                    nucleusCount: nuclei.count)
    }

    /// Writes a dataset folder in the project's layout: `images/` (8-bit RGB), `masks/` (0/255) and `instances/`
    /// (16-bit ids), `count` tiles of `size × size` named `synth0000`, `synth0001`, …. Tile i is drawn from
    /// `PhiloxStream.derive(seed: seed, path: [i])`, so a dataset is a prefix of any larger one with the same seed.
    /// Without `crowding` the tiles cycle through sparse, moderate, crowded. The folder must not exist or be empty.
    public static func makeDataset(at path: String, count: Int, size: Int, seed: UInt64, crowding: Crowding? = nil) throws {
        guard count > 0, size > 0 else {
            throw EngineError.invalidValue(op: "SyntheticHistology.makeDataset", message: "count \(count) and size \(size) must be positive")
        }
        let files = FileManager.default
        if let existing = try? files.contentsOfDirectory(atPath: path), !existing.isEmpty {
            throw EngineError.file(path: path, message: "the folder is not empty; a synthetic dataset is written to a new or empty folder")
        }
        let folders = ["images", "masks", "instances"].map { "\(path)/\($0)" }
        do {
            for folder in folders { try files.createDirectory(atPath: folder, withIntermediateDirectories: true) }
        } catch {
            throw EngineError.file(path: path, message: "cannot create the dataset folders: \(error.localizedDescription)")
        }
        let digits = max(4, String(count - 1).count)
        let failures = FailureSlot()
        parallelFor(count, grain: 1) { range in
            for index in range where !failures.isSet {
                do {
                    let tileSeed = PhiloxStream.derive(seed: seed, path: [UInt64(index)])
                    let level = crowding ?? Crowding.allCases[index % Crowding.allCases.count]
                    let tile = try tile(width: size, height: size, seed: tileSeed, crowding: level)
                    let digitsOfIndex = String(index)
                    let name = "synth" + String(repeating: "0", count: max(0, digits - digitsOfIndex.count)) + digitsOfIndex
                    for (folder, image) in zip(folders, [tile.image, tile.mask, tile.instances]) {
                        try PNG.write(image, to: "\(folder)/\(name).png")
                    }
                } catch {
                    failures.set(error)
                }
            }
        }
        if let error = failures.error { throw error }
    }
}

/// The first error of a parallel loop.
private final class FailureSlot: @unchecked Sendable {
    private let lock = NSLock()
    private var first: Error?

    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return first != nil }
    var error: Error? { lock.lock(); defer { lock.unlock() }; return first }
    func set(_ error: Error) { lock.lock(); if first == nil { first = error }; lock.unlock() }
}

/// The streams of a tile's parts: each part draws from its own stream under the tile's seed.
private enum Purpose: UInt64 { case style = 1, tissue, nuclei, noise }

// MARK: style

/// The per-image look: stain vectors and strengths, illumination, focus and noise.
private struct Style {
    /// Optical density per unit of stain (unit vectors over R, G, B).
    let haematoxylin: SIMD3<Float>
    let eosin: SIMD3<Float>
    /// Multipliers of every haematoxylin and eosin amount (staining strength).
    let haematoxylinScale: Float
    let eosinScale: Float
    /// The haematoxylin taken up by stroma and cytoplasm (bluish background staining in some slides).
    let backgroundHaematoxylin: Float
    /// The transmitted light where there is no stain.
    let white: SIMD3<Float>
    let fibreAngle: Float
    let lumenFraction: Float
    let blurSigma: Float
    let noiseStd: Float

    init(_ stream: inout PhiloxStream) {
        func jittered(_ reference: SIMD3<Float>, _ amount: Float, _ stream: inout PhiloxStream) -> SIMD3<Float> {
            let v = reference + SIMD3(stream.uniform(-amount, amount), stream.uniform(-amount, amount), stream.uniform(-amount, amount))
            let clamped = SIMD3(max(v.x, 0.05), max(v.y, 0.05), max(v.z, 0.05))
            return clamped / (clamped * clamped).sum().squareRoot()
        }
        // Macenko et al.'s reference H&E vectors.
        haematoxylin = jittered(SIMD3(0.5626, 0.7201, 0.4062), 0.08, &stream)
        eosin = jittered(SIMD3(0.2159, 0.8012, 0.5581), 0.08, &stream)
        haematoxylinScale = stream.uniform(0.75, 1.25)
        eosinScale = stream.uniform(0.55, 1.5)
        backgroundHaematoxylin = stream.uniform(0.02, 0.3)
        let brightness = stream.uniform(0.9, 0.99)
        white = SIMD3(brightness * stream.uniform(0.97, 1.01), brightness * stream.uniform(0.97, 1.01), brightness * stream.uniform(0.99, 1.03))
        fibreAngle = stream.uniform(0, .pi)
        lumenFraction = stream.chance(0.35) ? 0 : stream.uniform(0.02, 0.18)
        blurSigma = stream.uniform(0.7, 1.6)
        noiseStd = stream.uniform(0.004, 0.018)
    }
}

// MARK: noise fields

/// Value noise: uniform lattice values spaced `along × across` pixels in a frame turned by `angle`, interpolated
/// with smoothstep weights. Anisotropic spacing gives streaks along `angle`.
private struct ValueNoise {
    let cosAngle: Float, sinAngle: Float
    let inverseAlong: Float, inverseAcross: Float
    let originU: Float, originV: Float
    let columns: Int, rows: Int
    let lattice: [Float]

    /// Covers the `width × height` image plus `margin` pixels on each side (for warped look-ups).
    init(width: Int, height: Int, along: Float, across: Float, angle: Float, margin: Float = 0, stream: inout PhiloxStream) {
        let (c, s) = (cos(angle), sin(angle))
        cosAngle = c; sinAngle = s
        inverseAlong = 1 / along; inverseAcross = 1 / across
        let corners = [(-margin, -margin), (-margin, Float(width) + margin), (Float(height) + margin, -margin),
                       (Float(height) + margin, Float(width) + margin)]
        let us = corners.map { ($0.1 * c + $0.0 * s) / along }
        let vs = corners.map { (-$0.1 * s + $0.0 * c) / across }
        let (lowU, lowV) = (us.min()!.rounded(.down), vs.min()!.rounded(.down))
        originU = lowU; originV = lowV
        columns = Int(us.max()! - lowU) + 2
        rows = Int(vs.max()! - lowV) + 2
        lattice = (0..<(columns * rows)).map { _ in stream.uniform() }
    }

    /// The field at a (fractional) pixel position, in [0, 1].
    @inline(__always) func callAsFunction(_ y: Float, _ x: Float) -> Float {
        let u = (x * cosAngle + y * sinAngle) * inverseAlong - originU
        let v = (-x * sinAngle + y * cosAngle) * inverseAcross - originV
        let iu = min(max(Int(u), 0), columns - 2), iv = min(max(Int(v), 0), rows - 2)
        let fu = smooth(min(max(u - Float(iu), 0), 1)), fv = smooth(min(max(v - Float(iv), 0), 1))
        let row = iv * columns + iu
        let top = lattice[row] + (lattice[row + 1] - lattice[row]) * fu
        let bottom = lattice[row + columns] + (lattice[row + columns + 1] - lattice[row + columns]) * fu
        return top + (bottom - top) * fv
    }

    @inline(__always) private func smooth(_ t: Float) -> Float { t * t * (3 - 2 * t) }
}

@inline(__always) private func smoothstep(_ lo: Float, _ hi: Float, _ x: Float) -> Float {
    let t = min(max((x - lo) / (hi - lo), 0), 1)
    return t * t * (3 - 2 * t)
}

/// The tissue under the nuclei, one value per pixel (row-major), each in [0, 1].
private struct TissueFields {
    let width: Int, height: Int
    /// Collagen fibres: thin wavy ridges along the style's fibre angle.
    let fibres: [Float]
    /// Dense (1) or loose (0) stroma.
    let density: [Float]
    /// Where epithelium clusters (nuclei and cytoplasm).
    let cellularity: [Float]
    /// White lumen or empty background (1), with a soft edge.
    let lumen: [Float]
    /// Fine isotropic grain: chromatin inside nuclei, granularity of the stroma.
    let grain: [Float]
    /// A net of thin ridges about a cell apart: membranes between pale cytoplasm and vacuoles.
    let membranes: [Float]

    init(width: Int, height: Int, style: Style, crowding: SyntheticHistology.Crowding, stream: inout PhiloxStream) {
        self.width = width; self.height = height
        let warpAmount: Float = stream.uniform(4, 14)
        let margin = warpAmount + 2
        let warpY = ValueNoise(width: width, height: height, along: 40, across: 40, angle: 0, stream: &stream)
        let warpX = ValueNoise(width: width, height: height, along: 40, across: 40, angle: 0, stream: &stream)
        let fineFibres = ValueNoise(width: width, height: height, along: stream.uniform(30, 70), across: stream.uniform(3.5, 6),
                                    angle: style.fibreAngle, margin: margin, stream: &stream)
        let coarseFibres = ValueNoise(width: width, height: height, along: stream.uniform(50, 90), across: stream.uniform(8, 14),
                                      angle: style.fibreAngle + stream.uniform(-0.2, 0.2), margin: margin, stream: &stream)
        let densityNoise = ValueNoise(width: width, height: height, along: 70, across: 70, angle: 0, stream: &stream)
        let cellNoise = ValueNoise(width: width, height: height, along: 55, across: 55, angle: 0, stream: &stream)
        let lumenNoise = ValueNoise(width: width, height: height, along: stream.uniform(45, 90), across: stream.uniform(35, 60),
                                    angle: stream.uniform(0, .pi), stream: &stream)
        let grainFine = ValueNoise(width: width, height: height, along: 2.2, across: 2.2, angle: 0, stream: &stream)
        let grainCoarse = ValueNoise(width: width, height: height, along: 4.5, across: 4.5, angle: 0, stream: &stream)
        let membraneNoise = ValueNoise(width: width, height: height, along: stream.uniform(7, 11), across: stream.uniform(6, 9),
                                       angle: stream.uniform(0, .pi), stream: &stream)
        let densityBias = stream.uniform(-0.25, 0.25)
        // Crowded tiles are mostly epithelium, sparse ones mostly stroma.
        let cellBias: Float = crowding == .crowded ? 0.2 : crowding == .sparse ? -0.15 : 0

        let count = width * height
        var fibres = [Float](repeating: 0, count: count), density = fibres, cellularity = fibres
        var lumenValues = fibres, grain = fibres, membranes = fibres
        for y in 0..<height {
            for x in 0..<width {
                let p = y * width + x
                let (fy, fx) = (Float(y), Float(x))
                // Domain warping bends straight streaks into wavy fibres.
                let wy = fy + warpAmount * (2 * warpY(fy, fx) - 1), wx = fx + warpAmount * (2 * warpX(fy, fx) - 1)
                let ridgeFine = 1 - abs(2 * fineFibres(wy, wx) - 1), ridgeCoarse = 1 - abs(2 * coarseFibres(wy, wx) - 1)
                let fine2 = ridgeFine * ridgeFine, coarse2 = ridgeCoarse * ridgeCoarse
                fibres[p] = min(1, 0.6 * fine2 * ridgeFine + 0.45 * coarse2 * ridgeCoarse)
                density[p] = smoothstep(0.2, 0.8, densityNoise(fy, fx) + densityBias)
                cellularity[p] = min(1, max(0, cellNoise(fy, fx) + cellBias))
                grain[p] = 0.6 * grainFine(fy, fx) + 0.4 * grainCoarse(fy, fx)
                let membrane = 1 - abs(2 * membraneNoise(fy, fx) - 1)
                membranes[p] = membrane * membrane * membrane
                // Grain and fibres fray the lumen's edge.
                lumenValues[p] = lumenNoise(fy, fx) + 0.05 * grain[p] + 0.04 * fibres[p]
            }
        }
        // Lumen where the lumen noise is in its top `lumenFraction`, softened over a few pixels.
        var lumen = [Float](repeating: 0, count: count)
        if style.lumenFraction > 0 {
            let threshold = Self.quantile(lumenValues, 1 - style.lumenFraction)
            for p in 0..<count { lumen[p] = smoothstep(threshold - 0.01, threshold + 0.03, lumenValues[p]) }
        }
        self.fibres = fibres; self.density = density; self.cellularity = cellularity; self.lumen = lumen; self.grain = grain; self.membranes = membranes
    }

    /// The `q`-quantile of values in [0, 1], to a 1/1024 bin.
    private static func quantile(_ values: [Float], _ q: Float) -> Float {
        var histogram = [Int](repeating: 0, count: 1024)
        for v in values { histogram[min(1023, max(0, Int(v * 1024)))] += 1 }
        let wanted = Int(q * Float(values.count))
        var seen = 0
        for (bin, n) in histogram.enumerated() {
            seen += n
            if seen >= wanted { return Float(bin + 1) / 1024 }
        }
        return 1
    }
}

// MARK: nuclei

private struct Nucleus {
    enum Kind { case epithelial, lymphocyte, fibroblast }

    static let profileSteps = 48

    let kind: Kind
    var centerY: Float, centerX: Float
    /// The boundary's distance from the centre at `profileSteps` equally spaced angles (the first at angle 0).
    let profile: [Float]
    let maxRadius: Float
    /// The radius of the disc of equal area.
    let meanRadius: Float
    /// Haematoxylin and eosin amounts of the nucleoplasm.
    let haematoxylin: Float
    let eosin: Float
    /// Relative strength of chromatin grain, and of the paler centre.
    let texture: Float
    let paleCenter: Float
    /// A nucleolus as (offset y, offset x, radius), or nil.
    let nucleolus: (Float, Float, Float)?

    init(kind: Kind, fibreAngle: Float, stream: inout PhiloxStream) {
        self.kind = kind
        let radius: Float, aspect: Float, irregularity: Float, angle: Float
        switch kind {
        case .epithelial:
            radius = stream.uniform(7, 14); aspect = stream.uniform(1, 1.8); irregularity = stream.uniform(0.03, 0.12)
            angle = stream.uniform(0, .pi)
            haematoxylin = stream.uniform(0.85, 1.7); eosin = stream.uniform(0.45, 0.8)
            texture = stream.uniform(0.25, 0.55); paleCenter = stream.uniform(0.1, 0.35)
        case .lymphocyte:
            radius = stream.uniform(4.5, 6.5); aspect = stream.uniform(1, 1.3); irregularity = stream.uniform(0.02, 0.06)
            angle = stream.uniform(0, .pi)
            haematoxylin = stream.uniform(1.5, 2.3); eosin = stream.uniform(0.35, 0.6)
            texture = stream.uniform(0.1, 0.2); paleCenter = 0
        case .fibroblast:
            radius = stream.uniform(4, 7); aspect = stream.uniform(2.2, 4.2); irregularity = stream.uniform(0.02, 0.06)
            angle = fibreAngle + stream.uniform(-0.35, 0.35)
            haematoxylin = stream.uniform(1.2, 2.0); eosin = stream.uniform(0.4, 0.7)
            texture = stream.uniform(0.1, 0.25); paleCenter = 0
        }
        let semiMajor = radius * aspect.squareRoot(), semiMinor = radius / aspect.squareRoot()
        let harmonics = (2...5).map { k in (amplitude: irregularity * stream.normal() / Float(k - 1), phase: stream.uniform(0, 2 * .pi)) }
        profile = (0..<Self.profileSteps).map { step in
            let theta = Float(step) / Float(Self.profileSteps) * 2 * .pi
            let (c, s) = (cos(theta - angle), sin(theta - angle))
            let ellipse = semiMajor * semiMinor / ((semiMinor * c) * (semiMinor * c) + (semiMajor * s) * (semiMajor * s)).squareRoot()
            let wobble = harmonics.enumerated().reduce(Float(1)) { sum, term in
                sum + term.element.amplitude * cos(Float(term.offset + 2) * theta + term.element.phase)
            }
            return ellipse * max(wobble, 0.7)
        }
        maxRadius = profile.max()!
        meanRadius = (profile.map { $0 * $0 }.reduce(0, +) / Float(Self.profileSteps)).squareRoot()
        if kind == .epithelial && stream.chance(0.3) {
            let offsetAngle = stream.uniform(0, 2 * .pi), offset = stream.uniform(0, 0.35) * radius
            nucleolus = (offset * sin(offsetAngle), offset * cos(offsetAngle), stream.uniform(1, 1.8))
        } else {
            nucleolus = nil
        }
        centerY = 0; centerX = 0
    }

    /// The boundary's distance from the centre in the direction of (`dy`, `dx`).
    @inline(__always) func boundary(dy: Float, dx: Float) -> Float {
        var turns = atan2(dy, dx) / (2 * .pi)
        if turns < 0 { turns += 1 }
        let position = turns * Float(Self.profileSteps)
        let step = min(Int(position), Self.profileSteps - 1)
        let next = step + 1 == Self.profileSteps ? 0 : step + 1
        return profile[step] + (profile[next] - profile[step]) * (position - Float(step))
    }

    /// Calls `body(pixel, radial fraction)` for every pixel of a `width × height` image whose centre lies within
    /// the boundary pushed out by `grow` pixels; the radial fraction is distance / boundary distance.
    @inline(__always) func forEachPixel(width: Int, height: Int, grow: Float = 0, _ body: (Int, Float) -> Void) {
        let reach = maxRadius + grow
        let y0 = max(0, Int((centerY - reach).rounded(.down))), y1 = min(height - 1, Int((centerY + reach).rounded(.up)))
        let x0 = max(0, Int((centerX - reach).rounded(.down))), x1 = min(width - 1, Int((centerX + reach).rounded(.up)))
        guard y0 <= y1, x0 <= x1 else { return }
        for y in y0...y1 {
            let dy = Float(y) - centerY
            for x in x0...x1 {
                let dx = Float(x) - centerX
                let distanceSquared = dy * dy + dx * dx
                if distanceSquared > reach * reach { continue }
                let limit = boundary(dy: dy, dx: dx)
                let distance = distanceSquared.squareRoot()
                if distance <= limit + grow { body(y * width + x, distance / max(limit, 1e-3)) }
            }
        }
    }
}

/// Nucleus placement and the label map it draws.
private struct NucleusLayout {
    let width: Int, height: Int
    /// Instance ids (drawing order while placing, 1…n after `finish`), 0 for background.
    var labels: [Int32]
    /// The radial fraction (distance / boundary distance) of each nucleus pixel in its nucleus.
    var radial: [Float]
    var nuclei: [Nucleus] = []
    private var areas: [Int] = [0]
    private var foreground = 0

    init(width: Int, height: Int) {
        self.width = width; self.height = height
        labels = [Int32](repeating: 0, count: width * height)
        radial = [Float](repeating: 0, count: width * height)
    }

    /// How one crowding level places nuclei.
    private struct Placement {
        /// Target fraction of the tile covered by nuclei.
        let coverage: ClosedRange<Float>
        /// Probabilities of epithelial, lymphocyte (the rest fibroblast) nuclei.
        let epithelial: Float, lymphocyte: Float
        /// Probability of proposing a nucleus against an existing one (touching or overlapping it).
        let neighbour: Float
        /// Free gap around a freely placed nucleus, in pixels (0 allows contact).
        let gap: Float
        /// Largest share of a nucleus's area another may cover (the later one wins the shared pixels).
        let overlap: Float

        init(_ crowding: SyntheticHistology.Crowding) {
            switch crowding {
            case .sparse:
                (coverage, epithelial, lymphocyte, neighbour, gap, overlap) = (0.115...0.15, 0.2, 0.2, 0.04, 3, 0.03)
            case .moderate:
                (coverage, epithelial, lymphocyte, neighbour, gap, overlap) = (0.19...0.24, 0.55, 0.15, 0.25, 1.5, 0.08)
            case .crowded:
                (coverage, epithelial, lymphocyte, neighbour, gap, overlap) = (0.31...0.37, 0.85, 0.08, 0.6, 0, 0.2)
            }
        }
    }

    mutating func place(crowding: SyntheticHistology.Crowding, tissue: TissueFields, style: Style, stream: inout PhiloxStream) {
        let rule = Placement(crowding)
        let target = Int(stream.uniform(rule.coverage.lowerBound, rule.coverage.upperBound) * Float(width * height))
        // Generous: rejected proposals are cheap (most are refused before any pixel is visited).
        let attempts = 60 * (width * height) / 400 + 200
        for _ in 0..<attempts where foreground < target {
            let roll = stream.uniform()
            let kind: Nucleus.Kind = roll <= rule.epithelial ? .epithelial
                : roll <= rule.epithelial + rule.lymphocyte ? .lymphocyte : .fibroblast
            var nucleus = Nucleus(kind: kind, fibreAngle: style.fibreAngle, stream: &stream)
            let againstNeighbour = !nuclei.isEmpty && stream.chance(rule.neighbour)
            if againstNeighbour {
                let other = nuclei[stream.integer(0, nuclei.count)]
                let direction = stream.uniform(0, 2 * .pi), reach = (other.meanRadius + nucleus.meanRadius) * stream.uniform(0.78, 1.02)
                nucleus.centerY = other.centerY + reach * sin(direction)
                nucleus.centerX = other.centerX + reach * cos(direction)
            } else {
                nucleus.centerY = stream.uniform(-4, Float(height) + 4)
                nucleus.centerX = stream.uniform(-4, Float(width) + 4)
            }
            let cy = min(max(Int(nucleus.centerY), 0), height - 1), cx = min(max(Int(nucleus.centerX), 0), width - 1)
            let p = cy * width + cx
            // Epithelium lives where cellularity is high, fibroblasts where it is low; nothing grows in lumen.
            let habitat: Float = kind == .epithelial ? smoothstep(0.3, 0.65, tissue.cellularity[p])
                : kind == .fibroblast ? 1 - smoothstep(0.35, 0.7, tissue.cellularity[p]) : 0.8
            guard tissue.lumen[p] < 0.2, stream.uniform() <= habitat else { continue }
            if !againstNeighbour && labels[p] != 0 { continue }
            if admits(nucleus, gap: againstNeighbour ? 0 : rule.gap, overlap: rule.overlap, tissue: tissue) { draw(nucleus) }
        }
    }

    /// Whether `nucleus` may be drawn: with a positive `gap` it keeps that many pixels from every other nucleus,
    /// with none it covers at most `overlap` of its own area and of each other's; and at most a tenth of it is lumen.
    private func admits(_ nucleus: Nucleus, gap: Float, overlap: Float, tissue: TissueFields) -> Bool {
        var area = 0, inLumen = 0, covered = 0
        var coveredById: [Int32: Int] = [:]
        var blocked = false
        nucleus.forEachPixel(width: width, height: height, grow: gap) { p, _ in
            area += 1
            if tissue.lumen[p] > 0.5 { inLumen += 1 }
            let id = labels[p]
            if id != 0 {
                if gap > 0 { blocked = true }
                covered += 1
                coveredById[id, default: 0] += 1
            }
        }
        guard !blocked, area > 0, Float(inLumen) <= 0.1 * Float(area), Float(covered) <= overlap * Float(area) else { return false }
        return coveredById.allSatisfy { Float($0.value) <= overlap * Float(areas[Int($0.key)]) }
    }

    private mutating func draw(_ nucleus: Nucleus) {
        nuclei.append(nucleus)
        let id = Int32(nuclei.count)
        var area = 0
        nucleus.forEachPixel(width: width, height: height) { p, fraction in
            if labels[p] == 0 { foreground += 1 }
            labels[p] = id
            radial[p] = fraction
            area += 1
        }
        areas.append(area)
    }

    /// Keeps each instance's largest 4-connected piece (the rest becomes background), drops instances of fewer than
    /// 8 pixels, renumbers ids 1…n in drawing order, and returns the surviving nuclei in id order.
    mutating func finish() -> [Nucleus] {
        let count = width * height
        var component = [Int32](repeating: -1, count: count)
        var componentSizes: [Int] = []
        var componentOwner: [Int32] = []
        var queue: [Int] = []
        queue.reserveCapacity(count)
        for start in 0..<count where labels[start] != 0 && component[start] < 0 {
            let id = labels[start], index = Int32(componentSizes.count)
            component[start] = index
            queue.removeAll(keepingCapacity: true)
            queue.append(start)
            var head = 0
            while head < queue.count {
                let p = queue[head]; head += 1
                let y = p / width, x = p % width
                for (q, inside) in [(p - 1, x > 0), (p + 1, x < width - 1), (p - width, y > 0), (p + width, y < height - 1)]
                    where inside && labels[q] == id && component[q] < 0 {
                    component[q] = index
                    queue.append(q)
                }
            }
            componentSizes.append(queue.count)
            componentOwner.append(id)
        }
        // The largest piece of each id (the first found on ties).
        var largest = [Int32](repeating: -1, count: nuclei.count + 1)
        for (index, owner) in componentOwner.enumerated() {
            let best = largest[Int(owner)]
            if best < 0 || componentSizes[index] > componentSizes[Int(best)] { largest[Int(owner)] = Int32(index) }
        }
        var renumbered = [Int32](repeating: 0, count: nuclei.count + 1)
        var survivors: [Nucleus] = []
        for id in stride(from: 1, through: nuclei.count, by: 1) {
            let piece = largest[id]
            guard piece >= 0, componentSizes[Int(piece)] >= 8 else { continue }
            survivors.append(nuclei[id - 1])
            renumbered[id] = Int32(survivors.count)
        }
        for p in 0..<count where labels[p] != 0 {
            let id = Int(labels[p])
            labels[p] = component[p] == largest[id] ? renumbered[id] : 0
            if labels[p] == 0 { radial[p] = 0 }
        }
        nuclei = survivors
        return survivors
    }
}

// MARK: rendering

/// RGB planes `[3, H, W]` in [0, 1] before blur and noise.
private func render(layout: NucleusLayout, nuclei: [Nucleus], tissue: TissueFields, style: Style) -> Planes {
    let width = layout.width, height = layout.height, plane = width * height
    let labels = layout.labels
    var values = [Float](repeating: 0, count: 3 * plane)
    for y in 0..<height {
        for x in 0..<width {
            let p = y * width + x
            let grain = tissue.grain[p]
            // Stroma: dense regions evenly pink, loose regions fibres on a pale ground.
            let fibre = tissue.fibres[p], density = tissue.density[p]
            let loose = 0.4 + 0.7 * fibre, dense = 0.9 + 0.3 * fibre
            var eosin = (loose + (dense - loose) * density) * (0.9 + 0.2 * grain)
            var haematoxylin = style.backgroundHaematoxylin * (0.7 + 0.6 * grain) * (0.4 + 0.6 * density)
            // Cytoplasm of epithelial clusters: smoother, slightly purple.
            let cytoplasm = smoothstep(0.35, 0.7, tissue.cellularity[p])
            eosin += (0.5 + 0.6 * tissue.membranes[p] + 0.2 * grain - eosin) * cytoplasm
            haematoxylin += (style.backgroundHaematoxylin + 0.06) * cytoplasm * (0.8 + 0.4 * grain)
            let id = Int(labels[p])
            if id > 0 {
                let nucleus = nuclei[id - 1], fraction = layout.radial[p]
                // Chromatin: granular, condensed at the nuclear membrane, paler towards the centre.
                let rim: Float = isBoundary(p, y: y, x: x, labels: labels, width: width, height: height) ? 0.35 : 0
                let shading = 1 - nucleus.paleCenter * (1 - fraction * fraction) + rim
                haematoxylin = nucleus.haematoxylin * shading * (1 + nucleus.texture * (2 * grain - 1))
                eosin = nucleus.eosin + 0.3 * eosin * (1 - fraction)
                if let (oy, ox, r) = nucleus.nucleolus {
                    let dy = Float(y) - nucleus.centerY - oy, dx = Float(x) - nucleus.centerX - ox
                    if dy * dy + dx * dx <= r * r { haematoxylin += 0.35; eosin += 0.25 }
                }
            } else {
                let lumen = tissue.lumen[p]
                eosin *= 1 - 0.96 * lumen
                haematoxylin *= 1 - 0.95 * lumen
            }
            let density3 = style.haematoxylin * (haematoxylin * style.haematoxylinScale) + style.eosin * (eosin * 0.75 * style.eosinScale)
            for c in 0..<3 { values[c * plane + p] = min(1, style.white[c] * exp(-density3[c])) }
        }
    }
    return Planes(unchecked: 3, height: height, width: width, values: values)
}

/// Whether pixel `p` has a 4-neighbour with another label (including background): the nuclear membrane.
@inline(__always) private func isBoundary(_ p: Int, y: Int, x: Int, labels: [Int32], width: Int, height: Int) -> Bool {
    let id = labels[p]
    return (x > 0 && labels[p - 1] != id) || (x < width - 1 && labels[p + 1] != id)
        || (y > 0 && labels[p - width] != id) || (y < height - 1 && labels[p + width] != id)
}

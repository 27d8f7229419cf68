import Foundation
import HistoCore

/// How a share of n images becomes a whole number (DTSeg floors, Ciampi ceils; the default rounds to nearest).
public enum Rounding: String, Equatable, Sendable, CaseIterable, Codable {
    case nearest, floor, ceil
}

/// A share of a set of images, written as a fraction ("1/8", "1/32"), a percentage ("12.5%", "5%") or a count of
/// images ("5"); the text is kept as written so that files and logs show what was asked for.
public struct Ratio: Equatable, Sendable, CustomStringConvertible {
    /// In (0, 1]; for a count, 0 (see `fixedCount`).
    public let value: Double
    /// The number of images a count ("5") names; nil for a fraction or percentage.
    public let fixedCount: Int?
    public let description: String

    public init(_ text: String) throws {
        let written = text.trimmingCharacters(in: .whitespaces)
        func invalid(_ why: String) -> EngineError { .invalidValue(op: "Ratio", message: "'\(text)' \(why)") }
        fixedCount = Int(written)
        if let count = fixedCount {
            guard count > 0 else { throw invalid("is a count of images and must be at least 1") }
            value = 0
        } else if written.hasSuffix("%") {
            guard let percent = Double(written.dropLast().trimmingCharacters(in: .whitespaces)), percent.isFinite else {
                throw invalid("is not a percentage like 12.5%")
            }
            guard percent > 0, percent <= 100 else { throw invalid("must lie in (0%, 100%]") }
            value = percent / 100
        } else if let slash = written.firstIndex(of: "/") {
            let parts = (written[..<slash], written[written.index(after: slash)...])
            guard let numerator = Int(parts.0.trimmingCharacters(in: .whitespaces)),
                  let denominator = Int(parts.1.trimmingCharacters(in: .whitespaces)) else {
                throw invalid("is not a fraction of whole numbers like 1/8")
            }
            guard numerator > 0, denominator >= numerator else { throw invalid("must lie in (0, 1]: 0 < numerator ≤ denominator") }
            value = Double(numerator) / Double(denominator)
        } else {
            throw invalid("is not a ratio: write a fraction like 1/8, a percentage like 12.5% or a count like 5")
        }
        description = written
    }

    /// The number of items out of `total` this share selects: the share of `total` rounded as asked, at least 1;
    /// a count as given (the caller checks it against `total`).
    public func count(of total: Int, rounding: Rounding = .nearest) -> Int {
        if let fixedCount { return fixedCount }
        let exact = value * Double(total)
        // A share written as 1/8 of 40 is exactly 5: keep float noise from pushing ceil/floor off it.
        let snapped = (exact - exact.rounded()).magnitude < 1e-9 ? exact.rounded() : exact
        switch rounding {
        case .nearest: return max(1, Int(snapped.rounded()))
        case .floor: return max(1, Int(snapped.rounded(.down)))
        case .ceil: return max(1, Int(snapped.rounded(.up)))
        }
    }
}

/// Which items of a dataset play which role: labelled and unlabelled training items, and validation items. Split
/// by source image, so patches (and grid crops) of one image never land on both sides.
///
/// `make` is deterministic: the stored images that have masks, in name order, are ordered by the keys
/// `RandomGenerator(seed: seed).uniform([n])` (stable argsort; see `PhiloxStream.permutation`); the first
/// `validationRatio.count(of: n)` are validation, and of the rest the first `labelRatio.count(of:)` are labelled and
/// the others unlabelled, as are images without masks. So for one seed the validation set does not depend on the label
/// ratio, and the labelled set of a smaller ratio is a subset of a larger one's. A dataset cut into grid crops
/// (`Dataset.gridCropped(_:)`) is split alike, all crops of an image on its side; the label ratio then counts
/// crops (CDCL), the training images' crops ordered by a second permutation drawn from the same stream.
public struct DataSplit: Equatable, Sendable {
    public let seed: UInt64
    public let labelRatio: Ratio
    /// How `labelRatio` of the training images was rounded.
    public let rounding: Rounding
    /// nil when every image with a mask is used for training.
    public let validationRatio: Ratio?
    /// The crops per side of the dataset the split was made on (`Dataset.gridCrops`); 1: whole images.
    public let gridCrops: Int
    /// Image names of each role, sorted.
    public let labelled: [String]
    public let unlabelled: [String]
    public let validation: [String]

    /// Dataset item indices of each role, in name order.
    public struct Indices: Equatable, Sendable {
        public let labelled: [Int]
        public let unlabelled: [Int]
        public let validation: [Int]
    }

    /// With `validationFollowsLabels` only the label share of the validation images (rounded alike) is kept for
    /// validation, as DTSeg validates on the labelled share of its validation set; the others are left out.
    public static func make(dataset: Dataset, labelRatio: Ratio, validationRatio: Ratio?, seed: UInt64,
                            rounding: Rounding = .nearest, validationFollowsLabels: Bool = false) throws -> DataSplit {
        let maskedItems = dataset.items.filter { $0.maskPath != nil }
        let itemsOf = Dictionary(grouping: maskedItems.map { ($0.source, $0.name) }, by: \.0).mapValues { $0.map(\.1) }
        let masked = itemsOf.keys.sorted()
        func invalid(_ message: String) -> EngineError { .invalidValue(op: "DataSplit", message: message) }
        let validationCount = validationRatio?.count(of: masked.count) ?? 0
        guard masked.count > validationCount else {
            throw invalid("\(dataset.root) has \(masked.count) image\(masked.count == 1 ? "" : "s") with masks; validation ratio \(validationRatio?.description ?? "") takes \(validationCount), leaving none to label")
        }
        var stream = PhiloxStream(seed: seed)
        let order = stream.permutation(masked.count).map { masked[$0] }
        var training = order.dropFirst(validationCount).flatMap { itemsOf[$0]! }
        let crops = dataset.gridCrops != nil
        if crops { training = stream.permutation(training.count).map { training[$0] } }
        let labelledCount = labelRatio.count(of: training.count, rounding: rounding)
        guard labelledCount <= training.count else {
            let kind = crops ? "crops" : "images"
            throw invalid("\(labelledCount) labelled \(kind) asked for, but only \(training.count) \(kind) with "
                          + "masks are left for training")
        }
        let validation = order.prefix(validationCount)
        let keptValidation = validationFollowsLabels && labelRatio.fixedCount == nil
            ? validation.prefix(labelRatio.count(of: validation.count, rounding: rounding)) : validation
        let unmasked = dataset.items.filter { $0.maskPath == nil }.map(\.name)
        return DataSplit(seed: seed, labelRatio: labelRatio, rounding: rounding, validationRatio: validationRatio,
                         gridCrops: dataset.gridCrops?.count ?? 1,
                         labelled: training.prefix(labelledCount).sorted(),
                         unlabelled: (training.dropFirst(labelledCount) + unmasked).sorted(),
                         validation: keptValidation.flatMap { itemsOf[$0]! }.sorted())
    }

    /// The indices of each role's images in `dataset`. Throws, listing them, when names are not in the dataset,
    /// appear twice, or are labelled or validation images without a mask. Dataset images the split does not name are
    /// left out.
    public func indices(in dataset: Dataset) throws -> Indices {
        let problems = self.problems(in: dataset)
        guard problems.isEmpty else {
            throw EngineError.invalidValue(op: "DataSplit", message: "split does not fit dataset \(dataset.root): " + problems.joined(separator: "; "))
        }
        let index = Dictionary(uniqueKeysWithValues: dataset.items.enumerated().map { ($1.name, $0) })
        return Indices(labelled: labelled.map { index[$0]! }, unlabelled: unlabelled.map { index[$0]! },
                       validation: validation.map { index[$0]! })
    }

    // MARK: files

    /// Writes the split as JSON: `seed`, `labelRatio`, `validationRatio` (null when none), `gridCrops` (only when
    /// above 1), and the name lists `labelled`, `unlabelled`, `validation`.
    public func write(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let file = File(seed: seed, labelRatio: labelRatio.description, rounding: rounding,
                        validationRatio: validationRatio?.description, gridCrops: gridCrops > 1 ? gridCrops : nil,
                        labelled: labelled, unlabelled: unlabelled, validation: validation)
        do { try encoder.encode(file).write(to: URL(fileURLWithPath: path)) } catch {
            throw EngineError.file(path: path, message: "cannot write the split: \(error.localizedDescription)")
        }
    }

    /// Reads a split written by `write` and checks it against `dataset` (see `indices(in:)`); every problem is named
    /// in one `EngineError.file(path: path, …)`.
    public static func read(path: String, dataset: Dataset) throws -> DataSplit {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw EngineError.file(path: path, message: "cannot read the split: \(error.localizedDescription)")
        }
        let file: File
        do { file = try JSONDecoder().decode(File.self, from: data) } catch {
            throw EngineError.file(path: path, message: "not a split file (keys seed, labelRatio, validationRatio, labelled, unlabelled, validation): \(error)")
        }
        let split: DataSplit
        do {
            split = DataSplit(seed: file.seed, labelRatio: try Ratio(file.labelRatio),
                              rounding: file.rounding ?? .nearest,
                              validationRatio: try file.validationRatio.map(Ratio.init),
                              gridCrops: file.gridCrops ?? 1,
                              labelled: file.labelled.sorted(), unlabelled: file.unlabelled.sorted(), validation: file.validation.sorted())
        } catch { throw EngineError.file(path: path, message: "\(error)") }
        let problems = split.problems(in: dataset)
        guard problems.isEmpty else {
            throw EngineError.file(path: path, message: "split does not fit dataset \(dataset.root): " + problems.joined(separator: "; "))
        }
        return split
    }

    private struct File: Codable {
        let seed: UInt64
        let labelRatio: String
        /// Absent in files written before rounding could be chosen (they rounded to nearest).
        let rounding: Rounding?
        let validationRatio: String?
        /// Absent in files of whole images (and in files written before grid crops existed).
        let gridCrops: Int?
        let labelled: [String]
        let unlabelled: [String]
        let validation: [String]
    }

    private func problems(in dataset: Dataset) -> [String] {
        func list(_ names: [String]) -> String {
            names.prefix(20).joined(separator: ", ") + (names.count > 20 ? ", … (\(names.count) in all)" : "")
        }
        let items = Dictionary(uniqueKeysWithValues: dataset.items.map { ($0.name, $0) })
        let all = labelled + unlabelled + validation
        var problems: [String] = []
        if gridCrops != dataset.gridCrops?.count ?? 1 {
            problems.append("the split was made on \(gridCrops) crops per side (--grid-crops), the dataset is cut "
                            + "into \(dataset.gridCrops?.count ?? 1)")
        }
        if labelled.isEmpty { problems.append("no labelled images") }
        let unknown = all.filter { items[$0] == nil }
        if !unknown.isEmpty { problems.append("\(unknown.count) name\(unknown.count == 1 ? " is" : "s are") not in the dataset: \(list(unknown))") }
        let repeated = Dictionary(grouping: all, by: { $0 }).filter { $0.value.count > 1 }.keys.sorted()
        if !repeated.isEmpty { problems.append("named more than once: \(list(repeated))") }
        let maskless = (labelled + validation).filter { items[$0].map { $0.maskPath == nil } ?? false }
        if !maskless.isEmpty { problems.append("labelled or validation images without a mask: \(list(maskless))") }
        return problems
    }
}

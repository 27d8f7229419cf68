import Foundation
import HistoCore
import HistoData
import XCTest

final class SplitTests: XCTestCase {
    func testRatiosParseFractionsAndPercentages() throws {
        for (text, value) in [("1/32", 1.0 / 32), ("1/16", 1.0 / 16), ("1/8", 0.125), ("1/20", 0.05), ("1/10", 0.1),
                              ("1/5", 0.2), ("12.5%", 0.125), ("1%", 0.01), ("20%", 0.2), (" 5 % ", 0.05), ("3/4", 0.75), ("100%", 1)] {
            let ratio = try Ratio(text)
            XCTAssertEqual(ratio.value, value, accuracy: 1e-12, text)
            XCTAssertEqual(ratio.description, text.trimmingCharacters(in: .whitespaces))
        }
        for bad in ["", "abc", "0%", "-5%", "120%", "x%", "1/0", "0/8", "3/2", "1/8/2", "0.125", "1 /", "nan%", "-3"] {
            XCTAssertThrowsError(try Ratio(bad), bad) { error in
                XCTAssertTrue("\(error)".contains("'\(bad)'"), "\(error)")
            }
        }
        XCTAssertEqual(try Ratio("1/32").count(of: 24), 1, "0.75 images round to 1, and at least 1")
        XCTAssertEqual(try Ratio("1/8").count(of: 24), 3)
        XCTAssertEqual(try Ratio("12.5%").count(of: 20), 3, "2.5 rounds up")
        XCTAssertEqual(try Ratio("20%").count(of: 30), 6)
    }

    /// A share is rounded as asked (DTSeg floors, Ciampi ceils), exact shares are not pushed off by float noise,
    /// and a plain number is a count of images.
    func testCountsAndRounding() throws {
        let eighth = try Ratio("1/8"), tenth = try Ratio("10%")
        XCTAssertEqual([Rounding.nearest, .floor, .ceil].map { eighth.count(of: 37, rounding: $0) }, [5, 4, 5])
        XCTAssertEqual([Rounding.nearest, .floor, .ceil].map { eighth.count(of: 20, rounding: $0) }, [3, 2, 3])
        XCTAssertEqual([Rounding.nearest, .floor, .ceil].map { tenth.count(of: 30, rounding: $0) }, [3, 3, 3],
                       "0.1 × 30 is 3.0000000000000004 in doubles; ceil must still give 3")
        XCTAssertEqual(eighth.count(of: 3, rounding: .floor), 1, "at least one image")
        let five = try Ratio("5")
        XCTAssertEqual(five.fixedCount, 5)
        XCTAssertEqual(five.count(of: 40, rounding: .floor), 5)
        XCTAssertThrowsError(try Ratio("0")) { XCTAssertTrue("\($0)".contains("at least 1"), "\($0)") }
    }

    func testSplitWithACountRoundingAndValidationFollowingTheLabels() throws {
        let dataset = try Support.syntheticDataset(self, count: 20, unmasked: 2, width: 6, height: 5)
        let quarter = try Ratio("1/4")
        let counted = try DataSplit.make(dataset: dataset, labelRatio: try Ratio("3"), validationRatio: quarter,
                                         seed: 1)
        XCTAssertEqual(counted.labelled.count, 3)
        XCTAssertEqual(counted.unlabelled.count, 15 - 3 + 2)
        let floored = try DataSplit.make(dataset: dataset, labelRatio: quarter, validationRatio: quarter,
                                         seed: 1, rounding: .floor, validationFollowsLabels: true)
        XCTAssertEqual(floored.labelled.count, 3, "15 / 4 = 3.75 floors to 3")
        XCTAssertEqual(floored.validation.count, 1, "5 validation images / 4 = 1.25 floors to 1")
        XCTAssertEqual(floored.rounding, .floor)
        XCTAssertTrue(Set(counted.validation).isSuperset(of: floored.validation))
        XCTAssertThrowsError(try DataSplit.make(dataset: dataset, labelRatio: try Ratio("16"), validationRatio: quarter,
                                                seed: 1)) {
            XCTAssertTrue("\($0)".contains("16 labelled images"), "\($0)")
        }
    }

    /// The host stream is the engine's Philox stream: the same numbers as RandomGenerator's draws.
    func testPhiloxStreamMatchesRandomGenerator() throws {
        let seed: UInt64 = 0xFEED_5EED_0123
        var stream = PhiloxStream(seed: seed)
        let uniforms = (0..<37).map { _ in stream.uniform(-2, 3) }
        XCTAssertEqual(uniforms, try RandomGenerator(seed: seed).uniform([37], -2, 3).toArray())
        stream = PhiloxStream(seed: seed, position: 8)
        XCTAssertEqual((0..<22).map { _ in stream.normal() }, try RandomGenerator(seed: seed, offset: 8).normal([22]).toArray())
        stream = PhiloxStream(seed: seed)
        XCTAssertEqual((0..<50).map { _ in Float(stream.integer(3, 17)) }, try RandomGenerator(seed: seed).integers([50], 3, 17).toArray())

        stream = PhiloxStream(seed: 9)
        let order = stream.permutation(200)
        let keys = try RandomGenerator(seed: 9).uniform([200]).toArray()
        XCTAssertEqual(order, (0..<200).sorted { keys[$0] != keys[$1] ? keys[$0] < keys[$1] : $0 < $1 })
        XCTAssertEqual(stream.position, 200)

        XCTAssertEqual(PhiloxStream.derive(seed: 1, path: [2, 3]), PhiloxStream.derive(seed: 1, path: [2, 3]))
        XCTAssertEqual(Set([[2, 3], [3, 2], [2, 4], [2], []].map { PhiloxStream.derive(seed: 1, path: $0) }).count, 5)
    }

    func testSplitIsDeterministicBySourceImageAndNested() throws {
        let dataset = try Support.syntheticDataset(self, count: 40, unmasked: 3, width: 6, height: 5)
        let fifth = try Ratio("20%")
        let split = try DataSplit.make(dataset: dataset, labelRatio: try Ratio("1/8"), validationRatio: fifth, seed: 7)
        XCTAssertEqual(split, try DataSplit.make(dataset: dataset, labelRatio: try Ratio("1/8"), validationRatio: fifth, seed: 7))
        XCTAssertEqual([split.validation.count, split.labelled.count, split.unlabelled.count], [8, 4, 31])
        XCTAssertEqual(Set(split.labelled + split.unlabelled + split.validation), Set(dataset.items.map(\.name)))
        XCTAssertEqual(split.labelled.count + split.unlabelled.count + split.validation.count, 43, "each image in one role")
        XCTAssertTrue(["raw00", "raw01", "raw02"].allSatisfy(split.unlabelled.contains), "images without masks are unlabelled")
        XCTAssertEqual(split.labelled, split.labelled.sorted())

        let other = try DataSplit.make(dataset: dataset, labelRatio: try Ratio("1/8"), validationRatio: fifth, seed: 8)
        XCTAssertNotEqual(other.validation, split.validation)

        // For one seed: the validation set does not depend on the label ratio, and labelled sets are nested.
        var previous: Set<String> = []
        for text in ["1/32", "1/16", "1/8", "1/5", "50%"] {
            let s = try DataSplit.make(dataset: dataset, labelRatio: try Ratio(text), validationRatio: fifth, seed: 7)
            XCTAssertEqual(s.validation, split.validation, text)
            XCTAssertTrue(previous.isSubset(of: Set(s.labelled)), text)
            previous = Set(s.labelled)
        }
        let all = try DataSplit.make(dataset: dataset, labelRatio: try Ratio("100%"), validationRatio: nil, seed: 7)
        XCTAssertEqual([all.labelled.count, all.unlabelled.count, all.validation.count], [40, 3, 0])
        XCTAssertThrowsError(try DataSplit.make(dataset: dataset, labelRatio: try Ratio("1/8"), validationRatio: try Ratio("100%"), seed: 7))

        let indices = try split.indices(in: dataset)
        XCTAssertEqual(indices.labelled.map { dataset.items[$0].name }, split.labelled)
        XCTAssertEqual(indices.validation.map { dataset.items[$0].name }, split.validation)
    }

    func testSplitFileRoundTripsAndIsCheckedAgainstTheDataset() throws {
        let dataset = try Support.syntheticDataset(self, count: 12, unmasked: 1, width: 6, height: 5)
        let split = try DataSplit.make(dataset: dataset, labelRatio: try Ratio("12.5%"), validationRatio: try Ratio("1/4"), seed: 0xFFFF_FFFF_FFFF_FFF0)
        let folder = try Support.temporaryFolder(self)
        let path = folder.appendingPathComponent("split.json").path
        try split.write(to: path)
        XCTAssertEqual(try DataSplit.read(path: path, dataset: dataset), split)

        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
        XCTAssertEqual(Set(json.keys), ["seed", "labelRatio", "rounding", "validationRatio", "labelled", "unlabelled",
                                        "validation"])
        XCTAssertEqual(json["labelRatio"] as? String, "12.5%")
        XCTAssertEqual(json["labelled"] as? [String], split.labelled)

        func rewritten(_ change: (inout [String: Any]) -> Void) throws -> String {
            var edited = json
            edited["seed"] = 5 // JSONSerialization may not keep a 64-bit seed exact
            change(&edited)
            let editedPath = folder.appendingPathComponent("edited-\(UUID().uuidString).json").path
            try JSONSerialization.data(withJSONObject: edited).write(to: URL(fileURLWithPath: editedPath))
            return editedPath
        }
        let unknownPath = try rewritten { $0["unlabelled"] = split.unlabelled + ["ghost1", "ghost2"] }
        let unknown = Support.fileError { _ = try DataSplit.read(path: unknownPath, dataset: dataset) }
        XCTAssertEqual(unknown?.path, unknownPath)
        XCTAssertTrue(unknown?.message.contains("2 names are not in the dataset: ghost1, ghost2") ?? false, unknown?.message ?? "")

        let twicePath = try rewritten { $0["validation"] = split.validation + [split.labelled[0]] }
        XCTAssertTrue(Support.fileError { _ = try DataSplit.read(path: twicePath, dataset: dataset) }?.message
            .contains("named more than once: \(split.labelled[0])") ?? false)
        let masklessPath = try rewritten { $0["labelled"] = split.labelled + ["raw00"]; $0["unlabelled"] = split.unlabelled.filter { $0 != "raw00" } }
        XCTAssertTrue(Support.fileError { _ = try DataSplit.read(path: masklessPath, dataset: dataset) }?.message
            .contains("without a mask: raw00") ?? false)
        let badRatioPath = try rewritten { $0["labelRatio"] = "one eighth" }
        XCTAssertTrue(Support.fileError { _ = try DataSplit.read(path: badRatioPath, dataset: dataset) }?.message.contains("one eighth") ?? false)
        let missingKeyPath = try rewritten { $0["seed"] = nil }
        XCTAssertTrue(Support.fileError { _ = try DataSplit.read(path: missingKeyPath, dataset: dataset) }?.message.contains("not a split file") ?? false)
        XCTAssertNotNil(Support.fileError { _ = try DataSplit.read(path: folder.appendingPathComponent("absent.json").path, dataset: dataset) })
        XCTAssertThrowsError(try split.indices(in: try Support.syntheticDataset(self, count: 2, width: 6, height: 5)))
    }

    func testRealMoNuSegSplit() throws {
        guard let data = Support.realData else {
            throw XCTSkip("real data not found: set HISTODIFF_DATA or provide <package root>/../shared/data")
        }
        let dataset = try Dataset.open(path: data.appendingPathComponent("monuseg-train").path, requireMasks: true)
        let split = try DataSplit.make(dataset: dataset, labelRatio: try Ratio("1/8"), validationRatio: try Ratio("20%"), seed: 1)
        XCTAssertEqual([split.validation.count, split.labelled.count, split.unlabelled.count], [6, 3, 21])
        XCTAssertTrue(Set(split.labelled).isDisjoint(with: split.validation))
    }
}

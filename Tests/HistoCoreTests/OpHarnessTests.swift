import Foundation
import XCTest
import HistoCore
import OpHarness

/// The generic op harness over every case in `HarnessCatalog`: CPU reference sanity, finite-difference
/// gradients, golden fixtures (PyTorch/numpy, tools/make_fixtures.py) and coverage of every op by a golden.
final class OpHarnessTests: XCTestCase {
    static let fixtures = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!

    static func goldens() throws -> [String: GoldenCase] {
        let files = try FileManager.default.contentsOfDirectory(at: fixtures, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "json" }
        var all: [String: GoldenCase] = [:]
        for f in files { all.merge(try GoldenCase.load(f)) { a, _ in a } }
        return all
    }

    func testCatalogNamesAreUnique() {
        let names = HarnessCatalog.all.map(\.name)
        XCTAssertEqual(names.count, Set(names).count, "duplicate case names: \(Dictionary(grouping: names, by: { $0 }).filter { $1.count > 1 }.keys)")
    }

    func testFiniteDifferenceGradients() {
        var harness = Harness()
        for c in HarnessCatalog.all { harness.checkGradients(c) }
        print("finite differences: \(harness.casesRun) cases")
        XCTAssertGreaterThan(harness.casesRun, 0, "the gradient check ran zero cases")
        for f in harness.failures { XCTFail(f.description) }
    }

    func testCPUReferenceIsFinite() {
        var harness = Harness()
        for c in HarnessCatalog.all { harness.checkParity(c, backend: CPUBackend.shared) }
        print("cpu reference: \(harness.casesRun) cases, \(harness.opsSeen.count) ops")
        XCTAssertGreaterThan(harness.casesRun, 0, "the parity check ran zero cases")
        for f in harness.failures { XCTFail(f.description) }
    }

    func testGoldenFixturesCoverEveryOp() throws {
        let goldens = try Self.goldens()
        var harness = Harness()
        var goldenOps = Set<String>()
        var byName: [String: HarnessCase] = [:]
        for c in HarnessCatalog.all { byName[c.name] = c }
        for (name, golden) in goldens.sorted(by: { $0.key < $1.key }) {
            guard let c = byName[name] else { XCTFail("golden case \(name) has no harness case"); continue }
            harness.checkGolden(c, golden, goldenOps: &goldenOps)
        }
        print("golden: \(harness.casesRun) cases covering \(goldenOps.count) ops")
        XCTAssertGreaterThan(harness.casesRun, 0, "the golden check ran zero cases")
        for f in harness.failures { XCTFail(f.description) }

        // Every op that any case runs (forward or backward) must be checked by at least one golden.
        var all = Harness()
        for c in HarnessCatalog.all { all.checkParity(c, backend: CPUBackend.shared) }
        let missing = all.opsSeen.subtracting(goldenOps).sorted()
        XCTAssert(missing.isEmpty, "ops without a golden case: \(missing)")
    }
}

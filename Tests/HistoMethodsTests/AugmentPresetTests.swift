import HistoData
import HistoMethods
import XCTest

/// `histodiff train --augment NAME`: a named augmentation replaces the method's in the plan.
final class AugmentPresetTests: XCTestCase {
    func testTheNamedPresetReplacesTheMethodsAugmentation() throws {
        var request = TrainingRequest(method: "supervised", data: "unused", directory: "unused")
        XCTAssertEqual(try MethodTraining.plan(for: request).augmentation, Augmentation())
        request.augmentation = "dtseg"
        XCTAssertEqual(try MethodTraining.plan(for: request).augmentation, .dtseg)
        request.augmentation = "none"
        XCTAssertEqual(try MethodTraining.plan(for: request).augmentation, .none)
        request.augmentation = "monai"
        XCTAssertThrowsError(try MethodTraining.plan(for: request)) { error in
            XCTAssertTrue("\(error)".contains("unknown augmentation 'monai' (default, none, dtseg)"), "\(error)")
        }
    }
}

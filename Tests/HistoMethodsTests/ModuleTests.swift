import XCTest
@testable import HistoMethods

final class ModuleTests: XCTestCase {
    func testModuleLinks() throws { XCTAssertNotNil(Bundle.module.url(forResource: "Fixtures", withExtension: nil)) }
}

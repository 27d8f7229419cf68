import Foundation
import XCTest
import HistoCore
import HistoNN

/// The fixtures written by tools/fixtures_nn.py.
enum Fixtures {
    static let directory = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
    static func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
    static let nn: [String: Any] = {
        let data = try! Data(contentsOf: directory.appendingPathComponent("nn.json"))
        return try! JSONSerialization.jsonObject(with: data) as! [String: Any]
    }()
    static func section(_ name: String) -> [String: Any] { nn[name] as! [String: Any] }
}

func floats(_ value: Any?) -> [Float] { (value as! [Any]).map { Float(($0 as! NSNumber).doubleValue) } }
func ints(_ value: Any?) -> [Int] { (value as! [Any]).map { ($0 as! NSNumber).intValue } }

func assertClose(_ actual: [Float], _ expected: [Float], atol: Float = 1e-6, rtol: Float = 1e-5,
                 _ message: String = "", file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.count, expected.count, "\(message): count", file: file, line: line)
    for (i, (a, e)) in zip(actual, expected).enumerated() where !(abs(a - e) <= atol + rtol * abs(e)) {
        XCTFail("\(message): element \(i) is \(a), expected \(e)", file: file, line: line)
        return
    }
}

func bits(_ values: [Float]) -> [UInt32] { values.map(\.bitPattern) }

/// A fresh empty directory under the temporary directory.
func temporaryDirectory(_ name: String = #function) throws -> String {
    let safe = name.filter { $0.isLetter || $0.isNumber }
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("histonn-\(safe)-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Asserts that `body` throws `EngineError.file` for `path` whose message contains every fragment.
func assertFileError(_ path: String, contains fragments: [String], file: StaticString = #filePath, line: UInt = #line,
                     _ body: () throws -> Void) {
    do {
        try body()
        XCTFail("expected an error naming \(path)", file: file, line: line)
    } catch let EngineError.file(errorPath, message) {
        XCTAssertEqual(errorPath, path, file: file, line: line)
        for f in fragments where !message.contains(f) {
            XCTFail("message \"\(message)\" lacks \"\(f)\"", file: file, line: line)
        }
    } catch {
        XCTFail("unexpected error \(error)", file: file, line: line)
    }
}

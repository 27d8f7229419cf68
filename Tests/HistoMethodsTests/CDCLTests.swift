import Foundation
import XCTest
import HistoCore
import HistoData
import HistoNN
@testable import HistoMethods

/// CDCL (SPEC §5): the unlabelled losses against tools/cdcl_reference.py, the DenseUNet and its torchvision encoder
/// names, short runs through the registry and an exact resume.
final class CDCLTests: XCTestCase {
    /// Largest absolute difference; fails naming `label` when the shapes differ.
    func deviation(_ actual: [Float], _ expected: HostTensor, _ label: String) -> Float {
        XCTAssertEqual(actual.count, expected.values.count, label)
        return zip(actual, expected.values).map { abs($0 - $1) }.max() ?? 0
    }

    /// L_contr under both negative rules (with the previous batch's bank), L_cons with and without the confidence
    /// threshold and L_ent match the float64 reference: values to 1e-5 relative, gradients to 1e-6 absolute
    /// (float32 sums over 1536 bank entries; gradients are at most ~0.01). The bank's gradient is 0 (detached).
    func testUnlabelledLossesMatchTheReference() throws {
        let url = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
            .appendingPathComponent("cdcl_losses.safetensors")
        let fixture = try SafeTensors.read(url.path)
        func input(_ name: String) -> Tensor { fixture.tensors["input." + name]!.tensor }
        func expected(_ name: String) -> HostTensor { fixture.tensors[name]! }
        func checkValue(_ value: Float, _ name: String) {
            let want = expected(name + ".value").values[0]
            XCTAssertEqual(value, want, accuracy: 1e-5 * max(1, abs(want)), name)
        }
        let studentLabels = CrossPatchDenseContrastMethod.projectorLabels(input("student_logits"))
        let teacherLabels = CrossPatchDenseContrastMethod.projectorLabels(input("teacher_logits"))
        for rule in CrossPatchContrast.NegativeRule.allCases {
            let name = "contrast_" + rule.rawValue
            let student = Parameter(input("student_projections")), teacher = Parameter(input("teacher_projections"))
            let previous = Parameter(input("previous_features"))
            let contrast = CrossPatchContrast(rule: rule)
            let loss = contrast.loss(
                student: contrast.entries(projections: student.value, labels: studentLabels),
                teacher: contrast.entries(projections: teacher.value, labels: teacherLabels),
                previous: .init(features: previous.value, labels: input("previous_labels"),
                                scores: input("previous_scores")),
                groups: 2)
            let (value, gradients) = try Gradients.of(loss, wrt: [student, teacher, previous])
            checkValue(value, name)
            var worst: Float = 0
            for (parameter, key) in [(student, "grad_student"), (teacher, "grad_teacher"),
                                     (previous, "grad_previous")] {
                let difference = deviation(gradients[parameter] ?? [], expected(name + "." + key), name + " " + key)
                XCTAssertLessThanOrEqual(difference, 1e-6, "\(name) \(key)")
                worst = max(worst, difference)
            }
            print("\(name): \(value) (reference \(expected(name + ".value").values[0])), largest gradient "
                  + "deviation \(worst)")
        }
        let teacherLogits = input("teacher_logits")
        let terms: [(String, (Tensor) -> Tensor)] = [
            ("consistency", { CrossPatchDenseContrastMethod.consistency(student: $0, teacher: teacherLogits,
                                                                         threshold: nil) }),
            ("consistency_threshold", {
                CrossPatchDenseContrastMethod.consistency(student: $0, teacher: teacherLogits,
                                                          threshold: Float(fixture.metadata["threshold"]!)!)
            }),
            ("entropy", { Loss.entropy(logits: $0) }),
        ]
        for (name, loss) in terms {
            let logits = Parameter(input("student_logits"))
            let (value, gradients) = try Gradients.of(loss(logits.value), wrt: [logits])
            checkValue(value, name)
            let difference = deviation(gradients[logits] ?? [], expected(name + ".grad"), name)
            XCTAssertLessThanOrEqual(difference, 1e-6, name)
            print("\(name): \(value) (reference \(expected(name + ".value").values[0])), largest gradient "
                  + "deviation \(difference)")
        }
    }
}

import Foundation
import HistoCore
import HistoNN

/// UAMT's consistency (Yu et al. 2019, SSL4MIS `train_uncertainty_aware_mean_teacher_2D.py`; SPEC §8): the
/// teacher also makes `passes` stochastic predictions of the unlabelled images, each on its own noised copy; the
/// predictive entropy U of their mean marks the pixels it is certain of, and only those enter the squared
/// difference:
///
///     mask = 1{U < (0.75 + 0.25·r(it, total))·ln 2},   consistency = Σ mask·(p_s − p_t)² / (2·Σ mask + 1e-16)
///
/// with r the sigmoid ramp over the run, p_t the teacher's prediction on one more noised copy (as for MT) and
/// U = −Σ_c p̄ log(p̄ + 1e-6). The sums run over images, classes and pixels for the numerator, images and pixels for
/// Σ mask; the 2 and ln 2 are those of the binary task the formula was written for, kept for any class count as
/// SSL4MIS does.
public struct UncertaintyMaskedConsistency: TeacherConsistency {
    /// T, the stochastic teacher passes (SSL4MIS 8).
    public let passes: Int

    public init(passes: Int = 8) { self.passes = passes }

    /// The certainty threshold at optimizer step `step` of `totalSteps`, in nats.
    public static func threshold(step: Int, totalSteps: Int) -> Float {
        Float((0.75 + 0.25 * Ramp.sigmoid(length: Double(totalSteps)).value(at: Double(step))) * Foundation.log(2.0))
    }

    public func loss(student: Tensor, images: Tensor, teacher: NoisyMeanTeacher, context: StepContext) -> Tensor {
        let target = teacher.probabilities(of: images)
        // The T noised copies go through the teacher as one batch: copy t of image i at t·N + i.
        let copies = teacher.probabilities(of: images.repeat([passes, 1, 1, 1]))
        let mean = copies.reshape([passes] + target.shape).mean(axes: [0])
        let uncertainty = Loss.entropy(probabilities: mean, normalized: false, reduction: .none).unsqueeze(1)
        let mask = uncertainty.less(Self.threshold(step: context.step, totalSteps: context.totalSteps))
        return (mask * (student - target).square()).sum() / (2 * mask.sum() + 1e-16)
    }
}

/// `uamt`: the mean teacher (`MeanTeacherMethod`) with `UncertaintyMaskedConsistency`. docs/methods/uamt.md.
public enum UncertaintyAwareMeanTeacher {
    public static let registration = MeanTeacherMethod.meanTeacherRegistration(
        name: "uamt", paper: "uncertainty-aware mean teacher (Yu et al. 2019), SSL4MIS version",
        defaults: SemiSupervisedRecipe.presetSummary + "; EMA 0.99, the teacher is evaluated; T = 8 noised "
            + "teacher passes, entropy threshold ramped from 0.75 ln 2 to ln 2",
        options: [MethodOption(name: "passes", help: "T, the stochastic teacher passes of the uncertainty (default 8)")]
    ) { options, method in
        UncertaintyMaskedConsistency(passes: try SemiSupervisedRecipe.count(options, "passes", method: method,
                                                                            default: 8))
    }
}

import HistoCore
import HistoData
import HistoNN
@testable import HistoMethods

/// A method that exercises everything the trainer must checkpoint: both streams (weak and strong unlabelled views),
/// an EMA teacher (the evaluated model), a second network with its own optimizer and a noise generator. Its loss is
/// CE of both students on the labelled batch plus a ramped consistency between the teacher on noised weak views,
/// the student on strong views and the second network on weak views.
final class TwoStreamTestMethod: TrainingMethod {
    let student: OptimizedNetwork
    let teacher: SegmentationUNet
    let ema: ExponentialMovingAverage
    let second: OptimizedNetwork
    let noise: RandomGenerator
    /// Makes the consistency NaN from this step on.
    var poisonStep: Int?
    let onStep: (Int) -> Void

    init(student: SegmentationUNet, teacher: SegmentationUNet, second: SegmentationUNet, setup: MethodSetup,
         onStep: @escaping (Int) -> Void = { _ in }) {
        self.student = OptimizedNetwork(student, recipe: setup.plan.optimizer, totalSteps: setup.totalSteps)
        self.teacher = teacher
        ema = ExponentialMovingAverage(teacher: teacher, decay: 0.9, warmup: .meanTeacher)
        self.second = OptimizedNetwork(second, recipe: .sgdPoly(learningRate: 0.02), totalSteps: setup.totalSteps)
        noise = RandomGenerator(seed: setup.plan.seed &+ 11)
        self.onStep = onStep
    }

    var lossTerms: [String] { ["loss", "supervised", "consistency"] }
    var dataNeeds: DataNeeds { DataNeeds(labelledViews: .weak, unlabelledViews: .weakAndStrong) }
    var evaluatedModel: any SegmentationModel { teacher }
    var components: [String: any CheckpointableState] {
        ["student": student.model, "student_optimizer": student.optimizer, "second": second.model,
         "second_optimizer": second.optimizer, "ema": ema, "noise": noise]
    }
    var learningRate: Float { student.optimizer.learningRate }

    func step(_ batch: MethodBatch, context: StepContext) throws -> [String: Float] {
        onStep(context.step)
        student.model.train(true)
        second.model.train(true)
        teacher.train(false)
        let images = batch.labelled.images, labels = batch.labelled.labels!
        let supervised = Loss.crossEntropy(logits: student.model(images), labels: labels)
            + Loss.crossEntropy(logits: second.model(images), labels: labels)
        let weak = batch.unlabelled!.images, strong = batch.unlabelled!.strongImages!
        let target = teacher(weak + noise.normal(weak.shape, std: 0.1)).softmax(axis: 1)
        let studentProbabilities = student.model(strong).softmax(axis: 1)
        var consistency = (studentProbabilities - target).square().mean()
            + (second.model(weak).softmax(axis: 1) - studentProbabilities).square().mean()
        if let poisonStep, context.step >= poisonStep { consistency = consistency * Float.nan }
        let weight = Float(Ramp.sigmoid(length: Double(context.totalEpochs)).value(at: Double(context.epoch)))
        let values = try OptimizedNetwork.minimise(supervised + weight * consistency, named: "loss",
                                                   terms: ["supervised": supervised, "consistency": consistency],
                                                   networks: [student, second], context: context)
        try ema.update(from: student.model, on: context.backend)
        return values
    }
}

import Foundation
import HistoCore
import HistoData
import HistoNN

/// An option of a method beside the plan's (`histodiff train --option NAME=VALUE`, or the method's own flag).
public struct MethodOption: Sendable {
    public let name: String
    public let help: String
    /// The values it takes; nil: any text (a path, a number the method checks).
    public let allowed: [String]?

    public init(name: String, help: String, allowed: [String]? = nil) {
        self.name = name
        self.help = help
        self.allowed = allowed
    }
}

/// A method as `histodiff train --method NAME` and `histodiff experiment` know it: its paper, its options, the
/// plan defaults of each preset, its model card and the factory of its `TrainingMethod`.
public struct RegisteredMethod: Sendable {
    public let name: String
    public let paper: String
    /// One line of defaults for `histodiff train --help`.
    public let defaults: String
    public let options: [MethodOption]
    /// The `--preset` values it takes.
    public let presets: [String]
    /// Sets the preset's defaults on a plan that holds the shared ones (`TrainingPlan.init`).
    public let plan: @Sendable (_ preset: String, _ plan: inout TrainingPlan,
                                _ options: [String: String]) throws -> Void
    /// The card that rebuilds the evaluated network (`model.json`).
    public let card: @Sendable (_ preset: String, _ options: [String: String], _ classes: Int,
                                _ plan: TrainingPlan) throws -> ModelCard
    public let make: @Sendable (_ preset: String, _ options: [String: String],
                                _ setup: MethodSetup) throws -> any TrainingMethod

    public init(name: String, paper: String, defaults: String, options: [MethodOption],
                presets: [String] = MethodRegistry.presets,
                plan: @escaping @Sendable (String, inout TrainingPlan, [String: String]) throws -> Void,
                card: @escaping @Sendable (String, [String: String], Int, TrainingPlan) throws -> ModelCard,
                make: @escaping @Sendable (String, [String: String], MethodSetup) throws -> any TrainingMethod) {
        self.name = name
        self.paper = paper
        self.defaults = defaults
        self.options = options
        self.presets = presets
        self.plan = plan
        self.card = card
        self.make = make
    }

    /// Throws, naming the option and what it takes, for an option the method does not have or a value it refuses.
    public func check(_ options: [String: String]) throws {
        for (name, value) in options.sorted(by: { $0.key < $1.key }) {
            guard let option = self.options.first(where: { $0.name == name }) else {
                let known = self.options.map(\.name)
                throw EngineError.invalidValue(op: "--method \(self.name)", message: "has no option '\(name)'"
                    + (known.isEmpty ? " (it has none)" : " (it has \(known.joined(separator: ", ")))"))
            }
            if let allowed = option.allowed, !allowed.contains(value) {
                throw EngineError.invalidValue(op: "--method \(self.name)", message:
                    "option \(name)=\(value) is not one of \(allowed.joined(separator: ", "))")
            }
        }
    }
}

/// Every method `histodiff train` and `histodiff experiment` can run, by name.
public enum MethodRegistry {
    public static let methods: [RegisteredMethod] = [
        SupervisedMethod.registration, GenSelfDiffMethod.registration, MeanTeacherMethod.registration,
        UncertaintyAwareMeanTeacher.registration, EntropyMinimisationMethod.registration,
        CrossPseudoSupervisionMethod.registration, CrossConsistencyTrainingMethod.registration,
        UncertaintyRectifiedPyramidMethod.registration, CrossPatchDenseContrastMethod.registration,
        CiampiDiffusion.teacherRegistration, CiampiDiffusion.studentRegistration, PathSegDiffMethod.registration,
        DTSeg.registration, DTSeg.collaborativeRegistration,
    ]
    /// The presets every method has; a method may add its own (`RegisteredMethod.presets`).
    public static let presets = ["cpu", "paper"]

    public static func method(named name: String) throws -> RegisteredMethod {
        guard let method = methods.first(where: { $0.name == name }) else {
            throw EngineError.invalidValue(op: "--method", message:
                "unknown method '\(name)'; known: \(methods.map(\.name).joined(separator: ", "))")
        }
        return method
    }

    /// One line per method with its paper, defaults and options: the list `histodiff train --help` shows.
    public static var listing: String {
        methods.map { method in
            let options = method.options.map { " \($0.name)=… (\($0.help))" }.joined(separator: ";")
            return "\(method.name): \(method.paper). Defaults \(method.defaults)."
                + (options.isEmpty ? "" : " Options:" + options + ".")
        }.joined(separator: "\n")
    }
}

/// A training run as the command line asks for it: the method and its options, the data, the split, the plan's
/// overrides, the run folder and the device. `MethodTraining.run` turns it into a plan and trains.
public struct TrainingRequest {
    public var method: String
    public var preset = "cpu"
    /// A dataset folder: images with a mask are labelled candidates, images without one unlabelled.
    public var data: String
    /// Image-only folders added as unlabelled images.
    public var unlabelled: [String] = []
    /// What the network learns: the masks' classes, or nuclei with a boundary class (`MaskClasses.boundary`).
    public var target = MaskClasses.binary
    public var directory: String
    public var labels = "1/8"
    public var rounding = Rounding.nearest
    public var validation = "1/5"
    public var validationFollowsLabels = false
    /// A `split.json` to reuse instead of making one.
    public var splitFile: String?
    public var seed: UInt64 = 0
    public var patch: Int?
    public var batch: Int?
    public var unlabelledBatch: Int?
    public var cropsPerImage: Int?
    public var epochs: Int?
    public var iterations: Int?
    /// 0: never stop early.
    public var patience: Int?
    public var learningRate: Float?
    public var validateEvery: Int?
    public var checkpointEvery: Int?
    public var metric: TrainingPlan.ValidationMetric?
    public var validationCrop: Int?
    /// Every image and mask cut into this many crops per side, each an item (`Dataset.gridCropped(_:)`), before
    /// resizing; 1: whole images.
    public var gridCrops = 1
    /// Every image and mask (or grid crop) resized to this side before anything else (`Dataset.resized(to:)`);
    /// nil: the preset's (`resizedSide()`).
    public var resize: Int?
    /// `TrainingPlan.normalizesByDataset`.
    public var normalizesByDataset = false
    /// One of `Augmentation.presets` by name, over the method's; nil: the method's.
    public var augmentation: String?
    public var methodOptions: [String: String] = [:]
    public var backend: any Backend = CPUBackend.shared
    public var progress = ProgressOutput.standardError
    /// The ranks of a data-parallel run (`TrainingSession.group`).
    public var group: any ProcessGroup = SingleProcess.shared

    public init(method: String, data: String, directory: String) {
        self.method = method
        self.data = data
        self.directory = directory
    }
}

public enum MethodTraining {
    /// The plan `request` asks for: the shared defaults, the method's preset over them, the request's values over
    /// those.
    public static func plan(for request: TrainingRequest) throws -> TrainingPlan {
        let method = try MethodRegistry.method(named: request.method)
        guard method.presets.contains(request.preset) else {
            throw EngineError.invalidValue(op: "--preset", message: "\(method.name) has no preset "
                + "'\(request.preset)' (\(method.presets.joined(separator: ", ")))")
        }
        try method.check(request.methodOptions)
        var plan = TrainingPlan(labelRatio: try Ratio(request.labels), validationRatio: try Ratio(request.validation))
        try method.plan(request.preset, &plan, request.methodOptions)
        plan.rounding = request.rounding
        plan.validationFollowsLabels = request.validationFollowsLabels
        plan.seed = request.seed
        plan.splitSeed = request.seed
        if let patch = request.patch { plan.patchSize = patch }
        if let batch = request.batch { plan.batchSize = batch }
        if let batch = request.unlabelledBatch { plan.unlabelledBatchSize = batch }
        if let crops = request.cropsPerImage { plan.cropsPerImage = crops }
        if request.epochs != nil && request.iterations != nil {
            throw EngineError.invalidValue(op: "--epochs", message: "give --epochs or --iterations, not both")
        }
        if let epochs = request.epochs { plan.length = .epochs(epochs) }
        if let iterations = request.iterations { plan.length = .iterations(iterations) }
        if let patience = request.patience { plan.patience = patience == 0 ? nil : patience }
        if let lr = request.learningRate { plan.optimizer = plan.optimizer.with(learningRate: lr) }
        if let every = request.validateEvery { plan.validateEvery = every }
        if let every = request.checkpointEvery { plan.checkpointEvery = every }
        if let metric = request.metric { plan.metric = metric }
        if let crop = request.validationCrop { plan.validationCrop = crop }
        plan.normalizesByDataset = request.normalizesByDataset
        if let name = request.augmentation {
            guard let preset = Augmentation.presets.first(where: { $0.name == name }) else {
                throw EngineError.invalidValue(op: "--augment", message:
                    "unknown augmentation '\(name)' (\(Augmentation.presets.map(\.name).joined(separator: ", ")))")
            }
            plan.augmentation = preset.augmentation
        }
        return plan
    }

    /// Trains what `request` asks for in its folder (resuming a run stopped there). `dataset` and `split`, when
    /// given, stand for the request's data folders and split file (a caller that opened them already).
    public static func run(_ request: TrainingRequest, dataset: Dataset? = nil,
                           split: DataSplit? = nil) throws -> TrainingResult {
        let method = try MethodRegistry.method(named: request.method)
        let plan = try self.plan(for: request)
        let dataset = try dataset ?? request.openDataset()
        var session = TrainingSession(directory: request.directory)
        session.backend = request.backend
        session.group = request.group
        session.progress = request.progress
        session.label = "\(request.method) \(request.preset)"
        session.split = try split ?? request.splitFile.map { try DataSplit.read(path: $0, dataset: dataset) }
        session.modelCard = try method.card(request.preset, request.methodOptions, dataset.classes.count, plan)
        session.methodSettings = ["method": request.method, "preset": request.preset,
                                  "unlabelled_folders": request.unlabelled.joined(separator: ",")]
        // Recorded only when given, so that runs from before --augment still resume.
        if let augmentation = request.augmentation { session.methodSettings["augment"] = augmentation }
        for (name, value) in request.methodOptions { session.methodSettings["option." + name] = value }
        try session.record(target: request.target, dataset: dataset)
        try session.record(gridCrops: request.gridCrops, dataset: dataset)
        try session.record(resize: request.resizedSide(), dataset: dataset)
        return try MethodTrainer.train(plan: plan, dataset: dataset, session: session) { setup in
            try method.make(request.preset, request.methodOptions, setup)
        }
    }
}

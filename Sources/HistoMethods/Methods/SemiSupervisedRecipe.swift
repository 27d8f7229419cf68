import HistoCore
import HistoData
import HistoNN

/// The consistency weight of the SSL4MIS family (SPEC §0.5, §8): λ(it) = λ_max·r(⌊it/150⌋, 200) with r the sigmoid
/// ramp, which climbs in 200 stairs of 150 iterations to λ_max at iteration 30000, the end of an SSL4MIS run. With
/// `length` standing for those 30000 iterations, λ(it) = λ_max·r(⌊200·it/length⌋, 200): the same stairs for any run
/// length, so a short CPU run ramps over its own steps (with `length` 30000 it is SSL4MIS's formula exactly).
public struct ConsistencyRamp: Equatable, Sendable {
    public static let stairs = 200
    /// λ_max: SSL4MIS `--consistency` 0.1.
    public var maximum: Float
    /// Iterations until the weight reaches `maximum`.
    public var length: Int

    public init(maximum: Float, length: Int) {
        self.maximum = maximum
        self.length = length
    }

    public func weight(at step: Int) -> Float {
        let stair = step * Self.stairs / Swift.max(length, 1)
        return maximum * Float(Ramp.sigmoid(length: Double(Self.stairs)).value(at: Double(stair)))
    }

}

/// How a semi-supervised baseline weighs its terms (`--option recipe=…`, SPEC §8): the supervised loss on the
/// labelled images and the schedule of λ, the weight of the unlabelled loss. Every method of the family takes its
/// supervised loss and λ from here, so a recipe is defined once.
public enum LossRecipe: Equatable, Sendable {
    /// SSL4MIS: ½(CE + Dice) and λ on the sigmoid stairs of `ConsistencyRamp` (λ_max 0.1 by default).
    case ssl4mis(ConsistencyRamp)
    /// Ciampi's (XNet style, SPEC §3, §8): the SSL4MIS Dice loss alone (the companion code's baselines use Dice
    /// where the paper writes CE) and λ = λ_max·min((e + 1)/E, 1) in epoch e (from 0) of E planned epochs, constant
    /// within an epoch (λ_max 5 by default).
    case xnet(maximum: Float)

    public static let names = ["ssl4mis", "xnet"]

    public var supervisedLoss: SupervisedLoss {
        switch self {
        case .ssl4mis: return .crossEntropyDice
        case .xnet: return .dice
        }
    }

    /// λ for the step of `context`.
    public func weight(in context: StepContext) -> Float {
        switch self {
        case let .ssl4mis(ramp):
            return ramp.weight(at: context.step)
        case let .xnet(maximum):
            let ramp = Ramp.linear(length: Double(context.totalEpochs))
            return maximum * Float(ramp.value(at: Double(context.epoch + 1)))
        }
    }

    /// The supervised loss of logits [N, K, H, W] against class ids [N, H, W].
    public func supervised(logits: Tensor, labels: Tensor) -> Tensor {
        supervisedLoss.value(logits: logits, labels: labels)
    }

    /// Minimises supervised + λ·unlabelled over `networks` in one graph run; returns the values of `terms`, the
    /// total as `loss` and λ as `consistency_weight`.
    func minimise(supervised: Tensor, unlabelled: Tensor, terms: [String: Tensor], networks: [OptimizedNetwork],
                  alongside: [Tensor] = [], context: StepContext) throws -> [String: Float] {
        let lambda = weight(in: context)
        var values = try OptimizedNetwork.minimise(supervised + lambda * unlabelled, named: "loss", terms: terms,
                                                   networks: networks, alongside: alongside, context: context)
        values["consistency_weight"] = lambda
        return values
    }
}

/// What the SSL4MIS-family methods (MT, UAMT, EM) share: the presets, the ramp options, the network and the student's
/// forward pass. docs/methods/mt.md describes the presets.
enum SemiSupervisedRecipe {
    static let options = [
        MethodOption(name: "arch", help: "unet (default) or fpn", allowed: ["unet", "fpn"]),
        MethodOption(name: "recipe", help: "ssl4mis (default: ½(CE+Dice), λ sigmoid ramp) or xnet (Ciampi's: Dice, "
                     + "λ = λ_max·(epoch+1)/epochs)", allowed: LossRecipe.names),
        MethodOption(name: "lambda", help: "λ_max, the unlabelled loss weight at the end of the ramp (default 0.1; "
                     + "xnet 5)"),
        MethodOption(name: "ramp", help: "iterations of ssl4mis's sigmoid ramp-up of λ (default: the planned run; "
                     + "SSL4MIS 30000)"),
    ]

    /// Preset `cpu`: supervised's cpu plan (the half-width U-Net on 128² crops, batch 8 + 8 unlabelled, 4 crops per
    /// image, Adam 1e-3, 50 epochs, patience 10), so that the baselines compare on equal terms. Preset `paper`:
    /// SSL4MIS — 256² crops, batch 24 + 24, SGD 0.01 poly, 30000 iterations, validation every 200 iterations and
    /// no early stop (SSL4MIS keeps the best validation of the whole run).
    static func plan(_ preset: String, _ plan: inout TrainingPlan) {
        switch preset {
        case "cpu":
            SupervisedMethod.cpuPlan(&plan)
        default:
            plan.patchSize = 256
            plan.batchSize = 24
            plan.length = .iterations(30000)
            plan.validateEvery = 200
            plan.checkpointEvery = 200
            plan.patience = nil
            plan.optimizer = .sgdPoly()
        }
    }

    /// The presets in one line, for `defaults`.
    static let presetSummary = "cpu: U-Net/2 128² batch 8+8 Adam 1e-3 50 epochs; paper: 256² batch 24+24 SGD 0.01 "
        + "poly 30000 iterations; recipe ssl4mis: ½(CE+Dice), λ 0.1 sigmoid ramp over the run"

    /// A method of the family: its presets, card and the shared options before `options`.
    static func registration(name: String, paper: String, defaults: String, options: [MethodOption],
                             make: @escaping @Sendable (_ preset: String, _ options: [String: String],
                                                        _ setup: MethodSetup) throws -> any TrainingMethod)
        -> RegisteredMethod {
        RegisteredMethod(name: name, paper: paper, defaults: defaults, options: Self.options + options,
                         plan: { preset, plan, _ in Self.plan(preset, &plan) },
                         card: { preset, options, classes, plan in
                             card(preset, options, classes: classes, plan: plan)
                         },
                         make: make)
    }

    static func card(_ preset: String, _ options: [String: String], classes: Int, plan: TrainingPlan) -> ModelCard {
        ModelCard(architecture: options["arch"] ?? "unet", preset: preset, classes: classes,
                  pixelRange: plan.pixelRange)
    }

    /// A fresh network of the card; weights and dropout draws come from `seed`.
    static func model(_ preset: String, _ options: [String: String], setup: MethodSetup,
                      seed: UInt64) throws -> any SegmentationModel {
        try card(preset, options, classes: setup.classes, plan: setup.plan)
            .makeModel(generator: RandomGenerator(seed: seed))
    }

    /// The loss recipe of `options` (`recipe`, `lambda`, `ramp`); throws naming the option for a value it refuses.
    static func lossRecipe(_ options: [String: String], method: String, setup: MethodSetup) throws -> LossRecipe {
        let recipe = options["recipe"] ?? "ssl4mis"
        guard LossRecipe.names.contains(recipe) else {
            throw EngineError.invalidValue(op: "--method \(method)", message:
                "option recipe=\(recipe) is not one of \(LossRecipe.names.joined(separator: ", "))")
        }
        let maximum = Float(try number(options, "lambda", method: method, default: recipe == "xnet" ? 5 : 0.1,
                                       requirement: "a number ≥ 0") { $0 >= 0 })
        guard recipe == "ssl4mis" else {
            // xnet ramps over the planned epochs: a ramp length in iterations would be silently ignored.
            if options["ramp"] != nil {
                throw EngineError.invalidValue(op: "--method \(method)", message:
                    "option ramp applies to recipe=ssl4mis; recipe=xnet ramps λ over the planned epochs")
            }
            return .xnet(maximum: maximum)
        }
        let length = try count(options, "ramp", method: method, default: setup.totalSteps)
        return .ssl4mis(ConsistencyRamp(maximum: maximum, length: length))
    }

    /// The value of the option `name` that counts something (a whole number ≥ 1), `fallback` when not given.
    static func count(_ options: [String: String], _ name: String, method: String,
                      default fallback: Int) throws -> Int {
        Int(try number(options, name, method: method, default: Double(fallback), requirement: "a whole number ≥ 1") {
            $0 >= 1 && $0 == $0.rounded() && $0 <= Double(Int32.max)
        })
    }

    /// The value of the numeric option `name` (`fallback` when not given); throws naming the option when its text
    /// is not a finite number that `isValid` accepts.
    static func number(_ options: [String: String], _ name: String, method: String, default fallback: Double,
                       requirement: String, isValid: (Double) -> Bool) throws -> Double {
        guard let text = options[name] else { return fallback }
        guard let value = Double(text), value.isFinite, isValid(value) else {
            throw EngineError.invalidValue(op: "--method \(method)", message:
                "option \(name)=\(text) must be \(requirement)")
        }
        return value
    }
}

import Foundation
import XCTest
import HistoCore
import HistoNN
import HistoOpenCL
@testable import HistoMethods

/// DTSeg's transformer decoder and collaborative head (SPEC §1 steps 2b and 3) against the PyTorch float64 reference
/// (tools/unetformer_reference.py): f_D, the logits and the gradients of sum(logits · R) in training mode, an
/// evaluation-mode forward, the serial and w/o SA layouts, and the paper presets' parameter counts.
final class UNetFormerTests: XCTestCase {
    struct Reference {
        static let path = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
            .appendingPathComponent("unetformer_step.safetensors").path
        let tensors: [String: HostTensor]
        let metadata: [String: String]

        init() throws { (tensors, metadata) = try { ($0.tensors, $0.metadata) }(SafeTensors.read(Self.path)) }

        func tensor(_ name: String) -> Tensor { tensors[name]!.tensor }
        func values(_ name: String) -> [Float] { tensors[name]!.values }
        func integers(_ key: String) -> [Int] { metadata[key]!.split(separator: ",").map { Int($0)! } }

        /// The tensors under `group.initial.`, without that prefix.
        func initialState(_ group: String) -> [String: HostTensor] {
            let prefix = group + ".initial."
            return Dictionary(uniqueKeysWithValues: tensors.filter { $0.key.hasPrefix(prefix) }
                .map { (String($0.key.dropFirst(prefix.count)), $0.value) })
        }

        /// The fixture's tiny decoder (dropout 0, as the reference's step).
        func decoderConfiguration(_ layout: UNetFormerDecoder.Layout) -> UNetFormerDecoder.Configuration {
            let decode = integers(layout == .serial ? "serial_decode" : "decode")[0]
            return .init(inputChannels: integers("inputs"), decodeChannels: decode, window: integers("window")[0],
                         heads: integers("heads")[0], classes: integers("classes")[0], layout: layout, dropout: 0)
        }
    }

    /// The parameter counts tools/unetformer_reference.py prints for the paper presets at K = 5 (SPEC §1: "about
    /// 1.99M" for the decoder, 361,600 for the collaborative head) and for the cpu preset on 3 × 96 channels at K = 2.
    static let paperParallelCount = 1_991_192
    static let paperSerialCount = 951_048
    static let paperWithoutSelfAttentionCount = 874_112
    static let paperCollaborativeCount = 361_600
    static let cpuCount = 113_702

    /// Compares our gradients with `group.grad.<name>` for every parameter and input; returns the worst error.
    func assertGradients(_ gradients: Gradients, parameters: [(name: String, parameter: Parameter)],
                         reference: Reference, group: String, file: StaticString = #filePath,
                         line: UInt = #line) -> (error: Float, name: String) {
        var worst: (error: Float, name: String) = (0, "")
        for (name, parameter) in parameters {
            guard let expected = reference.tensors["\(group).grad.\(name)"] else {
                XCTFail("the reference has no gradient for \(name)", file: file, line: line)
                continue
            }
            let error = relativeError(gradients[parameter]!, expected.values)
            if error > worst.error { worst = (error, name) }
        }
        XCTAssertLessThan(worst.error, 1e-4, "\(group): gradient of \(worst.name)", file: file, line: line)
        return worst
    }

    func testParallelDecoderStepMatchesTheReference() throws {
        let reference = try Reference()
        let decoder = UNetFormerDecoder(reference.decoderConfiguration(.parallel), generator: RandomGenerator(seed: 0))
        try decoder.load(reference.initialState("decoder"), source: Reference.path)
        decoder.train(true)
        let inputs = (0..<2).map { Parameter(reference.tensor("decoder.input.\($0)")) }
        let features = decoder.features(inputs.map(\.value))
        let logits = decoder.head(features)
        let loss = (logits * reference.tensor("decoder.r")).sum()
        let named = decoder.parameters()
            + inputs.enumerated().map { (name: "input.\($0.offset)", parameter: $0.element) }
        let (_, gradients) = try Gradients.of(loss, wrt: named.map(\.parameter),
                                              alongside: [features, logits] + decoder.pendingBufferUpdates())
        let featureError = relativeError(try features.toArray(), reference.values("decoder.features"))
        let logitError = relativeError(try logits.toArray(), reference.values("decoder.logits"))
        XCTAssertEqual(features.shape, [2, decoder.featureChannels, 10, 10])
        XCTAssertLessThan(featureError, 1e-5)
        XCTAssertLessThan(logitError, 1e-5)
        let worst = assertGradients(gradients, parameters: named, reference: reference, group: "decoder")

        try decoder.commitBufferUpdates()
        decoder.train(false)
        let evalLogits = try decoder(inputs.map(\.value)).toArray()
        let evalError = relativeError(evalLogits, reference.values("decoder.eval.logits"))
        XCTAssertLessThan(evalError, 1e-5)
        print("unetformer decoder: relative errors f_D \(featureError), logits \(logitError), eval logits "
              + "\(evalError), largest gradient \(worst.error) (\(worst.name))")
    }

    /// dtseg's training step (SPEC §1 step 2b) on fixed features, twelve times: the toolbelt Dice of the decoder's
    /// logits and Lookahead(RAdam) with decoupled weight decay, as `DTSeg.plan` and `SupervisedMethod` set them up.
    /// The loss of every step and the weights after the last match the reference's, through RAdam's rectified steps
    /// and Lookahead's first moving sync.
    func testTrainingStepsMatchTheReference() throws {
        let reference = try Reference()
        let decoder = UNetFormerDecoder(reference.decoderConfiguration(.parallel), generator: RandomGenerator(seed: 0))
        try decoder.load(reference.initialState("decoder"), source: Reference.path)
        let settings = reference.metadata["train"]!.split(separator: ",").map { Float($0)! }
        let (steps, learningRate, weightDecay) = (Int(settings[0]), settings[1], settings[2])
        let (optimizer, _) = OptimizerRecipe.lookaheadRAdam(learningRate: learningRate, weightDecay: weightDecay)
            .make(for: decoder.trainableParameters(), totalSteps: steps)
        let inputs = (0..<2).map { reference.tensor("train.input.\($0)") }
        let labels = reference.tensor("train.labels")
        decoder.train(true)
        var losses: [Float] = []
        for _ in 0..<steps {
            let loss = SupervisedLoss.dice.value(logits: decoder(inputs), labels: labels, diceVariant: .toolbelt)
            let (value, gradients) = try Gradients.of(loss, wrt: decoder.trainableParameters(),
                                                      alongside: decoder.pendingBufferUpdates())
            try decoder.commitBufferUpdates()
            try optimizer.step(gradients)
            losses.append(value)
        }
        let expectedLosses = reference.values("train.losses")
        XCTAssertLessThan(relativeError(losses, expectedLosses), 1e-4, "losses \(losses) vs \(expectedLosses)")
        var worst: (error: Float, name: String) = (0, "")
        for (name, parameter) in decoder.parameters() {
            let error = relativeError(try parameter.values(), reference.values("train.final.\(name)"))
            if error > worst.error { worst = (error, name) }
        }
        XCTAssertLessThan(worst.error, 1e-4, "weights after \(steps) steps: \(worst.name)")
        print("dtseg training steps: losses \(losses.first!) → \(losses.last!), largest relative loss error "
              + "\(relativeError(losses, expectedLosses)), weights \(worst.error) (\(worst.name))")
    }

    func testSerialAndWithoutSelfAttentionLayoutsMatchTheReference() throws {
        let reference = try Reference()
        let inputs = (0..<2).map { reference.tensor("decoder.input.\($0)") }
        for (layout, group) in [(UNetFormerDecoder.Layout.serial, "serial"), (.withoutSelfAttention, "plain")] {
            let decoder = UNetFormerDecoder(reference.decoderConfiguration(layout), generator: RandomGenerator(seed: 0))
            try decoder.load(reference.initialState(group), source: Reference.path)
            decoder.train(true)
            let error = relativeError(try decoder(inputs).toArray(), reference.values("\(group).logits"))
            print("unetformer \(layout): logits relative error \(error)")
            XCTAssertLessThan(error, 1e-5, "\(layout)")
        }
    }

    func testCollaborativeHeadStepMatchesTheReference() throws {
        let reference = try Reference()
        let sizes = reference.integers("collab")
        let head = CollaborativeHead(.init(dtsegChannels: sizes[0], supervisedChannels: sizes[1], hidden: sizes[2],
                                           classes: reference.integers("classes")[0], dropout: 0),
                                     generator: RandomGenerator(seed: 0))
        try head.load(reference.initialState("collab"), source: Reference.path)
        head.train(true)
        let dtseg = Parameter(reference.tensor("collab.input.dtseg"))
        let supervised = Parameter(reference.tensor("collab.input.supervised"))
        let logits = head(dtseg: dtseg.value, supervised: supervised.value)
        let loss = (logits * reference.tensor("collab.r")).sum()
        let named = head.parameters()
            + [(name: "input.dtseg", parameter: dtseg), (name: "input.supervised", parameter: supervised)]
        let (_, gradients) = try Gradients.of(loss, wrt: named.map(\.parameter),
                                              alongside: [logits] + head.pendingBufferUpdates())
        let logitError = relativeError(try logits.toArray(), reference.values("collab.logits"))
        XCTAssertLessThan(logitError, 1e-5)
        let worst = assertGradients(gradients, parameters: named, reference: reference, group: "collab")
        print("collaborative head: logits relative error \(logitError), largest gradient \(worst.error) "
              + "(\(worst.name))")
    }

    func testPaperPresetsHaveTheReferenceParameterCounts() {
        let g = RandomGenerator(seed: 0)
        let expected: [(UNetFormerDecoder.Layout, Int, Int)] = [
            (.parallel, Self.paperParallelCount, 384), (.serial, Self.paperSerialCount, 128),
            (.withoutSelfAttention, Self.paperWithoutSelfAttentionCount, 384),
        ]
        for (layout, count, channels) in expected {
            let decoder = UNetFormerDecoder(.paper(classes: 5, layout: layout), generator: g)
            XCTAssertEqual(decoder.parameterCount(), count, "\(layout)")
            XCTAssertEqual(decoder.featureChannels, channels, "\(layout)")
        }
        let collaborative = CollaborativeHead(.paper(classes: 5), generator: g)
        XCTAssertEqual(collaborative.parameterCount(), Self.paperCollaborativeCount)
        XCTAssertEqual(collaborative.configuration.dtsegChannels, UNetFormerDecoder.Configuration.paper(classes: 5)
            .featureChannels)
        let cpu = UNetFormerDecoder(.cpu(inputChannels: [96, 96, 96], classes: 2), generator: g)
        XCTAssertEqual(cpu.parameterCount(), Self.cpuCount)
    }

    /// Every layout maps inputs that are not a multiple of the window to f_D and logits of the input size, and
    /// names its parameters as the reference (a strict load of the fixture's state checks the names above).
    func testLayoutsGiveTheirShapes() throws {
        let g = RandomGenerator(seed: 7)
        let inputs = [g.normal([2, 6, 13, 11]), g.normal([2, 4, 13, 11])]
        for layout in UNetFormerDecoder.Layout.allCases {
            let configuration = UNetFormerDecoder.Configuration(inputChannels: [6, 4], decodeChannels: 8, window: 4,
                                                                heads: 2, classes: 3, layout: layout)
            let decoder = UNetFormerDecoder(configuration, generator: g)
            let features = decoder.features(inputs)
            XCTAssertEqual(try features.eval().shape, [2, layout == .serial ? 8 : 16, 13, 11], "\(layout)")
            XCTAssertEqual(try decoder.head(features).eval().shape, [2, 3, 13, 11], "\(layout)")
            let blocks = decoder.parameters().filter { $0.name.hasPrefix("blocks.") }.count
            XCTAssertEqual(blocks, [.parallel: 2 * 20, .serial: 20, .withoutSelfAttention: 0][layout], "\(layout)")
        }
        let decoder = UNetFormerDecoder(.init(inputChannels: [6, 4], decodeChannels: 8, window: 4, heads: 2,
                                              classes: 3), generator: g)
        XCTAssertThrowsError(try decoder.features(Array(inputs.reversed())).eval())
    }

    /// The tiny decoder and collaborative head in training mode on OpenCL (PoCL in CI) match the CPU, with no op
    /// falling back to the CPU.
    func testTinyDecoderOnOpenCLMatchesTheCPU() throws {
        guard let device = try OpenCLBackend.make() else { throw XCTSkip("no OpenCL device on this machine") }
        let reference = try Reference()
        let decoder = UNetFormerDecoder(reference.decoderConfiguration(.parallel), generator: RandomGenerator(seed: 0))
        try decoder.load(reference.initialState("decoder"), source: Reference.path)
        let collaborative = CollaborativeHead(.init(dtsegChannels: 32, supervisedChannels: 6, hidden: 8, classes: 3),
                                              generator: RandomGenerator(seed: 1))
        let inputs = (0..<2).map { reference.tensor("decoder.input.\($0)") }
        let supervised = reference.tensor("collab.input.supervised")
        func outputs() -> [Tensor] {
            let features = decoder.features(inputs)
            return [decoder.head(features), collaborative(dtseg: features, supervised: supervised)]
        }
        FallbackReport.shared.printsFirstOccurrence = false
        FallbackReport.shared.reset()
        collaborative.train(false)
        let cpu = try outputs().map { try $0.toArray(on: CPUBackend.shared) }
        let opencl = try outputs().map { try $0.toArray(on: device) }
        XCTAssertEqual(FallbackReport.shared.counts, [:], "CPU fallbacks")
        for (name, (ours, theirs)) in zip(["decoder", "collaborative head"], zip(opencl, cpu)) {
            let error = relativeError(ours, theirs)
            print("\(name): OpenCL vs CPU relative difference \(error)")
            XCTAssertLessThan(error, 1e-4, name)
        }
    }
}

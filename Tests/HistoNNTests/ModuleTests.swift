import Foundation
import XCTest
import HistoCore
import HistoNN

private final class Block: Module {
    let conv1: Linear
    let norm: Parameter
    let stats: ModuleBuffer
    let skip: Linear?
    let unused: Linear?

    init(_ g: RandomGenerator, skip: Bool) {
        conv1 = Linear(2, 2, generator: g)
        norm = Parameter([1, 1], shape: [2])
        stats = ModuleBuffer([0, 0], shape: [2])
        self.skip = skip ? Linear(2, 2, bias: false, generator: g) : nil
        unused = nil
        super.init()
    }
}

private class Encoder: Module {
    let down: [Block]
    let table: [String: Module]
    let width = 2 // not a member
    init(_ g: RandomGenerator) {
        down = [Block(g, skip: false), Block(g, skip: true)]
        table = ["z": Activation(.relu), "a": Linear(1, 1, generator: g)]
        super.init()
    }
}

private final class WideEncoder: Encoder {
    let extra: Parameter
    let adapters: [any UnaryLayer]
    override init(_ g: RandomGenerator) {
        extra = Parameter([3], shape: [1])
        adapters = [Activation(.silu), Linear(1, 1, bias: false, generator: g)]
        super.init(g)
    }
}

private final class Model: Module {
    let encoder: WideEncoder
    var head: Linear
    let tied: Parameter
    init(_ g: RandomGenerator) {
        encoder = WideEncoder(g)
        head = Linear(2, 3, generator: g)
        tied = encoder.down[0].norm // shared: listed once, under its first name
        super.init()
    }
}

final class ModuleTests: XCTestCase {
    func testNamesFollowPropertiesArraysDictionariesAndSuperclasses() {
        let model = Model(RandomGenerator(seed: 1))
        // Names exist as soon as the model is built.
        XCTAssertEqual(model.encoder.down[1].skip!.weight.name, "encoder.down.1.skip.weight")
        XCTAssertEqual(model.encoder.down[0].stats.name, "encoder.down.0.stats")
        XCTAssertEqual(model.tied.name, "encoder.down.0.norm")
        let names = model.parameters().map(\.name)
        XCTAssertEqual(names, [
            "encoder.down.0.conv1.weight", "encoder.down.0.conv1.bias", "encoder.down.0.norm",
            "encoder.down.1.conv1.weight", "encoder.down.1.conv1.bias", "encoder.down.1.norm", "encoder.down.1.skip.weight",
            "encoder.table.a.weight", "encoder.table.a.bias", "encoder.extra",
            "encoder.adapters.1.weight", "head.weight", "head.bias",
        ])
        XCTAssertEqual(model.buffers().map(\.name), ["encoder.down.0.stats", "encoder.down.1.stats"])
        // Parameter.name is the full path, wherever it is collected from.
        XCTAssertEqual(model.encoder.down[1].parameters().map(\.name), ["conv1.weight", "conv1.bias", "norm", "skip.weight"])
        XCTAssertEqual(model.tied.name, "encoder.down.0.norm")
        XCTAssertEqual(model.modules().map(\.name).prefix(4), ["", "encoder", "encoder.down.0", "encoder.down.0.conv1"])
        XCTAssertEqual(model.parameterCount(), 33)
    }

    func testReplacedChildIsNamedByTheNextCollection() {
        let model = Model(RandomGenerator(seed: 1))
        let newHead = Linear(2, 5, generator: RandomGenerator(seed: 2))
        model.head = newHead
        XCTAssertEqual(newHead.weight.name, "weight")
        _ = model.parameters()
        XCTAssertEqual(newHead.weight.name, "head.weight")
    }

    func testSequentialNamesLayersByIndexAndChains() throws {
        let g = RandomGenerator(seed: 3)
        let mlp = Sequential(Linear(4, 8, generator: g), Activation(.gelu), Linear(8, 2, generator: g))
        XCTAssertEqual(mlp.parameters().map(\.name), ["0.weight", "0.bias", "2.weight", "2.bias"])
        let x = Tensor((0..<8).map { Float($0) / 8 }, shape: [2, 4])
        let l0 = mlp.layers[0] as! Linear, l2 = mlp.layers[2] as! Linear
        let manual = l2(l0(x).gelu())
        XCTAssertEqual(try mlp(x).toArray(), try manual.toArray())
    }

    func testFreezeByPrefixAndTrainMode() {
        let model = Model(RandomGenerator(seed: 1))
        XCTAssertEqual(model.freeze(prefix: "encoder.down"), 7)
        XCTAssertEqual(model.freeze(prefix: "encoder.dow"), 0, "prefixes match whole path components")
        XCTAssertEqual(model.trainableParameters().map(\.name), ["encoder.table.a.weight", "encoder.table.a.bias", "encoder.extra", "encoder.adapters.1.weight", "head.weight", "head.bias"])
        XCTAssertEqual(model.unfreeze(prefix: "encoder.down.1"), 4)
        XCTAssertEqual(model.parameterCount(trainableOnly: true), 25)
        model.freeze()
        XCTAssertTrue(model.trainableParameters().isEmpty)
        model.unfreeze()
        XCTAssertEqual(model.trainableParameters().count, 13)

        XCTAssertTrue(model.isTraining)
        model.train(false)
        XCTAssertTrue(model.modules().allSatisfy { !$0.module.isTraining })
        model.encoder.train()
        XCTAssertFalse(model.isTraining)
        XCTAssertTrue(model.encoder.down[1].skip!.isTraining)
    }

    func testLinearInitIsSeededAndWithinPyTorchBounds() throws {
        let a = Linear(16, 4, generator: RandomGenerator(seed: 7))
        let b = Linear(16, 4, generator: RandomGenerator(seed: 7))
        let c = Linear(16, 4, generator: RandomGenerator(seed: 8))
        XCTAssertEqual(try a.weight.values(), try b.weight.values())
        XCTAssertEqual(try a.bias!.values(), try b.bias!.values())
        XCTAssertNotEqual(try a.weight.values(), try c.weight.values())
        let bound: Float = 1 / 4 // 1/√fan_in for kaiming-uniform a = √5 and for the bias
        let w = try a.weight.values()
        XCTAssertTrue(w.allSatisfy { abs($0) <= bound })
        XCTAssertGreaterThan(w.map(abs).max()!, bound * 0.8)
        XCTAssertTrue(try a.bias!.values().allSatisfy { abs($0) <= bound })
        XCTAssertEqual(a.weight.shape, [4, 16])
        XCTAssertTrue(a.weight.value.node.op is Leaf, "parameters are realised leaves")

        let x = Tensor((0..<32).map { Float($0) / 10 }, shape: [2, 16])
        let y = try a(x).toArray()
        let bias = try a.bias!.values()
        for n in 0..<2 {
            for o in 0..<4 {
                var s = bias[o]
                for i in 0..<16 { s += Float(n * 16 + i) / 10 * w[o * 16 + i] }
                XCTAssertEqual(y[n * 4 + o], s, accuracy: 1e-4)
            }
        }
        XCTAssertEqual(Initializer.fans([8, 3, 3, 3]).fanIn, 27)
        XCTAssertEqual(Initializer.fans([8, 3, 3, 3]).fanOut, 72)
    }

    func testDropoutModes() throws {
        let x = Tensor.ones([2, 3, 4, 4])
        let dropout = Dropout(0.5, generator: RandomGenerator(seed: 1))
        let trained = try dropout(x).toArray()
        XCTAssertTrue(trained.allSatisfy { $0 == 0 || $0 == 2 })
        XCTAssertTrue(trained.contains(0) && trained.contains(2))
        dropout.train(false)
        XCTAssertEqual(try dropout(x).toArray(), [Float](repeating: 1, count: 96))

        let always = Dropout2d(0.5, generator: RandomGenerator(seed: 1), alwaysOn: true)
        always.train(false)
        let maps = try always(x).toArray()
        for channel in 0..<6 {
            let plane = Array(maps[(channel * 16)..<(channel * 16 + 16)])
            XCTAssertTrue(plane.allSatisfy { $0 == plane[0] }, "Dropout2d drops whole channels")
        }
        XCTAssertTrue(maps.contains(0) || maps.contains(2))

        XCTAssertThrowsError(try Dropout(1, generator: RandomGenerator(seed: 1))(x).eval()) { error in
            XCTAssertTrue("\(error)".contains("probability 1.0 is outside [0, 1)"), "\(error)")
        }
    }

    func testActivationsMatchTensorOps() throws {
        let x = Tensor([-2, -0.5, 0, 0.5, 7], shape: [5])
        XCTAssertEqual(try Activation(.relu6)(x).toArray(), [0, 0, 0, 0.5, 6])
        XCTAssertEqual(try Activation(.leakyRelu(slope: 0.2))(x).toArray(), try x.leakyRelu(0.2).toArray())
        XCTAssertEqual(try Activation(.silu)(x).toArray(), try x.silu().toArray())
        XCTAssertEqual(try Activation(.identity)(x).toArray(), try x.toArray())
    }

    func testTimestepEmbeddingsMatchReferenceCode() throws {
        let fixture = Fixtures.section("timestep_embedding")
        let t = Tensor(floats(fixture["timesteps"]), shape: [4])
        let cases: [(String, Int, SinusoidalTimestepEmbedding.Convention)] = [
            ("guided_8", 8, .guidedDiffusion), ("guided_7", 7, .guidedDiffusion), ("lucidrains_8", 8, .lucidrains),
        ]
        for (name, dim, convention) in cases {
            let emb = SinusoidalTimestepEmbedding(dimension: dim, convention: convention)(t)
            XCTAssertEqual(emb.shape, [4, dim], name)
            // sin/cos of arguments up to 999 rad: float32 argument rounding dominates.
            assertClose(try emb.toArray(), floats(fixture[name]), atol: 2e-4, rtol: 0, name)
        }
        XCTAssertThrowsError(try SinusoidalTimestepEmbedding(dimension: 7, convention: .lucidrains)(t).eval())
        XCTAssertThrowsError(try SinusoidalTimestepEmbedding(dimension: 8, convention: .lucidrains)(t.reshape([2, 2])).eval())
    }
}

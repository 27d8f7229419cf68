import XCTest
import HistoCore
@testable import HistoNN
import HistoOpenCL

final class LayerTests: XCTestCase {
    func testBatchNormUpdatesRunningStatisticsLikePyTorch() throws {
        let bn = BatchNorm2d(2, momentum: 0.1)
        // Channel 0 holds 1…4, channel 1 holds 10, 20, 30, 40 (N = 2, 1×2 maps).
        let x = Tensor([1, 2, 10, 20, 3, 4, 30, 40], shape: [2, 2, 1, 2])
        let y = bn(x)
        let (_, grads) = try Gradients.of(y.square().sum(), wrt: bn.trainableParameters(), alongside: bn.pendingBufferUpdates())
        XCTAssertEqual(grads.parameters.count, 2)
        try bn.commitBufferUpdates()
        // mean 2.5 / 25; unbiased variance 5/3 / 500/3; running = 0.9·init + 0.1·batch.
        let mean = try bn.runningMean.values(), variance = try bn.runningVar.values()
        XCTAssertEqual(mean[0], 0.25, accuracy: 1e-6); XCTAssertEqual(mean[1], 2.5, accuracy: 1e-5)
        XCTAssertEqual(variance[0], 0.9 + 0.1 * 5 / 3, accuracy: 1e-5); XCTAssertEqual(variance[1], 0.9 + 0.1 * 500 / 3, accuracy: 1e-3)
        XCTAssert(bn.runningMean.value.node.op is Leaf, "the update is committed to a leaf")
        XCTAssertEqual(bn.parameters().map(\.name), ["weight", "bias"])
        XCTAssertEqual(bn.buffers().map(\.name), ["running_mean", "running_var"])

        bn.train(false)
        let evaluated = try bn(x).toArray()
        let expected0 = (1 - 0.25) / (Float(0.9 + 0.1 * 5 / 3) + 1e-5).squareRoot()
        XCTAssertEqual(evaluated[0], expected0, accuracy: 1e-5)
    }

    func testAttentionLayersKeepShapesAndTrainEveryParameter() throws {
        let g = RandomGenerator(seed: 3)
        let x = try g.normal([2, 8, 10, 12]).materialized()
        let layers: [(String, Module, (Tensor) -> Tensor)] = {
            let window = WindowAttention(dim: 8, heads: 2, window: 4, generator: g)
            let unprojected = WindowAttention(dim: 8, heads: 2, window: 4, outputProjection: false, generator: g)
            let spatial = SpatialAttention(dim: 8, heads: 2, headDim: 4, generator: g)
            let linear = LinearAttention(dim: 8, heads: 2, headDim: 4, generator: g)
            return [("window", window, { window($0) }), ("window without projection", unprojected, { unprojected($0) }),
                    ("spatial", spatial, { spatial($0) }), ("linear", linear, { linear($0) })]
        }()
        for (name, module, apply) in layers {
            let y = apply(x)
            XCTAssertEqual(y.shape, x.shape, name)
            let (loss, grads) = try Gradients.of((y * y).mean(), wrt: module.trainableParameters())
            XCTAssert(loss.isFinite, name)
            for p in module.trainableParameters() {
                XCTAssert(grads[p]!.contains { $0 != 0 }, "\(name): \(p.name) gets no gradient")
            }
        }
        XCTAssertEqual(WindowAttention(dim: 8, heads: 2, window: 4, outputProjection: false, generator: g).parameters()
            .map(\.name), ["qkv.weight", "relativePositionBiasTable"])
        let attention = MultiheadAttention(dim: 6, heads: 2, contextDim: 5, generator: g)
        let tokens = g.normal([2, 7, 6]), context = g.normal([2, 3, 5])
        XCTAssertEqual(try attention(tokens, context: context).eval().shape, [2, 7, 6])
        XCTAssertEqual(attention.parameters().map(\.name).first, "queryProjection.weight")
    }

    func testPointwiseGroupsAreTheChunksOfItsOutput() throws {
        let g = RandomGenerator(seed: 4)
        let pointwise = Pointwise(3, 6, generator: g)
        let x = try g.normal([2, 3, 50]).materialized()
        let chunks = pointwise(x).chunk(3, axis: 1), groups = pointwise(x, groups: 3)
        XCTAssertEqual(groups.count, 3)
        for (group, chunk) in zip(groups, chunks) {
            XCTAssertEqual(group.shape, [2, 2, 50])
            let worst = zip(try group.toArray(), try chunk.toArray()).map { abs($0 - $1) }.max() ?? .infinity
            XCTAssertLessThan(worst, 1e-6)
        }
        XCTAssertThrowsError(try pointwise(x, groups: 4)[0].eval())
    }
}

final class MemoryReuseTests: XCTestCase {
    final class TinyUNetBlock: Module {
        let down: Conv2d, norm: GroupNorm, attention: SpatialAttention, up: ConvTranspose2d, head: Conv2d
        init(generator g: RandomGenerator) {
            down = Conv2d(3, 8, kernel: 4, stride: 2, padding: 1, generator: g)
            norm = GroupNorm(groups: 4, channels: 8)
            attention = SpatialAttention(dim: 8, heads: 2, headDim: 4, generator: g)
            up = ConvTranspose2d(8, 8, kernel: 4, stride: 2, padding: 1, generator: g)
            head = Conv2d(8 + 3, 3, kernel: 3, padding: 1, generator: g)
            super.init()
        }
        func callAsFunction(_ x: Tensor) -> Tensor {
            let h = norm(down(x)).silu()
            let u = up(h + attention(h))
            return head(Tensor.concat([u, x], axis: 1))
        }
    }

    /// A UNet-style training step (conv down, group norm, attention, transposed conv up, skip concat, Adam) takes
    /// every buffer from the pool after its first step.
    func testTrainingStepsDoNotAllocateAfterTheFirst() throws {
        let g = RandomGenerator(seed: 5)
        let model = TinyUNetBlock(generator: g)
        let optimizer = Adam([ParameterGroup(model.trainableParameters())], learningRate: 1e-3)
        let x = try g.normal([2, 3, 16, 16]).materialized(), target = try g.normal([2, 3, 16, 16]).materialized()
        let pool = CPUBackend.shared.pool
        var fresh: [Int] = []
        for _ in 0..<4 {
            let loss = (model(x) - target).square().mean()
            let (_, grads) = try Gradients.of(loss, wrt: model.trainableParameters())
            try optimizer.step(grads)
            fresh.append(pool.freshAllocations)
        }
        XCTAssertEqual(fresh[3], fresh[1], "steps 3 and 4 allocated \(fresh[3] - fresh[1]) fresh buffers")
    }
}

final class BackendTrainingParityTests: XCTestCase {
    /// The EMA update runs as tensor ops on the backend it is given: on OpenCL the shadows then live in device
    /// buffers, and the values equal the CPU's bit for bit (elementwise sub/mul, no contraction). With
    /// `averagesBuffers` the teacher's BatchNorm statistics are averaged too; without, they stay as they are.
    func testEMAUpdateOnTheDeviceMatchesTheCPU() throws {
        guard let device = try OpenCLBackend.make() else { throw XCTSkip("no OpenCL device on this machine") }
        func teacherState(on backend: any Backend, averagesBuffers: Bool) throws -> [String: HostTensor] {
            let student = Sequential(Conv2d(3, 4, kernel: 3, padding: 1, generator: RandomGenerator(seed: 1)),
                                     BatchNorm2d(4))
            let teacher = Sequential(Conv2d(3, 4, kernel: 3, padding: 1, generator: RandomGenerator(seed: 2)),
                                     BatchNorm2d(4))
            let ema = ExponentialMovingAverage(teacher: teacher, decay: 0.9, warmup: .meanTeacher,
                                               averagesBuffers: averagesBuffers)
            for step in 0..<3 {
                _ = student(RandomGenerator(seed: UInt64(step)).normal([2, 3, 8, 8]))  // moves the student's BN stats
                try student.commitBufferUpdates()
                for (_, p) in student.parameters() { p.assign(try p.values().map { $0 + 0.25 }) }
                try ema.update(from: student, on: backend)
            }
            if backend !== CPUBackend.shared {
                XCTAssertTrue(ema.shadows.allSatisfy { $0.parameter.value.node.buffer?.backend === backend },
                              "shadows stay in device buffers")
            }
            return try teacher.checkpointState().tensors
        }
        for averagesBuffers in [false, true] {
            let cpu = try teacherState(on: CPUBackend.shared, averagesBuffers: averagesBuffers)
            let opencl = try teacherState(on: device, averagesBuffers: averagesBuffers)
            XCTAssertEqual(cpu, opencl, "averagesBuffers \(averagesBuffers)")
            let mean = try XCTUnwrap(cpu["1.running_mean"]).values
            XCTAssertEqual(mean.allSatisfy { $0 == 0 }, !averagesBuffers, "running mean \(mean)")
        }
    }

    /// Three Adam steps of the UNet-style block give the same losses on OpenCL (PoCL in CI) as on the CPU.
    func testUNetStepLossesMatchBetweenBackends() throws {
        guard let device = try OpenCLBackend.make() else { throw XCTSkip("no OpenCL device on this machine") }
        func losses(on backend: any Backend) throws -> [Float] {
            let g = RandomGenerator(seed: 21)
            let model = MemoryReuseTests.TinyUNetBlock(generator: g)
            let optimizer = Adam([ParameterGroup(model.trainableParameters())], learningRate: 1e-2)
            let x = try g.normal([2, 3, 16, 16]).materialized(), target = try g.normal([2, 3, 16, 16]).materialized()
            return try (0..<3).map { _ in
                let (loss, grads) = try Gradients.of((model(x) - target).square().mean(), wrt: model.trainableParameters(), on: backend)
                try optimizer.step(grads)
                return loss
            }
        }
        let cpu = try losses(on: CPUBackend.shared), opencl = try losses(on: device)
        print("UNet step losses: cpu \(cpu), opencl \(opencl); CPU fallbacks on OpenCL: \(FallbackReport.shared.counts)")
        for (a, b) in zip(cpu, opencl) { XCTAssertEqual(a, b, accuracy: 1e-4 * max(1, abs(a))) }
        XCTAssertLessThan(cpu[2], cpu[0], "the loss should fall over three steps")
    }
}

import HistoCore
import HistoDiffusion
import HistoNN

extension Workloads {
    /// One ε-prediction training step of every CPU preset of the diffusion UNet families, at batch 8 with 64² and
    /// 128² inputs. `benchmarks/torch_peer.py` times the same step of `guided.bench828k` in PyTorch.
    static func diffusionWorkloads(quick: Bool) -> [Workload] {
        let batch = quick ? 2 : 8
        let sizes = quick ? [16] : [64, 128]
        // The conditional UNet's x is the noisy mask; its context is the clean image.
        let models: [(name: String, channels: Int, conditionChannels: Int?, build: () throws -> any NoisePredictor)] = [
            ("guided.cpu", 3, nil, { try GuidedUNet(.cpu, generator: RandomGenerator(seed: 20)) }),
            ("guided.bench828k", 3, nil, { try GuidedUNet(.bench828k, generator: RandomGenerator(seed: 21)) }),
            ("attention.cpu", 3, nil, { try AttentionUNet(.cpu, generator: RandomGenerator(seed: 22)) }),
            ("conditional.cpuMask", 2, 3, { try ConditionalUNet(.cpuMask(), generator: RandomGenerator(seed: 23)) }),
        ]
        return sizes.flatMap { size in
            models.map { name, channels, conditionChannels, build in
                let shape = [batch, channels, size, size]
                return .unetStep("unet step \(name) \(batch)x\(channels)x\(size)x\(size)", build: build, shape: shape,
                                 context: conditionChannels.map { leaf([batch, $0, size, size], seed: 32) })
            }
        }
    }
}

extension Workload {
    /// A training step: model(x_t, t) against a fixed noise target by mean squared error, backward to every
    /// parameter, Adam update (and BatchNorm running statistics where the model has them). The model is built
    /// on first use, so workloads that a filter skips cost nothing.
    static func unetStep(_ name: String, build: @escaping () throws -> any NoisePredictor, shape: [Int],
                         context: Tensor?) -> Workload {
        let x = Workloads.leaf(shape, seed: 30), noise = Workloads.leaf(shape, seed: 31)
        let t = try! RandomGenerator(seed: 33).integers([shape[0]], 0, 1000).materialized()
        var trainer: (model: any NoisePredictor, optimizer: Adam)?
        return Workload(name: name, flops: 0, bytes: 0, peer: nil, run: { backend in
            if trainer == nil {
                let model = try build()
                trainer = (model, Adam([ParameterGroup(model.trainableParameters())], learningRate: 1e-4))
            }
            let (model, optimizer) = trainer!
            model.train(true)
            let loss = Loss.mse(model(x, timesteps: t, context: context), noise)
            let (_, gradients) = try Gradients.of(loss, wrt: model.trainableParameters(),
                                                  alongside: model.pendingBufferUpdates(), on: backend)
            try optimizer.step(gradients)
            try model.commitBufferUpdates(on: backend)
            try backend.synchronize()
        })
    }
}

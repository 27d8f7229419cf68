import HistoCore
import HistoData
import HistoNN

/// Training an `AutoencoderKL` and mapping a dataset to diffusion latents: the first-stage steps of a latent
/// diffusion pipeline, callable from the CLI.
public enum AutoencoderTraining {
    public struct Options: Sendable {
        /// Optimizer steps this call takes (a resumed run passes the steps still to go).
        public var steps: Int
        /// β of reconstruction + β·KL (LDM kl-f4: 1e-6).
        public var klWeight: Float
        public var reconstruction: AutoencoderKL.ReconstructionLoss

        public init(steps: Int, klWeight: Float = 1e-6, reconstruction: AutoencoderKL.ReconstructionLoss = .l1) {
            self.steps = steps
            self.klWeight = klWeight
            self.reconstruction = reconstruction
        }
    }

    /// What one optimizer step did.
    public struct StepRecord: Equatable, Sendable {
        /// The optimizer's step count after this step (1 for a fresh optimizer's first step).
        public let step: Int
        public let loss: Float
        public let reconstruction: Float
        public let kl: Float
        /// The learning rate the step used.
        public let learningRate: Float
    }

    /// Trains on batches from `nextBatch` (images [N, C, H, W]; nil ends the stream) for `options.steps` steps or
    /// until the stream ends. Each step draws the posterior sample from `generator`, takes gradients of the loss
    /// with respect to the model's trainable parameters, sets the learning rate from `schedule` (at the
    /// optimizer's step count) when one is given, and steps `optimizer`. `progress` sees every step; an error it
    /// throws stops training. Returns the records of the steps taken.
    @discardableResult
    public static func run(model: AutoencoderKL, nextBatch: () throws -> Tensor?, optimizer: any Optimizer,
                           options: Options, generator: RandomGenerator, schedule: (any LearningRateSchedule)? = nil,
                           on backend: (any Backend)? = nil,
                           progress: (StepRecord) throws -> Void = { _ in }) throws -> [StepRecord] {
        guard options.steps >= 0 else {
            throw EngineError.invalidValue(op: "AutoencoderTraining", message: "steps \(options.steps) must not be negative")
        }
        model.train(true)
        var records: [StepRecord] = []
        while records.count < options.steps, let images = try nextBatch() {
            let record = try step(model: model, images: images, optimizer: optimizer, options: options,
                                  generator: generator, schedule: schedule, on: backend)
            records.append(record)
            try progress(record)
        }
        return records
    }

    /// One optimizer step on `images`: posterior sample from `generator`, gradients of the loss with respect to
    /// the trainable parameters (and the loss terms) averaged over the ranks of `group` (each holding its shard of
    /// the batch), learning rate from `schedule` at the optimizer's step count, then the update.
    public static func step(model: AutoencoderKL, images: Tensor, optimizer: any Optimizer, options: Options,
                            generator: RandomGenerator, schedule: (any LearningRateSchedule)? = nil,
                            on backend: (any Backend)? = nil,
                            across group: any ProcessGroup = SingleProcess.shared) throws -> StepRecord {
        if let schedule { optimizer.learningRate = schedule.learningRate(at: optimizer.stepCount) }
        let terms = model.loss(images, generator: generator, klWeight: options.klWeight, reconstruction: options.reconstruction)
        let (loss, shardGradients) = try Gradients.of(terms.total, wrt: model.trainableParameters(),
                                                      alongside: [terms.reconstruction, terms.kl], on: backend)
        var gradients = shardGradients
        var values = [loss, try terms.reconstruction.item(on: backend), try terms.kl.item(on: backend)]
        try gradients.average(across: group, with: &values)
        try optimizer.step(gradients)
        return StepRecord(step: optimizer.stepCount, loss: values[0], reconstruction: values[1], kl: values[2],
                          learningRate: optimizer.learningRate)
    }

    /// Trains on the images of `loader`'s batches (labels, if any, are not used).
    @discardableResult
    public static func run(model: AutoencoderKL, loader: BatchLoader, optimizer: any Optimizer, options: Options,
                           generator: RandomGenerator, schedule: (any LearningRateSchedule)? = nil,
                           on backend: (any Backend)? = nil,
                           progress: (StepRecord) throws -> Void = { _ in }) throws -> [StepRecord] {
        try run(model: model, nextBatch: { try loader.next()?.images }, optimizer: optimizer, options: options,
                generator: generator, schedule: schedule, on: backend, progress: progress)
    }

    /// Trains on fixed image batches, taken in order and cycled.
    @discardableResult
    public static func run(model: AutoencoderKL, batches: [Tensor], optimizer: any Optimizer, options: Options,
                           generator: RandomGenerator, schedule: (any LearningRateSchedule)? = nil,
                           on backend: (any Backend)? = nil,
                           progress: (StepRecord) throws -> Void = { _ in }) throws -> [StepRecord] {
        guard !batches.isEmpty else {
            throw EngineError.invalidValue(op: "AutoencoderTraining", message: "no batches to train on")
        }
        var position = 0
        return try run(model: model, nextBatch: {
            defer { position = (position + 1) % batches.count }
            return batches[position]
        }, optimizer: optimizer, options: options, generator: generator, schedule: schedule, on: backend, progress: progress)
    }

    // MARK: dataset → latents

    /// A dataset's latents [N, z, h, w] (scaled) and where each came from, in loader order.
    public struct EncodedLatents {
        public let latents: HostTensor
        public let items: [BatchItem]
    }

    /// Encodes every batch of a finite loader (set `epochs`; usually `shuffle = false` and grid patches) into
    /// `model.latents(_:scaleFactor:mode:)`.
    public static func encodeDataset(model: AutoencoderKL, loader: BatchLoader, scaleFactor: Float = 1,
                                     mode: AutoencoderKL.LatentMode = .mean,
                                     on backend: (any Backend)? = nil) throws -> EncodedLatents {
        guard loader.options.epochs != nil else {
            throw EngineError.invalidValue(op: "encodeDataset", message: "the loader is an endless stream; set LoaderOptions.epochs")
        }
        var items: [BatchItem] = []
        let latents = try encode(model: model, nextBatch: {
            guard let batch = try loader.next() else { return nil }
            items += batch.items
            return batch.images
        }, scaleFactor: scaleFactor, mode: mode, on: backend)
        return EncodedLatents(latents: latents, items: items)
    }

    /// Encodes image batches into one latent tensor [ΣN, z, h, w].
    public static func encodeDataset(model: AutoencoderKL, batches: [Tensor], scaleFactor: Float = 1,
                                     mode: AutoencoderKL.LatentMode = .mean,
                                     on backend: (any Backend)? = nil) throws -> HostTensor {
        var iterator = batches.makeIterator()
        return try encode(model: model, nextBatch: { iterator.next() }, scaleFactor: scaleFactor, mode: mode, on: backend)
    }

    private static func encode(model: AutoencoderKL, nextBatch: () throws -> Tensor?, scaleFactor: Float,
                               mode: AutoencoderKL.LatentMode, on backend: (any Backend)?) throws -> HostTensor {
        var values: [Float] = []
        var itemShape: [Int]?
        var count = 0
        while let images = try nextBatch() {
            let latents = model.latents(images, scaleFactor: scaleFactor, mode: mode)
            values += try latents.toArray(on: backend)
            let shape = Array(latents.shape.dropFirst())
            if let itemShape, itemShape != shape {
                throw EngineError.invalidValue(op: "encodeDataset", message:
                    "batch \(describe(images.shape)) gives latents \(describe(latents.shape)), but earlier batches gave \(describe(itemShape)) per image; use one patch size")
            }
            itemShape = shape
            count += latents.shape[0]
        }
        guard let itemShape else { throw EngineError.invalidValue(op: "encodeDataset", message: "no images to encode") }
        return HostTensor(shape: [count] + itemShape, values: values)
    }
}

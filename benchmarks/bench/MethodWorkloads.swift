import Foundation
import HistoCore
import HistoData
import HistoDiffusion
import HistoMethods

extension Workloads {
    /// One training step of MT and CPS (issue 13, "Speed") and CDCL (issue 14): batch 8 labelled + 8 unlabelled
    /// 128² crops, the `cpu` preset (SegmentationUNet at width 8, Adam 1e-3; CDCL's DenseUNet, Adam 1e-3 poly),
    /// through the method's own `step` as `histodiff train` builds it; and DTSeg's decoder step (batch 4 of 128²
    /// crops on a frozen `cpu` latent-diffusion run with random weights: the work does not depend on them).
    /// `benchmarks/torch_peer.py` times the MT and CPS steps in PyTorch. CDCL's `paper` preset (DenseNet-161, 320²,
    /// 8 + 8; issue 14's memory question) is also timed, outside --quick.
    static func methodWorkloads(quick: Bool) -> [Workload] {
        let batch = quick ? 2 : 8, size = quick ? 64 : 128
        // CDCL's unlabelled terms from the first step: its first five epochs are supervised only.
        let cdcl = ["unlabelled-from": "0"]
        let paper: [Workload] = quick ? [] : [.methodStep("cdcl step paper denseunet 8+8 320", method: "cdcl",
                                                          preset: "paper", batch: 8, size: 320, options: cdcl)]
        return [("mt", "unet"), ("cps", "unet"), ("cdcl", "denseunet")].map { name, network in
            .methodStep("\(name) step cpu \(network) \(batch)+\(batch) \(size)", method: name, preset: "cpu",
                        batch: batch, size: size, options: name == "cdcl" ? cdcl : [:])
        } + paper + [.methodStep("dtseg step cpu decoder \(batch / 2) \(size)", method: "dtseg", preset: "cpu",
                                 batch: batch / 2, size: size, options: ["model": frozenLatentRun])
        ] + [("supervised", "unet"), ("cdcl", "denseunet"), ("genselfdiff", "genselfdiff")].map {
            .segmentation(method: $0, architecture: $1, side: quick ? 200 : 1000)
        }
    }
}

extension Workloads {
    /// A `histodiff pretrain --autoencoder` run of the `cpu` presets with random weights, written once per process
    /// into the temporary folder: what `dtseg` and `pathsegdiff` read their frozen features from.
    static let frozenLatentRun: String = {
        let directory = frozenLatentRunDirectory()
        try! FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let spec = DiffusionModelSpec(family: "guided", preset: "cpu", recipe: .vCosine,
                                      latent: .init(scaleFactor: 1, posterior: .mean, source: "random"))
        try! spec.write(toDirectory: directory)
        try! GuidedUNet(.cpu, generator: RandomGenerator(seed: 2))
            .save(to: directory + "/" + DiffusionRun.weightsFileName)
        try! AutoencoderKL(.cpu, generator: RandomGenerator(seed: 1))
            .saveWithPreset(to: directory + "/" + DiffusionRun.autoencoderFileName)
        atexit { try? FileManager.default.removeItem(atPath: frozenLatentRunDirectory()) }
        return directory
    }()

    static func frozenLatentRunDirectory() -> String {
        FileManager.default.temporaryDirectory.path + "/histodiff-bench-ldm-\(getpid())"
    }
}

extension Workload {
    /// Issue 21's inference workload: the probabilities of one `side`² RGB image from a fresh cpu-preset network
    /// that `method` trains, as `histodiff segment` computes them for such a run (its training patch as the tile,
    /// overlap 0.25, Gaussian blending, batches of 4, reflect padding).
    static func segmentation(method: String, architecture: String, side: Int) -> Workload {
        let samples = (0..<(side * side * 3)).map { UInt16(($0 * 2_654_435_761) >> 7 & 255) }
        let image = try! Image(width: side, height: side, channels: 3, bitDepth: 8, samples: samples)
        let patch = try! MethodTraining.plan(for: TrainingRequest(method: method, data: "", directory: "")).patchSize
        var segmenter: ImageSegmenter?
        return Workload(name: "segment \(side)x\(side) \(architecture) cpu tile \(patch)", flops: 0, bytes: 0,
                        peer: nil, run: { backend in
            if segmenter == nil {
                var card = ModelCard(architecture: architecture, preset: "cpu", classes: 2, pixelRange: .minusOneToOne)
                card.trainingPatch = patch
                let model = try TrainedModel(untrained: card)
                segmenter = try ImageSegmenter(model: model, window: .segmentation(tile: card.defaultTile),
                                               backend: backend)
            }
            _ = try segmenter!.probabilities(of: image)
        })
    }

    /// `method`'s step under `preset` on fixed synthetic batches (uniform images, binary labels, a second unlabelled
    /// view for the methods that take weak and strong ones), at step 100 of 1000 in epochs of 100 (the ramps'
    /// position does not change the work), with the method's `options`. The method and its options (a frozen run
    /// written to disk) are made on first use, so workloads that a filter skips cost nothing; every run is one more
    /// optimizer step of the same method.
    static func methodStep(_ name: String, method: String, preset: String, batch: Int, size: Int,
                           options: @autoclosure @escaping () -> [String: String]) -> Workload {
        let images = { (seed: UInt64) in
            try! RandomGenerator(seed: seed).uniform([batch, 3, size, size], -1, 1).materialized()
        }
        let labels = try! RandomGenerator(seed: 42).integers([batch, size, size], 0, 2).materialized()
        let batches = MethodBatch(labelled: Batch(images: images(40), labels: labels, items: []),
                                  unlabelled: Batch(images: images(41), strongImages: images(43), labels: nil,
                                                    items: []))
        var trainer: (any TrainingMethod)?
        return Workload(name: name, flops: 0, bytes: 0, peer: nil, run: { backend in
            if trainer == nil {
                var request = TrainingRequest(method: method, data: "", directory: "")
                request.preset = preset
                let plan = try MethodTraining.plan(for: request)
                trainer = try MethodRegistry.method(named: method).make(
                    preset, options(), MethodSetup(plan: plan, classes: 2, totalSteps: 1000, stepsPerEpoch: 100))
            }
            _ = try trainer!.step(batches, context: StepContext(step: 100, totalSteps: 1000, stepsPerEpoch: 100,
                                                                  backend: backend))
            try backend.synchronize()
        })
    }
}

import Foundation
import XCTest
import HistoCore
import HistoData
import HistoNN

/// A small conv net learns nucleus/background on real MoNuSeg crops on the CPU backend.
final class LearningTests: XCTestCase {
    static var dataRoot: URL {
        if let env = ProcessInfo.processInfo.environment["HISTODIFF_DATA"] { return URL(fileURLWithPath: env) }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/data")
    }

    final class PixelNet: Module, UnaryLayer {
        let conv1: Conv2d, conv2: Conv2d, head: Conv2d
        init(generator: RandomGenerator) {
            conv1 = Conv2d(3, 16, kernel: 3, padding: 1, generator: generator)
            conv2 = Conv2d(16, 16, kernel: 3, padding: 1, generator: generator)
            head = Conv2d(16, 2, kernel: 1, generator: generator)
            super.init()
        }
        func callAsFunction(_ x: Tensor) -> Tensor { head(conv2(conv1(x).relu()).relu()) }
    }

    /// `count` random 64×64 crops (image [N,3,64,64] in [−1, 1], labels [N,64,64] in {0, 1}) from `samples`.
    func crops(_ samples: [Sample], count: Int, seed: UInt64) throws -> (Tensor, Tensor, [Float]) {
        let positions = try RandomGenerator(seed: seed).integers([count, 3], 0, 1 << 20).toArray()
        let colors = samples.map { $0.image.colorPlanes() }
        var images: [Planes] = [], masks: [Planes] = []
        for i in 0..<count {
            let k = Int(positions[3 * i]) % samples.count, s = samples[k]
            let y = Int(positions[3 * i + 1]) % (s.image.height - 64), x = Int(positions[3 * i + 2]) % (s.image.width - 64)
            images.append(try colors[k].crop(y: y, x: x, height: 64, width: 64, padding: .zero))
            masks.append(try s.mask!.crop(y: y, x: x, height: 64, width: 64, padding: .zero))
        }
        return (Planes.batch(images), Planes.labelBatch(masks), masks.flatMap(\.values))
    }

    func testConvNetLearnsNucleiOnMoNuSegCrops() throws {
        let folder = Self.dataRoot.appendingPathComponent("monuseg-train")
        guard FileManager.default.fileExists(atPath: folder.path) else {
            throw XCTSkip("real data not found at \(folder.path) (set HISTODIFF_DATA or place ../shared/data beside the repository)")
        }
        let dataset = try Dataset.open(path: folder.path, requireMasks: true)
        // Train on crops of eight images, test on crops of two others (different organs and staining).
        let train = try (0..<8).map { try dataset.sample(at: $0) }, held = try (8..<10).map { try dataset.sample(at: $0) }
        let (trainX, trainY, _) = try crops(train, count: 64, seed: 1)
        let (testX, _, testLabels) = try crops(held, count: 16, seed: 2)

        let model = PixelNet(generator: RandomGenerator(seed: 42))
        let optimizer = Adam([ParameterGroup(model.trainableParameters())], learningRate: 3e-3)
        var losses: [Float] = []
        let batch = 8
        for step in 0..<200 {
            let start = (step * batch) % 64
            let x = trainX.slice(axis: 0, start: start, end: start + batch)
            let y = trainY.slice(axis: 0, start: start, end: start + batch)
            let loss = Loss.crossEntropy(logits: model(x), labels: y)
            let (value, grads) = try Gradients.of(loss, wrt: model.trainableParameters())
            try optimizer.step(grads)
            losses.append(value)
        }
        let first = losses.prefix(10).reduce(0, +) / 10, last = losses.suffix(10).reduce(0, +) / 10
        let predicted = try model(testX).argmax(axis: 1).toArray()
        let accuracy = Float(zip(predicted, testLabels).filter { $0 == $1 }.count) / Float(testLabels.count)
        let foreground = testLabels.reduce(0, +) / Float(testLabels.count)
        let majority = max(foreground, 1 - foreground)
        print(String(format: "loss %.3f → %.3f; held-out pixel accuracy %.3f vs majority-class rate %.3f", first, last, accuracy, majority))
        XCTAssertLessThan(last, 0.7 * first, "training loss should fall by at least 30%")
        XCTAssertGreaterThan(accuracy, majority + 0.02, "held-out accuracy should beat predicting the majority class")
    }
}

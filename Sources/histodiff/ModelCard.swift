import ArgumentParser
import Foundation
import HistoCore
import HistoMethods

/// What `segment` needs to rebuild a trained network: written as `model.json` beside its weights.
struct ModelCard: Codable {
    var architecture: String // unet | fpn
    var preset: String       // cpu | paper
    var classes: Int
    var pixelRange: String = "minus_one_to_one"

    static let fileName = "model.json"

    var segmentationArchitecture: SegmentationArchitecture {
        get throws {
            switch (architecture, preset) {
            case ("unet", "cpu"): return .unet(.cpu(classes: classes))
            case ("unet", "paper"): return .unet(.paper(classes: classes))
            case ("fpn", "cpu"): return .resnetFPN(.cpu(classes: classes))
            case ("fpn", "paper"): return .resnetFPN(.paper(classes: classes))
            default: throw ValidationError("unknown architecture/preset \(architecture)/\(preset) (unet|fpn, cpu|paper)")
            }
        }
    }

    func write(to directory: String) throws {
        let data = try JSONEncoder().encode(self)
        try data.write(to: URL(fileURLWithPath: directory).appendingPathComponent(Self.fileName), options: .atomic)
    }

    /// The card beside `weights` (a .safetensors file or the directory holding it).
    static func read(near weights: String) throws -> (card: ModelCard, weights: String) {
        var isDirectory: ObjCBool = false
        _ = FileManager.default.fileExists(atPath: weights, isDirectory: &isDirectory)
        let directory = isDirectory.boolValue ? weights : (weights as NSString).deletingLastPathComponent
        let file = isDirectory.boolValue ? (weights as NSString).appendingPathComponent(SupervisedTraining.checkpointFileName) : weights
        let cardPath = (directory as NSString).appendingPathComponent(fileName)
        guard let data = FileManager.default.contents(atPath: cardPath) else {
            throw EngineError.file(path: cardPath, message: "no model card beside the weights (written by `histodiff train`)")
        }
        do { return (try JSONDecoder().decode(ModelCard.self, from: data), file) } catch {
            throw EngineError.file(path: cardPath, message: "unreadable model card: \(error)")
        }
    }
}

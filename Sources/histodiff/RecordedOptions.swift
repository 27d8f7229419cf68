import HistoNN

/// The options that decide what a run's steps compute (patch, batch, learning rate, seed, …), recorded in its
/// checkpoints' metadata so that a resumed run is refused when it is given other values: it would otherwise continue
/// silently with a mix of both settings.
struct RecordedOptions {
    /// The checkpoint metadata key holding the options as JSON.
    static let metadataKey = "command.options"

    /// Option (as typed, e.g. "--lr") → its value as text.
    let values: [String: String]
    /// What the refusal says about the options left out of `values`, e.g. "--checkpoint-every may change".
    let changeable: String

    /// The metadata entry to save with every checkpoint.
    func metadata() throws -> [String: String] { [Self.metadataKey: try encodeJSON(values)] }

    /// Throws when the checkpoint metadata a run resumed from (`TrainingRun.resumedMetadata`) recorded other values,
    /// listing each. Checkpoints written before options were recorded are not checked.
    func checkResumed(from saved: [String: String], run: String) throws {
        guard let text = saved[Self.metadataKey], let recorded = try? decodeJSON([String: String].self, text) else {
            return
        }
        let differing = values.keys.sorted().compactMap { option -> String? in
            guard let before = recorded[option], before != values[option] else { return nil }
            return "\(option) \(values[option]!) (the run has \(before))"
        }
        guard differing.isEmpty else {
            throw CommandError("\(run) holds a run started with other options: \(differing.joined(separator: ", ")); "
                               + "resume it with the options it was started with (\(changeable)), "
                               + "or choose another --out")
        }
    }
}

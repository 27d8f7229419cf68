import ArgumentParser

/// Checks of option values, each throwing a `ValidationError` that names the option, its value and what is allowed
/// (a NaN learning rate is "not a finite number > 0", not "negative").
enum OptionCheck {
    /// An integer ≥ 1 (steps, batch and patch sizes, counts).
    static func positive(_ value: Int, _ option: String) throws {
        guard value >= 1 else { throw ValidationError("\(option) \(value) is not allowed: it must be an integer ≥ 1") }
    }

    /// An integer ≥ 0, where 0 means what `zero` says (e.g. "only at the end").
    static func nonNegative(_ value: Int, _ option: String, zero: String) throws {
        guard value >= 0 else {
            throw ValidationError("\(option) \(value) is not allowed: it must be an integer ≥ 0 (0: \(zero))")
        }
    }

    /// A finite number > 0 (learning rates, sizes in pixels).
    static func positive(_ value: Float, _ option: String) throws {
        guard value > 0, value.isFinite else {
            throw ValidationError("\(option) \(value) is not allowed: it must be a finite number > 0")
        }
    }

    /// A finite number ≥ 0 (loss weights, DDIM η).
    static func nonNegative(_ value: Float, _ option: String) throws {
        guard value >= 0, value.isFinite else {
            throw ValidationError("\(option) \(value) is not allowed: it must be a finite number ≥ 0")
        }
    }

    /// A number in [0, 1) (decays, overlaps: 1 would never move or never advance).
    static func fraction(_ value: Float, _ option: String) throws {
        guard value >= 0, value < 1 else {
            throw ValidationError("\(option) \(value) is not allowed: it must be a number in [0, 1)")
        }
    }
}

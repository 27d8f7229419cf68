import Foundation

/// A loss weight that rises over training, as a function of a position the method chooses (an epoch, an iteration,
/// or SSL4MIS's `iteration / 150`). SPEC §0.5; the methods' pages in docs/methods/ say which one each uses.
/// Like learning-rate schedules, ramps are pure functions of the position, so a resumed run needs nothing saved.
public enum Ramp: Equatable, Sendable {
    /// 1 everywhere.
    case constant
    /// Laine & Aila's "sigmoid" (Gaussian-shaped) ramp of SSL4MIS: exp(−5(1 − clip(c, 0, L)/L)²); 1 when L = 0.
    case sigmoid(length: Double)
    /// min(max(c, 0)/L, 1) (Ciampi's per-epoch λ·epoch/E); 1 when L = 0.
    case linear(length: Double)
    /// CDCL's Gaussian ramp with a start: 0 before `start`, then the sigmoid ramp of `c − start` over `length`.
    case gaussian(start: Double, length: Double)

    public func value(at position: Double) -> Double {
        switch self {
        case .constant:
            return 1
        case let .sigmoid(length):
            guard length > 0 else { return 1 }
            let phase = 1 - min(max(position, 0), length) / length
            return Foundation.exp(-5 * phase * phase)
        case let .linear(length):
            guard length > 0 else { return 1 }
            return min(max(position, 0) / length, 1)
        case let .gaussian(start, length):
            return position < start ? 0 : Ramp.sigmoid(length: length).value(at: position - start)
        }
    }
}

import HistoCore

/// Scalar draws from the engine's Philox stream on the host, for the data pipeline's decisions (shuffles, splits,
/// augmentation parameters). Stream position `p` gives exactly element `p` of `RandomGenerator(seed:)`'s draw of the
/// same distribution (Philox.swift defines the formulas), so a split or an augmentation can be reproduced by any
/// implementation of that definition.
public struct PhiloxStream: Sendable {
    public let seed: UInt64
    /// The next stream position.
    public private(set) var position: UInt64

    public init(seed: UInt64, position: UInt64 = 0) {
        self.seed = seed
        self.position = position
    }

    /// The stream of a purpose identified by a path of integers under `seed` (e.g. [role, epoch, sample]).
    public init(seed: UInt64, path: [UInt64]) {
        self.init(seed: Self.derive(seed: seed, path: path))
    }

    /// A key for `path` under `seed`: each step keys one Philox block, whose first two words are the next key. Keys
    /// of different paths are unrelated, so each sample's stream is independent of every other's.
    public static func derive(seed: UInt64, path: [UInt64]) -> UInt64 {
        path.reduce(seed) { key, step in
            let words = Philox.block(counter: step, seed: key)
            return UInt64(words.0) | UInt64(words.1) << 32
        }
    }

    /// The raw 32-bit word at the next position.
    public mutating func word() -> UInt32 {
        let words = Philox.block(counter: position / 4, seed: seed)
        defer { position &+= 1 }
        switch position % 4 {
        case 0: return words.0
        case 1: return words.1
        case 2: return words.2
        default: return words.3
        }
    }

    /// Uniform in (0, 1].
    public mutating func uniform() -> Float { Philox.uniform(word()) }

    /// Uniform in (lo, hi], as `RandomGenerator.uniform` computes it.
    public mutating func uniform(_ lo: Float, _ hi: Float) -> Float { lo + (hi - lo) * uniform() }

    /// An integer in lo..<hi (`hi > lo`).
    public mutating func integer(_ lo: Int, _ hi: Int) -> Int {
        lo + Int((UInt64(word()) &* UInt64(hi - lo)) >> 32)
    }

    /// True with probability `p`.
    public mutating func chance(_ p: Float) -> Bool { uniform() <= p }

    /// A standard normal: lane `position % 4` of the position's block (see `normals(seed:block:)`).
    public mutating func normal() -> Float {
        let normals = Self.normals(seed: seed, block: position / 4)
        defer { position &+= 1 }
        switch position % 4 {
        case 0: return normals.0
        case 1: return normals.1
        case 2: return normals.2
        default: return normals.3
        }
    }

    /// The four standard normals of one Philox block, as Philox.swift defines them: lanes (0, 1) and (2, 3) are
    /// Box–Muller pairs (u, v), giving r·cos 2πv and r·sin 2πv with r = √(−2 ln u).
    public static func normals(seed: UInt64, block: UInt64) -> (Float, Float, Float, Float) {
        let n = Philox.normals(Philox.blocks(from: block, seed: seed))
        return (n.0[0], n.1[0], n.2[0], n.3[0])
    }

    /// A fresh 64-bit seed made of the next two words.
    public mutating func nextSeed() -> UInt64 { UInt64(word()) << 32 | UInt64(word()) }

    /// A random order of `0..<count`: the indices sorted by `count` uniform keys drawn here (ties by index), i.e. the
    /// stable argsort of `RandomGenerator(seed:offset:).uniform([count])`.
    public mutating func permutation(_ count: Int) -> [Int] {
        let keys = (0..<count).map { _ in uniform() }
        return (0..<count).sorted { keys[$0] != keys[$1] ? keys[$0] < keys[$1] : $0 < $1 }
    }
}

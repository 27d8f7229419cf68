/// The 64-bit FNV-1a hash: unlike Swift's `Hasher`, which is seeded per process, equal across processes and runs
/// (model fingerprints compared between ranks, cache file names).
public struct FNV1a {
    public private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325

    public init() {}

    public mutating func add<Bytes: Sequence>(_ bytes: Bytes) where Bytes.Element == UInt8 {
        for byte in bytes { value = (value ^ UInt64(byte)) &* 0x100_0000_01b3 }
    }

    /// The values' bit patterns, little-endian.
    public mutating func add<Values: Sequence>(values: Values) where Values.Element == Float {
        for value in values { withUnsafeBytes(of: value.bitPattern.littleEndian) { add($0) } }
    }
}

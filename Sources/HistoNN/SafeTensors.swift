import Foundation
import HistoCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A tensor's values in host memory (row-major float32), as stored in checkpoints.
public struct HostTensor: Equatable {
    public var shape: [Int]
    public var values: [Float]

    public init(shape: [Int], values: [Float]) { self.shape = shape; self.values = values }

    /// Evaluates `tensor` and copies its values.
    public init(_ tensor: Tensor) throws { self.init(shape: tensor.shape, values: try tensor.toArray()) }

    /// A leaf holding these values.
    public var tensor: Tensor { Tensor(values, shape: shape) }
}

/// A parsed safetensors file: tensors converted to float32, their stored dtypes and the string metadata.
public struct SafeTensorsFile {
    public let path: String
    public let metadata: [String: String]
    public let tensors: [String: HostTensor]
    /// Tensor names in the order of their data in the file.
    public let names: [String]
    public let dtypes: [String: String]
}

/// The safetensors format (huggingface/safetensors): an 8-byte little-endian header length N, N bytes of JSON
/// `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {string: string}}` (padded with
/// spaces to a multiple of 8), then the raw little-endian data; offsets are relative to the end of the header.
///
/// Files are written as F32, keys sorted, compact JSON with non-ASCII escaped (byte-identical to Python's
/// `json.dumps(header, sort_keys=True, separators=(",", ":"))`), atomically: a temporary file in the same directory
/// is written, flushed and renamed over the destination. Reading accepts F32, F64, F16, BF16, I64 and I32
/// (converted to float32) and checks the header and every offset before use.
public enum SafeTensors {
    /// The largest header accepted (the reference implementation's limit).
    public static let maximumHeaderLength = 100_000_000
    static let itemSizes = ["F32": 4, "F64": 8, "F16": 2, "BF16": 2, "I64": 8, "I32": 4]

    /// The file's bytes: header length, padded header, data in the order given.
    public static func serialize(_ tensors: [(name: String, tensor: HostTensor)], metadata: [String: String] = [:],
                                 path: String = "safetensors") throws -> Data {
        var problems: [String] = []
        var seen = Set<String>()
        for (name, t) in tensors {
            if name == "__metadata__" { problems.append("a tensor cannot be named __metadata__") }
            if !seen.insert(name).inserted { problems.append("tensor name \(name) is used twice") }
            if t.shape.contains(where: { $0 < 0 }) || Shape.count(t.shape) != t.values.count {
                problems.append("tensor \(name) has \(t.values.count) values for shape \(describe(t.shape))")
            }
        }
        guard problems.isEmpty else { throw EngineError.file(path: path, message: problems.joined(separator: "; ")) }

        var entries: [(key: String, json: String)] = []
        if !metadata.isEmpty {
            let fields = metadata.keys.sorted(by: codePointOrder).map { jsonString($0) + ":" + jsonString(metadata[$0]!) }
            entries.append(("__metadata__", "{" + fields.joined(separator: ",") + "}"))
        }
        var offset = 0
        for (name, t) in tensors {
            let end = offset + 4 * t.values.count
            let shape = t.shape.map(String.init).joined(separator: ",")
            entries.append((name, "{\"data_offsets\":[\(offset),\(end)],\"dtype\":\"F32\",\"shape\":[\(shape)]}"))
            offset = end
        }
        entries.sort { codePointOrder($0.key, $1.key) }
        var header = Array(("{" + entries.map { jsonString($0.key) + ":" + $0.json }.joined(separator: ",") + "}").utf8)
        header += [UInt8](repeating: 0x20, count: (8 - header.count % 8) % 8)

        var data = Data(capacity: 8 + header.count + offset)
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(contentsOf: header)
        for (_, t) in tensors {
            #if _endian(little)
            t.values.withUnsafeBytes { data.append(contentsOf: $0) }
            #else
            for v in t.values { withUnsafeBytes(of: v.bitPattern.littleEndian) { data.append(contentsOf: $0) } }
            #endif
        }
        return data
    }

    /// Writes `tensors` (F32) and `metadata` to `path` atomically.
    public static func write(_ tensors: [(name: String, tensor: HostTensor)], metadata: [String: String] = [:],
                             to path: String) throws {
        try writeAtomically(try serialize(tensors, metadata: metadata, path: path), to: path)
    }

    /// Reads and validates a safetensors file. Every problem is an `EngineError.file` naming the file.
    public static func read(_ path: String) throws -> SafeTensorsFile {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
        } catch {
            throw EngineError.file(path: path, message: "cannot be read: \(error.localizedDescription)")
        }
        return try parse(data, path: path)
    }

    /// Parses a safetensors file held in memory; `path` names it in errors.
    public static func parse(_ data: Data, path: String) throws -> SafeTensorsFile {
        func fail(_ message: String) -> EngineError { .file(path: path, message: message) }
        guard data.count >= 8 else {
            throw fail("truncated: \(data.count) bytes, too short for the 8-byte header length")
        }
        let headerLength = data.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        guard headerLength <= UInt64(maximumHeaderLength) else {
            throw fail("header length \(headerLength) exceeds the limit of \(maximumHeaderLength) bytes")
        }
        guard 8 + Int(headerLength) <= data.count else {
            throw fail("truncated: the header length \(headerLength) runs past the end of the file (\(data.count) bytes)")
        }
        let dataStart = 8 + Int(headerLength)
        let dataSize = data.count - dataStart
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: data.subdata(in: (data.startIndex + 8)..<(data.startIndex + dataStart)))
        } catch {
            throw fail("the header is not valid JSON (\(error.localizedDescription))")
        }
        guard let header = json as? [String: Any] else { throw fail("the header is not a JSON object") }

        var metadata: [String: String] = [:]
        if let raw = header["__metadata__"] {
            guard let table = raw as? [String: Any] else { throw fail("__metadata__ is not an object") }
            for (k, v) in table {
                guard let s = v as? String else { throw fail("__metadata__ value for \(k) is not a string") }
                metadata[k] = s
            }
        }

        struct Entry { let name: String; let dtype: String; let shape: [Int]; let begin: Int; let end: Int }
        var entries: [Entry] = []
        for (name, raw) in header where name != "__metadata__" {
            guard let fields = raw as? [String: Any] else { throw fail("tensor \(name): entry is not an object") }
            guard let dtype = fields["dtype"] as? String else { throw fail("tensor \(name): dtype is missing or not a string") }
            guard let shape = integers(fields["shape"]), shape.allSatisfy({ $0 >= 0 }) else {
                throw fail("tensor \(name): shape is missing or not a list of non-negative integers")
            }
            guard let offsets = integers(fields["data_offsets"]), offsets.count == 2, offsets[0] >= 0, offsets[0] <= offsets[1] else {
                throw fail("tensor \(name): data_offsets is missing or not [begin, end] with 0 ≤ begin ≤ end")
            }
            guard let itemSize = itemSizes[dtype] else {
                throw fail("tensor \(name) has unsupported dtype \(dtype) (supported: \(itemSizes.keys.sorted().joined(separator: ", ")))")
            }
            let (count, overflow) = shape.reduce((1, false)) { acc, d in
                let (p, o) = acc.0.multipliedReportingOverflow(by: d); return (p, acc.1 || o)
            }
            guard !overflow, count.multipliedReportingOverflow(by: itemSize).overflow == false,
                  count * itemSize == offsets[1] - offsets[0] else {
                throw fail("tensor \(name) of shape \(describe(shape)) (\(dtype)) does not fit its data_offsets [\(offsets[0]), \(offsets[1])] (\(offsets[1] - offsets[0]) bytes)")
            }
            guard offsets[1] <= dataSize else {
                throw fail("tensor \(name): data_offsets [\(offsets[0]), \(offsets[1])] run past the end of the data (\(dataSize) bytes; the file may be truncated)")
            }
            entries.append(Entry(name: name, dtype: dtype, shape: shape, begin: offsets[0], end: offsets[1]))
        }
        entries.sort { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
        for (a, b) in zip(entries, entries.dropFirst()) where b.begin < a.end {
            throw fail("tensors \(a.name) [\(a.begin), \(a.end)] and \(b.name) [\(b.begin), \(b.end)] overlap")
        }

        var tensors: [String: HostTensor] = [:]
        var dtypes: [String: String] = [:]
        data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            for e in entries {
                let bytes = UnsafeRawBufferPointer(rebasing: raw[(dataStart + e.begin)..<(dataStart + e.end)])
                tensors[e.name] = HostTensor(shape: e.shape, values: decode(bytes, dtype: e.dtype))
                dtypes[e.name] = e.dtype
            }
        }
        return SafeTensorsFile(path: path, metadata: metadata, tensors: tensors, names: entries.map(\.name), dtypes: dtypes)
    }

    private static func integers(_ value: Any?) -> [Int]? {
        guard let list = value as? [Any] else { return nil }
        var out: [Int] = []
        for v in list {
            guard !(v is String), let i = v as? Int else { return nil }
            out.append(i)
        }
        return out
    }

    private static func decode(_ bytes: UnsafeRawBufferPointer, dtype: String) -> [Float] {
        func load<T: FixedWidthInteger>(_: T.Type, _ i: Int) -> T {
            T(littleEndian: bytes.loadUnaligned(fromByteOffset: i * MemoryLayout<T>.size, as: T.self))
        }
        let n = bytes.count / itemSizes[dtype]!
        switch dtype {
        case "F32": return (0..<n).map { Float(bitPattern: load(UInt32.self, $0)) }
        case "F64": return (0..<n).map { Float(Double(bitPattern: load(UInt64.self, $0))) }
        case "F16": return (0..<n).map { halfToFloat(load(UInt16.self, $0)) }
        case "BF16": return (0..<n).map { Float(bitPattern: UInt32(load(UInt16.self, $0)) << 16) }
        case "I64": return (0..<n).map { Float(Int64(bitPattern: load(UInt64.self, $0))) }
        default: return (0..<n).map { Float(Int32(bitPattern: load(UInt32.self, $0))) }
        }
    }

    /// IEEE binary16 → binary32 (exact).
    static func halfToFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let exponent = Int((h >> 10) & 0x1F), mantissa = UInt32(h & 0x3FF)
        if exponent == 0x1F { return Float(bitPattern: sign | 0x7F80_0000 | mantissa << 13) }
        if exponent == 0 {
            let magnitude = Float(mantissa) * 0x1p-24 // subnormal (or zero)
            return sign != 0 ? -magnitude : magnitude
        }
        return Float(bitPattern: sign | UInt32(exponent + 112) << 23 | mantissa << 13)
    }

    /// Python's default `sorted` order on strings: by Unicode code points.
    static func codePointOrder(_ a: String, _ b: String) -> Bool {
        a.unicodeScalars.lexicographicallyPrecedes(b.unicodeScalars) { $0.value < $1.value }
    }

    /// A JSON string literal as Python's `json.dumps` (ensure_ascii) writes it.
    static func jsonString(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if scalar.value >= 0x20 && scalar.value < 0x7F {
                    out.unicodeScalars.append(scalar)
                } else {
                    for unit in String(scalar).utf16 { out += "\\u" + String(format: "%04x", unit) }
                }
            }
        }
        return out + "\""
    }
}

/// Writes `data` to a temporary file beside `path`, flushes it and renames it over `path`, so a reader sees
/// either the old file or the complete new one.
func writeAtomically(_ data: Data, to path: String) throws {
    let url = URL(fileURLWithPath: path)
    let temporary = url.deletingLastPathComponent()
        .appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
    do {
        guard FileManager.default.createFile(atPath: temporary, contents: nil),
              let handle = FileHandle(forWritingAtPath: temporary) else {
            throw EngineError.file(path: path, message: "cannot create the temporary file \(temporary)")
        }
        do {
            defer { try? handle.close() }
            try handle.write(contentsOf: data)
            try handle.synchronize()
        }
        guard rename(temporary, path) == 0 else {
            throw EngineError.file(path: path, message: "cannot rename \(temporary) into place: \(String(cString: strerror(errno)))")
        }
    } catch {
        try? FileManager.default.removeItem(atPath: temporary)
        if let engineError = error as? EngineError { throw engineError }
        throw EngineError.file(path: path, message: "cannot be written: \(error.localizedDescription)")
    }
}

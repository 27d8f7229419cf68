/// Errors thrown at the engine's boundaries: evaluating a graph, reading files, initialising devices.
/// Recording an op never throws; an invalid op is remembered in its node and reported by `eval`.
public enum EngineError: Error, CustomStringConvertible, Equatable {
    /// An op was recorded with inputs it cannot take (shapes, axes, parameters).
    case invalidOp(op: String, message: String)
    /// A value check failed at evaluation (NaN/inf in a loss, labels out of range, …).
    case invalidValue(op: String, message: String)
    /// A file could not be read or written, or its contents are malformed.
    case file(path: String, message: String)
    /// A backend or device failed (allocation, kernel build, launch).
    case backend(name: String, message: String)

    public var description: String {
        switch self {
        case let .invalidOp(op, message): return "\(op): \(message)"
        case let .invalidValue(op, message): return "\(op): \(message)"
        case let .file(path, message): return "\(path): \(message)"
        case let .backend(name, message): return "backend \(name): \(message)"
        }
    }
}

/// Thrown by an op's shape rule; the recorder wraps it into `EngineError.invalidOp` with the op's name.
public struct ShapeError: Error {
    public let message: String
    public init(_ message: String) { self.message = message }
}

/// Formats shapes the way error messages show them: `[2, 3, 4]`.
@inlinable public func describe(_ shape: [Int]) -> String { "[" + shape.map(String.init).joined(separator: ", ") + "]" }

/// Shape helpers. Tensors are float32, row-major (contiguous, NCHW for images).
public enum Shape {
    @inlinable public static func count(_ shape: [Int]) -> Int { shape.reduce(1, *) }

    /// Row-major strides in elements.
    @inlinable public static func strides(_ shape: [Int]) -> [Int] {
        var strides = [Int](repeating: 1, count: shape.count)
        var running = 1
        for axis in stride(from: shape.count - 1, through: 0, by: -1) {
            strides[axis] = running
            running *= shape[axis]
        }
        return strides
    }

    /// Resolves a possibly negative axis against a rank, or throws naming the axis and the shape.
    public static func axis(_ axis: Int, rank: Int) throws(ShapeError) -> Int {
        let resolved = axis < 0 ? axis + rank : axis
        guard resolved >= 0, resolved < rank else {
            throw ShapeError("axis \(axis) is out of range for rank \(rank)")
        }
        return resolved
    }

    /// Resolves a list of axes (sorted, unique).
    public static func axes(_ axes: [Int], rank: Int) throws(ShapeError) -> [Int] {
        var resolved: [Int] = []
        for a in axes { resolved.append(try axis(a, rank: rank)) }
        let sorted = Array(Set(resolved)).sorted()
        guard sorted.count == resolved.count else { throw ShapeError("axes \(axes) repeat an axis") }
        return sorted
    }

    /// Broadcast of two shapes of equal rank (each dimension equal, or 1), or either shape a scalar.
    /// Rank-changing broadcasts must be written explicitly (`reshape`/`expand`) so that a [N] + [N, 1] slip
    /// is an error rather than a silent outer sum.
    public static func broadcast(_ a: [Int], _ b: [Int]) throws(ShapeError) -> [Int] {
        if a == b { return a }
        if count(a) == 1 && a.allSatisfy({ $0 == 1 }) && a.count <= b.count { return b }
        if count(b) == 1 && b.allSatisfy({ $0 == 1 }) && b.count <= a.count { return a }
        guard a.count == b.count else {
            throw ShapeError("shapes \(describe(a)) and \(describe(b)) have different ranks; reshape explicitly to broadcast")
        }
        var out = a
        for i in 0..<a.count {
            if a[i] == b[i] { continue }
            if a[i] == 1 { out[i] = b[i] } else if b[i] == 1 { out[i] = a[i] } else {
                throw ShapeError("shapes \(describe(a)) and \(describe(b)) do not broadcast (axis \(i): \(a[i]) vs \(b[i]))")
            }
        }
        return out
    }

    /// Strides for reading `shape` as if broadcast to `target` (0 on broadcast axes). Scalars broadcast to any rank.
    public static func broadcastStrides(_ shape: [Int], to target: [Int]) -> [Int] {
        if count(shape) == 1 { return [Int](repeating: 0, count: target.count) }
        let s = strides(shape)
        return (0..<target.count).map { shape[$0] == target[$0] ? s[$0] : 0 }
    }
}

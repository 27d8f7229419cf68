/// Strided iteration shared by the broadcasting CPU references: the output is walked row-major while each
/// operand is read through its own strides (0 on broadcast axes). Adjacent axes that are contiguous for every
/// operand are merged first, so a per-channel bias over NCHW becomes a short loop nest.
public struct BroadcastWalk {
    public let shape: [Int]
    public let strides: [[Int]]

    public init(output: [Int], operands: [[Int]]) {
        var shape = output
        var strides = operands.map { Shape.broadcastStrides($0, to: output) }
        // Drop size-1 axes, then merge axis i into i+1 when every operand is contiguous across them.
        let keep = shape.indices.filter { shape[$0] != 1 }
        shape = keep.map { shape[$0] }
        strides = strides.map { s in keep.map { s[$0] } }
        var i = shape.count - 2
        while i >= 0 {
            if strides.allSatisfy({ $0[i] == $0[i + 1] * shape[i + 1] }) {
                shape[i] *= shape[i + 1]
                shape.remove(at: i + 1)
                for k in strides.indices { strides[k][i] = strides[k][i + 1]; strides[k].remove(at: i + 1) }
            }
            i -= 1
        }
        if shape.isEmpty { shape = [1]; strides = strides.map { _ in [0] } }
        self.shape = shape
        self.strides = strides
    }

    /// Calls `body(outputStart, operandOffsets, innerCount, innerStrides)` for each run of the innermost axis,
    /// for rows `rows` of the outer index space (parallelisable by row ranges).
    public var rowCount: Int { shape.dropLast().reduce(1, *) }
    public var rowLength: Int { shape.last! }

    @inlinable public func offsets(ofRow row: Int) -> [Int] {
        var rest = row
        var offsets = [Int](repeating: 0, count: strides.count)
        for axis in stride(from: shape.count - 2, through: 0, by: -1) {
            let index = rest % shape[axis]
            rest /= shape[axis]
            for k in strides.indices { offsets[k] += index * strides[k][axis] }
        }
        return offsets
    }

    public func innerStride(_ operand: Int) -> Int { strides[operand].last! }
}

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

    /// A walk with explicit read strides (no merging), e.g. a permutation's.
    public init(shape: [Int], strides: [[Int]]) {
        self.shape = shape.isEmpty ? [1] : shape
        self.strides = shape.isEmpty ? strides.map { _ in [0] } : strides
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

extension BroadcastWalk {
    /// The `Walk` struct of Kernels/common.h: rank, shape[8], stride[3][8] (the project's tensors are at most rank 6
    /// before merging axes).
    public var kernelDescriptor: [Int32] {
        let maxRank = 8
        precondition(shape.count <= maxRank, "broadcast walk of rank \(shape.count) exceeds the kernels' \(maxRank)")
        func padded(_ v: [Int]) -> [Int32] { v.map { Int32($0) } + [Int32](repeating: 0, count: maxRank - v.count) }
        var out: [Int32] = [Int32(shape.count)] + padded(shape)
        for k in 0..<3 { out += padded(k < strides.count ? strides[k] : []) }
        return out
    }
}

/// A launch over `count` elements with a default work-group size.
@inlinable public func elementwiseLaunch(_ file: String, _ name: String, _ args: [KernelArgument], count: Int) -> KernelLaunch {
    .kernel(file: file, name: name, args: args + [.int(Int32(count))], global: [count])
}

// Layout ops: reshape (a view), permute, slice (a view when contiguous), concat.

/// Same elements, new shape (one axis may be -1). Never copies.
public struct Reshape: Operation {
    public let shape: [Int]
    public init(_ shape: [Int]) { self.shape = shape }
    public var name: String { "reshape" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        let total = Shape.count(inputs[0])
        var out = shape
        let unknown = out.indices.filter { out[$0] == -1 }
        guard unknown.count <= 1, out.allSatisfy({ $0 >= -1 }) else { throw ShapeError("invalid target shape \(describe(shape))") }
        if let u = unknown.first {
            let known = out.enumerated().filter { $0.offset != u }.map(\.element).reduce(1, *)
            guard known > 0, total % known == 0 else { throw ShapeError("cannot reshape \(total) elements to \(describe(shape))") }
            out[u] = total / known
        }
        guard Shape.count(out) == total else { throw ShapeError("cannot reshape \(total) elements to \(describe(shape))") }
        return out
    }
    public func cpuForward(_ args: CPUArgs) {}
    public func viewOffset(_ inputs: [[Int]]) -> Int? { 0 }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] { [ctx.cotangent.reshape(ctx.inputs[0].shape)] }
}

/// Axes reordered: output axis i is input axis `permutation[i]`.
public struct Permute: Operation {
    public let permutation: [Int]
    public init(_ permutation: [Int]) { self.permutation = permutation }
    public var name: String { "permute" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        guard permutation.sorted() == Array(0..<inputs[0].count) else {
            throw ShapeError("\(permutation) is not a permutation of the \(inputs[0].count) axes")
        }
        return permutation.map { inputs[0][$0] }
    }
    public func cpuForward(_ args: CPUArgs) {
        let x = args.inputs[0], y = args.output
        let inStrides = Shape.strides(args.inputShapes[0])
        // Walk the output row-major, reading the input through permuted strides.
        let readStrides = permutation.map { inStrides[$0] }
        let shape = args.outputShape
        let n = shape.last ?? 1, sLast = readStrides.last ?? 1
        let rows = shape.count <= 1 ? 1 : shape.dropLast().reduce(1, *)
        parallelFor(rows, grain: max(1, 4096 / max(n, 1))) { range in
            for row in range {
                var rest = row, base = 0
                for axis in stride(from: shape.count - 2, through: 0, by: -1) {
                    base += (rest % shape[axis]) * readStrides[axis]; rest /= shape[axis]
                }
                for j in 0..<n { y[row * n + j] = x[base + j * sLast] }
            }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] {
        var inverse = [Int](repeating: 0, count: permutation.count)
        for (i, p) in permutation.enumerated() { inverse[p] = i }
        return [ctx.cotangent.permute(inverse)]
    }
}

/// Elements start..<end (by step) along one axis. A view when the slice is contiguous in memory.
public struct Slice: Operation {
    public let axis: Int, start: Int, end: Int, step: Int
    public init(axis: Int, start: Int, end: Int, step: Int = 1) { self.axis = axis; self.start = start; self.end = end; self.step = step }
    public var name: String { "slice" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        let a = try Shape.axis(axis, rank: inputs[0].count)
        guard step >= 1, start >= 0, start <= end, end <= inputs[0][a] else {
            throw ShapeError("slice \(start)..<\(end) step \(step) is out of range for axis \(axis) of size \(inputs[0][a])")
        }
        var out = inputs[0]
        out[a] = (end - start + step - 1) / step
        return out
    }
    public func viewOffset(_ inputs: [[Int]]) -> Int? {
        let a = axis < 0 ? axis + inputs[0].count : axis
        guard step == 1 || end - start <= 1, inputs[0][..<a].allSatisfy({ $0 == 1 }) else { return nil }
        return start * Shape.strides(inputs[0])[a]
    }
    public func cpuForward(_ args: CPUArgs) {
        let shape = args.inputShapes[0], a = axis < 0 ? axis + shape.count : axis
        let outer = shape[..<a].reduce(1, *), inner = shape[(a + 1)...].reduce(1, *)
        let n = shape[a], m = args.outputShape[a], x = args.inputs[0], y = args.output
        let start = start, step = step
        parallelFor(outer * m, grain: max(1, 4096 / max(inner, 1))) { range in
            for r in range {
                let o = r / m, j = r % m
                let src = (o * n + start + j * step) * inner
                for k in 0..<inner { y[r * inner + k] = x[src + k] }
            }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] {
        [.record(SliceBackward(axis: axis, start: start, step: step, size: ctx.inputs[0].shape[axis < 0 ? axis + ctx.inputs[0].rank : axis]),
                 [ctx.cotangent])]
    }
}

/// The gradient of `Slice`: scatters dy into zeros of the input's extent along `axis`.
public struct SliceBackward: Operation {
    public let axis: Int, start: Int, step: Int, size: Int
    public var name: String { "slice_backward" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        var out = inputs[0]
        let a = try Shape.axis(axis, rank: out.count)
        guard start + (out[a] - 1) * step < size || out[a] == 0 else { throw ShapeError("slice does not fit in size \(size)") }
        out[a] = size
        return out
    }
    public func cpuForward(_ args: CPUArgs) {
        let shape = args.outputShape, a = axis < 0 ? axis + shape.count : axis
        let outer = shape[..<a].reduce(1, *), inner = shape[(a + 1)...].reduce(1, *)
        let m = args.inputShapes[0][a], dy = args.inputs[0], dx = args.output
        let start = start, step = step, size = size
        dx.update(repeating: 0)
        parallelFor(outer * m, grain: max(1, 4096 / max(inner, 1))) { range in
            for r in range {
                let o = r / m, j = r % m
                let dst = (o * size + start + j * step) * inner
                for k in 0..<inner { dx[dst + k] = dy[r * inner + k] }
            }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] {
        let end = start + (ctx.inputs[0].shape[axis < 0 ? axis + ctx.inputs[0].rank : axis] - 1) * step + 1
        return [ctx.cotangent.slice(axis: axis, start: start, end: end, step: step)]
    }
}

/// Inputs joined along one axis (all other axes equal).
public struct Concat: Operation {
    public let axis: Int
    public init(axis: Int) { self.axis = axis }
    public var name: String { "concat" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        guard let first = inputs.first else { throw ShapeError("concat needs at least one input") }
        let a = try Shape.axis(axis, rank: first.count)
        var out = first
        out[a] = 0
        for s in inputs {
            var t = s; t[a] = 0
            guard s.count == first.count, t == out else {
                throw ShapeError("all inputs must match except on axis \(axis)")
            }
        }
        out[a] = inputs.map { $0[a] }.reduce(0, +)
        return out
    }
    public func cpuForward(_ args: CPUArgs) {
        let shape = args.outputShape, a = axis < 0 ? axis + shape.count : axis
        let outer = shape[..<a].reduce(1, *), inner = shape[(a + 1)...].reduce(1, *)
        let rowOut = shape[a] * inner, y = args.output
        var position = 0
        for (x, s) in zip(args.inputs, args.inputShapes) {
            let rowIn = s[a] * inner, p = position
            parallelFor(outer, grain: max(1, 4096 / max(rowIn, 1))) { range in
                for o in range {
                    for k in 0..<rowIn { y[o * rowOut + p + k] = x[o * rowIn + k] }
                }
            }
            position += rowIn
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] {
        var start = 0
        return ctx.inputs.map { x in
            let n = x.shape[axis < 0 ? axis + x.rank : axis]
            defer { start += n }
            return ctx.cotangent.slice(axis: axis, start: start, end: start + n)
        }
    }
}

extension Tensor {
    public func reshape(_ shape: [Int]) -> Tensor { self.shape == shape ? self : .record(Reshape(shape), [self]) }
    public func flatten() -> Tensor { reshape([-1]) }
    public func permute(_ permutation: [Int]) -> Tensor {
        permutation == Array(0..<rank) ? self : .record(Permute(permutation), [self])
    }
    public func transpose(_ a: Int, _ b: Int) -> Tensor {
        var p = Array(0..<rank)
        let ra = a < 0 ? a + rank : a, rb = b < 0 ? b + rank : b
        guard p.indices.contains(ra), p.indices.contains(rb) else {
            return .invalid("transpose", "axes \(a), \(b) are out of range for shape \(describe(shape))")
        }
        p.swapAt(ra, rb)
        return permute(p)
    }
    public func slice(axis: Int, start: Int, end: Int, step: Int = 1) -> Tensor {
        .record(Slice(axis: axis, start: start, end: end, step: step), [self])
    }
    /// Splits along `axis` into pieces of the given sizes.
    public func split(axis: Int, sizes: [Int]) -> [Tensor] {
        var start = 0
        return sizes.map { n in defer { start += n }; return slice(axis: axis, start: start, end: start + n) }
    }
    /// Splits along `axis` into `count` equal pieces.
    public func chunk(_ count: Int, axis: Int) -> [Tensor] {
        let a = axis < 0 ? axis + rank : axis
        guard shape.indices.contains(a), count > 0, shape[a] % count == 0 else {
            return [.invalid("chunk", "axis \(axis) of shape \(describe(shape)) does not split into \(count) equal parts")]
        }
        let n = shape[a]
        return split(axis: axis, sizes: [Int](repeating: n / Swift.max(count, 1), count: count))
    }
    public static func concat(_ tensors: [Tensor], axis: Int) -> Tensor {
        tensors.count == 1 ? tensors[0] : .record(Concat(axis: axis), tensors)
    }
    /// Joins along a new axis.
    public static func stack(_ tensors: [Tensor], axis: Int = 0) -> Tensor {
        concat(tensors.map { t in
            t.unsqueeze(axis)
        }, axis: axis)
    }
    public func squeeze(_ axis: Int) -> Tensor {
        let a = axis < 0 ? axis + rank : axis
        guard shape.indices.contains(a), shape[a] == 1 else {
            return .invalid("squeeze", "axis \(axis) of shape \(describe(shape)) is not of size 1")
        }
        var s = shape; s.remove(at: a); return reshape(s)
    }
    public func unsqueeze(_ axis: Int) -> Tensor {
        let a = axis < 0 ? axis + rank + 1 : axis
        guard a >= 0, a <= rank else { return .invalid("unsqueeze", "axis \(axis) is out of range for rank \(rank)") }
        var s = shape; s.insert(1, at: a); return reshape(s)
    }
}

extension HarnessCatalog {
    static var layout: [HarnessCase] {
        [
            HarnessCase("reshape", [.normal([2, 3, 4])]) { $0[0].reshape([4, -1]) * 2 },
            HarnessCase("permute", [.normal([2, 3, 4, 5])]) { $0[0].permute([0, 2, 3, 1]) },
            HarnessCase("permute.transpose", [.normal([3, 7])]) { $0[0].transpose(0, 1) },
            HarnessCase("slice.view", [.normal([5, 3, 4])]) { $0[0].slice(axis: 0, start: 1, end: 4) * 3 },
            HarnessCase("slice.inner", [.normal([2, 7, 3])]) { $0[0].slice(axis: 1, start: 2, end: 6) },
            HarnessCase("slice.step", [.normal([2, 9, 3])]) { $0[0].slice(axis: 1, start: 1, end: 8, step: 3) },
            HarnessCase("concat", [.normal([2, 3, 4]), .normal([2, 2, 4]), .normal([2, 1, 4])]) {
                Tensor.concat($0, axis: 1)
            },
            HarnessCase("stack", [.normal([3, 4]), .normal([3, 4])]) { Tensor.stack($0, axis: 1) },
            HarnessCase("chunk", [.normal([2, 6, 3])]) { x in
                let parts = x[0].chunk(3, axis: 1)
                return parts[0] * parts[2] + parts[1]
            },
        ]
    }
}

// MARK: device launches (Kernels/layout.cl)

extension Reshape: DeviceOperation {
    /// Always a view: nothing to launch.
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] { [] }
}

extension StopGradient: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] { [] }
}

extension Permute: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let inStrides = Shape.strides(inputShapes[0])
        let walk = BroadcastWalk(shape: outputShape, strides: [permutation.map { inStrides[$0] }])
        return [elementwiseLaunch("layout", "permute_copy", [.input(0), .output, .ints(walk.kernelDescriptor)],
                                  count: Shape.count(outputShape))]
    }
}

extension Slice: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let shape = inputShapes[0], a = axis < 0 ? axis + shape.count : axis
        let inner = shape[(a + 1)...].reduce(1, *)
        return [elementwiseLaunch("layout", "slice_copy", [.input(0), .output, .int(Int32(shape[a])), .int(Int32(outputShape[a])),
                                                           .int(Int32(inner)), .int(Int32(start)), .int(Int32(step))],
                                  count: Shape.count(outputShape))]
    }
}

extension SliceBackward: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let a = axis < 0 ? axis + outputShape.count : axis
        let inner = outputShape[(a + 1)...].reduce(1, *)
        return [elementwiseLaunch("layout", "slice_backward", [.input(0), .output, .int(Int32(size)), .int(Int32(inputShapes[0][a])),
                                                               .int(Int32(inner)), .int(Int32(start)), .int(Int32(step))],
                                  count: Shape.count(outputShape))]
    }
}

extension Concat: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let a = axis < 0 ? axis + outputShape.count : axis
        let inner = outputShape[(a + 1)...].reduce(1, *)
        var position = 0
        return inputShapes.enumerated().map { k, s in
            defer { position += s[a] * inner }
            return elementwiseLaunch("layout", "concat_part", [.input(k), .output, .int(Int32(s[a] * inner)),
                                                               .int(Int32(outputShape[a] * inner)), .int(Int32(position))],
                                     count: Shape.count(s))
        }
    }
}

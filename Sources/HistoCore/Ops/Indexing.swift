// Indexing: flip, rot90, gather, index_select, one_hot, repeat, and unfold (patch tiling), with the scatter-add
// ops that are their gradients.
//
// Indices are floats holding integers. gather, index_select and one_hot are `ValidatingOperation`s: the executor
// checks their index values before they run and throws `EngineError.invalidValue` naming the first bad value and
// its position, whether the indices are data or computed in the graph.

/// The integer an index value stands for, or nil when it is not an integer in 0..<bound.
@inline(__always) func indexValue(_ v: Float, below bound: Int) -> Int? {
    v >= 0 && v < Float(bound) && v.rounded(.towardZero) == v ? Int(v) : nil
}

/// Row-major coordinates of flat position `i` in `shape`.
func coordinates(of i: Int, in shape: [Int]) -> [Int] {
    var rest = i
    return shape.reversed().map { n in defer { rest /= n }; return rest % n }.reversed()
}

/// nil when every value is an integer in 0..<bound, else a message naming the first bad one and its position.
func badIndexMessage(_ values: UnsafeBufferPointer<Float>, shape: [Int], below bound: Int) -> String? {
    guard let bad = values.firstIndex(where: { indexValue($0, below: bound) == nil }) else { return nil }
    return "index \(values[bad]) at \(describe(coordinates(of: bad, in: shape))) of the index tensor \(describe(shape))"
        + " is not an integer in 0..<\(bound)"
}

extension Gather: ValidatingOperation {
    public func validate(_ inputs: [UnsafeBufferPointer<Float>], shapes: [[Int]]) -> String? {
        badIndexMessage(inputs[1], shape: shapes[1], below: shapes[0][axis < 0 ? axis + shapes[0].count : axis])
    }
}

extension IndexSelect: ValidatingOperation {
    public func validate(_ inputs: [UnsafeBufferPointer<Float>], shapes: [[Int]]) -> String? {
        badIndexMessage(inputs[1], shape: shapes[1], below: shapes[0][axis < 0 ? axis + shapes[0].count : axis])
    }
}

extension OneHot: ValidatingOperation {
    public func validate(_ inputs: [UnsafeBufferPointer<Float>], shapes: [[Int]]) -> String? {
        badIndexMessage(inputs[0], shape: shapes[0], below: classes)
    }
}

/// Reverses the order of elements along `axes`.
public struct Flip: Operation {
    public let axes: [Int]
    public init(axes: [Int]) { self.axes = axes }
    public var name: String { "flip" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        _ = try Shape.axes(axes, rank: inputs[0].count); return inputs[0]
    }
    public func cpuForward(_ args: CPUArgs) {
        let shape = args.outputShape, strides = Shape.strides(shape)
        let flipped = Set(try! Shape.axes(axes, rank: shape.count))
        let n = shape.last ?? 1, rows = n == 0 ? 0 : args.output.count / n
        let lastFlipped = flipped.contains(shape.count - 1)
        let x = args.inputs[0], y = args.output
        parallelFor(rows, grain: Swift.max(1, 4096 / Swift.max(n, 1))) { range in
            for row in range {
                var rest = row, base = 0
                for axis in stride(from: shape.count - 2, through: 0, by: -1) {
                    let i = rest % shape[axis]; rest /= shape[axis]
                    base += (flipped.contains(axis) ? shape[axis] - 1 - i : i) * strides[axis]
                }
                for j in 0..<n { y[row * n + j] = x[base + (lastFlipped ? n - 1 - j : j)] }
            }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] { [ctx.cotangent.flip(axes: axes)] }
}

/// Gather's index space as [outer, m, inner] around `axis`, with the input offset of every outer and inner position
/// (the index may be smaller than the input on the other axes).
struct GatherLayout {
    let outer: Int, m: Int, inner: Int, axisStride: Int, axisSize: Int
    let outerOffset: [Int], innerOffset: [Int]

    init(index: [Int], input: [Int], axis a: Int) {
        let strides = Shape.strides(input)
        func offsets(_ axes: Range<Int>) -> [Int] {
            (0..<Shape.count(Array(index[axes]))).map { p in
                zip(coordinates(of: p, in: Array(index[axes])), strides[axes]).map(*).reduce(0, +)
            }
        }
        outerOffset = offsets(0..<a); innerOffset = offsets((a + 1)..<index.count)
        outer = outerOffset.count; m = index[a]; inner = innerOffset.count
        axisStride = strides[a]; axisSize = input[a]
    }
}

/// torch.gather: out[…, j, …] = x[…, index[…, j, …], …] along `axis`; index has x's rank and at most x's size on the
/// other axes, and gives the output shape.
public struct Gather: Operation {
    public let axis: Int
    public init(axis: Int) { self.axis = axis }
    public var name: String { "gather" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        let x = inputs[0], index = inputs[1]
        let a = try Shape.axis(axis, rank: x.count)
        guard index.count == x.count, index.indices.allSatisfy({ $0 == a || index[$0] <= x[$0] }) else {
            throw ShapeError("index \(describe(index)) must have the rank of x \(describe(x)) and fit it off axis \(axis)")
        }
        return index
    }
    public func cpuForward(_ args: CPUArgs) {
        let layout = GatherLayout(index: args.inputShapes[1], input: args.inputShapes[0], axis: try! Shape.axis(axis, rank: args.outputShape.count))
        let x = args.inputs[0], index = args.inputs[1], y = args.output
        parallelFor(layout.outer * layout.inner, grain: Swift.max(1, 4096 / Swift.max(layout.m, 1))) { range in
            for p in range {
                let o = p / layout.inner, i = p % layout.inner
                let base = layout.outerOffset[o] + layout.innerOffset[i]
                for j in 0..<layout.m {
                    let t = (o * layout.m + j) * layout.inner + i
                    y[t] = indexValue(index[t], below: layout.axisSize).map { x[base + $0 * layout.axisStride] } ?? .nan
                }
            }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] {
        [.record(GatherBackward(axis: axis, inputShape: ctx.inputs[0].shape), [ctx.inputs[1], ctx.cotangent]), nil]
    }
}

/// The gradient of `Gather` from (index, dy): dy scatter-added into zeros of the input's shape.
public struct GatherBackward: Operation {
    public let axis: Int
    public let inputShape: [Int]
    public var name: String { "gather_backward" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        guard inputs[0] == inputs[1], try Gather(axis: axis).outputShape([inputShape, inputs[0]]) == inputs[1] else {
            throw ShapeError("index and dy must have one shape that gathers from \(describe(inputShape))")
        }
        return inputShape
    }
    public func cpuForward(_ args: CPUArgs) {
        let layout = GatherLayout(index: args.inputShapes[0], input: inputShape, axis: try! Shape.axis(axis, rank: inputShape.count))
        let index = args.inputs[0], dy = args.inputs[1], dx = args.output
        dx.update(repeating: 0)
        // Positions that differ off the axis write disjoint elements of dx: they are the unit of parallel work.
        parallelFor(layout.outer * layout.inner, grain: Swift.max(1, 4096 / Swift.max(layout.m, 1))) { range in
            for p in range {
                let o = p / layout.inner, i = p % layout.inner
                let base = layout.outerOffset[o] + layout.innerOffset[i]
                for j in 0..<layout.m {
                    let t = (o * layout.m + j) * layout.inner + i
                    if let k = indexValue(index[t], below: layout.axisSize) { dx[base + k * layout.axisStride] += dy[t] }
                }
            }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] { noGradient(ctx) }
}

/// torch.index_select: the slices of x at `indices` (a vector) along `axis`.
public struct IndexSelect: Operation {
    public let axis: Int
    public init(axis: Int) { self.axis = axis }
    public var name: String { "index_select" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        let a = try Shape.axis(axis, rank: inputs[0].count)
        guard inputs[1].count == 1 else { throw ShapeError("indices must be a vector, got shape \(describe(inputs[1]))") }
        var out = inputs[0]; out[a] = inputs[1][0]; return out
    }
    public func cpuForward(_ args: CPUArgs) {
        let shape = args.inputShapes[0], a = try! Shape.axis(axis, rank: shape.count)
        let (outer, n, inner) = splitAround(shape, first: a, last: a), k = args.inputShapes[1][0]
        let x = args.inputs[0], indices = args.inputs[1], y = args.output
        parallelFor(outer * k, grain: Swift.max(1, 4096 / Swift.max(inner, 1))) { range in
            for r in range {
                let out = r * inner
                guard let i = indexValue(indices[r % k], below: n) else {
                    for c in 0..<inner { y[out + c] = .nan }
                    continue
                }
                let src = ((r / k) * n + i) * inner
                for c in 0..<inner { y[out + c] = x[src + c] }
            }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] {
        let a = axis < 0 ? axis + ctx.inputs[0].rank : axis
        return [.record(IndexSelectBackward(axis: a, size: ctx.inputs[0].shape[a]), [ctx.inputs[1], ctx.cotangent]), nil]
    }
}

/// The gradient of `IndexSelect` from (indices, dy): dy's slices added at their indices into zeros of `size` along
/// `axis` (index_add).
public struct IndexSelectBackward: Operation {
    public let axis: Int, size: Int
    public var name: String { "index_select_backward" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        let a = try Shape.axis(axis, rank: inputs[1].count)
        guard inputs[0].count == 1, inputs[0][0] == inputs[1][a] else {
            throw ShapeError("indices must be a vector as long as axis \(axis) of dy")
        }
        var out = inputs[1]; out[a] = size; return out
    }
    public func cpuForward(_ args: CPUArgs) {
        let shape = args.outputShape, a = try! Shape.axis(axis, rank: shape.count)
        let (outer, n, inner) = splitAround(shape, first: a, last: a), k = args.inputShapes[0][0]
        let indices = args.inputs[0], dy = args.inputs[1], dx = args.output
        dx.update(repeating: 0)
        // Repeated indices add into the same slice, so each outer block is one unit of work.
        parallelFor(outer, grain: Swift.max(1, 4096 / Swift.max(k * inner, 1))) { range in
            for o in range {
                for j in 0..<k {
                    guard let i = indexValue(indices[j], below: n) else { continue }
                    let dst = (o * n + i) * inner, src = (o * k + j) * inner
                    for c in 0..<inner { dx[dst + c] += dy[src + c] }
                }
            }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] { noGradient(ctx) }
}

/// Labels [N, …] to one-hot [N, classes, …]: the class axis is axis 1 (NCHW for label maps [N, H, W]).
/// The executor rejects labels outside 0..<classes before this runs (ValidatingOperation); should one reach the
/// forward anyway, its class column is NaN rather than a silent wrong one-hot.
public struct OneHot: Operation {
    public let classes: Int
    public init(classes: Int) { self.classes = classes }
    public var name: String { "one_hot" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        guard let n = inputs[0].first, classes >= 1 else {
            throw ShapeError("needs labels of rank ≥ 1 and at least one class (classes \(classes))")
        }
        return [n, classes] + inputs[0].dropFirst()
    }
    public func cpuForward(_ args: CPUArgs) {
        let labels = args.inputs[0], y = args.output, classes = classes
        let inner = args.inputShapes[0].dropFirst().reduce(1, *)
        parallelFor(args.inputShapes[0][0] * classes, grain: Swift.max(1, 4096 / Swift.max(inner, 1))) { range in
            for r in range {
                let n = r / classes, c = r % classes
                for i in 0..<inner {
                    y[r * inner + i] = indexValue(labels[n * inner + i], below: classes).map { $0 == c ? 1 : 0 } ?? .nan
                }
            }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] { noGradient(ctx) }
}

/// Patches of NCHW: each kh×kw window at `stride` becomes one [C, kh, kw] item of an [N·L, C, kh, kw] batch, in
/// order (n, patch row, patch column) with L = patch rows × patch columns.
public struct Unfold: Operation {
    public let kernel: [Int], stride: [Int]
    public init(kernel: [Int], stride: [Int]) { self.kernel = kernel; self.stride = stride }
    public var name: String { "unfold" }

    /// Patch rows and columns of an NCHW shape.
    func grid(_ shape: [Int]) throws(ShapeError) -> (rows: Int, cols: Int) {
        guard shape.count == 4, kernel.count == 2, stride.count == 2 else {
            throw ShapeError("needs an NCHW tensor and 2-entry kernel \(kernel) and stride \(stride)")
        }
        guard kernel.allSatisfy({ $0 >= 1 }), stride.allSatisfy({ $0 >= 1 }), kernel[0] <= shape[2], kernel[1] <= shape[3] else {
            throw ShapeError("kernel \(kernel) must be positive and fit the \(shape[2])×\(shape[3]) plane, stride \(stride) positive")
        }
        return ((shape[2] - kernel[0]) / stride[0] + 1, (shape[3] - kernel[1]) / stride[1] + 1)
    }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        let (rows, cols) = try grid(inputs[0])
        return [inputs[0][0] * rows * cols, inputs[0][1], kernel[0], kernel[1]]
    }
    /// Calls `body(input offset, output offset)` for every kernel row of every channel of every patch in
    /// `patches`; the row is `kernel[1]` contiguous elements on both sides.
    func forEachRow(_ shape: [Int], patches: Range<Int>, _ body: (Int, Int) -> Void) {
        let (rows, cols) = try! grid(shape)
        let c = shape[1], h = shape[2], w = shape[3], kh = kernel[0], kw = kernel[1]
        for p in patches {
            let n = p / (rows * cols), pr = p / cols % rows, pc = p % cols
            for ch in 0..<c {
                for i in 0..<kh {
                    body(((n * c + ch) * h + pr * stride[0] + i) * w + pc * stride[1], ((p * c + ch) * kh + i) * kw)
                }
            }
        }
    }
    public func cpuForward(_ args: CPUArgs) {
        let x = args.inputs[0], y = args.output, kw = kernel[1], shape = args.inputShapes[0]
        let patchSize = shape[1] * kernel[0] * kw
        parallelFor(args.outputShape[0], grain: Swift.max(1, 4096 / Swift.max(patchSize, 1))) { range in
            forEachRow(shape, patches: range) { src, dst in for j in 0..<kw { y[dst + j] = x[src + j] } }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] {
        [.record(UnfoldBackward(kernel: kernel, stride: stride, inputShape: ctx.inputs[0].shape), [ctx.cotangent])]
    }
}

/// The gradient of `Unfold` (fold): each patch's dy added back at its window, overlaps summed.
public struct UnfoldBackward: Operation {
    public let kernel: [Int], stride: [Int], inputShape: [Int]
    public var name: String { "unfold_backward" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        guard try Unfold(kernel: kernel, stride: stride).outputShape([inputShape]) == inputs[0] else {
            throw ShapeError("dy is not the patch batch of \(describe(inputShape))")
        }
        return inputShape
    }
    public func cpuForward(_ args: CPUArgs) {
        let unfold = Unfold(kernel: kernel, stride: stride), dy = args.inputs[0], dx = args.output, kw = kernel[1]
        let (rows, cols) = try! unfold.grid(inputShape)
        dx.update(repeating: 0)
        // Overlapping patches of one image add into the same elements: images are the unit of parallel work.
        parallelFor(inputShape[0]) { images in
            for n in images {
                unfold.forEachRow(inputShape, patches: n * rows * cols ..< (n + 1) * rows * cols) { dst, src in
                    for j in 0..<kw { dx[dst + j] += dy[src + j] }
                }
            }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] { noGradient(ctx) }
}

extension Tensor {
    public func flip(axes: [Int]) -> Tensor { axes.isEmpty ? self : .record(Flip(axes: axes), [self]) }

    /// torch.rot90: k quarter turns in the plane of `axes`, k = 1 turning from the first axis towards the second.
    public func rot90(k: Int = 1, axes: (Int, Int) = (0, 1)) -> Tensor {
        if node.error != nil { return self }
        let a = axes.0 < 0 ? axes.0 + rank : axes.0, b = axes.1 < 0 ? axes.1 + rank : axes.1
        guard a != b, (0..<rank).contains(a), (0..<rank).contains(b) else {
            return .invalid("rot90", "axes \(axes) must be two different axes of shape \(describe(shape))")
        }
        switch (k % 4 + 4) % 4 {
        case 1: return flip(axes: [b]).transpose(a, b)
        case 2: return flip(axes: [a, b])
        case 3: return flip(axes: [a]).transpose(a, b)
        default: return self
        }
    }

    /// torch.gather along `axis`. Index values must be integers in 0..<size of that axis (see the file header for
    /// how bad ones are reported).
    public func gather(axis: Int, index: Tensor) -> Tensor { .record(Gather(axis: axis), [self, index]) }

    /// torch.index_select: slices at `indices` (a vector of integers in 0..<size of `axis`) along `axis`.
    public func indexSelect(axis: Int, indices: Tensor) -> Tensor { .record(IndexSelect(axis: axis), [self, indices]) }

    /// One-hot encoding of integer labels [N, …] as [N, classes, …] (class axis 1). No gradient. Labels outside
    /// 0..<classes are an error at `eval` (see the file header).
    public func oneHot(classes: Int) -> Tensor { .record(OneHot(classes: classes), [self]) }

    /// torch.Tensor.repeat: tiles the tensor `times[i]` times along axis i; extra leading entries add axes.
    public func `repeat`(_ times: [Int]) -> Tensor {
        if node.error != nil { return self }
        guard times.count >= rank, times.allSatisfy({ $0 >= 0 }) else {
            return .invalid("repeat", "repeats \(times) must be non-negative, one per axis of shape \(describe(shape)) or more")
        }
        // Each axis becomes [times, size]: a new broadcast axis in front of it, expanded and merged.
        let sizes = [Int](repeating: 1, count: times.count - rank) + shape
        return reshape(sizes.flatMap { [1, $0] })
            .expand(zip(times, sizes).flatMap { [$0, $1] })
            .reshape(zip(times, sizes).map { $0 * $1 })
    }

    /// Patches of NCHW as an [N·L, C, kh, kw] batch (see `Unfold`).
    public func unfold(kernel: [Int], stride: [Int]) -> Tensor { .record(Unfold(kernel: kernel, stride: stride), [self]) }
}

extension HarnessCatalog {
    static var indexing: [HarnessCase] {
        [
            HarnessCase("flip", [.normal([2, 3, 4, 5])]) { $0[0].flip(axes: [1, 3]) },
            HarnessCase("flip.last", [.normal([3, 7])]) { $0[0].flip(axes: [-1]) },
            HarnessCase("flip.leading", [.normal([4, 3, 5])]) { $0[0].flip(axes: [0, 1]) },
            HarnessCase("rot90", [.normal([2, 3, 4, 5])]) { $0[0].rot90(k: 1, axes: (2, 3)) },
            HarnessCase("rot90.k2", [.normal([2, 3, 4, 5])]) { $0[0].rot90(k: 2, axes: (2, 3)) },
            HarnessCase("rot90.k3", [.normal([2, 3, 4, 5])]) { $0[0].rot90(k: 3, axes: (-2, -1)) },
            HarnessCase("rot90.negative", [.normal([3, 4, 5])]) { $0[0].rot90(k: -1, axes: (2, 0)) },
            HarnessCase("gather", [.normal([3, 5, 4]), .integers([3, 6, 4], 0, 5)]) { $0[0].gather(axis: 1, index: $0[1]) },
            HarnessCase("gather.last", [.normal([3, 4, 6]), .integers([2, 4, 3], 0, 6)]) { $0[0].gather(axis: -1, index: $0[1]) },
            HarnessCase("gather.first", [.normal([4, 5]), .integers([6, 3], 0, 4)]) { $0[0].gather(axis: 0, index: $0[1]) },
            HarnessCase("index_select.schedule", [.uniform([10], 0.01, 1), .integers([4], 0, 10)]) {
                $0[0].indexSelect(axis: 0, indices: $0[1])
            },
            // Swin's relative position bias: a [(2w−1)², heads] table read at a [w²·w²] index (w = 2).
            HarnessCase("index_select.relative_bias", [.normal([9, 3]), .integers([16], 0, 9)]) {
                $0[0].indexSelect(axis: 0, indices: $0[1]).reshape([4, 4, 3]).permute([2, 0, 1])
            },
            HarnessCase("index_select.middle", [.normal([2, 5, 3]), .integers([7], 0, 5)]) { $0[0].indexSelect(axis: 1, indices: $0[1]) },
            HarnessCase("one_hot", [.integers([2, 5, 7], 0, 4)]) { $0[0].oneHot(classes: 4) },
            HarnessCase("one_hot.vector", [.integers([6], 0, 3)]) { $0[0].oneHot(classes: 3) },
            HarnessCase("repeat", [.normal([2, 3, 4])]) { $0[0].repeat([2, 1, 3]) },
            HarnessCase("repeat.new_axes", [.normal([3, 4])]) { $0[0].repeat([2, 1, 2]) },
            HarnessCase("unfold.tiles", [.normal([2, 2, 4, 6])]) { $0[0].unfold(kernel: [2, 3], stride: [2, 3]) },
            HarnessCase("unfold.overlapping", [.normal([1, 2, 5, 7])]) { $0[0].unfold(kernel: [3, 3], stride: [2, 2]) },
        ]
    }
}

// MARK: device launches (Kernels/indexing.cl)

extension Flip: DeviceOperation {
    /// A strided copy: negative strides on the flipped axes, starting from their last element.
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let shape = inputShapes[0]
        var strides = Shape.strides(shape), start = 0
        for a in Set(try! Shape.axes(axes, rank: shape.count)) {
            start += (shape[a] - 1) * strides[a]
            strides[a] = -strides[a]
        }
        let walk = BroadcastWalk(shape: shape, strides: [strides])
        return [elementwiseLaunch("indexing", "flip_copy", [.input(0), .output, .ints(walk.kernelDescriptor), .int(Int32(start))],
                                  count: Shape.count(shape))]
    }
}

/// The `GatherWalk` struct of Kernels/indexing.cl: coordinates over `shape` address a contiguous tensor of shape
/// `other` through its strides; `axis` is gather's.
func gatherWalk(shape: [Int], other: [Int], axis: Int) -> [Int32] {
    let maxRank = 8
    precondition(shape.count <= maxRank, "gather of rank \(shape.count) exceeds the kernels' \(maxRank)")
    func padded(_ v: [Int]) -> [Int] { v + [Int](repeating: 0, count: maxRank - v.count) }
    return ([shape.count, axis] + padded(shape) + padded(Shape.strides(other)) + padded(other)).map { Int32($0) }
}

extension Gather: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let walk = gatherWalk(shape: outputShape, other: inputShapes[0], axis: try! Shape.axis(axis, rank: outputShape.count))
        return [elementwiseLaunch("indexing", "gather", [.input(0), .input(1), .output, .ints(walk)], count: Shape.count(outputShape))]
    }
}

extension GatherBackward: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let walk = gatherWalk(shape: outputShape, other: inputShapes[0], axis: try! Shape.axis(axis, rank: outputShape.count))
        return [elementwiseLaunch("indexing", "gather_backward", [.input(0), .input(1), .output, .ints(walk)],
                                  count: Shape.count(outputShape))]
    }
}

extension IndexSelect: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let shape = inputShapes[0], a = try! Shape.axis(axis, rank: shape.count)
        let (_, size, inner) = splitAround(shape, first: a, last: a)
        let sizes = [size, inputShapes[1][0], inner].map { KernelArgument.int(Int32($0)) }
        return [elementwiseLaunch("indexing", "index_select", [.input(0), .input(1), .output] + sizes, count: Shape.count(outputShape))]
    }
}

extension IndexSelectBackward: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let a = try! Shape.axis(axis, rank: outputShape.count)
        let (_, size, inner) = splitAround(outputShape, first: a, last: a)
        let sizes = [size, inputShapes[0][0], inner].map { KernelArgument.int(Int32($0)) }
        return [elementwiseLaunch("indexing", "index_select_backward", [.input(0), .input(1), .output] + sizes,
                                  count: Shape.count(outputShape))]
    }
}

extension OneHot: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let inner = inputShapes[0].dropFirst().reduce(1, *)
        return [elementwiseLaunch("indexing", "one_hot", [.input(0), .output, .int(Int32(classes)), .int(Int32(inner))],
                                  count: Shape.count(outputShape))]
    }
}

extension Unfold {
    /// The `PatchGrid` struct of Kernels/indexing.cl for NCHW `shape`.
    func patchGrid(_ shape: [Int]) -> [Int32] {
        let (rows, cols) = try! grid(shape)
        return [shape[1], shape[2], shape[3], rows, cols, kernel[0], kernel[1], stride[0], stride[1]].map { Int32($0) }
    }
}

extension Unfold: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        [elementwiseLaunch("indexing", "unfold", [.input(0), .output, .ints(patchGrid(inputShapes[0]))], count: Shape.count(outputShape))]
    }
}

extension UnfoldBackward: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let grid = Unfold(kernel: kernel, stride: stride).patchGrid(inputShape)
        return [elementwiseLaunch("indexing", "unfold_backward", [.input(0), .output, .ints(grid)], count: Shape.count(outputShape))]
    }
}

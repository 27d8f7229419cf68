// Resampling over the last two axes (NCHW images): bilinear, nearest and area interpolation, adaptive and fixed
// average pooling, padding, and max pooling, each with PyTorch's index arithmetic.
//
// Everything but max pooling is a separable linear map y = R·x·Cᵀ per plane with sparse R and C, so it is one op,
// `Resample`, whose row and column taps the API builds from the input's size; its VJP is the same op with the
// taps transposed (and so on for higher derivatives). Max pooling has its own op and a backward op.

/// One axis of a separable resampling: output o is Σ weight[t]·input[index[t]] over t in offsets[o]..<offsets[o + 1].
/// The taps are those of a forward map given by a `Rule` and its sizes, or of that map's adjoint (as a VJP needs),
/// so a device recomputes them from the same formulas instead of receiving the tables.
public struct AxisTaps: Sendable {
    /// How each output of the forward map reads its input, with PyTorch's index arithmetic.
    public enum Rule: Sendable {
        /// Linear interpolation as upsample_bilinear2d: source o·scale with align corners (the corner pixels map
        /// onto each other), else pixel centres align: (o + ½)·scale − ½, clamped at 0. Taps at floor and floor + 1.
        case linear(scale: Float, alignCorners: Bool)
        /// PyTorch's 'nearest': source floor(o·scale), with the ratio and product in float32 as PyTorch does.
        case nearest(scale: Float)
        /// Adaptive average pooling: output o averages floor(o·in/out) ..< ceil((o + 1)·in/out).
        case adaptive
        /// Average pooling over clipped windows (`poolWindow`); the divisor is the kernel when padding counts, else
        /// the clipped size.
        case average(kernel: Int, stride: Int, before: Int, countPadding: Bool)
        /// Padding: zero leaves the border without taps, replicate repeats the edge, reflect mirrors about it
        /// (PyTorch's 'reflect', edge not repeated).
        case padding(before: Int, mode: PadMode)

        /// The (input index, weight) taps of forward output o from `input` elements.
        func taps(_ o: Int, input: Int, output: Int) -> [(Int, Float)] {
            switch self {
            case let .linear(scale, alignCorners):
                let source = alignCorners ? Float(o) * scale : Swift.max((Float(o) + 0.5) * scale - 0.5, 0)
                let lo = Swift.min(Int(source), input - 1), hi = Swift.min(lo + 1, input - 1)
                let t = Swift.min(Swift.max(source - Float(lo), 0), 1)
                return [(lo, 1 - t), (hi, t)]
            case let .nearest(scale):
                return [(Swift.min(Int((Float(o) * scale).rounded(.down)), input - 1), 1)]
            case .adaptive:
                let lo = o * input / output, hi = ((o + 1) * input + output - 1) / output
                return (lo..<hi).map { ($0, 1 / Float(hi - lo)) }
            case let .average(kernel, stride, before, countPadding):
                let window = poolWindow(o, input: input, kernel: kernel, stride: stride, before: before)
                return window.map { ($0, 1 / Float(countPadding ? kernel : window.count)) }
            case let .padding(before, mode):
                let i = o - before
                if i >= 0 && i < input { return [(i, 1)] }
                switch mode {
                case .zero: return []
                case .replicate: return [(Swift.min(Swift.max(i, 0), input - 1), 1)]
                case .reflect: return [(i < 0 ? -i : 2 * (input - 1) - i, 1)]
                }
            }
        }
    }

    public let rule: Rule
    /// The forward map's input and output sizes.
    public let mapInput: Int, mapOutput: Int
    /// Whether these are the adjoint taps: input i of the forward map collects, in output order, the weight of
    /// every output that reads it.
    public let isAdjoint: Bool
    public let offsets: [Int]
    public let index: [Int]
    public let weight: [Float]
    public var inputSize: Int { isAdjoint ? mapOutput : mapInput }
    public var outputSize: Int { offsets.count - 1 }

    init(_ rule: Rule, from input: Int, to output: Int, adjoint: Bool = false) {
        var lists = (0..<output).map { rule.taps($0, input: input, output: output) }
        if adjoint {
            var readers = [[(Int, Float)]](repeating: [], count: input)
            for (o, taps) in lists.enumerated() { for (i, w) in taps { readers[i].append((o, w)) } }
            lists = readers
        }
        var offsets = [0]
        for taps in lists { offsets.append(offsets.last! + taps.count) }
        self.rule = rule; mapInput = input; mapOutput = output; isAdjoint = adjoint
        self.offsets = offsets; index = lists.flatMap { $0.map(\.0) }; weight = lists.flatMap { $0.map(\.1) }
    }

    /// The adjoint map (the adjoint of the adjoint is the forward map: its taps are listed in index order).
    public var transposed: AxisTaps { AxisTaps(rule, from: mapInput, to: mapOutput, adjoint: !isAdjoint) }

    static func linear(from input: Int, to output: Int, alignCorners: Bool) -> AxisTaps {
        let scale: Float = alignCorners ? (output > 1 ? Float(input - 1) / Float(output - 1) : 0) : Float(input) / Float(output)
        return AxisTaps(.linear(scale: scale, alignCorners: alignCorners), from: input, to: output)
    }
    static func nearest(from input: Int, to output: Int) -> AxisTaps {
        AxisTaps(.nearest(scale: Float(input) / Float(output)), from: input, to: output)
    }
    static func adaptive(from input: Int, to output: Int) -> AxisTaps { AxisTaps(.adaptive, from: input, to: output) }
    static func padding(from input: Int, before: Int, after: Int, mode: PadMode) -> AxisTaps {
        AxisTaps(.padding(before: before, mode: mode), from: input, to: input + before + after)
    }
}

/// y = R·x·Cᵀ over the last two axes: each output element sums its row taps times its column taps.
public struct Resample: Operation {
    public let rows: AxisTaps
    public let cols: AxisTaps
    public init(rows: AxisTaps, cols: AxisTaps) { self.rows = rows; self.cols = cols }
    public var name: String { "resample" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        let s = inputs[0]
        guard s.count >= 2, s[s.count - 2] == rows.inputSize, s[s.count - 1] == cols.inputSize else {
            throw ShapeError("resampling reads \(rows.inputSize)×\(cols.inputSize) planes")
        }
        return s.dropLast(2) + [rows.outputSize, cols.outputSize]
    }
    public func cpuForward(_ args: CPUArgs) {
        let shape = args.inputShapes[0], w = cols.inputSize, planeSize = rows.inputSize * w
        let planes = Shape.count(Array(shape.dropLast(2)))
        let outH = rows.outputSize, outW = cols.outputSize
        let x = args.inputs[0].baseAddress!, y = args.output.baseAddress!, rows = rows, cols = cols
        // Separable: an output row's input rows are combined first (whole rows, vectorised; one row with weight 1 is
        // read in place), then resampled along the row.
        parallelFor(planes * outH, grain: Swift.max(1, 4096 / Swift.max(outW, 1))) { range in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: w) { buffer in
                let combined = buffer.baseAddress!
                for r in range {
                    let plane = x + (r / outH) * planeSize, oh = r % outH
                    let taps = rows.offsets[oh]..<rows.offsets[oh + 1]
                    let source: UnsafePointer<Float>
                    if taps.count == 1 && rows.weight[taps.lowerBound] == 1 {
                        source = plane + rows.index[taps.lowerBound] * w
                    } else {
                        combined.update(repeating: 0, count: w)
                        for a in taps { axpy(w, rows.weight[a], plane + rows.index[a] * w, 1, combined, 1) }
                        source = UnsafePointer(combined)
                    }
                    let out = y + r * outW
                    for ow in 0..<outW {
                        var sum: Float = 0
                        for b in cols.offsets[ow]..<cols.offsets[ow + 1] {
                            sum += cols.weight[b] * source[cols.index[b]]
                        }
                        out[ow] = sum
                    }
                }
            }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] {
        [.record(Resample(rows: rows.transposed, cols: cols.transposed), [ctx.cotangent])]
    }
}

/// The input window of each output along one pooling axis, clipped to the input. Output o covers
/// o·stride − before ..< +kernel of the padded axis; PyTorch's limits apply (padding at most half the kernel, so
/// every window holds an input element).
func poolWindows(input: Int, kernel: Int, stride: Int, before: Int, after: Int, axis: String) throws(ShapeError) -> [Range<Int>] {
    guard input >= 1 else { throw ShapeError("\(axis): the input is empty") }
    guard kernel >= 1, stride >= 1, before >= 0, after >= 0 else {
        throw ShapeError("\(axis): kernel \(kernel) and stride \(stride) must be positive, padding \(before), \(after) non-negative")
    }
    guard before <= kernel / 2, after <= kernel / 2 else {
        throw ShapeError("\(axis): padding \(before), \(after) exceeds half the kernel \(kernel)")
    }
    guard input + before + after >= kernel else {
        throw ShapeError("\(axis): kernel \(kernel) is larger than the padded input \(input) + \(before) + \(after)")
    }
    return (0...((input + before + after - kernel) / stride)).map {
        poolWindow($0, input: input, kernel: kernel, stride: stride, before: before)
    }
}

/// Window o of a pooling axis: o·stride − before ..< +kernel of the padded axis, clipped to the input.
func poolWindow(_ o: Int, input: Int, kernel: Int, stride: Int, before: Int) -> Range<Int> {
    let lo = o * stride - before
    return Swift.max(lo, 0)..<Swift.min(lo + kernel, input)
}

/// Windows of a 2-D pooling of an NCHW shape; padding is [top, bottom, left, right].
func poolWindows(_ shape: [Int], kernel: [Int], stride: [Int], padding: [Int]) throws(ShapeError) -> (rows: [Range<Int>], cols: [Range<Int>]) {
    guard shape.count == 4 else { throw ShapeError("expects an NCHW tensor, got shape \(describe(shape))") }
    guard kernel.count == 2, stride.count == 2, padding.count == 4 else {
        throw ShapeError("kernel \(kernel) and stride \(stride) need 2 entries, padding \(padding) 4 (top, bottom, left, right)")
    }
    return (try poolWindows(input: shape[2], kernel: kernel[0], stride: stride[0], before: padding[0], after: padding[1], axis: "height"),
            try poolWindows(input: shape[3], kernel: kernel[1], stride: stride[1], before: padding[2], after: padding[3], axis: "width"))
}

/// In-plane offset of a window's maximum as PyTorch picks it: the first largest, or the last NaN.
@inline(__always) func windowArgmax(_ plane: UnsafeBufferPointer<Float>.SubSequence, width: Int, rows: Range<Int>, cols: Range<Int>) -> Int {
    let base = plane.startIndex
    var best = rows.lowerBound * width + cols.lowerBound, m = -Float.infinity
    for i in rows {
        for j in cols {
            let v = plane[base + i * width + j]
            if v > m || v.isNaN { m = v; best = i * width + j }
        }
    }
    return best
}

/// 2-D max pooling (padding is −∞), output size floor((in + pads − kernel) / stride) + 1.
public struct MaxPool2d: Operation {
    public let kernel: [Int], stride: [Int], padding: [Int]
    public init(kernel: [Int], stride: [Int], padding: [Int]) { self.kernel = kernel; self.stride = stride; self.padding = padding }
    public var name: String { "max_pool2d" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        let (rows, cols) = try poolWindows(inputs[0], kernel: kernel, stride: stride, padding: padding)
        return [inputs[0][0], inputs[0][1], rows.count, cols.count]
    }
    public func cpuForward(_ args: CPUArgs) {
        let shape = args.inputShapes[0], (rows, cols) = try! poolWindows(shape, kernel: kernel, stride: stride, padding: padding)
        let h = shape[2], w = shape[3], outH = rows.count, outW = cols.count
        let x = args.inputs[0], y = args.output
        parallelFor(shape[0] * shape[1] * outH, grain: Swift.max(1, 1024 / outW)) { range in
            for r in range {
                let plane = x[(r / outH) * h * w ..< (r / outH + 1) * h * w], oh = r % outH
                for ow in 0..<outW {
                    y[r * outW + ow] = plane[plane.startIndex + windowArgmax(plane, width: w, rows: rows[oh], cols: cols[ow])]
                }
            }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] {
        [.record(MaxPool2dBackward(kernel: kernel, stride: stride, padding: padding), [ctx.inputs[0], ctx.cotangent])]
    }
}

/// The gradient of `MaxPool2d` from (x, dy): each dy goes to its window's argmax (recomputed from x).
public struct MaxPool2dBackward: Operation {
    public let kernel: [Int], stride: [Int], padding: [Int]
    public var name: String { "max_pool2d_backward" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        guard try MaxPool2d(kernel: kernel, stride: stride, padding: padding).outputShape([inputs[0]]) == inputs[1] else {
            throw ShapeError("dy does not have the pooled shape of x")
        }
        return inputs[0]
    }
    public func cpuForward(_ args: CPUArgs) {
        let shape = args.inputShapes[0], (rows, cols) = try! poolWindows(shape, kernel: kernel, stride: stride, padding: padding)
        let h = shape[2], w = shape[3], outH = rows.count, outW = cols.count
        let x = args.inputs[0], dy = args.inputs[1], dx = args.output
        dx.update(repeating: 0)
        // Windows overlap within a plane, so planes are the unit of parallel work.
        parallelFor(shape[0] * shape[1], grain: Swift.max(1, 4096 / Swift.max(h * w, 1))) { range in
            for p in range {
                let plane = x[p * h * w ..< (p + 1) * h * w]
                for oh in 0..<outH {
                    for ow in 0..<outW {
                        dx[p * h * w + windowArgmax(plane, width: w, rows: rows[oh], cols: cols[ow])] += dy[(p * outH + oh) * outW + ow]
                    }
                }
            }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] { noGradient(ctx) }
}

/// How `pad` fills the border. `.zero` is a constant pad (with `value`, 0 by default); `.reflect` mirrors about the
/// edge without repeating it (pad < size); `.replicate` repeats the edge.
public enum PadMode: String, Sendable { case zero, reflect, replicate }

extension Tensor {
    /// Records the resampling whose taps `build` makes from this tensor's height and width, or the reason it cannot
    /// (reported by `eval` under `op`). `planar` accepts any tensor of rank ≥ 2 instead of NCHW only.
    func resampled(_ op: String, planar: Bool = false,
                   _ build: (_ height: Int, _ width: Int) throws(ShapeError) -> (AxisTaps, AxisTaps)) -> Tensor {
        if node.error != nil { return self }
        guard planar ? rank >= 2 : rank == 4 && shape[2] >= 1 && shape[3] >= 1 else {
            return .invalid(op, "expects \(planar ? "a tensor of rank ≥ 2" : "an NCHW tensor with a non-empty plane"), got shape \(describe(shape))")
        }
        do {
            let (rows, cols) = try build(shape[rank - 2], shape[rank - 1])
            return .record(Resample(rows: rows, cols: cols), [self])
        } catch {
            return .invalid(op, "\(error.message) (input shape \(describe(shape)))")
        }
    }

    /// An output size [height, width] of positive entries.
    static func checkSize(_ size: [Int]) throws(ShapeError) {
        guard size.count == 2, size.allSatisfy({ $0 >= 1 }) else { throw ShapeError("output size \(size) must be [height, width], both positive") }
    }
    /// This NCHW tensor's spatial size times `scale`.
    func scaledSize(_ scale: Int) -> [Int] { rank == 4 ? [shape[2] * scale, shape[3] * scale] : [] }

    /// Bilinear resize of NCHW to `size` [height, width] (F.interpolate mode 'bilinear').
    public func interpolateBilinear(size: [Int], alignCorners: Bool) -> Tensor {
        resampled("interpolate_bilinear") { h, w throws(ShapeError) in
            try Tensor.checkSize(size)
            return (.linear(from: h, to: size[0], alignCorners: alignCorners), .linear(from: w, to: size[1], alignCorners: alignCorners))
        }
    }
    /// Bilinear resize by an integer factor: the same as `size` = input size × `scale`.
    public func interpolateBilinear(scale: Int, alignCorners: Bool) -> Tensor {
        interpolateBilinear(size: scaledSize(scale), alignCorners: alignCorners)
    }
    /// Nearest resize of NCHW to `size` (F.interpolate mode 'nearest': source floor(o·in/out)).
    public func interpolateNearest(size: [Int]) -> Tensor {
        resampled("interpolate_nearest") { h, w throws(ShapeError) in
            try Tensor.checkSize(size)
            return (.nearest(from: h, to: size[0]), .nearest(from: w, to: size[1]))
        }
    }
    public func interpolateNearest(scale: Int) -> Tensor { interpolateNearest(size: scaledSize(scale)) }
    /// Area resize (F.interpolate mode 'area'), which is adaptive average pooling.
    public func interpolateArea(size: [Int]) -> Tensor { adaptiveAvgPool2d(size: size) }
    /// Adaptive average pooling of NCHW to `size` (F.adaptive_avg_pool2d).
    public func adaptiveAvgPool2d(size: [Int]) -> Tensor {
        resampled("adaptive_avg_pool2d") { h, w throws(ShapeError) in
            try Tensor.checkSize(size)
            return (.adaptive(from: h, to: size[0]), .adaptive(from: w, to: size[1]))
        }
    }
    /// Mean over height and width of NCHW, kept as [N, C, 1, 1].
    public func globalAvgPool2d() -> Tensor {
        if node.error != nil { return self }
        guard rank == 4 else { return .invalid("global_avg_pool2d", "expects an NCHW tensor, got shape \(describe(shape))") }
        return mean(axes: [2, 3], keepDims: true)
    }

    /// 2-D max pooling of NCHW (F.max_pool2d); `stride` defaults to the kernel, `padding` is [top, bottom, left,
    /// right] of −∞, each at most half the kernel.
    public func maxPool2d(kernel: [Int], stride: [Int]? = nil, padding: [Int] = [0, 0, 0, 0]) -> Tensor {
        .record(MaxPool2d(kernel: kernel, stride: stride ?? kernel, padding: padding), [self])
    }
    /// 2-D average pooling of NCHW (F.avg_pool2d); `padding` is [top, bottom, left, right] of zeros, each at most
    /// half the kernel; `countIncludePad` divides by the whole kernel, else by the input elements in the window.
    public func avgPool2d(kernel: [Int], stride: [Int]? = nil, padding: [Int] = [0, 0, 0, 0], countIncludePad: Bool = true) -> Tensor {
        resampled("avg_pool2d") { _, _ throws(ShapeError) in
            let stride = stride ?? kernel
            let (rows, cols) = try poolWindows(shape, kernel: kernel, stride: stride, padding: padding)
            func average(_ axis: Int) -> AxisTaps.Rule {
                .average(kernel: kernel[axis], stride: stride[axis], before: padding[2 * axis], countPadding: countIncludePad)
            }
            return (AxisTaps(average(0), from: shape[2], to: rows.count), AxisTaps(average(1), from: shape[3], to: cols.count))
        }
    }

    /// Pads the last two axes by `pads` = [top, bottom, left, right] (F.pad with (left, right, top, bottom)).
    /// `value` is the constant of `.zero` mode; `.reflect` needs each pad smaller than its axis.
    public func pad(_ pads: [Int], mode: PadMode = .zero, value: Float = 0) -> Tensor {
        let padded = resampled("pad", planar: true) { h, w throws(ShapeError) in
            guard pads.count == 4, pads.allSatisfy({ $0 >= 0 }) else {
                throw ShapeError("pads \(pads) must be 4 non-negative sizes (top, bottom, left, right)")
            }
            guard mode != .reflect || (pads[0] < h && pads[1] < h && pads[2] < w && pads[3] < w) else {
                throw ShapeError("reflect pads \(pads) must be smaller than the padded axes \(h)×\(w)")
            }
            guard mode != .replicate || h * w > 0 else { throw ShapeError("cannot replicate the edge of an empty plane") }
            return (.padding(from: h, before: pads[0], after: pads[1], mode: mode), .padding(from: w, before: pads[2], after: pads[3], mode: mode))
        }
        guard value != 0, padded.node.error == nil else { return padded }
        guard mode == .zero else { return .invalid("pad", "a fill value applies to .zero mode only, not .\(mode.rawValue)") }
        // The constant border: a leaf holding `value` outside the interior, added to the zero-padded tensor.
        let outH = padded.shape[rank - 2], outW = padded.shape[rank - 1]
        var border = [Float](repeating: value, count: outH * outW)
        for i in pads[0]..<(outH - pads[1]) { for j in pads[2]..<(outW - pads[3]) { border[i * outW + j] = 0 } }
        return padded + Tensor(border, shape: [Int](repeating: 1, count: rank - 2) + [outH, outW])
    }
}

// MARK: device launches (Kernels/resample.cl)

extension AxisTaps {
    /// The most taps of any output: the row width of the device's tap table.
    var width: Int { zip(offsets.dropFirst(), offsets).map { $0 - $1 }.max() ?? 0 }

    /// The `AxisRule` struct of Kernels/resample.cl (kind, forward sizes, adjoint flag, width, four parameters) and
    /// the scale of the linear and nearest rules.
    var kernelRule: (fields: [Int32], scale: Float) {
        let kind: Int, parameters: [Int], scale: Float
        switch rule {
        case let .linear(s, alignCorners): (kind, parameters, scale) = (0, [alignCorners ? 1 : 0], s)
        case let .nearest(s): (kind, parameters, scale) = (1, [], s)
        case .adaptive: (kind, parameters, scale) = (2, [], 0)
        case let .average(kernel, stride, before, countPadding):
            (kind, parameters, scale) = (3, [kernel, stride, before, countPadding ? 1 : 0], 0)
        case let .padding(before, mode):
            (kind, parameters, scale) = (4, [before, mode == .zero ? 0 : mode == .reflect ? 1 : 2], 0)
        }
        let fields = [kind, mapInput, mapOutput, isAdjoint ? 1 : 0, width] + parameters + [Int](repeating: 0, count: 4 - parameters.count)
        return (fields.map { Int32($0) }, scale)
    }
}

extension Resample: DeviceOperation {
    /// Builds both axes' tap tables in scratch from their rules (a few KB, not uploaded), then applies them.
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let shape = inputShapes[0]
        let tables = [rows, cols].enumerated().map { k, taps in
            (taps, KernelArgument.scratch(index: k, count: taps.outputSize * (1 + 2 * taps.width)))
        }
        let build = tables.map { taps, table in
            let (fields, scale) = taps.kernelRule
            return elementwiseLaunch("resample", "resample_taps", [table, .ints(fields), .float(scale)], count: taps.outputSize)
        }
        let sizes = [shape[shape.count - 2], shape[shape.count - 1], rows.outputSize, cols.outputSize, rows.width, cols.width]
        return build + [elementwiseLaunch("resample", "resample_apply", [.input(0), .output, tables[0].1, tables[1].1]
                                              + sizes.map { .int(Int32($0)) }, count: Shape.count(outputShape))]
    }
}

/// The `PoolGeometry` struct of Kernels/resample.cl for pooling NCHW `input` to `pooled`.
func poolGeometry(input: [Int], pooled: [Int], kernel: [Int], stride: [Int], padding: [Int]) -> [Int32] {
    [input[2], input[3], pooled[2], pooled[3], kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[2]].map { Int32($0) }
}

extension MaxPool2d: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let geometry = poolGeometry(input: inputShapes[0], pooled: outputShape, kernel: kernel, stride: stride, padding: padding)
        return [elementwiseLaunch("resample", "max_pool2d", [.input(0), .output, .ints(geometry)], count: Shape.count(outputShape))]
    }
}

extension MaxPool2dBackward: DeviceOperation {
    /// Argmax positions of every window in scratch, then each dx element gathers the dy that picked it.
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let pooled = inputShapes[1], windows = Shape.count(pooled)
        let geometry = poolGeometry(input: outputShape, pooled: pooled, kernel: kernel, stride: stride, padding: padding)
        let argmax = KernelArgument.scratch(index: 0, count: windows)
        return [elementwiseLaunch("resample", "max_pool2d_argmax", [.input(0), argmax, .ints(geometry)], count: windows),
                elementwiseLaunch("resample", "max_pool2d_backward_gather", [argmax, .input(1), .output, .ints(geometry)],
                                  count: Shape.count(outputShape))]
    }
}

extension HarnessCatalog {
    static var resample: [HarnessCase] {
        let image = [2, 3, 5, 7], small = [1, 2, 5, 7], large = [2, 2, 9, 11]
        var cases: [HarnessCase] = []
        for align in [false, true] {
            let tag = align ? ".align" : ""
            cases += [
                HarnessCase("interpolate.bilinear.up2\(tag)", [.normal(small)]) { $0[0].interpolateBilinear(scale: 2, alignCorners: align) },
                HarnessCase("interpolate.bilinear.up4\(tag)", [.normal([1, 1, 5, 7])]) { $0[0].interpolateBilinear(scale: 4, alignCorners: align) },
                HarnessCase("interpolate.bilinear.down_odd\(tag)", [.normal(large)]) { $0[0].interpolateBilinear(size: [4, 5], alignCorners: align) },
                HarnessCase("interpolate.bilinear.odd\(tag)", [.normal(small)]) { $0[0].interpolateBilinear(size: [8, 3], alignCorners: align) },
                HarnessCase("interpolate.bilinear.single\(tag)", [.normal(small)]) { $0[0].interpolateBilinear(size: [1, 4], alignCorners: align) },
            ]
        }
        cases += [
            HarnessCase("interpolate.nearest.up2", [.normal(small)]) { $0[0].interpolateNearest(scale: 2) },
            HarnessCase("interpolate.nearest.up4", [.normal([1, 1, 5, 7])]) { $0[0].interpolateNearest(scale: 4) },
            HarnessCase("interpolate.nearest.down_odd", [.normal(large)]) { $0[0].interpolateNearest(size: [4, 5]) },
            HarnessCase("interpolate.nearest.odd", [.normal(small)]) { $0[0].interpolateNearest(size: [7, 10]) },
            HarnessCase("interpolate.area", [.normal(large)]) { $0[0].interpolateArea(size: [4, 5]) },
            HarnessCase("adaptive_avg_pool2d", [.normal([2, 3, 7, 9])]) { $0[0].adaptiveAvgPool2d(size: [3, 4]) },
            HarnessCase("adaptive_avg_pool2d.up", [.normal([1, 2, 3, 4])]) { $0[0].adaptiveAvgPool2d(size: [5, 7]) },
            HarnessCase("global_avg_pool2d", [.normal(image)]) { $0[0].globalAvgPool2d() },
            HarnessCase("max_pool2d.2x2", [.normal([2, 3, 6, 8])], fdStep: 1e-3) { $0[0].maxPool2d(kernel: [2, 2]) },
            HarnessCase("max_pool2d.2x2.odd", [.normal(image)], fdStep: 1e-3) { $0[0].maxPool2d(kernel: [2, 2]) },
            HarnessCase("max_pool2d.3x3s2p1", [.normal([2, 3, 7, 9])], fdStep: 1e-3) {
                $0[0].maxPool2d(kernel: [3, 3], stride: [2, 2], padding: [1, 1, 1, 1])
            },
            HarnessCase("max_pool2d.asymmetric", [.normal(image)], fdStep: 1e-3) {
                $0[0].maxPool2d(kernel: [3, 2], stride: [2, 1], padding: [1, 0, 0, 1])
            },
            HarnessCase("avg_pool2d.2x2", [.normal([2, 3, 6, 8])]) { $0[0].avgPool2d(kernel: [2, 2]) },
            HarnessCase("avg_pool2d.2x2.odd", [.normal(image)]) { $0[0].avgPool2d(kernel: [2, 2]) },
            HarnessCase("avg_pool2d.strip_h", [.normal([2, 3, 9, 7])]) {
                $0[0].avgPool2d(kernel: [8, 1], stride: [1, 1], padding: [3, 3, 0, 0])
            },
            HarnessCase("avg_pool2d.strip_w", [.normal([2, 3, 7, 9])]) {
                $0[0].avgPool2d(kernel: [1, 8], stride: [1, 1], padding: [0, 0, 3, 3])
            },
            HarnessCase("avg_pool2d.3x3s2p1.exclude_pad", [.normal([2, 3, 7, 9])]) {
                $0[0].avgPool2d(kernel: [3, 3], stride: [2, 2], padding: [1, 1, 1, 1], countIncludePad: false)
            },
            HarnessCase("avg_pool2d.asymmetric", [.normal(image)]) {
                $0[0].avgPool2d(kernel: [3, 2], stride: [2, 1], padding: [1, 0, 0, 1])
            },
            HarnessCase("pad.zero", [.normal(small)]) { $0[0].pad([1, 2, 3, 0]) },
            HarnessCase("pad.constant", [.normal(small)]) { $0[0].pad([2, 0, 1, 3], value: 1.5) },
            HarnessCase("pad.reflect", [.normal(small)]) { $0[0].pad([2, 1, 3, 4], mode: .reflect) },
            HarnessCase("pad.reflect.widest", [.normal(small)]) { $0[0].pad([4, 4, 6, 6], mode: .reflect) },
            HarnessCase("pad.replicate", [.normal(small)]) { $0[0].pad([6, 1, 0, 9], mode: .replicate) },
            HarnessCase("pad.planar", [.normal([4, 5])]) { $0[0].pad([1, 1, 2, 2], mode: .reflect) },
        ]
        return cases
    }
}

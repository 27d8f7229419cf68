import Foundation
import HistoAVX512

// Convolutions over NCHW images: conv2d with its two backward ops, conv_transpose2d, conv1d with kernel 1.
// CPU references pack receptive fields into a column matrix (im2col) and multiply with cblas_sgemm per image
// and group; a 1×1 stride-1 unpadded conv uses its input as the column matrix. Stride-1 single-group convs with
// larger kernels skip im2col: one GEMM per tap over a zero-padded copy of the image (ShiftedCorrelation). Convs
// whose per-group GEMMs would be tiny (depthwise) run a direct loop over planes instead. On a device (Kernels/conv.cl) each op is one
// GEMM per group whose operands the kernel gathers straight from the tensors (ConvDims.gatherGemm); ConvKernelPath
// switches to im2col + CLBlast for comparison.

/// Hyper-parameters of a convolution: stride [h, w], zero padding [top, bottom, left, right], dilation [h, w], groups.
public struct ConvGeometry: Sendable {
    public let stride: [Int]
    public let padding: [Int]
    public let dilation: [Int]
    public let groups: Int

    public init(stride: [Int] = [1, 1], padding: [Int] = [0, 0, 0, 0], dilation: [Int] = [1, 1], groups: Int = 1) {
        self.stride = stride; self.padding = padding; self.dilation = dilation; self.groups = groups
    }

    func checkParameters() throws(ShapeError) {
        guard stride.count == 2, stride.allSatisfy({ $0 > 0 }) else {
            throw ShapeError("stride \(stride) must be two positive values [h, w]")
        }
        guard dilation.count == 2, dilation.allSatisfy({ $0 > 0 }) else {
            throw ShapeError("dilation \(dilation) must be two positive values [h, w]")
        }
        guard padding.count == 4, padding.allSatisfy({ $0 >= 0 }) else {
            throw ShapeError("padding \(padding) must be four non-negative values [top, bottom, left, right]")
        }
        guard groups > 0 else { throw ShapeError("groups \(groups) must be positive") }
    }

    /// The convolution of `x` [N, Cin, H, W] with `w` [Cout, Cin/groups, kh, kw], every size resolved.
    func dims(input x: [Int], weight w: [Int]) throws(ShapeError) -> ConvDims {
        try checkParameters()
        guard x.count == 4, w.count == 4 else {
            throw ShapeError("input \(describe(x)) must be [N, C, H, W] and weight \(describe(w)) [Cout, Cin/groups, kh, kw]")
        }
        guard (x + w).allSatisfy({ $0 > 0 }) else {
            throw ShapeError("input \(describe(x)) and weight \(describe(w)) must not be empty")
        }
        guard x[1] % groups == 0, w[0] % groups == 0 else {
            throw ShapeError("groups \(groups) must divide the input channels \(x[1]) and the output channels \(w[0])")
        }
        guard w[1] * groups == x[1] else {
            throw ShapeError("input has \(x[1]) channels but weight \(describe(w)) with groups \(groups) takes \(w[1] * groups)")
        }
        let spanH = dilation[0] * (w[2] - 1) + 1, spanW = dilation[1] * (w[3] - 1) + 1
        let paddedH = x[2] + padding[0] + padding[1], paddedW = x[3] + padding[2] + padding[3]
        guard spanH <= paddedH, spanW <= paddedW else {
            throw ShapeError("kernel \(w[2])×\(w[3]) with dilation \(dilation) spans \(spanH)×\(spanW), "
                             + "more than the padded input \(paddedH)×\(paddedW)")
        }
        return ConvDims(n: x[0], cin: x[1], h: x[2], w: x[3], cout: w[0], kh: w[2], kw: w[3],
                        ho: (paddedH - spanH) / stride[0] + 1, wo: (paddedW - spanW) / stride[1] + 1,
                        sh: stride[0], sw: stride[1], dh: dilation[0], dw: dilation[1],
                        pt: padding[0], pl: padding[2], groups: groups)
    }
}

/// Checks the optional third input, a bias [channels].
func checkBias(_ inputs: [[Int]], channels: Int) throws(ShapeError) {
    guard inputs.count == 3 else { return }
    guard inputs[2] == [channels] else { throw ShapeError("bias \(describe(inputs[2])) must be [\(channels)]") }
}

/// y = x ∗ w (+ bias): x [N, Cin, H, W], w [Cout, Cin/groups, kh, kw], bias [Cout] as an optional third input.
public struct Conv2D: Operation {
    public let geometry: ConvGeometry
    public init(_ geometry: ConvGeometry) { self.geometry = geometry }
    public var name: String { "conv2d" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        let d = try geometry.dims(input: inputs[0], weight: inputs[1])
        try checkBias(inputs, channels: d.cout)
        return d.outputShape
    }
    public func cpuForward(_ args: CPUArgs) {
        let d = try! geometry.dims(input: args.inputShapes[0], weight: args.inputShapes[1])
        d.forward(args.inputs[0].baseAddress!, args.inputs[1].baseAddress!,
                  bias: args.inputs.count == 3 ? args.inputs[2].baseAddress! : nil, args.output.baseAddress!)
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] {
        let x = ctx.inputs[0], w = ctx.inputs[1], dy = ctx.cotangent
        var grads: [Tensor?] = [
            .record(Conv2DBackwardInput(geometry, inputSize: [x.shape[2], x.shape[3]]), [dy, w]),
            .record(Conv2DBackwardWeight(geometry, kernelSize: [w.shape[2], w.shape[3]]), [x, dy]),
        ]
        if ctx.inputs.count == 3 { grads.append(dy.sum(axes: [0, 2, 3])) }
        return grads
    }
}

extension Conv2D: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let d = try! geometry.dims(input: inputShapes[0], weight: inputShapes[1])
        return d.deviceLaunches(.forward, bias: inputShapes.count == 3)
    }
}

/// dx of conv2d from dy [N, Cout, Ho, Wo] and w; `inputSize` [H, W] picks x's extent (several fit one Ho).
public struct Conv2DBackwardInput: Operation {
    public let geometry: ConvGeometry
    public let inputSize: [Int]
    public init(_ geometry: ConvGeometry, inputSize: [Int]) { self.geometry = geometry; self.inputSize = inputSize }
    public var name: String { "conv2d_backward_input" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        let dy = inputs[0], w = inputs[1]
        guard dy.count == 4, w.count == 4, inputSize.count == 2 else {
            throw ShapeError("dy \(describe(dy)) and weight \(describe(w)) must be rank 4, input size \(inputSize) [H, W]")
        }
        let x = [dy[0], w[1] * geometry.groups] + inputSize
        let d = try geometry.dims(input: x, weight: w)
        guard d.outputShape == dy else {
            throw ShapeError("dy \(describe(dy)) is not the output \(describe(d.outputShape)) of a conv over \(describe(x))")
        }
        return x
    }
    public func cpuForward(_ args: CPUArgs) {
        let d = try! geometry.dims(input: args.outputShape, weight: args.inputShapes[1])
        d.backwardInput(args.inputs[0].baseAddress!, args.inputs[1].baseAddress!, bias: nil, args.output.baseAddress!)
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] { noGradient(ctx) }
}

extension Conv2DBackwardInput: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let d = try! geometry.dims(input: outputShape, weight: inputShapes[1])
        return d.deviceLaunches(.backwardInput, bias: false)
    }
}

/// dw of conv2d from x and dy [N, Cout, Ho, Wo]; `kernelSize` is [kh, kw].
public struct Conv2DBackwardWeight: Operation {
    public let geometry: ConvGeometry
    public let kernelSize: [Int]
    public init(_ geometry: ConvGeometry, kernelSize: [Int]) { self.geometry = geometry; self.kernelSize = kernelSize }
    public var name: String { "conv2d_backward_weight" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        let x = inputs[0], dy = inputs[1]
        guard x.count == 4, dy.count == 4, kernelSize.count == 2 else {
            throw ShapeError("x \(describe(x)) and dy \(describe(dy)) must be rank 4, kernel size \(kernelSize) [kh, kw]")
        }
        let w = [dy[1], x[1] / Swift.max(geometry.groups, 1)] + kernelSize
        let d = try geometry.dims(input: x, weight: w)
        guard d.outputShape == dy else {
            throw ShapeError("dy \(describe(dy)) is not the output \(describe(d.outputShape)) of a conv over \(describe(x))")
        }
        return w
    }
    public func cpuForward(_ args: CPUArgs) {
        let d = try! geometry.dims(input: args.inputShapes[0], weight: args.outputShape)
        d.backwardWeight(args.inputs[0].baseAddress!, args.inputs[1].baseAddress!, args.output.baseAddress!)
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] { noGradient(ctx) }
}

extension Conv2DBackwardWeight: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let d = try! geometry.dims(input: inputShapes[0], weight: outputShape)
        return d.deviceLaunches(.backwardWeight, bias: false)
    }
}

/// Transposed convolution (the adjoint of conv2d): x [N, Cin, H, W], w [Cin, Cout/groups, kh, kw] (PyTorch's
/// layout), optional bias [Cout]. Output H' = (H − 1)·sh − top − bottom + dh·(kh − 1) + outputPadding[0] + 1.
/// `outputPadding` < stride keeps conv2d of the output the exact inverse map in shape, which the VJP relies on.
public struct ConvTranspose2D: Operation {
    public let geometry: ConvGeometry
    public let outputPadding: [Int]
    public init(_ geometry: ConvGeometry, outputPadding: [Int]) { self.geometry = geometry; self.outputPadding = outputPadding }
    public var name: String { "conv_transpose2d" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        try geometry.checkParameters()
        let x = inputs[0], w = inputs[1], s = geometry.stride, p = geometry.padding, d = geometry.dilation
        guard outputPadding.count == 2, (0..<2).allSatisfy({ outputPadding[$0] >= 0 && outputPadding[$0] < s[$0] }) else {
            throw ShapeError("output padding \(outputPadding) must be two values, each ≥ 0 and below the stride \(s)")
        }
        guard x.count == 4, w.count == 4 else {
            throw ShapeError("input \(describe(x)) must be [N, C, H, W] and weight \(describe(w)) [Cin, Cout/groups, kh, kw]")
        }
        guard w[0] == x[1] else { throw ShapeError("input has \(x[1]) channels but weight \(describe(w)) takes \(w[0])") }
        let h = (x[2] - 1) * s[0] - p[0] - p[1] + d[0] * (w[2] - 1) + outputPadding[0] + 1
        let wOut = (x[3] - 1) * s[1] - p[2] - p[3] + d[1] * (w[3] - 1) + outputPadding[1] + 1
        guard h > 0, wOut > 0 else { throw ShapeError("padding \(p) leaves an empty output (\(h)×\(wOut))") }
        let y = [x[0], w[1] * geometry.groups, h, wOut]
        // The same shapes as a conv2d from y back to x: it checks groups and channels.
        _ = try geometry.dims(input: y, weight: w)
        try checkBias(inputs, channels: y[1])
        return y
    }
    public func cpuForward(_ args: CPUArgs) {
        let d = try! geometry.dims(input: args.outputShape, weight: args.inputShapes[1])
        d.backwardInput(args.inputs[0].baseAddress!, args.inputs[1].baseAddress!,
                        bias: args.inputs.count == 3 ? args.inputs[2].baseAddress! : nil, args.output.baseAddress!)
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] {
        let x = ctx.inputs[0], w = ctx.inputs[1], dy = ctx.cotangent
        // y = conv2dᵀ(x, w): dx = conv2d(dy, w) and dw is conv2d's weight gradient with dy as the conv input.
        var grads: [Tensor?] = [
            .record(Conv2D(geometry), [dy, w]),
            .record(Conv2DBackwardWeight(geometry, kernelSize: [w.shape[2], w.shape[3]]), [dy, x]),
        ]
        if ctx.inputs.count == 3 { grads.append(dy.sum(axes: [0, 2, 3])) }
        return grads
    }
}

extension ConvTranspose2D: DeviceOperation {
    /// conv2d's input gradient with conv_transpose2d's bias.
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let d = try! geometry.dims(input: outputShape, weight: inputShapes[1])
        return d.deviceLaunches(.backwardInput, bias: inputShapes.count == 3)
    }
}

// MARK: CPU kernels

/// A convolution with every size resolved (conv2d's view: x [n, cin, h, w] ∗ weight → y [n, cout, ho, wo]).
struct ConvDims {
    let n, cin, h, w, cout, kh, kw, ho, wo: Int
    let sh, sw, dh, dw, pt, pl, groups: Int

    var outputShape: [Int] { [n, cout, ho, wo] }
    var cinPerGroup: Int { cin / groups }
    var coutPerGroup: Int { cout / groups }
    var taps: Int { kh * kw }
    /// Rows of one group's column matrix: the inner size of its GEMMs.
    var groupK: Int { cinPerGroup * taps }
    var inPlane: Int { h * w }
    var outPlane: Int { ho * wo }
    /// 1×1, stride 1, unpadded: the input is its own column matrix.
    var isPointwise: Bool { kh == 1 && kw == 1 && sh == 1 && sw == 1 && pt == 0 && pl == 0 && ho == h && wo == w }
    /// Per-group GEMMs this small (depthwise convs) lose to a direct loop over planes.
    var isDirect: Bool { cinPerGroup * coutPerGroup <= 4 }
    /// Stride 1, one group, a kernel wider than 1×1: the tap-by-tap GEMMs of `ShiftedCorrelation` replace im2col.
    var isShifted: Bool { sh == 1 && sw == 1 && groups == 1 && taps > 1 && !isDirect }
    /// Zero padding below and right of the input; for stride 1 the output size fixes it exactly.
    var pb: Int { ho - h - pt + (kh - 1) * dh }
    var pr: Int { wo - w - pl + (kw - 1) * dw }

    /// The forward (and weight gradient) as a correlation of x with the taps.
    var shiftedForward: ShiftedCorrelation {
        ShiftedCorrelation(channels: cin, h: h, w: w, top: pt, bottom: pb, left: pl, right: pr, kh: kh, kw: kw, dh: dh, dw: dw)
    }
    /// The input gradient as a correlation of dy with the flipped taps, padded by the kernel span less the forward
    /// padding; nil where the forward padding exceeds the span (then the gradient crops dy, which im2col handles).
    var shiftedBackwardInput: ShiftedCorrelation? {
        let spanH = (kh - 1) * dh, spanW = (kw - 1) * dw
        let pads = [spanH - pt, spanH - pb, spanW - pl, spanW - pr]
        guard isShifted, pads.allSatisfy({ $0 >= 0 }) else { return nil }
        return ShiftedCorrelation(channels: cout, h: ho, w: wo, top: pads[0], bottom: pads[1], left: pads[2], right: pads[3],
                                  kh: kh, kw: kw, dh: dh, dw: dw)
    }

    /// Outputs o < `count` whose input o·s − p + k·d lies inside 0..<size.
    @inline(__always) static func validOutputs(tap k: Int, count: Int, size: Int, stride s: Int, pad p: Int, dilation d: Int) -> Range<Int> {
        let below = p - k * d, above = size - 1 + p - k * d
        let lo = Swift.min(below <= 0 ? 0 : (below + s - 1) / s, count)
        let hi = above < 0 ? 0 : Swift.min(above / s + 1, count)
        return lo..<Swift.max(lo, hi)
    }

    @inline(__always) func tapRanges(_ ky: Int, _ kx: Int) -> (rows: Range<Int>, cols: Range<Int>) {
        (ConvDims.validOutputs(tap: ky, count: ho, size: h, stride: sh, pad: pt, dilation: dh),
         ConvDims.validOutputs(tap: kx, count: wo, size: w, stride: sw, pad: pl, dilation: dw))
    }

    /// For tap (ky, kx), calls body(outputOffset, inputOffset, count) per output row that reads the input:
    /// outputs outputOffset..<+count of a plane read input plane elements inputOffset, +sw, +2·sw, …
    @inline(__always) func forEachTapRow(_ ky: Int, _ kx: Int, _ body: (Int, Int, Int) -> Void) {
        let (rows, cols) = tapRanges(ky, kx)
        guard !cols.isEmpty else { return }
        let ix = cols.lowerBound * sw - pl + kx * dw
        for oy in rows { body(oy * wo + cols.lowerBound, (oy * sh - pt + ky * dh) * w + ix, cols.count) }
    }

    func forward(_ x: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                 _ y: UnsafeMutablePointer<Float>) {
        if isDirect { return directForward(x, weight, bias: bias, y) }
        if isShifted { return correlate(shiftedForward, x, weight, flipped: false, bias: bias, y) }
        // Images spread over the cores, each with its own column matrix and single-threaded GEMMs.
        parallelSingleThreadedGemms(n, scratch: columnScratch) { image, scratch in
            let xi = x + image * cin * inPlane, yi = y + image * cout * outPlane
            let columns = scratch.map { pack(xi, into: $0.pointer) } ?? xi
            if let bias { fillPlanes(yi, count: cout, size: outPlane, bias: bias) }
            for g in 0..<groups {
                gemm(false, false, coutPerGroup, outPlane, groupK, weight + g * coutPerGroup * groupK, groupK,
                     columns + g * groupK * outPlane, outPlane, bias == nil ? 0 : 1, yi + g * coutPerGroup * outPlane, outPlane)
            }
        }
    }

    /// One image's column matrix (none for pointwise convs, which read the image itself).
    func columnScratch() -> HostBuffer? { isPointwise ? nil : CPUBackend.shared.pool.take(cin * taps * outPlane) }

    /// dx from dy (also conv_transpose2d's forward, with its bias).
    func backwardInput(_ dy: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                       _ dx: UnsafeMutablePointer<Float>) {
        if isDirect { return directBackwardInput(dy, weight, bias: bias, dx) }
        if let shifted = shiftedBackwardInput { return correlate(shifted, dy, weight, flipped: true, bias: bias, dx) }
        parallelSingleThreadedGemms(n, scratch: columnScratch) { image, scratch in
            let dyi = dy + image * cout * outPlane, dxi = dx + image * cin * inPlane
            // Column gradients Wᵀ·dy, folded back onto the image (or, pointwise, the image itself).
            let columns = scratch?.pointer ?? dxi
            let accumulate = scratch == nil && bias != nil
            if accumulate { fillPlanes(dxi, count: cin, size: inPlane, bias: bias) }
            for g in 0..<groups {
                gemm(true, false, groupK, outPlane, coutPerGroup, weight + g * coutPerGroup * groupK, groupK,
                     dyi + g * coutPerGroup * outPlane, outPlane, accumulate ? 1 : 0, columns + g * groupK * outPlane, outPlane)
            }
            if scratch != nil { unpack(columns, into: dxi, bias: bias) }
        }
    }

    /// dw from x and dy, accumulated over the batch by the GEMMs (beta = 1 after the first image).
    func backwardWeight(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ dw: UnsafeMutablePointer<Float>) {
        if isDirect { return directBackwardWeight(x, dy, dw) }
        if isShifted { return shiftedForward.weightGradient(x, dy, images: n, outputChannels: cout, dw) }
        let scratch = columnScratch()
        withExtendedLifetime(scratch) {
            for image in 0..<n {
                let xi = x + image * cin * inPlane, dyi = dy + image * cout * outPlane
                let columns = scratch.map { pack(xi, into: $0.pointer) } ?? xi
                for g in 0..<groups {
                    gemm(false, true, coutPerGroup, groupK, outPlane, dyi + g * coutPerGroup * outPlane, outPlane,
                         columns + g * groupK * outPlane, outPlane, image == 0 ? 0 : 1, dw + g * coutPerGroup * groupK, groupK)
                }
            }
        }
    }

    /// Runs `correlation` of `source` with the weight's taps, as they are (the forward: cout outputs) or flipped and
    /// transposed (the input gradient: cin outputs), adding `bias` per output channel.
    func correlate(_ correlation: ShiftedCorrelation, _ source: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                   flipped: Bool, bias: UnsafePointer<Float>?, _ out: UnsafeMutablePointer<Float>) {
        let taps = tapMatrices(weight, flippedAndTransposed: flipped)
        withExtendedLifetime(taps) {
            correlation.run(source, images: n, taps: taps.pointer, outputChannels: flipped ? cin : cout, bias: bias, out)
        }
    }

    /// The weight as one matrix per tap, [taps][cout][cin]; flipped and transposed, [taps][cin][cout] with the taps in
    /// reverse order (the input gradient's correlation of dy).
    func tapMatrices(_ weight: UnsafePointer<Float>, flippedAndTransposed: Bool) -> HostBuffer {
        let matrices = CPUBackend.shared.pool.take(taps * cout * cin), a = matrices.pointer
        for co in 0..<cout {
            for ci in 0..<cin {
                let kernel = weight + (co * cin + ci) * taps
                for t in 0..<taps {
                    if flippedAndTransposed { a[((taps - 1 - t) * cin + ci) * cout + co] = kernel[t] } else {
                        a[(t * cout + co) * cin + ci] = kernel[t]
                    }
                }
            }
        }
        return matrices
    }

    /// im2col of one image: row (ci, ky, kx) holds the input each output position reads through that tap (0 in the padding).
    func pack(_ x: UnsafePointer<Float>, into columns: UnsafeMutablePointer<Float>) -> UnsafePointer<Float> {
        parallelFor(cin * taps, grain: Swift.max(1, 16384 / outPlane)) { rows in
            for r in rows {
                let src = x + (r / taps) * inPlane, dst = columns + r * outPlane
                let ky = (r % taps) / kw, kx = r % kw
                let (valid, validCols) = tapRanges(ky, kx)
                if valid.count < ho || validCols.count < wo { dst.update(repeating: 0, count: outPlane) }
                forEachTapRow(ky, kx) { o, i, count in
                    if sw == 1 { (dst + o).update(from: src + i, count: count) } else {
                        for j in 0..<count { dst[o + j] = src[i + j * sw] }
                    }
                }
            }
        }
        return UnsafePointer(columns)
    }

    /// col2im of one image: sums each column row back onto the input positions it was read from.
    func unpack(_ columns: UnsafePointer<Float>, into x: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?) {
        parallelFor(cin, grain: Swift.max(1, 16384 / (taps * outPlane))) { channels in
            for ci in channels {
                let dst = x + ci * inPlane
                dst.update(repeating: bias?[ci] ?? 0, count: inPlane)
                for t in 0..<taps {
                    let src = columns + (ci * taps + t) * outPlane
                    forEachTapRow(t / kw, t % kw) { o, i, count in axpy(count, 1, src + o, 1, dst + i, sw) }
                }
            }
        }
    }

    func directForward(_ x: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                       _ y: UnsafeMutablePointer<Float>) {
        parallelFor(n * cout, grain: Swift.max(1, 16384 / (outPlane * groupK))) { planes in
            for p in planes {
                let image = p / cout, co = p % cout, firstIn = (co / coutPerGroup) * cinPerGroup
                let dst = y + p * outPlane
                dst.update(repeating: bias?[co] ?? 0, count: outPlane)
                for c in 0..<cinPerGroup {
                    let src = x + (image * cin + firstIn + c) * inPlane, kernel = weight + (co * cinPerGroup + c) * taps
                    for t in 0..<taps {
                        forEachTapRow(t / kw, t % kw) { o, i, count in axpy(count, kernel[t], src + i, sw, dst + o, 1) }
                    }
                }
            }
        }
    }

    func directBackwardInput(_ dy: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                             _ dx: UnsafeMutablePointer<Float>) {
        parallelFor(n * cin, grain: Swift.max(1, 16384 / (outPlane * coutPerGroup * taps))) { planes in
            for p in planes {
                let image = p / cin, ci = p % cin, c = ci % cinPerGroup, firstOut = (ci / cinPerGroup) * coutPerGroup
                let dst = dx + p * inPlane
                dst.update(repeating: bias?[ci] ?? 0, count: inPlane)
                for co in firstOut..<(firstOut + coutPerGroup) {
                    let src = dy + (image * cout + co) * outPlane, kernel = weight + (co * cinPerGroup + c) * taps
                    for t in 0..<taps {
                        forEachTapRow(t / kw, t % kw) { o, i, count in axpy(count, kernel[t], src + o, 1, dst + i, sw) }
                    }
                }
            }
        }
    }

    func directBackwardWeight(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ dw: UnsafeMutablePointer<Float>) {
        parallelFor(cout * cinPerGroup, grain: 1) { kernels in
            // Per-column partial sums keep the inner loop a vectorisable multiply-add.
            withUnsafeTemporaryAllocation(of: Float.self, capacity: wo) { partial in
                let acc = partial.baseAddress!
                for k in kernels {
                    let co = k / cinPerGroup, ci = (co / coutPerGroup) * cinPerGroup + k % cinPerGroup
                    for t in 0..<taps {
                        acc.update(repeating: 0, count: wo)
                        for image in 0..<n {
                            let a = dy + (image * cout + co) * outPlane, b = x + (image * cin + ci) * inPlane
                            forEachTapRow(t / kw, t % kw) { o, i, count in
                                if sw == 1 { for j in 0..<count { acc[j] += a[o + j] * b[i + j] } } else {
                                    for j in 0..<count { acc[j] += a[o + j] * b[i + j * sw] }
                                }
                            }
                        }
                        var sum: Float = 0
                        for j in 0..<wo { sum += acc[j] }
                        dw[k * taps + t] = sum
                    }
                }
            }
        }
    }
}

/// A stride-1 correlation of images ([channels, h, w] each) zero-padded by top/bottom/left/right with a kernel of
/// kh × kw taps (dilation dh, dw), computed without im2col: in a padded copy of the image, the values that tap t reads
/// for output (oy, ox) sit at (oy·paddedW + ox) + offset(t), so over the padded row width every tap's operand is the
/// padded image itself shifted by offset(t), a plain strided matrix. out = Σ_t A_t · shifted_t, one GEMM per tap with
/// K = channels; the paddedW − outW extra columns per row are computed and dropped.
struct ShiftedCorrelation {
    let channels, h, w, top, bottom, left, right, kh, kw, dh, dw: Int

    var paddedH: Int { h + top + bottom }
    var paddedW: Int { w + left + right }
    var paddedPlane: Int { paddedH * paddedW }
    var outH: Int { paddedH - (kh - 1) * dh }
    var outW: Int { paddedW - (kw - 1) * dw }
    var taps: Int { kh * kw }
    /// GEMM columns: the padded-width output rows up to the last kept element, so no tap reads past the padded plane.
    var columns: Int { (outH - 1) * paddedW + outW }
    func offset(tap t: Int) -> Int { (t / kw) * dh * paddedW + (t % kw) * dw }

    /// One worker's zero-padded image and padded-width [m, outH, paddedW] matrix.
    func workerScratch(outputChannels m: Int) -> (HostBuffer, HostBuffer) {
        (CPUBackend.shared.pool.take(channels * paddedPlane), CPUBackend.shared.pool.take(m * outH * paddedW))
    }

    /// out [images, outputChannels, outH, outW] = Σ_t taps[t] · shifted_t (+ bias per channel); `taps` holds
    /// [taps][outputChannels][channels].
    func run(_ source: UnsafePointer<Float>, images: Int, taps a: UnsafePointer<Float>, outputChannels m: Int,
             bias: UnsafePointer<Float>?, _ out: UnsafeMutablePointer<Float>) {
        if let winograd = WinogradCorrelation(self) {
            return winograd.run(source, images: images, taps: a, outputChannels: m, bias: bias, out)
        }
        parallelSingleThreadedGemms(images, scratch: { workerScratch(outputChannels: m) }) { image, scratch in
            let (padded, product) = scratch
            padPlanes(source + image * channels * h * w, into: padded.pointer)
            for t in 0..<taps {
                gemm(false, false, m, columns, channels, a + t * m * channels, channels,
                     padded.pointer + offset(tap: t), paddedPlane, t == 0 ? 0 : 1, product.pointer, outH * paddedW)
            }
            // Keep the first outW columns of every padded-width row.
            let target = out + image * m * outH * outW
            for c in 0..<m {
                let b = bias?[c] ?? 0
                for oy in 0..<outH {
                    let src = product.pointer + c * outH * paddedW + oy * paddedW, dst = target + (c * outH + oy) * outW
                    for ox in 0..<outW { dst[ox] = src[ox] + b }
                }
            }
        }
    }

    /// The kernel's gradient dw [outputChannels, channels, kh, kw] of `run` from its source and the output
    /// gradient dy [images, outputChannels, outH, outW]: per tap dw_t = Σ_images dy · shifted_tᵀ with K the output
    /// pixels, dy laid out at the padded row width with zeros in the extra columns so that they add nothing.
    func weightGradient(_ source: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, images: Int, outputChannels m: Int,
                        _ dw: UnsafeMutablePointer<Float>) {
        if let winograd = WinogradCorrelation(self) {
            return winograd.weightGradient(source, dy, images: images, outputChannels: m, dw)
        }
        let size = taps * m * channels
        // One [taps][m][channels] block per image, summed in image order afterwards (the same result however the
        // images were spread over the cores).
        let partial = CPUBackend.shared.pool.take(images * size)
        withExtendedLifetime(partial) {
            parallelSingleThreadedGemms(images, scratch: { workerScratch(outputChannels: m) }) { image, scratch in
                let (padded, widened) = scratch
                padPlanes(source + image * channels * h * w, into: padded.pointer)
                for c in 0..<m {
                    for oy in 0..<outH {
                        let row = widened.pointer + (c * outH + oy) * paddedW
                        row.update(from: dy + ((image * m + c) * outH + oy) * outW, count: outW)
                        (row + outW).update(repeating: 0, count: paddedW - outW)
                    }
                }
                for t in 0..<taps {
                    gemm(false, true, m, channels, columns, widened.pointer, outH * paddedW,
                         padded.pointer + offset(tap: t), paddedPlane, 0, partial.pointer + image * size + t * m * channels, channels)
                }
            }
            let sums = partial.pointer
            for co in 0..<m {
                for ci in 0..<channels {
                    for t in 0..<taps {
                        var total: Float = 0
                        for image in 0..<images { total += sums[image * size + (t * m + co) * channels + ci] }
                        dw[(co * channels + ci) * taps + t] = total
                    }
                }
            }
        }
    }

    /// Copies [channels, h, w] into [channels, paddedH, paddedW] with a zero border; into larger planes
    /// [channels, height, width] (Winograd's, rounded up to whole tiles) with zeros also past the padding.
    func padPlanes(_ source: UnsafePointer<Float>, into padded: UnsafeMutablePointer<Float>, height: Int? = nil,
                   width: Int? = nil) {
        let planeH = height ?? paddedH, planeW = width ?? paddedW
        for c in 0..<channels {
            let plane = padded + c * planeH * planeW
            plane.update(repeating: 0, count: top * planeW)
            for y in 0..<h {
                let row = plane + (top + y) * planeW
                row.update(repeating: 0, count: left)
                (row + left).update(from: source + (c * h + y) * w, count: w)
                (row + left + w).update(repeating: 0, count: planeW - left - w)
            }
            (plane + (top + h) * planeW).update(repeating: 0, count: (planeH - top - h) * planeW)
        }
    }
}

/// Sets plane c of `count` planes to bias[c].
@inline(__always) func fillPlanes(_ dst: UnsafeMutablePointer<Float>, count: Int, size: Int, bias: UnsafePointer<Float>?) {
    for c in 0..<count { (dst + c * size).update(repeating: bias?[c] ?? 0, count: size) }
}

/// dst[j·dstStride] += a·src[j·srcStride] for j < count; unit strides take their own loop so that it vectorises.
@inline(__always) func axpy(_ count: Int, _ a: Float, _ src: UnsafePointer<Float>, _ srcStride: Int,
                            _ dst: UnsafeMutablePointer<Float>, _ dstStride: Int) {
    if srcStride == 1 && dstStride == 1 {
        for j in 0..<count { dst[j] += a * src[j] }
    } else {
        for j in 0..<count { dst[j * dstStride] += a * src[j * srcStride] }
    }
}

/// Row-major C = op(A)·op(B) + beta·C through OpenBLAS or, on an AVX-512 CPU, through HistoAVX512's kernels for the
/// shapes they run faster: A·B and Aᵀ·B with at least 32 columns always, A·Bᵀ over long rows when OpenBLAS's own
/// kernels are not its AVX-512 ones (`OwnGemm`). The choice depends on the shape only, so an image gives the same
/// result alone or in a batch. `HISTODIFF_GEMM=openblas` keeps OpenBLAS throughout.
@inline(__always) func gemm(_ transposeA: Bool, _ transposeB: Bool, _ m: Int, _ n: Int, _ k: Int,
                            _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                            _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
    if OwnGemm.enabled, m >= 4 {
        // Spread over the cores (in turn when a per-core loop runs this: the pool is taken then).
        let forEach = WorkerPool.shared.perform
        if !transposeB, n >= 32 {
            return AVX512GEMM.multiply(m, n, k, a, lda, b, ldb, beta, c, ldc, transposedA: transposeA,
                                       workers: CPUThreads.count, forEach: forEach)
        }
        if !transposeA, transposeB, OwnGemm.transposedToo, n >= 4, k >= 256 {
            return AVX512GEMM.multiplyTransposed(m, n, k, a, lda, b, ldb, beta, c, ldc, forEach: forEach)
        }
    }
    openBLASGemm(transposeA, transposeB, m, n, k, 1, a, lda, b, ldb, beta, c, ldc)
}

/// When `gemm` uses HistoAVX512 (see there). Single-threaded on Zen 5, conv tap shapes: A·B 210–220 GFLOP/s against
/// OpenBLAS's 101 (Haswell kernels) / 157 (SkylakeX kernels); A·Bᵀ over 4208 pixels 128 against 98 / 152.
enum OwnGemm {
    static let enabled = AVX512GEMM.isSupported && ProcessInfo.processInfo.environment["HISTODIFF_GEMM"] != "openblas"
    static let transposedToo = !OpenBLASTuning.runsAVX512Kernels
}

// MARK: Device kernels (Kernels/conv.cl)

/// How the device runs convolutions whose per-group GEMMs are large enough to tile: `direct` (the default), conv.cl's
/// tiled kernel reading its GEMM operands straight from the tensors, or `im2col`, column matrices packed in device
/// memory and multiplied by CLBlast's SGEMM (kept to compare with, e.g. in `bench`). Chosen once per process by the
/// environment variable `HISTODIFF_CONV=direct|im2col`. Depthwise-like convs take conv.cl's direct kernel either way.
public enum ConvKernelPath: String, Sendable {
    case direct, im2col

    public static let selected: ConvKernelPath = {
        guard let value = ProcessInfo.processInfo.environment["HISTODIFF_CONV"] else { return .direct }
        guard let path = ConvKernelPath(rawValue: value) else {
            FileHandle.standardError.write(Data("note: HISTODIFF_CONV=\(value) is neither direct nor im2col; using direct\n".utf8))
            return .direct
        }
        return path
    }()
}

/// The three GEMMs of a convolution (per group), as conv.cl computes them.
enum ConvGemmKind {
    /// y [cout/g × n·ho·wo] = w · columns of x
    case forward
    /// dx [cin/g × n·h·w] = wᵀ · dy, each dx element gathering the dy entries whose windows cover it
    case backwardInput
    /// dw [cout/g × cin/g·kh·kw] = dy · columns of xᵀ, a sum over every output pixel of the batch
    case backwardWeight
}

/// conv.cl's `GatherGemm`: per group g, C [m × n] = A [m × k] · B [k × n] with A, B and C addressed in the NCHW
/// tensors through two axis maps (see the kernel file for the exact formulas).
struct GatherGemm {
    /// One GEMM axis as nested coordinates (a, b < mid, c < last): B offset a·offA, sample position
    /// (b·yB + y0, c·xC + x0), and an offset into the other operand a·secondA + b·secondB + c·secondC.
    struct Axis {
        var mid, last, offA, yB, y0, xC, x0, secondA, secondB, secondC: Int
        var fields: [Int] { [mid, last, offA, yB, y0, xC, x0, secondA, secondB, secondC] }
    }
    var m, n, k, groups: Int
    var aGroup, aM: Int
    var bGroup, rows, cols, sy, sx: Int
    var cGroup, cM: Int
    var bKFastest: Bool
    var j, kAxis: Axis

    /// Elements of C over all groups: the output tensor's size.
    var outputCount: Int { m * n * groups }

    /// The struct's fields, with reduction slices of `kChunk` writing their partial C `outputCount` apart.
    func descriptor(kChunk: Int) -> KernelArgument {
        let fields = [m, n, k, groups, aGroup, aM, bGroup, rows, cols, sy, sx, cGroup, cM, kChunk, outputCount, bKFastest ? 1 : 0]
        return .ints((fields + j.fields + kAxis.fields).map { Int32($0) })
    }
}

extension ConvDims {
    /// The GEMM of `kind` for this convolution. Operand B is always input 0 (x, or dy for the input gradient) and A
    /// input 1 (w, or dy for the weight gradient).
    func gatherGemm(_ kind: ConvGemmKind) -> GatherGemm {
        // Axes over output pixels (image, oy, ox), input pixels (image, iy, ix) and one group's taps (channel, ky, kx).
        switch kind {
        case .forward:
            // B(k, j) = x at (oy·sh − pt + ky·dh, ox·sw − pl + kx·dw).
            return GatherGemm(m: coutPerGroup, n: n * outPlane, k: groupK, groups: groups,
                              aGroup: coutPerGroup * groupK, aM: groupK,
                              bGroup: cinPerGroup * inPlane, rows: h, cols: w, sy: 1, sx: 1,
                              cGroup: coutPerGroup * outPlane, cM: outPlane, bKFastest: false,
                              j: .init(mid: ho, last: wo, offA: cin * inPlane, yB: sh, y0: -pt, xC: sw, x0: -pl,
                                       secondA: cout * outPlane, secondB: wo, secondC: 1),
                              kAxis: .init(mid: kh, last: kw, offA: inPlane, yB: dh, y0: 0, xC: dw, x0: 0,
                                           secondA: taps, secondB: kw, secondC: 1))
        case .backwardInput:
            // B(k, j) = dy at ((iy + pt − ky·dh) / sh, (ix + pl − kx·dw) / sw) where both divide exactly.
            return GatherGemm(m: cinPerGroup, n: n * inPlane, k: coutPerGroup * taps, groups: groups,
                              aGroup: coutPerGroup * groupK, aM: taps,
                              bGroup: coutPerGroup * outPlane, rows: ho, cols: wo, sy: sh, sx: sw,
                              cGroup: cinPerGroup * inPlane, cM: inPlane, bKFastest: false,
                              j: .init(mid: h, last: w, offA: cout * outPlane, yB: 1, y0: pt, xC: 1, x0: pl,
                                       secondA: cin * inPlane, secondB: w, secondC: 1),
                              kAxis: .init(mid: kh, last: kw, offA: outPlane, yB: -dh, y0: 0, xC: -dw, x0: 0,
                                           secondA: groupK, secondB: kw, secondC: 1))
        case .backwardWeight:
            // A(m, k) = dy; B(k, j) = x at (oy·sh + ky·dh − pt, ox·sw + kx·dw − pl), contiguous along k.
            return GatherGemm(m: coutPerGroup, n: groupK, k: n * outPlane, groups: groups,
                              aGroup: coutPerGroup * outPlane, aM: outPlane,
                              bGroup: cinPerGroup * inPlane, rows: h, cols: w, sy: 1, sx: 1,
                              cGroup: coutPerGroup * groupK, cM: groupK, bKFastest: true,
                              j: .init(mid: kh, last: kw, offA: inPlane, yB: dh, y0: -pt, xC: dw, x0: -pl,
                                       secondA: taps, secondB: kw, secondC: 1),
                              kAxis: .init(mid: ho, last: wo, offA: cin * inPlane, yB: sh, y0: 0, xC: sw, x0: 0,
                                           secondA: cout * outPlane, secondB: wo, secondC: 1))
        }
    }

    /// conv.cl's `ConvShape`.
    var kernelShape: KernelArgument {
        .ints([n, cin, h, w, cout, kh, kw, ho, wo, sh, sw, dh, dw, pt, pl, groups].map { Int32($0) })
    }

    /// The launches computing `kind` into the op's output; `bias` adds input 2 per output channel.
    func deviceLaunches(_ kind: ConvGemmKind, bias: Bool) -> [KernelLaunch] {
        if !isDirect && ConvKernelPath.selected == .im2col { return im2colLaunches(kind, bias: bias) }
        return gatherLaunches(kind, bias: bias)
    }

    /// conv_gemm_tiled, or conv_gemm_image (the same launch) for the GEMMs whose columns are whole rows of image pixels,
    /// which CPU devices run as register blocks read straight from the tensors; for tiny per-group GEMMs
    /// conv_gemm_direct. When the output alone gives the device too little parallel work (weight gradients: few
    /// outputs, each a sum over the whole batch) the reduction is cut into slices whose partial results
    /// conv_sum_slices adds in a fixed order.
    func gatherLaunches(_ kind: ConvGemmKind, bias: Bool) -> [KernelLaunch] {
        let gemm = gatherGemm(kind)
        // conv_gemm_tiled's TILE_M = TILE_N = 64 and its work-group of GROUP_N × GROUP_M = 4 × 16 (Kernels/conv.cl).
        let tile = 64, group = [4, 16]
        let tiles = (gemm.n + tile - 1) / tile, tileRows = (gemm.m + tile - 1) / tile
        // Parallel units (work-groups, or work-items for the direct kernel) that keep a GPU busy; slices of at least
        // 64 terms keep the partial results small next to the work.
        let units = isDirect ? gemm.outputCount : tiles * tileRows * groups, wanted = isDirect ? 16384 : 256
        let slicesWanted = Swift.max(1, Swift.min(gemm.k / 64, wanted / units))
        let chunk = (gemm.k + slicesWanted - 1) / slicesWanted
        let sliceCount = (gemm.k + chunk - 1) / chunk
        let target: KernelArgument = sliceCount == 1 ? .output : .scratch(index: 0, count: sliceCount * gemm.outputCount)
        // Without a bias the kernel ignores its bias argument; input 1 fills the slot.
        let args: [KernelArgument] = [.input(1), .input(0), .input(bias ? 2 : 1), .int(bias ? 1 : 0), target,
                                      gemm.descriptor(kChunk: chunk)]
        // conv_gemm_image reads 16 neighbouring pixels of an image row (unstrided, at least 16 wide) as one vector: the
        // rows must split into whole runs of 16, else it gathers element by element, slower than conv_gemm_tiled.
        let imageRows = kind != .backwardWeight && gemm.j.xC == 1 && gemm.sx == 1 && gemm.sy == 1 && gemm.j.last % 16 == 0
            && gemm.cols >= 16
        let main: KernelLaunch = isDirect
            ? .kernel(file: "conv", name: "conv_gemm_direct", args: args, global: [gemm.n, gemm.m, groups * sliceCount])
            : .kernel(file: "conv", name: imageRows ? "conv_gemm_image" : "conv_gemm_tiled", args: args,
                      global: [tiles * group[0], tileRows * group[1], groups * sliceCount], local: group + [1])
        guard sliceCount > 1 else { return [main] }
        return [main, elementwiseLaunch("conv", "conv_sum_slices", [target, .output, .int(Int32(sliceCount))], count: gemm.outputCount)]
    }

    /// Column matrices (conv_im2col, or the input itself for pointwise convs) and CLBlast's strided-batched SGEMM,
    /// one call per group over a chunk of images; the column matrices of a chunk stay below 2²⁵ floats.
    func im2colLaunches(_ kind: ConvGemmKind, bias: Bool) -> [KernelLaunch] {
        let columnsPerImage = cin * taps * outPlane
        let chunk = Swift.max(1, Swift.min(n, (1 << 25) / columnsPerImage))
        let columns = KernelArgument.scratch(index: 0, count: chunk * columnsPerImage)
        // Where image `first`'s column matrix is (a pointwise conv's is that image of x, or of dx), and the stride
        // between images.
        func columnMatrix(_ first: Int, image: KernelArgument) -> (KernelArgument, offset: Int, stride: Int) {
            isPointwise ? (image, first * cin * inPlane, cin * inPlane) : (columns, 0, columnsPerImage)
        }
        func pack(_ first: Int, _ images: Int) -> [KernelLaunch] {
            isPointwise ? [] : [.kernel(file: "conv", name: "conv_im2col", args: [.input(0), columns, kernelShape, .int(Int32(first))],
                                        global: [wo, ho, images * cin * taps])]
        }
        var launches: [KernelLaunch] = []
        switch kind {
        case .forward:
            if bias {
                launches.append(elementwiseLaunch("conv", "conv_fill_bias", [.input(2), .output, .int(Int32(cout)), .int(Int32(outPlane))],
                                                  count: n * cout * outPlane))
            }
            for first in stride(from: 0, to: n, by: chunk) {
                let images = Swift.min(chunk, n - first), (b, offset, batchStride) = columnMatrix(first, image: .input(0))
                launches += pack(first, images)
                for g in 0..<groups {
                    launches.append(.gemm(.init(transposeA: false, transposeB: false, m: coutPerGroup, n: outPlane, k: groupK,
                                                a: .input(1), aOffset: g * coutPerGroup * groupK, aBatchStride: 0, lda: groupK,
                                                b: b, bOffset: offset + g * groupK * outPlane, bBatchStride: batchStride, ldb: outPlane,
                                                c: .output, cOffset: (first * cout + g * coutPerGroup) * outPlane,
                                                cBatchStride: cout * outPlane, ldc: outPlane, batches: images, beta: bias ? 1 : 0)))
                }
            }
        case .backwardInput:
            // Column gradients wᵀ·dy, then conv_col2im gathers them onto dx (pointwise: the GEMM writes dx itself).
            if bias && isPointwise {
                launches.append(elementwiseLaunch("conv", "conv_fill_bias", [.input(2), .output, .int(Int32(cin)), .int(Int32(inPlane))],
                                                  count: n * cin * inPlane))
            }
            for first in stride(from: 0, to: n, by: chunk) {
                let images = Swift.min(chunk, n - first), (c, offset, batchStride) = columnMatrix(first, image: .output)
                for g in 0..<groups {
                    launches.append(.gemm(.init(transposeA: true, transposeB: false, m: groupK, n: outPlane, k: coutPerGroup,
                                                a: .input(1), aOffset: g * coutPerGroup * groupK, aBatchStride: 0, lda: groupK,
                                                b: .input(0), bOffset: (first * cout + g * coutPerGroup) * outPlane,
                                                bBatchStride: cout * outPlane, ldb: outPlane,
                                                c: c, cOffset: offset + g * groupK * outPlane, cBatchStride: batchStride, ldc: outPlane,
                                                batches: images, beta: bias && isPointwise ? 1 : 0)))
                }
                if !isPointwise {
                    launches.append(.kernel(file: "conv", name: "conv_col2im",
                                            args: [columns, .input(bias ? 2 : 1), .int(bias ? 1 : 0), .output, kernelShape, .int(Int32(first))],
                                            global: [w, h, images * cin]))
                }
            }
        case .backwardWeight:
            // One dw per image (dy·columnsᵀ), summed over the batch by conv_sum_slices.
            let weights = cout * groupK
            let partial: KernelArgument = n == 1 ? .output : .scratch(index: 1, count: n * weights)
            for first in stride(from: 0, to: n, by: chunk) {
                let images = Swift.min(chunk, n - first), (b, offset, batchStride) = columnMatrix(first, image: .input(0))
                launches += pack(first, images)
                for g in 0..<groups {
                    launches.append(.gemm(.init(transposeA: false, transposeB: true, m: coutPerGroup, n: groupK, k: outPlane,
                                                a: .input(1), aOffset: (first * cout + g * coutPerGroup) * outPlane,
                                                aBatchStride: cout * outPlane, lda: outPlane,
                                                b: b, bOffset: offset + g * groupK * outPlane, bBatchStride: batchStride, ldb: outPlane,
                                                c: partial, cOffset: first * weights + g * coutPerGroup * groupK,
                                                cBatchStride: weights, ldc: groupK, batches: images)))
                }
            }
            if n > 1 {
                launches.append(elementwiseLaunch("conv", "conv_sum_slices", [partial, .output, .int(Int32(n))], count: weights))
            }
        }
        return launches
    }
}

extension Tensor {
    /// 2-D convolution of self [N, Cin, H, W] with `weight` [Cout, Cin/groups, kh, kw] (PyTorch's layout);
    /// `padding` is [top, bottom, left, right] zeros.
    public func conv2d(_ weight: Tensor, bias: Tensor? = nil, stride: [Int] = [1, 1], padding: [Int] = [0, 0, 0, 0],
                       dilation: [Int] = [1, 1], groups: Int = 1) -> Tensor {
        let geometry = ConvGeometry(stride: stride, padding: padding, dilation: dilation, groups: groups)
        return .record(Conv2D(geometry), [self, weight] + (bias.map { [$0] } ?? []))
    }
    /// Square stride and equal padding on every side.
    public func conv2d(_ weight: Tensor, bias: Tensor? = nil, stride: Int, padding: Int, groups: Int = 1) -> Tensor {
        conv2d(weight, bias: bias, stride: [stride, stride], padding: [padding, padding, padding, padding], groups: groups)
    }
    /// Transposed convolution of self [N, Cin, H, W] with `weight` [Cin, Cout/groups, kh, kw]; `padding`
    /// [top, bottom, left, right] crops the full output, `outputPadding` [h, w] (below the stride) extends it.
    public func convTranspose2d(_ weight: Tensor, bias: Tensor? = nil, stride: [Int] = [1, 1], padding: [Int] = [0, 0, 0, 0],
                                outputPadding: [Int] = [0, 0], dilation: [Int] = [1, 1], groups: Int = 1) -> Tensor {
        let geometry = ConvGeometry(stride: stride, padding: padding, dilation: dilation, groups: groups)
        return .record(ConvTranspose2D(geometry, outputPadding: outputPadding), [self, weight] + (bias.map { [$0] } ?? []))
    }
    /// Kernel-1 convolution of self [N, Cin, L] with `weight` [Cout, Cin, 1]: a per-position linear map of channels.
    public func conv1d(_ weight: Tensor, bias: Tensor? = nil) -> Tensor {
        guard rank == 3, weight.rank == 3, weight.shape[2] == 1 else {
            return .invalid("conv1d", "input \(describe(shape)) must be [N, C, L] and weight \(describe(weight.shape)) [Cout, Cin, 1]")
        }
        let y = reshape(shape + [1]).conv2d(weight.reshape(weight.shape + [1]), bias: bias)
        return y.reshape([shape[0], weight.shape[0], shape[2]])
    }
}

extension HarnessCatalog {
    static var conv: [HarnessCase] {
        // Sums of many products: goldens get a looser tolerance than the elementwise default.
        func conv(_ name: String, _ inputs: [HarnessCase.Input], build: @escaping ([Tensor]) -> Tensor) -> HarnessCase {
            HarnessCase(name, inputs, atol: 1e-4, rtol: 1e-4, build: build)
        }
        return [
            conv("conv2d.1x1", [.normal([2, 5, 4, 3]), .normal([3, 5, 1, 1]), .normal([3])]) {
                $0[0].conv2d($0[1], bias: $0[2])
            },
            conv("conv2d.3x3_pad1", [.normal([2, 3, 5, 6]), .normal([4, 3, 3, 3]), .normal([4])]) {
                $0[0].conv2d($0[1], bias: $0[2], stride: 1, padding: 1)
            },
            conv("conv2d.3x3_stride2", [.normal([2, 3, 7, 6]), .normal([4, 3, 3, 3]), .normal([4])]) {
                $0[0].conv2d($0[1], bias: $0[2], stride: 2, padding: 1)
            },
            conv("conv2d.4x4_s2_p1", [.normal([2, 3, 9, 7]), .normal([5, 3, 4, 4]), .normal([5])]) {
                $0[0].conv2d($0[1], bias: $0[2], stride: 2, padding: 1)
            },
            conv("conv2d.7x7_pad3", [.normal([1, 3, 9, 8]), .normal([4, 3, 7, 7]), .normal([4])]) {
                $0[0].conv2d($0[1], bias: $0[2], stride: 1, padding: 3)
            },
            conv("conv2d.depthwise8x8", [.normal([2, 4, 9, 10]), .normal([4, 1, 8, 8]), .normal([4])]) {
                $0[0].conv2d($0[1], bias: $0[2], stride: 1, padding: 3, groups: 4)
            },
            conv("conv2d.depthwise_stride2", [.normal([1, 3, 7, 8]), .normal([6, 1, 3, 3]), .normal([6])]) {
                $0[0].conv2d($0[1], bias: $0[2], stride: [2, 2], padding: [1, 0, 0, 1], dilation: [1, 2], groups: 3)
            },
            conv("conv2d.asymmetric", [.normal([1, 3, 6, 7]), .normal([2, 3, 3, 2]), .normal([2])]) {
                $0[0].conv2d($0[1], bias: $0[2], stride: [1, 2], padding: [0, 1, 2, 1])
            },
            conv("conv2d.dilation2", [.normal([1, 3, 9, 8]), .normal([4, 3, 3, 3]), .normal([4])]) {
                $0[0].conv2d($0[1], bias: $0[2], padding: [2, 2, 2, 2], dilation: [2, 2])
            },
            conv("conv2d.groups2", [.normal([2, 4, 6, 5]), .normal([6, 2, 3, 3]), .normal([6])]) {
                $0[0].conv2d($0[1], bias: $0[2], stride: 1, padding: 1, groups: 2)
            },
            conv("conv2d.no_bias", [.normal([2, 3, 6, 5]), .normal([4, 3, 3, 3])]) {
                $0[0].conv2d($0[1], stride: 2, padding: 0)
            },
            // Image rows in whole 16-pixel runs (conv_gemm_image on CPU devices): a last run past the 48 columns, rows
            // that end a block of 8 early, padding 1 (one lane past either edge) and, below, 2 with groups.
            conv("conv2d.image_rows", [.normal([1, 3, 3, 16]), .normal([10, 3, 3, 3]), .normal([10])]) {
                $0[0].conv2d($0[1], bias: $0[2], stride: 1, padding: 1)
            },
            conv("conv2d.image_rows_pad2_groups", [.normal([1, 4, 3, 32]), .normal([6, 2, 5, 5]), .normal([6])]) {
                $0[0].conv2d($0[1], bias: $0[2], stride: 1, padding: 2, groups: 2)
            },
            // Several 64-wide tiles, partial edge tiles and reductions cut into slices on the device.
            conv("conv2d.tiles_split", [.normal([2, 2, 9, 8]), .normal([3, 2, 3, 3]), .normal([3])]) {
                $0[0].conv2d($0[1], bias: $0[2], stride: 1, padding: 1)
            },
            conv("conv2d.wide_channels", [.normal([1, 1, 3, 3]), .normal([66, 1, 2, 2]), .normal([66])]) {
                $0[0].conv2d($0[1], bias: $0[2])
            },
            conv("conv2d.deep_channels", [.normal([1, 66, 2, 2]), .normal([1, 66, 2, 2]), .normal([1])]) {
                $0[0].conv2d($0[1], bias: $0[2])
            },
            // Stride 1, one group: the shifted-GEMM path, with an odd batch over two workers, dilation and uneven padding.
            conv("conv2d.shifted_dilated_odd_batch", [.normal([3, 3, 6, 7]), .normal([4, 3, 3, 2]), .normal([4])]) {
                $0[0].conv2d($0[1], bias: $0[2], padding: [1, 2, 0, 1], dilation: [2, 1])
            },
            // Top padding beyond the kernel span: forward and weight gradient shifted, the input gradient by im2col.
            conv("conv2d.shifted_pad_beyond_span", [.normal([3, 3, 7, 5]), .normal([4, 3, 3, 3]), .normal([4])]) {
                $0[0].conv2d($0[1], bias: $0[2], padding: [3, 0, 2, 1])
            },
            // 3×3 stride 1: Winograd F(2×2, 3×3) with odd output sides (a last tile half outside), a second 16-tile
            // vector per row holding one tile and two blocks of tile rows.
            conv("conv2d.winograd_tiles", [.normal([1, 2, 27, 33]), .normal([3, 2, 3, 3]), .normal([3])]) {
                $0[0].conv2d($0[1], bias: $0[2], stride: 1, padding: 1)
            },
            // Its forward is the shifted input-gradient correlation with a bias.
            conv("conv_transpose2d.stride1", [.normal([3, 4, 5, 6]), .normal([4, 3, 3, 2]), .normal([3])]) {
                $0[0].convTranspose2d($0[1], bias: $0[2], padding: [1, 0, 0, 1])
            },
            conv("conv_transpose2d.4x4_s2_p1", [.normal([2, 4, 3, 5]), .normal([4, 3, 4, 4]), .normal([3])]) {
                $0[0].convTranspose2d($0[1], bias: $0[2], stride: [2, 2], padding: [1, 1, 1, 1])
            },
            conv("conv_transpose2d.2x2_s2", [.normal([1, 3, 4, 3]), .normal([3, 2, 2, 2]), .normal([2])]) {
                $0[0].convTranspose2d($0[1], bias: $0[2], stride: [2, 2])
            },
            conv("conv_transpose2d.output_padding_groups", [.normal([2, 4, 3, 4]), .normal([4, 3, 3, 3]), .normal([6])]) {
                $0[0].convTranspose2d($0[1], bias: $0[2], stride: [2, 2], padding: [1, 1, 1, 1], outputPadding: [1, 1], groups: 2)
            },
            conv("conv_transpose2d.depthwise_dilated", [.normal([1, 4, 5, 4]), .normal([4, 1, 3, 3])]) {
                $0[0].convTranspose2d($0[1], stride: [2, 2], padding: [1, 0, 0, 2], outputPadding: [1, 0],
                                      dilation: [2, 2], groups: 4)
            },
            conv("conv1d", [.normal([2, 5, 7]), .normal([3, 5, 1]), .normal([3])]) { $0[0].conv1d($0[1], bias: $0[2]) },
        ]
    }
}

import Foundation
import HistoAVX512

// Elementwise ops: unary maps (math and activations) with their derivative op, broadcasting binary
// arithmetic and comparisons, `where`, and `expand` (explicit broadcast).

/// The unary maps. Parameters `a`, `b` are used by the kinds that take them (documented per case).
public enum UnaryKind: String, CaseIterable, Sendable {
    case neg, exp, log, sqrt, rsqrt, abs, sin, cos, square, sign
    case relu, relu6, sigmoid, tanh, silu, gelu, geluTanh = "gelu_tanh", erf
    /// max(x, 0) + a·min(x, 0)
    case leakyRelu = "leaky_relu"
    /// a·x + b
    case affine
    /// clamp to [a, b]
    case clamp
    /// x^a (x ≥ 0 for non-integer a)
    case powScalar = "pow_scalar"
    /// a / x
    case reciprocal

    /// Kinds whose derivative is zero almost everywhere (no gradient flows).
    var isPiecewiseConstant: Bool { self == .sign }
}

extension UnaryKind {
    /// f on 16 lanes. exp, sigmoid, silu, tanh and gelu_tanh use VectorMath's vector forms; log, sin, cos, erf and
    /// pow call libm lane by lane.
    @inline(__always) func apply(_ x: SIMD16<Float>, _ a: Float, _ b: Float) -> SIMD16<Float> {
        let zero = SIMD16<Float>()
        switch self {
        case .neg: return -x
        case .exp: return exp16(x)
        case .log: return lanewise(x) { Foundation.log($0) }
        case .sqrt: return x.squareRoot()
        case .rsqrt: return 1 / x.squareRoot()
        case .abs: return x.replacing(with: -x, where: x .< 0)
        case .sin: return lanewise(x) { Foundation.sin($0) }
        case .cos: return lanewise(x) { Foundation.cos($0) }
        case .square: return x * x
        case .sign: return zero.replacing(with: 1, where: x .> 0).replacing(with: -1, where: x .< 0)
        case .relu: return x.replacing(with: 0, where: x .< 0)
        case .relu6: return x.replacing(with: 0, where: x .< 0).replacing(with: 6, where: x .> 6)
        case .sigmoid: return sigmoid16(x)
        case .tanh: return tanh16(x)
        case .silu: return silu16(x)
        case .gelu: return 0.5 * x * (1 + lanewise(x * 0.7071067811865476) { Foundation.erf($0) })
        case .geluTanh: return 0.5 * x * (1 + tanh16(0.7978845608028654 * (x + 0.044715 * x * x * x)))
        case .erf: return lanewise(x) { Foundation.erf($0) }
        case .leakyRelu: return x.replacing(with: a * x, where: x .< 0)
        case .affine: return a * x + b
        case .clamp: return x.replacing(with: a, where: x .< a).replacing(with: b, where: x .> b)
        case .powScalar: return lanewise(x) { Foundation.pow($0, a) }
        case .reciprocal: return a / x
        }
    }

    /// dy/dx at x (the derivative op multiplies it by the cotangent).
    @inline(__always) func derivative(_ x: SIMD16<Float>, _ a: Float, _ b: Float) -> SIMD16<Float> {
        let zero = SIMD16<Float>(), one = SIMD16<Float>(repeating: 1)
        switch self {
        case .neg: return -one
        case .exp: return exp16(x)
        case .log: return 1 / x
        case .sqrt: return 0.5 / x.squareRoot()
        case .rsqrt: return -0.5 / (x * x.squareRoot())
        case .abs: return zero.replacing(with: 1, where: x .> 0).replacing(with: -1, where: x .< 0)
        case .sin: return lanewise(x) { Foundation.cos($0) }
        case .cos: return -lanewise(x) { Foundation.sin($0) }
        case .square: return 2 * x
        case .sign: return zero
        case .relu: return zero.replacing(with: 1, where: x .> 0)
        case .relu6: return zero.replacing(with: 1, where: x .> 0 .& x .< 6)
        case .sigmoid: let s = sigmoid16(x); return s * (1 - s)
        case .tanh: let t = tanh16(x); return 1 - t * t
        case .silu: return siluDerivative16(x)
        case .gelu:
            let cdf = 0.5 * (1 + lanewise(x * 0.7071067811865476) { Foundation.erf($0) })
            return cdf + x * 0.3989422804014327 * exp16(-0.5 * x * x)
        case .geluTanh:
            let k: Float = 0.7978845608028654, cubic: Float = 0.044715, slope: Float = 3 * 0.044715
            let t = tanh16(k * (x + cubic * x * x * x))
            let halfX: SIMD16<Float> = 0.5 * x, innerSlope: SIMD16<Float> = k * (1 + slope * x * x)
            return 0.5 * (1 + t) + halfX * (1 - t * t) * innerSlope
        case .erf: return 1.1283791670955126 * exp16(-x * x)
        case .leakyRelu: return one.replacing(with: a, where: x .< 0)
        case .affine: return SIMD16(repeating: a)
        case .clamp: return zero.replacing(with: 1, where: x .>= a .& x .<= b)
        case .powScalar: return a == 0 ? zero : a * lanewise(x) { Foundation.pow($0, a - 1) }
        case .reciprocal: return -a / (x * x)
        }
    }

    /// Calls `body` with `self` as a constant: each case gets its own copy of the loop in `body`, so the switch in
    /// `apply`/`derivative` folds away instead of running per element.
    @inline(__always) func specialised(_ body: (UnaryKind) -> Void) {
        switch self {
        case .neg: body(.neg)
        case .exp: body(.exp)
        case .log: body(.log)
        case .sqrt: body(.sqrt)
        case .rsqrt: body(.rsqrt)
        case .abs: body(.abs)
        case .sin: body(.sin)
        case .cos: body(.cos)
        case .square: body(.square)
        case .sign: body(.sign)
        case .relu: body(.relu)
        case .relu6: body(.relu6)
        case .sigmoid: body(.sigmoid)
        case .tanh: body(.tanh)
        case .silu: body(.silu)
        case .gelu: body(.gelu)
        case .geluTanh: body(.geluTanh)
        case .erf: body(.erf)
        case .leakyRelu: body(.leakyRelu)
        case .affine: body(.affine)
        case .clamp: body(.clamp)
        case .powScalar: body(.powScalar)
        case .reciprocal: body(.reciprocal)
        }
    }
}

/// y = f(x) elementwise.
public struct Unary: Operation {
    public let kind: UnaryKind
    public let a: Float
    public let b: Float
    public init(_ kind: UnaryKind, _ a: Float = 0, _ b: Float = 0) { self.kind = kind; self.a = a; self.b = b }

    public var name: String { "unary.\(kind.rawValue)" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] { inputs[0] }
    public func cpuForward(_ args: CPUArgs) {
        let x = args.inputs[0].baseAddress!, y = args.output.baseAddress!, count = args.output.count, a = a, b = b
        kind.specialised { kind in
            parallelFor16(count) { start, n in vectorMap(x + start, y + start, count: n) { kind.apply($0, a, b) } }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] {
        if kind.isPiecewiseConstant { return [nil] }
        if kind == .affine { return [ctx.cotangent * a] }
        return [.record(UnaryBackward(kind, a, b), [ctx.inputs[0], ctx.cotangent])]
    }
}

/// dx = dy · f'(x): the derivative of a unary map as one fused op.
public struct UnaryBackward: Operation {
    public let kind: UnaryKind
    public let a: Float
    public let b: Float
    public init(_ kind: UnaryKind, _ a: Float, _ b: Float) { self.kind = kind; self.a = a; self.b = b }

    public var name: String { "unary_backward.\(kind.rawValue)" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        guard inputs[0] == inputs[1] else { throw ShapeError("x and dy shapes differ") }
        return inputs[0]
    }
    public func cpuForward(_ args: CPUArgs) {
        let x = args.inputs[0].baseAddress!, dy = args.inputs[1].baseAddress!, dx = args.output.baseAddress!
        let count = args.output.count, a = a, b = b
        kind.specialised { kind in
            parallelFor16(count) { start, n in
                vectorZip(x + start, 1, dy + start, 1, dx + start, count: n) { $1 * kind.derivative($0, a, b) }
            }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] { noGradient(ctx) }
}

public enum BinaryKind: String, CaseIterable, Sendable {
    case add, sub, mul, div, pow, maximum, minimum
    /// Comparisons give 1 where true, 0 elsewhere, and pass no gradient.
    case greater, greaterEqual = "greater_equal", less, lessEqual = "less_equal", equal, notEqual = "not_equal"

    /// x ∘ y on 16 lanes (maximum and minimum pick as Swift.max and Swift.min do).
    @inline(__always) func apply(_ x: SIMD16<Float>, _ y: SIMD16<Float>) -> SIMD16<Float> {
        let zero = SIMD16<Float>()
        switch self {
        case .add: return x + y
        case .sub: return x - y
        case .mul: return x * y
        case .div: return x / y
        case .pow: return lanewise(x, y) { Foundation.pow($0, $1) }
        case .maximum: return x.replacing(with: y, where: y .>= x)
        case .minimum: return x.replacing(with: y, where: y .< x)
        case .greater: return zero.replacing(with: 1, where: x .> y)
        case .greaterEqual: return zero.replacing(with: 1, where: x .>= y)
        case .less: return zero.replacing(with: 1, where: x .< y)
        case .lessEqual: return zero.replacing(with: 1, where: x .<= y)
        case .equal: return zero.replacing(with: 1, where: x .== y)
        case .notEqual: return zero.replacing(with: 1, where: x .!= y)
        }
    }

    /// Calls `body` with `self` as a constant, so that `apply`'s switch folds away in each copy of its loop.
    @inline(__always) func specialised(_ body: (BinaryKind) -> Void) {
        switch self {
        case .add: body(.add)
        case .sub: body(.sub)
        case .mul: body(.mul)
        case .div: body(.div)
        case .pow: body(.pow)
        case .maximum: body(.maximum)
        case .minimum: body(.minimum)
        case .greater: body(.greater)
        case .greaterEqual: body(.greaterEqual)
        case .less: body(.less)
        case .lessEqual: body(.lessEqual)
        case .equal: body(.equal)
        case .notEqual: body(.notEqual)
        }
    }

    var isComparison: Bool {
        switch self { case .greater, .greaterEqual, .less, .lessEqual, .equal, .notEqual: return true; default: return false }
    }
}

/// z = x ∘ y with broadcasting (equal ranks with size-1 axes, or a one-element operand).
public struct Binary: Operation {
    public let kind: BinaryKind
    public init(_ kind: BinaryKind) { self.kind = kind }

    public var name: String { "binary.\(kind.rawValue)" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] { try Shape.broadcast(inputs[0], inputs[1]) }
    public func cpuForward(_ args: CPUArgs) {
        let x = args.inputs[0].baseAddress!, y = args.inputs[1].baseAddress!, z = args.output.baseAddress!
        if args.inputShapes[0] == args.inputShapes[1] {
            let count = args.output.count
            kind.specialised { kind in
                parallelFor16(count) { start, n in vectorZip(x + start, 1, y + start, 1, z + start, count: n, kind.apply) }
            }
            return
        }
        let walk = BroadcastWalk(output: args.outputShape, operands: args.inputShapes)
        let n = walk.rowLength, sx = walk.innerStride(0), sy = walk.innerStride(1)
        kind.specialised { kind in
            parallelFor(walk.rowCount, grain: max(1, 4096 / n)) { rows in
                for row in rows {
                    let o = walk.offsets(ofRow: row)
                    vectorZip(x + o[0], sx, y + o[1], sy, z + row * n, count: n, kind.apply)
                }
            }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] {
        if kind.isComparison { return [nil, nil] }
        let x = ctx.inputs[0], y = ctx.inputs[1], dz = ctx.cotangent
        let dx: Tensor, dy: Tensor
        switch kind {
        case .add: dx = dz; dy = dz
        case .sub: dx = dz; dy = -dz
        case .mul: dx = dz * y; dy = dz * x
        case .div: dx = dz / y; dy = -(dz * ctx.output / y)
        case .pow: dx = dz * y * x.pow(y - 1); dy = dz * ctx.output * x.log()
        case .maximum, .minimum:
            let pickX = kind == .maximum ? x.greaterEqual(y) : x.lessEqual(y)
            dx = dz * pickX; dy = dz * (1 - pickX)
        default: return [nil, nil]
        }
        return [dx.sum(toShape: x.shape), dy.sum(toShape: y.shape)]
    }
}

/// out = cond ≠ 0 ? x : y, with broadcasting of all three.
public struct Where: Operation {
    public init() {}
    public var name: String { "where" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        try Shape.broadcast(inputs[0], Shape.broadcast(inputs[1], inputs[2]))
    }
    public func cpuForward(_ args: CPUArgs) {
        let c = args.inputs[0], x = args.inputs[1], y = args.inputs[2], z = args.output
        let walk = BroadcastWalk(output: args.outputShape, operands: args.inputShapes)
        let n = walk.rowLength, sc = walk.innerStride(0), sx = walk.innerStride(1), sy = walk.innerStride(2)
        parallelFor(walk.rowCount, grain: max(1, 4096 / n)) { rows in
            for row in rows {
                let o = walk.offsets(ofRow: row)
                var ic = o[0], ix = o[1], iy = o[2]
                for j in 0..<n { z[row * n + j] = c[ic] != 0 ? x[ix] : y[iy]; ic += sc; ix += sx; iy += sy }
            }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] {
        let c = ctx.inputs[0], dz = ctx.cotangent, zero = Tensor(scalar: 0)
        return [nil, Tensor.where(c, dz, zero).sum(toShape: ctx.inputs[1].shape),
                Tensor.where(c, zero, dz).sum(toShape: ctx.inputs[2].shape)]
    }
}

/// Explicit broadcast to `shape` (same rank, size-1 axes repeated; a one-element input to any shape).
public struct Expand: Operation {
    public let shape: [Int]
    public init(_ shape: [Int]) { self.shape = shape }
    public var name: String { "expand" }
    public func outputShape(_ inputs: [[Int]]) throws(ShapeError) -> [Int] {
        guard try Shape.broadcast(inputs[0], shape) == shape else {
            throw ShapeError("cannot expand \(describe(inputs[0])) to \(describe(shape))")
        }
        return shape
    }
    public func cpuForward(_ args: CPUArgs) {
        let x = args.inputs[0], z = args.output
        let walk = BroadcastWalk(output: args.outputShape, operands: [args.inputShapes[0]])
        let n = walk.rowLength, sx = walk.innerStride(0)
        parallelFor(walk.rowCount, grain: max(1, 4096 / n)) { rows in
            for row in rows {
                var ix = walk.offsets(ofRow: row)[0]
                for j in 0..<n { z[row * n + j] = x[ix]; ix += sx }
            }
        }
    }
    public func vjp(_ ctx: VJPContext) -> [Tensor?] { [ctx.cotangent.sum(toShape: ctx.inputs[0].shape)] }
}

// MARK: public API

extension Tensor {
    public func unary(_ kind: UnaryKind, _ a: Float = 0, _ b: Float = 0) -> Tensor { .record(Unary(kind, a, b), [self]) }
    public func exp() -> Tensor { unary(.exp) }
    public func log() -> Tensor { unary(.log) }
    public func sqrt() -> Tensor { unary(.sqrt) }
    public func rsqrt() -> Tensor { unary(.rsqrt) }
    public func abs() -> Tensor { unary(.abs) }
    public func sin() -> Tensor { unary(.sin) }
    public func cos() -> Tensor { unary(.cos) }
    public func square() -> Tensor { unary(.square) }
    public func sign() -> Tensor { unary(.sign) }
    public func erf() -> Tensor { unary(.erf) }
    public func relu() -> Tensor { unary(.relu) }
    public func relu6() -> Tensor { unary(.relu6) }
    public func sigmoid() -> Tensor { unary(.sigmoid) }
    public func tanh() -> Tensor { unary(.tanh) }
    public func silu() -> Tensor { unary(.silu) }
    /// GELU with the exact erf form, or PyTorch's tanh approximation.
    public func gelu(approximateTanh: Bool = false) -> Tensor { unary(approximateTanh ? .geluTanh : .gelu) }
    public func leakyRelu(_ slope: Float = 0.01) -> Tensor { unary(.leakyRelu, slope) }
    public func clamp(min lo: Float = -.infinity, max hi: Float = .infinity) -> Tensor { unary(.clamp, lo, hi) }
    public func pow(_ exponent: Float) -> Tensor { unary(.powScalar, exponent) }
    public func pow(_ exponent: Tensor) -> Tensor { .record(Binary(.pow), [self, exponent]) }
    /// GEGLU: the last axis splits into value and gate halves; value · GELU(gate).
    public func geglu() -> Tensor {
        let half = shape.last.map { $0 / 2 } ?? 0
        return slice(axis: -1, start: 0, end: half) * slice(axis: -1, start: half, end: 2 * half).gelu()
    }

    public func binary(_ kind: BinaryKind, _ other: Tensor) -> Tensor { .record(Binary(kind), [self, other]) }
    public func maximum(_ other: Tensor) -> Tensor { binary(.maximum, other) }
    public func minimum(_ other: Tensor) -> Tensor { binary(.minimum, other) }
    public func greater(_ other: Tensor) -> Tensor { binary(.greater, other) }
    public func greaterEqual(_ other: Tensor) -> Tensor { binary(.greaterEqual, other) }
    public func less(_ other: Tensor) -> Tensor { binary(.less, other) }
    public func lessEqual(_ other: Tensor) -> Tensor { binary(.lessEqual, other) }
    public func equal(_ other: Tensor) -> Tensor { binary(.equal, other) }
    public func notEqual(_ other: Tensor) -> Tensor { binary(.notEqual, other) }
    public func greater(_ value: Float) -> Tensor { greater(Tensor(scalar: value)) }
    public func less(_ value: Float) -> Tensor { less(Tensor(scalar: value)) }
    public func equal(_ value: Float) -> Tensor { equal(Tensor(scalar: value)) }

    /// cond ≠ 0 ? x : y
    public static func `where`(_ condition: Tensor, _ x: Tensor, _ y: Tensor) -> Tensor {
        .record(Where(), [condition, x, y])
    }
    /// Replaces the elements where `mask` ≠ 0 by `value`.
    public func maskedFill(_ mask: Tensor, _ value: Float) -> Tensor { .where(mask, Tensor(scalar: value), self) }

    public func expand(_ shape: [Int]) -> Tensor { self.shape == shape ? self : .record(Expand(shape), [self]) }

    /// Sums broadcast axes away so that a gradient gets the shape of the operand it belongs to.
    public func sum(toShape target: [Int]) -> Tensor {
        if shape == target { return self }
        if Shape.count(target) == 1 { return sum().reshape(target) }
        let axes = (0..<rank).filter { target[$0] == 1 && shape[$0] != 1 }
        return sum(axes: axes, keepDims: true)
    }

    public static prefix func - (x: Tensor) -> Tensor { x.unary(.neg) }
    public static func + (x: Tensor, y: Tensor) -> Tensor { x.binary(.add, y) }
    public static func - (x: Tensor, y: Tensor) -> Tensor { x.binary(.sub, y) }
    public static func * (x: Tensor, y: Tensor) -> Tensor { x.binary(.mul, y) }
    public static func / (x: Tensor, y: Tensor) -> Tensor { x.binary(.div, y) }
    public static func + (x: Tensor, s: Float) -> Tensor { x.unary(.affine, 1, s) }
    public static func - (x: Tensor, s: Float) -> Tensor { x.unary(.affine, 1, -s) }
    public static func * (x: Tensor, s: Float) -> Tensor { x.unary(.affine, s, 0) }
    public static func / (x: Tensor, s: Float) -> Tensor { x.unary(.affine, 1 / s, 0) }
    public static func + (s: Float, x: Tensor) -> Tensor { x.unary(.affine, 1, s) }
    public static func - (s: Float, x: Tensor) -> Tensor { x.unary(.affine, -1, s) }
    public static func * (s: Float, x: Tensor) -> Tensor { x.unary(.affine, s, 0) }
    public static func / (s: Float, x: Tensor) -> Tensor { x.unary(.reciprocal, s) }
}

extension HarnessCatalog {
    static var elementwise: [HarnessCase] {
        let s = [2, 3, 4, 5]
        var cases: [HarnessCase] = []
        let smooth: [(String, (Tensor) -> Tensor)] = [
            ("neg", { -$0 }), ("exp", { $0.exp() }), ("sin", { $0.sin() }), ("cos", { $0.cos() }),
            ("square", { $0.square() }), ("sigmoid", { $0.sigmoid() }), ("tanh", { $0.tanh() }),
            ("silu", { $0.silu() }), ("gelu", { $0.gelu() }), ("gelu_tanh", { $0.gelu(approximateTanh: true) }),
            ("erf", { $0.erf() }), ("affine", { $0 * 1.5 + 0.25 }),
        ]
        for (n, f) in smooth { cases.append(HarnessCase("unary.\(n)", [.normal(s)]) { f($0[0]) }) }
        let positive: [(String, (Tensor) -> Tensor)] = [
            ("log", { $0.log() }), ("sqrt", { $0.sqrt() }), ("rsqrt", { $0.rsqrt() }),
            ("pow_scalar", { $0.pow(1.7) }), ("reciprocal", { 2 / $0 }),
        ]
        for (n, f) in positive { cases.append(HarnessCase("unary.\(n)", [.uniform(s, 0.5, 2)]) { f($0[0]) }) }
        let kinked: [(String, (Tensor) -> Tensor)] = [
            ("abs", { $0.abs() }), ("relu", { $0.relu() }), ("leaky_relu", { $0.leakyRelu(0.2) }),
            ("relu6", { ($0 * 4).relu6() }), ("clamp", { $0.clamp(min: -0.5, max: 0.7) }),
        ]
        for (n, f) in kinked {
            cases.append(HarnessCase("unary.\(n)", [.awayFromZero(s, margin: 0.05)], fdStep: 1e-3) { f($0[0]) })
        }
        cases.append(HarnessCase("unary.sign", [.awayFromZero(s, margin: 0.05)]) { $0[0].sign() })
        cases.append(HarnessCase("unary.geglu", [.normal([2, 5, 8])]) { $0[0].geglu() })
        for kind in [BinaryKind.add, .sub, .mul, .div] {
            cases.append(HarnessCase("binary.\(kind.rawValue)", [.normal(s), .uniform(s, 0.5, 2)]) { $0[0].binary(kind, $0[1]) })
            cases.append(HarnessCase("binary.\(kind.rawValue).broadcast", [.normal([2, 3, 4, 5]), .uniform([1, 3, 1, 1], 0.5, 2)]) {
                $0[0].binary(kind, $0[1])
            })
        }
        cases.append(HarnessCase("binary.mul.scalar", [.normal(s), .normal([])]) { $0[0] * $0[1] })
        cases.append(HarnessCase("binary.add.outer", [.normal([3, 1]), .normal([1, 4])]) { $0[0] + $0[1] })
        cases.append(HarnessCase("binary.pow", [.uniform(s, 0.5, 2), .uniform(s, -1, 2)]) { $0[0].pow($0[1]) })
        cases.append(HarnessCase("binary.maximum", [.normal(s), .normal(s)], fdStep: 1e-3) { $0[0].maximum($0[1]) })
        cases.append(HarnessCase("binary.minimum", [.normal(s), .normal(s)], fdStep: 1e-3) { $0[0].minimum($0[1]) })
        for kind in [BinaryKind.greater, .greaterEqual, .less, .lessEqual, .equal, .notEqual] {
            cases.append(HarnessCase("binary.\(kind.rawValue)", [.integers(s, 0, 3), .integers(s, 0, 3)]) { $0[0].binary(kind, $0[1]) })
        }
        cases.append(HarnessCase("where", [.integers([2, 3, 4], 0, 2), .normal([2, 3, 4]), .normal([2, 1, 4])]) {
            Tensor.where($0[0], $0[1], $0[2])
        })
        cases.append(HarnessCase("masked_fill", [.integers([2, 3, 4], 0, 2), .normal([2, 3, 4])]) { $0[1].maskedFill($0[0], -3) })
        cases.append(HarnessCase("expand", [.normal([2, 1, 4, 1])]) { $0[0].expand([2, 3, 4, 5]) })
        return cases
    }
}

// MARK: device launches (Kernels/elementwise.cl)

extension UnaryKind { var code: Int32 { Int32(UnaryKind.allCases.firstIndex(of: self)!) } }
extension BinaryKind { var code: Int32 { Int32(BinaryKind.allCases.firstIndex(of: self)!) } }

extension Unary: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        [elementwiseLaunch("elementwise", "unary", [.input(0), .output, .int(kind.code), .float(a), .float(b)],
                           count: Shape.count(outputShape))]
    }
}

extension UnaryBackward: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        [elementwiseLaunch("elementwise", "unary_backward", [.input(0), .input(1), .output, .int(kind.code), .float(a), .float(b)],
                           count: Shape.count(outputShape))]
    }
}

extension Binary: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let walk = BroadcastWalk(output: outputShape, operands: inputShapes)
        return [elementwiseLaunch("elementwise", "binary", [.input(0), .input(1), .output, .int(kind.code), .ints(walk.kernelDescriptor)],
                                  count: Shape.count(outputShape))]
    }
}

extension Where: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let walk = BroadcastWalk(output: outputShape, operands: inputShapes)
        return [elementwiseLaunch("elementwise", "select_where", [.input(0), .input(1), .input(2), .output, .ints(walk.kernelDescriptor)],
                                  count: Shape.count(outputShape))]
    }
}

extension Expand: DeviceOperation {
    public func launches(inputShapes: [[Int]], outputShape: [Int]) -> [KernelLaunch] {
        let walk = BroadcastWalk(output: outputShape, operands: inputShapes)
        return [elementwiseLaunch("elementwise", "expand", [.input(0), .output, .ints(walk.kernelDescriptor)],
                                  count: Shape.count(outputShape))]
    }
}

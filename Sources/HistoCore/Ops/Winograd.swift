// Winograd's minimal filtering F(2×2, 3×3) for the CPU convolutions (Lavin & Gray, "Fast Algorithms for
// Convolutional Neural Networks", CVPR 2016): the stride-1, undilated 3×3 correlations of `ShiftedCorrelation` (the
// forward, the input gradient and the weight gradient of conv2d) with 16 multiply-adds per 2×2 output tile and
// channel pair instead of 36.

/// A 3×3 `ShiftedCorrelation` by F(2×2, 3×3): each 2×2 output tile y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A of its 4×4
/// input window d, so the channel sum becomes one GEMM per transformed position ξ (16 of them): M_ξ = U_ξ · V_ξ
/// with U_ξ [outputs × channels] the transformed kernels and V_ξ [channels × tiles] the transformed windows. The
/// forward takes tiles in blocks of whole tile rows (about `blockTarget` tiles), so that a block's V and M stay in the
/// L2 cache between the transforms and the GEMMs. The transforms run 8 tiles to a vector (a row of 16 input columns,
/// split into its even and odd columns).
struct WinogradCorrelation {
    let correlation: ShiftedCorrelation

    /// nil unless `correlation` is 3×3 and undilated.
    init?(_ correlation: ShiftedCorrelation) {
        guard correlation.kh == 3, correlation.kw == 3, correlation.dh == 1, correlation.dw == 1 else { return nil }
        self.correlation = correlation
    }

    var channels: Int { correlation.channels }
    var outH: Int { correlation.outH }
    var outW: Int { correlation.outW }
    var tilesH: Int { (outH + 1) / 2 }
    var tilesW: Int { (outW + 1) / 2 }
    /// 8-tile vectors per tile row.
    var chunks: Int { (tilesW + 7) / 8 }
    /// The zero-padded image, large enough for every tile's window and every chunk's 18-column reads.
    var planeH: Int { 2 * tilesH + 2 }
    var planeW: Int { 16 * chunks + 2 }
    var plane: Int { planeH * planeW }
    /// Tiles per forward block, about (whole tile rows): a multiple of the AVX-512 GEMM's 48 columns for power-of-two
    /// widths.
    static let blockTarget = 192
    var rowsPerBlock: Int { Swift.min(tilesH, Swift.max(1, (Self.blockTarget + tilesW - 1) / tilesW)) }
    var blocks: Int { (tilesH + rowsPerBlock - 1) / rowsPerBlock }
    /// Row length of a block's V and M: its tiles and the 8 lanes its last vector may write past them.
    var blockLead: Int { rowsPerBlock * tilesW + 8 }

    /// One worker's padded image, and V and product blocks of row length `lead` for `m` outputs.
    func workerScratch(outputChannels m: Int, lead: Int) -> (HostBuffer, HostBuffer, HostBuffer) {
        let pool = CPUBackend.shared.pool
        return (pool.take(channels * plane), pool.take(16 * channels * lead), pool.take(16 * m * lead))
    }

    /// Image `image` of `source` into `padded`, zero-bordered to planeH × planeW.
    func pad(_ source: UnsafePointer<Float>, image: Int, into padded: UnsafeMutablePointer<Float>) {
        correlation.padPlanes(source + image * channels * correlation.h * correlation.w, into: padded,
                              height: planeH, width: planeW)
    }

    /// The forward of `ShiftedCorrelation.run`: out [images, m, outH, outW] from `taps` [9][m][channels].
    func run(_ source: UnsafePointer<Float>, images: Int, taps: UnsafePointer<Float>, outputChannels m: Int,
             bias: UnsafePointer<Float>?, _ out: UnsafeMutablePointer<Float>) {
        let kernels = transformedKernels(taps, outputChannels: m)
        withExtendedLifetime(kernels) {
            let u = UnsafePointer(kernels.pointer)
            let lead = blockLead
            parallelSingleThreadedGemms(images, scratch: { workerScratch(outputChannels: m, lead: lead) }) {
                image, scratch in
                let (padded, v, product) = scratch
                pad(source, image: image, into: padded.pointer)
                let target = out + image * m * outH * outW
                for block in 0..<blocks {
                    let rows = rowRange(block), tiles = rows.count * tilesW
                    transformInput(padded.pointer, rows: rows, into: v.pointer, lead: lead)
                    for xi in 0..<16 {
                        gemm(false, false, m, tiles, channels, u + xi * m * channels, channels,
                             v.pointer + xi * channels * lead, lead, 0, product.pointer + xi * m * lead, lead)
                    }
                    transformOutput(product.pointer, outputChannels: m, rows: rows, bias: bias, into: target)
                }
            }
        }
    }

    /// The kernel gradient of `ShiftedCorrelation.weightGradient`: dw [m, channels, 3, 3] from the source and dy
    /// [images, m, outH, outW]. Per ξ, dU_ξ = Σ_tiles (A dY Aᵀ)_ξ · V_ξᵀ over a whole image's tiles (the
    /// GEMM's K: measured faster than the forward's blocks, and than all images at once), then dw = Gᵀ dU G; one
    /// partial per image, summed in image order (the same result however the images were spread over the cores).
    func weightGradient(_ source: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, images: Int, outputChannels m: Int,
                        _ dw: UnsafeMutablePointer<Float>) {
        let size = 16 * m * channels, tiles = tilesH * tilesW, lead = tiles + 8
        let partial = CPUBackend.shared.pool.take(images * size)
        withExtendedLifetime(partial) {
            parallelSingleThreadedGemms(images, scratch: { workerScratch(outputChannels: m, lead: lead) }) {
                image, scratch in
                let (padded, v, product) = scratch
                pad(source, image: image, into: padded.pointer)
                transformInput(padded.pointer, rows: 0..<tilesH, into: v.pointer, lead: lead)
                transformOutputGradient(dy + image * m * outH * outW, outputChannels: m, rows: 0..<tilesH,
                                        into: product.pointer, lead: lead)
                for xi in 0..<16 {
                    gemm(false, true, m, channels, tiles, product.pointer + xi * m * lead, lead,
                         v.pointer + xi * channels * lead, lead, 0, partial.pointer + image * size + xi * m * channels,
                         channels)
                }
            }
            let sums = partial.pointer
            for image in 1..<Swift.max(images, 1) {
                let from = sums + image * size
                for i in 0..<size { sums[i] += from[i] }
            }
            untransformKernelGradient(sums, outputChannels: m, into: dw)
        }
    }

    func rowRange(_ block: Int) -> Range<Int> {
        (block * rowsPerBlock)..<Swift.min(tilesH, (block + 1) * rowsPerBlock)
    }

    /// U_ξ = (G g Gᵀ)_ξ for every kernel g of `taps` [9][m][channels], as [16][m][channels];
    /// G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]].
    func transformedKernels(_ taps: UnsafePointer<Float>, outputChannels m: Int) -> HostBuffer {
        let u = CPUBackend.shared.pool.take(16 * m * channels)
        let pairs = m * channels
        for pair in 0..<pairs {
            @inline(__always) func tap(_ t: Int) -> Float { taps[t * pairs + pair] }
            // G g, column by column, then each of its rows times Gᵀ.
            let c0 = timesG(tap(0), tap(3), tap(6)), c1 = timesG(tap(1), tap(4), tap(7))
            let c2 = timesG(tap(2), tap(5), tap(8))
            @inline(__always) func store(_ i: Int, _ a: Float, _ b: Float, _ c: Float) {
                let r = timesG(a, b, c)
                u.pointer[(4 * i) * pairs + pair] = r.0
                u.pointer[(4 * i + 1) * pairs + pair] = r.1
                u.pointer[(4 * i + 2) * pairs + pair] = r.2
                u.pointer[(4 * i + 3) * pairs + pair] = r.3
            }
            store(0, c0.0, c1.0, c2.0)
            store(1, c0.1, c1.1, c2.1)
            store(2, c0.2, c1.2, c2.2)
            store(3, c0.3, c1.3, c2.3)
        }
        return u
    }

    /// V_ξ[c][tile] = (Bᵀ d B)_ξ for the tiles of `rows`, tile (ty, tx) at (ty − first row)·tilesW + tx; Bᵀ =
    /// [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]. A vector's lanes past the row's last tile
    /// land on the next row's first tiles (written after) or in the slack of `lead`. Written for 16 vector registers
    /// (AVX2): each window row's d·B is used and dropped in turn.
    func transformInput(_ padded: UnsafePointer<Float>, rows: Range<Int>, into v: UnsafeMutablePointer<Float>,
                        lead: Int) {
        let w = planeW, ld = channels * lead
        for c in 0..<channels {
            let base = padded + c * plane
            for ty in rows {
                for j in 0..<chunks {
                    let p = base + 2 * ty * w + 16 * j
                    let dst = v + c * lead + (ty - rows.lowerBound) * tilesW + 8 * j
                    @inline(__always) func put(_ xi: Int, _ value: Tiles) { storeTiles(value, dst + xi * ld) }
                    // Bᵀ over the window rows: ξ rows 0 (r0 − r2), 1 (r1 + r2), 2 (r2 − r1), 3 (r1 − r3).
                    let r0 = rowTransform(p), r2 = rowTransform(p + 2 * w)
                    put(0, r0.0 - r2.0); put(1, r0.1 - r2.1); put(2, r0.2 - r2.2); put(3, r0.3 - r2.3)
                    let r1 = rowTransform(p + w)
                    put(4, r1.0 + r2.0); put(5, r1.1 + r2.1); put(6, r1.2 + r2.2); put(7, r1.3 + r2.3)
                    put(8, r2.0 - r1.0); put(9, r2.1 - r1.1); put(10, r2.2 - r1.2); put(11, r2.3 - r1.3)
                    let r3 = rowTransform(p + 3 * w)
                    put(12, r1.0 - r3.0); put(13, r1.1 - r3.1); put(14, r1.2 - r3.2); put(15, r1.3 - r3.3)
                }
            }
        }
    }

    /// d·B for one window row of 8 tiles: their columns 2t, 2t+1, 2t+2, 2t+3 are the even and odd lanes of the 16
    /// values at p and of the 16 at p + 2.
    @inline(__always) func rowTransform(_ p: UnsafePointer<Float>) -> (Tiles, Tiles, Tiles, Tiles) {
        let a = load16(p), b = load16(p + 2)
        let d0 = a.evenHalf, d1 = a.oddHalf, d2 = b.evenHalf, d3 = b.oddHalf
        return (d0 - d2, d1 + d2, d2 - d1, d1 - d3)
    }

    /// out tiles = Aᵀ M A (+ bias) for the tiles of `rows`, Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]; rows and
    /// columns past outH, outW are not written.
    func transformOutput(_ product: UnsafePointer<Float>, outputChannels m: Int, rows: Range<Int>,
                         bias: UnsafePointer<Float>?, into out: UnsafeMutablePointer<Float>) {
        let lead = blockLead, ld = m * lead
        for co in 0..<m {
            let b = Tiles(repeating: bias?[co] ?? 0)
            for ty in rows {
                for j in 0..<chunks {
                    let src = product + co * lead + (ty - rows.lowerBound) * tilesW + 8 * j
                    // M A: per window row i, the tile's left (m0 + m1 + m2) and right (m1 − m2 − m3) column.
                    @inline(__always) func rowSums(_ i: Int) -> (Tiles, Tiles) {
                        let m0 = loadTiles(src + (4 * i) * ld), m1 = loadTiles(src + (4 * i + 1) * ld)
                        let m2 = loadTiles(src + (4 * i + 2) * ld), m3 = loadTiles(src + (4 * i + 3) * ld)
                        return (m0 + m1 + m2, m1 - m2 - m3)
                    }
                    let q1 = rowSums(1), q2 = rowSums(2)
                    let middle = (q1.0 + q2.0 + b, q1.1 + q2.1 + b), lower = (q1.0 - q2.0 + b, q1.1 - q2.1 + b)
                    let q0 = rowSums(0)
                    let top = interleave(q0.0 + middle.0, q0.1 + middle.1)
                    let q3 = rowSums(3)
                    let bottom = interleave(lower.0 - q3.0, lower.1 - q3.1)
                    let columns = Swift.min(16, outW - 16 * j)
                    let row = out + (co * outH + 2 * ty) * outW + 16 * j
                    store16(top, row, count: columns)
                    if 2 * ty + 1 < outH { store16(bottom, row + outW, count: columns) }
                }
            }
        }
    }

    /// dM_ξ = (A dY Aᵀ)_ξ for the tiles of `rows`, from dy [m, outH, outW] (zero past its edges).
    func transformOutputGradient(_ dy: UnsafePointer<Float>, outputChannels m: Int, rows: Range<Int>,
                                 into product: UnsafeMutablePointer<Float>, lead: Int) {
        let ld = m * lead
        for co in 0..<m {
            for ty in rows {
                for j in 0..<chunks {
                    let columns = Swift.min(16, outW - 16 * j)
                    let source = dy + (co * outH + 2 * ty) * outW + 16 * j
                    let top = load16(source, stride: 1, count: columns)
                    let bottom = 2 * ty + 1 < outH ? load16(source + outW, stride: 1, count: columns) : .zero
                    // A dY: rows y0, y0 + y1, y0 − y1, −y1 of the tile's two rows, each of two columns …
                    let x0 = top.evenHalf, x1 = top.oddHalf, z0 = bottom.evenHalf, z1 = bottom.oddHalf
                    let dst = product + co * lead + (ty - rows.lowerBound) * tilesW + 8 * j
                    // … then times Aᵀ: columns l, l + r, l − r, −r of each row (l, r).
                    @inline(__always) func row(_ i: Int, _ l: Tiles, _ r: Tiles) {
                        storeTiles(l, dst + (4 * i) * ld)
                        storeTiles(l + r, dst + (4 * i + 1) * ld)
                        storeTiles(l - r, dst + (4 * i + 2) * ld)
                        storeTiles(-r, dst + (4 * i + 3) * ld)
                    }
                    row(0, x0, x1)
                    row(1, x0 + z0, x1 + z1)
                    row(2, x0 - z0, x1 - z1)
                    row(3, -z0, -z1)
                }
            }
        }
    }

    /// dw [m][channels][3][3] = Gᵀ dU G from dU [16][m][channels].
    func untransformKernelGradient(_ du: UnsafePointer<Float>, outputChannels m: Int,
                                   into dw: UnsafeMutablePointer<Float>) {
        let pairs = m * channels
        for pair in 0..<pairs {
            @inline(__always) func row(_ i: Int) -> (Float, Float, Float) {
                timesGTransposed(du[(4 * i) * pairs + pair], du[(4 * i + 1) * pairs + pair],
                                 du[(4 * i + 2) * pairs + pair], du[(4 * i + 3) * pairs + pair])
            }
            // dU G row by row, then Gᵀ times each of its columns.
            let r0 = row(0), r1 = row(1), r2 = row(2), r3 = row(3)
            let c0 = timesGTransposed(r0.0, r1.0, r2.0, r3.0), c1 = timesGTransposed(r0.1, r1.1, r2.1, r3.1)
            let c2 = timesGTransposed(r0.2, r1.2, r2.2, r3.2)
            let kernel = dw + pair * 9
            (kernel[0], kernel[3], kernel[6]) = c0
            (kernel[1], kernel[4], kernel[7]) = c1
            (kernel[2], kernel[5], kernel[8]) = c2
        }
    }

    /// G·(a, b, c) for G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]].
    @inline(__always) func timesG(_ a: Float, _ b: Float, _ c: Float) -> (Float, Float, Float, Float) {
        (a, 0.5 * (a + b + c), 0.5 * (a - b + c), c)
    }

    /// Gᵀ·(a, b, c, d).
    @inline(__always) func timesGTransposed(_ a: Float, _ b: Float, _ c: Float, _ d: Float) -> (Float, Float, Float) {
        (a + 0.5 * (b + c), 0.5 * (b - c), 0.5 * (b + c) + d)
    }

    /// Lanes 2l and 2l + 1 from even[l] and odd[l].
    @inline(__always) func interleave(_ even: Tiles, _ odd: Tiles) -> SIMD16<Float> {
        var v = SIMD16<Float>()
        v.evenHalf = even
        v.oddHalf = odd
        return v
    }
}

/// One value for each of 8 tiles: the transforms' vector, two of which fill 16 image columns.
typealias Tiles = SIMD8<Float>

@inline(__always) func loadTiles(_ p: UnsafePointer<Float>) -> Tiles {
    UnsafeRawPointer(p).loadUnaligned(as: Tiles.self)
}

@inline(__always) func storeTiles(_ v: Tiles, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: Tiles.self)
}

// Convolutions over NCHW images (Sources/HistoCore/Ops/Convolution.swift). conv2d, its input gradient (which is also
// conv_transpose2d's forward) and its weight gradient are each one GEMM per group, C = A·B, whose operands are read
// straight from the tensors (implicit GEMM; ConvDims.gatherGemm describes the three as GatherGemm values):
//   conv2d            C [Cout/g × N·Ho·Wo]       = w  · columns of x          (k runs over Cin/g × kh × kw)
//   backward input    C [Cin/g × N·H·W]          = wᵀ · dy read back through the taps: a gather, no scatter-add
//   backward weight   C [Cout/g × Cin/g·kh·kw]   = dy · columns of xᵀ         (k runs over N × Ho × Wo)
// conv_gemm_tiled stages TILE_K-deep slices of A and B in local memory and gives each work-item a WORK × WORK block
// of C; conv_gemm_direct (one work-item per output) serves per-group GEMMs too small to tile (depthwise convs).
// Long reductions are cut into slices summed by separate work-groups into partial results that conv_sum_splits adds
// in a fixed order: deterministic, no atomics. The im2col kernels serve the alternative path that hands the GEMMs
// to CLBlast (HISTODIFF_CONV=im2col).
#include "common.h"

// One GEMM axis (the columns j, or the reduction index k) as nested coordinates i = (a·mid + b)·last + c. Each point
// contributes an offset into B, a sample position (y, x) and an offset into the other operand (C for j, A for k).
typedef struct {
    int mid, last;
    int off_a;                         // B offset a·off_a
    int y_b, y0, x_c, x0;              // position (b·y_b + y0, c·x_c + x0)
    int second_a, second_b, second_c;  // other offset a·second_a + b·second_b + c·second_c
} AxisMap;

typedef struct { int off, y, x, second; } AxisPoint;

inline AxisPoint axis_at(const AxisMap* m, int a, int b, int c) {
    AxisPoint p;
    p.off = a * m->off_a;
    p.y = b * m->y_b + m->y0;
    p.x = c * m->x_c + m->x0;
    p.second = a * m->second_a + b * m->second_b + c * m->second_c;
    return p;
}

inline AxisPoint axis_point(const AxisMap* m, int i) {
    int c = i % m->last;
    i /= m->last;
    return axis_at(m, i / m->mid, i % m->mid, c);
}

// Per group g (of `groups`): C [m × n] = A [m × k] · B [k × n].
//   A(m, k) = a[g·a_group + m·a_m + kmap.second]
//   B(k, j) = b[g·b_group + jmap.off + kmap.off + (y/sy)·cols + x/sx] at (y, x) = jmap + kmap positions, when sy | y,
//             sx | x and the point lies in the rows × cols grid; 0 otherwise (zero padding, stride gaps)
//   C(m, j) = c[g·c_group + m·c_m + jmap.second]
// Reduction slice s (dimension 2 of the range is groups × slices) sums k in [s·k_chunk, (s+1)·k_chunk) into
// c + s·c_split. b_k_fastest: B is contiguous along k, so it is staged k-major (coalesced reads).
typedef struct {
    int m, n, k, groups;
    int a_group, a_m;
    int b_group, rows, cols, sy, sx;
    int c_group, c_m;
    int k_chunk, c_split;
    int b_k_fastest;
    AxisMap jmap, kmap;
} GatherGemm;

inline float gather_b(__global const float* b, const GatherGemm* p, int base, int y, int x) {
    if (y < 0 || x < 0) return 0.0f;
    if (p->sy != 1) {
        if (y % p->sy != 0) return 0.0f;
        y /= p->sy;
    }
    if (p->sx != 1) {
        if (x % p->sx != 0) return 0.0f;
        x /= p->sx;
    }
    return y < p->rows && x < p->cols ? b[base + y * p->cols + x] : 0.0f;
}

// ---- conv_gemm_tiled: a 64 × 64 tile of C per work-group of 16 × 16, each work-item 4 × 4 of it ----
// Work-item (lx, ly) owns rows ly + 16·i and columns lx + 16·j: neighbours read neighbouring columns of the B tile
// and write neighbouring outputs (pixels), and all of a row of work-items shares each A value (a broadcast).
// Both tiles carry one pad column so that k-major staging writes do not collide in local-memory banks.
#define TILE_M 64
#define TILE_N 64
#define TILE_K 16
#define WORK 4
#define GROUP_N (TILE_N / WORK)
#define GROUP_M (TILE_M / WORK)
#define GROUP_SIZE (GROUP_N * GROUP_M)

// The k-axis points of one slice, decoded once per work-group (not per element) into local tables.
inline void decode_k(const GatherGemm* p, int k, int slot, __local int* off, __local int* y, __local int* x, __local int* second) {
    AxisPoint q = axis_point(&p->kmap, k);
    off[slot] = q.off; y[slot] = q.y; x[slot] = q.x; second[slot] = q.second;
}

__kernel __attribute__((reqd_work_group_size(GROUP_N, GROUP_M, 1)))
void conv_gemm_tiled(__global const float* a, int ao, __global const float* b, int bo,
                     __global const float* bias, int biaso, int has_bias,
                     __global float* c, int co, GatherGemm p) {
    __local float a_tile[TILE_K][TILE_M + 1];
    __local float b_tile[TILE_K][TILE_N + 1];
    __local int j_off[TILE_N], j_y[TILE_N], j_x[TILE_N], j_c[TILE_N];
    __local int k_off[TILE_K], k_y[TILE_K], k_x[TILE_K], k_a[TILE_K];
    const int lx = get_local_id(0), ly = get_local_id(1), l = ly * GROUP_N + lx;
    const int j0 = get_group_id(0) * TILE_N, m0 = get_group_id(1) * TILE_M;
    const int g = get_group_id(2) % p.groups, slice = get_group_id(2) / p.groups;
    const int k_begin = slice * p.k_chunk, k_end = min(k_begin + p.k_chunk, p.k);
    const int a_base = ao + g * p.a_group, b_base = bo + g * p.b_group;

    if (l < TILE_N) {
        AxisPoint q = axis_point(&p.jmap, j0 + l);
        j_off[l] = q.off; j_y[l] = q.y; j_x[l] = q.x; j_c[l] = q.second;
    }
    if (l < TILE_K) decode_k(&p, k_begin + l, l, k_off, k_y, k_x, k_a);
    barrier(CLK_LOCAL_MEM_FENCE);

    float acc[WORK][WORK];
    for (int i = 0; i < WORK; ++i)
        for (int j = 0; j < WORK; ++j) acc[i][j] = 0.0f;

    for (int k0 = k_begin; k0 < k_end; k0 += TILE_K) {
        // A is staged k-major: consecutive work-items read consecutive k.
#pragma unroll
        for (int r = 0; r < TILE_K * TILE_M / GROUP_SIZE; ++r) {
            int e = l + r * GROUP_SIZE, kk = e % TILE_K, mm = e / TILE_K;
            bool inside = m0 + mm < p.m && k0 + kk < k_end;
            a_tile[kk][mm] = inside ? a[a_base + (m0 + mm) * p.a_m + k_a[kk]] : 0.0f;
        }
#pragma unroll
        for (int r = 0; r < TILE_K * TILE_N / GROUP_SIZE; ++r) {
            int e = l + r * GROUP_SIZE;
            int kk = p.b_k_fastest ? e % TILE_K : e / TILE_N, jj = p.b_k_fastest ? e / TILE_K : e % TILE_N;
            bool inside = j0 + jj < p.n && k0 + kk < k_end;
            b_tile[kk][jj] = inside ? gather_b(b, &p, b_base + j_off[jj] + k_off[kk], j_y[jj] + k_y[kk], j_x[jj] + k_x[kk]) : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
        for (int kk = 0; kk < TILE_K; ++kk) {
            float av[WORK], bv[WORK];
            for (int i = 0; i < WORK; ++i) av[i] = a_tile[kk][ly + i * GROUP_M];
            for (int j = 0; j < WORK; ++j) bv[j] = b_tile[kk][lx + j * GROUP_N];
            for (int i = 0; i < WORK; ++i)
                for (int j = 0; j < WORK; ++j) acc[i][j] += av[i] * bv[j];
        }
        // The tables are read only while staging, so the next slice's can be decoded now.
        if (l < TILE_K) decode_k(&p, k0 + TILE_K + l, l, k_off, k_y, k_x, k_a);
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    const int c_base = co + slice * p.c_split + g * p.c_group;
    for (int i = 0; i < WORK; ++i) {
        int m = m0 + ly + i * GROUP_M;
        if (m >= p.m) continue;
        float add = has_bias && slice == 0 ? bias[biaso + g * p.m + m] : 0.0f;
        for (int j = 0; j < WORK; ++j) {
            int jj = lx + j * GROUP_N;
            if (j0 + jj < p.n) c[c_base + m * p.c_m + j_c[jj]] = acc[i][j] + add;
        }
    }
}

// ---- conv_gemm_direct: one work-item per element of C (range n × m × groups·slices) ----
__kernel void conv_gemm_direct(__global const float* a, int ao, __global const float* b, int bo,
                               __global const float* bias, int biaso, int has_bias,
                               __global float* c, int co, GatherGemm p) {
    const int j = get_global_id(0), m = get_global_id(1);
    if (j >= p.n || m >= p.m) return;
    const int g = get_global_id(2) % p.groups, slice = get_global_id(2) / p.groups;
    const int k_begin = slice * p.k_chunk, k_end = min(k_begin + p.k_chunk, p.k);
    const int a_row = ao + g * p.a_group + m * p.a_m;
    const AxisPoint jp = axis_point(&p.jmap, j);
    const int b_base = bo + g * p.b_group + jp.off;
    // Walk k as its nested coordinates: no division per step.
    int kc = k_begin % p.kmap.last, kb = (k_begin / p.kmap.last) % p.kmap.mid, ka = k_begin / p.kmap.last / p.kmap.mid;
    float acc = has_bias && slice == 0 ? bias[biaso + g * p.m + m] : 0.0f;
    for (int k = k_begin; k < k_end; ++k) {
        AxisPoint kp = axis_at(&p.kmap, ka, kb, kc);
        acc += a[a_row + kp.second] * gather_b(b, &p, b_base + kp.off, jp.y + kp.y, jp.x + kp.x);
        if (++kc == p.kmap.last) {
            kc = 0;
            if (++kb == p.kmap.mid) { kb = 0; ++ka; }
        }
    }
    c[co + slice * p.c_split + g * p.c_group + m * p.c_m + jp.second] = acc;
}

// y[i] = Σ over slices s (in order) of partial[s·n + i].
__kernel void conv_sum_slices(__global const float* partial, int po, __global float* y, int yo, int slices, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    float sum = 0.0f;
    for (int s = 0; s < slices; ++s) sum += partial[po + s * n + i];
    y[yo + i] = sum;
}

// ---- the im2col path (CLBlast GEMMs between these kernels) ----
// ConvDims.kernelShape: conv2d's view of the convolution, x [n, cin, h, w] ∗ w [cout, cin/groups, kh, kw].
typedef struct {
    int n, cin, h, w, cout, kh, kw, ho, wo, sh, sw, dh, dw, pt, pl, groups;
} ConvShape;

// Columns [images][cin·kh·kw][ho·wo] of images first, first + 1, …: row (ci, ky, kx) holds what every output position
// reads through that tap (0 in the padding). `n` counts the column elements.
__kernel void conv_im2col(__global const float* x, int xo, __global float* columns, int colo, ConvShape s, int first, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    int plane = s.ho * s.wo, taps = s.kh * s.kw;
    int p = i % plane, row = i / plane % (s.cin * taps), image = first + i / plane / (s.cin * taps);
    int ci = row / taps, t = row % taps;
    int iy = p / s.wo * s.sh - s.pt + t / s.kw * s.dh, ix = p % s.wo * s.sw - s.pl + t % s.kw * s.dw;
    bool inside = iy >= 0 && iy < s.h && ix >= 0 && ix < s.w;
    columns[colo + i] = inside ? x[xo + ((image * s.cin + ci) * s.h + iy) * s.w + ix] : 0.0f;
}

// dx (conv_transpose2d's output when has_bias) of images first, … from their column gradients: every input element
// gathers the column entries that read it. `n` counts the dx elements of these images.
__kernel void conv_col2im(__global const float* columns, int colo, __global const float* bias, int biaso, int has_bias,
                          __global float* x, int xo, ConvShape s, int first, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    int plane = s.ho * s.wo, taps = s.kh * s.kw;
    int ix = i % s.w, iy = i / s.w % s.h, ci = i / (s.w * s.h) % s.cin, image = i / (s.w * s.h * s.cin);
    __global const float* rows = columns + colo + (image * s.cin + ci) * taps * plane;
    float sum = has_bias ? bias[biaso + ci] : 0.0f;
    for (int ky = 0; ky < s.kh; ++ky) {
        int ny = iy + s.pt - ky * s.dh;
        if (ny < 0 || ny % s.sh != 0 || ny / s.sh >= s.ho) continue;
        for (int kx = 0; kx < s.kw; ++kx) {
            int nx = ix + s.pl - kx * s.dw;
            if (nx < 0 || nx % s.sw != 0 || nx / s.sw >= s.wo) continue;
            sum += rows[(ky * s.kw + kx) * plane + ny / s.sh * s.wo + nx / s.sw];
        }
    }
    x[xo + first * s.cin * s.h * s.w + i] = sum;
}

// y[i] = bias[channel of i] for NCHW y with `channels` planes of `plane` elements (before GEMMs that add to y).
__kernel void conv_fill_bias(__global const float* bias, int biaso, __global float* y, int yo, int channels, int plane, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    y[yo + i] = bias[biaso + i / plane % channels];
}

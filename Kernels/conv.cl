// Convolutions over NCHW images (Sources/HistoCore/Ops/Convolution.swift). conv2d, its input gradient (which is also
// conv_transpose2d's forward) and its weight gradient are each one GEMM per group, C = A·B, whose operands are read
// straight from the tensors (implicit GEMM; ConvDims.gatherGemm describes the three as GatherGemm values):
//   conv2d            C [Cout/g × N·Ho·Wo]       = w  · columns of x          (k runs over Cin/g × kh × kw)
//   backward input    C [Cin/g × N·H·W]          = wᵀ · dy read back through the taps: a gather, no scatter-add
//   backward weight   C [Cout/g × Cin/g·kh·kw]   = dy · columns of xᵀ         (k runs over N × Ho × Wo)
// conv_gemm_tiled stages TILE_K-deep slices of A and B in local memory and gives each work-item a WORK_M × WORK_N
// block of C; conv_gemm_image, for GEMMs whose columns are whole image rows (forward, input gradient), is the same on
// GPUs and reads register blocks straight from the tensors on CPU devices; conv_gemm_direct (one work-item per
// output) serves per-group GEMMs too small to tile (depthwise convs). Products accumulate by fma(): common.h turns off
// contraction, and a separate multiply and add cost PoCL twice the instructions.
// Long reductions are cut into slices summed by separate work-groups into partial results that conv_sum_slices adds
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

// The grid index of position n along an axis sampled every `stride` over `size` points: n / stride when n ≥ 0,
// the stride divides n and the index is below size; else −1 (padding, or a gap between strided samples).
inline int grid_index(int n, int stride, int size) {
    if (n < 0) return -1;
    if (stride != 1) {
        if (n % stride != 0) return -1;
        n /= stride;
    }
    return n < size ? n : -1;
}

inline float gather_b(__global const float* b, const GatherGemm* p, int base, int y, int x) {
    int row = grid_index(y, p->sy, p->rows), col = grid_index(x, p->sx, p->cols);
    return row >= 0 && col >= 0 ? b[base + row * p->cols + col] : 0.0f;
}

// ---- conv_gemm_tiled: a TILE_M × TILE_N tile of C per work-group, WORK_M × WORK_N of it per work-item ----
// Each TILE_K-deep step stages a slice of A and of B in local memory; work-item (lx, ly) then owns rows
// ly·WORK_M + i and the WORK_N neighbouring columns lx·WORK_N + j, so each step it reads one WORK_N-vector of B and
// WORK_M scalars of A per k (shared by all work-items of a row or column) into 4 × 16 register accumulators.
// Staging copies runs of RUN consecutive points along the contiguous axis (k for A; j, or k for the weight gradient,
// for B): a run that stays within one image row (or weight row) and inside the tensor is a plain strided copy, and
// only runs that cross an edge, the padding or a stride gap take the per-element gather.
// Sizes: 64 work-items of 4 × 16 outputs. A work-item's 16-wide vector multiply-adds fill a CPU's SIMD width (PoCL
// runs them as AVX-512; a 4 × 4 block measured 3× slower there) and 64 accumulators stay within a GPU's register
// budget; TILE_K = 32 halves the barriers of 16 (measured ~10% faster), and both tiles take 17 KB of local memory.
#define TILE_M 64
#define TILE_N 64
#define TILE_K 32
#define WORK_M 4
#define WORK_N 16
#define GROUP_N (TILE_N / WORK_N)
#define GROUP_M (TILE_M / WORK_M)
#define GROUP_SIZE (GROUP_N * GROUP_M)
#define RUN 8

// Local tables of the tile's columns and of the current k slice, decoded once per work-group, not per element.
typedef struct {
    int off[TILE_N], y[TILE_N], x[TILE_N], c[TILE_N];
    int flat[TILE_N / RUN];      // the run starting here shares (a, b): consecutive x, all j < n
} ColumnTable;

typedef struct {
    int off[TILE_K], y[TILE_K], x[TILE_K], a[TILE_K];
    int flat[TILE_K / RUN];      // the run shares (a, b) and lies before k_end
    int a_flat[TILE_K / RUN];    // the run's A offsets are consecutive and lie before k_end
} SliceTable;

inline void decode_slice(__local SliceTable* t, const GatherGemm* p, int k0, int k_end, int lid) {
    for (int s = lid; s < TILE_K; s += GROUP_SIZE) {
        int k = k0 + s;
        AxisPoint q = axis_point(&p->kmap, k);
        t->off[s] = q.off; t->y[s] = q.y; t->x[s] = q.x; t->a[s] = q.second;
        if (s % RUN == 0) {
            bool whole = k + RUN <= k_end;
            t->flat[s / RUN] = whole && k % p->kmap.last + RUN <= p->kmap.last;
            // Offsets grow strictly with k in every conv map, so a span of RUN − 1 means consecutive.
            t->a_flat[s / RUN] = whole && axis_point(&p->kmap, k + RUN - 1).second - q.second == RUN - 1;
        }
    }
}

// The local-memory tiles are declared by the calling kernel (OpenCL C allows __local variables only at kernel scope).
typedef struct {
    float a[TILE_K][TILE_M + 1];
    float b[TILE_K][TILE_N + 1];
    ColumnTable columns;
    SliceTable slice_table;
} GemmTiles;

inline void gemm_tiled(__global const float* a, int ao, __global const float* b, int bo,
                       __global const float* bias, int biaso, int has_bias,
                       __global float* c, int co, GatherGemm p, __local GemmTiles* tiles) {
    __local float (*a_tile)[TILE_M + 1] = tiles->a;
    __local float (*b_tile)[TILE_N + 1] = tiles->b;
    __local ColumnTable* columns = &tiles->columns;
    __local SliceTable* slice_table = &tiles->slice_table;
    const int lx = get_local_id(0), ly = get_local_id(1), lid = ly * GROUP_N + lx;
    const int j0 = get_group_id(0) * TILE_N, m0 = get_group_id(1) * TILE_M;
    const int g = get_group_id(2) % p.groups, slice = get_group_id(2) / p.groups;
    const int k_begin = slice * p.k_chunk, k_end = min(k_begin + p.k_chunk, p.k);
    const int a_base = ao + g * p.a_group, b_base = bo + g * p.b_group;
    const bool b_along_k = p.b_k_fastest;
    const int b_step = b_along_k ? p.kmap.x_c : p.jmap.x_c;

    for (int s = lid; s < TILE_N; s += GROUP_SIZE) {
        int j = j0 + s;
        AxisPoint q = axis_point(&p.jmap, j);
        columns->off[s] = q.off; columns->y[s] = q.y; columns->x[s] = q.x; columns->c[s] = q.second;
        if (s % RUN == 0) columns->flat[s / RUN] = j + RUN <= p.n && j % p.jmap.last + RUN <= p.jmap.last;
    }
    decode_slice(slice_table, &p, k_begin, k_end, lid);
    barrier(CLK_LOCAL_MEM_FENCE);

    float16 acc0 = 0.0f, acc1 = 0.0f, acc2 = 0.0f, acc3 = 0.0f;
    for (int k0 = k_begin; k0 < k_end; k0 += TILE_K) {
        for (int r = 0; r < TILE_K * TILE_M / RUN / GROUP_SIZE; ++r) {
            int e = lid + r * GROUP_SIZE, kk = e % (TILE_K / RUN) * RUN, mm = e / (TILE_K / RUN);
            bool row = m0 + mm < p.m;
            __global const float* src = a + a_base + (m0 + mm) * p.a_m;
            if (row && slice_table->a_flat[kk / RUN]) {
                for (int t = 0; t < RUN; ++t) a_tile[kk + t][mm] = src[slice_table->a[kk] + t];
            } else {
                for (int t = 0; t < RUN; ++t)
                    a_tile[kk + t][mm] = row && k0 + kk + t < k_end ? src[slice_table->a[kk + t]] : 0.0f;
            }
        }
        for (int r = 0; r < TILE_K * TILE_N / RUN / GROUP_SIZE; ++r) {
            int e = lid + r * GROUP_SIZE;
            int kk = b_along_k ? e % (TILE_K / RUN) * RUN : e / (TILE_N / RUN);
            int jj = b_along_k ? e / (TILE_K / RUN) : e % (TILE_N / RUN) * RUN;
            int y = columns->y[jj] + slice_table->y[kk], x = columns->x[jj] + slice_table->x[kk];
            bool flat = b_along_k ? slice_table->flat[kk / RUN] && j0 + jj < p.n : columns->flat[jj / RUN] && k0 + kk < k_end;
            if (flat && p.sy == 1 && p.sx == 1 && y >= 0 && y < p.rows && x >= 0 && x + (RUN - 1) * b_step < p.cols) {
                __global const float* src = b + b_base + columns->off[jj] + slice_table->off[kk] + y * p.cols + x;
                if (b_along_k) {
                    for (int t = 0; t < RUN; ++t) b_tile[kk + t][jj] = src[t * b_step];
                } else {
                    for (int t = 0; t < RUN; ++t) b_tile[kk][jj + t] = src[t * b_step];
                }
            } else {
                for (int t = 0; t < RUN; ++t) {
                    int tk = b_along_k ? kk + t : kk, tj = b_along_k ? jj : jj + t;
                    b_tile[tk][tj] = j0 + tj < p.n && k0 + tk < k_end
                        ? gather_b(b, &p, b_base + columns->off[tj] + slice_table->off[tk], columns->y[tj] + slice_table->y[tk],
                                   columns->x[tj] + slice_table->x[tk])
                        : 0.0f;
                }
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int kk = 0; kk < TILE_K; ++kk) {
            __local const float* ar = &a_tile[kk][ly * WORK_M];
            float16 bv = vload16(0, &b_tile[kk][lx * WORK_N]);
            acc0 = fma(ar[0], bv, acc0);
            acc1 = fma(ar[1], bv, acc1);
            acc2 = fma(ar[2], bv, acc2);
            acc3 = fma(ar[3], bv, acc3);
        }
        // The slice table is read only while staging: decode the next one now.
        decode_slice(slice_table, &p, k0 + TILE_K, k_end, lid);
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    const float16 accs[WORK_M] = {acc0, acc1, acc2, acc3};
    __global float* out = c + co + slice * p.c_split + g * p.c_group;
    for (int i = 0; i < WORK_M; ++i) {
        int m = m0 + ly * WORK_M + i;
        if (m >= p.m) continue;
        float values[WORK_N];
        vstore16(accs[i], 0, values);
        float add = has_bias && slice == 0 ? bias[biaso + g * p.m + m] : 0.0f;
        for (int j = 0; j < WORK_N; ++j) {
            int jj = lx * WORK_N + j;
            if (j0 + jj < p.n) out[m * p.c_m + columns->c[jj]] = values[j] + add;
        }
    }
}

__kernel __attribute__((reqd_work_group_size(GROUP_N, GROUP_M, 1)))
void conv_gemm_tiled(__global const float* a, int ao, __global const float* b, int bo,
                     __global const float* bias, int biaso, int has_bias,
                     __global float* c, int co, GatherGemm p) {
    __local GemmTiles tiles;
    gemm_tiled(a, ao, b, bo, bias, biaso, has_bias, c, co, p, &tiles);
}

#ifdef CPU_DEVICE
// ---- conv_gemm_image on CPU devices: register blocks read straight from the tensors ----
// The launch is conv_gemm_tiled's (a TILE_M × TILE_N tile of C per work-group of GROUP_SIZE work-items), but the
// driver runs a work-group as a loop over its work-items, so local memory only adds copies: the first
// IMAGE_ITEMS work-items each own IMAGE_M rows × IMAGE_N columns of the tile and the rest have nothing to do. A block
// keeps 16 float16 accumulators in registers (AVX-512 has 32) and each k step reads IMAGE_M weights and two 16-wide
// runs of B, so that multiply-adds, not loads, set the pace. Columns are image pixels: 16 of them in one image row
// are consecutive floats of B at every k, read by one vector load (shifted and masked at the image's left and right
// edges); other runs (row ends, strides) gather their elements one by one.
#define IMAGE_M 8
#define IMAGE_RUNS 2
#define IMAGE_N (16 * IMAGE_RUNS)
#define IMAGE_ITEMS ((TILE_M / IMAGE_M) * (TILE_N / IMAGE_N))

// Elements x … x + 15 of an image row of `cols` ≥ 16 floats, 0 outside it, from loads inside the row. Most convs
// pad by 1, so a run reaches one element past either edge: one load moved by a lane; wider reaches go element by element.
inline float16 load_row_masked(__global const float* row, int x, int cols) {
    if (x == -1) {
        float16 v = vload16(0, row);
        return (float16)(0.0f, v.s0123, v.s4567, v.s89ab, v.scde);
    }
    if (x == cols - 15) {
        float16 v = vload16(0, row + cols - 16);
        return (float16)(v.s1234, v.s5678, v.s9abc, v.sdef, 0.0f);
    }
    float v[16];
    for (int t = 0; t < 16; ++t) v[t] = x + t >= 0 && x + t < cols ? row[x + t] : 0.0f;
    return vload16(0, v);
}

// Elements x … x + 15 of row y of the B plane at base, 0 outside the plane (B unstrided, cols ≥ 16).
__attribute__((always_inline)) inline float16 load_row(__global const float* b, const GatherGemm* p, int base, int y, int x) {
    if (y < 0 || y >= p->rows) return (float16)(0.0f);
    __global const float* row = b + base + y * p->cols;
    return x >= 0 && x + 16 <= p->cols ? vload16(0, row + x) : load_row_masked(row, x, p->cols);
}

// A run of 16 columns j, …, j + 15: `whole` when they are consecutive pixels of one image row (then B along the run,
// and C, are consecutive floats); its first column's offset, position and C offset, and each column's for gathers.
typedef struct {
    bool whole;
    int off, y, x, c;
    int offs[16], ys[16], xs[16], cs[16];
    int count;   // columns below n
} ColumnRun;

inline void column_run(ColumnRun* r, const GatherGemm* p, int j) {
    r->count = clamp(p->n - j, 0, 16);
    for (int t = 0; t < 16; ++t) {
        AxisPoint q = axis_point(&p->jmap, min(j + t, p->n - 1));
        r->offs[t] = q.off; r->ys[t] = q.y; r->xs[t] = q.x; r->cs[t] = q.second;
    }
    r->off = r->offs[0]; r->y = r->ys[0]; r->x = r->xs[0]; r->c = r->cs[0];
    r->whole = r->count == 16 && j % p->jmap.last + 16 <= p->jmap.last && p->jmap.x_c == 1 && p->jmap.second_c == 1
               && p->sy == 1 && p->sx == 1 && p->cols >= 16;
}

// B along a run at reduction point kp; `whole` is the run's (a constant at each call, so that the loop over k
// compiles without the gather when every run of the block is whole).
__attribute__((always_inline)) inline float16 load_run(__global const float* b, const GatherGemm* p, const ColumnRun* r,
                                                       int base, AxisPoint kp, bool whole) {
    if (whole) return load_row(b, p, base + r->off + kp.off, r->y + kp.y, r->x + kp.x);
    float v[16];
    for (int t = 0; t < 16; ++t)
        v[t] = t < r->count ? gather_b(b, p, base + r->offs[t] + kp.off, r->ys[t] + kp.y, r->xs[t] + kp.x) : 0.0f;
    return vload16(0, v);
}

inline void store_run(__global float* out, const ColumnRun* r, float16 v) {
    if (r->whole) { vstore16(v, 0, out + r->c); return; }
    float values[16];
    vstore16(v, 0, values);
    for (int t = 0; t < r->count; ++t) out[r->cs[t]] = values[t];
}

// acc[i][r] += Σ over k in [k_begin, k_end) of A(row i, k) · B(k, run r). Row i is at a_rows + a_offsets[i].
__attribute__((always_inline)) inline void accumulate_block(float16 acc[IMAGE_M][IMAGE_RUNS], __global const float* b,
                                                            const GatherGemm* p, const ColumnRun* runs, int b_base,
                                                            __global const float* a_rows, const int* a_offsets,
                                                            int k_begin, int k_end, bool whole) {
    // Walk k as its nested coordinates: no division per step.
    int kc = k_begin % p->kmap.last, kb = (k_begin / p->kmap.last) % p->kmap.mid, ka = k_begin / p->kmap.last / p->kmap.mid;
    AxisPoint kp = axis_at(&p->kmap, ka, kb, kc);
    for (int k = k_begin; k < k_end; ++k) {
        float16 bv[IMAGE_RUNS];
#pragma unroll
        for (int r = 0; r < IMAGE_RUNS; ++r) bv[r] = load_run(b, p, &runs[r], b_base, kp, whole);
        __global const float* a_col = a_rows + kp.second;
#pragma unroll
        for (int i = 0; i < IMAGE_M; ++i) {
            float16 av = (float16)(a_col[a_offsets[i]]);
#pragma unroll
            for (int r = 0; r < IMAGE_RUNS; ++r) acc[i][r] = fma(av, bv[r], acc[i][r]);
        }
        if (++kc == p->kmap.last) {
            kc = 0;
            if (++kb == p->kmap.mid) { kb = 0; ++ka; }
            kp = axis_at(&p->kmap, ka, kb, kc);
        } else {
            kp.x += p->kmap.x_c;
            kp.second += p->kmap.second_c;
        }
    }
}

inline void gemm_image_blocks(__global const float* a, int ao, __global const float* b, int bo,
                              __global const float* bias, int biaso, int has_bias,
                              __global float* c, int co, GatherGemm p) {
    const int lid = get_local_id(1) * GROUP_N + get_local_id(0);
    // Consecutive work-items share their columns (and the B they read) and step through the tile's rows.
    const int m0 = get_group_id(1) * TILE_M + lid % (TILE_M / IMAGE_M) * IMAGE_M;
    const int j0 = get_group_id(0) * TILE_N + lid / (TILE_M / IMAGE_M) * IMAGE_N;
    if (lid >= IMAGE_ITEMS || m0 >= p.m || j0 >= p.n) return;
    const int g = get_group_id(2) % p.groups, slice = get_group_id(2) / p.groups;
    const int k_begin = slice * p.k_chunk, k_end = min(k_begin + p.k_chunk, p.k);
    ColumnRun runs[IMAGE_RUNS];
    bool whole = true;
    for (int r = 0; r < IMAGE_RUNS; ++r) {
        column_run(&runs[r], &p, j0 + 16 * r);
        whole = whole && runs[r].whole;
    }
    // A block that ends past m reads its last row again for the missing ones (their results are not stored).
    __global const float* a_rows = a + ao + g * p.a_group + m0 * p.a_m;
    int a_offsets[IMAGE_M];
#pragma unroll
    for (int i = 0; i < IMAGE_M; ++i) a_offsets[i] = min(i, p.m - 1 - m0) * p.a_m;

    float16 acc[IMAGE_M][IMAGE_RUNS];
#pragma unroll
    for (int i = 0; i < IMAGE_M; ++i)
#pragma unroll
        for (int r = 0; r < IMAGE_RUNS; ++r) acc[i][r] = 0.0f;
    if (whole) accumulate_block(acc, b, &p, runs, bo + g * p.b_group, a_rows, a_offsets, k_begin, k_end, true);
    else accumulate_block(acc, b, &p, runs, bo + g * p.b_group, a_rows, a_offsets, k_begin, k_end, false);

    __global float* out = c + co + slice * p.c_split + g * p.c_group;
#pragma unroll
    for (int i = 0; i < IMAGE_M; ++i) {
        int m = m0 + i;
        if (m >= p.m) break;
        float add = has_bias && slice == 0 ? bias[biaso + g * p.m + m] : 0.0f;
        for (int r = 0; r < IMAGE_RUNS; ++r) store_run(out + m * p.c_m, &runs[r], acc[i][r] + add);
    }
}

#endif

// ---- conv_gemm_image: the GEMMs whose columns are image pixels (forward, input gradient), launched like
// conv_gemm_tiled; GPUs run the tiled GEMM, CPU devices the register blocks above.
__kernel __attribute__((reqd_work_group_size(GROUP_N, GROUP_M, 1)))
void conv_gemm_image(__global const float* a, int ao, __global const float* b, int bo,
                     __global const float* bias, int biaso, int has_bias,
                     __global float* c, int co, GatherGemm p) {
#ifdef CPU_DEVICE
    gemm_image_blocks(a, ao, b, bo, bias, biaso, has_bias, c, co, p);
#else
    __local GemmTiles tiles;
    gemm_tiled(a, ao, b, bo, bias, biaso, has_bias, c, co, p, &tiles);
#endif
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
// reads through that tap (0 in the padding). Range (ox, oy, image·cin·kh·kw + row), so that only whole rows divide.
__kernel void conv_im2col(__global const float* x, int xo, __global float* columns, int colo, ConvShape s, int first) {
    int ox = get_global_id(0), oy = get_global_id(1), r = get_global_id(2);
    int taps = s.kh * s.kw, row = r % (s.cin * taps), image = first + r / (s.cin * taps);
    int ci = row / taps, ky = row % taps / s.kw, kx = row % s.kw;
    int iy = oy * s.sh - s.pt + ky * s.dh, ix = ox * s.sw - s.pl + kx * s.dw;
    bool inside = iy >= 0 && iy < s.h && ix >= 0 && ix < s.w;
    columns[colo + (r * s.ho + oy) * s.wo + ox] = inside ? x[xo + ((image * s.cin + ci) * s.h + iy) * s.w + ix] : 0.0f;
}

// dx (conv_transpose2d's output when has_bias) of images first, … from their column gradients: every input element
// gathers the column entries that read it. Range (ix, iy, image·cin + ci).
__kernel void conv_col2im(__global const float* columns, int colo, __global const float* bias, int biaso, int has_bias,
                          __global float* x, int xo, ConvShape s, int first) {
    int ix = get_global_id(0), iy = get_global_id(1), r = get_global_id(2);
    int plane = s.ho * s.wo, taps = s.kh * s.kw;
    __global const float* rows = columns + colo + r * taps * plane;
    float sum = has_bias ? bias[biaso + r % s.cin] : 0.0f;
    for (int ky = 0; ky < s.kh; ++ky) {
        int oy = grid_index(iy + s.pt - ky * s.dh, s.sh, s.ho);
        if (oy < 0) continue;
        for (int kx = 0; kx < s.kw; ++kx) {
            int ox = grid_index(ix + s.pl - kx * s.dw, s.sw, s.wo);
            if (ox >= 0) sum += rows[(ky * s.kw + kx) * plane + oy * s.wo + ox];
        }
    }
    x[xo + ((first * s.cin + r) * s.h + iy) * s.w + ix] = sum;
}

// y[i] = bias[channel of i] for NCHW y with `channels` planes of `plane` elements (before GEMMs that add to y).
__kernel void conv_fill_bias(__global const float* bias, int biaso, __global float* y, int yo, int channels, int plane, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    y[yo + i] = bias[biaso + i / plane % channels];
}

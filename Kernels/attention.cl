// Attention (Sources/HistoCore/Ops/Attention.swift). Scaled-dot-product attention in the flash-attention style:
// no [N, M] matrix reaches global memory. A work-group owns ATT_ROWS rows (queries; keys in the dK/dV pass), one
// work-item per row with its accumulators in private memory, and the other side streams through local memory in
// blocks of ATT_BLOCK rows, ATT_DEPTH columns at a time. Any depth works: dot products loop over depth chunks,
// and outputs wider than ATT_DEPTH are split into column chunks along the third range dimension (each chunk
// recomputes its logits). Work-items compute on float8 vectors; a tile that feeds dot products with the
// work-item's row is stored transposed, so that lanes run along the block's rows and no sums across lanes are
// needed. The backward pass recomputes P blockwise from q, k and the bias: the dq pass with an online softmax,
// leaving each row's log-sum-exp for the dk/dv and bias passes, which take P = exp(logits − lse); the bias
// gradient is gathered per bias element, so broadcast sums need no atomics and are deterministic.
#include "common.h"
#define ATT_ROWS 64
#define ATT_BLOCK 32
#define ATT_DEPTH 32
#define ATT_LANES 8
#define ATT_VECS (ATT_DEPTH / ATT_LANES)
#define ATT_BLOCK_VECS (ATT_BLOCK / ATT_LANES)
#define ATT_TILE_VECS (ATT_BLOCK * ATT_VECS)

typedef float8 vec;  // ATT_LANES lanes

// q [B, H, N, D], k [B, H, M, D], v [B, H, M, Dv], bias [bias_batch, bias_heads, N, M] (bias_batch 0: no bias).
typedef struct { int batch, heads, queries, keys, depth, value_depth, bias_batch, bias_heads; } AttentionShape;

inline int chunk_count(int width) { return (width + ATT_DEPTH - 1) / ATT_DEPTH; }

// Element offset of the bias slice that item b·H + h adds.
inline int bias_offset(AttentionShape a, int item) {
    int b = a.bias_batch == 1 ? 0 : item / a.heads, h = a.bias_heads == 1 ? 0 : item % a.heads;
    return (b * a.bias_heads + h) * a.queries * a.keys;
}

inline int8 lanes_below(int count) { return (int8)(0, 1, 2, 3, 4, 5, 6, 7) < (int8)(count); }

inline float lane_sum(vec v) {
    float4 a = v.lo + v.hi;
    float2 b = a.lo + a.hi;
    return b.x + b.y;
}

inline float lane_max(vec v) {
    float4 a = fmax(v.lo, v.hi);
    float2 b = fmax(a.lo, a.hi);
    return fmax(b.x, b.y);
}

// ATT_LANES floats from p, of which the first `count` exist (zero past them).
inline vec load_vec(__global const float* p, int count) {
    if (count >= ATT_LANES) return vload8(0, p);
    vec v = (vec)(0.0f);
    float* lanes = (float*)&v;
    for (int l = 0; l < count; ++l) lanes[l] = p[l];
    return v;
}

inline void store_vec(__global float* p, int count, vec v) {
    if (count >= ATT_LANES) { vstore8(v, 0, p); return; }
    float* lanes = (float*)&v;
    for (int l = 0; l < count; ++l) p[l] = lanes[l];
}

// Rows [0, rows) and columns [col0, col0 + ATT_DEPTH) of a row-major block of width `width` into
// tile [ATT_BLOCK][ATT_VECS], zero outside.
inline void load_tile(__global const float* src, int rows, int width, int col0, __local vec* tile) {
    for (int idx = get_local_id(0); idx < ATT_TILE_VECS; idx += ATT_ROWS) {
        int t = idx / ATT_VECS, c = col0 + idx % ATT_VECS * ATT_LANES;
        tile[idx] = t < rows ? load_vec(src + t * width + c, width - c) : (vec)(0.0f);
    }
}

// The same block transposed into tile [ATT_DEPTH][ATT_BLOCK_VECS], vectors running along the rows, for dot
// products of one row with every row of the block (no sums across lanes).
inline void load_tile_transposed(__global const float* src, int rows, int width, int col0, __local vec* tile) {
    __local float* columns = (__local float*)tile;
    for (int idx = get_local_id(0); idx < ATT_TILE_VECS; idx += ATT_ROWS) {
        int t = idx / ATT_VECS, c = idx % ATT_VECS * ATT_LANES;
        vec x = t < rows ? load_vec(src + t * width + col0 + c, width - col0 - c) : (vec)(0.0f);
        const float* lanes = (const float*)&x;
        for (int l = 0; l < ATT_LANES; ++l) columns[(c + l) * ATT_BLOCK + t] = lanes[l];
    }
}

// The tile loops below sum into copies of their accumulators, fully unrolled, so that the sums stay in registers
// across the loop: the caller's arrays live across barriers, which on CPU devices keeps them in memory.

// s[t] += row[col0 …] · block row t, from a transposed tile.
inline void dot_tile(__global const float* row, int col0, int width, __local const vec* tile, vec* s) {
    vec r[ATT_VECS], sum[ATT_BLOCK_VECS];
    for (int i = 0; i < ATT_VECS; ++i) r[i] = load_vec(row + col0 + i * ATT_LANES, width - col0 - i * ATT_LANES);
    const float* rd = (const float*)r;
#pragma unroll
    for (int i = 0; i < ATT_BLOCK_VECS; ++i) sum[i] = s[i];
    for (int d = 0; d < ATT_DEPTH; ++d) {
        float x = rd[d];
#pragma unroll
        for (int i = 0; i < ATT_BLOCK_VECS; ++i) sum[i] += x * tile[d * ATT_BLOCK_VECS + i];
    }
#pragma unroll
    for (int i = 0; i < ATT_BLOCK_VECS; ++i) s[i] = sum[i];
}

// acc += Σ_t w[t]·tile[t] (tile in row order).
inline void weighted_tile(const float* w, __local const vec* tile, vec* acc) {
    vec sum[ATT_VECS];
#pragma unroll
    for (int i = 0; i < ATT_VECS; ++i) sum[i] = acc[i];
    for (int t = 0; t < ATT_BLOCK; ++t) {
        float x = w[t];
#pragma unroll
        for (int i = 0; i < ATT_VECS; ++i) sum[i] += x * tile[t * ATT_VECS + i];
    }
#pragma unroll
    for (int i = 0; i < ATT_VECS; ++i) acc[i] = sum[i];
}

// s[t] += row · src[t] over the column chunks of a row-major [rows, width] block other than `last`, each staged
// transposed through `tile`. The caller then stages chunk `last` together with its other tiles (one barrier pair
// per block when every width fits one chunk). Every work-item of the group calls this (barriers).
inline void dot_leading_chunks(__global const float* row, __global const float* src, int rows, int width, int last,
                               __local vec* tile, vec* s) {
    int chunks = chunk_count(width);
    for (int step = 1; step < chunks; ++step) {
        int col0 = (last + step) % chunks * ATT_DEPTH;
        barrier(CLK_LOCAL_MEM_FENCE);
        load_tile_transposed(src, rows, width, col0, tile);
        barrier(CLK_LOCAL_MEM_FENCE);
        dot_tile(row, col0, width, tile, s);
    }
}

inline void zero(vec* v, int n) {
    for (int i = 0; i < n; ++i) v[i] = (vec)(0.0f);
}

// Logits of a block: s = scale·s + this row's bias (brow, when has_bias), −∞ past the last key of the block.
inline void logits(vec* s, float scale, int has_bias, __global const float* brow, int count) {
    for (int i = 0; i < ATT_BLOCK_VECS; ++i) {
        int left = count - i * ATT_LANES;
        vec bias = has_bias ? load_vec(brow + i * ATT_LANES, left) : (vec)(0.0f);
        s[i] = select((vec)(-INFINITY), s[i] * scale + bias, lanes_below(left));
    }
}

// Folds a block of logits into the running maximum and sum of exponentials; s becomes exp(s − new maximum).
// Returns the factor that rescales what was accumulated before.
inline float online_softmax(vec* s, float* top, float* sum) {
    vec m8 = s[0];
    for (int i = 1; i < ATT_BLOCK_VECS; ++i) m8 = fmax(m8, s[i]);
    float m = fmax(*top, lane_max(m8));
    if (m == -INFINITY) {
        zero(s, ATT_BLOCK_VECS);
        return 1.0f;
    }
    float alpha = exp(*top - m);
    vec block = (vec)(0.0f);
    for (int i = 0; i < ATT_BLOCK_VECS; ++i) { s[i] = exp(s[i] - m); block += s[i]; }
    *sum = *sum * alpha + lane_sum(block);
    *top = m;
    return alpha;
}

// out = softmax(logits)·v, columns chunk·ATT_DEPTH … of Dv for range dimension 2. Range [N↑, B·H, chunks(Dv)].
__kernel void attention_forward(__global const float* q, int qo, __global const float* k, int ko,
                                __global const float* v, int vo, __global const float* bias, int bo,
                                __global float* out, int oo, AttentionShape a, float scale) {
    __local vec ktile[ATT_TILE_VECS], vtile[ATT_TILE_VECS];
    int lid = get_local_id(0), row0 = get_group_id(0) * ATT_ROWS, item = get_global_id(1);
    int col0 = get_global_id(2) * ATT_DEPTH, row = min(row0 + lid, a.queries - 1), r = item * a.queries + row;
    int last = chunk_count(a.depth) - 1, has_bias = a.bias_batch > 0;
    __global const float* qrow = q + qo + r * a.depth;
    __global const float* kitem = k + ko + item * a.keys * a.depth;
    __global const float* vitem = v + vo + item * a.keys * a.value_depth;
    __global const float* brow = bias + bo + (has_bias ? bias_offset(a, item) + row * a.keys : 0);
    float top = -INFINITY, sum = 0.0f;
    vec acc[ATT_VECS], p[ATT_BLOCK_VECS];
    zero(acc, ATT_VECS);
    for (int j0 = 0; j0 < a.keys; j0 += ATT_BLOCK) {
        int count = min(ATT_BLOCK, a.keys - j0);
        __global const float* kblock = kitem + j0 * a.depth;
        zero(p, ATT_BLOCK_VECS);
        dot_leading_chunks(qrow, kblock, count, a.depth, last, ktile, p);
        barrier(CLK_LOCAL_MEM_FENCE);
        load_tile_transposed(kblock, count, a.depth, last * ATT_DEPTH, ktile);
        load_tile(vitem + j0 * a.value_depth, count, a.value_depth, col0, vtile);
        barrier(CLK_LOCAL_MEM_FENCE);
        dot_tile(qrow, last * ATT_DEPTH, a.depth, ktile, p);
        logits(p, scale, has_bias, brow + j0, count);
        float alpha = online_softmax(p, &top, &sum);
        for (int i = 0; i < ATT_VECS; ++i) acc[i] *= alpha;
        weighted_tile((float*)p, vtile, acc);
    }
    if (row0 + lid >= a.queries) return;
    for (int i = 0; i < ATT_VECS; ++i) {
        int c = col0 + i * ATT_LANES;
        store_vec(out + oo + r * a.value_depth + c, a.value_depth - c, acc[i] / sum);
    }
}

// dS of a block for this work-item's query row from its logits s and dP = dO·vᵀ (in dp): P∘(dP − rowsum(dO∘O)),
// with P = exp(s − lse).
inline void score_gradient(vec* s, const vec* dp, float lse, float rowdot) {
    for (int i = 0; i < ATT_BLOCK_VECS; ++i) s[i] = exp(s[i] - lse) * (dp[i] - rowdot);
}

// dq = scale·dS·K, columns chunk·ATT_DEPTH … of D, with dS = P∘(dP − rowsum(dO∘O)) and dP = dO·vᵀ: P comes
// from an online softmax over the key blocks (what was accumulated is rescaled when the running maximum grows, and
// divided by the sum of exponentials at the end), so no statistics pass is needed. The kernel leaves the row
// statistics for the key and bias gradients: stats[i·N + r] = log Σ exp(logits) and stats[B·H·N + i·N + r] =
// Σ dO·O. Range [N↑, B·H, chunks(D)].
__kernel void attention_backward_query(__global const float* q, int qo, __global const float* k, int ko,
                                       __global const float* v, int vo, __global const float* o, int oo,
                                       __global const float* dout, int doo, __global const float* bias, int bo,
                                       __global float* stats, int so, __global float* grads, int go,
                                       AttentionShape a, float scale) {
    __local vec ktile[ATT_TILE_VECS], vtile[ATT_TILE_VECS], kchunk[ATT_TILE_VECS];
    int lid = get_local_id(0), row0 = get_group_id(0) * ATT_ROWS, item = get_global_id(1), chunk = get_global_id(2);
    int row = min(row0 + lid, a.queries - 1), r = item * a.queries + row;
    int v_last = chunk_count(a.value_depth) - 1, has_bias = a.bias_batch > 0;
    __global const float* qrow = q + qo + r * a.depth;
    __global const float* orow = dout + doo + r * a.value_depth;
    __global const float* kitem = k + ko + item * a.keys * a.depth;
    __global const float* vitem = v + vo + item * a.keys * a.value_depth;
    __global const float* brow = bias + bo + (has_bias ? bias_offset(a, item) + row * a.keys : 0);
    vec dot = (vec)(0.0f);
    for (int c = 0; c < a.value_depth; c += ATT_LANES) {
        dot += load_vec(orow + c, a.value_depth - c) * load_vec(o + oo + r * a.value_depth + c, a.value_depth - c);
    }
    float rowdot = lane_sum(dot), top = -INFINITY, sum = 0.0f;
    vec acc[ATT_VECS], s[ATT_BLOCK_VECS], dp[ATT_BLOCK_VECS];
    zero(acc, ATT_VECS);
    for (int j0 = 0; j0 < a.keys; j0 += ATT_BLOCK) {
        int count = min(ATT_BLOCK, a.keys - j0);
        __global const float* kblock = kitem + j0 * a.depth;
        __global const float* vblock = vitem + j0 * a.value_depth;
        zero(s, ATT_BLOCK_VECS); zero(dp, ATT_BLOCK_VECS);
        // The key block's columns of this output chunk come last, staged also in row order for the dq update.
        dot_leading_chunks(qrow, kblock, count, a.depth, chunk, ktile, s);
        dot_leading_chunks(orow, vblock, count, a.value_depth, v_last, vtile, dp);
        barrier(CLK_LOCAL_MEM_FENCE);
        load_tile_transposed(kblock, count, a.depth, chunk * ATT_DEPTH, ktile);
        load_tile(kblock, count, a.depth, chunk * ATT_DEPTH, kchunk);
        load_tile_transposed(vblock, count, a.value_depth, v_last * ATT_DEPTH, vtile);
        barrier(CLK_LOCAL_MEM_FENCE);
        dot_tile(qrow, chunk * ATT_DEPTH, a.depth, ktile, s);
        dot_tile(orow, v_last * ATT_DEPTH, a.value_depth, vtile, dp);
        logits(s, scale, has_bias, brow + j0, count);
        float alpha = online_softmax(s, &top, &sum);
        for (int i = 0; i < ATT_VECS; ++i) acc[i] *= alpha;
        for (int i = 0; i < ATT_BLOCK_VECS; ++i) s[i] *= dp[i] - rowdot;
        weighted_tile((float*)s, kchunk, acc);
    }
    if (row0 + lid >= a.queries) return;
    if (chunk == 0) {
        stats[so + r] = top + log(sum);
        stats[so + a.batch * a.heads * a.queries + r] = rowdot;
    }
    for (int i = 0; i < ATT_VECS; ++i) {
        int c = chunk * ATT_DEPTH + i * ATT_LANES;
        store_vec(grads + go + r * a.depth + c, a.depth - c, scale * acc[i] / sum);
    }
}

// dk = scale·dSᵀ·Q and dv = Pᵀ·dO, one work-item per key, columns chunk·ATT_DEPTH … of each (a chunk past a
// side's width skips that side); query blocks stream through local memory. Range [M↑, B·H, chunks(max(D, Dv))].
__kernel void attention_backward_key(__global const float* q, int qo, __global const float* k, int ko,
                                     __global const float* v, int vo, __global const float* dout, int doo,
                                     __global const float* bias, int bo, __global const float* stats, int so,
                                     __global float* grads, int go, int dk_start, int dv_start, AttentionShape a, float scale) {
    __local vec qtile[ATT_TILE_VECS], otile[ATT_TILE_VECS], qchunk[ATT_TILE_VECS], ochunk[ATT_TILE_VECS];
    int lid = get_local_id(0), key0 = get_group_id(0) * ATT_ROWS, item = get_global_id(1), chunk = get_global_id(2);
    int key = min(key0 + lid, a.keys - 1), n = a.queries, j = item * a.keys + key, has_bias = a.bias_batch > 0;
    int k_chunks = chunk_count(a.depth), v_chunks = chunk_count(a.value_depth);
    int q_last = min(chunk, k_chunks - 1), o_last = min(chunk, v_chunks - 1);
    __global const float* krow = k + ko + j * a.depth;
    __global const float* vrow = v + vo + j * a.value_depth;
    __global const float* qitem = q + qo + item * n * a.depth;
    __global const float* oitem = dout + doo + item * n * a.value_depth;
    __global const float* bcolumn = bias + bo + (has_bias ? bias_offset(a, item) + key : 0);
    __global const float* lse = stats + so + item * n;
    __global const float* rowdot = stats + so + a.batch * a.heads * n + item * n;
    vec dk[ATT_VECS], dv[ATT_VECS], p[ATT_BLOCK_VECS], ds[ATT_BLOCK_VECS];
    zero(dk, ATT_VECS); zero(dv, ATT_VECS);
    for (int i0 = 0; i0 < n; i0 += ATT_BLOCK) {
        int count = min(ATT_BLOCK, n - i0);
        __global const float* qblock = qitem + i0 * a.depth;
        __global const float* oblock = oitem + i0 * a.value_depth;
        zero(p, ATT_BLOCK_VECS); zero(ds, ATT_BLOCK_VECS);
        // This output chunk's columns of the query and dO blocks come last, staged also in row order for the updates.
        dot_leading_chunks(krow, qblock, count, a.depth, q_last, qtile, p);
        dot_leading_chunks(vrow, oblock, count, a.value_depth, o_last, otile, ds);
        barrier(CLK_LOCAL_MEM_FENCE);
        load_tile_transposed(qblock, count, a.depth, q_last * ATT_DEPTH, qtile);
        load_tile(qblock, count, a.depth, q_last * ATT_DEPTH, qchunk);
        load_tile_transposed(oblock, count, a.value_depth, o_last * ATT_DEPTH, otile);
        load_tile(oblock, count, a.value_depth, o_last * ATT_DEPTH, ochunk);
        barrier(CLK_LOCAL_MEM_FENCE);
        dot_tile(krow, q_last * ATT_DEPTH, a.depth, qtile, p);
        dot_tile(vrow, o_last * ATT_DEPTH, a.value_depth, otile, ds);
        for (int i = 0; i < ATT_BLOCK_VECS; ++i) {
            int first = i0 + i * ATT_LANES, left = count - i * ATT_LANES;
            vec logit = p[i] * scale;
            if (has_bias) {
                vec column = (vec)(0.0f);
                float* lanes = (float*)&column;
                for (int l = 0; l < min(left, ATT_LANES); ++l) lanes[l] = bcolumn[(first + l) * a.keys];
                logit += column;
            }
            p[i] = select((vec)(0.0f), exp(logit - load_vec(lse + first, left)), lanes_below(left));
            ds[i] = p[i] * (ds[i] - load_vec(rowdot + first, left));
        }
        if (chunk < k_chunks) weighted_tile((float*)ds, qchunk, dk);
        if (chunk < v_chunks) weighted_tile((float*)p, ochunk, dv);
    }
    if (key0 + lid >= a.keys) return;
    for (int i = 0; i < ATT_VECS; ++i) {
        int c = chunk * ATT_DEPTH + i * ATT_LANES;
        if (chunk < k_chunks) store_vec(grads + go + dk_start + j * a.depth + c, a.depth - c, scale * dk[i]);
        if (chunk < v_chunks) store_vec(grads + go + dv_start + j * a.value_depth + c, a.value_depth - c, dv[i]);
    }
}

// dbias[slice, i, j] = Σ dS[b, h, i, j] over the items that add this bias slice (every b where the bias batch is
// 1, every h where its heads are 1), gathered in item order. Range [N↑, key blocks, bias slices].
__kernel void attention_backward_bias(__global const float* q, int qo, __global const float* k, int ko,
                                      __global const float* v, int vo, __global const float* dout, int doo,
                                      __global const float* bias, int bo, __global const float* stats, int so,
                                      __global float* grads, int go, int db_start, AttentionShape a, float scale) {
    __local vec ktile[ATT_TILE_VECS], vtile[ATT_TILE_VECS];
    int lid = get_local_id(0), row0 = get_group_id(0) * ATT_ROWS, j0 = get_group_id(1) * ATT_BLOCK;
    int slice = get_group_id(2), n = a.queries, m = a.keys, rows = a.batch * a.heads * n;
    int row = min(row0 + lid, n - 1), count = min(ATT_BLOCK, m - j0);
    int k_last = chunk_count(a.depth) - 1, v_last = chunk_count(a.value_depth) - 1;
    int bb = slice / a.bias_heads, hb = slice % a.bias_heads;
    int b_end = a.bias_batch == 1 ? a.batch : bb + 1, h_end = a.bias_heads == 1 ? a.heads : hb + 1;
    __global const float* brow = bias + bo + (slice * n + row) * m + j0;
    vec acc[ATT_BLOCK_VECS], s[ATT_BLOCK_VECS], dp[ATT_BLOCK_VECS];
    zero(acc, ATT_BLOCK_VECS);
    for (int b = a.bias_batch == 1 ? 0 : bb; b < b_end; ++b) {
        for (int h = a.bias_heads == 1 ? 0 : hb; h < h_end; ++h) {
            int item = b * a.heads + h, r = item * n + row;
            __global const float* qrow = q + qo + r * a.depth;
            __global const float* orow = dout + doo + r * a.value_depth;
            __global const float* kblock = k + ko + (item * m + j0) * a.depth;
            __global const float* vblock = v + vo + (item * m + j0) * a.value_depth;
            zero(s, ATT_BLOCK_VECS); zero(dp, ATT_BLOCK_VECS);
            dot_leading_chunks(qrow, kblock, count, a.depth, k_last, ktile, s);
            dot_leading_chunks(orow, vblock, count, a.value_depth, v_last, vtile, dp);
            barrier(CLK_LOCAL_MEM_FENCE);
            load_tile_transposed(kblock, count, a.depth, k_last * ATT_DEPTH, ktile);
            load_tile_transposed(vblock, count, a.value_depth, v_last * ATT_DEPTH, vtile);
            barrier(CLK_LOCAL_MEM_FENCE);
            dot_tile(qrow, k_last * ATT_DEPTH, a.depth, ktile, s);
            dot_tile(orow, v_last * ATT_DEPTH, a.value_depth, vtile, dp);
            logits(s, scale, 1, brow, count);
            score_gradient(s, dp, stats[so + r], stats[so + rows + r]);
            for (int i = 0; i < ATT_BLOCK_VECS; ++i) acc[i] += s[i];
        }
    }
    if (row0 + lid >= n) return;
    for (int i = 0; i < ATT_BLOCK_VECS; ++i) {
        store_vec(grads + go + db_start + (slice * n + row) * m + j0 + i * ATT_LANES, count - i * ATT_LANES, acc[i]);
    }
}

// out[h, i, j] = table[index(i, j), h] for a w×w window: index(i, j) = (rᵢ − rⱼ + w − 1)·(2w − 1) + (cᵢ − cⱼ + w − 1)
// with positions row-major (Swin's relative position index).
__kernel void relative_position_bias(__global const float* table, int to, __global float* y, int yo,
                                     int window, int heads, int n) {
    int g = get_global_id(0);
    if (g >= n) return;
    int tokens = window * window, h = g / (tokens * tokens), ij = g % (tokens * tokens);
    int i = ij / tokens, j = ij % tokens;
    int row = (i / window - j / window + window - 1) * (2 * window - 1) + (i % window - j % window + window - 1);
    y[yo + g] = table[to + row * heads + h];
}

// table[r, h] = Σ dy[h, i, j] over the pairs with index(i, j) = r, gathered: r is a shift (Δr, Δc), and i runs
// over the positions whose shift by it stays inside the window, in increasing order like the CPU reference.
__kernel void relative_position_bias_backward(__global const float* dy, int dyo, __global float* table, int to,
                                              int window, int heads, int n) {
    int g = get_global_id(0);
    if (g >= n) return;
    int span = 2 * window - 1, tokens = window * window, r = g / heads, h = g % heads;
    int dr = r / span - (window - 1), dc = r % span - (window - 1);
    float sum = 0.0f;
    for (int ri = max(0, dr); ri < min(window, window + dr); ++ri) {
        for (int ci = max(0, dc); ci < min(window, window + dc); ++ci) {
            int i = ri * window + ci, j = (ri - dr) * window + ci - dc;
            sum += dy[dyo + (h * tokens + i) * tokens + j];
        }
    }
    table[to + g] = sum;
}

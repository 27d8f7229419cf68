// Attention (Sources/HistoCore/Ops/Attention.swift). Scaled-dot-product attention in the flash-attention style:
// no [N, M] matrix reaches global memory. A work-group owns ATT_ROWS rows (queries; keys in the dK/dV pass), one
// work-item per row with its accumulators in private memory, and the other side streams through local memory in
// blocks of ATT_BLOCK rows, ATT_DEPTH columns at a time. Any depth works: dot products loop over depth chunks,
// and outputs wider than ATT_DEPTH are split into column chunks along the third range dimension (each chunk
// recomputes its logits). The backward pass recomputes P = exp(logits − lse) blockwise from q, k, the bias and
// the per-row log-sum-exp of a statistics pass; the bias gradient is gathered per bias element, so broadcast sums
// need no atomics and are deterministic.
#include "common.h"
#define ATT_ROWS 64
#define ATT_BLOCK 32
#define ATT_DEPTH 32
#define ATT_TILE (ATT_BLOCK * ATT_DEPTH)
#define BIAS_PITCH (ATT_BLOCK + 1)
#define BIAS_TILE (ATT_ROWS * BIAS_PITCH)

// q [B, H, N, D], k [B, H, M, D], v [B, H, M, Dv], bias [bias_batch, bias_heads, N, M] (bias_batch 0: no bias).
typedef struct { int batch, heads, queries, keys, depth, value_depth, bias_batch, bias_heads; } AttentionShape;

inline int chunk_count(int width) { return (width + ATT_DEPTH - 1) / ATT_DEPTH; }

// Element offset of the bias slice that item b·H + h adds.
inline int bias_offset(AttentionShape a, int item) {
    int b = a.bias_batch == 1 ? 0 : item / a.heads, h = a.bias_heads == 1 ? 0 : item % a.heads;
    return (b * a.bias_heads + h) * a.queries * a.keys;
}

// Rows [0, rows) and columns [col0, col0 + ATT_DEPTH) of a row-major block of width `width` into
// tile [ATT_BLOCK][ATT_DEPTH], zero outside; coalesced along the rows.
inline void load_tile(__global const float* src, int rows, int width, int col0, __local float* tile) {
    for (int idx = get_local_id(0); idx < ATT_TILE; idx += ATT_ROWS) {
        int t = idx / ATT_DEPTH, d = idx % ATT_DEPTH;
        tile[idx] = t < rows && col0 + d < width ? src[t * width + col0 + d] : 0.0f;
    }
}

// out[t] = row · src[t] for the ATT_BLOCK rows of a row-major [rows, width] block (0 past `rows`), the block staged
// through `tile` one column chunk at a time. Chunk `keep` is visited last and stays in `tile` for the caller
// (keep = −1: natural order). Every work-item of the group calls this (barriers).
inline void dot_block(__global const float* row, __global const float* src, int rows, int width, int keep,
                      __local float* tile, float* out) {
    int chunks = chunk_count(width);
    for (int t = 0; t < ATT_BLOCK; ++t) out[t] = 0.0f;
    for (int step = 1; step <= chunks; ++step) {
        int col0 = (keep + step) % chunks * ATT_DEPTH;
        float r[ATT_DEPTH];
        for (int d = 0; d < ATT_DEPTH; ++d) r[d] = col0 + d < width ? row[col0 + d] : 0.0f;
        barrier(CLK_LOCAL_MEM_FENCE);
        load_tile(src, rows, width, col0, tile);
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int t = 0; t < ATT_BLOCK; ++t) {
            float dot = 0.0f;
            for (int d = 0; d < ATT_DEPTH; ++d) dot += r[d] * tile[t * ATT_DEPTH + d];
            out[t] += dot;
        }
    }
}

// Logits scale·q·kᵀ + bias of this work-item's query row against keys j0 … j0 + ATT_BLOCK − 1 (−∞ past the last
// key). The group's bias rows row0 … row0 + ATT_ROWS − 1 come through `btile`; `keep` as in dot_block.
inline void logits_block(AttentionShape a, float scale, __global const float* qrow, __global const float* kitem,
                         __global const float* bslice, int row0, int j0, int keep,
                         __local float* ktile, __local float* btile, float* s) {
    int count = min(ATT_BLOCK, a.keys - j0);
    dot_block(qrow, kitem + j0 * a.depth, count, a.depth, keep, ktile, s);
    if (a.bias_batch > 0) {
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int idx = get_local_id(0); idx < ATT_ROWS * ATT_BLOCK; idx += ATT_ROWS) {
            int r = idx / ATT_BLOCK, t = idx % ATT_BLOCK;
            btile[r * BIAS_PITCH + t] = row0 + r < a.queries && t < count ? bslice[(row0 + r) * a.keys + j0 + t] : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        __local const float* brow = btile + get_local_id(0) * BIAS_PITCH;
        for (int t = 0; t < ATT_BLOCK; ++t) s[t] = t < count ? s[t] * scale + brow[t] : -INFINITY;
    } else {
        for (int t = 0; t < ATT_BLOCK; ++t) s[t] = t < count ? s[t] * scale : -INFINITY;
    }
}

// Folds a block of logits into the running maximum and sum of exponentials; s becomes exp(s − new maximum).
// Returns the factor that rescales what was accumulated before.
inline float online_softmax(float* s, float* top, float* sum) {
    float m = *top;
    for (int t = 0; t < ATT_BLOCK; ++t) m = fmax(m, s[t]);
    if (m == -INFINITY) {
        for (int t = 0; t < ATT_BLOCK; ++t) s[t] = 0.0f;
        return 1.0f;
    }
    float alpha = exp(*top - m), block = 0.0f;
    for (int t = 0; t < ATT_BLOCK; ++t) { s[t] = exp(s[t] - m); block += s[t]; }
    *sum = *sum * alpha + block;
    *top = m;
    return alpha;
}

// out = softmax(logits)·v, columns chunk·ATT_DEPTH … of Dv for range dimension 2. Range [N↑, B·H, chunks(Dv)].
__kernel void attention_forward(__global const float* q, int qo, __global const float* k, int ko,
                                __global const float* v, int vo, __global const float* bias, int bo,
                                __global float* out, int oo, AttentionShape a, float scale) {
    __local float ktile[ATT_TILE], vtile[ATT_TILE], btile[BIAS_TILE];
    int lid = get_local_id(0), row0 = get_group_id(0) * ATT_ROWS, item = get_global_id(1);
    int col0 = get_global_id(2) * ATT_DEPTH, row = min(row0 + lid, a.queries - 1);
    __global const float* qrow = q + qo + (item * a.queries + row) * a.depth;
    __global const float* kitem = k + ko + item * a.keys * a.depth;
    __global const float* vitem = v + vo + item * a.keys * a.value_depth;
    __global const float* bslice = bias + bo + (a.bias_batch > 0 ? bias_offset(a, item) : 0);
    float top = -INFINITY, sum = 0.0f, acc[ATT_DEPTH], p[ATT_BLOCK];
    for (int e = 0; e < ATT_DEPTH; ++e) acc[e] = 0.0f;
    for (int j0 = 0; j0 < a.keys; j0 += ATT_BLOCK) {
        logits_block(a, scale, qrow, kitem, bslice, row0, j0, -1, ktile, btile, p);
        float alpha = online_softmax(p, &top, &sum);
        barrier(CLK_LOCAL_MEM_FENCE);
        load_tile(vitem + j0 * a.value_depth, min(ATT_BLOCK, a.keys - j0), a.value_depth, col0, vtile);
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int e = 0; e < ATT_DEPTH; ++e) {
            float pv = 0.0f;
            for (int t = 0; t < ATT_BLOCK; ++t) pv += p[t] * vtile[t * ATT_DEPTH + e];
            acc[e] = acc[e] * alpha + pv;
        }
    }
    if (row0 + lid >= a.queries) return;
    __global float* orow = out + oo + (item * a.queries + row) * a.value_depth;
    for (int e = 0; e < ATT_DEPTH; ++e) {
        if (col0 + e < a.value_depth) orow[col0 + e] = acc[e] / sum;
    }
}

// Per query row r of item i: stats[i·N + r] = log Σ exp(logits) and stats[B·H·N + i·N + r] = Σ dO·O (the row
// term of dS = P∘(dP − rowsum(dO∘O))). Range [N↑, B·H].
__kernel void attention_row_statistics(__global const float* q, int qo, __global const float* k, int ko,
                                       __global const float* bias, int bo, __global const float* o, int oo,
                                       __global const float* dout, int doo, __global float* stats, int so,
                                       AttentionShape a, float scale) {
    __local float ktile[ATT_TILE], btile[BIAS_TILE];
    int lid = get_local_id(0), row0 = get_group_id(0) * ATT_ROWS, item = get_global_id(1);
    int row = min(row0 + lid, a.queries - 1);
    __global const float* qrow = q + qo + (item * a.queries + row) * a.depth;
    __global const float* kitem = k + ko + item * a.keys * a.depth;
    __global const float* bslice = bias + bo + (a.bias_batch > 0 ? bias_offset(a, item) : 0);
    float top = -INFINITY, sum = 0.0f, s[ATT_BLOCK];
    for (int j0 = 0; j0 < a.keys; j0 += ATT_BLOCK) {
        logits_block(a, scale, qrow, kitem, bslice, row0, j0, -1, ktile, btile, s);
        online_softmax(s, &top, &sum);
    }
    if (row0 + lid >= a.queries) return;
    int at = (item * a.queries + row) * a.value_depth;
    float dot = 0.0f;
    for (int e = 0; e < a.value_depth; ++e) dot += dout[doo + at + e] * o[oo + at + e];
    int r = item * a.queries + row;
    stats[so + r] = top + log(sum);
    stats[so + a.batch * a.heads * a.queries + r] = dot;
}

// dq = scale·dS·K, columns chunk·ATT_DEPTH … of D; dS of each key block recomputed from the row statistics.
// Range [N↑, B·H, chunks(D)].
__kernel void attention_backward_query(__global const float* q, int qo, __global const float* k, int ko,
                                       __global const float* v, int vo, __global const float* dout, int doo,
                                       __global const float* bias, int bo, __global const float* stats, int so,
                                       __global float* grads, int go, AttentionShape a, float scale) {
    __local float ktile[ATT_TILE], vtile[ATT_TILE], btile[BIAS_TILE];
    int lid = get_local_id(0), row0 = get_group_id(0) * ATT_ROWS, item = get_global_id(1), chunk = get_global_id(2);
    int row = min(row0 + lid, a.queries - 1), r = item * a.queries + row;
    __global const float* qrow = q + qo + r * a.depth;
    __global const float* orow = dout + doo + r * a.value_depth;
    __global const float* kitem = k + ko + item * a.keys * a.depth;
    __global const float* vitem = v + vo + item * a.keys * a.value_depth;
    __global const float* bslice = bias + bo + (a.bias_batch > 0 ? bias_offset(a, item) : 0);
    float lse = stats[so + r], rowdot = stats[so + a.batch * a.heads * a.queries + r];
    float acc[ATT_DEPTH], s[ATT_BLOCK], dp[ATT_BLOCK];
    for (int e = 0; e < ATT_DEPTH; ++e) acc[e] = 0.0f;
    for (int j0 = 0; j0 < a.keys; j0 += ATT_BLOCK) {
        // ktile keeps this chunk's columns of the key block for the dq update below.
        logits_block(a, scale, qrow, kitem, bslice, row0, j0, chunk, ktile, btile, s);
        dot_block(orow, vitem + j0 * a.value_depth, min(ATT_BLOCK, a.keys - j0), a.value_depth, -1, vtile, dp);
        for (int t = 0; t < ATT_BLOCK; ++t) s[t] = exp(s[t] - lse) * (dp[t] - rowdot);
        for (int e = 0; e < ATT_DEPTH; ++e) {
            float g = 0.0f;
            for (int t = 0; t < ATT_BLOCK; ++t) g += s[t] * ktile[t * ATT_DEPTH + e];
            acc[e] += g;
        }
    }
    if (row0 + lid >= a.queries) return;
    int col0 = chunk * ATT_DEPTH;
    for (int e = 0; e < ATT_DEPTH; ++e) {
        if (col0 + e < a.depth) grads[go + r * a.depth + col0 + e] = scale * acc[e];
    }
}

// dk = scale·dSᵀ·Q and dv = Pᵀ·dO, one work-item per key, columns chunk·ATT_DEPTH … of each (a chunk past a
// side's width skips that side); query blocks stream through local memory. Range [M↑, B·H, chunks(max(D, Dv))].
__kernel void attention_backward_key(__global const float* q, int qo, __global const float* k, int ko,
                                     __global const float* v, int vo, __global const float* dout, int doo,
                                     __global const float* bias, int bo, __global const float* stats, int so,
                                     __global float* grads, int go, int dk_start, int dv_start, AttentionShape a, float scale) {
    __local float qtile[ATT_TILE], otile[ATT_TILE], btile[ATT_BLOCK * ATT_ROWS], lse[ATT_BLOCK], rowdot[ATT_BLOCK];
    int lid = get_local_id(0), key0 = get_group_id(0) * ATT_ROWS, item = get_global_id(1), chunk = get_global_id(2);
    int key = min(key0 + lid, a.keys - 1), n = a.queries, rows = a.batch * a.heads * n;
    int k_chunks = chunk_count(a.depth), v_chunks = chunk_count(a.value_depth);
    __global const float* krow = k + ko + (item * a.keys + key) * a.depth;
    __global const float* vrow = v + vo + (item * a.keys + key) * a.value_depth;
    __global const float* qitem = q + qo + item * n * a.depth;
    __global const float* oitem = dout + doo + item * n * a.value_depth;
    __global const float* bslice = bias + bo + (a.bias_batch > 0 ? bias_offset(a, item) : 0);
    float dk[ATT_DEPTH], dv[ATT_DEPTH], p[ATT_BLOCK], ds[ATT_BLOCK];
    for (int e = 0; e < ATT_DEPTH; ++e) { dk[e] = 0.0f; dv[e] = 0.0f; }
    for (int i0 = 0; i0 < n; i0 += ATT_BLOCK) {
        int count = min(ATT_BLOCK, n - i0);
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid < ATT_BLOCK) {
            lse[lid] = lid < count ? stats[so + item * n + i0 + lid] : 0.0f;
            rowdot[lid] = lid < count ? stats[so + rows + item * n + i0 + lid] : 0.0f;
        }
        if (a.bias_batch > 0) {
            for (int idx = lid; idx < ATT_BLOCK * ATT_ROWS; idx += ATT_ROWS) {
                int t = idx / ATT_ROWS, c = idx % ATT_ROWS;
                btile[idx] = t < count && key0 + c < a.keys ? bslice[(i0 + t) * a.keys + key0 + c] : 0.0f;
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        dot_block(krow, qitem + i0 * a.depth, count, a.depth, min(chunk, k_chunks - 1), qtile, p);
        for (int t = 0; t < ATT_BLOCK; ++t) {
            float logit = p[t] * scale + (a.bias_batch > 0 ? btile[t * ATT_ROWS + lid] : 0.0f);
            p[t] = t < count ? exp(logit - lse[t]) : 0.0f;
        }
        dot_block(vrow, oitem + i0 * a.value_depth, count, a.value_depth, min(chunk, v_chunks - 1), otile, ds);
        for (int t = 0; t < ATT_BLOCK; ++t) ds[t] = p[t] * (ds[t] - rowdot[t]);
        for (int e = 0; e < ATT_DEPTH; ++e) {
            float gk = 0.0f, gv = 0.0f;
            for (int t = 0; t < ATT_BLOCK; ++t) {
                gk += ds[t] * qtile[t * ATT_DEPTH + e];
                gv += p[t] * otile[t * ATT_DEPTH + e];
            }
            dk[e] += gk; dv[e] += gv;
        }
    }
    if (key0 + lid >= a.keys) return;
    int col0 = chunk * ATT_DEPTH, j = item * a.keys + key;
    for (int e = 0; e < ATT_DEPTH; ++e) {
        if (chunk < k_chunks && col0 + e < a.depth) grads[go + dk_start + j * a.depth + col0 + e] = scale * dk[e];
        if (chunk < v_chunks && col0 + e < a.value_depth) grads[go + dv_start + j * a.value_depth + col0 + e] = dv[e];
    }
}

// dbias[slice, i, j] = Σ dS[b, h, i, j] over the items that add this bias slice (every b where the bias batch is
// 1, every h where its heads are 1), gathered in item order. Range [N↑, key blocks, bias slices].
__kernel void attention_backward_bias(__global const float* q, int qo, __global const float* k, int ko,
                                      __global const float* v, int vo, __global const float* dout, int doo,
                                      __global const float* bias, int bo, __global const float* stats, int so,
                                      __global float* grads, int go, int db_start, AttentionShape a, float scale) {
    __local float ktile[ATT_TILE], vtile[ATT_TILE], btile[BIAS_TILE];
    int lid = get_local_id(0), row0 = get_group_id(0) * ATT_ROWS, j0 = get_group_id(1) * ATT_BLOCK;
    int slice = get_group_id(2), n = a.queries, m = a.keys, rows = a.batch * a.heads * n;
    int row = min(row0 + lid, n - 1), count = min(ATT_BLOCK, m - j0);
    int bb = slice / a.bias_heads, hb = slice % a.bias_heads;
    int b_end = a.bias_batch == 1 ? a.batch : bb + 1, h_end = a.bias_heads == 1 ? a.heads : hb + 1;
    __global const float* bslice = bias + bo + slice * n * m;
    float acc[ATT_BLOCK], s[ATT_BLOCK], dp[ATT_BLOCK];
    for (int t = 0; t < ATT_BLOCK; ++t) acc[t] = 0.0f;
    for (int b = a.bias_batch == 1 ? 0 : bb; b < b_end; ++b) {
        for (int h = a.bias_heads == 1 ? 0 : hb; h < h_end; ++h) {
            int item = b * a.heads + h, r = item * n + row;
            logits_block(a, scale, q + qo + r * a.depth, k + ko + item * m * a.depth, bslice, row0, j0, -1, ktile, btile, s);
            dot_block(dout + doo + r * a.value_depth, v + vo + (item * m + j0) * a.value_depth, count, a.value_depth, -1,
                      vtile, dp);
            float lse = stats[so + r], rowdot = stats[so + rows + r];
            for (int t = 0; t < ATT_BLOCK; ++t) acc[t] += exp(s[t] - lse) * (dp[t] - rowdot);
        }
    }
    // Through local memory, so that the writes run along the bias rows.
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int t = 0; t < ATT_BLOCK; ++t) btile[lid * BIAS_PITCH + t] = acc[t];
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int idx = lid; idx < ATT_ROWS * ATT_BLOCK; idx += ATT_ROWS) {
        int r = idx / ATT_BLOCK, t = idx % ATT_BLOCK;
        if (row0 + r < n && t < count) grads[go + db_start + slice * n * m + (row0 + r) * m + j0 + t] = btile[r * BIAS_PITCH + t];
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

// Reductions over the middle axis of an [outer, n, inner] view (Sources/HistoCore/Ops/Reduce.swift):
// one work-group of REDUCE_LOCAL items per output element, strided partial results, then a tree in local memory.
#include "common.h"
#define REDUCE_LOCAL 64

// kind: 0 sum, 1 mean, 2 max, 3 min
inline float reduce_combine(int kind, float a, float b) {
    return kind < 2 ? a + b : (kind == 2 ? fmax(a, b) : fmin(a, b));
}

inline float group_reduce(__local float* scratch, float value, int kind) {
    int lid = get_local_id(0);
    scratch[lid] = value;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = REDUCE_LOCAL / 2; s > 0; s >>= 1) {
        if (lid < s) scratch[lid] = reduce_combine(kind, scratch[lid], scratch[lid + s]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float result = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return result;
}

__kernel void reduce_axis(__global const float* x, int xo, __global float* y, int yo,
                          int kind, int n, int inner, float scale) {
    __local float scratch[REDUCE_LOCAL];
    int row = get_group_id(0), lid = get_local_id(0);
    int base = xo + (row / inner) * n * inner + row % inner;
    float acc = kind == 2 ? -INFINITY : (kind == 3 ? INFINITY : 0.0f);
    for (int j = lid; j < n; j += REDUCE_LOCAL) acc = reduce_combine(kind, acc, x[base + j * inner]);
    acc = group_reduce(scratch, acc, kind);
    if (lid == 0) y[yo + row] = acc * scale;
}

// Softmax (log_softmax when as_log) along the middle axis, max-subtracted.
__kernel void softmax_axis(__global const float* x, int xo, __global float* y, int yo, int n, int inner, int as_log) {
    __local float scratch[REDUCE_LOCAL];
    int row = get_group_id(0), lid = get_local_id(0);
    int offset = (row / inner) * n * inner + row % inner;
    float m = -INFINITY;
    for (int j = lid; j < n; j += REDUCE_LOCAL) m = fmax(m, x[xo + offset + j * inner]);
    m = group_reduce(scratch, m, 2);
    float s = 0.0f;
    for (int j = lid; j < n; j += REDUCE_LOCAL) s += exp(x[xo + offset + j * inner] - m);
    s = group_reduce(scratch, s, 0);
    float lse = m + log(s), inv = 1.0f / s;
    for (int j = lid; j < n; j += REDUCE_LOCAL) {
        float v = x[xo + offset + j * inner];
        y[yo + offset + j * inner] = as_log ? v - lse : exp(v - m) * inv;
    }
}

__kernel void logsumexp_axis(__global const float* x, int xo, __global float* y, int yo, int n, int inner) {
    __local float scratch[REDUCE_LOCAL];
    int row = get_group_id(0), lid = get_local_id(0);
    int base = xo + (row / inner) * n * inner + row % inner;
    float m = -INFINITY;
    for (int j = lid; j < n; j += REDUCE_LOCAL) m = fmax(m, x[base + j * inner]);
    m = group_reduce(scratch, m, 2);
    float s = 0.0f;
    if (m != -INFINITY) for (int j = lid; j < n; j += REDUCE_LOCAL) s += exp(x[base + j * inner] - m);
    s = group_reduce(scratch, s, 0);
    if (lid == 0) y[yo + row] = m == -INFINITY ? m : m + log(s);
}

// Index of the first maximum along the middle axis.
__kernel void argmax_axis(__global const float* x, int xo, __global float* y, int yo, int n, int inner) {
    __local float values[REDUCE_LOCAL];
    __local int indices[REDUCE_LOCAL];
    int row = get_group_id(0), lid = get_local_id(0);
    int base = xo + (row / inner) * n * inner + row % inner;
    float best = -INFINITY;
    int at = n;
    for (int j = lid; j < n; j += REDUCE_LOCAL) {
        float v = x[base + j * inner];
        if (v > best || at == n) { best = v; at = j; }
    }
    values[lid] = best; indices[lid] = at;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = REDUCE_LOCAL / 2; s > 0; s >>= 1) {
        if (lid < s) {
            float v = values[lid + s]; int k = indices[lid + s];
            if (k < n && (indices[lid] == n || v > values[lid] || (v == values[lid] && k < indices[lid]))) {
                values[lid] = v; indices[lid] = k;
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) y[yo + row] = (float)(indices[0] == n ? 0 : indices[0]);
}

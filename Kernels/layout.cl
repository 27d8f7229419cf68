// Copies that rearrange elements (Sources/HistoCore/Ops/Layout.swift).
#include "common.h"

// Output (contiguous, shape w.shape) reads the input at coords · w.stride[0].
__kernel void permute_copy(__global const float* x, int xo, __global float* y, int yo, Walk w, int n) {
    int i = get_global_id(0);
    if (i < n) y[yo + i] = x[xo + walk_offset(&w, 0, i)];
}

// y[o, j, k] = x[o, start + j·step, k] for an [outer, size, inner] input and [outer, m, inner] output.
__kernel void slice_copy(__global const float* x, int xo, __global float* y, int yo,
                         int size, int m, int inner, int start, int step, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    int k = i % inner, j = (i / inner) % m, o = i / (inner * m);
    y[yo + i] = x[xo + (o * size + start + j * step) * inner + k];
}

// dx[o, s, k] = dy[o, j, k] where s = start + j·step, else 0.
__kernel void slice_backward(__global const float* dy, int dyo, __global float* dx, int dxo,
                             int size, int m, int inner, int start, int step, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    int k = i % inner, s = (i / inner) % size, o = i / (inner * size);
    int rel = s - start;
    float v = 0.0f;
    if (rel >= 0 && rel % step == 0 && rel / step < m) v = dy[dyo + (o * m + rel / step) * inner + k];
    dx[dxo + i] = v;
}

// Copies an [outer, rowIn] input into columns [position, position + rowIn) of an [outer, rowOut] output.
__kernel void concat_part(__global const float* x, int xo, __global float* y, int yo,
                          int row_in, int row_out, int position, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    y[yo + (i / row_in) * row_out + position + i % row_in] = x[xo + i];
}

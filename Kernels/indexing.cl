// Indexing (Sources/HistoCore/Ops/Indexing.swift). Index values are floats holding integers; the executor validates
// them before these kernels run, and a value that is not an integer in range still only yields NaN (as on the CPU),
// never a read out of bounds. Scatter-adds run as gathers: each gradient element sums its own contributions.
#include "common.h"

// The integer an index value stands for, or −1 when it is not an integer in 0..<bound (indexValue).
inline int index_value(float v, int bound) {
    return v >= 0.0f && v < (float)bound && trunc(v) == v ? (int)v : -1;
}

// Output element i reads x at x_offset + walk offset (negative strides on flipped axes; x_offset is the last
// element along them).
__kernel void flip_copy(__global const float* x, int xo, __global float* y, int yo, Walk w, int x_offset, int n) {
    int i = get_global_id(0);
    if (i < n) y[yo + i] = x[xo + x_offset + walk_offset(&w, 0, i)];
}

// Coordinates over `shape` address another tensor of shape `bound` through its `stride`; `axis` is gather's axis.
typedef struct {
    int rank, axis;
    int shape[WALK_MAX_RANK], stride[WALK_MAX_RANK], bound[WALK_MAX_RANK];
} GatherWalk;

// out = x[…, index, …]: walks the index (= output) shape; x's strides and sizes in w.stride and w.bound.
__kernel void gather(__global const float* x, int xo, __global const float* index, int io,
                     __global float* y, int yo, GatherWalk w, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    int rest = i, offset = 0;
    for (int axis = w.rank - 1; axis >= 0; --axis) {
        if (axis != w.axis) offset += rest % w.shape[axis] * w.stride[axis];
        rest /= w.shape[axis];
    }
    int k = index_value(index[io + i], w.bound[w.axis]);
    y[yo + i] = k < 0 ? NAN : x[xo + offset + k * w.stride[w.axis]];
}

// dx element at (…, k, …) sums dy where the index along the axis, at the same other coordinates, equals k: walks
// x's shape; the index's (= dy's) strides and sizes in w.stride and w.bound.
__kernel void gather_backward(__global const float* index, int io, __global const float* dy, int dyo,
                              __global float* dx, int dxo, GatherWalk w, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    int rest = i, offset = 0, k = 0, inside = 1;
    for (int axis = w.rank - 1; axis >= 0; --axis) {
        int c = rest % w.shape[axis];
        rest /= w.shape[axis];
        if (axis == w.axis) k = c;
        else { offset += c * w.stride[axis]; inside &= c < w.bound[axis]; }
    }
    float sum = 0.0f;
    if (inside) {
        for (int j = 0; j < w.bound[w.axis]; ++j) {
            int t = offset + j * w.stride[w.axis];
            if (index_value(index[io + t], w.shape[w.axis]) == k) sum += dy[dyo + t];
        }
    }
    dx[dxo + i] = sum;
}

// [outer, size, inner] x to [outer, count, inner] y: y[o, r, c] = x[o, indices[r], c].
__kernel void index_select(__global const float* x, int xo, __global const float* indices, int io,
                           __global float* y, int yo, int size, int count, int inner, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    int c = i % inner, r = (i / inner) % count, o = i / (inner * count);
    int k = index_value(indices[io + r], size);
    y[yo + i] = k < 0 ? NAN : x[xo + (o * size + k) * inner + c];
}

// dx[o, s, c] sums dy[o, j, c] over the j whose index is s, in j order.
__kernel void index_select_backward(__global const float* indices, int io, __global const float* dy, int dyo,
                                    __global float* dx, int dxo, int size, int count, int inner, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    int c = i % inner, s = (i / inner) % size, o = i / (inner * size);
    float sum = 0.0f;
    for (int j = 0; j < count; ++j) {
        if (index_value(indices[io + j], size) == s) sum += dy[dyo + (o * count + j) * inner + c];
    }
    dx[dxo + i] = sum;
}

// Labels [batch, inner] to [batch, classes, inner]; a bad label makes its class column NaN.
__kernel void one_hot(__global const float* labels, int lo, __global float* y, int yo, int classes, int inner, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    int k = i % inner, c = (i / inner) % classes, b = i / (inner * classes);
    int label = index_value(labels[lo + b * inner + k], classes);
    y[yo + i] = label < 0 ? NAN : (label == c ? 1.0f : 0.0f);
}

// Unfold's geometry: NCHW input, a rows × cols grid of window[0] × window[1] patches at `stride`.
typedef struct {
    int channels, h, w, rows, cols;
    int window[2], stride[2];
} PatchGrid;

// y[p, ch, i, j] = x[n, ch, pr·stride[0] + i, pc·stride[1] + j] for patch p = (n, pr, pc).
__kernel void unfold(__global const float* x, int xo, __global float* y, int yo, PatchGrid g, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    int j = i % g.window[1], r = (i / g.window[1]) % g.window[0];
    int ch = (i / (g.window[0] * g.window[1])) % g.channels, p = i / (g.window[0] * g.window[1] * g.channels);
    int image = p / (g.rows * g.cols), pr = p / g.cols % g.rows, pc = p % g.cols;
    y[yo + i] = x[xo + ((image * g.channels + ch) * g.h + pr * g.stride[0] + r) * g.w + pc * g.stride[1] + j];
}

// Fold: dx[n, ch, r, c] sums the patches covering (r, c), in patch order.
__kernel void unfold_backward(__global const float* dy, int dyo, __global float* dx, int dxo, PatchGrid g, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    int c = i % g.w, r = (i / g.w) % g.h, ch = (i / (g.w * g.h)) % g.channels, image = i / (g.w * g.h * g.channels);
    int pr0, pr1, pc0, pc1;
    covering_windows(r, g.window[0], g.stride[0], g.rows, &pr0, &pr1);
    covering_windows(c, g.window[1], g.stride[1], g.cols, &pc0, &pc1);
    float sum = 0.0f;
    for (int pr = pr0; pr <= pr1; ++pr) {
        for (int pc = pc0; pc <= pc1; ++pc) {
            int p = (image * g.rows + pr) * g.cols + pc;
            sum += dy[dyo + ((p * g.channels + ch) * g.window[0] + r - pr * g.stride[0]) * g.window[1] + c - pc * g.stride[1]];
        }
    }
    dx[dxo + i] = sum;
}

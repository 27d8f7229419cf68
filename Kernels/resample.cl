// Resampling over the last two axes (Sources/HistoCore/Ops/Resample.swift).
#include "common.h"

// ---- resample: y = R·x·Cᵀ per plane ----
// The host sends each axis's rule (AxisTaps.Rule) rather than its tables; `resample_taps` rebuilds the table of one
// axis in scratch memory with the same formulas, then `resample_apply` reads both tables.

// AxisTaps.kernelRule. kind: 0 linear (p0 align corners), 1 nearest, 2 adaptive, 3 average (p0 kernel, p1 stride,
// p2 before, p3 count padding), 4 padding (p0 before, p1 mode: 0 zero, 1 reflect, 2 replicate).
// input/output are the forward map's sizes; width is the most taps any table row holds.
typedef struct {
    int kind, input, output, adjoint, width;
    int p0, p1, p2, p3;
} AxisRule;

// The number of taps of forward output o, and the window that linear/adaptive/average taps run over.
inline int rule_tap_count(const AxisRule* r, int o) {
    switch (r->kind) {
    case 0: return 2;
    case 1: return 1;
    case 2: return ((o + 1) * r->input + r->output - 1) / r->output - o * r->input / r->output;
    case 3: {
        int lo = o * r->p1 - r->p2;
        return min(lo + r->p0, r->input) - max(lo, 0);
    }
    default: {
        int i = o - r->p0;
        return (i >= 0 && i < r->input) || r->p1 != 0 ? 1 : 0;
    }
    }
}

// Tap t of forward output o: its input index, and its weight in *weight (AxisTaps.Rule.taps).
inline int rule_tap(const AxisRule* r, float scale, int o, int t, float* weight) {
    switch (r->kind) {
    case 0: {
        float source = r->p0 ? (float)o * scale : fmax(((float)o + 0.5f) * scale - 0.5f, 0.0f);
        int lo = min((int)source, r->input - 1), hi = min(lo + 1, r->input - 1);
        float frac = fmin(fmax(source - (float)lo, 0.0f), 1.0f);
        *weight = t == 0 ? 1.0f - frac : frac;
        return t == 0 ? lo : hi;
    }
    case 1:
        *weight = 1.0f;
        return min((int)floor((float)o * scale), r->input - 1);
    case 2: {
        int lo = o * r->input / r->output, hi = ((o + 1) * r->input + r->output - 1) / r->output;
        *weight = 1.0f / (float)(hi - lo);
        return lo + t;
    }
    case 3: {
        int start = o * r->p1 - r->p2, lo = max(start, 0), hi = min(start + r->p0, r->input);
        *weight = 1.0f / (float)(r->p3 ? r->p0 : hi - lo);
        return lo + t;
    }
    default: {
        int i = o - r->p0;
        *weight = 1.0f;
        if (i >= 0 && i < r->input) return i;
        return r->p1 == 2 ? clamp(i, 0, r->input - 1) : (i < 0 ? -i : 2 * (r->input - 1) - i);
    }
    }
}

// Row `row` of an axis's tap table, laid out as [count, (index, weight) × width] per row. A forward row lists the
// rule's taps; an adjoint row lists every forward output that reads input `row`, in output order (as
// AxisTaps.transposed does), found by scanning the forward outputs: O(outputs × taps) per row, once per launch,
// small next to the apply pass over every plane.
__kernel void resample_taps(__global float* table, int to, AxisRule r, float scale, int n) {
    int row = get_global_id(0);
    if (row >= n) return;
    __global float* entry = table + to + row * (1 + 2 * r.width);
    int count = 0;
    float w;
    if (!r.adjoint) {
        int taps = min(rule_tap_count(&r, row), r.width);
        for (int t = 0; t < taps; ++t, ++count) {
            entry[1 + 2 * count] = (float)rule_tap(&r, scale, row, t, &w);
            entry[2 + 2 * count] = w;
        }
    } else {
        for (int o = 0; o < r.output && count < r.width; ++o) {
            int taps = rule_tap_count(&r, o);
            for (int t = 0; t < taps && count < r.width; ++t) {
                if (rule_tap(&r, scale, o, t, &w) != row) continue;
                entry[1 + 2 * count] = (float)o;
                entry[2 + 2 * count] = w;
                ++count;
            }
        }
    }
    entry[0] = (float)count;
}

// One output element per work-item (consecutive items along a row: coalesced writes and, for the neighbouring
// taps of interpolation, coalesced reads). Sums in the CPU reference's order.
__kernel void resample_apply(__global const float* x, int xo, __global float* y, int yo,
                             __global const float* rows, int ro, __global const float* cols, int co,
                             int in_h, int in_w, int out_h, int out_w, int row_width, int col_width, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    int ow = i % out_w, oh = (i / out_w) % out_h, plane = i / (out_w * out_h);
    __global const float* row_taps = rows + ro + oh * (1 + 2 * row_width);
    __global const float* col_taps = cols + co + ow * (1 + 2 * col_width);
    int row_count = (int)row_taps[0], col_count = (int)col_taps[0];
    int base = xo + plane * in_h * in_w;
    float sum = 0.0f;
    for (int a = 0; a < row_count; ++a) {
        int row = base + (int)row_taps[1 + 2 * a] * in_w;
        float row_sum = 0.0f;
        for (int b = 0; b < col_count; ++b) row_sum += col_taps[2 + 2 * b] * x[row + (int)col_taps[1 + 2 * b]];
        sum += row_taps[2 + 2 * a] * row_sum;
    }
    y[yo + i] = sum;
}

// ---- max pooling ----

// MaxPool2d's geometry; window (oh, ow) covers rows oh·stride[0] − before[0] ..< +window[0], clipped, and so on.
typedef struct {
    int h, w, out_h, out_w;
    int window[2], stride[2], before[2];
} PoolGeometry;

// In-plane offset of window (oh, ow)'s maximum as PyTorch picks it: the first largest, or the last NaN.
inline int window_argmax(__global const float* plane, const PoolGeometry* g, int oh, int ow) {
    int r0 = oh * g->stride[0] - g->before[0], c0 = ow * g->stride[1] - g->before[1];
    int r1 = min(r0 + g->window[0], g->h), c1 = min(c0 + g->window[1], g->w);
    r0 = max(r0, 0); c0 = max(c0, 0);
    int best = r0 * g->w + c0;
    float m = -INFINITY;
    for (int i = r0; i < r1; ++i) {
        for (int j = c0; j < c1; ++j) {
            float v = plane[i * g->w + j];
            if (v > m || isnan(v)) { m = v; best = i * g->w + j; }
        }
    }
    return best;
}

// Position of in-plane offset `at` within window (oh, ow) of the padded plane: a small exact integer.
inline int window_position(const PoolGeometry* g, int oh, int ow, int at) {
    int r = at / g->w - (oh * g->stride[0] - g->before[0]), c = at % g->w - (ow * g->stride[1] - g->before[1]);
    return r * g->window[1] + c;
}

__kernel void max_pool2d(__global const float* x, int xo, __global float* y, int yo, PoolGeometry g, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    int ow = i % g.out_w, oh = (i / g.out_w) % g.out_h, p = i / (g.out_w * g.out_h);
    __global const float* plane = x + xo + p * g.h * g.w;
    y[yo + i] = plane[window_argmax(plane, &g, oh, ow)];
}

// Backward pass 1: each window's argmax as its window position (max_pool2d_backward_gather compares positions).
__kernel void max_pool2d_argmax(__global const float* x, int xo, __global float* at, int ato, PoolGeometry g, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    int ow = i % g.out_w, oh = (i / g.out_w) % g.out_h, p = i / (g.out_w * g.out_h);
    at[ato + i] = (float)window_position(&g, oh, ow, window_argmax(x + xo + p * g.h * g.w, &g, oh, ow));
}

// Backward pass 2: each dx element adds the dy of the windows that cover it and picked it, in the CPU reference's
// (oh, ow) order. No scatter, so no atomics and a deterministic sum.
__kernel void max_pool2d_backward_gather(__global const float* at, int ato, __global const float* dy, int dyo,
                                         __global float* dx, int dxo, PoolGeometry g, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    int c = i % g.w, r = (i / g.w) % g.h, p = i / (g.w * g.h);
    int oh0, oh1, ow0, ow1;
    covering_windows(r + g.before[0], g.window[0], g.stride[0], g.out_h, &oh0, &oh1);
    covering_windows(c + g.before[1], g.window[1], g.stride[1], g.out_w, &ow0, &ow1);
    int offset = r * g.w + c;
    float sum = 0.0f;
    for (int oh = oh0; oh <= oh1; ++oh) {
        for (int ow = ow0; ow <= ow1; ++ow) {
            int o = (p * g.out_h + oh) * g.out_w + ow;
            if ((int)at[ato + o] == window_position(&g, oh, ow, offset)) sum += dy[dyo + o];
        }
    }
    dx[dxo + i] = sum;
}

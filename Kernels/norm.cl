// Normalisation (Sources/HistoCore/Ops/Normalization.swift). x [N, C, spatial…] is N·C planes of `plane` elements;
// a statistics set is `per_set` planes: for group norm (groups > 0) the C/G consecutive planes of one sample's
// group (one contiguous run), for batch norm (groups == 0) plane c of every sample (planes C apart).
// One work-group per set. Work-items take units of NORM_VEC consecutive elements of a plane (the last unit of a
// plane may be partial), so loads are wide: interleaved across work-items on GPUs (coalesced), one contiguous run
// per work-item on CPU devices (see Cursor). Statistics take one pass over the set, on values taken
// relative to the set's first element (so a large mean costs no precision): each work-item sums chunks of its
// values around its running mean and merges the chunk moments with Chan's formula, then a tree of the same
// merges in local memory combines the work-items. Normalising (or dx) is the second pass.
#include "common.h"
#define NORM_LOCAL 64
#define NORM_VEC 8
#define NORM_CHUNK 32

typedef float8 vec;
#define vload vload8
#define vstore vstore8

typedef struct { int groups, batch, channels, plane, per_set; } SetLayout;

// Where a set lives: element i of its plane k is at base + k·plane_stride + i, in channel first_channel + k·channel_step.
typedef struct { int base, plane_stride, first_channel, channel_step, plane, units_per_plane, units; } SetView;

inline SetView set_view(SetLayout l, int s) {
    SetView v;
    v.plane = l.plane;
    v.units_per_plane = (l.plane + NORM_VEC - 1) / NORM_VEC;
    v.units = l.per_set * v.units_per_plane;
    if (l.groups > 0) {
        v.base = s * l.per_set * l.plane; v.plane_stride = l.plane;
        v.first_channel = (s % l.groups) * l.per_set; v.channel_step = 1;
    } else {
        v.base = s * l.plane; v.plane_stride = l.channels * l.plane; v.first_channel = s; v.channel_step = 0;
    }
    return v;
}

// One channel's planes across the batch (a batch-norm set, whatever the layout's statistics).
inline SetView channel_view(SetLayout l, int c) {
    SetLayout batch = { 0, l.batch, l.channels, l.plane, l.batch };
    return set_view(batch, c);
}

// A work-item's walk over its units of a set: (plane k, unit j of the plane) advance without a division per unit.
// GPUs interleave the work-items (units lid, lid + NORM_LOCAL, …: coalesced loads); on CPU devices
// (CPU_DEVICE, set by the backend) each work-item takes one contiguous run of units, which the driver's
// work-item loop streams like one thread's loop.
typedef struct { int u, end, stride, k, j, step_k, step_j, per_plane; } Cursor;

inline Cursor cursor_start(SetView v) {
    int lid = get_local_id(0), per_plane = max(v.units_per_plane, 1);
#ifdef CPU_DEVICE
    int span = (v.units + NORM_LOCAL - 1) / NORM_LOCAL, first = lid * span, end = min(v.units, first + span), stride = 1;
#else
    int first = lid, end = v.units, stride = NORM_LOCAL;
#endif
    Cursor c = { first, end, stride, first / per_plane, first % per_plane, stride / per_plane, stride % per_plane, per_plane };
    return c;
}

inline void cursor_next(Cursor* c) {
    c->u += c->stride; c->k += c->step_k; c->j += c->step_j;
    if (c->j >= c->per_plane) { c->j -= c->per_plane; c->k += 1; }
}

inline int unit_at(SetView v, Cursor c) { return v.base + c.k * v.plane_stride + c.j * NORM_VEC; }
inline int unit_channel(SetView v, Cursor c) { return v.first_channel + c.k * v.channel_step; }
inline int unit_width(SetView v, Cursor c) { return min(NORM_VEC, v.plane - c.j * NORM_VEC); }

// Lanes of a unit that hold elements.
inline int8 lanes_below(int width) { return (int8)(0, 1, 2, 3, 4, 5, 6, 7) < (int8)(width); }

inline vec load_unit(__global const float* p, int width) {
    if (width == NORM_VEC) return vload(0, p);
    vec v = (vec)(0.0f);
    float* lanes = (float*)&v;
    for (int l = 0; l < width; ++l) lanes[l] = p[l];
    return v;
}

inline void store_unit(__global float* p, int width, vec v) {
    if (width == NORM_VEC) { vstore(v, 0, p); return; }
    float* lanes = (float*)&v;
    for (int l = 0; l < width; ++l) p[l] = lanes[l];
}

inline float lane_sum(vec v) {
    float4 a = v.lo + v.hi;
    float2 b = a.lo + a.hi;
    return b.x + b.y;
}

// Count, mean and sum of squared deviations.
typedef struct { float n, mean, m2; } Moments;

inline Moments moments_merge(Moments a, Moments b) {
    if (b.n == 0.0f) return a;
    if (a.n == 0.0f) return b;
    float n = a.n + b.n, f = b.n / n, d = b.mean - a.mean;
    Moments r = { n, a.mean + d * f, a.m2 + b.m2 + d * d * a.n * f };
    return r;
}

// A work-item's running moments of x − origin. Values are summed lane-wise in chunks of NORM_CHUNK units as
// (x − shift) and (x − shift)², the shift being the origin and then the running mean, so the sums stay small;
// each chunk is merged into the total. (shift − origin is exact: the two are close floats.)
typedef struct { Moments total; float origin, shift, count; vec sum, squares; } MomentAccumulator;

inline MomentAccumulator moments_begin(float origin) {
    MomentAccumulator a = { { 0.0f, 0.0f, 0.0f }, origin, origin, 0.0f, (vec)(0.0f), (vec)(0.0f) };
    return a;
}

inline void moments_add(MomentAccumulator* a, vec x, int width) {
    vec d = select((vec)(0.0f), x - a->shift, lanes_below(width));
    a->sum += d; a->squares += d * d; a->count += (float)width;
}

inline void moments_flush(MomentAccumulator* a) {
    if (a->count == 0.0f) return;
    float sum = lane_sum(a->sum), squares = lane_sum(a->squares);
    Moments chunk = { a->count, (a->shift - a->origin) + sum / a->count, fmax(squares - sum * sum / a->count, 0.0f) };
    a->total = moments_merge(a->total, chunk);
    a->shift = a->origin + a->total.mean; a->sum = (vec)(0.0f); a->squares = (vec)(0.0f); a->count = 0.0f;
}

inline Moments group_moments(__local float* ln, __local float* lmean, __local float* lm2, Moments mine) {
    int lid = get_local_id(0);
    ln[lid] = mine.n; lmean[lid] = mine.mean; lm2[lid] = mine.m2;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = NORM_LOCAL / 2; s > 0; s >>= 1) {
        if (lid < s) {
            Moments a = { ln[lid], lmean[lid], lm2[lid] }, b = { ln[lid + s], lmean[lid + s], lm2[lid + s] };
            Moments r = moments_merge(a, b);
            ln[lid] = r.n; lmean[lid] = r.mean; lm2[lid] = r.m2;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    Moments total = { ln[0], lmean[0], lm2[0] };
    barrier(CLK_LOCAL_MEM_FENCE);
    return total;
}

inline float2 group_sum2(__local float* la, __local float* lb, float2 mine) {
    int lid = get_local_id(0);
    la[lid] = mine.x; lb[lid] = mine.y;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = NORM_LOCAL / 2; s > 0; s >>= 1) {
        if (lid < s) { la[lid] += la[lid + s]; lb[lid] += lb[lid + s]; }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float2 total = (float2)(la[0], lb[0]);
    barrier(CLK_LOCAL_MEM_FENCE);
    return total;
}

// The set's first element: statistics are taken of x − origin.
inline float set_origin(__global const float* x, SetView v) { return v.units > 0 ? x[v.base] : 0.0f; }

// Moments of x − origin over the set in view v of x (one pass).
inline Moments set_moments(__global const float* x, SetView v, float origin,
                           __local float* la, __local float* lb, __local float* lc) {
    MomentAccumulator acc = moments_begin(origin);
    for (Cursor c = cursor_start(v); c.u < c.end;) {
        for (int n = 0; n < NORM_CHUNK && c.u < c.end; ++n, cursor_next(&c)) {
            int width = unit_width(v, c);
            moments_add(&acc, load_unit(x + unit_at(v, c), width), width);
        }
        moments_flush(&acc);
    }
    return group_moments(la, lb, lc, acc.total);
}

// silu(z) and dy·silu'(z), for the norm ops that end in a SiLU (the UNets' GroupNorm → SiLU).
inline vec silu(vec z) { return z / (1.0f + exp(-z)); }
inline vec silu_gradient(vec z, vec dy) { vec s = 1.0f / (1.0f + exp(-z)); return dy * s * (1.0f + z * (1.0f - s)); }

// y = (x − mean)·rstd·w[c] + b[c], then SiLU when `with_silu`; one work-group per statistics set.
inline void norm_forward(__global const float* x, __global const float* w, __global const float* b, __global float* y,
                         SetLayout l, float eps, bool with_silu, __local float* la, __local float* lb, __local float* lc) {
    SetView v = set_view(l, get_group_id(0));
    float origin = set_origin(x, v);
    Moments m = set_moments(x, v, origin, la, lb, lc);
    // x − mean with the mean rounded to float, as the CPU reference does.
    float mean = origin + m.mean, rstd = 1.0f / sqrt(m.m2 / m.n + eps);
    for (Cursor c = cursor_start(v); c.u < c.end; cursor_next(&c)) {
        int at = unit_at(v, c), ch = unit_channel(v, c), width = unit_width(v, c);
        vec z = (load_unit(x + at, width) - mean) * (rstd * w[ch]) + b[ch];
        store_unit(y + at, width, with_silu ? silu(z) : z);
    }
}

__kernel void channel_norm(__global const float* x, int xo, __global const float* w, int wo, __global const float* b, int bo,
                           __global float* y, int yo, SetLayout l, float eps) {
    __local float la[NORM_LOCAL], lb[NORM_LOCAL], lc[NORM_LOCAL];
    norm_forward(x + xo, w + wo, b + bo, y + yo, l, eps, false, la, lb, lc);
}

__kernel void channel_norm_silu(__global const float* x, int xo, __global const float* w, int wo, __global const float* b,
                                int bo, __global float* y, int yo, SetLayout l, float eps) {
    __local float la[NORM_LOCAL], lb[NORM_LOCAL], lc[NORM_LOCAL];
    norm_forward(x + xo, w + wo, b + bo, y + yo, l, eps, true, la, lb, lc);
}

// dx = rstd·(w·dy − mean(w·dy) − x̂·mean(w·dy·x̂)) per set. One pass gathers the moments of x together with
// Σ w·dy and Σ w·dy·(x − origin); the mean is substituted after the merge.
__kernel void channel_norm_backward_input(__global const float* x, int xo, __global const float* w, int wo,
                                          __global const float* dy, int dyo, __global float* dx, int dxo,
                                          SetLayout l, float eps) {
    __local float la[NORM_LOCAL], lb[NORM_LOCAL], lc[NORM_LOCAL];
    SetView v = set_view(l, get_group_id(0));
    float origin = set_origin(x + xo, v);
    MomentAccumulator acc = moments_begin(origin);
    float2 total = (float2)(0.0f, 0.0f);
    for (Cursor c = cursor_start(v); c.u < c.end;) {
        vec g_sum = (vec)(0.0f), gx_sum = (vec)(0.0f);
        for (int n = 0; n < NORM_CHUNK && c.u < c.end; ++n, cursor_next(&c)) {
            int at = unit_at(v, c), width = unit_width(v, c);
            vec xv = load_unit(x + xo + at, width), g = w[wo + unit_channel(v, c)] * load_unit(dy + dyo + at, width);
            moments_add(&acc, xv, width);
            g_sum += g;
            gx_sum += g * (xv - origin);  // lanes past the plane hold g = 0
        }
        moments_flush(&acc);
        total += (float2)(lane_sum(g_sum), lane_sum(gx_sum));
    }
    Moments m = group_moments(la, lb, lc, acc.total);
    float mean = origin + m.mean, rstd = 1.0f / sqrt(m.m2 / m.n + eps);
    float2 sums = group_sum2(la, lb, total);
    float mean_term = rstd * sums.x / m.n, slope = rstd * rstd * rstd * (sums.y - m.mean * sums.x) / m.n;
    for (Cursor c = cursor_start(v); c.u < c.end; cursor_next(&c)) {
        int at = unit_at(v, c), width = unit_width(v, c);
        vec g = (rstd * w[wo + unit_channel(v, c)]) * load_unit(dy + dyo + at, width);
        store_unit(dx + dxo + at, width, g - mean_term - (load_unit(x + xo + at, width) - mean) * slope);
    }
}

// dx after a SiLU, per set: g = dy·silu'(x̂·w + b) needs the statistics first, so one pass takes the moments, a
// second gathers Σ w·g and Σ w·g·(x − mean), a third writes dx = rstd·(w·g − mean(w·g) − x̂·mean(w·g·x̂)).
__kernel void channel_norm_silu_backward_input(__global const float* x, int xo, __global const float* w, int wo,
                                               __global const float* dy, int dyo, __global const float* b, int bo,
                                               __global float* dx, int dxo, SetLayout l, float eps) {
    __local float la[NORM_LOCAL], lb[NORM_LOCAL], lc[NORM_LOCAL];
    x += xo; w += wo; dy += dyo; b += bo; dx += dxo;
    SetView v = set_view(l, get_group_id(0));
    float origin = set_origin(x, v);
    Moments m = set_moments(x, v, origin, la, lb, lc);
    float mean = origin + m.mean, rstd = 1.0f / sqrt(m.m2 / m.n + eps);
    float2 total = (float2)(0.0f, 0.0f);
    for (Cursor c = cursor_start(v); c.u < c.end;) {
        vec g_sum = (vec)(0.0f), gx_sum = (vec)(0.0f);
        for (int n = 0; n < NORM_CHUNK && c.u < c.end; ++n, cursor_next(&c)) {
            int at = unit_at(v, c), ch = unit_channel(v, c), width = unit_width(v, c);
            vec d = select((vec)(0.0f), load_unit(x + at, width) - mean, lanes_below(width));
            vec g = w[ch] * silu_gradient(d * (rstd * w[ch]) + b[ch], load_unit(dy + at, width));  // 0 past the plane
            g_sum += g;
            gx_sum += g * d;
        }
        total += (float2)(lane_sum(g_sum), lane_sum(gx_sum));
    }
    float2 sums = group_sum2(la, lb, total);
    float mean_term = rstd * sums.x / m.n, slope = rstd * rstd * rstd * sums.y / m.n;
    for (Cursor c = cursor_start(v); c.u < c.end; cursor_next(&c)) {
        int at = unit_at(v, c), ch = unit_channel(v, c), width = unit_width(v, c);
        vec d = load_unit(x + at, width) - mean;
        vec g = silu_gradient(d * (rstd * w[ch]) + b[ch], load_unit(dy + at, width));
        store_unit(dx + at, width, (rstd * w[ch]) * g - mean_term - d * slope);
    }
}

// Per set: stats[s] = mean, stats[sets + s] = 1/sqrt(variance + eps), or the unbiased variance when `unbiased`.
__kernel void norm_statistics(__global const float* x, int xo, __global float* stats, int so, SetLayout l, float eps,
                              int unbiased) {
    __local float la[NORM_LOCAL], lb[NORM_LOCAL], lc[NORM_LOCAL];
    int s = get_group_id(0), sets = get_num_groups(0);
    SetView v = set_view(l, s);
    float origin = set_origin(x + xo, v);
    Moments m = set_moments(x + xo, v, origin, la, lb, lc);
    if (get_local_id(0) == 0) {
        stats[so + s] = origin + m.mean;
        stats[so + sets + s] = unbiased ? m.m2 / (m.n - 1.0f) : 1.0f / sqrt(m.m2 / m.n + eps);
    }
}

// dweight[c] = Σ g·(x − mean)·rstd and dbias[c] = Σ g over channel c's planes, with each plane's set statistics
// from norm_statistics and g = dy, or dy·silu'(x̂·w + b) when `with_silu` (w, b are read only then); one
// work-group per channel, out [2, C].
inline void norm_backward_params(__global const float* x, __global const float* dy, __global const float* w,
                                 __global const float* b, __global const float* stats, __global float* out,
                                 SetLayout l, int sets, bool with_silu, __local float* la, __local float* lb) {
    int ch = get_group_id(0);
    SetView v = channel_view(l, ch);
    float2 total = (float2)(0.0f, 0.0f);
    for (Cursor c = cursor_start(v); c.u < c.end;) {
        vec dw = (vec)(0.0f), db = (vec)(0.0f);
        for (int n = 0; n < NORM_CHUNK && c.u < c.end; ++n, cursor_next(&c)) {
            int at = unit_at(v, c), width = unit_width(v, c), s = l.groups > 0 ? c.k * l.groups + ch / l.per_set : ch;
            vec xhat = (load_unit(x + at, width) - stats[s]) * stats[sets + s], g = load_unit(dy + at, width);
            if (with_silu) g = silu_gradient(xhat * w[ch] + b[ch], g);  // dy is 0 past the plane
            dw += g * xhat;
            db += g;
        }
        total += (float2)(lane_sum(dw), lane_sum(db));
    }
    float2 sums = group_sum2(la, lb, total);
    if (get_local_id(0) == 0) { out[ch] = sums.x; out[l.channels + ch] = sums.y; }
}

__kernel void channel_norm_backward_params(__global const float* x, int xo, __global const float* dy, int dyo,
                                           __global const float* stats, int so, __global float* out, int oo,
                                           SetLayout l, int sets) {
    __local float la[NORM_LOCAL], lb[NORM_LOCAL];
    norm_backward_params(x + xo, dy + dyo, 0, 0, stats + so, out + oo, l, sets, false, la, lb);
}

__kernel void channel_norm_silu_backward_params(__global const float* x, int xo, __global const float* dy, int dyo,
                                                __global const float* w, int wo, __global const float* b, int bo,
                                                __global const float* stats, int so, __global float* out, int oo,
                                                SetLayout l, int sets) {
    __local float la[NORM_LOCAL], lb[NORM_LOCAL];
    norm_backward_params(x + xo, dy + dyo, w + wo, b + bo, stats + so, out + oo, l, sets, true, la, lb);
}

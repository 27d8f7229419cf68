// Normalisation (Sources/HistoCore/Ops/Normalization.swift). x [N, C, spatial…] is N·C planes of `plane` elements;
// a statistics set is `per_set` planes: for group norm (groups > 0) the C/G consecutive planes of one sample's
// group (one contiguous run), for batch norm (groups == 0) plane c of every sample (planes C apart).
// One work-group per set. Work-items take units of NORM_VEC consecutive elements of a plane (the last unit of a
// plane may be partial), so loads are wide: interleaved across work-items on GPUs (coalesced), all of them in
// work-item 0 on CPU devices, walked as runs of units inside one plane (see Run). Statistics take one pass over the set, on values taken
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

// A work-item's walk over its units of a set as runs: units [j, j + units) of plane k, the last one partial
// (`tail` elements) when it ends the plane and the plane is not a multiple of NORM_VEC. Loops take a run's `full`
// units with the constant width NORM_VEC (no masks, no per-unit index bookkeeping), then its partial unit.
// GPUs interleave the work-items (units lid, lid + NORM_LOCAL, …: coalesced loads), so a run is one unit. On CPU
// devices (CPU_DEVICE, set by the backend) a work-group runs as a loop over its work-items on one core, so
// splitting a set between them buys no parallelism, only per-work-item setup: work-item 0 walks the whole set,
// a run being one plane.
typedef struct { int u, end, k, j, units, full, tail, step_k, step_j, per_plane, plane_tail; } Run;

inline void run_measure(Run* r) {
#ifdef CPU_DEVICE
    r->units = r->per_plane;
#else
    r->units = 1;
#endif
    bool partial = r->plane_tail > 0 && r->j + r->units == r->per_plane;
    r->full = r->units - (partial ? 1 : 0);
    r->tail = partial ? r->plane_tail : 0;
}

inline Run run_start(SetView v) {
    int lid = get_local_id(0), per_plane = max(v.units_per_plane, 1);
#ifdef CPU_DEVICE
    int first = lid == 0 ? 0 : v.units, end = v.units, stride = 1;
#else
    int first = lid, end = v.units, stride = NORM_LOCAL;
#endif
    Run r = { first, end, first / per_plane, first % per_plane, 0, 0, 0, stride / per_plane, stride % per_plane,
              per_plane, v.plane % NORM_VEC };
    if (r.u < r.end) run_measure(&r);
    return r;
}

inline void run_next(Run* r) {
#ifdef CPU_DEVICE
    r->u += r->units; r->k += 1;  // a CPU run is a whole plane
#else
    r->u += NORM_LOCAL; r->k += r->step_k; r->j += r->step_j;
    if (r->j >= r->per_plane) { r->j -= r->per_plane; r->k += 1; }
#endif
    if (r->u < r->end) run_measure(r);
}

// Element offset and channel of a run's first unit; its partial unit starts at run_at + full·NORM_VEC.
inline int run_at(SetView v, Run r) { return v.base + r.k * v.plane_stride + r.j * NORM_VEC; }
inline int run_channel(SetView v, Run r) { return v.first_channel + r.k * v.channel_step; }

// Lanes of a unit that hold elements.
inline int8 lanes_below(int width) { return (int8)(0, 1, 2, 3, 4, 5, 6, 7) < (int8)(width); }

// Partial units are read and written lane by lane through named components: a pointer into a private vector
// would keep every unit in stack memory on CPU compilers.
inline vec load_unit(__global const float* p, int width) {
    if (width == NORM_VEC) return vload(0, p);
    vec v = (vec)(0.0f);
    v.s0 = p[0];
    if (width > 1) v.s1 = p[1];
    if (width > 2) v.s2 = p[2];
    if (width > 3) v.s3 = p[3];
    if (width > 4) v.s4 = p[4];
    if (width > 5) v.s5 = p[5];
    if (width > 6) v.s6 = p[6];
    return v;
}

inline void store_unit(__global float* p, int width, vec v) {
    if (width == NORM_VEC) { vstore(v, 0, p); return; }
    p[0] = v.s0;
    if (width > 1) p[1] = v.s1;
    if (width > 2) p[2] = v.s2;
    if (width > 3) p[3] = v.s3;
    if (width > 4) p[4] = v.s4;
    if (width > 5) p[5] = v.s5;
    if (width > 6) p[6] = v.s6;
}

// Stores of full units that the kernel does not read back. On CPU devices they bypass the caches when the address
// is aligned for it (non-temporal stores, as a large memcpy does): no read-for-ownership of every written line.
#if defined(CPU_DEVICE) && defined(__has_builtin)
#if __has_builtin(__builtin_nontemporal_store)
#define NORM_STREAM_STORES
#endif
#endif

inline bool can_stream(__global float* p) {
#ifdef NORM_STREAM_STORES
    return ((size_t)p & (sizeof(vec) - 1)) == 0;
#else
    return false;
#endif
}

// Unit i of the run at p; `stream` from can_stream(p).
inline void store_full(vec v, int i, __global float* p, bool stream) {
#ifdef NORM_STREAM_STORES
    if (stream) { __builtin_nontemporal_store(v, (__global vec*)p + i); return; }
#endif
    vstore(v, i, p);
}

inline float lane_sum(vec v) {
    float4 a = v.lo + v.hi;
    float2 b = a.lo + a.hi;
    return b.x + b.y;
}

// Two running sums, taken lane-wise and folded into `total` every NORM_CHUNK units so the lane sums stay short.
typedef struct { vec a, b; float2 total; int units; } SumPair;

inline SumPair sums_begin(void) {
    SumPair s = { (vec)(0.0f), (vec)(0.0f), (float2)(0.0f, 0.0f), 0 };
    return s;
}

inline void sums_flush(SumPair* s) {
    s->total += (float2)(lane_sum(s->a), lane_sum(s->b));
    s->a = (vec)(0.0f); s->b = (vec)(0.0f); s->units = 0;
}

inline void sums_add(SumPair* s, vec a, vec b) {
    s->a += a; s->b += b;
    if (++s->units == NORM_CHUNK) sums_flush(s);
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
typedef struct { Moments total; float origin, shift; int count, units; vec sum, squares; } MomentAccumulator;

inline MomentAccumulator moments_begin(float origin) {
    MomentAccumulator a = { { 0.0f, 0.0f, 0.0f }, origin, origin, 0, 0, (vec)(0.0f), (vec)(0.0f) };
    return a;
}


inline void moments_flush(MomentAccumulator* a) {
    if (a->count == 0) return;
    float n = (float)a->count, sum = lane_sum(a->sum), squares = lane_sum(a->squares);
    Moments chunk = { n, (a->shift - a->origin) + sum / n, fmax(squares - sum * sum / n, 0.0f) };
    a->total = moments_merge(a->total, chunk);
    a->shift = a->origin + a->total.mean; a->sum = (vec)(0.0f); a->squares = (vec)(0.0f); a->count = 0; a->units = 0;
}

// Adds a unit of `width` elements (lanes past it are ignored), flushing every NORM_CHUNK units.
inline void moments_add(MomentAccumulator* a, vec x, int width) {
    vec d = width == NORM_VEC ? x - a->shift : select((vec)(0.0f), x - a->shift, lanes_below(width));
    a->sum += d; a->squares += d * d; a->count += width;
    if (++a->units >= NORM_CHUNK) moments_flush(a);
}

// Two full units at once: one addition per pair into each running sum halves the sums' dependency chains.
inline void moments_add_pair(MomentAccumulator* a, vec x0, vec x1) {
    vec d0 = x0 - a->shift, d1 = x1 - a->shift;
    a->sum += d0 + d1; a->squares += d0 * d0 + d1 * d1; a->count += 2 * NORM_VEC;
    a->units += 2;
    if (a->units >= NORM_CHUNK) moments_flush(a);
}

// The moments of a run's units at p.
inline void moments_add_run(MomentAccumulator* a, __global const float* p, Run r) {
    int i = 0;
    for (; i + 1 < r.full; i += 2) moments_add_pair(a, vload(i, p), vload(i + 1, p));
    if (i < r.full) moments_add(a, vload(i, p), NORM_VEC);
    if (r.tail > 0) moments_add(a, load_unit(p + r.full * NORM_VEC, r.tail), r.tail);
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
    for (Run r = run_start(v); r.u < r.end; run_next(&r)) moments_add_run(&acc, x + run_at(v, r), r);
    moments_flush(&acc);
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
    for (Run r = run_start(v); r.u < r.end; run_next(&r)) {
        int at = run_at(v, r), ch = run_channel(v, r);
        float scale = rstd * w[ch], shift = b[ch];
        bool stream = can_stream(y + at);
        for (int i = 0; i < r.full; ++i) {
            vec z = (vload(i, x + at) - mean) * scale + shift;
            store_full(with_silu ? silu(z) : z, i, y + at, stream);
        }
        if (r.tail > 0) {
            int last = at + r.full * NORM_VEC;
            vec z = (load_unit(x + last, r.tail) - mean) * scale + shift;
            store_unit(y + last, r.tail, with_silu ? silu(z) : z);
        }
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
// One unit of the gathering pass of channel_norm_backward_input (lanes past `width` hold g = 0).
inline void input_gradient_unit(MomentAccumulator* acc, SumPair* sums, vec xv, vec g, float origin, int width) {
    moments_add(acc, xv, width);
    sums_add(sums, g, g * (xv - origin));
}

__kernel void channel_norm_backward_input(__global const float* x, int xo, __global const float* w, int wo,
                                          __global const float* dy, int dyo, __global float* dx, int dxo,
                                          SetLayout l, float eps) {
    __local float la[NORM_LOCAL], lb[NORM_LOCAL], lc[NORM_LOCAL];
    x += xo; w += wo; dy += dyo; dx += dxo;
    SetView v = set_view(l, get_group_id(0));
    float origin = set_origin(x, v);
    MomentAccumulator acc = moments_begin(origin);
    SumPair gathered = sums_begin();
    for (Run r = run_start(v); r.u < r.end; run_next(&r)) {
        int at = run_at(v, r), last = at + r.full * NORM_VEC;
        float wc = w[run_channel(v, r)];
        for (int i = 0; i < r.full; ++i) {
            input_gradient_unit(&acc, &gathered, vload(i, x + at), wc * vload(i, dy + at), origin, NORM_VEC);
        }
        if (r.tail > 0) {
            input_gradient_unit(&acc, &gathered, load_unit(x + last, r.tail), wc * load_unit(dy + last, r.tail), origin, r.tail);
        }
    }
    moments_flush(&acc);
    sums_flush(&gathered);
    Moments m = group_moments(la, lb, lc, acc.total);
    float mean = origin + m.mean, rstd = 1.0f / sqrt(m.m2 / m.n + eps);
    float2 sums = group_sum2(la, lb, gathered.total);
    float mean_term = rstd * sums.x / m.n, slope = rstd * rstd * rstd * (sums.y - m.mean * sums.x) / m.n;
    for (Run r = run_start(v); r.u < r.end; run_next(&r)) {
        int at = run_at(v, r), last = at + r.full * NORM_VEC;
        float scale = rstd * w[run_channel(v, r)];
        bool stream = can_stream(dx + at);
        for (int i = 0; i < r.full; ++i) {
            store_full(scale * vload(i, dy + at) - mean_term - (vload(i, x + at) - mean) * slope, i, dx + at, stream);
        }
        if (r.tail > 0) {
            vec g = scale * load_unit(dy + last, r.tail);
            store_unit(dx + last, r.tail, g - mean_term - (load_unit(x + last, r.tail) - mean) * slope);
        }
    }
}

// dx after a SiLU, per set: g = dy·silu'(x̂·w + b) needs the statistics first, so one pass takes the moments, a
// second gathers Σ w·g and Σ w·g·(x − mean), a third writes dx = rstd·(w·g − mean(w·g) − x̂·mean(w·g·x̂)).
// d = x − mean is zeroed past `width`, where dy is 0 too, so those lanes add nothing.
inline void silu_gradient_unit(SumPair* sums, vec d, vec dy, float scale, float shift, float wc) {
    vec g = wc * silu_gradient(d * scale + shift, dy);
    sums_add(sums, g, g * d);
}

inline vec silu_input_gradient(vec d, vec dy, float scale, float shift, float mean_term, float slope) {
    return scale * silu_gradient(d * scale + shift, dy) - mean_term - d * slope;
}

__kernel void channel_norm_silu_backward_input(__global const float* x, int xo, __global const float* w, int wo,
                                               __global const float* dy, int dyo, __global const float* b, int bo,
                                               __global float* dx, int dxo, SetLayout l, float eps) {
    __local float la[NORM_LOCAL], lb[NORM_LOCAL], lc[NORM_LOCAL];
    x += xo; w += wo; dy += dyo; b += bo; dx += dxo;
    SetView v = set_view(l, get_group_id(0));
    float origin = set_origin(x, v);
    Moments m = set_moments(x, v, origin, la, lb, lc);
    float mean = origin + m.mean, rstd = 1.0f / sqrt(m.m2 / m.n + eps);
    SumPair gathered = sums_begin();
    for (Run r = run_start(v); r.u < r.end; run_next(&r)) {
        int at = run_at(v, r), ch = run_channel(v, r), last = at + r.full * NORM_VEC;
        float scale = rstd * w[ch];
        for (int i = 0; i < r.full; ++i) {
            silu_gradient_unit(&gathered, vload(i, x + at) - mean, vload(i, dy + at), scale, b[ch], w[ch]);
        }
        if (r.tail > 0) {
            vec d = select((vec)(0.0f), load_unit(x + last, r.tail) - mean, lanes_below(r.tail));
            silu_gradient_unit(&gathered, d, load_unit(dy + last, r.tail), scale, b[ch], w[ch]);
        }
    }
    sums_flush(&gathered);
    float2 sums = group_sum2(la, lb, gathered.total);
    float mean_term = rstd * sums.x / m.n, slope = rstd * rstd * rstd * sums.y / m.n;
    for (Run r = run_start(v); r.u < r.end; run_next(&r)) {
        int at = run_at(v, r), ch = run_channel(v, r), last = at + r.full * NORM_VEC;
        float scale = rstd * w[ch];
        bool stream = can_stream(dx + at);
        for (int i = 0; i < r.full; ++i) {
            vec g = silu_input_gradient(vload(i, x + at) - mean, vload(i, dy + at), scale, b[ch], mean_term, slope);
            store_full(g, i, dx + at, stream);
        }
        if (r.tail > 0) {
            vec d = load_unit(x + last, r.tail) - mean;
            store_unit(dx + last, r.tail, silu_input_gradient(d, load_unit(dy + last, r.tail), scale, b[ch], mean_term, slope));
        }
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
inline void params_unit(SumPair* sums, vec xv, vec dy, float mean, float rstd, float wc, float bc, bool with_silu) {
    vec xhat = (xv - mean) * rstd, g = with_silu ? silu_gradient(xhat * wc + bc, dy) : dy;  // dy is 0 past the plane
    sums_add(sums, g * xhat, g);
}

inline void norm_backward_params(__global const float* x, __global const float* dy, __global const float* w,
                                 __global const float* b, __global const float* stats, __global float* out,
                                 SetLayout l, int sets, bool with_silu, __local float* la, __local float* lb) {
    int ch = get_group_id(0);
    SetView v = channel_view(l, ch);
    float wc = with_silu ? w[ch] : 1.0f, bc = with_silu ? b[ch] : 0.0f;
    SumPair gathered = sums_begin();
    for (Run r = run_start(v); r.u < r.end; run_next(&r)) {
        int at = run_at(v, r), last = at + r.full * NORM_VEC, s = l.groups > 0 ? r.k * l.groups + ch / l.per_set : ch;
        float mean = stats[s], rstd = stats[sets + s];
        for (int i = 0; i < r.full; ++i) params_unit(&gathered, vload(i, x + at), vload(i, dy + at), mean, rstd, wc, bc, with_silu);
        if (r.tail > 0) {
            params_unit(&gathered, load_unit(x + last, r.tail), load_unit(dy + last, r.tail), mean, rstd, wc, bc, with_silu);
        }
    }
    sums_flush(&gathered);
    float2 sums = group_sum2(la, lb, gathered.total);
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

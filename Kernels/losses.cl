// Class-target losses (Sources/HistoCore/Ops/Losses.swift): cross_entropy / nll_loss of scores [N, C, inner] against
// labels [N, inner] (floats holding class ids), one work-item per labelled position. `.sum`/`.mean` never use float
// atomics: each work-group tree-reduces its positions' (loss, weight) into a partial, then one work-group combines
// the partials with the same tree, so results are deterministic for a given size.
#include "common.h"
#define LOSS_LOCAL 256
#define CONSTANT_CHUNK 64

// Op constants passed by value: consts[0..<C] are the class weights, consts[C] the gradient scale.
typedef struct { float value[CONSTANT_CHUNK]; } ConstantChunk;

__kernel void store_constants(__global float* y, int yo, ConstantChunk chunk, int start, int n) {
    int i = get_global_id(0);
    if (i < n) y[yo + start + i] = chunk.value[i];
}

#define TARGET_IGNORED (-1)
#define TARGET_INVALID (-2)

// The class of a label, TARGET_IGNORED, or TARGET_INVALID (outside 0..<classes or not an integer).
inline int target_class(float label, int classes, int has_ignore, float ignore_label) {
    if (has_ignore && label == ignore_label) return TARGET_IGNORED;
    if (!(label >= 0.0f && label < (float)classes && label == floor(label))) return TARGET_INVALID;
    return (int)label;
}

// (max, Σ exp(x − max)) over the class axis at `base` (max-subtracted log-sum-exp).
inline float2 max_and_sum_exp(__global const float* x, int base, int classes, int inner) {
    float m = -INFINITY;
    for (int j = 0; j < classes; ++j) m = fmax(m, x[base + j * inner]);
    float s = 0.0f;
    for (int j = 0; j < classes; ++j) s += exp(x[base + j * inner] - m);
    return (float2)(m, s);
}

// (loss, weight) of position e: w·(logsumexp − x_y) from logits, −w·x_y from log-probabilities; (0, 0) when
// ignored; (NaN, NaN) for an invalid label, which poisons the loss and the mean's divisor like the CPU reference.
// Without with_loss only the weight is computed.
inline float2 element_loss(__global const float* x, int xo, __global const float* labels, int lo,
                           __global const float* consts, int co, int e, int classes, int inner,
                           int from_logits, int has_ignore, float ignore_label, int with_loss) {
    int c = target_class(labels[lo + e], classes, has_ignore, ignore_label);
    if (c == TARGET_IGNORED) return (float2)(0.0f, 0.0f);
    if (c == TARGET_INVALID) return (float2)(NAN, NAN);
    float w = consts[co + c];
    if (!with_loss) return (float2)(0.0f, w);
    int base = xo + (e / inner) * classes * inner + e % inner;
    float picked = x[base + c * inner];
    if (!from_logits) return (float2)(-w * picked, w);
    float2 ms = max_and_sum_exp(x, base, classes, inner);
    return (float2)(w * (ms.x + log(ms.y) - picked), w);
}

// Per-position losses (reduction .none).
__kernel void class_target_loss(__global const float* x, int xo, __global const float* labels, int lo,
                                __global const float* consts, int co, __global float* y, int yo,
                                int classes, int inner, int from_logits, int has_ignore, float ignore_label, int n) {
    int e = get_global_id(0);
    if (e < n) y[yo + e] = element_loss(x, xo, labels, lo, consts, co, e, classes, inner,
                                        from_logits, has_ignore, ignore_label, 1).x;
}

inline float2 group_sum2(__local float2* scratch, float2 value) {
    int lid = get_local_id(0);
    scratch[lid] = value;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = LOSS_LOCAL / 2; s > 0; s >>= 1) {
        if (lid < s) scratch[lid] += scratch[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    return scratch[0];
}

// Partial (Σ loss, Σ weight) of each work-group over positions group·LOSS_LOCAL + lid + k·(groups·LOSS_LOCAL),
// written to partials[2·group], partials[2·group + 1].
__kernel void class_target_loss_partials(__global const float* x, int xo, __global const float* labels, int lo,
                                         __global const float* consts, int co, __global float* partials, int po,
                                         int classes, int inner, int from_logits, int has_ignore, float ignore_label,
                                         int with_loss, int n) {
    __local float2 scratch[LOSS_LOCAL];
    int lid = get_local_id(0), group = get_group_id(0), stride = get_num_groups(0) * LOSS_LOCAL;
    float2 acc = (float2)(0.0f, 0.0f);
    for (int e = group * LOSS_LOCAL + lid; e < n; e += stride) {
        acc += element_loss(x, xo, labels, lo, consts, co, e, classes, inner, from_logits, has_ignore, ignore_label, with_loss);
    }
    acc = group_sum2(scratch, acc);
    if (lid == 0) {
        partials[po + 2 * group] = acc.x;
        partials[po + 2 * group + 1] = acc.y;
    }
}

// Combines `groups` partials in one work-group into y[slot]. result: 0 Σ loss (.sum), 1 Σ loss / Σ weight (.mean),
// 2 1 / Σ weight (the gradient scale of .mean).
__kernel void loss_total(__global const float* partials, int po, __global float* y, int yo, int slot, int groups, int result) {
    __local float2 scratch[LOSS_LOCAL];
    int lid = get_local_id(0);
    float2 acc = (float2)(0.0f, 0.0f);
    for (int g = lid; g < groups; g += LOSS_LOCAL) acc += (float2)(partials[po + 2 * g], partials[po + 2 * g + 1]);
    acc = group_sum2(scratch, acc);
    if (lid == 0) y[yo + slot] = result == 0 ? acc.x : (result == 1 ? acc.x / acc.y : 1.0f / acc.y);
}

// dscores of one position: g·(softmax − onehot(y)) from logits, −g·onehot(y) from log-probabilities, with
// g = w·scale·dy; zero when ignored, NaN for an invalid label.
__kernel void class_target_loss_backward(__global const float* x, int xo, __global const float* labels, int lo,
                                         __global const float* consts, int co, __global const float* dy, int dyo,
                                         __global float* dx, int dxo, int classes, int inner, int from_logits,
                                         int has_ignore, float ignore_label, int per_element, int n) {
    int e = get_global_id(0);
    if (e >= n) return;
    int base = (e / inner) * classes * inner + e % inner;
    int c = target_class(labels[lo + e], classes, has_ignore, ignore_label);
    if (c < 0) {
        float fill = c == TARGET_IGNORED ? 0.0f : NAN;
        for (int j = 0; j < classes; ++j) dx[dxo + base + j * inner] = fill;
        return;
    }
    float g = consts[co + c] * consts[co + classes] * dy[dyo + (per_element ? e : 0)];
    if (from_logits) {
        float2 ms = max_and_sum_exp(x, xo + base, classes, inner);
        float inv = 1.0f / ms.y;
        for (int j = 0; j < classes; ++j) {
            float p = exp(x[xo + base + j * inner] - ms.x) * inv;
            dx[dxo + base + j * inner] = g * (j == c ? p - 1.0f : p);
        }
    } else {
        for (int j = 0; j < classes; ++j) dx[dxo + base + j * inner] = j == c ? -g : 0.0f;
    }
}

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

// CDCL's cross-patch InfoNCE (CrossPatchInfoNCE in Sources/HistoCore/Ops/Losses.swift): one work-item per anchor
// (per key for the keys' gradient) that recomputes its similarities as it goes, so that nothing [anchors, keys] is
// stored. Anchors q and their positives [P, D], keys [K, D], the anchors' labels and patch scores [P], the keys' [K].
#define CONTRAST_INPUTS __global const float* q, int qo, __global const float* pos, int po, \
    __global const float* k, int ko, __global const float* ql, int qlo, __global const float* qs, int qso, \
    __global const float* kl, int klo, __global const float* ks, int kso
#define CONTRAST_ARGUMENTS int anchors, int keys, int depth, float tau, float background, float foreground, \
    int use_limit, float limit, float epsilon

inline float contrast_logit(__global const float* a, int ao, __global const float* b, int bo, int depth, float tau) {
    float dot = 0.0f;
    for (int d = 0; d < depth; ++d) dot += a[ao + d] * b[bo + d];
    return dot / tau;
}

// Whether a key is a negative of an anchor: different labels and opposite patch types (or FS_q + FS_k ≤ limit).
inline int contrast_is_negative(float lq, float sq, float lk, float sk, float background, float foreground,
                                int use_limit, float limit) {
    if (lq == lk) return 0;
    if (use_limit) return sq + sk <= limit;
    return (sq <= background && sk >= foreground) || (sq >= foreground && sk <= background);
}
// Whether key j is a negative of anchor i, inside a kernel or function that takes CONTRAST_INPUTS and _ARGUMENTS.
#define CONTRAST_NEGATIVE(i, j) contrast_is_negative(ql[qlo + (i)], qs[qso + (i)], kl[klo + (j)], ks[kso + (j)], \
                                                     background, foreground, use_limit, limit)
// Passes on CONTRAST_INPUTS and CONTRAST_ARGUMENTS.
#define CONTRAST_PASS_INPUTS q, qo, pos, po, k, ko, ql, qlo, qs, qso, kl, klo, ks, kso
#define CONTRAST_PASS_ARGUMENTS anchors, keys, depth, tau, background, foreground, use_limit, limit, epsilon

// Anchor i's (m, ties of m, p, Σ J·e^{n−m}), the keys streamed once (the sum rescaled when the running max rises).
inline float4 contrast_row(CONTRAST_INPUTS, int i, CONTRAST_ARGUMENTS) {
    float p = contrast_logit(q, qo + i * depth, pos, po + i * depth, depth, tau);
    float m = p, ties = 1.0f, sum = 0.0f;
    for (int j = 0; j < keys; ++j) {
        float n = contrast_logit(q, qo + i * depth, k, ko + j * depth, depth, tau);
        if (n > m) { sum *= exp(m - n); m = n; ties = 0.0f; }
        if (n == m) ties += 1.0f;
        if (CONTRAST_NEGATIVE(i, j)) sum += exp(n - m);
    }
    return (float4)(m, ties, p, sum);
}

// (m, g·∂l/∂n per J·e^{n−m}, g·∂l/∂m per tie, g·∂l/∂p in all) of a row's statistics and its
// cotangent g (RowStatistics.weights in Sources/HistoCore/Ops/Losses.swift).
inline float4 contrast_weights(float4 row, float g, float epsilon) {
    float e = exp(row.z - row.x), denominator = e + row.w + epsilon;
    float outer = -1.0f / (e / denominator + epsilon), squared = denominator * denominator;
    float tie = -outer * e * epsilon / squared / row.y;
    return (float4)(row.x, -g * outer * e / squared, g * tie,
                    g * (outer * e * (denominator - e) / squared + (row.z == row.x ? tie : 0.0f)));
}

// w of anchor i and key j with similarity n, from the anchor's (m, negative, tie).
inline float contrast_weight(float n, float m, float negative, float tie, int is_negative) {
    return (is_negative ? negative * exp(n - m) : 0.0f) + (n == m ? tie : 0.0f);
}

__kernel void cross_patch_info_nce(CONTRAST_INPUTS, __global float* y, int yo, CONTRAST_ARGUMENTS, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    float4 row = contrast_row(CONTRAST_PASS_INPUTS, i, CONTRAST_PASS_ARGUMENTS);
    float e = exp(row.z - row.x);
    y[yo + i] = -log(e / (e + row.w + epsilon) + epsilon);
}

// Anchor i: its (m, negative, tie) into `weights`, dq and dk₊ into `grad` ([dq, dpositives, dkeys], flat).
__kernel void cross_patch_info_nce_backward_anchors(CONTRAST_INPUTS, __global const float* dy, int dyo,
                                                    __global float* weights, int wo, __global float* grad, int go,
                                                    CONTRAST_ARGUMENTS, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    float4 w = contrast_weights(contrast_row(CONTRAST_PASS_INPUTS, i, CONTRAST_PASS_ARGUMENTS), dy[dyo + i], epsilon);
    weights[wo + 3 * i] = w.x;
    weights[wo + 3 * i + 1] = w.y;
    weights[wo + 3 * i + 2] = w.z;
    int dq = go + i * depth, dpositive = go + (anchors + i) * depth;
    for (int d = 0; d < depth; ++d) {
        grad[dq + d] = w.w * pos[po + i * depth + d];
        grad[dpositive + d] = w.w * q[qo + i * depth + d] / tau;
    }
    for (int j = 0; j < keys; ++j) {
        float s = contrast_logit(q, qo + i * depth, k, ko + j * depth, depth, tau);
        float wj = contrast_weight(s, w.x, w.y, w.z, CONTRAST_NEGATIVE(i, j));
        if (wj != 0.0f) for (int d = 0; d < depth; ++d) grad[dq + d] += wj * k[ko + j * depth + d];
    }
    for (int d = 0; d < depth; ++d) grad[dq + d] /= tau;
}

// Key j: dk = Σ_q w·q/τ from the anchors' (m, negative, tie).
__kernel void cross_patch_info_nce_backward_keys(CONTRAST_INPUTS, __global const float* weights, int wo,
                                                 __global float* grad, int go, CONTRAST_ARGUMENTS, int n) {
    int j = get_global_id(0);
    if (j >= n) return;
    int dk = go + (2 * anchors + j) * depth;
    for (int d = 0; d < depth; ++d) grad[dk + d] = 0.0f;
    for (int i = 0; i < anchors; ++i) {
        float s = contrast_logit(q, qo + i * depth, k, ko + j * depth, depth, tau);
        float wi = contrast_weight(s, weights[wo + 3 * i], weights[wo + 3 * i + 1], weights[wo + 3 * i + 2],
                                   CONTRAST_NEGATIVE(i, j));
        if (wi != 0.0f) for (int d = 0; d < depth; ++d) grad[dk + d] += wi * q[qo + i * depth + d];
    }
    for (int d = 0; d < depth; ++d) grad[dk + d] /= tau;
}

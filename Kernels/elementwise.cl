// Elementwise maps (Sources/HistoCore/Ops/Elementwise.swift). Kind codes follow UnaryKind / BinaryKind case order.
#include "common.h"

float unary_apply(int kind, float x, float a, float b) {
    switch (kind) {
    case 0: return -x;                                  // neg
    case 1: return exp(x);
    case 2: return log(x);
    case 3: return sqrt(x);
    case 4: return rsqrt(x);
    case 5: return fabs(x);
    case 6: return sin(x);
    case 7: return cos(x);
    case 8: return x * x;                               // square
    case 9: return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f); // sign
    case 10: return fmax(x, 0.0f);                      // relu
    case 11: return fmin(fmax(x, 0.0f), 6.0f);          // relu6
    case 12: return 1.0f / (1.0f + exp(-x));            // sigmoid
    case 13: return tanh(x);
    case 14: return x / (1.0f + exp(-x));               // silu
    case 15: return 0.5f * x * (1.0f + erf(x * 0.7071067811865476f)); // gelu
    case 16: return 0.5f * x * (1.0f + tanh(0.7978845608028654f * (x + 0.044715f * x * x * x))); // gelu_tanh
    case 17: return erf(x);
    case 18: return x >= 0.0f ? x : a * x;              // leaky_relu
    case 19: return a * x + b;                          // affine
    case 20: return fmin(fmax(x, a), b);                // clamp
    case 21: return pow(x, a);                          // pow_scalar
    default: return a / x;                              // reciprocal
    }
}

float unary_derivative(int kind, float x, float a, float b) {
    switch (kind) {
    case 0: return -1.0f;
    case 1: return exp(x);
    case 2: return 1.0f / x;
    case 3: return 0.5f / sqrt(x);
    case 4: return -0.5f / (x * sqrt(x));
    case 5: return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f);
    case 6: return cos(x);
    case 7: return -sin(x);
    case 8: return 2.0f * x;
    case 9: return 0.0f;
    case 10: return x > 0.0f ? 1.0f : 0.0f;
    case 11: return (x > 0.0f && x < 6.0f) ? 1.0f : 0.0f;
    case 12: { float s = 1.0f / (1.0f + exp(-x)); return s * (1.0f - s); }
    case 13: { float t = tanh(x); return 1.0f - t * t; }
    case 14: { float s = 1.0f / (1.0f + exp(-x)); return s * (1.0f + x * (1.0f - s)); }
    case 15: return 0.5f * (1.0f + erf(x * 0.7071067811865476f)) + x * 0.3989422804014327f * exp(-0.5f * x * x);
    case 16: {
        float k = 0.7978845608028654f;
        float t = tanh(k * (x + 0.044715f * x * x * x));
        return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * k * (1.0f + 3.0f * 0.044715f * x * x);
    }
    case 17: return 1.1283791670955126f * exp(-x * x);
    case 18: return x >= 0.0f ? 1.0f : a;
    case 19: return a;
    case 20: return (x >= a && x <= b) ? 1.0f : 0.0f;
    case 21: return a == 0.0f ? 0.0f : a * pow(x, a - 1.0f);
    default: return -a / (x * x);
    }
}

float binary_apply(int kind, float x, float y) {
    switch (kind) {
    case 0: return x + y;
    case 1: return x - y;
    case 2: return x * y;
    case 3: return x / y;
    case 4: return pow(x, y);
    case 5: return fmax(x, y);
    case 6: return fmin(x, y);
    case 7: return x > y ? 1.0f : 0.0f;
    case 8: return x >= y ? 1.0f : 0.0f;
    case 9: return x < y ? 1.0f : 0.0f;
    case 10: return x <= y ? 1.0f : 0.0f;
    case 11: return x == y ? 1.0f : 0.0f;
    default: return x != y ? 1.0f : 0.0f;
    }
}

__kernel void unary(__global const float* x, int xo, __global float* y, int yo, int kind, float a, float b, int n) {
    int i = get_global_id(0);
    if (i < n) y[yo + i] = unary_apply(kind, x[xo + i], a, b);
}

__kernel void unary_backward(__global const float* x, int xo, __global const float* dy, int dyo,
                             __global float* dx, int dxo, int kind, float a, float b, int n) {
    int i = get_global_id(0);
    if (i < n) dx[dxo + i] = dy[dyo + i] * unary_derivative(kind, x[xo + i], a, b);
}

__kernel void binary(__global const float* x, int xo, __global const float* y, int yo,
                     __global float* z, int zo, int kind, Walk w, int n) {
    int i = get_global_id(0);
    if (i < n) z[zo + i] = binary_apply(kind, x[xo + walk_offset(&w, 0, i)], y[yo + walk_offset(&w, 1, i)]);
}

__kernel void select_where(__global const float* c, int co, __global const float* x, int xo,
                           __global const float* y, int yo, __global float* z, int zo, Walk w, int n) {
    int i = get_global_id(0);
    if (i < n) z[zo + i] = c[co + walk_offset(&w, 0, i)] != 0.0f ? x[xo + walk_offset(&w, 1, i)] : y[yo + walk_offset(&w, 2, i)];
}

__kernel void expand(__global const float* x, int xo, __global float* y, int yo, Walk w, int n) {
    int i = get_global_id(0);
    if (i < n) y[yo + i] = x[xo + walk_offset(&w, 0, i)];
}

// Philox 4x32-10 and the sampling formulas defined in Sources/HistoCore/Philox.swift (the one definition):
// float32 + and * only, FP_CONTRACT OFF, so every backend draws bit-identical values.
#include "common.h"

inline uint4 philox4x32_10(ulong counter, ulong seed) {
    uint c0 = (uint)counter, c1 = (uint)(counter >> 32), c2 = 0, c3 = 0;
    uint k0 = (uint)seed, k1 = (uint)(seed >> 32);
    for (int round = 0; round < 10; ++round) {
        if (round > 0) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
        uint hi0 = mul_hi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
        uint hi1 = mul_hi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
        uint n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
    }
    return (uint4)(c0, c1, c2, c3);
}

inline float philox_uniform(uint x) { return (float)((x >> 8) + 1u) * 0x1p-24f; }

inline float philox_log(float u) {
    uint bits = as_uint(u);
    int e = (int)((bits >> 23) & 0xFFu) - 127;
    float m = as_float((bits & 0x007FFFFFu) | 0x3F800000u);
    if (m >= 1.5f) { m = m * 0.5f; e += 1; }
    float t = m - 1.0f;
    float p = 0.032495010644197464f;
    p = p * t + -0.0849456861615181f;
    p = p * t + 0.11547316610813141f;
    p = p * t + -0.12792731821537018f;
    p = p * t + 0.1430189311504364f;
    p = p * t + -0.16652880609035492f;
    p = p * t + 0.1999838799238205f;
    p = p * t + -0.25000226497650146f;
    p = p * t + 0.3333336114883423f;
    p = p * t + -0.5f;
    p = p * t + 1.0f;
    return t * p + (float)e * 0.6931471805599453f;
}

inline float philox_sqrt(float r) {
    if (r <= 0.0f) return 0.0f;
    float y = as_float(0x5F3759DFu - (as_uint(r) >> 1));
    float half_r = r * 0.5f;
    for (int i = 0; i < 4; ++i) y = y * (1.5f - half_r * y * y);
    return r * y;
}

inline float2 philox_cos_sin(float v) {
    float q4 = v * 4.0f;
    int whole = (int)q4;
    int quadrant = whole & 3;
    float f = q4 - (float)whole;
    float z = f * f;
    float s = -3.4328727451793384e-06f;
    s = s * z + 0.00016025584773160517f;
    s = s * z + -0.004681657068431377f;
    s = s * z + 0.07969260215759277f;
    s = s * z + -0.6459640860557556f;
    s = s * z + 1.5707963705062866f;
    s = s * f;
    float c = -6.127340412831472e-09f;
    c = c * z + 4.7066609454304853e-07f;
    c = c * z + -2.5201685275533237e-05f;
    c = c * z + 0.0009192600846290588f;
    c = c * z + -0.020863480865955353f;
    c = c * z + 0.25366950035095215f;
    c = c * z + -1.2337005138397217f;
    c = c * z + 1.0f;
    if (quadrant == 0) return (float2)(c, s);
    if (quadrant == 1) return (float2)(-s, c);
    if (quadrant == 2) return (float2)(-c, -s);
    return (float2)(s, -c);
}

// kind: 0 uniform(a, b), 1 normal(mean a, std b), 2 integer [ia, ib), 3 bernoulli(a)
__kernel void random_fill(__global float* y, int yo, int kind, float a, float b, int ia, int ib,
                          ulong seed, ulong offset, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    ulong position = offset + (ulong)i;
    uint4 w = philox4x32_10(position / 4, seed);
    int lane = (int)(position % 4);
    uint x = lane == 0 ? w.x : (lane == 1 ? w.y : (lane == 2 ? w.z : w.w));
    float v;
    if (kind == 0) {
        v = a + (b - a) * philox_uniform(x);
    } else if (kind == 1) {
        uint xu = lane < 2 ? w.x : w.z, xv = lane < 2 ? w.y : w.w;
        float r = philox_sqrt(-2.0f * philox_log(philox_uniform(xu)));
        float2 cs = philox_cos_sin(philox_uniform(xv));
        v = a + b * ((lane % 2 == 0) ? r * cs.x : r * cs.y);
    } else if (kind == 2) {
        v = (float)(ia + (int)(((ulong)x * (ulong)(ib - ia)) >> 32));
    } else {
        v = philox_uniform(x) <= a ? 1.0f : 0.0f;
    }
    y[yo + i] = v;
}

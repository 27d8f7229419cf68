// Diffusion (Sources/HistoCore/Ops/Diffusion.swift). The schedule table is [3, T] with rows ᾱ, 1 − ᾱ, β; timesteps
// are floats holding integers in 0..<T, validated by the executor before these kernels run (one that is not still
// only yields NaN, never a read out of bounds). Every work item gathers its sample's schedule row itself: the table
// and the timesteps are a few hundred bytes that stay in cache. Codes follow ScheduleCoefficient and DenoiserOutput.
#include "common.h"

// The table row a timestep value stands for, or −1 when it is not an integer in 0..<steps (timestepIndex).
inline int timestep_row(float v, int steps) {
    return v >= 0.0f && v < (float)steps && trunc(v) == v ? (int)v : -1;
}

// c(t) from a = ᾱ_t, b = 1 − ᾱ_t (ScheduleCoefficient.value).
inline float schedule_coefficient(int kind, float k, float gamma, float a, float b) {
    switch (kind) {
    case 0: return sqrt(a);
    case 1: return sqrt(b);
    case 2: return 1.0f / sqrt(a);
    case 3: return sqrt(b / a);
    case 4: return 1.0f / sqrt(b);
    case 5: return sqrt(a / b);
    default: return pow(k + a / b, -gamma); // P2 weight
    }
}

// x̂₀ = p·x_t + q·output for the model's output kind (DenoiserOutput.x0Coefficients).
inline float2 x0_coefficients(int prediction, float a, float b) {
    switch (prediction) {
    case 0: return (float2)(1.0f / sqrt(a), -sqrt(b / a)); // ε
    case 1: return (float2)(0.0f, 1.0f);                   // x₀
    default: return (float2)(sqrt(a), -sqrt(b));           // v
    }
}

// y = (sign_a·c_a)·u + (sign_b·c_b)·w with the coefficients of the element's sample.
__kernel void schedule_convert(__global const float* u, int uo, __global const float* w, int wo, __global float* y, int yo,
                               __global const float* table, int tbo, __global const float* t, int to, int steps, int inner,
                               int kind_a, float k_a, float gamma_a, float sign_a,
                               int kind_b, float k_b, float gamma_b, float sign_b, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    int s = timestep_row(t[to + i / inner], steps);
    if (s < 0) { y[yo + i] = NAN; return; }
    float a = table[tbo + s], b = table[tbo + steps + s];
    float ca = sign_a * schedule_coefficient(kind_a, k_a, gamma_a, a, b);
    float cb = sign_b * schedule_coefficient(kind_b, k_b, gamma_b, a, b);
    y[yo + i] = ca * u[uo + i] + cb * w[wo + i];
}

// y = (sign·c)·x.
__kernel void schedule_scale(__global const float* x, int xo, __global float* y, int yo,
                             __global const float* table, int tbo, __global const float* t, int to, int steps, int inner,
                             int kind, float k, float gamma, float sign, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    int s = timestep_row(t[to + i / inner], steps);
    if (s < 0) { y[yo + i] = NAN; return; }
    float c = sign * schedule_coefficient(kind, k, gamma, table[tbo + s], table[tbo + steps + s]);
    y[yo + i] = c * x[xo + i];
}

// y[n] = c(t[n]).
__kernel void schedule_gather(__global const float* table, int tbo, __global const float* t, int to, __global float* y, int yo,
                              int steps, int kind, float k, float gamma, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    int s = timestep_row(t[to + i], steps);
    y[yo + i] = s < 0 ? NAN : schedule_coefficient(kind, k, gamma, table[tbo + s], table[tbo + steps + s]);
}

// One DDPM ancestral step (DDPMStep): posterior mean from the (clamped) x̂₀ and x_t, plus σ·z for t > 0.
__kernel void ddpm_step(__global const float* xt, int xto, __global const float* out, int oo, __global const float* z, int zo,
                        __global float* y, int yo, __global const float* table, int tbo, __global const float* t, int to,
                        int steps, int inner, int prediction, int clip, int beta_variance, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    int s = timestep_row(t[to + i / inner], steps);
    if (s < 0) { y[yo + i] = NAN; return; }
    float a = table[tbo + s], b = table[tbo + steps + s], beta = table[tbo + 2 * steps + s];
    float a_prev = s > 0 ? table[tbo + s - 1] : 1.0f, b_prev = s > 0 ? table[tbo + steps + s - 1] : 0.0f;
    float2 pq = x0_coefficients(prediction, a, b);
    float mean_x0 = beta * sqrt(a_prev) / b, mean_xt = b_prev * sqrt(1.0f - beta) / b;
    float sigma = s == 0 ? 0.0f : sqrt(beta_variance ? beta : beta * b_prev / b);
    float x = xt[xto + i];
    float x0 = pq.x * x + pq.y * out[oo + i];
    if (clip) x0 = fmin(fmax(x0, -1.0f), 1.0f);
    y[yo + i] = mean_x0 * x0 + mean_xt * x + sigma * z[zo + i];
}

// One DDIM step (DDIMStep): √ᾱ_prev·x̂₀ + √(1 − ᾱ_prev − σ²)·ε̂ (+ σ·z when there is noise).
__kernel void ddim_step(__global const float* xt, int xto, __global const float* out, int oo, __global const float* z, int zo,
                        __global float* y, int yo, __global const float* table, int tbo, __global const float* t, int to,
                        int steps, int inner, int prediction, int clip, float eta, int has_noise, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    int s = timestep_row(t[to + i / inner], steps);
    if (s < 0) { y[yo + i] = NAN; return; }
    float a = table[tbo + s], b = table[tbo + steps + s], beta = table[tbo + 2 * steps + s];
    float a_prev = s > 0 ? table[tbo + s - 1] : 1.0f, b_prev = s > 0 ? table[tbo + steps + s - 1] : 0.0f;
    float2 pq = x0_coefficients(prediction, a, b);
    float eps_xt = 1.0f / sqrt(b), eps_x0 = -sqrt(a / b);
    float sigma = eta * sqrt(b_prev / b) * sqrt(beta);
    float direction = sqrt(fmax(b_prev - sigma * sigma, 0.0f)), mean_x0 = sqrt(a_prev);
    float x = xt[xto + i], o = out[oo + i];
    float x0 = pq.x * x + pq.y * o;
    if (clip) x0 = fmin(fmax(x0, -1.0f), 1.0f);
    float eps = prediction == 0 && !clip ? o : eps_xt * x + eps_x0 * x0;
    float mean = mean_x0 * x0 + direction * eps;
    y[yo + i] = has_noise ? mean + sigma * z[zo + i] : mean;
}

// Element (row, j) of the [N, dim] embedding: the first half sin (lucidrains) or cos (guided-diffusion) of t·f_j,
// the second half the other; an odd dimension's last column is 0.
__kernel void timestep_embedding(__global const float* t, int to, __global const float* f, int fo, __global float* y, int yo,
                                 int dim, int sin_first, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    int row = i / dim, j = i % dim, half_dim = dim / 2;
    if (j >= 2 * half_dim) { y[yo + i] = 0.0f; return; }
    int first = j < half_dim;
    float angle = t[to + row] * f[fo + (first ? j : j - half_dim)];
    y[yo + i] = first == sin_first ? sin(angle) : cos(angle);
}

// SpecTf forward pass, one pixel at a time, AVX2 + FMA (x86-64). Plain C ABI, loaded with ctypes.
//
// Layout: every activation of a pixel is kept channel-major, X[c][t] with the tokens in the SIMD
// lanes (TP = tokens rounded up to 8). Then
//   * layer norms over the 64 channels are vertical sums (no horizontal reductions),
//   * projections are small GEMMs Y[o][t] = b[o] + sum_c W[o][c] X[c][t] with a 4 x 3 register tile,
//   * attention runs per head and per vector of 8 queries (queries in lanes): the 8-wide head dot
//     products are 8 FMAs against broadcast keys, the softmax is vertical (per-lane max and sum), the
//     exponential is a vectorised exp2 (log2(e) and 1/sqrt(8) are folded into the query weights by the
//     caller) and is fused with the value product, whose 8 outputs per query are 8 accumulators;
//     the normalisation is applied once at the end.
// A pixel's working set (~300 KB) stays in the core's L2; threads split the pixels.
//
// Built twice (l2b_mask/kernels/__init__.py): with AVX2/FMA only, the float32 entry point; with
// -DSPECTF_MIXED and AVX-512 VNNI/BF16, also spectf_forward_mixed, whose projections and attention
// use int16 and bfloat16 dot products (section "mixed precision" below).
//
// Parameters arrive packed by l2b_mask/kernels/__init__.py (pack order below), with LayerNorm
// affine terms folded into the following projection and the query rows pre-scaled.

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

// -DSPECTF_PROFILE keeps the stages as separate symbols for `perf report` (benchmarks/profile_kernel.sh).
#ifdef SPECTF_PROFILE
#define STAGE __attribute__((noinline))
#else
#define STAGE inline
#endif

namespace {

constexpr int D = 64;       // embedding width
constexpr int H = 8;        // heads
constexpr int HD = D / H;   // head width (8: one AVX2 vector)
constexpr int F = 64;       // feed-forward width
constexpr float LN_EPS = 1e-5f;

static_assert(HD == 8, "the attention kernel assumes 8-wide heads");

struct Params {
    const float* w0;    // [D] embedding weight on reflectance
    const float* ct;    // [D][TP] embedding constant per band (band term * w1 + b), 0 in padding
    const float* win;   // [3D][D] in-projection, LN1 affine folded, query rows pre-scaled
    const float* bin;   // [3D]
    const float* wout;  // [D][D]
    const float* bout;  // [D]
    const float* w1;    // [F][D] LN2 affine folded
    const float* b1;    // [F]
    const float* w2;    // [D][F]
    const float* b2;    // [D]
    const float* wh;    // [2][D]
    const float* bh;    // [2]
};

// ---------------------------------------------------------------- vector maths

// 2^f on [-0.5, 0.5], relative-error minimax fits (float32 coefficients, highest degree first):
// degree 5: 1.5e-7, degree 4: 2.6e-6, degree 3: 7.5e-5, degree 2: 1.7e-3.
template <int DEG> struct Exp2Fit;
template <> struct Exp2Fit<5> {
    static constexpr float c[6] = {0.001327647129073739f, 0.009675540961325169f, 0.05550713092088699f,
                                   0.24022120237350464f, 0.6931469440460205f, 1.0000001192092896f};
};
template <> struct Exp2Fit<4> {
    static constexpr float c[5] = {0.009570101276040077f, 0.05591785907745361f, 0.240247443318367f,
                                   0.6931217908859253f, 0.9999992847442627f};
};
template <> struct Exp2Fit<3> {
    static constexpr float c[4] = {0.0551716648042202f, 0.2426111251115799f, 0.6932609677314758f,
                                   0.9999280571937561f};
};
template <> struct Exp2Fit<2> {
    static constexpr float c[3] = {0.23842890560626984f, 0.7034479975700378f, 1.0004431009292603f};
};

template <int DEG>
static inline __m256 exp2_poly(__m256 f) {
    __m256 p = _mm256_set1_ps(Exp2Fit<DEG>::c[0]);
    for (int i = 1; i <= DEG; ++i) p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(Exp2Fit<DEG>::c[i]));
    return p;
}

// 2^x for x <= 127; below -125 the result is a tiny normal number (effectively 0 here).
template <int DEG>
static inline __m256 exp2v(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-125.0f));  // callers keep x <= 27 (tanh) or x <= 0
    // round to nearest with the 1.5 * 2^23 shifter: the low mantissa bits of t hold n.
    const __m256 shifter = _mm256_set1_ps(12582912.0f);
    const __m256 t = _mm256_add_ps(x, shifter);
    const __m256 n = _mm256_sub_ps(t, shifter);
    const __m256 p = exp2_poly<DEG>(_mm256_sub_ps(x, n));
    const __m256i e = _mm256_slli_epi32(_mm256_castps_si256(t), 23);
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
}

static inline __m256 tanhv(__m256 y) {
    // tanh(|y|) = 1 - 2 / (e^{2|y|} + 1) loses relative precision as |y| -> 0 (1 minus nearly 1),
    // and the layer norm that follows the embedding turns that into a P(cloud) error of ~4e-5.
    // Below 0.5: |y| + |y|^3 P(y^2), P a relative-error fit of ours (max 6.2e-8 relative, 1 ulp);
    // above: the exponential form (<= 2e-7 relative at 0.5, shrinking as |y| grows).
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 ay = _mm256_min_ps(_mm256_andnot_ps(sign, y), _mm256_set1_ps(9.5f));
    const __m256 e = exp2v<5>(_mm256_mul_ps(ay, _mm256_set1_ps(2.0f * 1.4426950408889634f)));
    const __m256 big = _mm256_sub_ps(_mm256_set1_ps(1.0f),
                                     _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, _mm256_set1_ps(1.0f))));
    const __m256 u = _mm256_mul_ps(ay, ay);
    __m256 p = _mm256_set1_ps(-0.006647760048508644f);
    p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(0.02129814401268959f));
    p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(-0.05389922112226486f));
    p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(0.13332964479923248f));
    p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(-0.333333283662796f));
    const __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(ay, u), p, ay);
    const __m256 t = _mm256_blendv_ps(big, small, _mm256_cmp_ps(ay, _mm256_set1_ps(0.5f), _CMP_LT_OQ));
    return _mm256_or_ps(t, _mm256_and_ps(sign, y));
}

static inline __m256 geluv(__m256 x) {
    // 0.5 x (1 + erf(x / sqrt 2)), erf by Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7).
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 z = _mm256_mul_ps(_mm256_andnot_ps(sign, x), _mm256_set1_ps(0.7071067811865476f));
    const __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f),
                                   _mm256_fmadd_ps(z, _mm256_set1_ps(0.3275911f), _mm256_set1_ps(1.0f)));
    __m256 p = _mm256_set1_ps(1.061405429f);
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.453152027f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.421413741f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.284496736f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.254829592f));
    p = _mm256_mul_ps(p, t);
    const __m256 g = exp2v<5>(_mm256_mul_ps(_mm256_mul_ps(z, z), _mm256_set1_ps(-1.4426950408889634f)));
    __m256 erf = _mm256_fnmadd_ps(p, g, _mm256_set1_ps(1.0f));       // erf(|z|)
    erf = _mm256_or_ps(erf, _mm256_and_ps(sign, x));                 // sign of x
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), _mm256_add_ps(_mm256_set1_ps(1.0f), erf));
}

STAGE static void gelu(float* X, size_t n) {
    for (size_t i = 0; i < n; i += 8) _mm256_store_ps(X + i, geluv(_mm256_load_ps(X + i)));
}

// ---------------------------------------------------------------- projections

// Y[o][v] = b[o] + sum_c W[o][c] X[c][v] for rows o0..o0+3 and vectors v0..v0+NR-1.
template <int NR>
static inline void gemm_tile(const float* W, const float* b, const float* X, float* Y, int K, int TP,
                             int o0, int v0) {
    __m256 acc[4][NR];
    for (int i = 0; i < 4; ++i) {
        const __m256 bi = _mm256_set1_ps(b[o0 + i]);
        for (int r = 0; r < NR; ++r) acc[i][r] = bi;
    }
    const float* w = W + static_cast<size_t>(o0) * K;
    const float* x = X + v0 * 8;
    for (int c = 0; c < K; ++c) {
        __m256 xv[NR];
        for (int r = 0; r < NR; ++r) xv[r] = _mm256_load_ps(x + static_cast<size_t>(c) * TP + r * 8);
        for (int i = 0; i < 4; ++i) {
            const __m256 wi = _mm256_broadcast_ss(w + i * K + c);
            for (int r = 0; r < NR; ++r) acc[i][r] = _mm256_fmadd_ps(wi, xv[r], acc[i][r]);
        }
    }
    for (int i = 0; i < 4; ++i)
        for (int r = 0; r < NR; ++r) _mm256_store_ps(Y + static_cast<size_t>(o0 + i) * TP + (v0 + r) * 8, acc[i][r]);
}

STAGE static void gemm(const float* W, const float* b, const float* X, float* Y, int M, int K, int TP) {
    const int NV = TP / 8;
    int v0 = 0;
    for (; v0 + 3 <= NV; v0 += 3)
        for (int o0 = 0; o0 < M; o0 += 4) gemm_tile<3>(W, b, X, Y, K, TP, o0, v0);
    for (; v0 < NV; ++v0)
        for (int o0 = 0; o0 < M; o0 += 4) gemm_tile<1>(W, b, X, Y, K, TP, o0, v0);
}

// Normalise each token (lane) over the C channels (rows), in place; no affine (folded downstream).
STAGE static void layer_norm(float* X, int C, int TP) {
    const int NV = TP / 8;
    const __m256 inv_c = _mm256_set1_ps(1.0f / static_cast<float>(C));
    for (int v = 0; v < NV; ++v) {
        float* x = X + v * 8;
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
        for (int c = 0; c < C; c += 2) {
            s0 = _mm256_add_ps(s0, _mm256_load_ps(x + static_cast<size_t>(c) * TP));
            s1 = _mm256_add_ps(s1, _mm256_load_ps(x + static_cast<size_t>(c + 1) * TP));
        }
        const __m256 mean = _mm256_mul_ps(_mm256_add_ps(s0, s1), inv_c);
        __m256 q0 = _mm256_setzero_ps(), q1 = _mm256_setzero_ps();
        for (int c = 0; c < C; c += 2) {
            const __m256 d0 = _mm256_sub_ps(_mm256_load_ps(x + static_cast<size_t>(c) * TP), mean);
            const __m256 d1 = _mm256_sub_ps(_mm256_load_ps(x + static_cast<size_t>(c + 1) * TP), mean);
            q0 = _mm256_fmadd_ps(d0, d0, q0);
            q1 = _mm256_fmadd_ps(d1, d1, q1);
        }
        const __m256 var = _mm256_mul_ps(_mm256_add_ps(q0, q1), inv_c);
        const __m256 rstd = _mm256_div_ps(_mm256_set1_ps(1.0f),
                                          _mm256_sqrt_ps(_mm256_add_ps(var, _mm256_set1_ps(LN_EPS))));
        for (int c = 0; c < C; ++c) {
            float* p = x + static_cast<size_t>(c) * TP;
            _mm256_store_ps(p, _mm256_mul_ps(_mm256_sub_ps(_mm256_load_ps(p), mean), rstd));
        }
    }
}

// ---------------------------------------------------------------- attention

// Scores of one vector of 8 queries (lanes) against NK keys starting at j; running max in m.
template <int NK>
static inline void score_block(const float* Qv, const float* Kh, float* S, int TP, int j, __m256& m) {
    __m256 acc[NK];
    for (int k = 0; k < NK; ++k) acc[k] = _mm256_setzero_ps();
    for (int d = 0; d < HD; ++d) {
        const __m256 q = _mm256_load_ps(Qv + static_cast<size_t>(d) * TP);
        const float* kd = Kh + static_cast<size_t>(d) * TP + j;
        for (int k = 0; k < NK; ++k) acc[k] = _mm256_fmadd_ps(_mm256_broadcast_ss(kd + k), q, acc[k]);
    }
    for (int k = 0; k < NK; ++k) {
        _mm256_store_ps(S + (j + k) * 8, acc[k]);
        m = _mm256_max_ps(m, acc[k]);
    }
}

// Scores of one vector of 8 queries against all T keys into S[j][lane]; their per-lane max.
STAGE static __m256 scores(const float* Qv, const float* Kh, float* S, int T, int TP) {
    __m256 m = _mm256_set1_ps(-INFINITY);
    int j = 0;
    for (; j + 8 <= T; j += 8) score_block<8>(Qv, Kh, S, TP, j, m);
    for (; j < T; ++j) score_block<1>(Qv, Kh, S, TP, j, m);
    return m;
}

// Scores of two vectors of 8 queries (16 queries) against 4 keys at a time: per head dimension 2
// query loads and 4 key broadcasts feed 8 FMAs (the one-vector tile needs 9 loads for 8 FMAs).
STAGE static void scores2(const float* Qv, const float* Kh, float* S0, float* S1, int T, int TP,
                          __m256& m0, __m256& m1) {
    m0 = _mm256_set1_ps(-INFINITY);
    m1 = m0;
    int j = 0;
    for (; j + 4 <= T; j += 4) {
        __m256 a[4], b[4];
        for (int k = 0; k < 4; ++k) a[k] = b[k] = _mm256_setzero_ps();
        for (int d = 0; d < HD; ++d) {
            const __m256 q0 = _mm256_load_ps(Qv + static_cast<size_t>(d) * TP);
            const __m256 q1 = _mm256_load_ps(Qv + static_cast<size_t>(d) * TP + 8);
            const float* kd = Kh + static_cast<size_t>(d) * TP + j;
            for (int k = 0; k < 4; ++k) {
                const __m256 kb = _mm256_broadcast_ss(kd + k);
                a[k] = _mm256_fmadd_ps(kb, q0, a[k]);
                b[k] = _mm256_fmadd_ps(kb, q1, b[k]);
            }
        }
        for (int k = 0; k < 4; ++k) {
            _mm256_store_ps(S0 + (j + k) * 8, a[k]);
            _mm256_store_ps(S1 + (j + k) * 8, b[k]);
            m0 = _mm256_max_ps(m0, a[k]);
            m1 = _mm256_max_ps(m1, b[k]);
        }
    }
    for (; j < T; ++j) {
        score_block<1>(Qv, Kh, S0, TP, j, m0);
        score_block<1>(Qv + 8, Kh, S1, TP, j, m1);
    }
}

// S[j][lane] <- 2^(S[j][lane] - m) in place; returns 1 / sum_j of them (per lane).
// Four score vectors go through each step together: one exp2 is a ~35-cycle dependency chain, and
// only independent chains side by side keep both FMA pipes busy.
template <int DEG>
STAGE static __m256 softmax_exp(float* S, __m256 m, int T) {
    constexpr int U = 4;
    const __m256 lo = _mm256_set1_ps(-125.0f);
    const __m256 shifter = _mm256_set1_ps(12582912.0f);
    __m256 l[U];
    for (int i = 0; i < U; ++i) l[i] = _mm256_setzero_ps();
    int j = 0;
    for (; j + U <= T; j += U) {
        __m256 x[U], t[U], e[U];
        for (int i = 0; i < U; ++i) x[i] = _mm256_max_ps(_mm256_sub_ps(_mm256_load_ps(S + (j + i) * 8), m), lo);
        for (int i = 0; i < U; ++i) t[i] = _mm256_add_ps(x[i], shifter);
        for (int i = 0; i < U; ++i) x[i] = _mm256_sub_ps(x[i], _mm256_sub_ps(t[i], shifter));
        for (int i = 0; i < U; ++i) e[i] = exp2_poly<DEG>(x[i]);
        for (int i = 0; i < U; ++i) {
            e[i] = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(e[i]),
                                                        _mm256_slli_epi32(_mm256_castps_si256(t[i]), 23)));
            _mm256_store_ps(S + (j + i) * 8, e[i]);
            l[i] = _mm256_add_ps(l[i], e[i]);
        }
    }
    for (; j < T; ++j) {
        const __m256 e0 = exp2v<DEG>(_mm256_sub_ps(_mm256_load_ps(S + j * 8), m));
        _mm256_store_ps(S + j * 8, e0);
        l[0] = _mm256_add_ps(l[0], e0);
    }
    return _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_add_ps(l[0], l[1]), _mm256_add_ps(l[2], l[3])));
}

// out[d][lane] = r[lane] * sum_j E[j][lane] V[j][d]: 8 accumulators, one per head dimension.
STAGE static void weighted_values(const float* E, const float* Vh, float* out, __m256 r, int T, int TP) {
    __m256 o0 = _mm256_setzero_ps(), o1 = o0, o2 = o0, o3 = o0, o4 = o0, o5 = o0, o6 = o0, o7 = o0;
    const float* v0 = Vh;
    const float* v1 = Vh + TP;
    const float* v2 = Vh + 2 * TP;
    const float* v3 = Vh + 3 * TP;
    const float* v4 = Vh + 4 * TP;
    const float* v5 = Vh + 5 * TP;
    const float* v6 = Vh + 6 * TP;
    const float* v7 = Vh + 7 * TP;
    for (int j = 0; j < T; ++j) {
        const __m256 e = _mm256_load_ps(E + j * 8);
        o0 = _mm256_fmadd_ps(e, _mm256_broadcast_ss(v0 + j), o0);
        o1 = _mm256_fmadd_ps(e, _mm256_broadcast_ss(v1 + j), o1);
        o2 = _mm256_fmadd_ps(e, _mm256_broadcast_ss(v2 + j), o2);
        o3 = _mm256_fmadd_ps(e, _mm256_broadcast_ss(v3 + j), o3);
        o4 = _mm256_fmadd_ps(e, _mm256_broadcast_ss(v4 + j), o4);
        o5 = _mm256_fmadd_ps(e, _mm256_broadcast_ss(v5 + j), o5);
        o6 = _mm256_fmadd_ps(e, _mm256_broadcast_ss(v6 + j), o6);
        o7 = _mm256_fmadd_ps(e, _mm256_broadcast_ss(v7 + j), o7);
    }
    _mm256_store_ps(out, _mm256_mul_ps(o0, r));
    _mm256_store_ps(out + TP, _mm256_mul_ps(o1, r));
    _mm256_store_ps(out + 2 * TP, _mm256_mul_ps(o2, r));
    _mm256_store_ps(out + 3 * TP, _mm256_mul_ps(o3, r));
    _mm256_store_ps(out + 4 * TP, _mm256_mul_ps(o4, r));
    _mm256_store_ps(out + 5 * TP, _mm256_mul_ps(o5, r));
    _mm256_store_ps(out + 6 * TP, _mm256_mul_ps(o6, r));
    _mm256_store_ps(out + 7 * TP, _mm256_mul_ps(o7, r));
}

// A[8h + d][queries] = softmax(Q K^T) V for every head; QKV holds Q (pre-scaled to base 2), K, V.
template <int DEG>
static void attention(const float* QKV, float* A, float* S, int T, int TP) {
    const int NV = TP / 8;
    for (int h = 0; h < H; ++h) {
        const float* Qh = QKV + static_cast<size_t>(h * HD) * TP;
        const float* Kh = QKV + static_cast<size_t>(D + h * HD) * TP;
        const float* Vh = QKV + static_cast<size_t>(2 * D + h * HD) * TP;
        int v = 0;
        for (; v + 2 <= NV; v += 2) {
            __m256 m0, m1;
            float* S1 = S + static_cast<size_t>(T) * 8;
            scores2(Qh + v * 8, Kh, S, S1, T, TP, m0, m1);
            const __m256 r0 = softmax_exp<DEG>(S, m0, T);
            weighted_values(S, Vh, A + static_cast<size_t>(h * HD) * TP + v * 8, r0, T, TP);
            const __m256 r1 = softmax_exp<DEG>(S1, m1, T);
            weighted_values(S1, Vh, A + static_cast<size_t>(h * HD) * TP + (v + 1) * 8, r1, T, TP);
        }
        for (; v < NV; ++v) {
            const __m256 m = scores(Qh + v * 8, Kh, S, T, TP);
            const __m256 r = softmax_exp<DEG>(S, m, T);
            weighted_values(S, Vh, A + static_cast<size_t>(h * HD) * TP + v * 8, r, T, TP);
        }
    }
}

#ifdef SPECTF_MIXED
// ---------------------------------------------------------------- mixed precision (AVX-512)
// Built only with -DSPECTF_MIXED and AVX-512 F/VL/BW/VNNI/BF16 (Zen 4, Sapphire Rapids), where the
// int16 and bfloat16 dot products (vpdpwssd, vdpbf16ps) do twice the multiply-adds per cycle of
// float32 FMAs. Measured against float32 (docs/performance.md), not bit-faithful:
//   * projections in int16: weights scaled per output row to 12 bits, activations per token to 13
//     bits; 64 products of those fit an int32 exactly (64 * 4095 * 8191 < 2^31);
//   * Q.K^T in int16: queries scaled per token and keys per head to 14 bits (8 products fit);
//   * exp2 by vscalefps; the probabilities rounded to bfloat16 (pairs of keys);
//   * P.V in bfloat16 with float32 sums; the softmax sum is taken over the same rounded
//     probabilities, so the weights of each query still sum to 1.
// 16 tokens (two of the layout's 8-lane vectors, contiguous) per 512-bit register.

constexpr float W12 = 4095.0f, X13 = 8191.0f, Q14 = 16383.0f;

static inline __mmask16 lanes_below(int n) {
    return n >= 16 ? 0xFFFF : n <= 0 ? 0 : static_cast<__mmask16>((1u << n) - 1);
}

// Per lane, the factor that takes magnitudes up to a to `limit` (0 where a is 0).
static inline __m512 scale_to(float limit, __m512 a) {
    return _mm512_maskz_div_ps(_mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_GT_OQ), _mm512_set1_ps(limit), a);
}

// int16 pairs (lo, hi) in each int32 lane; inputs already scaled into the int16 range.
static inline __m512i pack_i16_pairs(__m512 lo, __m512 hi) {
    const __m512i a = _mm512_cvtps_epi32(lo), b = _mm512_cvtps_epi32(hi);
    return _mm512_or_si512(_mm512_and_si512(a, _mm512_set1_epi32(0xFFFF)), _mm512_slli_epi32(b, 16));
}

// A weight matrix [M][K] as int16 pairs [M][K/2] with one scale per row (12 bits).
struct QuantWeights {
    std::vector<int32_t> w;
    std::vector<float> scale;
    int K = 0;
    QuantWeights(const float* W, int M, int K_) : w(static_cast<size_t>(M) * K_ / 2), scale(M), K(K_) {
        for (int o = 0; o < M; ++o) {
            const float* row = W + static_cast<size_t>(o) * K;
            float a = 0.0f;
            for (int c = 0; c < K; ++c) a = std::max(a, std::fabs(row[c]));
            scale[o] = a / W12;
            const float inv = a > 0.0f ? W12 / a : 0.0f;
            for (int c = 0; c < K; c += 2) {
                const auto lo = static_cast<int16_t>(std::lrint(row[c] * inv));
                const auto hi = static_cast<int16_t>(std::lrint(row[c + 1] * inv));
                w[static_cast<size_t>(o) * K / 2 + c / 2] =
                    static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint16_t>(lo)) |
                                         (static_cast<uint32_t>(static_cast<uint16_t>(hi)) << 16));
            }
        }
    }
};

struct MixedWeights {
    QuantWeights in, out, ff1, ff2;
    explicit MixedWeights(const Params& P)
        : in(P.win, 3 * D, D), out(P.wout, D, D), ff1(P.w1, F, D), ff2(P.w2, D, F) {}
};

// X[C][TP] as int16 pairs of channels Xq[C/2][TP], scaled per token to 13 bits; sx[t] the scales.
STAGE static void quantise_tokens(const float* X, int C, int TP, int32_t* Xq, float* sx) {
    for (int t = 0; t < TP; t += 16) {
        const __mmask16 live = lanes_below(TP - t);
        __m512 a = _mm512_setzero_ps();
        for (int c = 0; c < C; ++c) a = _mm512_max_ps(a, _mm512_abs_ps(_mm512_maskz_loadu_ps(live, X + c * TP + t)));
        const __m512 inv = scale_to(X13, a);
        _mm512_mask_storeu_ps(sx + t, live, _mm512_mul_ps(a, _mm512_set1_ps(1.0f / X13)));
        for (int c = 0; c < C; c += 2)
            _mm512_mask_storeu_epi32(Xq + (c / 2) * TP + t, live,
                                     pack_i16_pairs(_mm512_mul_ps(_mm512_maskz_loadu_ps(live, X + c * TP + t), inv),
                                                    _mm512_mul_ps(_mm512_maskz_loadu_ps(live, X + (c + 1) * TP + t), inv)));
    }
}

// Y[o][t] = b[o] + scale[o] sx[t] sum_c Wq[o][c] Xq[c][t], rows o0..o0+3, NR blocks of 16 tokens.
template <int NR>
static inline void gemm_i16_tile(const QuantWeights& W, const float* b, const int32_t* Xq, const float* sx,
                                 float* Y, int TP, int o0, int t0) {
    const int KP = W.K / 2;
    __mmask16 live[NR];
    for (int r = 0; r < NR; ++r) live[r] = lanes_below(TP - t0 - 16 * r);
    __m512i acc[4][NR];
    for (int i = 0; i < 4; ++i)
        for (int r = 0; r < NR; ++r) acc[i][r] = _mm512_setzero_si512();
    const int32_t* w = W.w.data() + static_cast<size_t>(o0) * KP;
    for (int cp = 0; cp < KP; ++cp) {
        __m512i xv[NR];
        // unmasked: masked loads cost ~10% of the whole pass on Zen 4. A last, half block reads 8
        // lanes past the row, into the next row or the scratch after Xq, and they are never stored.
        for (int r = 0; r < NR; ++r) xv[r] = _mm512_loadu_si512(Xq + cp * TP + t0 + 16 * r);
        for (int i = 0; i < 4; ++i) {
            const __m512i wi = _mm512_set1_epi32(w[i * KP + cp]);
            for (int r = 0; r < NR; ++r) acc[i][r] = _mm512_dpwssd_epi32(acc[i][r], xv[r], wi);
        }
    }
    for (int r = 0; r < NR; ++r) {
        const __m512 s = _mm512_maskz_loadu_ps(live[r], sx + t0 + 16 * r);
        for (int i = 0; i < 4; ++i)
            _mm512_mask_storeu_ps(Y + (o0 + i) * TP + t0 + 16 * r, live[r],
                                  _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i][r]),
                                                  _mm512_mul_ps(s, _mm512_set1_ps(W.scale[o0 + i])),
                                                  _mm512_set1_ps(b[o0 + i])));
    }
}

STAGE static void gemm_i16(const QuantWeights& W, const float* b, const float* X, float* Y, int M, int TP,
                           int32_t* Xq, float* sx) {
    quantise_tokens(X, W.K, TP, Xq, sx);
    int t0 = 0;
    for (; t0 + 48 <= TP; t0 += 48)
        for (int o0 = 0; o0 < M; o0 += 4) gemm_i16_tile<3>(W, b, Xq, sx, Y, TP, o0, t0);
    const int rest = TP - t0;  // < 48 tokens: up to three blocks, the last one masked
    for (int o0 = 0; o0 < M && rest > 0; o0 += 4) {
        if (rest > 32)
            gemm_i16_tile<3>(W, b, Xq, sx, Y, TP, o0, t0);
        else if (rest > 16)
            gemm_i16_tile<2>(W, b, Xq, sx, Y, TP, o0, t0);
        else
            gemm_i16_tile<1>(W, b, Xq, sx, Y, TP, o0, t0);
    }
}

// Keys of one head as int16 pairs kq[p][j] = (k_j[2p], k_j[2p+1]) with one scale (14 bits); returns it.
STAGE static float quantise_keys(const float* Kh, int32_t* kq, int T, int TP) {
    __m512 a = _mm512_setzero_ps();
    for (int d = 0; d < HD; ++d)
        for (int j = 0; j < T; j += 16)
            a = _mm512_max_ps(a, _mm512_abs_ps(_mm512_maskz_loadu_ps(lanes_below(T - j), Kh + d * TP + j)));
    const float kmax = _mm512_reduce_max_ps(a);
    const __m512 inv = _mm512_set1_ps(kmax > 0.0f ? Q14 / kmax : 0.0f);
    for (int p = 0; p < HD / 2; ++p)
        for (int j = 0; j < T; j += 16) {
            const __mmask16 m = lanes_below(T - j);
            _mm512_mask_storeu_epi32(kq + p * TP + j, m,
                                     pack_i16_pairs(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, Kh + 2 * p * TP + j), inv),
                                                    _mm512_mul_ps(_mm512_maskz_loadu_ps(m, Kh + (2 * p + 1) * TP + j), inv)));
        }
    return kmax / Q14;
}

// Values of one head as bfloat16 pairs of consecutive keys vb[d][j/2] = (v_j[d], v_{j+1}[d]);
// the key past T of an odd T is 0.
STAGE static void bf16_values(const float* Vh, int32_t* vb, int T, int TP) {
    for (int d = 0; d < HD; ++d)
        for (int j = 0; j < T; j += 16) {
            const __m256bh b = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(lanes_below(T - j), Vh + d * TP + j));
            const int pairs = std::min(8, (T - j + 1) / 2);
            _mm256_mask_storeu_epi32(vb + d * (TP / 2) + j / 2, static_cast<__mmask8>((1u << pairs) - 1),
                                     reinterpret_cast<__m256i>(b));
        }
}

template <int DEG>
static inline __m512 exp2z(__m512 x) {
    const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(x, n);
    __m512 p = _mm512_set1_ps(Exp2Fit<DEG>::c[0]);
    for (int i = 1; i <= DEG; ++i) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(Exp2Fit<DEG>::c[i]));
    return _mm512_scalef_ps(p, n);
}

// Two probability vectors (keys j, j+1) as one vector of bfloat16 pairs: lane i = (e0[i], e1[i]).
static inline __m512i bf16_pairs(__m512 e0, __m512 e1) {
    const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                                23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    return _mm512_permutexvar_epi16(interleave, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(e1, e0)));
}

// One head, 16 queries: A[d][queries] = softmax(Q K^T) V; lanes outside `live` are not stored.
// S holds the int32 scores [T][16], then, in place, the bfloat16 probability pairs [T/2][16].
template <int DEG>
STAGE static void attention16(const float* Qv, const int32_t* kq, float kscale, const int32_t* vb, float* A,
                              int32_t* S, int T, int TP, __mmask16 live) {
    __m512 q[HD];
    __m512 a = _mm512_setzero_ps();
    for (int d = 0; d < HD; ++d) {
        q[d] = _mm512_maskz_loadu_ps(live, Qv + d * TP);
        a = _mm512_max_ps(a, _mm512_abs_ps(q[d]));
    }
    const __m512 inv = scale_to(Q14, a);
    const __m512 c = _mm512_mul_ps(a, _mm512_set1_ps(kscale / Q14));   // score = int dot * c
    __m512i qq[HD / 2];
    for (int p = 0; p < HD / 2; ++p)
        qq[p] = pack_i16_pairs(_mm512_mul_ps(q[2 * p], inv), _mm512_mul_ps(q[2 * p + 1], inv));
    // scores as exact int32 sums, 8 keys at a time, and their per-lane max
    __m512i mx = _mm512_set1_epi32(INT32_MIN);
    int j = 0;
    for (; j + 8 <= T; j += 8) {
        __m512i acc[8];
        for (int k = 0; k < 8; ++k) acc[k] = _mm512_setzero_si512();
        for (int p = 0; p < HD / 2; ++p)
            for (int k = 0; k < 8; ++k)
                acc[k] = _mm512_dpwssd_epi32(acc[k], qq[p], _mm512_set1_epi32(kq[p * TP + j + k]));
        for (int k = 0; k < 8; ++k) {
            _mm512_store_si512(S + (j + k) * 16, acc[k]);
            mx = _mm512_max_epi32(mx, acc[k]);
        }
    }
    for (; j < T; ++j) {
        __m512i acc = _mm512_setzero_si512();
        for (int p = 0; p < HD / 2; ++p) acc = _mm512_dpwssd_epi32(acc, qq[p], _mm512_set1_epi32(kq[p * TP + j]));
        _mm512_store_si512(S + j * 16, acc);
        mx = _mm512_max_epi32(mx, acc);
    }
    // probabilities 2^(score - max), 8 keys at a time (independent exp chains side by side)
    const __m512 m = _mm512_mul_ps(_mm512_cvtepi32_ps(mx), c);
    auto x_of = [&](int jj) { return _mm512_fmsub_ps(_mm512_cvtepi32_ps(_mm512_load_si512(S + jj * 16)), c, m); };
    for (j = 0; j + 8 <= T; j += 8) {
        __m512 e[8];
        for (int i = 0; i < 8; ++i) e[i] = x_of(j + i);   // all loads before the in-place stores
        for (int i = 0; i < 8; ++i) e[i] = exp2z<DEG>(e[i]);
        for (int i = 0; i < 4; ++i) _mm512_store_si512(S + (j / 2 + i) * 16, bf16_pairs(e[2 * i], e[2 * i + 1]));
    }
    for (; j < T; j += 2) {
        const __m512 e0 = exp2z<DEG>(x_of(j));
        const __m512 e1 = j + 1 < T ? exp2z<DEG>(x_of(j + 1)) : _mm512_setzero_ps();
        _mm512_store_si512(S + (j / 2) * 16, bf16_pairs(e0, e1));
    }
    // P.V with the sum of the probabilities as a ninth product (against bfloat16 ones)
    __m512 o[HD];
    for (int d = 0; d < HD; ++d) o[d] = _mm512_setzero_ps();
    __m512 l = _mm512_setzero_ps();
    const __m512bh ones = reinterpret_cast<__m512bh>(_mm512_set1_epi32(0x3F803F80));
    for (int jp = 0; jp < (T + 1) / 2; ++jp) {
        const __m512bh pj = reinterpret_cast<__m512bh>(_mm512_load_si512(S + jp * 16));
        for (int d = 0; d < HD; ++d)
            o[d] = _mm512_dpbf16_ps(o[d], pj, reinterpret_cast<__m512bh>(_mm512_set1_epi32(vb[d * (TP / 2) + jp])));
        l = _mm512_dpbf16_ps(l, pj, ones);
    }
    const __m512 r = _mm512_div_ps(_mm512_set1_ps(1.0f), l);
    for (int d = 0; d < HD; ++d) _mm512_mask_storeu_ps(A + d * TP, live, _mm512_mul_ps(o[d], r));
}

struct MixedScratch {
    int32_t *kq, *vb, *s, *xq;
    float* sx;
};

template <int DEG>
static void attention_mixed(const float* QKV, float* A, const MixedScratch& w, int T, int TP) {
    for (int h = 0; h < H; ++h) {
        const float* Qh = QKV + static_cast<size_t>(h * HD) * TP;
        const float* Kh = QKV + static_cast<size_t>(D + h * HD) * TP;
        const float* Vh = QKV + static_cast<size_t>(2 * D + h * HD) * TP;
        const float kscale = quantise_keys(Kh, w.kq, T, TP);
        bf16_values(Vh, w.vb, T, TP);
        for (int t0 = 0; t0 < TP; t0 += 16)
            attention16<DEG>(Qh + t0, w.kq, kscale, w.vb, A + static_cast<size_t>(h * HD) * TP + t0, w.s, T, TP,
                             lanes_below(TP - t0));
    }
}
#else
struct MixedWeights {};
#endif  // SPECTF_MIXED

// ---------------------------------------------------------------- one pixel

struct Scratch {
    float* base = nullptr;
    float *x, *qkv, *s, *rho;
#ifdef SPECTF_MIXED
    MixedScratch mixed;
#endif
    explicit Scratch(int T, int TP) {
        auto blocks = [](size_t floats) { return (floats + 15) / 16 * 16; };  // 64-byte aligned parts
        const size_t nx = blocks(static_cast<size_t>(D) * TP), nqkv = blocks(static_cast<size_t>(3 * D) * TP),
                     ns = blocks(static_cast<size_t>(2 * T) * 8), nrho = blocks(TP);
        size_t n = nx + nqkv + ns + nrho;
#ifdef SPECTF_MIXED
        const size_t nkq = blocks(static_cast<size_t>(HD / 2) * TP), nvb = blocks(static_cast<size_t>(HD) * TP / 2),
                     nsi = blocks(static_cast<size_t>(T) * 16), nxq = blocks(static_cast<size_t>(std::max(D, F) / 2) * TP);
        const size_t nsx = blocks(TP);
        n += nkq + nvb + nsi + nxq + nsx;
#endif
        base = static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)));
        x = base;
        qkv = x + nx;
        s = qkv + nqkv;
        rho = s + ns;
#ifdef SPECTF_MIXED
        mixed.kq = reinterpret_cast<int32_t*>(rho + nrho);
        mixed.vb = mixed.kq + nkq;
        mixed.s = mixed.vb + nvb;
        mixed.xq = mixed.s + nsi;
        mixed.sx = reinterpret_cast<float*>(mixed.xq + nxq);
#endif
    }
    ~Scratch() { std::free(base); }
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
};

template <int DEG, bool MIXED>
static float pixel(const Params& P, const MixedWeights* M, const float* rho_in, int T, int TP, Scratch& w) {
    const int NV = TP / 8;
    float* rho = w.rho;
    std::memcpy(rho, rho_in, sizeof(float) * T);
    for (int t = T; t < TP; ++t) rho[t] = 0.0f;
    float* X = w.x;      // embedding -> LN1 -> (attention output) -> FF hidden
    float* QKV = w.qkv;  // Q K V -> rows 0..63 reused for out_proj output and FF output
    // embedding: tanh(rho * w0 + ct)
    for (int c = 0; c < D; ++c) {
        const __m256 wc = _mm256_set1_ps(P.w0[c]);
        const float* ct = P.ct + static_cast<size_t>(c) * TP;
        float* xc = X + static_cast<size_t>(c) * TP;
        for (int v = 0; v < NV; ++v)
            _mm256_store_ps(xc + v * 8, tanhv(_mm256_fmadd_ps(_mm256_load_ps(rho + v * 8), wc,
                                                              _mm256_loadu_ps(ct + v * 8))));
    }
    layer_norm(X, D, TP);
    float* Y = QKV;                                 // Q is no longer needed after the attention
#ifdef SPECTF_MIXED
    if constexpr (MIXED) {
        const MixedScratch& m = w.mixed;
        gemm_i16(M->in, P.bin, X, QKV, 3 * D, TP, m.xq, m.sx);
        attention_mixed<DEG>(QKV, X, m, T, TP);     // X <- attention heads
        gemm_i16(M->out, P.bout, X, Y, D, TP, m.xq, m.sx);
        layer_norm(Y, D, TP);
        gemm_i16(M->ff1, P.b1, Y, X, F, TP, m.xq, m.sx);
        gelu(X, static_cast<size_t>(F) * TP);
        gemm_i16(M->ff2, P.b2, X, Y, D, TP, m.xq, m.sx);
    } else
#endif
    {
        (void)M;
        gemm(P.win, P.bin, X, QKV, 3 * D, D, TP);
        attention<DEG>(QKV, X, w.s, T, TP);         // X <- attention heads
        gemm(P.wout, P.bout, X, Y, D, D, TP);
        layer_norm(Y, D, TP);
        gemm(P.w1, P.b1, Y, X, F, D, TP);
        gelu(X, static_cast<size_t>(F) * TP);
        gemm(P.w2, P.b2, X, Y, D, F, TP);
    }
    // max over the T real tokens, per channel
    alignas(32) int lane_ok[8];
    const int last = T - (NV - 1) * 8;
    for (int i = 0; i < 8; ++i) lane_ok[i] = i < last ? -1 : 0;
    const __m256 keep = _mm256_castsi256_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(lane_ok)));
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    double l0 = P.bh[0], l1 = P.bh[1];
    for (int c = 0; c < D; ++c) {
        const float* y = Y + static_cast<size_t>(c) * TP;
        __m256 m = _mm256_blendv_ps(ninf, _mm256_load_ps(y + (NV - 1) * 8), keep);
        for (int v = 0; v + 1 < NV; ++v) m = _mm256_max_ps(m, _mm256_load_ps(y + v * 8));
        alignas(32) float lanes[8];
        _mm256_store_ps(lanes, m);
        float mc = lanes[0];
        for (int i = 1; i < 8; ++i) mc = std::max(mc, lanes[i]);
        l0 += static_cast<double>(P.wh[c]) * mc;
        l1 += static_cast<double>(P.wh[D + c]) * mc;
    }
    return static_cast<float>(1.0 / (1.0 + std::exp(l0 - l1)));
}

template <int DEG, bool MIXED>
static void run(const Params& P, const MixedWeights* M, const float* rho, int64_t n, int T, float* out,
                int threads) {
    const int TP = (T + 7) / 8 * 8;
    std::atomic<int64_t> next{0};
    const int64_t chunk = 8;
    auto worker = [&]() {
        Scratch w(T, TP);
        for (;;) {
            const int64_t s = next.fetch_add(chunk);
            if (s >= n) break;
            const int64_t e = std::min(n, s + chunk);
            for (int64_t i = s; i < e; ++i) out[i] = pixel<DEG, MIXED>(P, M, rho + i * T, T, TP, w);
        }
    };
    threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, (n + chunk - 1) / chunk)));
    std::vector<std::thread> pool;
    for (int i = 1; i < threads; ++i) pool.emplace_back(worker);
    worker();
    for (auto& t : pool) t.join();
}

Params unpack(const float* p, int T) {
    const int TP = (T + 7) / 8 * 8;
    Params P;
    P.w0 = p; p += D;
    P.ct = p; p += static_cast<size_t>(D) * TP;
    P.win = p; p += 3 * D * D;
    P.bin = p; p += 3 * D;
    P.wout = p; p += D * D;
    P.bout = p; p += D;
    P.w1 = p; p += F * D;
    P.b1 = p; p += F;
    P.w2 = p; p += D * F;
    P.b2 = p; p += D;
    P.wh = p; p += 2 * D;
    P.bh = p;
    return P;
}

}  // namespace

extern "C" {

int spectf_abi_version() { return 1; }

int spectf_dims(int* d, int* h, int* f) {
    *d = D;
    *h = H;
    *f = F;
    return 0;
}

// rho: (n, T) float32 row-major; params: packed as in l2b_mask/kernels/__init__.py (TP = T rounded
// up to 8); exp_degree 2..5 (5: faithful). Returns 0, or -1 for a bad argument.
int spectf_forward(const float* rho, int64_t n, int T, const float* params, float* out, int threads,
                   int exp_degree) {
    if (T < 1 || n < 0 || threads < 1) return -1;
    const Params P = unpack(params, T);
    switch (exp_degree) {
        case 5: run<5, false>(P, nullptr, rho, n, T, out, threads); break;
        case 4: run<4, false>(P, nullptr, rho, n, T, out, threads); break;
        case 3: run<3, false>(P, nullptr, rho, n, T, out, threads); break;
        case 2: run<2, false>(P, nullptr, rho, n, T, out, threads); break;
        default: return -1;
    }
    return 0;
}

#ifdef SPECTF_MIXED
// As spectf_forward, with the mixed-precision attention (int16 Q.K^T, bfloat16 P.V).
int spectf_forward_mixed(const float* rho, int64_t n, int T, const float* params, float* out, int threads,
                         int exp_degree) {
    if (T < 1 || n < 0 || threads < 1) return -1;
    const Params P = unpack(params, T);
    const MixedWeights M(P);
    switch (exp_degree) {
        case 5: run<5, true>(P, &M, rho, n, T, out, threads); break;
        case 3: run<3, true>(P, &M, rho, n, T, out, threads); break;
        case 2: run<2, true>(P, &M, rho, n, T, out, threads); break;
        default: return -1;
    }
    return 0;
}
#endif

}  // extern "C"

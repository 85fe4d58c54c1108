// SpecTf forward pass, one pixel at a time (x86-64 SIMD). Plain C ABI, loaded with ctypes.
//
// Layout: every activation of a pixel is kept channel-major, X[c][t] with the tokens in the SIMD
// lanes (TP = tokens rounded up to 8). Then
//   * layer norms over the 64 channels are vertical sums (no horizontal reductions),
//   * projections are small GEMMs Y[o][t] = b[o] + sum_c W[o][c] X[c][t] with a 4 x 3 register tile,
//   * attention runs per head with the queries in lanes: the scores of two vectors of 8 queries
//     against 4 keys at a time (the 8-wide head dot products are FMAs against broadcast keys:
//     2 query loads and 4 broadcasts per 8 FMAs, scores2), then per vector of 8 queries a
//     vertical softmax (per-lane max and sum) whose exponential is a vectorised exp2 (log2(e) and
//     1/sqrt(8) are folded into the query weights by the caller), written over the scores in a
//     pass of its own, which the value product then reads (8 accumulators, one per output of a
//     query); the normalisation is applied once at the end. Fusing the exp2 into the value
//     product lost on Zen 3 (docs/performance.md); f32-avx512 fuses them (spectf_wide.h).
// A pixel's working set (~300 KB) stays in the core's L2; threads split the pixels.
//
// Built once per variant (l2b_mask/kernels/variants.py); each build's one entry point,
// spectf_forward, does that variant's arithmetic (spectf_build() names it):
//   f32-avx2      AVX2/FMA, float32, the code of this file;
//   f32-avx512    -DSPECTF_WIDE, AVX-512: the same float32 arithmetic bit for bit, projections and
//                 attention with 512-bit registers (spectf_wide.h);
//   mixed-bf16pv  -DSPECTF_MIXED, AVX-512 VNNI/BF16: int16 projections and Q.K^T, bfloat16 P.V;
//   mixed-i16pv   -DSPECTF_MIXED -DSPECTF_PV_I16, AVX-512 VNNI: int16 P.V as well (spectf_mixed.h);
//   mixed-i16-avx2     -DSPECTF_MIXED -DSPECTF_YMM, AVX2: the arithmetic of mixed-i16pv with 256-bit
//                      registers and vpmaddwd (spectf_mixed_avx2.h);
//   mixed-i16-avxvnni  the same with -DSPECTF_AVX_VNNI: the VEX vpdpwssd of AVX-VNNI.
//
// Parameters arrive packed by l2b_mask/kernels/params.py (pack_parameters; order below), with LayerNorm
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

// -DSPECTF_PROFILE keeps the stages as separate symbols for `perf report` (benchmarks/profile_kernel.py).
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
    x = _mm256_max_ps(x, _mm256_set1_ps(-125.0f));  // callers keep x <= 27.5 (tanh) or x <= 0
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

#ifdef __AVX512F__
static inline __mmask16 lanes_below(int n) {
    return n >= 16 ? 0xFFFF : n <= 0 ? 0 : static_cast<__mmask16>((1u << n) - 1);
}
#endif

#if defined(SPECTF_WIDE)
#include "spectf_wide.h"
#elif defined(SPECTF_MIXED)
#include "spectf_quant.h"
#if defined(SPECTF_YMM)
#include "spectf_mixed_avx2.h"
#else
#include "spectf_mixed.h"
#endif
#endif

#ifdef SPECTF_MIXED
// Both 16-bit widths: per head, the keys and values quantised once, then the head's queries one
// register of them at a time (8 with 256-bit registers, 16 with AVX-512, whose last block masks
// the lanes past TP).
template <int DEG>
static void attention_mixed(const float* QKV, float* A, const MixedScratch& w, int T, int TP) {
#if defined(SPECTF_YMM)
    constexpr int QUERIES = 8;
#else
    constexpr int QUERIES = 16;
#endif
    for (int h = 0; h < H; ++h) {
        const float* Qh = QKV + static_cast<size_t>(h * HD) * TP;
        const float* Kh = QKV + static_cast<size_t>(D + h * HD) * TP;
        const float* Vh = QKV + static_cast<size_t>(2 * D + h * HD) * TP;
        float* Ah = A + static_cast<size_t>(h * HD) * TP;
        const auto keys = quantise_keys(Kh, w.kq, T, TP);   // the scale (256-bit build: and a norm)
        alignas(64) float vscale[HD];
        const float poffset = pair_values(Vh, w.vb, vscale, T, TP);
        for (int t0 = 0; t0 < TP; t0 += QUERIES) {
#if defined(SPECTF_YMM)
            attention8<DEG>(Qh + t0, w.kq, keys, w.vb, poffset, vscale, Ah + t0, w.s, T, TP);
#else
            attention16<DEG>(Qh + t0, w.kq, keys, w.vb, poffset, vscale, Ah + t0, w.s, T, TP,
                             lanes_below(TP - t0));
#endif
        }
    }
}

using Prepared = MixedWeights;  // the weights in int16, once per call
#else
struct Prepared {
    explicit Prepared(const struct Params&) {}
};
#endif

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

template <int DEG>
static float pixel(const Params& P, const Prepared& M, const float* rho_in, int T, int TP, Scratch& w) {
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
#if defined(SPECTF_MIXED)
    const MixedScratch& m = w.mixed;
    gemm_i16(M.in, P.bin, X, QKV, 3 * D, TP, m.xq, m.sx);
    attention_mixed<DEG>(QKV, X, m, T, TP);     // X <- attention heads
    gemm_i16(M.out, P.bout, X, Y, D, TP, m.xq, m.sx);
    layer_norm(Y, D, TP);
    gemm_i16(M.ff1, P.b1, Y, X, F, TP, m.xq, m.sx);
    gelu(X, static_cast<size_t>(F) * TP);
    gemm_i16(M.ff2, P.b2, X, Y, D, TP, m.xq, m.sx);
#else
#if defined(SPECTF_WIDE)
    constexpr auto project = gemm512;           // 512-bit registers, the same float32 arithmetic
    constexpr auto attend = attention_wide<DEG>;
#else
    constexpr auto project = gemm;
    constexpr auto attend = attention<DEG>;
#endif
    (void)M;
    project(P.win, P.bin, X, QKV, 3 * D, D, TP);
    attend(QKV, X, w.s, T, TP);                 // X <- attention heads
    project(P.wout, P.bout, X, Y, D, D, TP);
    layer_norm(Y, D, TP);
    project(P.w1, P.b1, Y, X, F, D, TP);
    gelu(X, static_cast<size_t>(F) * TP);
    project(P.w2, P.b2, X, Y, D, F, TP);
#endif
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

template <int DEG>
static void run(const Params& P, const Prepared& M, const float* rho, int64_t n, int T, float* out,
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
            for (int64_t i = s; i < e; ++i) out[i] = pixel<DEG>(P, M, rho + i * T, T, TP, w);
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

#if defined(SPECTF_MIXED) && defined(SPECTF_YMM) && defined(SPECTF_AVX_VNNI)
constexpr const char* BUILD = "mixed-i16-avxvnni";
#elif defined(SPECTF_MIXED) && defined(SPECTF_YMM)
constexpr const char* BUILD = "mixed-i16-avx2";
#elif defined(SPECTF_MIXED) && defined(SPECTF_PV_I16)
constexpr const char* BUILD = "mixed-i16pv";
#elif defined(SPECTF_MIXED)
constexpr const char* BUILD = "mixed-bf16pv";
#elif defined(SPECTF_WIDE)
constexpr const char* BUILD = "f32-avx512";
#else
constexpr const char* BUILD = "f32-avx2";
#endif

}  // namespace

extern "C" {

int spectf_abi_version() { return 2; }

// Which arithmetic this build's spectf_forward does (the variant names of l2b_mask/kernels/variants.py).
const char* spectf_build() { return BUILD; }

int spectf_dims(int* d, int* h, int* f) {
    *d = D;
    *h = H;
    *f = F;
    return 0;
}

// rho: (n, T) float32 row-major; params: packed by l2b_mask/kernels/params.py (TP = T rounded
// up to 8); exp_degree 2..5 (5: faithful). The arithmetic is the build's (spectf_build()).
// Returns 0, or -1 for a bad argument.
int spectf_forward(const float* rho, int64_t n, int T, const float* params, float* out, int threads,
                   int exp_degree) {
    if (T < 1 || n < 0 || threads < 1) return -1;
    const Params P = unpack(params, T);
    const Prepared M(P);
    switch (exp_degree) {
        case 5: run<5>(P, M, rho, n, T, out, threads); break;
        case 4: run<4>(P, M, rho, n, T, out, threads); break;
        case 3: run<3>(P, M, rho, n, T, out, threads); break;
        case 2: run<2>(P, M, rho, n, T, out, threads); break;
        default: return -1;
    }
    return 0;
}

}  // extern "C"

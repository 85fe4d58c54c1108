// ---------------------------------------------------------------- int16 products, 256-bit registers
// Included by spectf.cpp in the builds with -DSPECTF_MIXED -DSPECTF_YMM: the arithmetic of the
// AVX-512 `mixed-i16pv` build (spectf_mixed.h; int16 projections, Q.K^T and P.V, the same scales
// from spectf_quant.h) with 8 tokens per register, for CPUs without AVX-512. The pair products are
//   * AVX2 `vpmaddwd` then `vpaddd` (16 multiply-adds per instruction pair against 8 for a float32
//     FMA), or, with -DSPECTF_AVX_VNNI, the VEX `vpdpwssd` of AVX-VNNI (Alder Lake and later, Zen 5)
//     that fuses the two.
// Every integer sum is exact (the scales of spectf_quant.h keep it below 2^31), so its order does not
// matter; the float operations are those of spectf_mixed.h per lane and in the same order (the
// exp2's rounding by the 1.5 * 2^23 shifter gives the n of vroundscaleps, and 2^n by the exponent
// add equals vscalefps wherever the probability does not round to 0; scores whose probability
// rounds to 0 may be raised first, still to 0: attention8). So the probabilities are those
// of `mixed-i16pv` to the bit; tests/science/test_kernel_i16_avx2.py checks them against a numpy
// model of the same integer arithmetic, and against float32 within the bfloat16 bound.

#ifdef SPECTF_AVX_VNNI
static inline __m256i dot_pairs(__m256i acc, __m256i a, __m256i b) { return _mm256_dpwssd_avx_epi32(acc, a, b); }
#else
// The add is written in asm so that it lands on the accumulator's register: with the intrinsic,
// GCC 12 at -O3 puts each new sum in another register and copies it back once per iteration
// (a vmovdqa per accumulator in every loop here; 8 per 16 pair products in the projections).
// Integer adds are exact, so this changes no result (tests/science/test_kernel_i16_avx2.py).
static inline __m256i dot_pairs(__m256i acc, __m256i a, __m256i b) {
    const __m256i p = _mm256_madd_epi16(a, b);   // exact: no pair is (-32768, -32768)
    asm("vpaddd %1, %0, %0" : "+x"(acc) : "x"(p));
    return acc;
}
#endif

// Lanes 0..n-1 all ones (n clamped to 0..8): the real keys of a block of 8.
static inline __m256 lanes_upto(int n) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx));
}

static inline __m256 abs8(__m256 x) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x); }

static inline float hmax8(__m256 a) {
    const __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    const __m128 n = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(n, _mm_shuffle_ps(n, n, 1)));
}

// Per lane, the factor that takes magnitudes up to a to `limit` (0 where a is 0).
static inline __m256 scale_to(float limit, __m256 a) {
    return _mm256_and_ps(_mm256_cmp_ps(a, _mm256_setzero_ps(), _CMP_GT_OQ), _mm256_div_ps(_mm256_set1_ps(limit), a));
}

// int16 pairs (lo, hi) in each int32 lane; inputs already scaled into the int16 range.
static inline __m256i pack_i16_pairs(__m256 lo, __m256 hi) {
    const __m256i a = _mm256_cvtps_epi32(lo), b = _mm256_cvtps_epi32(hi);
    return _mm256_or_si256(_mm256_and_si256(a, _mm256_set1_epi32(0xFFFF)), _mm256_slli_epi32(b, 16));
}

// X[C][TP] as int16 pairs of channels Xq[C/2][TP], scaled per token to 13 bits; sx[t] the scales.
STAGE static void quantise_tokens(const float* X, int C, int TP, int32_t* Xq, float* sx) {
    for (int t = 0; t < TP; t += 8) {
        __m256 a = _mm256_setzero_ps();
        for (int c = 0; c < C; ++c) a = _mm256_max_ps(a, abs8(_mm256_load_ps(X + c * TP + t)));
        const __m256 inv = scale_to(X13, a);
        _mm256_store_ps(sx + t, _mm256_mul_ps(a, _mm256_set1_ps(1.0f / X13)));
        for (int c = 0; c < C; c += 2)
            _mm256_store_si256(reinterpret_cast<__m256i*>(Xq + (c / 2) * TP + t),
                               pack_i16_pairs(_mm256_mul_ps(_mm256_load_ps(X + c * TP + t), inv),
                                              _mm256_mul_ps(_mm256_load_ps(X + (c + 1) * TP + t), inv)));
    }
}

// Y[o][t] = b[o] + scale[o] sx[t] sum_c Wq[o][c] Xq[c][t], rows o0..o0+3, NR blocks of 8 tokens.
template <int NR>
static inline void gemm_i16_tile(const QuantWeights& W, const float* b, const int32_t* Xq, const float* sx,
                                 float* Y, int TP, int o0, int t0) {
    const int KP = W.K / 2;
    __m256i acc[4][NR];
    for (int i = 0; i < 4; ++i)
        for (int r = 0; r < NR; ++r) acc[i][r] = _mm256_setzero_si256();
    const int32_t* w = W.w.data() + static_cast<size_t>(o0) * KP;
    for (int cp = 0; cp < KP; ++cp) {
        __m256i xv[NR];
        for (int r = 0; r < NR; ++r) xv[r] = _mm256_load_si256(reinterpret_cast<const __m256i*>(Xq + cp * TP + t0 + 8 * r));
        for (int i = 0; i < 4; ++i) {
            const __m256i wi = _mm256_set1_epi32(w[i * KP + cp]);
            for (int r = 0; r < NR; ++r) acc[i][r] = dot_pairs(acc[i][r], xv[r], wi);
        }
    }
    for (int r = 0; r < NR; ++r) {
        const __m256 s = _mm256_load_ps(sx + t0 + 8 * r);
        for (int i = 0; i < 4; ++i)
            _mm256_store_ps(Y + (o0 + i) * TP + t0 + 8 * r,
                            _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i][r]), _mm256_mul_ps(s, _mm256_set1_ps(W.scale[o0 + i])),
                                            _mm256_set1_ps(b[o0 + i])));
    }
}

// 4 rows x 2 blocks of 8 tokens: 8 accumulators, 2 token vectors, a weight pair and the product fit
// the 16 registers (3 blocks spill; measured 1.17x against 1.09x the float32 kernel on Zen 3).
constexpr int GEMM_BLOCKS = 2;

STAGE static void gemm_i16(const QuantWeights& W, const float* b, const float* X, float* Y, int M, int TP,
                           int32_t* Xq, float* sx) {
    quantise_tokens(X, W.K, TP, Xq, sx);
    int t0 = 0;
    for (; t0 + 8 * GEMM_BLOCKS <= TP; t0 += 8 * GEMM_BLOCKS)
        for (int o0 = 0; o0 < M; o0 += 4) gemm_i16_tile<GEMM_BLOCKS>(W, b, Xq, sx, Y, TP, o0, t0);
    for (; t0 < TP; t0 += 8)
        for (int o0 = 0; o0 < M; o0 += 4) gemm_i16_tile<1>(W, b, Xq, sx, Y, TP, o0, t0);
}

// The quantised keys of one head: their scale, and the largest Euclidean norm of a key in integer
// units, which bounds every score of a query (Cauchy-Schwarz; see attention8).
struct KeyScale {
    float step;   // real value of one integer unit
    float norm;   // max over the T keys of sqrt(sum_d kq_d^2)
};

// Keys of one head as int16 pairs kq[p][j] = (k_j[2p], k_j[2p+1]) with one scale (14 bits).
STAGE static KeyScale quantise_keys(const float* Kh, int32_t* kq, int T, int TP) {
    __m256 a = _mm256_setzero_ps();
    for (int d = 0; d < HD; ++d)
        for (int j = 0; j < T; j += 8)
            a = _mm256_max_ps(a, _mm256_and_ps(lanes_upto(T - j), abs8(_mm256_load_ps(Kh + d * TP + j))));
    const float kmax = hmax8(a);
    const __m256 inv = _mm256_set1_ps(kmax > 0.0f ? Q14 / kmax : 0.0f);
    __m256i norm2 = _mm256_setzero_si256();   // exact: 8 * 16383^2 < 2^31
    for (int j = 0; j < T; j += 8) {   // keys past T are stored too (TP is a multiple of 8), never read
        __m256i n2 = _mm256_setzero_si256();
        for (int p = 0; p < HD / 2; ++p) {
            const __m256i k = pack_i16_pairs(_mm256_mul_ps(_mm256_load_ps(Kh + 2 * p * TP + j), inv),
                                             _mm256_mul_ps(_mm256_load_ps(Kh + (2 * p + 1) * TP + j), inv));
            _mm256_store_si256(reinterpret_cast<__m256i*>(kq + p * TP + j), k);
            n2 = _mm256_add_epi32(n2, _mm256_madd_epi16(k, k));
        }
        norm2 = _mm256_max_epi32(norm2, _mm256_and_si256(_mm256_castps_si256(lanes_upto(T - j)), n2));
    }
    return {kmax / Q14, std::sqrt(hmax8(_mm256_cvtepi32_ps(norm2)))};
}

// Values of one head as int16 pairs of consecutive keys vb[d][j/2] = (v_j[d], v_{j+1}[d]), each row
// scaled to VMAX (vscale[d] its step); keys past T are 0. Returns log2(PMAX) (spectf_quant.h).
STAGE static float pair_values(const float* Vh, int32_t* vb, float* vscale, int T, int TP) {
    const PvScales pv(T);
    for (int d = 0; d < HD; ++d) {
        const float* row = Vh + d * TP;
        __m256 a = _mm256_setzero_ps();
        for (int j = 0; j < T; j += 8) a = _mm256_max_ps(a, _mm256_and_ps(lanes_upto(T - j), abs8(_mm256_load_ps(row + j))));
        const float amax = hmax8(a);
        vscale[d] = amax / pv.vmax;
        const __m256 inv = _mm256_set1_ps(amax > 0.0f ? pv.vmax / amax : 0.0f);
        for (int j = 0; j < T; j += 16) {
            // row + j + 8 may be the next row or past TP: masked to 0 there (keys >= T)
            const __m256 v0 = _mm256_and_ps(lanes_upto(T - j), _mm256_loadu_ps(row + j));
            const __m256 v1 = j + 8 < TP ? _mm256_and_ps(lanes_upto(T - j - 8), _mm256_loadu_ps(row + j + 8))
                                         : _mm256_setzero_ps();
            const __m256i lo = _mm256_cvtps_epi32(_mm256_mul_ps(v0, inv)), hi = _mm256_cvtps_epi32(_mm256_mul_ps(v1, inv));
            // packs interleaves 4-key groups per 128-bit lane; the qword permutation restores key order
            const __m256i keys = _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), 0xD8);
            int32_t* dst = vb + d * (TP / 2) + j / 2;
            if (j + 16 <= TP) {
                _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), keys);
            } else {               // the row holds TP / 2 pairs: the last 4 only
                _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm256_castsi256_si128(keys));
            }
        }
    }
    return std::log2(pv.pmax);
}

// 2^x for -125 <= x <= 127 (the caller's scores see to the lower end): n by the shifter (round to
// nearest even, as vroundscaleps), 2^n by the exponent add (as vscalefps).
template <int DEG>
static inline __m256 exp2z(__m256 x) {
    const __m256 shifter = _mm256_set1_ps(12582912.0f);
    const __m256 t = _mm256_add_ps(x, shifter);
    const __m256 p = exp2_poly<DEG>(_mm256_sub_ps(x, _mm256_sub_ps(t, shifter)));
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), _mm256_slli_epi32(_mm256_castps_si256(t), 23)));
}

// Two probability vectors (keys j, j+1, already scaled to at most PMAX) as int16 pairs (e0[i], e1[i]).
static inline __m256i prob_pairs(__m256 e0, __m256 e1) {
    return _mm256_or_si256(_mm256_cvtps_epi32(e0), _mm256_slli_epi32(_mm256_cvtps_epi32(e1), 16));
}

// Integer scores of 8 queries against all T keys into S[j][8]; their per-lane max.
static inline __m256i scores_i16(const __m256i* qq, const int32_t* kq, int32_t* S, int T, int TP) {
    __m256i mx = _mm256_set1_epi32(INT32_MIN);
    int j = 0;
    for (; j + 8 <= T; j += 8) {
        __m256i acc[8];
        for (int k = 0; k < 8; ++k) acc[k] = _mm256_madd_epi16(qq[0], _mm256_set1_epi32(kq[j + k]));
        for (int p = 1; p < HD / 2; ++p)
            for (int k = 0; k < 8; ++k) acc[k] = dot_pairs(acc[k], qq[p], _mm256_set1_epi32(kq[p * TP + j + k]));
        for (int k = 0; k < 8; ++k) {
            _mm256_store_si256(reinterpret_cast<__m256i*>(S + (j + k) * 8), acc[k]);
            mx = _mm256_max_epi32(mx, acc[k]);
        }
    }
    for (; j < T; ++j) {
        __m256i acc = _mm256_setzero_si256();
        for (int p = 0; p < HD / 2; ++p) acc = dot_pairs(acc, qq[p], _mm256_set1_epi32(kq[p * TP + j]));
        _mm256_store_si256(reinterpret_cast<__m256i*>(S + j * 8), acc);
        mx = _mm256_max_epi32(mx, acc);
    }
    return mx;
}

// S[j][8] int32 scores -> S[j/2][8] int16 probability pairs 2^(score c - m), in place; U keys at a
// time (independent exp chains side by side; 8 spill the 16 registers).
template <int DEG, int U = 6>
static inline void probabilities(int32_t* S, __m256 c, __m256 m, int T) {
    auto x_of = [&](int jj) {
        return _mm256_fmsub_ps(_mm256_cvtepi32_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(S + jj * 8))), c, m);
    };
    int j = 0;
    for (; j + U <= T; j += U) {
        __m256 e[U];
        for (int i = 0; i < U; ++i) e[i] = x_of(j + i);   // all loads before the in-place stores
        for (int i = 0; i < U; ++i) e[i] = exp2z<DEG>(e[i]);
        for (int i = 0; i < U / 2; ++i)
            _mm256_store_si256(reinterpret_cast<__m256i*>(S + (j / 2 + i) * 8), prob_pairs(e[2 * i], e[2 * i + 1]));
    }
    for (; j < T; j += 2) {
        const __m256 e0 = exp2z<DEG>(x_of(j));
        const __m256 e1 = j + 1 < T ? exp2z<DEG>(x_of(j + 1)) : _mm256_setzero_ps();
        _mm256_store_si256(reinterpret_cast<__m256i*>(S + (j / 2) * 8), prob_pairs(e0, e1));
    }
}

// Raises the scores S[j][8] to at least smin per lane (vpmaxsd), for T keys.
static void raise_scores(int32_t* S, __m256i smin, int T) {
    for (int j = 0; j < T; ++j) {
        __m256i* s = reinterpret_cast<__m256i*>(S + j * 8);
        _mm256_store_si256(s, _mm256_max_epi32(_mm256_load_si256(s), smin));
    }
}

// One head, 8 queries: A[d][queries] = softmax(Q K^T) V. S: scratch of T x 8 int32.
template <int DEG>
STAGE static void attention8(const float* Qv, const int32_t* kq, KeyScale keys, const int32_t* vb,
                             float poffset, const float* vscale, float* A, int32_t* S, int T, int TP) {
    __m256 q[HD];
    __m256 a = _mm256_setzero_ps();
    for (int d = 0; d < HD; ++d) {
        q[d] = _mm256_load_ps(Qv + d * TP);
        a = _mm256_max_ps(a, abs8(q[d]));
    }
    const __m256 inv = scale_to(Q14, a);
    const __m256 c = _mm256_mul_ps(a, _mm256_set1_ps(keys.step / Q14));   // score = int dot * c
    __m256i qq[HD / 2];
    __m256i qn2 = _mm256_setzero_si256();
    for (int p = 0; p < HD / 2; ++p) {
        qq[p] = pack_i16_pairs(_mm256_mul_ps(q[2 * p], inv), _mm256_mul_ps(q[2 * p + 1], inv));
        qn2 = _mm256_add_epi32(qn2, _mm256_madd_epi16(qq[p], qq[p]));
    }
    const __m256i mx = scores_i16(qq, kq, S, T, TP);
    // The exponent's x = (score - max) c + poffset >= poffset - 2 |q| |k|max c (every |score| is at
    // most |q| |k|max). Where that bound is below -120 in some lane (6% of the blocks on realistic
    // pixels), the scores are first raised to where x is -120: x < -120 gives the probability 0
    // before and after, so the result is the same bits, and exp2z never sees x < -125. The 5 of
    // margin covers the float roundings while scores stay below ~10^6 in log2 units (on realistic
    // pixels this bound put them below ~70). Against a clamp in the exponential this saves 2.4%
    // (docs/performance.md).
    const __m256 reach = _mm256_mul_ps(_mm256_mul_ps(_mm256_sqrt_ps(_mm256_cvtepi32_ps(qn2)), c),
                                       _mm256_set1_ps(2.0f * keys.norm));
    const float floor_x = -120.0f;
    if (_mm256_movemask_ps(_mm256_cmp_ps(reach, _mm256_set1_ps(poffset - floor_x), _CMP_LE_OQ)) != 0xFF) {
        // score >= max - (poffset - floor_x) / c, rounded up; c = 0 gives -inf: INT32_MIN, no raise
        const __m256 lowest = _mm256_ceil_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(mx),
                                                           _mm256_div_ps(_mm256_set1_ps(poffset - floor_x), c)));
        raise_scores(S, _mm256_cvtps_epi32(lowest), T);
    }
    probabilities<DEG>(S, c, _mm256_fmsub_ps(_mm256_cvtepi32_ps(mx), c, _mm256_set1_ps(poffset)), T);
    // P.V with the sum of the probabilities as a ninth product (against int16 ones)
    __m256i o[HD];
    for (int d = 0; d < HD; ++d) o[d] = _mm256_setzero_si256();
    __m256i l = _mm256_setzero_si256();
    const __m256i ones = _mm256_set1_epi32(0x00010001);
    for (int jp = 0; jp < (T + 1) / 2; ++jp) {
        const __m256i pj = _mm256_load_si256(reinterpret_cast<const __m256i*>(S + jp * 8));
        for (int d = 0; d < HD; ++d) o[d] = dot_pairs(o[d], pj, _mm256_set1_epi32(vb[d * (TP / 2) + jp]));
        l = dot_pairs(l, pj, ones);
    }
    const __m256 r = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_cvtepi32_ps(l));
    for (int d = 0; d < HD; ++d)
        _mm256_store_ps(A + d * TP, _mm256_mul_ps(_mm256_cvtepi32_ps(o[d]), _mm256_mul_ps(r, _mm256_set1_ps(vscale[d]))));
}

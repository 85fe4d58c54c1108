// ---------------------------------------------------------------- mixed precision (AVX-512)
// Included by spectf.cpp in the builds with -DSPECTF_MIXED and AVX-512 F/VL/BW/VNNI (+BF16 unless
// -DSPECTF_PV_I16), where the int16 and bfloat16 dot products (vpdpwssd, vdpbf16ps) can do twice the
// multiply-adds per cycle of float32 FMAs (Zen 4: both; Intel: vdpbf16ps at half the int16 rate).
// Measured against float32 (docs/performance.md), not bit-faithful:
//   * projections in int16: weights scaled per output row to 12 bits, activations per token to 13
//     bits; 64 products of those fit an int32 exactly (64 * 4095 * 8191 < 2^31);
//   * Q.K^T in int16: queries scaled per token and keys per head to 14 bits (8 products fit);
//   * exp2 by vscalefps; the probabilities rounded to bfloat16 (pairs of keys);
//   * P.V in bfloat16 with float32 sums; the softmax sum is taken over the same rounded
//     probabilities, so the weights of each query still sum to 1;
//   * or, with -DSPECTF_PV_I16 (no bfloat16 instruction at all), P.V in int16: probabilities
//     scaled so that the largest is PMAX, values per head dimension to VMAX, both chosen from the
//     key count so that the int32 sums are exact (T * PMAX * VMAX < 2^31; ~13.5 and ~9.5 bits at
//     268 keys); the sum of the same integer probabilities normalises, so the scale of P cancels.
// 16 tokens (two of the layout's 8-lane vectors, contiguous) per 512-bit register.

// Per lane, the factor that takes magnitudes up to a to `limit` (0 where a is 0).
static inline __m512 scale_to(float limit, __m512 a) {
    return _mm512_maskz_div_ps(_mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_GT_OQ), _mm512_set1_ps(limit), a);
}

// int16 pairs (lo, hi) in each int32 lane; inputs already scaled into the int16 range.
static inline __m512i pack_i16_pairs(__m512 lo, __m512 hi) {
    const __m512i a = _mm512_cvtps_epi32(lo), b = _mm512_cvtps_epi32(hi);
    return _mm512_or_si512(_mm512_and_si512(a, _mm512_set1_epi32(0xFFFF)), _mm512_slli_epi32(b, 16));
}

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

#ifndef SPECTF_PV_I16
// Values of one head as bfloat16 pairs of consecutive keys vb[d][j/2] = (v_j[d], v_{j+1}[d]);
// the key past T of an odd T is 0.
STAGE static float pair_values(const float* Vh, int32_t* vb, float* vscale, int T, int TP) {
    (void)vscale;
    for (int d = 0; d < HD; ++d)
        for (int j = 0; j < T; j += 16) {
            const __m256bh b = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(lanes_below(T - j), Vh + d * TP + j));
            const int pairs = std::min(8, (T - j + 1) / 2);
            _mm256_mask_storeu_epi32(vb + d * (TP / 2) + j / 2, static_cast<__mmask8>((1u << pairs) - 1),
                                     reinterpret_cast<__m256i>(b));
        }
    return 0.0f;  // no offset: the probabilities are exp2(score - max) as they are
}

#else
// Values of one head as int16 pairs of consecutive keys vb[d][j/2] = (v_j[d], v_{j+1}[d]), each row
// scaled to VMAX (vscale[d] its step); the key past T of an odd T is 0. Returns log2(PMAX), the
// offset that makes the largest probability PMAX: VMAX * PMAX * (keys rounded up to even) < 2^31.
STAGE static float pair_values(const float* Vh, int32_t* vb, float* vscale, int T, int TP) {
    const PvScales pv(T);
    const float pmax = pv.pmax, vmax = pv.vmax;
    const __m512i order = _mm512_set_epi64(7, 5, 3, 1, 6, 4, 2, 0);
    for (int d = 0; d < HD; ++d) {
        const float* row = Vh + d * TP;
        __m512 a = _mm512_setzero_ps();
        for (int j = 0; j < T; j += 16) a = _mm512_max_ps(a, _mm512_abs_ps(_mm512_maskz_loadu_ps(lanes_below(T - j), row + j)));
        const float amax = _mm512_reduce_max_ps(a);
        vscale[d] = amax / vmax;
        const __m512 inv = _mm512_set1_ps(amax > 0.0f ? vmax / amax : 0.0f);
        for (int j = 0; j < T; j += 32) {
            const __m512i lo = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(lanes_below(T - j), row + j), inv));
            const __m512i hi = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(lanes_below(T - j - 16), row + j + 16), inv));
            // packs interleaves 4-key groups per 128-bit lane; the qword permutation restores key order
            const __m512i keys = _mm512_permutexvar_epi64(order, _mm512_packs_epi32(lo, hi));
            _mm512_mask_storeu_epi32(vb + d * (TP / 2) + j / 2, lanes_below((T - j + 1) / 2), keys);
        }
    }
    return std::log2(pmax);
}
#endif

template <int DEG>
static inline __m512 exp2z(__m512 x) {
    const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(x, n);
    __m512 p = _mm512_set1_ps(Exp2Fit<DEG>::c[0]);
    for (int i = 1; i <= DEG; ++i) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(Exp2Fit<DEG>::c[i]));
    return _mm512_scalef_ps(p, n);
}

#ifndef SPECTF_PV_I16
// Two probability vectors (keys j, j+1) as one vector of bfloat16 pairs: lane i = (e0[i], e1[i]).
static inline __m512i prob_pairs(__m512 e0, __m512 e1) {
    const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                                23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    return _mm512_permutexvar_epi16(interleave, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(e1, e0)));
}
#else
// Two probability vectors (keys j, j+1, already scaled to at most PMAX) as int16 pairs (e0[i], e1[i]).
static inline __m512i prob_pairs(__m512 e0, __m512 e1) {
    return _mm512_or_si512(_mm512_cvtps_epi32(e0), _mm512_slli_epi32(_mm512_cvtps_epi32(e1), 16));
}
#endif

// One head, 16 queries: A[d][queries] = softmax(Q K^T) V; lanes outside `live` are not stored.
// S holds the int32 scores [T][16], then, in place, the 16-bit probability pairs [T/2][16];
// `poffset` and `vscale` come from pair_values.
template <int DEG>
STAGE static void attention16(const float* Qv, const int32_t* kq, float kscale, const int32_t* vb,
                              float poffset, const float* vscale, float* A, int32_t* S, int T, int TP,
                              __mmask16 live) {
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
    const __m512 m = _mm512_fmsub_ps(_mm512_cvtepi32_ps(mx), c, _mm512_set1_ps(poffset));
    auto x_of = [&](int jj) { return _mm512_fmsub_ps(_mm512_cvtepi32_ps(_mm512_load_si512(S + jj * 16)), c, m); };
    for (j = 0; j + 8 <= T; j += 8) {
        __m512 e[8];
        for (int i = 0; i < 8; ++i) e[i] = x_of(j + i);   // all loads before the in-place stores
        for (int i = 0; i < 8; ++i) e[i] = exp2z<DEG>(e[i]);
        for (int i = 0; i < 4; ++i) _mm512_store_si512(S + (j / 2 + i) * 16, prob_pairs(e[2 * i], e[2 * i + 1]));
    }
    for (; j < T; j += 2) {
        const __m512 e0 = exp2z<DEG>(x_of(j));
        const __m512 e1 = j + 1 < T ? exp2z<DEG>(x_of(j + 1)) : _mm512_setzero_ps();
        _mm512_store_si512(S + (j / 2) * 16, prob_pairs(e0, e1));
    }
    // P.V with the sum of the probabilities as a ninth product (against 16-bit ones)
#ifndef SPECTF_PV_I16
    (void)vscale;
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
#else
    __m512i o[HD];
    for (int d = 0; d < HD; ++d) o[d] = _mm512_setzero_si512();
    __m512i l = _mm512_setzero_si512();
    const __m512i ones = _mm512_set1_epi32(0x00010001);
    for (int jp = 0; jp < (T + 1) / 2; ++jp) {
        const __m512i pj = _mm512_load_si512(S + jp * 16);
        for (int d = 0; d < HD; ++d) o[d] = _mm512_dpwssd_epi32(o[d], pj, _mm512_set1_epi32(vb[d * (TP / 2) + jp]));
        l = _mm512_dpwssd_epi32(l, pj, ones);
    }
    const __m512 r = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_cvtepi32_ps(l));
    for (int d = 0; d < HD; ++d)
        _mm512_mask_storeu_ps(A + d * TP, live,
                              _mm512_mul_ps(_mm512_cvtepi32_ps(o[d]), _mm512_mul_ps(r, _mm512_set1_ps(vscale[d]))));
#endif
}

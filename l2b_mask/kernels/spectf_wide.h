// ---------------------------------------------------------------- float32, 512-bit registers
// Included by spectf.cpp in the build with -DSPECTF_WIDE and AVX-512 F/VL/BW. The projections and
// the attention of the float32 pass with 16 tokens per register instead of 8: half the
// instructions, loads and broadcasts for the same multiply-adds, which pays where a core executes
// 512-bit FMAs at full width (Intel; Zen 4 splits them in two). Every lane does the same float32
// operations in the same order as the 256-bit code (sums over channels, head dimensions and keys
// ascending, the softmax sum in four partial sums by key modulo 4, the same exp2), so the result is
// bit for bit that of the AVX2 build; tests/science/test_kernels.py checks it. The element-wise stages
// (tanh, layer norms, GELU, max) are the 256-bit code.

// Y[o][t] = b[o] + sum_c W[o][c] X[c][t] for rows o0..o0+3 and NR blocks of 16 tokens from t0;
// TAIL: the last blocks, loaded and stored under masks.
template <int NR, bool TAIL>
static inline void gemm512_tile(const float* W, const float* b, const float* X, float* Y, int K, int TP, int o0,
                                int t0) {
    __mmask16 live[NR];
    for (int r = 0; r < NR; ++r) live[r] = lanes_below(TP - t0 - 16 * r);
    __m512 acc[4][NR];
    for (int i = 0; i < 4; ++i) {
        const __m512 bi = _mm512_set1_ps(b[o0 + i]);
        for (int r = 0; r < NR; ++r) acc[i][r] = bi;
    }
    const float* w = W + static_cast<size_t>(o0) * K;
    for (int c = 0; c < K; ++c) {
        const float* x = X + static_cast<size_t>(c) * TP + t0;
        __m512 xv[NR];
        for (int r = 0; r < NR; ++r)
            xv[r] = TAIL ? _mm512_maskz_loadu_ps(live[r], x + 16 * r) : _mm512_loadu_ps(x + 16 * r);
        for (int i = 0; i < 4; ++i) {
            const __m512 wi = _mm512_set1_ps(w[i * K + c]);
            for (int r = 0; r < NR; ++r) acc[i][r] = _mm512_fmadd_ps(wi, xv[r], acc[i][r]);
        }
    }
    for (int i = 0; i < 4; ++i)
        for (int r = 0; r < NR; ++r) {
            float* y = Y + static_cast<size_t>(o0 + i) * TP + t0 + 16 * r;
            if (TAIL)
                _mm512_mask_storeu_ps(y, live[r], acc[i][r]);
            else
                _mm512_storeu_ps(y, acc[i][r]);
        }
}

STAGE static void gemm512(const float* W, const float* b, const float* X, float* Y, int M, int K, int TP) {
    int t0 = 0;
    for (; t0 + 48 <= TP; t0 += 48)
        for (int o0 = 0; o0 < M; o0 += 4) gemm512_tile<3, false>(W, b, X, Y, K, TP, o0, t0);
    const int rest = TP - t0;
    for (int o0 = 0; o0 < M && rest > 0; o0 += 4) {
        if (rest > 32)
            gemm512_tile<3, true>(W, b, X, Y, K, TP, o0, t0);
        else if (rest > 16)
            gemm512_tile<2, true>(W, b, X, Y, K, TP, o0, t0);
        else
            gemm512_tile<1, true>(W, b, X, Y, K, TP, o0, t0);
    }
}

// The exp2 of the 256-bit softmax (shifter rounding, exponent added as an integer), 16 lanes.
template <int DEG>
static inline __m512 exp2w(__m512 x) {
    const __m512 shifter = _mm512_set1_ps(12582912.0f);
    x = _mm512_max_ps(x, _mm512_set1_ps(-125.0f));
    const __m512 t = _mm512_add_ps(x, shifter);
    const __m512 f = _mm512_sub_ps(x, _mm512_sub_ps(t, shifter));
    __m512 p = _mm512_set1_ps(Exp2Fit<DEG>::c[0]);
    for (int i = 1; i <= DEG; ++i) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(Exp2Fit<DEG>::c[i]));
    return _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(p), _mm512_slli_epi32(_mm512_castps_si512(t), 23)));
}

// One head, 16 queries (lanes outside `live` are not stored): scores into S[j][16] with the
// per-lane max, then exp2 fused with the value product (no second pass over S).
template <int DEG>
STAGE static void attention_wide16(const float* Qv, const float* Kh, const float* Vh, float* A, float* S, int T,
                                   int TP, __mmask16 live) {
    __m512 q[HD];
    for (int d = 0; d < HD; ++d) q[d] = _mm512_maskz_loadu_ps(live, Qv + static_cast<size_t>(d) * TP);
    __m512 m = _mm512_set1_ps(-INFINITY);
    int j = 0;
    for (; j + 8 <= T; j += 8) {
        __m512 acc[8];
        for (int k = 0; k < 8; ++k) acc[k] = _mm512_setzero_ps();
        for (int d = 0; d < HD; ++d) {
            const float* kd = Kh + static_cast<size_t>(d) * TP + j;
            for (int k = 0; k < 8; ++k) acc[k] = _mm512_fmadd_ps(_mm512_set1_ps(kd[k]), q[d], acc[k]);
        }
        for (int k = 0; k < 8; ++k) {
            _mm512_store_ps(S + (j + k) * 16, acc[k]);
            m = _mm512_max_ps(m, acc[k]);
        }
    }
    for (; j < T; ++j) {
        __m512 acc = _mm512_setzero_ps();
        for (int d = 0; d < HD; ++d) acc = _mm512_fmadd_ps(_mm512_set1_ps(Kh[static_cast<size_t>(d) * TP + j]), q[d], acc);
        _mm512_store_ps(S + j * 16, acc);
        m = _mm512_max_ps(m, acc);
    }
    __m512 o[HD], l[4];
    for (int d = 0; d < HD; ++d) o[d] = _mm512_setzero_ps();
    for (int i = 0; i < 4; ++i) l[i] = _mm512_setzero_ps();
    auto add_key = [&](__m512 e, int jj) {
        for (int d = 0; d < HD; ++d)
            o[d] = _mm512_fmadd_ps(e, _mm512_set1_ps(Vh[static_cast<size_t>(d) * TP + jj]), o[d]);
    };
    for (j = 0; j + 4 <= T; j += 4) {   // four independent exp2 chains side by side
        __m512 e[4];
        for (int i = 0; i < 4; ++i) e[i] = exp2w<DEG>(_mm512_sub_ps(_mm512_load_ps(S + (j + i) * 16), m));
        for (int i = 0; i < 4; ++i) {
            l[i] = _mm512_add_ps(l[i], e[i]);
            add_key(e[i], j + i);
        }
    }
    for (; j < T; ++j) {
        const __m512 e = exp2w<DEG>(_mm512_sub_ps(_mm512_load_ps(S + j * 16), m));
        l[0] = _mm512_add_ps(l[0], e);
        add_key(e, j);
    }
    const __m512 r = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_add_ps(l[0], l[1]), _mm512_add_ps(l[2], l[3])));
    for (int d = 0; d < HD; ++d) _mm512_mask_storeu_ps(A + static_cast<size_t>(d) * TP, live, _mm512_mul_ps(o[d], r));
}

template <int DEG>
static void attention_wide(const float* QKV, float* A, float* S, int T, int TP) {
    for (int h = 0; h < H; ++h) {
        const float* Qh = QKV + static_cast<size_t>(h * HD) * TP;
        const float* Kh = QKV + static_cast<size_t>(D + h * HD) * TP;
        const float* Vh = QKV + static_cast<size_t>(2 * D + h * HD) * TP;
        for (int t0 = 0; t0 < TP; t0 += 16)
            attention_wide16<DEG>(Qh + t0, Kh, Vh, A + static_cast<size_t>(h * HD) * TP + t0, S, T, TP,
                                  lanes_below(TP - t0));
    }
}

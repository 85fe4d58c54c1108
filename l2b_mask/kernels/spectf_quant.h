// ---------------------------------------------------------------- int16 quantisation (shared)
// Included by both int16 builds (spectf_mixed.h: AVX-512 VNNI; spectf_mixed_avx2.h: AVX2 vpmaddwd or
// AVX-VNNI): the scales and the scalar preparation they share, so that both quantise alike.

constexpr float W12 = 4095.0f, X13 = 8191.0f, Q14 = 16383.0f;

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

// int16 P.V: the largest probability PMAX and the value scale VMAX for T keys, so that the int32
// sums are exact: VMAX * PMAX * (keys rounded up to even) < 2^31 (1% margin: exp2 of degree 2
// overshoots by up to 0.17%).
struct PvScales {
    float pmax, vmax;
    explicit PvScales(int T) {
        const double budget = 0.99 * 2147483647.0 / (2.0 * ((T + 1) / 2));
        pmax = static_cast<float>(std::min(16383.0, std::floor(std::sqrt(16.0 * budget))));
        vmax = static_cast<float>(std::min(32767.0, std::floor(budget / pmax)));
    }
};

struct MixedScratch {
    int32_t *kq, *vb, *s, *xq;
    float* sx;
};

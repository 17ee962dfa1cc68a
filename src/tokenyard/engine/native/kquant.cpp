// Linear layers on llama.cpp's K-quant weights (Q4_K, Q5_K, Q6_K) for CPUs with AVX512-VNNI:
// y[T, N] = x[T, K] @ W[N, K]^T, with W kept at the file's own precision.
//
// A K-quant row is super-blocks of 256 input channels. Q4_K and Q5_K split one into 8 sub-blocks of
// 32 channels with a 6-bit scale sc and min mn each, w = d sc q - dmin mn (q: 4 or 5 bits); Q6_K into
// 16 sub-blocks of 16 with a signed 8-bit scale, w = d sc (q - 32) (q: 6 bits), which is the same
// form with dmin = d and mn = 32 sc. The activations are quantised as llama.cpp's Q8_K: per token and
// super-block one float scale (the value of largest magnitude maps to -128) and int8 values, plus the
// int8 sums of every 16 (or 32) channels. A sub-block's dot product is then integer work for VPDPBUSD
// (u8 x s8), and the mins need only those sums:
//     sum_k w_k x_k  ~  dx (d sum_j sc_j sum_{k in j} q_k qx_k  -  dmin sum_j mn_j bsum_j).
//
// Layout (Python packs it, modeling/kquant.py): output rows in tiles of 16, one row per 32-bit lane,
// as blockq.cpp. Each tile may hold its own type (a fused Q/K/V layer can be Q4_K for Q and K and Q6_K
// for V), so a table gives every tile's type and byte offset: tiles[i] = type << 56 | offset. A tile's
// super-block is, in order: d [16] and dmin [16] (float16); scales [S][16] (int8); mins [S/2][16][2]
// (int16, pairs of sub-blocks for VPDPWSSD); the low 4 bits of q, 32 vectors of 64 bytes, byte 4r + c
// of vector j holding row r's channel 8j + c in its low nibble and 8j + 4 + c in its high one; then
// for Q5_K one and for Q6_K two bit planes of the high bits: per vector j and plane p two 64-bit masks
// (low nibbles, high nibbles), bit i set where byte i's q has bit 4 + p.
//
// Plain C ABI (called through ctypes); output tiles split over the kernels' thread pool (pool.h).

#include <string.h>

#include <vector>

#include "kernels.h"
#include "pool.h"
#include "simd.h"

namespace {

constexpr int kSuper = 256;
constexpr int kTile = 16;
constexpr int kMaxTokens = 8;
constexpr int kQ4K = 12, kQ5K = 13, kQ6K = 14;  // ggml's type numbers

template <int Type>
struct Format {
    static constexpr int sub_blocks = Type == kQ6K ? 16 : 8;
    static constexpr int planes = Type == kQ4K ? 0 : (Type == kQ5K ? 1 : 2);
    static constexpr int vectors_per_sub = kSuper / sub_blocks / 8;  // 8 channels per 64-byte vector
    static constexpr int64_t bytes = 64 + sub_blocks * 16 + sub_blocks * 32 + 32 * 64 + 32 * planes * 16;
};

// Activations in llama.cpp's Q8_K form, per token: qx [K] int8, dx [K / 256], sums of 16 and of 32.
struct Activations {
    const int8_t* qx;
    const float* dx;
    const int16_t* sums16;
    const int16_t* sums32;
    int64_t k;
};

inline __m512i broadcast4(const int8_t* p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

inline __mmask64 mask_at(const uint8_t* p) {
    uint64_t m;
    memcpy(&m, p, 8);
    return m;
}

template <int Type, int Tokens>
void tile_pass(const uint8_t* w, const Activations& a, int64_t t0, int64_t n, int64_t row, float* out) {
    using F = Format<Type>;
    constexpr int S = F::sub_blocks;
    const int64_t supers = a.k / kSuper;
    const int16_t* sums = S == 16 ? a.sums16 : a.sums32;
    const __m512i low = _mm512_set1_epi8(0x0F);
    __m512 total[Tokens];
    for (int t = 0; t < Tokens; ++t) total[t] = _mm512_setzero_ps();
    for (int64_t sb = 0; sb < supers; ++sb, w += F::bytes) {
        const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w)));
        const __m512 dmin = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32)));
        const int8_t* scales = reinterpret_cast<const int8_t*>(w + 64);
        const uint8_t* mins = w + 64 + S * 16;
        const uint8_t* nibbles = mins + S * 32;
        const uint8_t* planes = nibbles + 32 * 64;
        float dx[Tokens];
        for (int t = 0; t < Tokens; ++t) dx[t] = a.dx[(t0 + t) * supers + sb];
        for (int s = 0; s < S; ++s) {
            __m512i dot[Tokens];
            for (int t = 0; t < Tokens; ++t) dot[t] = _mm512_setzero_si512();
            for (int v = 0; v < F::vectors_per_sub; ++v) {
                const int j = s * F::vectors_per_sub + v;
                __m512i packed = _mm512_loadu_si512(nibbles + j * 64);
                __m512i first = _mm512_and_si512(packed, low);
                __m512i second = _mm512_and_si512(_mm512_srli_epi16(packed, 4), low);
                for (int p = 0; p < F::planes; ++p) {
                    const __m512i bit = _mm512_set1_epi8(static_cast<char>(16 << p));
                    const uint8_t* m = planes + (j * F::planes + p) * 16;
                    first = _mm512_or_si512(first, _mm512_maskz_mov_epi8(mask_at(m), bit));
                    second = _mm512_or_si512(second, _mm512_maskz_mov_epi8(mask_at(m + 8), bit));
                }
                const int64_t channel = sb * kSuper + 8 * j;
                for (int t = 0; t < Tokens; ++t) {
                    const int8_t* q = a.qx + (t0 + t) * a.k + channel;
                    dot[t] = _mm512_dpbusd_epi32(dot[t], first, broadcast4(q));
                    dot[t] = _mm512_dpbusd_epi32(dot[t], second, broadcast4(q + 4));
                }
            }
            __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(scales + s * 16));
            __m512 scale = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(raw)), d);
            for (int t = 0; t < Tokens; ++t) {
                total[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[t]), _mm512_mul_ps(scale, _mm512_set1_ps(dx[t])), total[t]);
            }
        }
        for (int t = 0; t < Tokens; ++t) {  // the mins: sum_j mn_j bsum_j, two sub-blocks an instruction
            const int16_t* bsum = sums + ((t0 + t) * supers + sb) * S;
            __m512i acc = _mm512_setzero_si512();
            for (int p = 0; p < S / 2; ++p) {
                int32_t pair;
                memcpy(&pair, bsum + 2 * p, 4);
                acc = _mm512_dpwssd_epi32(acc, _mm512_loadu_si512(mins + p * 64), _mm512_set1_epi32(pair));
            }
            total[t] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_mul_ps(dmin, _mm512_set1_ps(dx[t])), total[t]);
        }
    }
    for (int t = 0; t < Tokens; ++t) _mm512_storeu_ps(out + (t0 + t) * n + row, total[t]);
}

template <int Type>
void tile(const uint8_t* w, const Activations& a, int64_t tokens, int64_t n, int64_t row, float* out) {
    for (int64_t t0 = 0; t0 < tokens; t0 += kMaxTokens) {
        switch (tokens - t0 < kMaxTokens ? tokens - t0 : kMaxTokens) {
            case 1: tile_pass<Type, 1>(w, a, t0, n, row, out); break;
            case 2: tile_pass<Type, 2>(w, a, t0, n, row, out); break;
            case 3: tile_pass<Type, 3>(w, a, t0, n, row, out); break;
            case 4: tile_pass<Type, 4>(w, a, t0, n, row, out); break;
            case 5: tile_pass<Type, 5>(w, a, t0, n, row, out); break;
            case 6: tile_pass<Type, 6>(w, a, t0, n, row, out); break;
            case 7: tile_pass<Type, 7>(w, a, t0, n, row, out); break;
            default: tile_pass<Type, 8>(w, a, t0, n, row, out); break;
        }
    }
}

// One super-block of 256 float32 values -> Q8_K as llama.cpp quantises it today: q = round(127 x / amax)
// in -127..127 (llama.cpp divides by the signed value of largest magnitude, which flips the signs of
// q and dx together and so gives the same products), dx = 1 / (127 / amax); and the sums of 16 and 32.
void quantize_super(const float* x, int8_t* q, float* dx, int16_t* sums16, int16_t* sums32) {
    const __m512 sign = _mm512_set1_ps(-0.0f);
    __m512 top = _mm512_setzero_ps();
    for (int i = 0; i < kSuper; i += 16) top = _mm512_max_ps(top, _mm512_andnot_ps(sign, _mm512_loadu_ps(x + i)));
    const float amax = _mm512_reduce_max_ps(top);
    const float inverse = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int i = 0; i < kSuper; i += 16) {
        __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i), _mm512_set1_ps(inverse)));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), _mm512_cvtsepi32_epi8(v));
        sums16[i / 16] = static_cast<int16_t>(_mm512_reduce_add_epi32(v));
    }
    for (int i = 0; i < 8; ++i) sums32[i] = static_cast<int16_t>(sums16[2 * i] + sums16[2 * i + 1]);
    *dx = amax > 0.0f ? 1.0f / inverse : 0.0f;  // as llama.cpp: the reciprocal of the scale it multiplied by
}

void quantize(const void* x, int x_bf16, int64_t tokens, int64_t k, int8_t* qx, float* dx, int16_t* sums16,
              int16_t* sums32) {
    const int64_t supers = k / kSuper;
    float row[kSuper];
    for (int64_t t = 0; t < tokens; ++t) {
        for (int64_t sb = 0; sb < supers; ++sb) {
            const int64_t at = t * k + sb * kSuper;
            for (int i = 0; i < kSuper; i += 16) {
                __m512 v = x_bf16 ? simd::load16(static_cast<const uint16_t*>(x) + at + i)
                                  : simd::load16(static_cast<const float*>(x) + at + i);
                _mm512_storeu_ps(row + i, v);
            }
            const int64_t b = t * supers + sb;
            quantize_super(row, qx + at, dx + b, sums16 + b * 16, sums32 + b * 8);
        }
    }
}

}  // namespace

extern "C" {

// x [tokens, k] (bfloat16 if x_bf16, else float32) -> out [tokens, n] (bfloat16 if out_bf16, else
// float32). weights and tiles as the header describes; n a multiple of 16, k of 256.
void kquant_linear(const uint8_t* weights, const int64_t* tiles, int64_t n, int64_t k, const void* x, int x_bf16,
                   int64_t tokens, void* out, int out_bf16) {
    thread_local std::vector<int8_t> qx;
    thread_local std::vector<float> dx, result;
    thread_local std::vector<int16_t> sums16, sums32;
    qx.resize(tokens * k);
    dx.resize(tokens * k / kSuper);
    sums16.resize(tokens * k / 16);
    sums32.resize(tokens * k / 32);
    quantize(x, x_bf16, tokens, k, qx.data(), dx.data(), sums16.data(), sums32.data());
    const Activations a{qx.data(), dx.data(), sums16.data(), sums32.data(), k};
    float* target = static_cast<float*>(out);
    if (out_bf16) {
        result.resize(tokens * n);
        target = result.data();
    }
    // Output tiles split over the pool's threads; each tile is computed whole by one, so any thread
    // count gives the same bits.
    const int64_t count = n / kTile;
    const int64_t grain = count / (8 * pool::threads()) > 1 ? count / (8 * pool::threads()) : 1;
    pool::parallel_for(count, grain, [&](int64_t first, int64_t last) {
        for (int64_t i = first; i < last; ++i) {
            const uint8_t* w = weights + (tiles[i] & ((int64_t{1} << 56) - 1));
            switch (static_cast<int>(tiles[i] >> 56)) {
                case kQ4K: tile<kQ4K>(w, a, tokens, n, i * kTile, target); break;
                case kQ5K: tile<kQ5K>(w, a, tokens, n, i * kTile, target); break;
                default: tile<kQ6K>(w, a, tokens, n, i * kTile, target); break;
            }
        }
    });
    if (out_bf16) {
        uint16_t* o = static_cast<uint16_t*>(out);
        for (int64_t i = 0; i < tokens * n; i += 16) simd::store16(o + i, _mm512_loadu_ps(target + i));
    }
}

}  // extern "C"

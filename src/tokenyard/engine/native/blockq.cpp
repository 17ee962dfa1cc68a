// Block-quantised linear layers for CPUs with AVX512-VNNI: y[T, N] = x[T, K] @ W[N, K]^T.
//
// Weights are blocks of 32 input channels per output row, w = d * u + m with u an unsigned integer
// (4-bit: GGUF's Q4_1 grid; 8-bit: u = q + 128 for Q8_0, so m = -128 d) and d, m in float16.
// Activations are quantised per call to int8 per block of 32 (x ~ dx * qx, as llama.cpp does), so
// each block's dot product is integer work for VPDPBUSD (u8 x s8, 64 multiply-adds per instruction):
//     sum_k w_k x_k  ~  d dx sum_k u_k qx_k  +  m s,     s = dx sum_k qx_k.
// s is the quantised activations' sum, not the exact one: then the error is sum_k w_k (dx qx_k - x_k),
// weights centred on zero, and the 8-bit offset cancels exactly. With the exact sum the 4-bit error is
// sum_k d u_k (dx qx_k - x_k), with u_k all positive, and SmolLM2's int4 perplexity was 1.7% worse.
//
// Layout: output rows in tiles of 16, one row per 32-bit lane. For a tile and a block of 32 input
// channels, each group of 4 channels is one 64-byte vector (16 rows x 4 bytes). 8-bit blocks are 8
// such vectors; 4-bit blocks are 4, each byte holding channel group 2j in its low nibble and 2j+1 in
// its high one. Scales per tile and block: 16 d then 16 m (float16). The activation of a channel
// group is broadcast from memory, so a multiply-add of 16 rows x 4 channels is one instruction per
// token, and the weights are unpacked once for up to 8 tokens at a time.
//
// Plain C ABI (called through ctypes); output tiles are split over the kernels' thread pool (pool.h).

#include <string.h>

#include <vector>

#include "kernels.h"
#include "pool.h"
#include "simd.h"

namespace {

inline __m512 load(const void* x, int bf16, int64_t index) {
    return bf16 ? simd::load16(static_cast<const uint16_t*>(x) + index) : simd::load16(static_cast<const float*>(x) + index);
}

constexpr int kBlock = 32;
constexpr int kTile = 16;
constexpr int kMaxTokens = 8;  // tokens per pass over a weight tile: its accumulators stay in registers
// Each activation is taken as two int8 parts, x ~ dx (q + f / kFine): q as llama.cpp's Q8_1, f the
// rounding error q left, itself in int8. One more VPDPBUSD per weight vector and token makes the
// activations ~15-bit: with q alone SmolLM2 int4 flipped greedy near-ties that float32 gets right
// (it answered "What is the capital of France?" with "L'Étoile, ..."; docs/engine.md).
constexpr float kFine = 254.0f;

template <int Bits, int Tokens>
void tile_pass(const uint8_t* weights, const uint16_t* scales, int blocks, int64_t k, const int8_t* qx,
               const int8_t* qlo, const float* dx, const float* sums, void* out, int out_bf16, int64_t n,
               int64_t row) {
    __m512 total[Tokens];
    for (int t = 0; t < Tokens; ++t) total[t] = _mm512_setzero_ps();
    const __m512i low = _mm512_set1_epi8(0x0F);
    const __m512 fine = _mm512_set1_ps(1.0f / kFine);
    for (int b = 0; b < blocks; ++b) {
        __m512i dot[Tokens], dot_fine[Tokens];
        for (int t = 0; t < Tokens; ++t) dot[t] = dot_fine[t] = _mm512_setzero_si512();
        const int8_t* q = qx + b * kBlock;
        if (Bits == 4) {
            const int8_t* ql = qlo + b * kBlock;
            for (int j = 0; j < 4; ++j) {
                __m512i packed = _mm512_loadu_si512(weights);
                weights += 64;
                __m512i first = _mm512_and_si512(packed, low);
                __m512i second = _mm512_and_si512(_mm512_srli_epi16(packed, 4), low);
                for (int t = 0; t < Tokens; ++t) {
                    int32_t a, c, af, cf;
                    memcpy(&a, q + t * k + 8 * j, 4);
                    memcpy(&c, q + t * k + 8 * j + 4, 4);
                    memcpy(&af, ql + t * k + 8 * j, 4);
                    memcpy(&cf, ql + t * k + 8 * j + 4, 4);
                    dot[t] = _mm512_dpbusd_epi32(dot[t], first, _mm512_set1_epi32(a));
                    dot[t] = _mm512_dpbusd_epi32(dot[t], second, _mm512_set1_epi32(c));
                    dot_fine[t] = _mm512_dpbusd_epi32(dot_fine[t], first, _mm512_set1_epi32(af));
                    dot_fine[t] = _mm512_dpbusd_epi32(dot_fine[t], second, _mm512_set1_epi32(cf));
                }
            }
        } else {
            const int8_t* ql = qlo + b * kBlock;
            for (int j = 0; j < 8; ++j) {
                __m512i w = _mm512_loadu_si512(weights);
                weights += 64;
                for (int t = 0; t < Tokens; ++t) {
                    int32_t a, af;
                    memcpy(&a, q + t * k + 4 * j, 4);
                    memcpy(&af, ql + t * k + 4 * j, 4);
                    dot[t] = _mm512_dpbusd_epi32(dot[t], w, _mm512_set1_epi32(a));
                    dot_fine[t] = _mm512_dpbusd_epi32(dot_fine[t], w, _mm512_set1_epi32(af));
                }
            }
        }
        __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(scales)));
        __m512 m = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(scales + kTile)));
        scales += 2 * kTile;
        for (int t = 0; t < Tokens; ++t) {
            __m512 scale = _mm512_mul_ps(d, _mm512_set1_ps(dx[t * blocks + b]));
            __m512 products = _mm512_cvtepi32_ps(dot[t]);
            products = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot_fine[t]), fine, products);
            total[t] = _mm512_fmadd_ps(products, scale, total[t]);
            total[t] = _mm512_fmadd_ps(m, _mm512_set1_ps(sums[t * blocks + b]), total[t]);
        }
    }
    for (int t = 0; t < Tokens; ++t) {
        int64_t at = t * n + row;
        if (out_bf16) {
            simd::store16(static_cast<uint16_t*>(out) + at, total[t]);
        } else {
            simd::store16(static_cast<float*>(out) + at, total[t]);
        }
    }
}

template <int Bits>
void tiles_pass(const uint8_t* weights, const uint16_t* scales, int64_t n, int64_t k, const int8_t* qx,
                const int8_t* qlo, const float* dx, const float* sums, int64_t tokens, void* out, int out_bf16, int64_t first,
                int64_t last) {
    const int blocks = static_cast<int>(k / kBlock);
    const int64_t tile_bytes = static_cast<int64_t>(blocks) * kTile * kBlock * Bits / 8;
    const int64_t tile_scales = static_cast<int64_t>(blocks) * 2 * kTile;
    for (int64_t tile = first; tile < last; ++tile) {
        const uint8_t* w = weights + tile * tile_bytes;
        const uint16_t* s = scales + tile * tile_scales;
        for (int64_t t0 = 0; t0 < tokens; t0 += kMaxTokens) {
            const int64_t count = tokens - t0 < kMaxTokens ? tokens - t0 : kMaxTokens;
            const int8_t* q = qx + t0 * k;
            const int8_t* ql = qlo + t0 * k;
            const float* d = dx + t0 * blocks;
            const float* sm = sums + t0 * blocks;
            void* o = out_bf16 ? static_cast<void*>(static_cast<uint16_t*>(out) + t0 * n)
                               : static_cast<void*>(static_cast<float*>(out) + t0 * n);
            const int64_t row = tile * kTile;
            switch (count) {
                case 1: tile_pass<Bits, 1>(w, s, blocks, k, q, ql, d, sm, o, out_bf16, n, row); break;
                case 2: tile_pass<Bits, 2>(w, s, blocks, k, q, ql, d, sm, o, out_bf16, n, row); break;
                case 3: tile_pass<Bits, 3>(w, s, blocks, k, q, ql, d, sm, o, out_bf16, n, row); break;
                case 4: tile_pass<Bits, 4>(w, s, blocks, k, q, ql, d, sm, o, out_bf16, n, row); break;
                case 5: tile_pass<Bits, 5>(w, s, blocks, k, q, ql, d, sm, o, out_bf16, n, row); break;
                case 6: tile_pass<Bits, 6>(w, s, blocks, k, q, ql, d, sm, o, out_bf16, n, row); break;
                case 7: tile_pass<Bits, 7>(w, s, blocks, k, q, ql, d, sm, o, out_bf16, n, row); break;
                default: tile_pass<Bits, 8>(w, s, blocks, k, q, ql, d, sm, o, out_bf16, n, row); break;
            }
        }
    }
}

// Output tiles split over the pool's threads: each reads its share of the weights once for all tokens.
template <int Bits>
void gemm(const uint8_t* weights, const uint16_t* scales, int64_t n, int64_t k, const int8_t* qx,
          const int8_t* qlo, const float* dx, const float* sums, int64_t tokens, void* out, int out_bf16) {
    const int64_t tiles = n / kTile;
    const int64_t grain = tiles / (8 * pool::threads()) > 1 ? tiles / (8 * pool::threads()) : 1;
    pool::parallel_for(tiles, grain, [&](int64_t first, int64_t last) {
        tiles_pass<Bits>(weights, scales, n, k, qx, qlo, dx, sums, tokens, out, out_bf16, first, last);
    });
}

// x [tokens, k] (bfloat16 if x_bf16, else float32) -> qx [tokens, k] int8, dx and sums [tokens, k / 32];
// qfine: each value's rounding error in int8 steps of 1 / kFine (see kFine).
void quantize(const void* x, int x_bf16, int64_t tokens, int64_t k, int8_t* qx, int8_t* qfine, float* dx,
              float* sums) {
    const int64_t blocks = k / kBlock;
    const __m512 sign = _mm512_set1_ps(-0.0f), steps = _mm512_set1_ps(kFine);
    for (int64_t t = 0; t < tokens; ++t) {
        for (int64_t b = 0; b < blocks; ++b) {
            const int64_t at = t * k + b * kBlock;
            __m512 lo = load(x, x_bf16, at), hi = load(x, x_bf16, at + 16);
            float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_andnot_ps(sign, lo), _mm512_andnot_ps(sign, hi)));
            float d = amax / 127.0f, inverse = amax > 0.0f ? 127.0f / amax : 0.0f;
            __m512 rlo = _mm512_mul_ps(lo, _mm512_set1_ps(inverse)), rhi = _mm512_mul_ps(hi, _mm512_set1_ps(inverse));
            __m512i qlo = _mm512_cvtps_epi32(rlo), qhi = _mm512_cvtps_epi32(rhi);
            _mm_storeu_si128(reinterpret_cast<__m128i*>(qx + at), _mm512_cvtsepi32_epi8(qlo));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(qx + at + 16), _mm512_cvtsepi32_epi8(qhi));
            float sum = static_cast<float>(_mm512_reduce_add_epi32(_mm512_add_epi32(qlo, qhi)));
            {
                __m512i flo = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_sub_ps(rlo, _mm512_cvtepi32_ps(qlo)), steps));
                __m512i fhi = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_sub_ps(rhi, _mm512_cvtepi32_ps(qhi)), steps));
                _mm_storeu_si128(reinterpret_cast<__m128i*>(qfine + at), _mm512_cvtsepi32_epi8(flo));
                _mm_storeu_si128(reinterpret_cast<__m128i*>(qfine + at + 16), _mm512_cvtsepi32_epi8(fhi));
                sum += static_cast<float>(_mm512_reduce_add_epi32(_mm512_add_epi32(flo, fhi))) / kFine;
            }
            dx[t * blocks + b] = d;
            sums[t * blocks + b] = d * sum;
        }
    }
}

}  // namespace

extern "C" {

// quantize then multiply in one call, the quantised activations in per-thread scratch.
void blockq_linear(int bits, const uint8_t* weights, const uint16_t* scales, int64_t n, int64_t k, const void* x,
                   int x_bf16, int64_t tokens, void* out, int out_bf16) {
    thread_local std::vector<int8_t> qx, qfine;
    thread_local std::vector<float> dx, sums;
    qx.resize(tokens * k);
    qfine.resize(tokens * k);
    dx.resize(tokens * k / kBlock);
    sums.resize(tokens * k / kBlock);
    int8_t* fine = qfine.data();
    quantize(x, x_bf16, tokens, k, qx.data(), fine, dx.data(), sums.data());
    if (bits == 4) {
        gemm<4>(weights, scales, n, k, qx.data(), fine, dx.data(), sums.data(), tokens, out, out_bf16);
    } else {
        gemm<8>(weights, scales, n, k, qx.data(), fine, dx.data(), sums.data(), tokens, out, out_bf16);
    }
}

}  // extern "C"

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
// Activations in one or two parts. Our own int4/int8 quantisation takes each activation as two int8
// parts (kFine below), close to exact. A GGUF file's blocks (`--quantization gguf`, kind with
// BLOCKQ_ONE_PART) take llama.cpp's own activations for their type, so that a file scores as it does
// in llama.cpp: one int8 part, the block's scale rounded to float16 as Q8_0 and Q8_1 store it, and for
// the tiles whose weights llama.cpp pairs with Q8_1 (Q4_1, Q5_1) the block's sum dx * sum(q) rounded
// to float16 as Q8_1's s; the other types (Q4_0, Q5_0, Q8_0) fold their offset into q, which is the
// exact m * dx * sum(q) here.
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

// One call's quantised activations: qx [tokens, k] int8 and, per token and block of 32, dx and the
// sums that multiply m. Two-part: qfine [tokens, k], the fine part. One-part: sums_q81 as Q8_1's s,
// for the tiles that q81 (one uint16 per tile, nonzero for Q8_1) marks; else null.
struct Activations {
    const int8_t* qx;
    const int8_t* qfine;
    const float* dx;
    const float* sums;
    const float* sums_q81;
    const uint16_t* q81;
};

// Parts: 2 adds the fine part's dot product (qlo), 1 leaves it out (qlo unused).
template <int Bits, int Parts, int Tokens>
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
                    int32_t a, c;
                    memcpy(&a, q + t * k + 8 * j, 4);
                    memcpy(&c, q + t * k + 8 * j + 4, 4);
                    dot[t] = _mm512_dpbusd_epi32(dot[t], first, _mm512_set1_epi32(a));
                    dot[t] = _mm512_dpbusd_epi32(dot[t], second, _mm512_set1_epi32(c));
                    if (Parts == 2) {
                        int32_t af, cf;
                        memcpy(&af, ql + t * k + 8 * j, 4);
                        memcpy(&cf, ql + t * k + 8 * j + 4, 4);
                        dot_fine[t] = _mm512_dpbusd_epi32(dot_fine[t], first, _mm512_set1_epi32(af));
                        dot_fine[t] = _mm512_dpbusd_epi32(dot_fine[t], second, _mm512_set1_epi32(cf));
                    }
                }
            }
        } else {
            const int8_t* ql = qlo + b * kBlock;
            for (int j = 0; j < 8; ++j) {
                __m512i w = _mm512_loadu_si512(weights);
                weights += 64;
                for (int t = 0; t < Tokens; ++t) {
                    int32_t a;
                    memcpy(&a, q + t * k + 4 * j, 4);
                    dot[t] = _mm512_dpbusd_epi32(dot[t], w, _mm512_set1_epi32(a));
                    if (Parts == 2) {
                        int32_t af;
                        memcpy(&af, ql + t * k + 4 * j, 4);
                        dot_fine[t] = _mm512_dpbusd_epi32(dot_fine[t], w, _mm512_set1_epi32(af));
                    }
                }
            }
        }
        __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(scales)));
        __m512 m = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(scales + kTile)));
        scales += 2 * kTile;
        for (int t = 0; t < Tokens; ++t) {
            __m512 scale = _mm512_mul_ps(d, _mm512_set1_ps(dx[t * blocks + b]));
            __m512 products = _mm512_cvtepi32_ps(dot[t]);
            if (Parts == 2) products = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot_fine[t]), fine, products);
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

template <int Bits, int Parts>
void tiles_pass(const uint8_t* weights, const uint16_t* scales, int64_t n, int64_t k, const Activations& a,
                int64_t tokens, void* out, int out_bf16, int64_t first, int64_t last) {
    const int blocks = static_cast<int>(k / kBlock);
    const int64_t tile_bytes = static_cast<int64_t>(blocks) * kTile * kBlock * Bits / 8;
    const int64_t tile_scales = static_cast<int64_t>(blocks) * 2 * kTile;
    for (int64_t tile = first; tile < last; ++tile) {
        const uint8_t* w = weights + tile * tile_bytes;
        const uint16_t* s = scales + tile * tile_scales;
        const float* tile_sums = a.q81 != nullptr && a.q81[tile] != 0 ? a.sums_q81 : a.sums;
        for (int64_t t0 = 0; t0 < tokens; t0 += kMaxTokens) {
            const int64_t count = tokens - t0 < kMaxTokens ? tokens - t0 : kMaxTokens;
            const int8_t* q = a.qx + t0 * k;
            const int8_t* ql = Parts == 2 ? a.qfine + t0 * k : nullptr;
            const float* d = a.dx + t0 * blocks;
            const float* sm = tile_sums + t0 * blocks;
            void* o = out_bf16 ? static_cast<void*>(static_cast<uint16_t*>(out) + t0 * n)
                               : static_cast<void*>(static_cast<float*>(out) + t0 * n);
            const int64_t row = tile * kTile;
            switch (count) {
                case 1: tile_pass<Bits, Parts, 1>(w, s, blocks, k, q, ql, d, sm, o, out_bf16, n, row); break;
                case 2: tile_pass<Bits, Parts, 2>(w, s, blocks, k, q, ql, d, sm, o, out_bf16, n, row); break;
                case 3: tile_pass<Bits, Parts, 3>(w, s, blocks, k, q, ql, d, sm, o, out_bf16, n, row); break;
                case 4: tile_pass<Bits, Parts, 4>(w, s, blocks, k, q, ql, d, sm, o, out_bf16, n, row); break;
                case 5: tile_pass<Bits, Parts, 5>(w, s, blocks, k, q, ql, d, sm, o, out_bf16, n, row); break;
                case 6: tile_pass<Bits, Parts, 6>(w, s, blocks, k, q, ql, d, sm, o, out_bf16, n, row); break;
                case 7: tile_pass<Bits, Parts, 7>(w, s, blocks, k, q, ql, d, sm, o, out_bf16, n, row); break;
                default: tile_pass<Bits, Parts, 8>(w, s, blocks, k, q, ql, d, sm, o, out_bf16, n, row); break;
            }
        }
    }
}

// Output tiles split over the pool's threads: each reads its share of the weights once for all tokens.
template <int Bits, int Parts>
void gemm(const uint8_t* weights, const uint16_t* scales, int64_t n, int64_t k, const Activations& a,
          int64_t tokens, void* out, int out_bf16) {
    const int64_t tiles = n / kTile;
    const int64_t grain = tiles / (8 * pool::threads()) > 1 ? tiles / (8 * pool::threads()) : 1;
    pool::parallel_for(tiles, grain, [&](int64_t first, int64_t last) {
        tiles_pass<Bits, Parts>(weights, scales, n, k, a, tokens, out, out_bf16, first, last);
    });
}

inline float to_half_and_back(float value) { return _cvtsh_ss(_cvtss_sh(value, _MM_FROUND_TO_NEAREST_INT)); }

// x [tokens, k] (bfloat16 if x_bf16, else float32) -> qx [tokens, k] int8, dx and sums [tokens, k / 32],
// q = round(127 x / amax) and dx = amax / 127 per block (llama.cpp's Q8_0 and Q8_1). qfine non-null: each
// value's rounding error in int8 steps of 1 / kFine (see kFine). Else one part as llama.cpp stores it: dx
// rounded to float16, and sums_q81 = float16(dx sum q), Q8_1's s.
void quantize(const void* x, int x_bf16, int64_t tokens, int64_t k, int8_t* qx, int8_t* qfine, float* dx,
              float* sums, float* sums_q81) {
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
            if (qfine == nullptr) {
                const float stored = to_half_and_back(d);
                dx[t * blocks + b] = stored;
                sums[t * blocks + b] = stored * sum;
                sums_q81[t * blocks + b] = to_half_and_back(d * sum);
                continue;
            }
            __m512i flo = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_sub_ps(rlo, _mm512_cvtepi32_ps(qlo)), steps));
            __m512i fhi = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_sub_ps(rhi, _mm512_cvtepi32_ps(qhi)), steps));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(qfine + at), _mm512_cvtsepi32_epi8(flo));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(qfine + at + 16), _mm512_cvtsepi32_epi8(fhi));
            sum += static_cast<float>(_mm512_reduce_add_epi32(_mm512_add_epi32(flo, fhi))) / kFine;
            dx[t * blocks + b] = d;
            sums[t * blocks + b] = d * sum;
        }
    }
}

}  // namespace

extern "C" {

// quantize then multiply in one call, the quantised activations in per-thread scratch. kind: the bit
// count (4 or 8), plus BLOCKQ_ONE_PART for llama.cpp's activations, when the scales are followed by one
// uint16 per tile, nonzero where the tile's weights take Q8_1 (kernels.h).
void blockq_linear(int kind, const uint8_t* weights, const uint16_t* scales, int64_t n, int64_t k, const void* x,
                   int x_bf16, int64_t tokens, void* out, int out_bf16) {
    thread_local std::vector<int8_t> qx, qfine;
    thread_local std::vector<float> dx, sums, sums_q81;
    const bool one_part = (kind & BLOCKQ_ONE_PART) != 0;
    const int bits = kind & ~BLOCKQ_ONE_PART;
    qx.resize(tokens * k);
    qfine.resize(one_part ? 0 : tokens * k);
    dx.resize(tokens * k / kBlock);
    sums.resize(tokens * k / kBlock);
    sums_q81.resize(one_part ? tokens * k / kBlock : 0);
    quantize(x, x_bf16, tokens, k, qx.data(), one_part ? nullptr : qfine.data(), dx.data(), sums.data(),
             sums_q81.data());
    Activations a{qx.data(), qfine.data(), dx.data(), sums.data(), sums_q81.data(), nullptr};
    if (one_part) a.q81 = scales + (n / kTile) * (k / kBlock) * 2 * kTile;
    if (bits == 4) {
        if (one_part) gemm<4, 1>(weights, scales, n, k, a, tokens, out, out_bf16);
        else gemm<4, 2>(weights, scales, n, k, a, tokens, out, out_bf16);
    } else {
        if (one_part) gemm<8, 1>(weights, scales, n, k, a, tokens, out, out_bf16);
        else gemm<8, 2>(weights, scales, n, k, a, tokens, out, out_bf16);
    }
}

// Rows of the weight matrix, w = d * u + m per block, for the ids asked (an embedding lookup from a
// tied output projection): out [count, k], float32 or rounded to bfloat16 (nearest even, as torch).
// d * u is exact in float32 (d has 11 significant bits, u at most 8), so the one rounding is the sum's
// and the values equal torch's `d * u + m` whether or not the compiler fuses the two. Returns 0, or -1
// (nothing written) if an id is outside [0, n).
int blockq_rows(int bits, const uint8_t* weights, const uint16_t* scales, int64_t n, int64_t k, const int64_t* ids,
                 int64_t count, void* out, int out_bf16) {
    for (int64_t r = 0; r < count; ++r) {
        if (ids[r] < 0 || ids[r] >= n) return -1;
    }
    const int64_t blocks = k / kBlock;
    const int64_t tile_bytes = blocks * kBlock * bits / 8 * kTile;  // one tile's weights
    for (int64_t r = 0; r < count; ++r) {
        const int64_t id = ids[r];
        const int64_t tile = id / kTile, row = id % kTile;
        const uint8_t* w = weights + tile * tile_bytes;
        const uint16_t* sc = scales + tile * blocks * 2 * kTile;
        alignas(64) float values[kBlock];
        for (int64_t b = 0; b < blocks; ++b) {
            const float d = _cvtsh_ss(sc[(b * 2) * kTile + row]), m = _cvtsh_ss(sc[(b * 2 + 1) * kTile + row]);
            for (int c = 0; c < kBlock; ++c) {
                int u;
                if (bits == 8) {  // [block, group j, row, channel c], k = 32b + 4j + c
                    u = w[((b * 8 + c / 4) * kTile + row) * 4 + c % 4];
                } else {  // [block, pair j, row, c]: channel 8j + c low nibble, 8j + 4 + c high
                    const int j = c / 8, high = (c % 8) / 4;
                    const uint8_t byte = w[((b * 4 + j) * kTile + row) * 4 + c % 4];
                    u = high ? byte >> 4 : byte & 15;
                }
                values[c] = d * static_cast<float>(u) + m;
            }
            const int64_t at = r * k + b * kBlock;
            for (int half = 0; half < kBlock; half += 16) {
                const __m512 v = _mm512_load_ps(values + half);
                if (out_bf16) simd::store16(static_cast<uint16_t*>(out) + at + half, v);
                else simd::store16(static_cast<float*>(out) + at + half, v);
            }
        }
    }
    return 0;
}

}  // extern "C"

// Dense bfloat16 linear layers for few rows, on AVX512-BF16: y[T, N] = x[T, K] @ W[N, K]^T.
//
// At decode batch sizes a dense layer only reads its weights; torch's bfloat16 matmul reaches about a
// third of this CPU's memory bandwidth at one row (the 49,152 x 576 output projection of SmolLM2 took
// 8 ms). Here each output row is a dot product with VDPBF16PS (32 multiply-adds an instruction, float32
// accumulation), for up to 8 tokens per pass over the row. Products of two bfloat16 values are exact
// in float32, so only the order of the sums differs from torch's. Needs AVX512-BF16 at run time: the
// caller checks the CPU flag (native/__init__.py) before calling.

#include "kernels.h"
#include "pool.h"
#include "simd.h"

namespace {

constexpr int kMaxTokens = 8;

inline uint16_t round_bf16(float value) {
    uint32_t bits;
    __builtin_memcpy(&bits, &value, 4);
    bits += 0x7FFF + ((bits >> 16) & 1);
    return static_cast<uint16_t>(bits >> 16);
}

template <int Tokens>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void rows_pass(const uint16_t* weights, int64_t n, int64_t k,
                                                                        const uint16_t* x, void* out, int out_bf16,
                                                                        int64_t first, int64_t last) {
    for (int64_t row = first; row < last; ++row) {
        const uint16_t* w = weights + row * k;
        __m512 acc[Tokens];
        for (int t = 0; t < Tokens; ++t) acc[t] = _mm512_setzero_ps();
        for (int64_t i = 0; i < k; i += 32) {
            __m512bh wv = reinterpret_cast<__m512bh>(_mm512_loadu_si512(w + i));
            for (int t = 0; t < Tokens; ++t) {
                __m512bh xv = reinterpret_cast<__m512bh>(_mm512_loadu_si512(x + t * k + i));
                acc[t] = _mm512_dpbf16_ps(acc[t], wv, xv);
            }
        }
        for (int t = 0; t < Tokens; ++t) {
            const float value = _mm512_reduce_add_ps(acc[t]);
            if (out_bf16) {
                static_cast<uint16_t*>(out)[t * n + row] = round_bf16(value);
            } else {
                static_cast<float*>(out)[t * n + row] = value;
            }
        }
    }
}

}  // namespace

extern "C" {

// x [tokens, k] bfloat16 (k a multiple of 32), weights [n, k] bfloat16 -> out [tokens, n] in bfloat16
// (out_bf16) or float32.
void dense_bf16_linear(const uint16_t* weights, int64_t n, int64_t k, const uint16_t* x, int64_t tokens, void* out,
                       int out_bf16) {
    // Output rows split over the kernels' thread pool (pool.h), all tokens per share of the weights.
    const int64_t grain = n / (8 * pool::threads()) > 16 ? n / (8 * pool::threads()) : 16;
    pool::parallel_for(n, grain, [&](int64_t first, int64_t last) {
        for (int64_t t0 = 0; t0 < tokens; t0 += kMaxTokens) {
            const int64_t count = tokens - t0 < kMaxTokens ? tokens - t0 : kMaxTokens;
            const uint16_t* xs = x + t0 * k;
            void* o = out_bf16 ? static_cast<void*>(static_cast<uint16_t*>(out) + t0 * n)
                               : static_cast<void*>(static_cast<float*>(out) + t0 * n);
            switch (count) {
                case 1: rows_pass<1>(weights, n, k, xs, o, out_bf16, first, last); break;
                case 2: rows_pass<2>(weights, n, k, xs, o, out_bf16, first, last); break;
                case 3: rows_pass<3>(weights, n, k, xs, o, out_bf16, first, last); break;
                case 4: rows_pass<4>(weights, n, k, xs, o, out_bf16, first, last); break;
                case 5: rows_pass<5>(weights, n, k, xs, o, out_bf16, first, last); break;
                case 6: rows_pass<6>(weights, n, k, xs, o, out_bf16, first, last); break;
                case 7: rows_pass<7>(weights, n, k, xs, o, out_bf16, first, last); break;
                default: rows_pass<8>(weights, n, k, xs, o, out_bf16, first, last); break;
            }
        }
    });
}

}  // extern "C"

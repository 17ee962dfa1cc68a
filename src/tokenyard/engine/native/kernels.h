// The C ABI of the native kernels (one shared library; Python binds it in __init__.py).
#pragma once

#include <stdint.h>

extern "C" {
void native_set_threads(int threads);
int native_threads();
void blockq_linear(int bits, const uint8_t* weights, const uint16_t* scales, int64_t n, int64_t k, const void* x,
                   int x_bf16, int64_t tokens, void* out, int out_bf16);
void kquant_linear(const uint8_t* weights, const int64_t* tiles, int64_t n, int64_t k, const void* x, int x_bf16,
                   int64_t tokens, void* out, int out_bf16);
void paged_decode_attention(int bf16, const void* q, const void* k_cache, const void* v_cache, int64_t num_slots,
                            const int64_t* slots, int64_t width, const int64_t* lengths, int64_t batch, int64_t heads,
                            int64_t kv_heads, int64_t dim, float scale, void* out);
void dense_bf16_linear(const uint16_t* weights, int64_t n, int64_t k, const uint16_t* x, int64_t tokens, void* out,
                       int out_bf16);
void rms_norm(int bf16, const void* x, const void* weight, int64_t tokens, int64_t hidden, float eps, void* out);
void decode_layers(int bf16, const int64_t* layers, int64_t num_layers, const int64_t* shape, void* x, int64_t tokens,
                   const void* cos_sin, const int64_t* slot_mapping, const int64_t* slots, int64_t width,
                   const int64_t* lengths, float eps, float scale);
}

// Decode attention straight from the paged KV cache, for CPUs with AVX512.
//
// One query token per sequence attends to its own context, read through its slot table: no gathered
// copy of K/V (torch needed an index_select of every layer's context first) and no padding to the
// longest sequence. Per sequence and KV head, the query heads that share it (grouped-query attention)
// read each cached key and value row once. Scores, softmax and the weighted sum are float32 whatever
// the cache's dtype (bfloat16 or float32), like torch's CPU attention kernels.
//
// Plain C ABI (called through ctypes); sequences and KV heads are split over the thread pool (pool.h).

#include <math.h>

#include <vector>

#include "kernels.h"
#include "pool.h"
#include "simd.h"

namespace {

using simd::exp16;
using simd::load16;
using simd::store16;

// Sequence b's query heads that share KV head h against its context; scratch: the calling thread's.
template <typename T>
void attend_head(const T* q, const T* k_cache, const T* v_cache, int64_t num_slots, const int64_t* slots,
                 int64_t width, const int64_t* lengths, int64_t heads, int64_t kv_heads, int64_t dim, float scale,
                 T* out, int64_t b, int64_t h) {
    const int64_t group = heads / kv_heads, chunks = dim / 16;
    thread_local std::vector<float> scores, query, acc;
    const int64_t length = lengths[b];
    const int64_t* table = slots + b * width;
    scores.resize(group * length);
    query.resize(group * dim);
    acc.resize(group * dim);
    const T* keys = k_cache + h * num_slots * dim;
    const T* values = v_cache + h * num_slots * dim;
    for (int64_t g = 0; g < group; ++g) {  // the group's queries, scaled, in float32
        const T* qg = q + (b * heads + h * group + g) * dim;
        for (int64_t c = 0; c < chunks; ++c)
            store16(&query[g * dim + c * 16], _mm512_mul_ps(load16(qg + c * 16), _mm512_set1_ps(scale)));
    }
    for (int64_t l = 0; l < length; ++l) {
        const T* key = keys + table[l] * dim;
        for (int64_t g = 0; g < group; ++g) {
            __m512 dot = _mm512_setzero_ps();
            for (int64_t c = 0; c < chunks; ++c)
                dot = _mm512_fmadd_ps(load16(&query[g * dim + c * 16]), load16(key + c * 16), dot);
            scores[g * length + l] = _mm512_reduce_add_ps(dot);
        }
    }
    for (int64_t g = 0; g < group; ++g) {  // softmax over the context, 16 positions at a time
        float* s = &scores[g * length];
        __m512 top = _mm512_set1_ps(-INFINITY);
        int64_t l = 0;
        for (; l + 16 <= length; l += 16) top = _mm512_max_ps(top, _mm512_loadu_ps(s + l));
        float peak = _mm512_reduce_max_ps(top);
        for (; l < length; ++l) peak = s[l] > peak ? s[l] : peak;
        __m512 sum = _mm512_setzero_ps();
        for (l = 0; l + 16 <= length; l += 16) {
            __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(s + l), _mm512_set1_ps(peak)));
            _mm512_storeu_ps(s + l, e);
            sum = _mm512_add_ps(sum, e);
        }
        float total = _mm512_reduce_add_ps(sum);
        if (l < length) {
            __mmask16 tail = static_cast<__mmask16>((1u << (length - l)) - 1);
            __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, s + l), _mm512_set1_ps(peak)));
            _mm512_mask_storeu_ps(s + l, tail, e);
            total += _mm512_mask_reduce_add_ps(tail, e);
        }
        const float inverse = 1.0f / total;
        for (l = 0; l < length; ++l) s[l] *= inverse;
    }
    for (int64_t i = 0; i < group * dim; ++i) acc[i] = 0.0f;
    for (int64_t l = 0; l < length; ++l) {
        const T* value = values + table[l] * dim;
        for (int64_t c = 0; c < chunks; ++c) {
            __m512 v = load16(value + c * 16);
            for (int64_t g = 0; g < group; ++g) {
                float* a = &acc[g * dim + c * 16];
                _mm512_storeu_ps(a, _mm512_fmadd_ps(_mm512_set1_ps(scores[g * length + l]), v, _mm512_loadu_ps(a)));
            }
        }
    }
    for (int64_t g = 0; g < group; ++g) {
        T* o = out + (b * heads + h * group + g) * dim;
        for (int64_t c = 0; c < chunks; ++c) store16(o + c * 16, _mm512_loadu_ps(&acc[g * dim + c * 16]));
    }
}

// One task per (sequence, KV head), split over the kernels' thread pool.
template <typename T>
void attend(const T* q, const T* k_cache, const T* v_cache, int64_t num_slots, const int64_t* slots, int64_t width,
            const int64_t* lengths, int64_t batch, int64_t heads, int64_t kv_heads, int64_t dim, float scale, T* out) {
    pool::parallel_for(batch * kv_heads, 1, [&](int64_t first, int64_t last) {
        for (int64_t task = first; task < last; ++task)
            attend_head(q, k_cache, v_cache, num_slots, slots, width, lengths, heads, kv_heads, dim, scale, out,
                        task / kv_heads, task % kv_heads);
    });
}

}  // namespace

extern "C" {

// q, out [batch, heads, dim]; k_cache, v_cache [kv_heads, num_slots, dim] (one layer); slots [batch, width]
// cache slots oldest first, of which the first lengths[b] are sequence b's context. dim: a multiple of 16.
void paged_decode_attention(int bf16, const void* q, const void* k_cache, const void* v_cache, int64_t num_slots,
                            const int64_t* slots, int64_t width, const int64_t* lengths, int64_t batch, int64_t heads,
                            int64_t kv_heads, int64_t dim, float scale, void* out) {
    if (bf16) {
        attend(static_cast<const uint16_t*>(q), static_cast<const uint16_t*>(k_cache),
               static_cast<const uint16_t*>(v_cache), num_slots, slots, width, lengths, batch, heads, kv_heads, dim,
               scale, static_cast<uint16_t*>(out));
    } else {
        attend(static_cast<const float*>(q), static_cast<const float*>(k_cache), static_cast<const float*>(v_cache),
               num_slots, slots, width, lengths, batch, heads, kv_heads, dim, scale, static_cast<float*>(out));
    }
}

}  // extern "C"

// The decoder layers of a llama-family model for a decode-only step, in one call.
//
// At small batch a step is hundreds of small operations; run from Python each costs microseconds of
// dispatch, more than the work (docs/engine.md, "Native kernels"). This runs every layer's norm,
// Q/K/V projection, rotary embedding, cache write, attention, output projection, residual, MLP and
// residual for all tokens of the step, calling the other kernels here directly.
//
// Each intermediate is rounded to the activations' dtype where the Python model code rounds it (an
// op's output tensor), so the results match that code's up to the exp in SiLU. One query token per
// sequence, as the decode step has: token t writes its K/V to slot_mapping[t] and attends to the
// first lengths[t] slots of row t of `slots`.

#include <math.h>
#include <string.h>

#include <vector>

#include "kernels.h"
#include "simd.h"

namespace {

using simd::load16;
using simd::round16;
using simd::store16;

template <typename T>
constexpr int is_bf16() {
    return sizeof(T) == 2;
}

// kind (see NativeLinear): 16, dense bfloat16 weights, passed for bfloat16 models only; 256, K-quant
// blocks, with the tile table where the block kernel has its scales; 4 or 8, native blocks (plus
// BLOCKQ_ONE_PART for a GGUF file's own, which blockq_linear reads from the kind).
// The output in the activations' dtype (O = T), or float32 (O = float: the output projection's logits).
template <typename T, typename O>
void linear(const NativeLinear& l, const T* x, int64_t tokens, O* out) {
    if (l.kind == 256) {
        kquant_linear(l.weights, static_cast<const int64_t*>(l.scales), l.n, l.k, x, is_bf16<T>(), tokens, out,
                      is_bf16<O>());
    } else if (l.kind == 16) {
        dense_bf16_linear(reinterpret_cast<const uint16_t*>(l.weights), l.n, l.k, reinterpret_cast<const uint16_t*>(x),
                          tokens, out, is_bf16<O>());
    } else {
        blockq_linear(static_cast<int>(l.kind), l.weights, static_cast<const uint16_t*>(l.scales), l.n, l.k, x,
                      is_bf16<T>(), tokens, out, is_bf16<O>());
    }
    if (l.bias == nullptr) return;
    const T* bias = static_cast<const T*>(l.bias);
    for (int64_t t = 0; t < tokens; ++t)
        for (int64_t i = 0; i < l.n; i += 16)
            store16(out + t * l.n + i, _mm512_add_ps(load16(out + t * l.n + i), load16(bias + i)));
}

// x += y, rounded to the dtype (the residual connection).
template <typename T>
void add_into(T* x, const T* y, int64_t count) {
    for (int64_t i = 0; i < count; i += 16) store16(x + i, _mm512_add_ps(load16(x + i), load16(y + i)));
}

// Rotary embedding of one head (Hugging Face's rotate-half layout): out = x cos + rotate(x) sin,
// each product rounded to the dtype, then the sum. dim: a multiple of 32.
template <typename T>
void rotate(const T* x, const T* cos, const T* sin, int64_t dim, T* out) {
    const int64_t half = dim / 2;
    for (int64_t i = 0; i < dim; i += 16) {
        __m512 rotated = i < half ? _mm512_sub_ps(_mm512_setzero_ps(), load16(x + i + half)) : load16(x + i - half);
        __m512 a = round16(_mm512_mul_ps(load16(x + i), load16(cos + i)), x);
        __m512 b = round16(_mm512_mul_ps(rotated, load16(sin + i)), x);
        store16(out + i, _mm512_add_ps(a, b));
    }
}

// out = silu(gate) * up, rounded after the SiLU and after the product; gate_up: [tokens, 2 * size].
template <typename T>
void silu_mul(const T* gate_up, int64_t tokens, int64_t size, T* out) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t t = 0; t < tokens; ++t) {
        const T* gate = gate_up + t * 2 * size;
        const T* up = gate + size;
        for (int64_t i = 0; i < size; i += 16) {
            __m512 g = load16(gate + i);
            __m512 silu = round16(_mm512_div_ps(g, _mm512_add_ps(one, simd::exp16(_mm512_sub_ps(_mm512_setzero_ps(), g)))), gate);
            store16(out + t * size + i, _mm512_mul_ps(silu, load16(up + i)));
        }
    }
}

template <typename T>
void run_layer(const NativeLayer& layer, const NativeShape& s, T* x, int64_t tokens, const T* cos_sin,
               const int64_t* slot_mapping, const int64_t* slots, int64_t width, const int64_t* lengths, float eps,
               float scale) {
    thread_local std::vector<T> normed, qkv, queries, attended, projected, gate_up, activated;
    const int64_t heads = s.heads, kv_heads = s.kv_heads, dim = s.dim, row = (heads + 2 * kv_heads) * dim;
    normed.resize(tokens * s.hidden);
    qkv.resize(tokens * row);
    queries.resize(tokens * heads * dim);
    attended.resize(tokens * heads * dim);
    projected.resize(tokens * s.hidden);
    gate_up.resize(tokens * 2 * s.intermediate);
    activated.resize(tokens * s.intermediate);

    rms_norm(is_bf16<T>(), x, layer.input_norm, tokens, s.hidden, eps, normed.data());
    linear(layer.qkv, normed.data(), tokens, qkv.data());
    T* k_cache = static_cast<T*>(layer.k_cache);
    T* v_cache = static_cast<T*>(layer.v_cache);
    for (int64_t t = 0; t < tokens; ++t) {  // rotate Q and K; K and V go straight into their cache slot
        const T* cos = cos_sin + t * 2 * dim;
        const T* sin = cos + dim;
        const T* source = qkv.data() + t * row;
        for (int64_t h = 0; h < heads; ++h) rotate(source + h * dim, cos, sin, dim, queries.data() + (t * heads + h) * dim);
        for (int64_t h = 0; h < kv_heads; ++h) {
            const int64_t at = (h * s.num_slots + slot_mapping[t]) * dim;
            rotate(source + (heads + h) * dim, cos, sin, dim, k_cache + at);
            memcpy(v_cache + at, source + (heads + kv_heads + h) * dim, dim * sizeof(T));
        }
    }
    paged_decode_attention(is_bf16<T>(), queries.data(), k_cache, v_cache, s.num_slots, slots, width, lengths, tokens,
                           heads, kv_heads, dim, scale, attended.data());
    linear(layer.o, attended.data(), tokens, projected.data());
    add_into(x, projected.data(), tokens * s.hidden);

    rms_norm(is_bf16<T>(), x, layer.post_norm, tokens, s.hidden, eps, normed.data());
    linear(layer.gate_up, normed.data(), tokens, gate_up.data());
    silu_mul(gate_up.data(), tokens, s.intermediate, activated.data());
    linear(layer.down, activated.data(), tokens, projected.data());
    add_into(x, projected.data(), tokens * s.hidden);
}

// The rest of a decode step around the layers (decode_step): embeddings in, final norm and logits out.
template <typename T>
int step(const NativeLayer* layers, int64_t num_layers, const NativeShape& s, const NativeModel& m, const int64_t* ids,
         const int64_t* positions, const int64_t* tables, int64_t table_width, int64_t tokens, float eps, float scale,
         T* hidden, float* logits) {
    const int64_t bs = m.block_size, width = table_width * bs, dim = s.dim;
    const int row_bits = static_cast<int>(m.embedding_rows.kind & ~BLOCKQ_ONE_PART);
    if (m.embedding == nullptr && row_bits != 4 && row_bits != 8) return -1;
    for (int64_t t = 0; t < tokens; ++t) {  // everything a pointer will be computed from, before any write
        if (ids[t] < 0 || ids[t] >= m.vocab || positions[t] < 0 || positions[t] >= m.max_positions) return -1;
        if (positions[t] >= width) return -1;
        for (int64_t j = 0; j < table_width; ++j)
            if (tables[t * table_width + j] < 0 || tables[t * table_width + j] >= m.num_blocks) return -1;
    }
    thread_local std::vector<T> x, cos_sin;
    thread_local std::vector<int64_t> slot_mapping, slots, lengths;
    x.resize(tokens * s.hidden);
    cos_sin.resize(tokens * 2 * dim);
    slot_mapping.resize(tokens);
    slots.resize(tokens * width);
    lengths.resize(tokens);
    if (m.embedding != nullptr) {
        for (int64_t t = 0; t < tokens; ++t)
            memcpy(x.data() + t * s.hidden, static_cast<const T*>(m.embedding) + ids[t] * s.hidden, s.hidden * sizeof(T));
    } else {
        const NativeLinear& rows = m.embedding_rows;
        blockq_rows(row_bits, rows.weights, static_cast<const uint16_t*>(rows.scales), rows.n, rows.k, ids, tokens, x.data(),
                    is_bf16<T>());
    }
    for (int64_t t = 0; t < tokens; ++t) {
        memcpy(cos_sin.data() + t * 2 * dim, static_cast<const T*>(m.rope) + positions[t] * 2 * dim, 2 * dim * sizeof(T));
        const int64_t* table = tables + t * table_width;
        slot_mapping[t] = table[positions[t] / bs] * bs + positions[t] % bs;
        lengths[t] = positions[t] + 1;
        for (int64_t j = 0; j < width; ++j) slots[t * width + j] = table[j / bs] * bs + j % bs;
    }
    for (int64_t i = 0; i < num_layers; ++i)
        run_layer(layers[i], s, x.data(), tokens, cos_sin.data(), slot_mapping.data(), slots.data(), width,
                  lengths.data(), eps, scale);
    rms_norm(is_bf16<T>(), x.data(), m.final_norm, tokens, s.hidden, eps, hidden);
    const NativeLinear& head = m.head;
    if (head.weights == nullptr || logits == nullptr) return 0;
    // As the output projection's module: float32 straight when it is made for that (or the model is
    // float32), else in the activations' dtype and widened, which is exact.
    if (m.head_float != 0 || !is_bf16<T>()) {
        linear(head, hidden, tokens, logits);
        return 0;
    }
    thread_local std::vector<T> rounded;
    rounded.resize(tokens * head.n);
    linear(head, hidden, tokens, rounded.data());
    for (int64_t i = 0; i < tokens * head.n; i += 16) simd::store16(logits + i, load16(rounded.data() + i));
    return 0;
}

}  // namespace

extern "C" {

int64_t native_layer_size() { return sizeof(NativeLayer); }

int64_t native_model_size() { return sizeof(NativeModel); }

int64_t native_shape_size() { return sizeof(NativeShape); }

// x [tokens, hidden]: the embeddings in, the last layer's output out (in place). layers: num_layers
// structures (kernels.h); cos_sin [tokens, 2, dim]: each token's rotary cos and sin, in the activations'
// dtype.
void decode_layers(int bf16, const NativeLayer* layers, int64_t num_layers, const NativeShape* shape, void* x,
                   int64_t tokens, const void* cos_sin, const int64_t* slot_mapping, const int64_t* slots,
                   int64_t width, const int64_t* lengths, float eps, float scale) {
    const NativeShape& s = *shape;
    for (int64_t i = 0; i < num_layers; ++i) {
        const NativeLayer& layer = layers[i];
        if (bf16) {
            run_layer(layer, s, static_cast<uint16_t*>(x), tokens, static_cast<const uint16_t*>(cos_sin), slot_mapping,
                      slots, width, lengths, eps, scale);
        } else {
            run_layer(layer, s, static_cast<float*>(x), tokens, static_cast<const float*>(cos_sin), slot_mapping, slots,
                      width, lengths, eps, scale);
        }
    }
}

// A whole decode step from token ids to logits, so a step costs Python one call (docs/engine.md,
// "Per-step overhead"): the embedding of ids[t], the rotary rows of positions[t], the cache slots from
// each sequence's block table (tables [tokens, table_width], padded with any valid block), the layers,
// the final norm into hidden [tokens, hidden] (the activations' dtype) and, when the model has one
// here, the output projection into logits [tokens, vocab] (float32). Returns 0, or -1 before touching
// anything when an id, position or block is out of range.
int decode_step(int bf16, const NativeLayer* layers, int64_t num_layers, const NativeShape* shape,
                const NativeModel* model, const int64_t* ids, const int64_t* positions, const int64_t* tables,
                int64_t table_width, int64_t tokens, float eps, float scale, void* hidden, float* logits) {
    if (bf16)
        return step(layers, num_layers, *shape, *model, ids, positions, tables, table_width, tokens, eps, scale,
                    static_cast<uint16_t*>(hidden), logits);
    return step(layers, num_layers, *shape, *model, ids, positions, tables, table_width, tokens, eps, scale,
                static_cast<float*>(hidden), logits);
}

}  // extern "C"

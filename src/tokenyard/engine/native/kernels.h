// The C ABI of the native kernels (one shared library; Python binds it in abi.py).
#pragma once

#include <stdint.h>

extern "C" {

// What decode_layers reads for one linear layer. kind: 4 or 8, native blocks (blockq.cpp), plus
// BLOCKQ_ONE_PART for a GGUF file's blocks; 16, dense bfloat16 weights (dense.cpp); 256, K-quant
// blocks (kquant.cpp). abi.py mirrors these structures as
// ctypes.Structure and checks their sizes against native_*_size() when it binds the library.
// blockq_linear's kind flag: activations as llama.cpp quantises them for the weights' type (one int8
// part per block of 32, Q8_0 or Q8_1) instead of two int8 parts. The scales are then followed by one
// uint16 per output tile, nonzero where the tile's weights are Q4_1 or Q5_1 (Q8_1's rounded sum).
#define BLOCKQ_ONE_PART 64

struct NativeLinear {
    const uint8_t* weights;
    const void* scales;  // blocks: float16 d and m per tile and block; K-quant: the tile table; dense: null
    int64_t kind;
    int64_t n, k;        // output and input features
    const void* bias;    // [n] in the activations' dtype, or null
};

struct NativeLayer {
    const void* input_norm;
    const void* post_norm;
    NativeLinear qkv, o, gate_up, down;
    void* k_cache;  // [kv_heads, num_slots, dim] of this layer
    void* v_cache;
};

struct NativeShape {
    int64_t hidden, heads, kv_heads, dim, intermediate, num_slots;
};

// What decode_step reads beside the layers: where a token's embedding, rotary table, final norm and
// output projection are, and the paged cache's geometry.
struct NativeModel {
    const void* embedding;        // [vocab, hidden] in the activations' dtype, or null: rows from embedding_rows
    NativeLinear embedding_rows;  // a tied output projection's native blocks (kind 4 or 8, blockq_rows)
    int64_t vocab;
    const void* rope;             // [max_positions, 2, dim]: cos and sin per position, in the activations' dtype
    int64_t max_positions;
    const void* final_norm;       // [hidden]
    NativeLinear head;            // a quantised output projection without bias, or weights null: none here
    int64_t head_float;           // 1: the head writes float32 straight; 0: rounded to the activations' dtype first
    int64_t block_size, num_blocks;
};

// sizeof(NativeLayer) and sizeof(NativeShape): abi.py refuses a library whose structures differ from its own.
int64_t native_layer_size();
int64_t native_shape_size();
int64_t native_model_size();

void native_set_threads(int threads);
int native_threads();
void blockq_linear(int kind, const uint8_t* weights, const uint16_t* scales, int64_t n, int64_t k, const void* x,
                   int x_bf16, int64_t tokens, void* out, int out_bf16);
int blockq_rows(int bits, const uint8_t* weights, const uint16_t* scales, int64_t n, int64_t k, const int64_t* ids,
                int64_t count, void* out, int out_bf16);
void kquant_linear(const uint8_t* weights, const int64_t* tiles, int64_t n, int64_t k, const void* x, int x_bf16,
                   int64_t tokens, void* out, int out_bf16);
void paged_decode_attention(int bf16, const void* q, const void* k_cache, const void* v_cache, int64_t num_slots,
                            const int64_t* slots, int64_t width, const int64_t* lengths, int64_t batch, int64_t heads,
                            int64_t kv_heads, int64_t dim, float scale, void* out);
void dense_bf16_linear(const uint16_t* weights, int64_t n, int64_t k, const uint16_t* x, int64_t tokens, void* out,
                       int out_bf16);
void rows_argmax(const float* x, int64_t rows, int64_t cols, int64_t* out);
void rms_norm(int bf16, const void* x, const void* weight, int64_t tokens, int64_t hidden, float eps, void* out);
void decode_layers(int bf16, const NativeLayer* layers, int64_t num_layers, const NativeShape* shape, void* x,
                   int64_t tokens, const void* cos_sin, const int64_t* slot_mapping, const int64_t* slots,
                   int64_t width, const int64_t* lengths, float eps, float scale);
int decode_step(int bf16, const NativeLayer* layers, int64_t num_layers, const NativeShape* shape,
                const NativeModel* model, const int64_t* ids, const int64_t* positions, const int64_t* tables,
                int64_t table_width, int64_t tokens, float eps, float scale, void* hidden, float* logits);
}

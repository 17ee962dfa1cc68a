// The greedy token of each row of logits: the index of its largest value, as torch.argmax picks it
// (the first of equal maxima; the first NaN if a row has one).
//
// torch's argmax reduces a [64, 49152] float32 batch in ~2.2 ms on one thread, ~4 % of a 64-sequence
// decode step on a 2-core CPU; one vector pass for the maximum and a short scan for its first index
// take a fraction of that (docs/engine.md, "Per-step overhead"). Rows are split over the pool.

#include <math.h>

#include "kernels.h"
#include "pool.h"
#include "simd.h"

namespace {

int64_t first_nan(const float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i)
        if (isnan(x[i])) return i;
    return -1;
}

int64_t row_argmax(const float* x, int64_t n) {
    __m512 best = _mm512_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_loadu_ps(x + i);
        if (_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) != 0) return first_nan(x, n);
        best = _mm512_max_ps(best, v);
    }
    float top = _mm512_reduce_max_ps(best);
    for (; i < n; ++i) {
        if (isnan(x[i])) return first_nan(x, n);
        if (x[i] > top) top = x[i];
    }
    for (int64_t j = 0; j < n; ++j)
        if (x[j] == top) return j;
    return 0;  // not reached: some value equals the maximum
}

}  // namespace

extern "C" {

// x [rows, cols] float32, cols > 0 -> out [rows].
void rows_argmax(const float* x, int64_t rows, int64_t cols, int64_t* out) {
    pool::parallel_for(rows, 1, [&](int64_t first, int64_t last) {
        for (int64_t r = first; r < last; ++r) out[r] = row_argmax(x + r * cols, cols);
    });
}

}  // extern "C"

// A small persistent thread pool for the kernels: `parallel_for` splits a range over the caller and
// the pool's workers (native_set_threads; 1 thread, the default, runs everything on the caller).
//
// Why not OpenMP: its idle threads either spin (and take a shared 2-core machine's other core from the
// HTTP processes) or sleep and pay a wake-up per parallel region, which at decode sizes cost more than
// the second core gave (docs/engine.md). Here a worker spins for a short while after each region (the
// next op of a decode step follows within microseconds) and then sleeps; the caller never waits for a
// worker to wake: chunks are claimed one at a time from a shared counter, so whatever the caller reaches
// first it runs itself, and a late or descheduled worker only means less help.
#pragma once

#include <stdint.h>

#include <type_traits>

namespace pool {

using Task = void (*)(void* context, int64_t begin, int64_t end);

// Runs task(context, begin, end) over [0, count) in chunks of `grain`, on the caller and the workers;
// returns when every chunk is done. Nested or concurrent calls run serially on their caller.
void run(int64_t count, int64_t grain, Task task, void* context);

// The threads a region may use (the caller included).
int threads();

template <typename Body>
void parallel_for(int64_t count, int64_t grain, Body&& body) {
    using Plain = std::remove_reference_t<Body>;
    run(count, grain, [](void* context, int64_t begin, int64_t end) { (*static_cast<Plain*>(context))(begin, end); },
        const_cast<void*>(static_cast<const void*>(&body)));
}

}  // namespace pool

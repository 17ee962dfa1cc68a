// The kernels' thread pool (see pool.h for why it exists and how it behaves).
//
// One 64-bit word holds the current region: generation (16 bits), chunk count (24) and the next chunk
// to claim (24). A thread claims a chunk with one compare-and-swap on that word, so a claim can only
// succeed for the region the word names, and the region's task and context, written before the word
// was published, stay in place until every claimed chunk is done (the caller waits for that). Workers
// spin on the word for kSpinMicros after each region, then sleep on a condition variable; the caller
// wakes sleepers only when there are any.

#include "pool.h"

#include <immintrin.h>
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "kernels.h"

namespace {

constexpr int64_t kSpinMicros = 100;
constexpr uint64_t kField = (1ull << 24) - 1;

uint64_t pack(uint64_t generation, uint64_t chunks, uint64_t next) {
    return (generation & 0xFFFF) << 48 | (chunks & kField) << 24 | (next & kField);
}
uint64_t generation_of(uint64_t word) { return word >> 48; }
uint64_t chunks_of(uint64_t word) { return (word >> 24) & kField; }
uint64_t next_of(uint64_t word) { return word & kField; }

// A child forked from a process with workers has none of their threads: it runs every region serially
// and never waits on (or joins) the threads it was copied with.
std::atomic<bool> forked{false};

class Pool {
   public:
    Pool() { pthread_atfork(nullptr, nullptr, [] { forked.store(true); }); }
    ~Pool() { resize(1); }

    int threads() const { return static_cast<int>(workers_.size()) + 1; }

    void resize(int threads) {
        if (forked.load()) {
            new std::vector<std::thread>(std::move(workers_));  // leaked: their threads are not in this process
            workers_.clear();
            return;
        }
        std::lock_guard<std::mutex> running(run_mutex_);
        if (threads < 1) threads = 1;
        if (threads == this->threads()) return;
        {
            std::lock_guard<std::mutex> lock(sleep_mutex_);
            stop_.store(true);
        }
        wake_.notify_all();
        for (std::thread& worker : workers_) worker.join();
        workers_.clear();
        stop_.store(false);
        for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { work(); });
    }

    void run(int64_t count, int64_t grain, pool::Task task, void* context) {
        if (grain < 1) grain = 1;
        const int64_t chunks = (count + grain - 1) / grain;
        if (chunks <= 1 || workers_.empty() || forked.load(std::memory_order_relaxed)) {
            if (count > 0) task(context, 0, count);
            return;
        }
        std::unique_lock<std::mutex> running(run_mutex_, std::try_to_lock);
        if (chunks <= 1 || workers_.empty() || !running.owns_lock() || chunks > static_cast<int64_t>(kField)) {
            if (count > 0) task(context, 0, count);  // one chunk, one thread, or nested/concurrent: serial
            return;
        }
        task_ = task;
        context_ = context;
        count_ = count;
        grain_ = grain;
        done_.store(0, std::memory_order_relaxed);
        generation_ = (generation_ + 1) & 0xFFFF;
        word_.store(pack(generation_, chunks, 0), std::memory_order_seq_cst);
        if (sleeping_.load(std::memory_order_seq_cst) > 0) {
            std::lock_guard<std::mutex> lock(sleep_mutex_);
            wake_.notify_all();
        }
        claim(generation_);
        while (done_.load(std::memory_order_acquire) < chunks) _mm_pause();
    }

   private:
    // Run chunks of region `generation` until none is left to claim.
    void claim(uint64_t generation) {
        uint64_t word = word_.load(std::memory_order_acquire);
        while (generation_of(word) == generation && next_of(word) < chunks_of(word)) {
            if (!word_.compare_exchange_weak(word, word + 1, std::memory_order_acq_rel)) continue;
            const int64_t begin = static_cast<int64_t>(next_of(word)) * grain_;
            const int64_t end = begin + grain_ < count_ ? begin + grain_ : count_;
            task_(context_, begin, end);
            done_.fetch_add(1, std::memory_order_release);
            word = word_.load(std::memory_order_acquire);
        }
    }

    void work() {
        uint64_t seen = generation_of(word_.load());
        while (!stop_.load()) {
            const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinMicros);
            uint64_t word = word_.load(std::memory_order_acquire);
            for (int spins = 0; generation_of(word) == seen && !stop_.load(std::memory_order_relaxed); ++spins) {
                _mm_pause();
                if ((spins & 63) == 63 && std::chrono::steady_clock::now() > deadline) {
                    std::unique_lock<std::mutex> lock(sleep_mutex_);
                    sleeping_.fetch_add(1, std::memory_order_seq_cst);
                    wake_.wait(lock, [&] { return generation_of(word_.load(std::memory_order_seq_cst)) != seen || stop_.load(); });
                    sleeping_.fetch_sub(1, std::memory_order_seq_cst);
                }
                word = word_.load(std::memory_order_acquire);
            }
            seen = generation_of(word);
            claim(seen);
        }
    }

    std::vector<std::thread> workers_;
    std::mutex run_mutex_;  // one region at a time; a second caller runs its region serially
    std::atomic<uint64_t> word_{0};
    uint64_t generation_ = 0;
    pool::Task task_ = nullptr;
    void* context_ = nullptr;
    int64_t count_ = 0, grain_ = 1;
    std::atomic<int64_t> done_{0};
    std::atomic<bool> stop_{false};
    std::atomic<int> sleeping_{0};
    std::mutex sleep_mutex_;
    std::condition_variable wake_;
};

Pool& instance() {
    static Pool pool;
    return pool;
}

}  // namespace

namespace pool {

void run(int64_t count, int64_t grain, Task task, void* context) { instance().run(count, grain, task, context); }

int threads() { return instance().threads(); }

}  // namespace pool

extern "C" {

void native_set_threads(int threads) { instance().resize(threads); }

int native_threads() { return instance().threads(); }

}  // extern "C"

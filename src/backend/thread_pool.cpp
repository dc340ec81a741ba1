#include "backend/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>

namespace seekserve {

namespace {

int64_t spin_us_from_environment() {
  const char* value = std::getenv("SEEKSERVE_POOL_SPIN_US");
  return value ? std::max<int64_t>(0, std::atoll(value)) : 300;
}

}  // namespace

ThreadPool::ThreadPool(int n_threads) : ThreadPool(n_threads, spin_us_from_environment()) {}

ThreadPool::ThreadPool(int n_threads, int64_t spin_us) : spin_us_(spin_us) {
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_.store(true);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::drain() {
  while (true) {
    const int64_t task = next_.fetch_add(1, std::memory_order_relaxed);
    if (task >= n_tasks_) return;
    (*fn_)(task);
    done_.fetch_add(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::worker_loop() {
  using Clock = std::chrono::steady_clock;
  uint64_t seen = 0;
  while (true) {
    // Spin until a new run() or the spin time is up (checking the clock every 64 rounds; a yield
    // a round lets another runnable thread of the machine have the core).
    const Clock::time_point give_up = Clock::now() + std::chrono::microseconds(spin_us_);
    for (int round = 1; spin_us_ > 0; ++round) {
      if (generation_.load(std::memory_order_acquire) != seen || stopping_.load(std::memory_order_acquire)) break;
      std::this_thread::yield();
      if (round % 64 == 0 && Clock::now() >= give_up) break;
    }
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_.load() || generation_.load() != seen; });
      if (stopping_.load()) return;
      seen = generation_.load();
      active_.fetch_add(1, std::memory_order_acq_rel);
    }
    drain();
    active_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::run(int64_t n_tasks, const std::function<void(int64_t task)>& fn) {
  if (n_tasks <= 0) return;
  if (workers_.empty() || n_tasks == 1) {
    for (int64_t t = 0; t < n_tasks; ++t) fn(t);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    fn_ = &fn;
    n_tasks_ = n_tasks;
    next_.store(0, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  wake_.notify_all();
  drain();
  // Wait for every task, and for every worker to leave drain(), so none can pick up a task of
  // the next run() with this run's state.
  while (done_.load(std::memory_order_acquire) < n_tasks || active_.load(std::memory_order_acquire) > 0)
    std::this_thread::yield();
}

}  // namespace seekserve

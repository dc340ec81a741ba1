// A persistent pool of worker threads for data-parallel kernels: run(n, fn) calls fn(0..n-1)
// spread over the workers and the calling thread, and returns when all are done. Between calls a
// worker spins for a while (SEEKSERVE_POOL_SPIN_US microseconds, default 300; 0: never) before it
// sleeps: a decode step calls run() every few tens of microseconds, and waking a sleeping thread
// costs about as much. Not reentrant: one run() at a time (the engine thread owns the backend).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace seekserve {

class ThreadPool {
 public:
  // n_threads counts the caller: 1 means no workers.
  explicit ThreadPool(int n_threads);
  ThreadPool(int n_threads, int64_t spin_us);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int n_threads() const { return static_cast<int>(workers_.size()) + 1; }
  void run(int64_t n_tasks, const std::function<void(int64_t task)>& fn);

 private:
  void worker_loop();
  void drain();

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  const int64_t spin_us_;
  std::atomic<uint64_t> generation_{0};  // changed under mutex_, read by spinning workers without it
  std::atomic<bool> stopping_{false};
  const std::function<void(int64_t)>* fn_ = nullptr;
  int64_t n_tasks_ = 0;
  std::atomic<int64_t> next_{0};
  std::atomic<int64_t> done_{0};
  std::atomic<int> active_{0};  // workers inside drain(); run() returns only when it is 0
};

}  // namespace seekserve

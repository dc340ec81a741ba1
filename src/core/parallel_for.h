// f(i) for i < n spread over the hardware threads, for one-off bulk work outside the step loop
// (generating dummy weights, quantizing weights at load): each call starts and joins its threads.
// Runs inline when there are fewer than 2 * min_per_thread items.
#pragma once

#include <algorithm>
#include <cstddef>
#include <thread>
#include <vector>

namespace seekserve {

template <typename F>
void parallel_for_index(size_t n, F&& f, size_t min_per_thread = size_t{1} << 20) {
  const size_t threads = std::max<size_t>(1, std::min<size_t>(std::thread::hardware_concurrency(), n / std::max<size_t>(min_per_thread, 1)));
  if (threads <= 1) {
    for (size_t i = 0; i < n; ++i) f(i);
    return;
  }
  std::vector<std::thread> pool;
  for (size_t t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      for (size_t i = n * t / threads; i < n * (t + 1) / threads; ++i) f(i);
    });
  for (auto& th : pool) th.join();
}

}  // namespace seekserve

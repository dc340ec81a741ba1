// Compile-time token counts for the CPU micro-kernels: each kernel is instantiated for every
// count up to its maximum, so a call pays for exactly the tokens present (a decode step must
// not pay for padding).
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

namespace seekserve {

// Calls f(std::integral_constant<int, T>) with T = min(max(tokens, 1), kMax).
template <int kMax, int T = 1, typename F>
void for_token_count(int64_t tokens, F&& f) {
  if constexpr (T == kMax) {
    f(std::integral_constant<int, T>{});
  } else {
    if (tokens <= T) return f(std::integral_constant<int, T>{});
    for_token_count<kMax, T + 1>(tokens, std::forward<F>(f));
  }
}

}  // namespace seekserve

#include "safetensors_target.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <vector>

#include "loader/safetensors.h"

namespace seekserve {

void fuzz_safetensors_one_input(const uint8_t* data, size_t size) {
  auto header = parse_safetensors(std::span<const uint8_t>(data, size), "fuzz");
  if (!header.ok()) {
    if (header.status().message().empty()) std::abort();  // every refusal must explain itself
    return;
  }
  const uint64_t data_size = size - header->data_offset;
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (const auto& [name, e] : header->tensors) {
    if (e.begin + e.nbytes > data_size || e.begin + e.nbytes < e.begin) std::abort();
    if (static_cast<uint64_t>(e.numel()) * static_cast<uint64_t>(dtype_size(e.dtype)) != e.nbytes) std::abort();
    if (e.nbytes > 0) spans.emplace_back(e.begin, e.begin + e.nbytes);
    // Touch the first and last byte: must be readable.
    if (e.nbytes > 0) {
      volatile uint8_t sink = data[header->data_offset + e.begin] ^ data[header->data_offset + e.begin + e.nbytes - 1];
      (void)sink;
    }
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i].first < spans[i - 1].second) std::abort();
}

}  // namespace seekserve

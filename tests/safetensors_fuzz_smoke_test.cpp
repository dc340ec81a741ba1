// Runs the fuzz target over deterministic mutations of real headers in every ctest run, so the
// parser's bounds checks are exercised even where libFuzzer (clang) is not built.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <random>

#include "safetensors_target.h"
#include "test_support.h"

namespace seekserve {
namespace {

std::vector<uint8_t> read_prefix(const std::string& path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() > max_bytes) bytes.resize(max_bytes);
  return bytes;
}

TEST(SafetensorsFuzzSmokeTest, MutatedHeadersNeverCrash) {
  // Seed: a real file's header plus the start of its data (cut files are valid test input too).
  const std::vector<uint8_t> seed = read_prefix(testing::model_dir("random-qwen2") + "/model.safetensors", 6000);
  ASSERT_GT(seed.size(), 1000u);
  std::mt19937_64 rng(20261129);
  const uint8_t interesting[] = {0, 1, '"', ',', '[', ']', '{', '}', '-', '9', 0x7f, 0xff};
  for (int iteration = 0; iteration < 20000; ++iteration) {
    std::vector<uint8_t> input = seed;
    const int edits = 1 + static_cast<int>(rng() % 8);
    for (int e = 0; e < edits; ++e) {
      const size_t pos = rng() % input.size();
      switch (rng() % 5) {
        case 0: input[pos] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;
        case 1: input[pos] = interesting[rng() % sizeof interesting]; break;
        case 2: input.resize(pos + 1); break;
        case 3: input.insert(input.begin() + static_cast<long>(pos), interesting[rng() % sizeof interesting]); break;
        case 4: if (pos < 8) input[pos] = static_cast<uint8_t>(rng()); break;  // the length prefix
      }
      if (input.empty()) input.push_back(0);
    }
    fuzz_safetensors_one_input(input.data(), input.size());
  }
  SUCCEED();
}

}  // namespace
}  // namespace seekserve

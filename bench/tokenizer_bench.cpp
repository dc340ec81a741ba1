// Tokenizer speed: encoding ../fixtures/text/eval.txt line by line on one thread (the way the
// Rust `tokenizers` reference was timed), and loading tokenizer.json.
#include <benchmark/benchmark.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace {

std::string g_tokenizers_dir = SEEKSERVE_TOKENIZERS_DIR;
std::string g_text_path = SEEKSERVE_SOURCE_DIR "/tests/fixtures/text/eval.txt";

std::vector<std::string> eval_lines() {
  std::ifstream in(g_text_path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

void BM_EncodeEvalLines(benchmark::State& state, const std::string& name) {
  auto tokenizer = seekserve::Tokenizer::load(g_tokenizers_dir + "/" + name);
  if (!tokenizer.ok()) {
    state.SkipWithError(tokenizer.status().message().c_str());
    return;
  }
  const std::vector<std::string> lines = eval_lines();
  int64_t bytes = 0, tokens = 0;
  for (auto _ : state) {
    for (const std::string& line : lines) {
      auto ids = (*tokenizer)->encode(line, false);
      tokens += static_cast<int64_t>(ids.size());
      benchmark::DoNotOptimize(ids.data());
      bytes += static_cast<int64_t>(line.size());
    }
  }
  state.SetBytesProcessed(bytes);
  state.counters["tokens_per_s"] = benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsRate);
}
BENCHMARK_CAPTURE(BM_EncodeEvalLines, deepseek_v3, std::string("deepseek_v3"))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_EncodeEvalLines, qwen3, std::string("qwen3"))->Unit(benchmark::kMillisecond);

void BM_LoadTokenizer(benchmark::State& state, const std::string& name) {
  for (auto _ : state) {
    auto tokenizer = seekserve::Tokenizer::load(g_tokenizers_dir + "/" + name);
    if (!tokenizer.ok()) {
      state.SkipWithError(tokenizer.status().message().c_str());
      return;
    }
    benchmark::DoNotOptimize(tokenizer->get());
  }
}
BENCHMARK_CAPTURE(BM_LoadTokenizer, deepseek_v3, std::string("deepseek_v3"))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_LoadTokenizer, qwen3, std::string("qwen3"))->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();

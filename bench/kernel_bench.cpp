// CPU kernel throughput: matmuls of R1-Distill-Qwen-1.5B shapes (hidden 1536, intermediate
// 8960) for decode (1 token: weight-streaming GB/s) and prefill (many tokens: GFLOP/s), per
// weight format, plus the attention of one decode step over a long context.
//
//   build/bench/kernel_bench --benchmark_filter=Matmul
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "backend/cpu_backend.h"
#include "model/weight.h"

namespace seekserve {
namespace {

Weight make_weight(WeightFormat format, int64_t rows, int64_t cols) {
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 0.02f);
  std::vector<float> values(static_cast<size_t>(rows * cols));
  for (float& v : values) v = dist(rng);
  Weight w = weight_from_f32(std::move(values), rows, cols);
  if (format == WeightFormat::kBF16) return weight_to_bf16(w);
  if (format == WeightFormat::kI8Row) return weight_to_i8(w);
  return w;
}

CpuBackend& backend(int threads) {
  static CpuBackend one(1), two(2);
  return threads == 1 ? one : two;
}

// Args: rows, cols, tokens, threads.
void run_matmul(benchmark::State& state, WeightFormat format) {
  const int64_t rows = state.range(0), cols = state.range(1), tokens = state.range(2);
  const Weight w = make_weight(format, rows, cols);
  std::vector<float> x(static_cast<size_t>(tokens * cols), 0.5f), y(static_cast<size_t>(tokens * rows));
  CpuBackend& cpu = backend(static_cast<int>(state.range(3)));
  for (auto _ : state) {
    cpu.matmul(w, x.data(), cols, tokens, y.data(), rows);
    benchmark::DoNotOptimize(y.data());
  }
  const double iterations = static_cast<double>(state.iterations());
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(w.bytes()) * iterations / 1e9, benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * static_cast<double>(rows * cols * tokens) * iterations / 1e9, benchmark::Counter::kIsRate);
}

void BM_MatmulBf16(benchmark::State& state) { run_matmul(state, WeightFormat::kBF16); }
void BM_MatmulInt8(benchmark::State& state) { run_matmul(state, WeightFormat::kI8Row); }

void matmul_shapes(benchmark::internal::Benchmark* b) {
  for (int threads : {1, 2})
    for (int64_t tokens : {1, 8, 64, 512}) {
      b->Args({1536, 1536, tokens, threads});  // q/o projections
      b->Args({8960, 1536, tokens, threads});  // gate/up
      b->Args({1536, 8960, tokens, threads});  // down
    }
  b->ArgNames({"rows", "cols", "tokens", "threads"})->UseRealTime()->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_MatmulBf16)->Apply(matmul_shapes);
BENCHMARK(BM_MatmulInt8)->Apply(matmul_shapes);

// One decode query per head over `context` cached positions (12 heads, 2 KV heads, head_dim 128).
void BM_GqaDecodeAttention(benchmark::State& state) {
  const int64_t context = state.range(0), n_heads = 12, n_kv = 2, head_dim = 128, block = 16;
  std::vector<float> q(static_cast<size_t>(n_heads * head_dim), 0.1f), out(q.size());
  std::vector<float> k(static_cast<size_t>(context * n_kv * head_dim), 0.01f), v(k.size(), 0.02f);
  std::vector<int32_t> table(static_cast<size_t>((context + block - 1) / block));
  for (size_t i = 0; i < table.size(); ++i) table[i] = static_cast<int32_t>(i);
  const int32_t position = static_cast<int32_t>(context - 1);
  GqaAttentionArgs args{q.data(), n_heads * head_dim, k.data(), v.data(), table.data(), block, &position, 1, n_heads,
                        n_kv, head_dim, 0.088f, out.data()};
  for (auto _ : state) {
    backend(2).gqa_attention(args);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["GB/s"] =
      benchmark::Counter(static_cast<double>(k.size() + v.size()) * 4.0 * static_cast<double>(state.iterations()) / 1e9,
                         benchmark::Counter::kIsRate);
}
BENCHMARK(BM_GqaDecodeAttention)->Arg(1024)->Arg(8192)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace seekserve

BENCHMARK_MAIN();

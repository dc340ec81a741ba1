// CPU kernel throughput: matmuls of R1-Distill-Qwen-1.5B shapes (hidden 1536, intermediate
// 8960) for decode (1 token: weight-streaming GB/s) and prefill (many tokens: GFLOP/s), per
// weight format, plus the attention of one decode step over a long context.
//
//   build/bench/kernel_bench --benchmark_filter=Matmul
#include <benchmark/benchmark.h>

#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "backend/cpu_backend.h"
#include "backend/stream_read.h"
#include "backend/thread_pool.h"
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

// Decode from memory, not cache: one token against a ring of copies of the matrix covering
// ~512 MB (a model's worth), so every call streams its weights from DRAM as in a real step.
// Args: rows, cols, threads. Compare its GB/s with BM_StreamRead in the same run.
void run_matmul_from_memory(benchmark::State& state, WeightFormat format) {
  const int64_t rows = state.range(0), cols = state.range(1);
  const Weight first = make_weight(format, rows, cols);
  const auto bytes = static_cast<size_t>(rows * cols) * (format == WeightFormat::kBF16 ? 2 : 1);
  std::vector<Weight> ring;  // copies of the elements; the per-row scales (int8) stay shared
  for (size_t total = 0; total < (size_t{512} << 20); total += bytes) {
    Weight copy = first;
    auto buffer = std::shared_ptr<uint8_t[]>(new uint8_t[bytes]);
    std::memcpy(buffer.get(), first.data, bytes);
    copy.data = buffer.get();
    copy.storage = buffer;
    ring.push_back(copy);
  }
  std::vector<float> x(static_cast<size_t>(cols), 0.5f), y(static_cast<size_t>(rows));
  CpuBackend& cpu = backend(static_cast<int>(state.range(2)));
  size_t next = 0;
  for (auto _ : state) {
    cpu.matmul(ring[next], x.data(), cols, 1, y.data(), rows);
    next = (next + 1) % ring.size();
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GB/s"] =
      benchmark::Counter(static_cast<double>(bytes) * static_cast<double>(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

// The read bandwidth the matmuls are judged against: `threads` threads summing a 512 MB buffer.
void BM_StreamRead(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  std::vector<float> buffer((size_t{512} << 20) / sizeof(float), 1.0f);
  static ThreadPool one(1), two(2);
  ThreadPool& pool = threads == 1 ? one : two;
  std::vector<float> sums(static_cast<size_t>(threads));
  const size_t per = buffer.size() / static_cast<size_t>(threads);
  for (auto _ : state) {
    pool.run(threads, [&](int64_t t) {  // one task per thread
      sums[static_cast<size_t>(t)] = stream_sum_avx512(buffer.data() + per * static_cast<size_t>(t), per);
    });
    benchmark::DoNotOptimize(sums.data());
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(buffer.size() * 4) * static_cast<double>(state.iterations()) / 1e9,
                                              benchmark::Counter::kIsRate);
}
BENCHMARK(BM_StreamRead)->Arg(1)->Arg(2)->ArgNames({"threads"})->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_MatmulInt8FromMemory(benchmark::State& state) { run_matmul_from_memory(state, WeightFormat::kI8Row); }
void BM_MatmulBf16FromMemory(benchmark::State& state) { run_matmul_from_memory(state, WeightFormat::kBF16); }
void from_memory_shapes(benchmark::internal::Benchmark* b) {
  for (int threads : {1, 2}) {
    b->Args({8960, 1536, threads});  // gate/up rows of R1-Distill-Qwen-1.5B
    b->Args({1536, 8960, threads});  // down
  }
  b->ArgNames({"rows", "cols", "threads"})->UseRealTime()->Unit(benchmark::kMicrosecond);
}
BENCHMARK(BM_MatmulInt8FromMemory)->Apply(from_memory_shapes);
BENCHMARK(BM_MatmulBf16FromMemory)->Apply(from_memory_shapes);

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

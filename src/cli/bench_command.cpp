// seekserve bench: prefill and decode speed of one model on this machine, next to the memory
// bandwidth measured in the same run, so decode can be judged as a share of what the memory
// delivers (the bytes a decode step must read: every weight but the embedding table, and for MoE
// models only the experts the step selected).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "backend/cpu_backend.h"
#include "backend/stream_read.h"
#include "cli/commands.h"
#include "engine/sampler.h"
#include "models/model_loader.h"
#ifdef SEEKSERVE_HAVE_CUDA
#include "cuda/cuda_check.h"
#include "cuda/deepseek_kernels.h"
#include "cuda/fp8_kernels.h"
#include "cuda/device_ceilings.h"
#include "cuda/kernel_bench.h"
#endif

namespace seekserve {

namespace {

using Clock = std::chrono::steady_clock;

struct BenchFlags {
  std::string model;
  bool dummy_weights = false;
  std::string dtype = "bf16";
  int threads = 0;
  int64_t prompt_tokens = 512;
  int64_t gen_tokens = 32;
  int64_t batch = 1;
  std::string device = "cpu";
  int64_t num_layers = 0;
  bool json = false;
  std::string kernel;     // time one kernel alone instead of the model: "mla-decode"
  int64_t context = 8192;  // --kernel mla-decode: cached positions per sequence
  int64_t heads = 0;       // --kernel mla-decode: query heads on this GPU (0: the config's)
};

// Read bandwidth in GB/s with `threads` threads over a buffer far larger than the caches:
// the median of several passes (the machine is shared, single passes vary).
double measure_bandwidth(int threads, bool avx512) {
  const size_t bytes = size_t{1} << 30;
  std::vector<float> buffer(bytes / sizeof(float), 1.0f);  // touched: pages are resident
  std::vector<double> rates;
  volatile double sink = 0;
  for (int pass = 0; pass < 7; ++pass) {
    const auto t0 = Clock::now();
    std::vector<std::thread> pool;
    std::vector<double> partial(static_cast<size_t>(threads));
    const size_t per = buffer.size() / static_cast<size_t>(threads);
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        const float* start = buffer.data() + per * static_cast<size_t>(t);
        partial[static_cast<size_t>(t)] = avx512 ? stream_sum_avx512(start, per) : stream_sum_avx2(start, per);
      });
    for (auto& th : pool) th.join();
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    for (double p : partial) sink = sink + p;
    rates.push_back(static_cast<double>(bytes) / seconds / 1e9);
  }
  std::sort(rates.begin(), rates.end());
  return rates[rates.size() / 2];
}

// --kernel mla-decode: the MLA decode attention alone at the config's head and latent widths,
// batch x context cached positions, against the copy bandwidth measured in the same run (the
// bytes it must read: every sequence's latent rows once).
int run_kernel_bench(const BenchFlags& f) {
  if (f.kernel != "mla-decode") return report_error(invalid_argument("--kernel: unknown kernel '" + f.kernel + "' (known: mla-decode)"));
#ifdef SEEKSERVE_HAVE_CUDA
  if (f.device != "cuda" || !cuda::device_present()) return report_error(unimplemented("--kernel mla-decode runs on --device cuda (a GPU must be present)"));
  auto config = load_config(f.model);
  if (!config.ok()) return report_error(config.status());
  cuda::MlaDecodeShape shape;
  shape.n_heads = f.heads > 0 ? f.heads : config->require_int("num_attention_heads");
  shape.kv_rank = config->require_int("kv_lora_rank");
  shape.rope_dim = config->require_int("qk_rope_head_dim");
  shape.nope_dim = config->require_int("qk_nope_head_dim");
  if (!config->status().ok()) return report_error(config->status());
  shape.batch = f.batch;
  shape.context = f.context;
  auto timing = cuda::time_mla_decode(shape);
  if (!timing.ok()) return report_error(timing.status());
  const cuda::DeviceCeilings ceilings = cuda::measure_device_ceilings();
  const double read_GBps = timing->latent_bytes / (timing->ms_median * 1e-3) / 1e9;
  // q.k over the latent and rotary parts and p.v over the latent, every head and cached position:
  // with V3's 128 heads a call is as much tensor-core work as memory traffic (see PERF).
  const double flops = 2.0 * static_cast<double>(shape.batch * shape.context * shape.n_heads * (2 * shape.kv_rank + shape.rope_dim));
  const double tflops = flops / (timing->ms_median * 1e-3) / 1e12;
  nlohmann::json out = {{"kernel", f.kernel},
                        {"mla_kernel", cuda::mla_kernel_name(cuda::default_mla_kernel())},
                        {"model", f.model},
                        {"isa", ceilings.name},
                        {"batch", shape.batch},
                        {"context", shape.context},
                        {"heads", shape.n_heads},
                        {"kv_rank", shape.kv_rank},
                        {"rope_dim", shape.rope_dim},
                        {"block_size", shape.block_size},
                        {"splits", timing->splits},
                        {"ms_median", timing->ms_median},
                        {"latent_bytes", timing->latent_bytes},
                        {"read_GBps", read_GBps},
                        {"measured_bandwidth_GBps", ceilings.copy_GBps},
                        {"bandwidth_share", read_GBps / ceilings.copy_GBps},
                        {"attention_TFLOPs", tflops},
                        {"measured_bf16_gemm_TFLOPs", ceilings.bf16_tflops}};
  if (f.json) {
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf("MLA decode, %lld heads, latent %lld + %lld, batch %lld x %lld positions: %.3f ms (median), %.1f GB/s of latent rows = %.0f%% of the %.0f GB/s copy bandwidth, %.1f TFLOP/s\n",
                static_cast<long long>(shape.n_heads), static_cast<long long>(shape.kv_rank), static_cast<long long>(shape.rope_dim),
                static_cast<long long>(shape.batch), static_cast<long long>(shape.context), timing->ms_median, read_GBps,
                100.0 * read_GBps / ceilings.copy_GBps, ceilings.copy_GBps, tflops);
  }
  return 0;
#else
  return report_error(unimplemented("--kernel needs a build with CUDA"));
#endif
}

int run_bench(const BenchFlags& f) {
  if (!f.kernel.empty()) return run_kernel_bench(f);
  if (f.prompt_tokens < 1 || f.gen_tokens < 1 || f.batch < 1) return report_error(invalid_argument("--prompt-tokens, --gen-tokens and --batch must be positive"));
  std::shared_ptr<CpuBackend> backend;
  const auto load_start = Clock::now();
  // Phases on stderr as they end, so a run cut short still says where its time went.
  const auto progress = [&](const char* phase) {
    std::fprintf(stderr, "bench: %s at %.1f s\n", phase, std::chrono::duration<double>(Clock::now() - load_start).count());
  };
  auto loaded = load_model_for_cli(f.model, f.dtype, f.dummy_weights, f.threads, &backend, f.device, f.num_layers);
  if (!loaded.ok()) return report_error(loaded.status());
  CausalLM& model = **loaded;
  const double load_s = std::chrono::duration<double>(Clock::now() - load_start).count();
  progress("loaded");
  const ModelInfo& info = model.info();
  if (f.prompt_tokens + f.gen_tokens > info.max_positions) return report_error(out_of_range("prompt plus generated tokens exceed the context"));

  const int threads = backend->n_threads();
  const bool gpu = f.device != "cpu";
  // The ceilings of the device the model runs on, measured now: read bandwidth on CPUs; copy
  // bandwidth and the bf16 GEMM rate on GPUs.
  double bandwidth = 0, gemm_tflops = 0, fp8_gemm_tflops = 0;
  std::string device_name = cpu_isa_name(backend->isa());
#ifdef SEEKSERVE_HAVE_CUDA
  if (gpu) {
    const cuda::DeviceCeilings ceilings = cuda::measure_device_ceilings();
    bandwidth = ceilings.copy_GBps;
    gemm_tflops = ceilings.bf16_tflops;
    fp8_gemm_tflops = ceilings.fp8_tflops;
    device_name = ceilings.name;
  }
#endif
  if (!gpu) bandwidth = measure_bandwidth(threads, backend->isa() >= CpuIsa::kAvx512);

  // One pool for all sequences; sequence s owns blocks [s * per_seq, (s + 1) * per_seq).
  const int64_t block = 16, per_seq = (f.prompt_tokens + f.gen_tokens + block - 1) / block;
  KvPool pool(model.kv_layout(), per_seq * f.batch, block);
  std::vector<std::vector<int32_t>> tables(static_cast<size_t>(f.batch)), prompts(static_cast<size_t>(f.batch));
  for (int64_t s = 0; s < f.batch; ++s) {
    for (int64_t b = 0; b < per_seq; ++b) tables[static_cast<size_t>(s)].push_back(static_cast<int32_t>(s * per_seq + b));
    for (int64_t i = 0; i < f.prompt_tokens; ++i)
      prompts[static_cast<size_t>(s)].push_back(static_cast<int32_t>((s * 7919 + i * 104729 + 3) % info.vocab_size));
  }
  std::vector<float> logits;
  // Warm-up: one token, so weight pages are resident before timing.
  {
    ForwardBatch warm;
    warm.chunks.push_back({std::span<const int32_t>(prompts[0]).subspan(0, 1), 0, tables[0], 1});
    if (Status st = model.forward_batch(warm, pool, &logits); !st.ok()) return report_error(st);
  }
  // Prefill: every sequence's prompt in one batched pass (on a GPU once more before timing, so
  // library heuristics and allocations are out of the figure).
  ForwardBatch prefill;
  for (int64_t s = 0; s < f.batch; ++s) prefill.chunks.push_back({prompts[static_cast<size_t>(s)], 0, tables[static_cast<size_t>(s)], 1});
  if (gpu) {
    if (Status st = model.forward_batch(prefill, pool, &logits); !st.ok()) return report_error(st);
    progress("first prefill");
  }
  auto t0 = Clock::now();
  if (Status st = model.forward_batch(prefill, pool, &logits); !st.ok()) return report_error(st);
  const double prefill_s = std::chrono::duration<double>(Clock::now() - t0).count();
  progress("timed prefill");

  // Decode: one token per sequence per step, greedy; count the experts each step selects.
  std::vector<int32_t> next(static_cast<size_t>(f.batch));
  for (int64_t s = 0; s < f.batch; ++s) next[static_cast<size_t>(s)] = argmax(logits.data() + s * info.vocab_size, info.vocab_size);
  std::vector<std::set<int32_t>> selected;
  double experts_selected = 0;
  ForwardBatch step;
  step.on_routing = [&](int64_t layer, int64_t n_tokens, int64_t top_k, const int32_t* ids, const float*) {
    if (static_cast<size_t>(layer) >= selected.size()) selected.resize(static_cast<size_t>(layer) + 1);
    for (int64_t i = 0; i < n_tokens * top_k; ++i) selected[static_cast<size_t>(layer)].insert(ids[i]);
  };
  std::vector<double> step_s;
  std::vector<int32_t> greedy;
  step.greedy_tokens = &greedy;  // a GPU model returns ids, not batch x vocab logits
  // SEEKSERVE_CUDA_PROFILE_STEP=1: the profiler collects only the middle decode step (past graph
  // capture and warm-up), for scripts/gpu_profile.sh.
  [[maybe_unused]] const int64_t profiled_step = gpu && std::getenv("SEEKSERVE_CUDA_PROFILE_STEP") ? f.gen_tokens / 2 : -1;
  for (int64_t g = 0; g < f.gen_tokens; ++g) {
    step.chunks.clear();
    selected.clear();
    for (int64_t s = 0; s < f.batch; ++s)
      step.chunks.push_back({std::span<const int32_t>(&next[static_cast<size_t>(s)], 1), f.prompt_tokens + g, tables[static_cast<size_t>(s)], 1});
#ifdef SEEKSERVE_HAVE_CUDA
    if (g == profiled_step) cuda::profiler_window(true);
#endif
    t0 = Clock::now();
    if (Status st = model.forward_batch(step, pool, &logits); !st.ok()) return report_error(st);
    step_s.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
#ifdef SEEKSERVE_HAVE_CUDA
    if (g == profiled_step) cuda::profiler_window(false);
#endif
    for (const auto& layer : selected) experts_selected += static_cast<double>(layer.size());
    for (int64_t s = 0; s < f.batch; ++s)
      next[static_cast<size_t>(s)] = logits.empty() ? greedy[static_cast<size_t>(s)] : argmax(logits.data() + s * info.vocab_size, info.vocab_size);
  }
  progress("decode");
  std::vector<double> sorted = step_s;
  std::sort(sorted.begin(), sorted.end());
  const double step_median = sorted[sorted.size() / 2];
  // Bytes a decode step reads: everything but the embedding table; routed experts only as selected.
  double step_bytes = static_cast<double>(info.weight_bytes - info.embedding_bytes - info.expert_bytes);
  if (info.n_routed_experts > 0 && info.n_moe_layers > 0) {
    const double per_expert = static_cast<double>(info.expert_bytes) / static_cast<double>(info.n_moe_layers * info.n_routed_experts);
    step_bytes += per_expert * experts_selected / static_cast<double>(f.gen_tokens);
  }
  const double decode_tps = 1.0 / step_median;
  const double share = step_bytes / step_median / 1e9 / bandwidth;

  nlohmann::ordered_json out;
  out["model"] = f.model;
  out["architecture"] = info.architecture;
  out["dtype"] = f.dtype;
  out["device"] = f.device;
  out["isa"] = device_name;
  out["threads"] = threads;
  out["batch"] = f.batch;
  out["layers"] = info.n_layers;
  out["prompt_tokens"] = f.prompt_tokens;
  out["gen_tokens"] = f.gen_tokens;
  out["weight_bytes"] = info.weight_bytes;
  out["load_s"] = load_s;
  out["prefill_tokens_per_s"] = static_cast<double>(f.prompt_tokens * f.batch) / prefill_s;
  out["decode_tokens_per_s"] = decode_tps;
  out["decode_total_tokens_per_s"] = decode_tps * static_cast<double>(f.batch);
  out["decode_step_ms_median"] = step_median * 1e3;
  // Offline throughput as a batch job sees it: every output token over prefill plus all steps
  // (the first output token comes from the prefill's logits).
  double total_s = prefill_s;
  for (double s : step_s) total_s += s;
  out["end_to_end_output_tokens_per_s"] = static_cast<double>(f.batch * (f.gen_tokens + 1)) / total_s;
  out["decode_bytes_per_token"] = step_bytes / static_cast<double>(f.batch);
  out["decode_bytes_per_step"] = step_bytes;
  out["measured_bandwidth_GBps"] = bandwidth;
  out["bandwidth_share"] = share;
  if (gpu) {
    // Prefill FLOPs: 2 per weight per token (embedding excluded), plus the causal attention's
    // q.k and p.v over the P (P + 1) / 2 (query, key) pairs of each prompt.
    // (Models that do not report their matmul FLOPs: bf16 weights, all of them multiplied.)
    const double per_token = info.matmul_flops_per_token > 0 ? static_cast<double>(info.matmul_flops_per_token)
                                                             : static_cast<double>(info.weight_bytes - info.embedding_bytes);
    const double matmul_flops = per_token * static_cast<double>(f.prompt_tokens * f.batch);
    const double pairs = static_cast<double>(f.prompt_tokens) * static_cast<double>(f.prompt_tokens + 1) / 2.0 * static_cast<double>(f.batch);
    const double attention_flops = static_cast<double>(info.attention_flops_per_pair) * pairs;
    const double flops = matmul_flops + attention_flops;
    out["measured_bf16_gemm_TFLOPs"] = gemm_tflops;
#ifdef SEEKSERVE_HAVE_CUDA
    // Which of the kernels with a switch ran (docs/PERF.md compares them side by side).
    out["mla_kernel"] = cuda::mla_kernel_name(cuda::default_mla_kernel());
    out["head_matmul_kernel"] = cuda::default_head_matmul_kernel() == cuda::HeadMatmulKernel::kTensorCores ? "tensor-cores" : "cuda-cores";
    out["moe_kernel"] = std::getenv("SEEKSERVE_CUDA_MOE_GEMV") ? "cuda-cores" : "tensor-cores";
    out["fp8_expert_gemms"] = std::getenv("SEEKSERVE_CUDA_FP8_EXPERT_KERNELS") == nullptr;
#endif
    if (fp8_gemm_tflops > 0) {  // block-scaled FP8 (DeepSeek's format) against bf16, same run
      out["measured_fp8_gemm_TFLOPs"] = fp8_gemm_tflops;
      out["fp8_over_bf16_gemm"] = fp8_gemm_tflops / gemm_tflops;
    }
    out["prefill_attention_flop_share"] = attention_flops / flops;
    out["prefill_TFLOPs"] = flops / prefill_s / 1e12;
    out["prefill_gemm_share"] = gemm_tflops > 0 ? flops / prefill_s / 1e12 / gemm_tflops : 0.0;
  }
  if (f.json) {
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf("%s (%s, %s, %s, %d threads), batch %lld\n", f.model.c_str(), info.architecture.c_str(), f.dtype.c_str(),
                cpu_isa_name(backend->isa()), threads, static_cast<long long>(f.batch));
    std::printf("  prefill  %8.1f tok/s   (%lld tokens x %lld sequences)\n", out["prefill_tokens_per_s"].get<double>(),
                static_cast<long long>(f.prompt_tokens), static_cast<long long>(f.batch));
    std::printf("  decode   %8.1f tok/s per sequence, %.1f in total (median step %.2f ms)\n", decode_tps, decode_tps * static_cast<double>(f.batch), step_median * 1e3);
    std::printf("  reads    %.3f GB per step; memory %.1f GB/s measured now; decode reaches %.0f%% of it\n", step_bytes / 1e9, bandwidth, 100.0 * share);
    if (gpu)
      std::printf("  prefill  %.1f TFLOP/s = %.0f%% of the %.1f TFLOP/s bf16 GEMM rate measured now\n", out["prefill_TFLOPs"].get<double>(),
                  100.0 * out["prefill_gemm_share"].get<double>(), gemm_tflops);
  }
  return 0;
}

}  // namespace

CommandMain add_bench_command(CLI::App& app) {
  auto f = std::make_shared<BenchFlags>();
  CLI::App* cmd = app.add_subcommand("bench", "prefill and decode speed against the memory bandwidth measured in the same run");
  cmd->add_option("--model", f->model, "model folder (or config.json with --dummy-weights)")->required();
  cmd->add_flag("--dummy-weights", f->dummy_weights, "generate weights of the config's shapes");
  cmd->add_option("--dtype", f->dtype, "weight format: bf16, int8 (per channel, W8A8), fp8 (128x128 blocks, W8A8) or f32");
  cmd->add_option("--threads", f->threads, "CPU threads (0 = all)");
  cmd->add_option("--prompt-tokens", f->prompt_tokens, "prompt length per sequence");
  cmd->add_option("--gen-tokens", f->gen_tokens, "decode steps");
  cmd->add_option("--batch", f->batch, "sequences decoded together");
  cmd->add_option("--device", f->device, "cpu, or cuda (an NVIDIA GPU: bf16 for Qwen2, Llama and DeepSeek V2/V3; fp8 W8A8 for DeepSeek)");
  cmd->add_option("--num-layers", f->num_layers, "keep only the first N decoder layers (real shapes that do not fit; 0: all)");
  cmd->add_flag("--json", f->json, "print one JSON object");
  cmd->add_option("--kernel", f->kernel, "time one kernel alone (mla-decode: MLA decode attention at the config's widths, --batch x --context)");
  cmd->add_option("--context", f->context, "--kernel mla-decode: cached positions per sequence");
  cmd->add_option("--heads", f->heads, "--kernel mla-decode: query heads on one GPU (16: V3's 128 under 8-way tensor parallelism; default the config's)");
  return [cmd, f]() -> int { return cmd->parsed() ? run_bench(*f) : -1; };
}

}  // namespace seekserve

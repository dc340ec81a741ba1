// Batched-engine benchmark: total decode throughput at 1, 4, 16 and 64 concurrent sequences
// against the same requests run one after another, and the inter-token latency of an interactive
// request alone and beside a batch job of 32 long requests.
//
//   engine_bench MODEL_DIR_OR_CONFIG [--dummy-weights] [--dtype f32|bf16] [--prompt-tokens P]
//                [--gen-tokens G] [--concurrency 1,4,16,64] [--batch-jobs 32] [--batch-prompt 256]
//                [--batch-gen 128] [--interactive-gen 32] [--repeats R]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "models/model_loader.h"

using namespace seekserve;

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string model;
  bool dummy = false;
  std::string dtype = "bf16";
  int64_t prompt_tokens = 32, gen_tokens = 32;
  std::vector<int64_t> concurrency = {1, 4, 16, 64};
  int64_t batch_jobs = 32, batch_prompt = 256, batch_gen = 128, interactive_gen = 32;
  int64_t step_tokens = 512;
  int64_t guard = 2;  // step_tokens_while_interactive_decodes for the guarded latency run
  int repeats = 3;
};

Request make_request(int64_t vocab, int64_t prompt_len, int64_t gen, uint64_t salt, RequestClass cls) {
  Request r;
  for (int64_t i = 0; i < prompt_len; ++i) r.prompt.push_back(static_cast<int32_t>((salt * 7919 + static_cast<uint64_t>(i) * 104729 + 17) % static_cast<uint64_t>(vocab)));
  r.max_tokens = gen;
  r.ignore_eos = true;
  r.sampling.temperature = 0.0f;
  r.request_class = cls;
  return r;
}

EngineConfig engine_config(const CausalLM& model, const Options& o, int64_t tokens) {
  EngineConfig c;
  c.kv_budget_bytes = model.kv_layout().bytes_per_token() * (tokens + 1024);
  c.scheduler.step_tokens = o.step_tokens;
  c.scheduler.max_running = 256;
  c.scheduler.batch_kv_share = 0.9;
  return c;
}

struct RunTimes {
  double total = 0.0;   // admission to last token
  double decode = 0.0;  // from the moment every request has its first token to the end
};

// Runs `requests` together through one engine; records per-token times of request `watch`.
RunTimes run(CausalLM* model, const EngineConfig& config, const std::vector<Request>& requests, int64_t watch,
             std::vector<double>* watch_token_times) {
  auto engine = Engine::create(model, config);
  if (!engine.ok()) {
    std::fprintf(stderr, "%s\n", engine.status().to_string().c_str());
    std::exit(1);
  }
  int64_t watch_id = -1;
  for (size_t i = 0; i < requests.size(); ++i) {
    auto id = (*engine)->add_request(requests[i]);
    if (!id.ok()) {
      std::fprintf(stderr, "%s\n", id.status().to_string().c_str());
      std::exit(1);
    }
    if (static_cast<int64_t>(i) == watch) watch_id = *id;
  }
  const auto t0 = Clock::now();
  auto decode_start = t0;
  std::vector<bool> started(requests.size() + 1, false);
  size_t n_started = 0;
  while ((*engine)->has_work())
    for (const TokenOutput& out : (*engine)->step()) {
      if (out.token < 0) continue;
      if (out.request_id == watch_id && watch_token_times)
        watch_token_times->push_back(std::chrono::duration<double>(Clock::now() - t0).count());
      const size_t k = static_cast<size_t>(out.request_id);
      if (k < started.size() && !started[k]) {
        started[k] = true;
        if (++n_started == requests.size()) decode_start = Clock::now();
      }
    }
  const auto end = Clock::now();
  return {std::chrono::duration<double>(end - t0).count(), std::chrono::duration<double>(end - decode_start).count()};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Mean gap between consecutive tokens after the first.
double mean_itl(const std::vector<double>& t) {
  if (t.size() < 2) return 0.0;
  return (t.back() - t.front()) / static_cast<double>(t.size() - 1);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() { return std::string(i + 1 < argc ? argv[++i] : ""); };
    if (a == "--dummy-weights") o.dummy = true;
    else if (a == "--dtype") o.dtype = next();
    else if (a == "--prompt-tokens") o.prompt_tokens = std::stoll(next());
    else if (a == "--gen-tokens") o.gen_tokens = std::stoll(next());
    else if (a == "--batch-jobs") o.batch_jobs = std::stoll(next());
    else if (a == "--batch-prompt") o.batch_prompt = std::stoll(next());
    else if (a == "--batch-gen") o.batch_gen = std::stoll(next());
    else if (a == "--interactive-gen") o.interactive_gen = std::stoll(next());
    else if (a == "--step-tokens") o.step_tokens = std::stoll(next());
    else if (a == "--repeats") o.repeats = std::stoi(next());
    else if (a == "--latency-guard") o.guard = std::stoll(next());
    else if (a == "--concurrency") {
      o.concurrency.clear();
      std::stringstream ss(next());
      for (std::string x; std::getline(ss, x, ',');) o.concurrency.push_back(std::stoll(x));
    } else if (o.model.empty()) o.model = a;
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (o.model.empty()) {
    std::fprintf(stderr, "usage: engine_bench MODEL [--dummy-weights] [--dtype f32|bf16] ...\n");
    return 2;
  }
  LoadOptions load;
  load.path = o.model;
  load.dummy_weights = o.dummy;
  load.dtype = parse_compute_dtype(o.dtype).value();
  auto loaded = load_model(load);
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s\n", loaded.status().to_string().c_str());
    return 1;
  }
  CausalLM* model = loaded->get();
  const int64_t vocab = model->info().vocab_size;
  std::printf("model %s (%s), dtype %s, prompt %lld, generate %lld, medians of %d runs\n", o.model.c_str(),
              model->info().architecture.c_str(), o.dtype.c_str(), static_cast<long long>(o.prompt_tokens),
              static_cast<long long>(o.gen_tokens), o.repeats);

  // Warm-up: touch every weight page (dummy or memory-mapped) before anything is timed.
  (void)run(model, engine_config(*model, o, o.prompt_tokens + o.gen_tokens),
            {make_request(vocab, o.prompt_tokens, 2, 12345, RequestClass::kInteractive)}, -1, nullptr);

  // One after another: every request costs what one request alone costs (same prompt and
  // output lengths), so the single-request time, measured in the same run, stands for all.
  const EngineConfig one_config = engine_config(*model, o, o.prompt_tokens + o.gen_tokens);
  std::vector<double> single_total, single_decode;
  for (int r = 0; r < o.repeats; ++r) {
    const RunTimes t = run(model, one_config, {make_request(vocab, o.prompt_tokens, o.gen_tokens, 0, RequestClass::kInteractive)}, -1, nullptr);
    single_total.push_back(t.total);
    single_decode.push_back(t.decode);
  }
  const double single_s = median(single_total), single_decode_s = median(single_decode);
  std::printf("\none request alone: %.3f s (prefill %lld + decode %lld tokens), decode %.1f tok/s\n", single_s,
              static_cast<long long>(o.prompt_tokens), static_cast<long long>(o.gen_tokens),
              static_cast<double>(o.gen_tokens - 1) / single_decode_s);
  std::printf("\n| concurrent sequences | decode tok/s, all sequences | per sequence | one after another | speedup | end to end (s) batched / one after another |\n"
              "| --- | --- | --- | --- | --- | --- |\n");
  for (int64_t n : o.concurrency) {
    std::vector<Request> requests;
    for (int64_t k = 0; k < n; ++k) requests.push_back(make_request(vocab, o.prompt_tokens, o.gen_tokens, static_cast<uint64_t>(k), RequestClass::kInteractive));
    const EngineConfig config = engine_config(*model, o, n * (o.prompt_tokens + o.gen_tokens));
    std::vector<double> total, decode;
    for (int r = 0; r < o.repeats; ++r) {
      const RunTimes t = run(model, config, requests, -1, nullptr);
      total.push_back(t.total);
      decode.push_back(t.decode);
    }
    // Decode tokens: all but each sequence's first (sampled from its prefill).
    const double decode_tokens = static_cast<double>(n * (o.gen_tokens - 1));
    const double batched_rate = decode_tokens / median(decode);
    const double serial_rate = static_cast<double>(o.gen_tokens - 1) / single_decode_s;
    std::printf("| %lld | %.1f | %.1f | %.1f | %.2fx | %.2f / %.2f |\n", static_cast<long long>(n), batched_rate,
                batched_rate / static_cast<double>(n), serial_rate, batched_rate / serial_rate, median(total), single_s * static_cast<double>(n));
    std::fflush(stdout);
  }

  // Interactive latency beside a batch job.
  const Request interactive = make_request(vocab, 16, o.interactive_gen, 999, RequestClass::kInteractive);
  std::vector<Request> with_batch = {interactive};
  for (int64_t k = 0; k < o.batch_jobs; ++k) with_batch.push_back(make_request(vocab, o.batch_prompt, o.batch_gen, 1000 + static_cast<uint64_t>(k), RequestClass::kBatch));
  const EngineConfig config = engine_config(*model, o, o.batch_jobs * (o.batch_prompt + o.batch_gen) + 16 + o.interactive_gen);
  EngineConfig guarded = config;
  guarded.scheduler.step_tokens_while_interactive_decodes = o.guard;
  std::vector<double> alone_itl, beside_itl, guarded_itl, batch_time, guarded_batch_time;
  for (int r = 0; r < o.repeats; ++r) {
    std::vector<double> t;
    (void)run(model, config, {interactive}, 0, &t);
    alone_itl.push_back(mean_itl(t));
    t.clear();
    (void)run(model, config, with_batch, 0, &t);
    beside_itl.push_back(mean_itl(t));
    t.clear();
    (void)run(model, guarded, with_batch, 0, &t);
    guarded_itl.push_back(mean_itl(t));
  }
  const double alone = median(alone_itl);
  std::printf("\n| interactive request (16 + %lld tokens) | inter-token latency (ms) | vs alone |\n| --- | --- | --- |\n",
              static_cast<long long>(o.interactive_gen));
  std::printf("| alone | %.2f | 1.00x |\n", 1e3 * alone);
  std::printf("| beside %lld batch requests (%lld+%lld tokens), share rule only | %.2f | %.2fx |\n", static_cast<long long>(o.batch_jobs),
              static_cast<long long>(o.batch_prompt), static_cast<long long>(o.batch_gen), 1e3 * median(beside_itl), median(beside_itl) / alone);
  std::printf("| same, latency guard of %lld tokens a step | %.2f | %.2fx |\n", static_cast<long long>(o.guard),
              1e3 * median(guarded_itl), median(guarded_itl) / alone);
  return 0;
}

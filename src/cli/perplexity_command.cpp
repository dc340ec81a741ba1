// seekserve perplexity: exp(mean negative log-likelihood) of a text file under the model, in
// non-overlapping windows (each starts with BOS), to compare precisions (bf16 vs int8) directly.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "backend/cpu_backend.h"
#include "cli/commands.h"
#include "models/model_loader.h"
#include "tokenizer/tokenizer.h"

namespace seekserve {

namespace {

struct PerplexityFlags {
  std::string model;
  std::string text;
  std::string dtype = "bf16";
  int64_t window = 512;
  int threads = 0;
  bool json = false;
};

int run_perplexity(const PerplexityFlags& f) {
  std::ifstream in(f.text, std::ios::binary);
  if (!in) return report_error(not_found(f.text + ": cannot open"));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto tokenizer = Tokenizer::load(f.model);
  if (!tokenizer.ok()) return report_error(tokenizer.status());
  auto model = load_model_for_cli(f.model, f.dtype, /*dummy_weights=*/false, f.threads);
  if (!model.ok()) return report_error(model.status());
  if (f.window < 2 || f.window > (*model)->info().max_positions) return report_error(invalid_argument("--window must be in [2, context]"));

  const std::vector<int32_t> ids = (*tokenizer)->encode(text, /*add_special_tokens=*/false);
  const auto bos = (*tokenizer)->bos_id();
  const int64_t V = (*model)->info().vocab_size;
  double nll = 0.0;
  int64_t scored = 0;
  const int64_t body = f.window - (bos ? 1 : 0);
  for (size_t begin = 0; begin + 1 < ids.size(); begin += static_cast<size_t>(body)) {
    std::vector<int32_t> chunk;
    if (bos) chunk.push_back(*bos);
    const size_t end = std::min(ids.size(), begin + static_cast<size_t>(body));
    chunk.insert(chunk.end(), ids.begin() + static_cast<long>(begin), ids.begin() + static_cast<long>(end));
    KvCache cache = (*model)->new_cache();
    ForwardRequest request;
    request.tokens = chunk;
    request.logits_from = 0;
    std::vector<float> logits;
    if (Status st = (*model)->forward(request, cache, &logits); !st.ok()) return report_error(st);
    // Position i predicts token i + 1 (the BOS itself is never scored).
    for (size_t i = 0; i + 1 < chunk.size(); ++i) {
      const float* row = logits.data() + static_cast<int64_t>(i) * V;
      float max_logit = -INFINITY;
      for (int64_t v = 0; v < V; ++v) max_logit = std::max(max_logit, row[v]);
      double sum = 0.0;
      for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(row[v] - max_logit));
      nll -= static_cast<double>(row[chunk[i + 1]] - max_logit) - std::log(sum);
      ++scored;
    }
  }
  const double ppl = std::exp(nll / static_cast<double>(std::max<int64_t>(scored, 1)));
  if (f.json) std::printf("%s\n", nlohmann::json{{"perplexity", ppl}, {"tokens", scored}, {"dtype", f.dtype}, {"window", f.window}}.dump().c_str());
  else std::printf("perplexity %.4f over %lld tokens (%s, windows of %lld)\n", ppl, static_cast<long long>(scored), f.dtype.c_str(), static_cast<long long>(f.window));
  return 0;
}

}  // namespace

CommandMain add_perplexity_command(CLI::App& app) {
  auto f = std::make_shared<PerplexityFlags>();
  CLI::App* cmd = app.add_subcommand("perplexity", "perplexity of a text file under the model");
  cmd->add_option("--model", f->model, "model folder (with its tokenizer)")->required();
  cmd->add_option("--text", f->text, "UTF-8 text file")->required();
  cmd->add_option("--dtype", f->dtype, "f32, bf16, int8 or fp8");
  cmd->add_option("--window", f->window, "tokens per window (BOS included)");
  cmd->add_option("--threads", f->threads, "CPU threads (0 = all)");
  cmd->add_flag("--json", f->json, "print one JSON object");
  return [cmd, f]() -> int { return cmd->parsed() ? run_perplexity(*f) : -1; };
}

}  // namespace seekserve

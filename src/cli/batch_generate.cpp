// seekserve generate --batch-file: every request of a JSONL file through the batched engine at
// once; one output line per request, in input order.
#include <chrono>
#include <cstdio>
#include <deque>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/batch_generate.h"
#include "cli/commands.h"
#include "engine/engine.h"

namespace seekserve {

namespace {

struct FileRequest {
  size_t index = 0;
  Request request;
  std::string error;  // a request the file gets wrong, reported on its own line
};

Status parse_line(const std::string& line, const SamplingParams& defaults, FileRequest* out) {
  const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return invalid_argument("not a JSON object");
  Request& r = out->request;
  r.sampling = defaults;
  try {
    if (!j.contains("prompt_ids") || !j["prompt_ids"].is_array()) return invalid_argument("\"prompt_ids\" (an array of token ids) is required");
    for (const auto& id : j["prompt_ids"]) {
      if (!id.is_number_integer()) return invalid_argument("\"prompt_ids\" must hold integers");
      r.prompt.push_back(id.get<int32_t>());
    }
    r.max_tokens = j.value("max_tokens", int64_t{16});
    r.sampling.temperature = j.value("temperature", r.sampling.temperature);
    r.sampling.top_k = j.value("top_k", r.sampling.top_k);
    r.sampling.top_p = j.value("top_p", r.sampling.top_p);
    r.sampling.min_p = j.value("min_p", r.sampling.min_p);
    r.sampling.seed = j.value("seed", uint64_t{0});
    r.sampling.presence_penalty = j.value("presence_penalty", 0.0f);
    r.sampling.frequency_penalty = j.value("frequency_penalty", 0.0f);
    r.sampling.repetition_penalty = j.value("repetition_penalty", 1.0f);
    r.ignore_eos = j.value("ignore_eos", false);
    r.priority = j.value("priority", int64_t{0});
    if (j.contains("stop_token_ids")) r.stop_token_ids = j["stop_token_ids"].get<std::vector<int32_t>>();
    const std::string cls = j.value("class", std::string("interactive"));
    if (cls == "batch") r.request_class = RequestClass::kBatch;
    else if (cls != "interactive") return invalid_argument("\"class\" must be \"interactive\" or \"batch\"");
  } catch (const nlohmann::json::exception& e) {
    return invalid_argument(std::string("a field has the wrong type: ") + e.what());
  }
  return Status::Ok();
}

}  // namespace

int run_batch_file(CausalLM& model, const BatchFileOptions& options) {
  std::ifstream in(options.path);
  if (!in) return report_error(not_found(options.path + ": cannot open"));
  std::vector<FileRequest> requests;
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    FileRequest fr;
    fr.index = requests.size();
    const Status st = parse_line(line, options.defaults, &fr);
    if (!st.ok()) fr.error = options.path + ":" + std::to_string(line_no) + ": " + st.message();
    requests.push_back(std::move(fr));
  }

  auto engine = Engine::create(&model, options.engine);
  if (!engine.ok()) return report_error(engine.status());
  std::fprintf(stderr, "[KV pool: %s]\n", (*engine)->describe_pool().c_str());

  struct Outcome {
    std::vector<int32_t> tokens;
    std::string finish_reason, error;
  };
  std::vector<Outcome> outcomes(requests.size());
  std::deque<size_t> pending;
  for (const FileRequest& fr : requests) {
    if (fr.error.empty()) pending.push_back(fr.index);
    else outcomes[fr.index].error = fr.error;
  }
  std::map<int64_t, size_t> by_id;
  const auto t0 = std::chrono::steady_clock::now();
  int64_t generated = 0;
  while (!pending.empty() || (*engine)->has_work()) {
    // Admit as many as the waiting queues take; the rest wait in the file's order.
    while (!pending.empty()) {
      auto id = (*engine)->add_request(requests[pending.front()].request);
      if (!id.ok() && id.status().code() == StatusCode::kResourceExhausted) break;
      if (!id.ok()) outcomes[pending.front()].error = id.status().message();
      else by_id[*id] = pending.front();
      pending.pop_front();
    }
    for (const TokenOutput& out : (*engine)->step()) {
      Outcome& o = outcomes[by_id[out.request_id]];
      if (out.token >= 0) {
        o.tokens.push_back(out.token);
        ++generated;
      }
      if (out.finished) o.finish_reason = out.finish_reason;
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  for (size_t i = 0; i < outcomes.size(); ++i) {
    nlohmann::ordered_json j;
    j["index"] = i;
    if (!outcomes[i].error.empty()) {
      j["error"] = outcomes[i].error;
    } else {
      j["tokens"] = outcomes[i].tokens;
      j["finish_reason"] = outcomes[i].finish_reason;
    }
    std::cout << j.dump() << "\n";
  }
  std::cout.flush();
  const EngineStats s = (*engine)->stats();
  std::fprintf(stderr, "[%zu requests, %lld tokens generated in %.3f s (%.1f tok/s), %lld steps, %lld preemptions, prefix hits %lld/%lld blocks]\n",
               requests.size(), static_cast<long long>(generated), seconds, seconds > 0 ? static_cast<double>(generated) / seconds : 0.0,
               static_cast<long long>(s.steps), static_cast<long long>(s.preemptions), static_cast<long long>(s.prefix_hits),
               static_cast<long long>(s.prefix_queries));
  return 0;
}

}  // namespace seekserve

// seekserve serve: the OpenAI-compatible HTTP server for one model.
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "backend/cpu_backend.h"
#include "cli/commands.h"
#include "models/model_loader.h"
#include "server/api_server.h"

namespace seekserve {

namespace {

struct ServeFlags {
  std::string model;
  std::string served_name;
  std::string host = "127.0.0.1";
  int port = 8000;
  std::vector<std::string> api_keys;
  std::string api_keys_file;
  bool protect_health = false;
  std::string dtype = "bf16";
  int threads = 0;
  std::string device = "cpu";  // cpu or cuda
  int io_threads = 2;
  int64_t kv_budget = int64_t{256} << 20;
  int64_t step_tokens = 512;
  int64_t max_batch = 64;
  int64_t max_waiting = 256;
  int64_t latency_guard = 0;
  int grace_seconds = 30;
  size_t max_body_bytes = 8 << 20;
  bool no_access_log = false;
};

std::atomic<int> g_signal{0};
void on_signal(int sig) { g_signal = sig; }

int run_serve(const ServeFlags& f) {
  if (Result<ComputeDType> dtype = parse_compute_dtype(f.dtype); !dtype.ok()) return report_error(dtype.status());  // before loading
  ApiConfig api;
  api.served_model_name = f.served_name.empty() ? std::filesystem::path(f.model).filename().string() : f.served_name;
  if (api.served_model_name.empty()) api.served_model_name = std::filesystem::path(f.model).parent_path().filename().string();
  api.api_keys = f.api_keys;
  if (!f.api_keys_file.empty()) {
    // One key a line; "KEY batch" makes that key's requests batch-class by default.
    std::ifstream in(f.api_keys_file);
    if (!in) return report_error(not_found(f.api_keys_file + ": cannot open"));
    for (std::string line; std::getline(in, line);) {
      std::istringstream fields(line);
      std::string key, cls;
      if (!(fields >> key) || key[0] == '#') continue;
      api.api_keys.push_back(key);
      if (fields >> cls && cls == "batch") api.key_classes.emplace_back(key, RequestClass::kBatch);
    }
  }
  api.protect_health_and_metrics = f.protect_health;
  api.access_log = !f.no_access_log;

  auto tokenizer = Tokenizer::load(f.model);
  if (!tokenizer.ok()) return report_error(tokenizer.status());
  std::optional<ChatTemplate> chat_template;
  if (!(*tokenizer)->settings().chat_template.empty()) {
    auto compiled = ChatTemplate::compile((*tokenizer)->settings().chat_template);  // unsupported constructs fail here
    if (!compiled.ok()) return report_error(compiled.status());
    chat_template = std::move(*compiled);
  }
  auto model = load_model_for_cli(f.model, f.dtype, /*dummy_weights=*/false, f.threads, nullptr, f.device);
  if (!model.ok()) return report_error(model.status());
  // Sampling defaults from generation_config.json, as transformers and vLLM use them; a request
  // without a temperature gets the model's (1.0, OpenAI's default, when the file says greedy).
  api.default_sampling = sampling_defaults(f.model);
  if (api.default_sampling.temperature == 0.0f) api.default_sampling.temperature = 1.0f;
  EngineConfig engine_config;
  engine_config.kv_budget_bytes = f.kv_budget;
  engine_config.scheduler.step_tokens = f.step_tokens;
  engine_config.scheduler.max_running = f.max_batch;
  engine_config.scheduler.max_waiting = {f.max_waiting, f.max_waiting * 16};
  engine_config.scheduler.step_tokens_while_interactive_decodes = f.latency_guard;
  auto service = EngineService::create(std::move(model).value(), engine_config);
  if (!service.ok()) return report_error(service.status());

  ApiServer api_server(api, *tokenizer, std::move(chat_template), service->get());
  HttpLimits limits;
  limits.max_body_bytes = f.max_body_bytes;
  HttpServer http(limits, [&](std::shared_ptr<HttpExchange> ex) { api_server.handle(ex); });
  api_server.set_connection_counter([&] { return http.open_connections(); });
  auto port = http.start(f.host, f.port, f.io_threads);
  if (!port.ok()) return report_error(port.status());
  std::fprintf(stderr, "seekserve: serving '%s' on http://%s:%d (KV pool: %s)\n", api.served_model_name.c_str(), f.host.c_str(), *port,
               (*service)->describe_pool().c_str());
  std::fflush(stderr);

  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  while (g_signal == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  // Drain: stop accepting, turn /ready to 503, let in-flight requests finish within the grace period.
  std::fprintf(stderr, "seekserve: signal %d, draining (grace %d s)\n", g_signal.load(), f.grace_seconds);
  api_server.start_draining();
  http.stop_accepting();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(f.grace_seconds);
  while ((*service)->in_flight() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // let the last responses flush
  (*service)->shutdown();
  http.stop();
  std::fprintf(stderr, "seekserve: stopped\n");
  return 0;
}

}  // namespace

CommandMain add_serve_command(CLI::App& app) {
  auto f = std::make_shared<ServeFlags>();
  CLI::App* cmd = app.add_subcommand("serve", "serve the OpenAI-compatible HTTP API");
  cmd->add_option("--model", f->model, "model folder")->required();
  cmd->add_option("--served-model-name", f->served_name, "name clients use (default: the folder name)");
  cmd->add_option("--host", f->host, "address to listen on");
  cmd->add_option("--port", f->port, "port (0: any free port)");
  cmd->add_option("--api-key", f->api_keys, "accepted API key (repeatable)");
  cmd->add_option("--api-keys-file", f->api_keys_file, "file with one API key a line ('KEY batch' for batch-class keys)");
  cmd->add_flag("--protect-health", f->protect_health, "require the API key on /health, /ready and /metrics too");
  cmd->add_option("--dtype", f->dtype, "weight and compute precision: bf16, int8, fp8 or f32");
  cmd->add_option("--threads", f->threads, "CPU threads for the kernels (0 = all)");
  cmd->add_option("--device", f->device, "cpu, or cuda (an NVIDIA GPU: bf16 for Qwen2, Llama and DeepSeek V2/V3; fp8 W8A8 for DeepSeek)");
  cmd->add_option("--io-threads", f->io_threads, "HTTP I/O threads");
  cmd->add_option("--kv-budget", f->kv_budget, "bytes for the paged KV cache");
  cmd->add_option("--step-tokens", f->step_tokens, "tokens per engine step");
  cmd->add_option("--max-batch", f->max_batch, "sequences running at once");
  cmd->add_option("--max-waiting", f->max_waiting, "interactive requests that may wait; beyond, 503 + Retry-After (batch: 16x)");
  cmd->add_option("--latency-guard", f->latency_guard, "while interactive requests decode, cap a step at this many tokens");
  cmd->add_option("--grace-seconds", f->grace_seconds, "on SIGTERM, how long in-flight requests may take to finish");
  cmd->add_option("--max-body-bytes", f->max_body_bytes, "larger request bodies get 413");
  cmd->add_flag("--no-access-log", f->no_access_log, "do not log one JSON line per request");
  return [cmd, f]() -> int { return cmd->parsed() ? run_serve(*f) : -1; };
}

}  // namespace seekserve

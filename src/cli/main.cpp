// seekserve: serve and run DeepSeek-family models.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli/commands.h"
#include "backend/cpu_backend.h"
#include "core/status.h"
#include "models/model_loader.h"
#ifdef SEEKSERVE_HAVE_CUDA
#include "cuda/cuda_device.h"
#endif

namespace seekserve {

int report_error(const Status& status) {
  std::fprintf(stderr, "seekserve: error: %s\n", status.message().c_str());
  return status.code() == StatusCode::kInvalidArgument ? 2 : 1;
}

Result<std::unique_ptr<CausalLM>> load_model_for_cli(const std::string& path, const std::string& dtype, bool dummy_weights,
                                                     int threads, std::shared_ptr<CpuBackend>* backend, const std::string& device,
                                                     int64_t num_layers) {
  SS_ASSIGN_OR_RETURN(ComputeDType compute, parse_compute_dtype(dtype));
  auto cpu = std::make_shared<CpuBackend>(threads);
  if (backend) *backend = cpu;
  LoadOptions load;
  load.path = path;
  load.dtype = compute;
  load.dummy_weights = dummy_weights;
  load.backend = cpu;
  load.device = device;
  load.num_layers = num_layers;
  return load_model(load);
}

}  // namespace seekserve

int main(int argc, char** argv) {
#ifdef SEEKSERVE_HAVE_CUDA
  seekserve::cuda::register_cuda_device();
#endif
  CLI::App app{"seekserve: deploy DeepSeek-family language models on CPUs and GPUs"};
  app.require_subcommand(1);
  std::vector<seekserve::CommandMain> mains;
  mains.push_back(seekserve::add_generate_command(app));
  mains.push_back(seekserve::add_tokenize_command(app));
  mains.push_back(seekserve::add_chat_template_command(app));
  mains.push_back(seekserve::add_serve_command(app));
  mains.push_back(seekserve::add_loadgen_command(app));
  mains.push_back(seekserve::add_bench_command(app));
  mains.push_back(seekserve::add_perplexity_command(app));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  for (auto& run : mains)
    if (run) {
      const int rc = run();
      if (rc >= 0) return rc;
    }
  return 0;
}

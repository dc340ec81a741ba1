// Subcommands of the seekserve binary. Each registers its flags on the CLI11 app and returns
// the function to run once parsing succeeded.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"

namespace seekserve {

using CommandMain = std::function<int()>;

CommandMain add_generate_command(CLI::App& app);
CommandMain add_tokenize_command(CLI::App& app);
CommandMain add_chat_template_command(CLI::App& app);
CommandMain add_serve_command(CLI::App& app);
CommandMain add_loadgen_command(CLI::App& app);
CommandMain add_bench_command(CLI::App& app);
CommandMain add_perplexity_command(CLI::App& app);

// Loads a model for a command: --dtype by name, --dummy-weights, --device (cpu: the CPU backend
// with `threads` threads, 0 = all; cuda: the GPU, when this build has it); `backend`, when given,
// receives the CPU backend (also created for --device cuda, for the CPU-side work).
Result<std::unique_ptr<class CausalLM>> load_model_for_cli(const std::string& path, const std::string& dtype, bool dummy_weights,
                                                           int threads, std::shared_ptr<class CpuBackend>* backend = nullptr,
                                                           const std::string& device = "cpu", int64_t num_layers = 0);

// Token ids from "1,2,3", "[1, 2, 3]" or whitespace-separated text; `what` names the source in errors.
Result<std::vector<int32_t>> parse_token_ids(const std::string& text, const std::string& what);

// Prints "seekserve: error: ..." to stderr and returns the process exit code for a Status.
int report_error(const Status& status);

}  // namespace seekserve

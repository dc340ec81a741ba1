// Subcommands of the seekserve binary. Each registers its flags on the CLI11 app and returns
// the function to run once parsing succeeded.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
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

// Token ids from "1,2,3", "[1, 2, 3]" or whitespace-separated text; `what` names the source in errors.
Result<std::vector<int32_t>> parse_token_ids(const std::string& text, const std::string& what);

// Prints "seekserve: error: ..." to stderr and returns the process exit code for a Status.
int report_error(const Status& status);

}  // namespace seekserve

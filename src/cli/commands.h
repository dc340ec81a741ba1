// Subcommands of the seekserve binary. Each registers its flags on the CLI11 app and returns
// the function to run once parsing succeeded.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace seekserve {

using CommandMain = std::function<int()>;

CommandMain add_generate_command(CLI::App& app);

// Prints "seekserve: error: ..." to stderr and returns the process exit code for a Status.
int report_error(const class Status& status);

}  // namespace seekserve

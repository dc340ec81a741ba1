// The seekserve binary as a user runs it: `generate` output against the goldens, exit codes
// and messages for bad input.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "test_support.h"

namespace seekserve {
namespace {

struct CommandRun {
  int exit_code = -1;
  std::string out, err;
};

CommandRun run(const std::string& args) {
  const std::string err_path = testing::make_temp_dir("cli") + "/stderr";
  const std::string command = std::string(SEEKSERVE_BINARY) + " " + args + " 2>" + err_path;
  CommandRun r;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream err(err_path);
  std::stringstream ss;
  ss << err.rdbuf();
  r.err = ss.str();
  return r;
}

std::string ids_arg(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += (s.empty() ? "" : ",") + std::to_string(id);
  return s;
}

const std::string kBundled = testing::source_dir() + "/models/tiny-deepseek-v3";

TEST(CliTest, GenerateJsonMatchesGoldenGreedyAndLogits) {
  testing::Golden golden("tiny-deepseek-v3");
  const auto ids = golden.ints("p1.ids");
  const CommandRun r = run("generate --model " + kBundled + " --prompt-ids " + ids_arg(ids) +
                    " --max-tokens 24 --temperature 0 --ignore-eos --logits-tail 2 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto out = nlohmann::json::parse(r.out);
  EXPECT_EQ(out["prompt_ids"].get<std::vector<int32_t>>(), ids);
  EXPECT_EQ(out["tokens"].get<std::vector<int32_t>>(), golden.ints("p1.greedy"));
  EXPECT_EQ(out["finish_reason"], "length");
  // The golden tail holds 4 rows; --logits-tail 2 gives the last two.
  const auto tail = golden.floats("p1.logits_tail");
  const auto rows = out["logits_tail"].get<std::vector<std::vector<float>>>();
  ASSERT_EQ(rows.size(), 2u);
  const size_t V = rows[0].size();
  std::vector<float> flat;
  for (const auto& row : rows) flat.insert(flat.end(), row.begin(), row.end());
  EXPECT_LE(testing::relative_l2(flat.data(), tail.data() + 2 * V, 2 * V), 1e-4);
}

TEST(CliTest, GenerateStopsAtEndOfSequence) {
  // Prompt p0 of the golden continues with EOS (id 1) at step 5.
  testing::Golden golden("tiny-deepseek-v3");
  const CommandRun r = run("generate --model " + kBundled + " --prompt-ids " + ids_arg(golden.ints("p0.ids")) +
                    " --max-tokens 24 --temperature 0 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto out = nlohmann::json::parse(r.out);
  const auto tokens = out["tokens"].get<std::vector<int32_t>>();
  const auto greedy = golden.ints("p0.greedy");
  ASSERT_EQ(tokens.size(), 5u);
  EXPECT_EQ(tokens, std::vector<int32_t>(greedy.begin(), greedy.begin() + 5));
  EXPECT_EQ(tokens.back(), 1);
  EXPECT_EQ(out["finish_reason"], "stop");
}

TEST(CliTest, SamplingRepeatsForASeed) {
  const std::string args = "generate --model " + kBundled + " --prompt-ids 0,464,3140 --max-tokens 12 --ignore-eos --temperature 0.9 --top-p 0.95 --json";
  const CommandRun a = run(args + " --seed 5"), b = run(args + " --seed 5"), c = run(args + " --seed 6");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
}

TEST(CliTest, BadInputGetsAClearErrorAndExitCode) {
  struct Case {
    std::string args;
    int exit_code;
    std::string fragment;
  };
  const std::vector<Case> cases = {
      {"generate --model " + kBundled + " --prompt-ids 5,x", 2, "'x' is not a token id"},
      {"generate --model " + kBundled + " --prompt-ids 5,99999", 1, "outside the vocabulary"},
      {"generate --model " + kBundled, 2, "exactly one of --prompt and --prompt-ids"},
      {"generate --model /nonexistent/model --prompt-ids 1", 1, "/nonexistent/model"},
      {"generate --model " + kBundled + " --prompt-ids 1 --dtype fp4", 2, "unknown --dtype 'fp4'"},
      {"generate --model " + kBundled + " --prompt-ids 1 --top-p 0", 2, "top_p"},
      {"generate --model " + kBundled + " --prompt-ids 1,2 --logits-tail 3", 2, "logits_tail"},
  };
  for (const Case& c : cases) {
    const CommandRun r = run(c.args);
    EXPECT_EQ(r.exit_code, c.exit_code) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.fragment), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
}

}  // namespace
}  // namespace seekserve

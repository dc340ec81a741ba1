// libFuzzer entry point for the tokenizer (scripts/fuzz.sh). SEEKSERVE_FUZZ_TOKENIZER names the
// folder holding tokenizer.json (default: the bundled tiny model's).
#include <cstdlib>
#include <memory>

#include "tokenizer/tokenizer.h"
#include "tokenizer_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::shared_ptr<const seekserve::Tokenizer> tokenizer = [] {
    const char* dir = std::getenv("SEEKSERVE_FUZZ_TOKENIZER");
    auto t = seekserve::Tokenizer::load(dir ? dir : SEEKSERVE_SOURCE_DIR "/models/tiny-deepseek-v3");
    if (!t.ok()) std::abort();
    return *t;
  }();
  seekserve::fuzz_tokenizer_one_input(*tokenizer, data, size);
  return 0;
}

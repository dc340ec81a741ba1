#include "tokenizer_target.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "tokenizer/streaming.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace seekserve {

void fuzz_tokenizer_one_input(const Tokenizer& tokenizer, const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const std::vector<int32_t> ids = tokenizer.encode(input, /*add_special_tokens=*/false);
  for (int32_t id : ids)
    if (!tokenizer.is_valid_id(id)) std::abort();
  const std::string decoded = tokenizer.decode(ids, /*skip_special_tokens=*/false);
  // Invalid bytes were replaced before encoding; everything else must come back unchanged.
  if (decoded != utf8_lossy(input)) {
    std::fprintf(stderr, "round trip failed for %zu bytes\n", size);
    std::abort();
  }
  StreamDecoder stream(tokenizer, /*skip_special_tokens=*/false);
  std::string streamed;
  for (int32_t id : ids) streamed += stream.add(id);
  streamed += stream.finish();
  if (streamed != decoded) std::abort();
}

}  // namespace seekserve

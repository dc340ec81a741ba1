// A compiled PCRE2 pattern (UTF + Unicode properties, JIT) for pre-tokenizer splits.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

namespace seekserve {

class Regex {
 public:
  // Compiles `pattern`; the error names the pattern and the offset PCRE2 stopped at.
  static Result<std::shared_ptr<const Regex>> compile(const std::string& pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends the [begin, end) byte ranges of all non-overlapping matches in `text`, left to
  // right. `text` must be valid UTF-8. Thread-safe.
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const;

 private:
  explicit Regex(void* code) : code_(code) {}
  void* code_;  // pcre2_code_8*
};

// Escapes a literal string for use inside a pattern.
std::string regex_escape(std::string_view literal);

}  // namespace seekserve

// The tokenizer fuzz target: encode/decode of arbitrary bytes must not crash, must round-trip
// valid UTF-8 exactly (the tokenizer has no normalizer), and streaming decode must agree.
#pragma once

#include <cstddef>
#include <cstdint>

namespace seekserve {

class Tokenizer;
// Aborts when a property fails.
void fuzz_tokenizer_one_input(const Tokenizer& tokenizer, const uint8_t* data, size_t size);

}  // namespace seekserve

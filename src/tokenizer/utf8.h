// UTF-8 helpers: decoding with the standard's replacement rules, and the byte-level alphabet
// that GPT-2-style BPE vocabularies are written in.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace seekserve {

// Length of the valid UTF-8 sequence starting at s[i], or 0 when the bytes there are not a
// complete valid sequence. Follows the Unicode definition (no overlongs, no surrogates).
size_t utf8_sequence_length(std::string_view s, size_t i);

// Replaces each maximal invalid subpart with U+FFFD, as Rust's String::from_utf8_lossy and
// Python's bytes.decode(errors="replace") do.
std::string utf8_lossy(std::string_view bytes);

// How many leading bytes of `bytes` can be emitted now: complete valid sequences and invalid
// bytes that no continuation could repair. A valid but incomplete sequence at the end is held back.
size_t utf8_stable_prefix(std::string_view bytes);

void append_utf8(uint32_t codepoint, std::string* out);
// Decodes the code point at s[i] (s valid UTF-8); advances i.
uint32_t next_codepoint(std::string_view s, size_t* i);

// NFC normalization (Unicode canonical composition). Input must be valid UTF-8.
std::string nfc_normalize(std::string_view text);

// GPT-2's reversible byte <-> printable character mapping used by ByteLevel pre-tokenizers.
struct ByteLevelAlphabet {
  std::array<uint32_t, 256> byte_to_char{};  // code point standing for each byte
  // Byte for a code point, or -1 when the code point is not in the alphabet.
  int char_to_byte(uint32_t codepoint) const { return codepoint < 324 ? reverse[codepoint] : -1; }
  std::array<int16_t, 324> reverse{};
};
const ByteLevelAlphabet& byte_level_alphabet();

}  // namespace seekserve

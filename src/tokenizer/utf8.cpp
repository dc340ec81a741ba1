#include "tokenizer/utf8.h"

#include <utf8proc.h>

#include <cstdlib>
#include <memory>

namespace seekserve {

size_t utf8_sequence_length(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[i + k]); };
  const size_t left = s.size() - i;
  const uint8_t c = b(0);
  if (c < 0x80) return 1;
  size_t n;
  uint8_t lo = 0x80, hi = 0xbf;  // allowed range of the second byte
  if (c >= 0xc2 && c <= 0xdf) n = 2;
  else if (c == 0xe0) { n = 3; lo = 0xa0; }
  else if (c >= 0xe1 && c <= 0xec) n = 3;
  else if (c == 0xed) { n = 3; hi = 0x9f; }
  else if (c >= 0xee && c <= 0xef) n = 3;
  else if (c == 0xf0) { n = 4; lo = 0x90; }
  else if (c >= 0xf1 && c <= 0xf3) n = 4;
  else if (c == 0xf4) { n = 4; hi = 0x8f; }
  else return 0;
  if (left < n) return 0;
  if (b(1) < lo || b(1) > hi) return 0;
  for (size_t k = 2; k < n; ++k)
    if ((b(k) & 0xc0) != 0x80) return 0;
  return n;
}

namespace {

// Length of the longest prefix of s[i..] that starts a valid sequence (the "maximal subpart"),
// at least 1: those bytes together become one U+FFFD.
size_t maximal_invalid_subpart(std::string_view s, size_t i) {
  const uint8_t c = static_cast<uint8_t>(s[i]);
  size_t n;
  uint8_t lo = 0x80, hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) n = 2;
  else if (c == 0xe0) { n = 3; lo = 0xa0; }
  else if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef) n = 3;
  else if (c == 0xed) { n = 3; hi = 0x9f; }
  else if (c == 0xf0) { n = 4; lo = 0x90; }
  else if (c >= 0xf1 && c <= 0xf3) n = 4;
  else if (c == 0xf4) { n = 4; hi = 0x8f; }
  else return 1;
  size_t k = 1;
  if (i + k < s.size()) {
    const uint8_t b1 = static_cast<uint8_t>(s[i + k]);
    if (b1 < lo || b1 > hi) return 1;
    ++k;
    while (k < n && i + k < s.size() && (static_cast<uint8_t>(s[i + k]) & 0xc0) == 0x80) ++k;
  }
  return k;
}

}  // namespace

std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const size_t n = utf8_sequence_length(s, i);
    if (n > 0) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      i += maximal_invalid_subpart(s, i);
    }
  }
  return out;
}

size_t utf8_stable_prefix(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const size_t n = utf8_sequence_length(s, i);
    if (n > 0) {
      i += n;
      continue;
    }
    const size_t bad = maximal_invalid_subpart(s, i);
    // A subpart running to the end may still be completed by bytes not yet seen.
    if (i + bad == s.size() && (static_cast<uint8_t>(s[i]) >= 0xc2 && static_cast<uint8_t>(s[i]) <= 0xf4)) return i;
    i += bad;
  }
  return i;
}

void append_utf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out->push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

uint32_t next_codepoint(std::string_view s, size_t* i) {
  const uint8_t c = static_cast<uint8_t>(s[*i]);
  if (c < 0x80) {
    ++*i;
    return c;
  }
  const size_t n = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
  uint32_t cp = c & (0x7f >> n);
  for (size_t k = 1; k < n && *i + k < s.size(); ++k) cp = (cp << 6) | (static_cast<uint8_t>(s[*i + k]) & 0x3f);
  *i += n;
  return cp;
}

std::string nfc_normalize(std::string_view text) {
  // ASCII is already in NFC: skip the library for the common case.
  bool ascii = true;
  for (char c : text)
    if (static_cast<uint8_t>(c) >= 0x80) {
      ascii = false;
      break;
    }
  if (ascii) return std::string(text);
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                          static_cast<utf8proc_ssize_t>(text.size()), &out,
                                          static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n < 0) return std::string(text);  // invalid input is sanitized before; keep it unchanged
  std::string result(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
  std::free(out);
  return result;
}

const ByteLevelAlphabet& byte_level_alphabet() {
  static const ByteLevelAlphabet alphabet = [] {
    ByteLevelAlphabet a;
    a.reverse.fill(-1);
    // Printable bytes stand for themselves; the rest map to 256, 257, ... in byte order.
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
      a.byte_to_char[static_cast<size_t>(b)] = printable ? static_cast<uint32_t>(b) : next++;
      a.reverse[a.byte_to_char[static_cast<size_t>(b)]] = static_cast<int16_t>(b);
    }
    return a;
  }();
  return alphabet;
}

}  // namespace seekserve

// The table of tokenizers' pre_tokenizers/byte_level.rs (bytes_char / char_bytes).
#include "data/byte_level.h"

#include <array>

#include "data/utf8.h"

namespace meshtrain::data {

namespace {

struct Tables {
  std::array<uint32_t, 256> to_char{};
  std::array<int16_t, 512> to_byte{};  // every mapped character is below U+0200
  Tables() {
    to_byte.fill(-1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_char[b] = printable ? b : 256 + extra++;
      to_byte[to_char[b]] = static_cast<int16_t>(b);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

uint32_t byte_level_char(unsigned char byte) { return tables().to_char[byte]; }

bool byte_level_bytes(std::string_view token, std::string& out) {
  const size_t start = out.size();
  for (size_t i = 0; i < token.size();) {
    const size_t n = utf8_char_len(token, i);
    const uint32_t cp = n == 0 ? 0xFFFFFFFF : utf8_decode(token, i, n);
    if (cp >= 512 || tables().to_byte[cp] < 0) {
      out.resize(start);
      return false;
    }
    out.push_back(static_cast<char>(tables().to_byte[cp]));
    i += n;
  }
  return true;
}

}  // namespace meshtrain::data

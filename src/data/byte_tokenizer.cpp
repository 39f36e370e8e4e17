// The byte-level tokenizer: each byte of the text is one token whose id is the byte's unsigned
// value, so encode/decode round-trip any byte string (UTF-8 or not) exactly.
#include "data/byte_tokenizer.h"

namespace meshtrain::data {

std::vector<int64_t> encode_bytes(std::string_view text) {
  std::vector<int64_t> ids;
  ids.reserve(text.size());
  for (char c : text) ids.push_back(static_cast<int64_t>(static_cast<unsigned char>(c)));
  return ids;
}

std::string decode_bytes(const std::vector<int64_t>& ids) {
  std::string text;
  text.reserve(ids.size());
  for (int64_t id : ids) {
    if (id >= 0 && id < kByteVocabSize) {
      text.push_back(static_cast<char>(static_cast<unsigned char>(id)));
    }
  }
  return text;
}

}  // namespace meshtrain::data

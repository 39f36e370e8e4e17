// The byte-level tokenizer: token id = byte value, vocabulary 256.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace meshtrain::data {

constexpr int64_t kByteVocabSize = 256;

std::vector<int64_t> encode_bytes(std::string_view text);
// Ids outside [0, 256) are skipped.
std::string decode_bytes(const std::vector<int64_t>& ids);

}  // namespace meshtrain::data

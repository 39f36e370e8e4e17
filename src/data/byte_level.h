// GPT-2's byte-to-character table (bytes_to_unicode): byte-level vocabularies spell each byte as
// one printable character. Vocabulary entries are turned back into raw bytes once, at load.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace meshtrain::data {

uint32_t byte_level_char(unsigned char byte);
// Appends the bytes `token` spells; false (and nothing appended) when a character of it is not
// in the table.
bool byte_level_bytes(std::string_view token, std::string& out);

}  // namespace meshtrain::data

// UTF-8 helpers for the tokenizer: the length of the well-formed character at a position (0 when
// the bytes there are ill-formed), Unicode White_Space, and Rust's from_utf8_lossy (one U+FFFD per
// maximal ill-formed subpart), which Hugging Face decoders apply.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace meshtrain::data {

// Bytes of the well-formed UTF-8 character starting at s[i]; 0 when ill-formed (or truncated).
size_t utf8_char_len(std::string_view s, size_t i);
// The code point of the well-formed character of `len` bytes at s[i].
uint32_t utf8_decode(std::string_view s, size_t i, size_t len);
void utf8_append(std::string& out, uint32_t cp);
bool is_valid_utf8(std::string_view s);
// Unicode White_Space (what Rust's char::is_whitespace tests).
bool is_unicode_whitespace(uint32_t cp);
// Ill-formed subsequences replaced by U+FFFD, as Rust's String::from_utf8_lossy does.
std::string utf8_lossy(std::string_view s);

}  // namespace meshtrain::data

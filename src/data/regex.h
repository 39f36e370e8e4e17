// A compiled PCRE2 pattern (UTF, Unicode properties, JIT) for the Split pre-tokenizers. Matching
// text that is not valid UTF-8 treats each ill-formed byte as a symbol character (not a letter,
// digit or space), so any byte string pre-tokenizes and round-trips.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace meshtrain::data {

class Regex {
 public:
  // `literal`: the pattern is a plain string. Onig's \s (what tokenizers uses) also matches
  // U+0085, PCRE2's does not: the pattern is widened so the two agree.
  Regex(const std::string& pattern, bool literal);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // The non-empty matches in `text`, as [begin, end) byte offsets, leftmost first.
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& matches) const;

 private:
  void* code_ = nullptr;  // pcre2_code_8
};

}  // namespace meshtrain::data

// PCRE2 matching for Split: one match data per thread, JIT when the platform has it, no UTF
// check per call (the text is checked once here and sanitised when ill-formed).
#define PCRE2_CODE_UNIT_WIDTH 8
#include "data/regex.h"

#include <pcre2.h>

#include "data/utf8.h"
#include "util/check.h"

namespace meshtrain::data {

namespace {

// \s -> [\s\x{85}] outside classes, \s\x{85} inside; \S -> [^\s\x{85}] outside classes.
std::string with_onig_whitespace(const std::string& p) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[++i];
      if (e == 's') out += in_class ? "\\s\\x{85}" : "[\\s\\x{85}]";
      else if (e == 'S' && !in_class) out += "[^\\s\\x{85}]";
      else out += {c, e};
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];  // a leading ] is literal
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

}  // namespace

Regex::Regex(const std::string& pattern, bool literal) {
  const std::string source = literal ? pattern : with_onig_whitespace(pattern);
  int error = 0;
  PCRE2_SIZE offset = 0;
  const uint32_t options = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(source.data()), source.size(), options,
                                   &error, &offset, nullptr);
  if (!code) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    fail("tokenizer.json: Split pattern '", pattern, "' does not compile with PCRE2 at offset ", offset, ": ",
         reinterpret_cast<const char*>(message));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter without JIT
  code_ = code;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void Regex::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& matches) const {
  struct MatchData {
    pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
    ~MatchData() { pcre2_match_data_free(data); }
  };
  thread_local MatchData md;
  thread_local std::string clean;
  matches.clear();
  if (!is_valid_utf8(text)) {
    clean.assign(text);
    for (size_t i = 0; i < clean.size();) {
      const size_t n = utf8_char_len(clean, i);
      if (n == 0) clean[i++] = '\x01';  // a control character: neither \s, \p{L} nor \p{N}
      else i += n;
    }
    text = clean;
  }
  auto* code = static_cast<pcre2_code*>(code_);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  while (start < text.size()) {
    const int rc = pcre2_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, md.data, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    MT_CHECK(rc >= 0, "tokenizer: PCRE2 match failed with error ", rc);
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.data);
    if (ov[1] > ov[0]) {
      matches.emplace_back(ov[0], ov[1]);
      start = ov[1];
    } else {  // an empty match: step over one character
      start = ov[0] + std::max<size_t>(1, utf8_char_len(text, ov[0]));
    }
  }
}

}  // namespace meshtrain::data

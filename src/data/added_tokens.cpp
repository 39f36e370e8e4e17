// Added-token matching as tokenizers' AddedVocabulary::find_matches: matches do not overlap;
// lstrip / rstrip widen a match over the whitespace beside it, single_word drops a match inside
// a word.
#include "data/added_tokens.h"

#include <algorithm>

#include "data/utf8.h"

namespace meshtrain::data {

namespace {

// The last / first character of s (a single byte when ill-formed).
uint32_t last_char(std::string_view s, size_t& len) {
  size_t i = s.size() - 1;
  while (i > 0 && s.size() - i < 4 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  len = utf8_char_len(s, i);
  if (len != s.size() - i) {
    len = 1;
    return static_cast<unsigned char>(s.back());
  }
  return utf8_decode(s, i, len);
}

uint32_t first_char(std::string_view s, size_t& len) {
  len = utf8_char_len(s, 0);
  if (len == 0) {
    len = 1;
    return static_cast<unsigned char>(s[0]);
  }
  return utf8_decode(s, 0, len);
}

// Alphanumeric or '_' (non-ASCII letters counted as word characters).
bool is_word_char(uint32_t c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
         (c >= 0x80 && !is_unicode_whitespace(c));
}

}  // namespace

void TokenMatcher::add(const std::string& pattern, size_t token) {
  if (pattern.empty()) return;
  int32_t node = 0;
  for (char ch : pattern) {
    const auto c = static_cast<unsigned char>(ch);
    int32_t next = child(node, c);
    if (next < 0) {
      next = static_cast<int32_t>(nodes_.size());
      nodes_.emplace_back();
      auto& edges = nodes_[node].next;
      edges.insert(std::lower_bound(edges.begin(), edges.end(), std::make_pair(c, int32_t{-1})), {c, next});
    }
    node = next;
  }
  if (nodes_[node].token < 0) nodes_[node].token = static_cast<int64_t>(token);
  first_[static_cast<unsigned char>(pattern[0])] = true;
}

int32_t TokenMatcher::child(int32_t node, unsigned char c) const {
  const auto& edges = nodes_[node].next;
  const auto it = std::lower_bound(edges.begin(), edges.end(), std::make_pair(c, int32_t{-1}));
  return it != edges.end() && it->first == c ? it->second : -1;
}

void TokenMatcher::split(std::string_view text, const std::vector<AddedToken>& tokens, std::vector<Segment>& out) const {
  out.clear();
  size_t emitted = 0;  // text before this is in `out`
  for (size_t i = 0; i < text.size();) {
    if (!first_[static_cast<unsigned char>(text[i])]) {
      ++i;
      continue;
    }
    int64_t found = -1;
    size_t found_end = 0;
    for (int32_t node = 0, k = static_cast<int32_t>(i); k < static_cast<int32_t>(text.size());) {
      node = child(node, static_cast<unsigned char>(text[k++]));
      if (node < 0) break;
      if (nodes_[node].token >= 0) found = nodes_[node].token, found_end = k;
    }
    if (found < 0) {
      ++i;
      continue;
    }
    const AddedToken& t = tokens[static_cast<size_t>(found)];
    size_t begin = i, end = found_end, len = 0;
    if (t.single_word) {
      const bool word_before = begin > 0 && is_word_char(last_char(text.substr(0, begin), len));
      const bool word_after = end < text.size() && is_word_char(first_char(text.substr(end), len));
      if (word_before || word_after) {
        ++i;
        continue;
      }
    }
    if (t.lstrip) {
      while (begin > emitted && is_unicode_whitespace(last_char(text.substr(0, begin), len))) begin -= len;
    }
    if (t.rstrip) {
      while (end < text.size() && is_unicode_whitespace(first_char(text.substr(end), len))) end += len;
    }
    if (begin > emitted) out.push_back({emitted, begin, -1});
    out.push_back({begin, end, t.id});
    emitted = i = end;
  }
  if (emitted < text.size()) out.push_back({emitted, text.size(), -1});
}

}  // namespace meshtrain::data

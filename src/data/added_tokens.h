// The added tokens of tokenizer.json (special tokens and the like): found in the text before the
// model sees it, leftmost-longest as upstream's Aho-Corasick matcher, with lstrip / rstrip /
// single_word. Tokens with normalized=false match the raw text, the others the normalized text.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace meshtrain::data {

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false, lstrip = false, rstrip = false, normalized = false, single_word = false;
};

// A span of text: an added token's id, or -1 for text the model encodes.
struct Segment {
  size_t begin, end;
  int32_t id;
};

// Leftmost-longest matching of a set of patterns over bytes.
class TokenMatcher {
 public:
  void add(const std::string& pattern, size_t token);
  bool empty() const { return nodes_.size() <= 1; }
  // Cuts `text` into text and token segments (empty text segments omitted).
  void split(std::string_view text, const std::vector<AddedToken>& tokens, std::vector<Segment>& out) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> next;  // sorted by byte
    int64_t token = -1;
  };
  int32_t child(int32_t node, unsigned char c) const;
  std::vector<Node> nodes_{Node{}};
  std::array<bool, 256> first_{};  // bytes that can start a pattern
};

}  // namespace meshtrain::data

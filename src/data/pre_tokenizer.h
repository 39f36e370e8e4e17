// Pre-tokenizers of tokenizer.json: Split (a PCRE2 regex or a literal, any split behaviour),
// ByteLevel (optional prefix space and the GPT-2 regex), Metaspace, and Sequence of these. They
// cut text into the words the BPE model encodes; byte-level mapping itself is left to the
// vocabulary (stored as raw bytes), so ByteLevel only splits.
#pragma once
#include <nlohmann/json.hpp>

#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace meshtrain::data {

// A piece of text on its way to the model; `at_origin`: it starts at byte 0 of the input (what
// Metaspace's prepend_scheme "first" asks).
struct Piece {
  std::string_view text;
  bool at_origin = false;
};

// Strings made while encoding one text; pieces point into it until it is cleared.
using TextArena = std::deque<std::string>;

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces `pieces` by their parts (empty parts dropped); new text goes into `arena`.
  virtual void split(std::vector<Piece>& pieces, TextArena& arena) const = 0;
};

struct PreTokenizerSpec {
  std::unique_ptr<PreTokenizer> pre_tokenizer;  // null: the whole piece is one word
  bool byte_level = false;                       // a ByteLevel step maps bytes to the vocabulary
};

// From the "pre_tokenizer" value of tokenizer.json (null allowed); an unsupported type, or
// ByteLevel before another step, is an error naming it.
PreTokenizerSpec make_pre_tokenizer(const nlohmann::json& spec);

// Metaspace's prepend_scheme.
enum class PrependScheme { kAlways, kFirst, kNever };
PrependScheme parse_prepend_scheme(const nlohmann::json& spec, const char* where);

}  // namespace meshtrain::data

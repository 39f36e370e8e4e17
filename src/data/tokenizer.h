// Hugging Face tokenizer.json in C++: byte-level BPE (GPT-2, Llama-3, Qwen2 style pre-tokenizer
// regexes) and SentencePiece-style BPE (Llama-2, Mistral: Metaspace or Prepend/Replace, byte
// fallback), added tokens, TemplateProcessing. Encoding gives upstream's ids exactly; anything
// else in the file is refused at load, naming the component and its type (docs/files.md).
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "data/added_tokens.h"
#include "data/bpe.h"
#include "data/normalizer.h"
#include "data/pre_tokenizer.h"
#include "data/token_decoder.h"

namespace meshtrain::data {

class Tokenizer {
 public:
  // A directory holding tokenizer.json (and optionally tokenizer_config.json, which names
  // bos_token / eos_token), or the tokenizer.json file itself.
  static Tokenizer load(const std::filesystem::path& dir_or_file);
  // `config`: tokenizer_config.json's content, or null. `origin` names the file in errors.
  static Tokenizer from_json(const std::string& tokenizer_json, const std::string& config_json,
                             const std::string& origin);

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const;
  // Appends the ids of `text` to `out` (thread-safe; one Tokenizer serves many threads).
  void encode_into(std::string_view text, bool add_special_tokens, std::vector<int32_t>& out) const;
  // As upstream's decode (ill-formed UTF-8 replaced by U+FFFD); ids outside the vocabulary skipped.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const;
  // The exact bytes, without the U+FFFD replacement: decode_bytes(encode(x)) == x for any bytes.
  std::string decode_bytes(const std::vector<int32_t>& ids, bool skip_special_tokens) const;

  // The largest id + 1 (model vocabulary and added tokens): the embedding rows a model needs.
  int64_t vocab_size() const { return static_cast<int64_t>(id_to_token_.size()); }
  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;
  std::optional<int32_t> bos_id() const { return bos_; }
  std::optional<int32_t> eos_id() const { return eos_; }

 private:
  struct TemplatePart {
    std::vector<int32_t> ids;  // a special token's ids; empty for the sequence itself
    bool sequence = false;
  };
  Tokenizer() = default;
  void encode_text(std::string_view text, bool at_origin, std::vector<int32_t>& out) const;
  void encode_piece(std::string_view text, bool at_origin, std::vector<int32_t>& out) const;
  std::string decode_impl(const std::vector<int32_t>& ids, bool skip_special_tokens, bool exact) const;
  void parse_model(const nlohmann::json& model, bool byte_level);
  void parse_added_tokens(const nlohmann::json& added);
  void parse_post_processor(const nlohmann::json& spec);
  void find_bos_eos(const nlohmann::json& config);

  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<Normalizer> normalizer_;
  PreTokenizerSpec pre_tokenizer_;
  std::unique_ptr<TokenDecoder> decoder_;
  std::vector<AddedToken> added_;
  TokenMatcher raw_matcher_, normalized_matcher_;  // added tokens with normalized false / true
  std::vector<TemplatePart> template_;             // empty: no special tokens added
  std::vector<std::string> id_to_token_;           // as written in tokenizer.json
  std::vector<int32_t> added_index_;               // id -> index in added_, or -1
  StringIdMap token_ids_;                          // as written in tokenizer.json
  std::optional<int32_t> bos_, eos_;
};

}  // namespace meshtrain::data

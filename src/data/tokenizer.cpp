// Encoding and decoding as tokenizers' TokenizerImpl: added tokens split out of the raw text,
// then per piece normalizer, added tokens of the normalized text, pre-tokenizer, BPE; the
// template adds the special tokens. Loading is in tokenizer_json.cpp.
#include "data/tokenizer.h"

namespace meshtrain::data {

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  encode_into(text, add_special_tokens, ids);
  return ids;
}

void Tokenizer::encode_into(std::string_view text, bool add_special_tokens, std::vector<int32_t>& out) const {
  if (!add_special_tokens || template_.empty()) return encode_text(text, true, out);
  for (const TemplatePart& part : template_) {
    if (part.sequence) encode_text(text, true, out);
    else out.insert(out.end(), part.ids.begin(), part.ids.end());
  }
}

void Tokenizer::encode_text(std::string_view text, bool at_origin, std::vector<int32_t>& out) const {
  if (raw_matcher_.empty()) return encode_piece(text, at_origin, out);
  std::vector<Segment> segments;  // not thread_local: encode_piece splits again
  raw_matcher_.split(text, added_, segments);
  for (const Segment& s : segments) {
    if (s.id >= 0) out.push_back(s.id);
    else encode_piece(text.substr(s.begin, s.end - s.begin), at_origin && s.begin == 0, out);
  }
}

// One span between added tokens: normalize, split out normalized added tokens, pre-tokenize, BPE.
void Tokenizer::encode_piece(std::string_view text, bool at_origin, std::vector<int32_t>& out) const {
  thread_local TextArena arena;
  thread_local std::vector<Piece> pieces;
  thread_local std::vector<Segment> segments;
  arena.clear();
  std::string_view normalized = text;
  if (normalizer_) {
    normalizer_->normalize(text, arena.emplace_back());
    normalized = arena.back();
  }
  segments.clear();
  if (normalized_matcher_.empty()) segments.push_back({0, normalized.size(), -1});
  else normalized_matcher_.split(normalized, added_, segments);
  for (const Segment& s : segments) {
    if (s.id >= 0) {
      out.push_back(s.id);
      continue;
    }
    if (s.end == s.begin) continue;
    pieces.assign(1, Piece{normalized.substr(s.begin, s.end - s.begin), at_origin && s.begin == 0});
    if (pre_tokenizer_.pre_tokenizer) pre_tokenizer_.pre_tokenizer->split(pieces, arena);
    for (const Piece& p : pieces) model_->encode_word(p.text, out);
  }
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  return decode_impl(ids, skip_special_tokens, false);
}

std::string Tokenizer::decode_bytes(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  return decode_impl(ids, skip_special_tokens, true);
}

std::string Tokenizer::decode_impl(const std::vector<int32_t>& ids, bool skip_special_tokens, bool exact) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size() || id_to_token_[id].empty()) continue;
    const int32_t added = added_index_[id];
    if (added >= 0 && skip_special_tokens && added_[added].special) continue;
    tokens.push_back(id_to_token_[id]);
  }
  if (decoder_) decoder_->apply(tokens, exact);
  std::string text;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i > 0 && !decoder_) text += ' ';  // upstream joins with spaces when there is no decoder
    text += tokens[i];
  }
  return text;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  const auto it = token_ids_.find(token);
  if (it == token_ids_.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (id < 0 || id >= vocab_size() || id_to_token_[id].empty()) return std::nullopt;
  return id_to_token_[id];
}

}  // namespace meshtrain::data

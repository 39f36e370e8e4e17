// Decoders of tokenizer.json: ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip and
// Sequence of these, applied to the token strings in turn and joined, as upstream's decode_chain.
// Anything else is refused.
#pragma once
#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

namespace meshtrain::data {

class TokenDecoder {
 public:
  virtual ~TokenDecoder() = default;
  // Transforms the token strings. `exact_bytes`: keep ill-formed UTF-8 as it is instead of
  // upstream's U+FFFD replacement, so that any encoded byte string decodes back to itself.
  virtual void apply(std::vector<std::string>& tokens, bool exact_bytes) const = 0;
};

// From the "decoder" value of tokenizer.json; null gives none (tokens joined with spaces).
std::unique_ptr<TokenDecoder> make_decoder(const nlohmann::json& spec);

}  // namespace meshtrain::data

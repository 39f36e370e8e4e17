// Normalizers of tokenizer.json that the families we train use: Prepend and Replace (of a
// literal string) of the SentencePiece-style ones, NFC (Qwen2), and Sequence of these. Anything
// else (NFKC, Lowercase, ...) is refused.
#pragma once
#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace meshtrain::data {

class Normalizer {
 public:
  struct Step {
    enum class Kind { kPrepend, kReplace, kNfc } kind;
    std::string pattern, content;  // Replace: pattern -> content; Prepend: content
  };
  explicit Normalizer(std::vector<Step> steps) : steps_(std::move(steps)) {}
  // `out` = the normalized `text` (an empty text stays empty, as upstream's Prepend leaves it).
  void normalize(std::string_view text, std::string& out) const;

 private:
  std::vector<Step> steps_;
};

// From the "normalizer" value of tokenizer.json; null gives no normalizer.
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& spec);

}  // namespace meshtrain::data

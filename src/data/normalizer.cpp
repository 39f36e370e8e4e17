// Normalizers as tokenizers' normalizers/{prepend,replace,utils}.rs: steps apply in order to the
// whole text of one piece (the text between added tokens).
#include "data/normalizer.h"

#include "data/unicode_nfc.h"
#include "util/check.h"

namespace meshtrain::data {

namespace {

void replace_all(std::string& s, const std::string& pattern, const std::string& content, std::string& scratch) {
  if (pattern.empty() || s.find(pattern) == std::string::npos) return;
  scratch.clear();
  size_t pos = 0;
  for (size_t at = s.find(pattern); at != std::string::npos; at = s.find(pattern, pos)) {
    scratch.append(s, pos, at - pos);
    scratch += content;
    pos = at + pattern.size();
  }
  scratch.append(s, pos, std::string::npos);
  s.swap(scratch);
}

void add_steps(const nlohmann::json& spec, std::vector<Normalizer::Step>& steps) {
  MT_CHECK(spec.is_object() && spec.contains("type"), "tokenizer.json: normalizer is not an object with a type: ",
           spec.dump().substr(0, 200));
  const std::string type = spec["type"].is_string() ? spec["type"].get<std::string>() : spec["type"].dump();
  if (type == "Sequence") {
    for (const auto& s : spec.at("normalizers")) add_steps(s, steps);
  } else if (type == "Prepend") {
    steps.push_back({Normalizer::Step::Kind::kPrepend, "", spec.at("prepend").get<std::string>()});
  } else if (type == "NFC") {
    steps.push_back({Normalizer::Step::Kind::kNfc, "", ""});
  } else if (type == "Replace") {
    const auto& pattern = spec.at("pattern");
    MT_CHECK(pattern.contains("String"), "tokenizer.json: unsupported normalizer: Replace with a ",
             pattern.contains("Regex") ? "Regex" : "non-String", " pattern (supported: String)");
    steps.push_back({Normalizer::Step::Kind::kReplace, pattern["String"].get<std::string>(),
                     spec.at("content").get<std::string>()});
  } else {
    fail("tokenizer.json: unsupported normalizer type '", type, "' (supported: Sequence, Prepend, Replace, NFC)");
  }
}

}  // namespace

void Normalizer::normalize(std::string_view text, std::string& out) const {
  thread_local std::string scratch;
  out.assign(text);
  for (const Step& step : steps_) {
    if (step.kind == Step::Kind::kPrepend) {
      if (!out.empty()) out.insert(0, step.content);
    } else if (step.kind == Step::Kind::kNfc) {
      to_nfc(out, scratch);
      out.swap(scratch);
    } else {
      replace_all(out, step.pattern, step.content, scratch);
    }
  }
}

std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& spec) {
  if (spec.is_null()) return nullptr;
  std::vector<Normalizer::Step> steps;
  add_steps(spec, steps);
  return std::make_unique<Normalizer>(std::move(steps));
}

}  // namespace meshtrain::data

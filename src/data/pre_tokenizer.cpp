// Pre-tokenizer steps as tokenizers' pre_tokenizers (split.rs, byte_level.rs, metaspace.rs,
// sequence.rs), with the delimiter behaviours of NormalizedString::split.
#include "data/pre_tokenizer.h"

#include <algorithm>

#include "data/regex.h"
#include "util/check.h"

namespace meshtrain::data {

namespace {

using Json = nlohmann::json;

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// The GPT-2 pattern ByteLevel's use_regex applies.
const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

Behavior parse_behavior(const Json& v) {
  const std::string b = v.is_string() ? v.get<std::string>() : v.dump();
  if (b == "Removed") return Behavior::kRemoved;
  if (b == "Isolated") return Behavior::kIsolated;
  if (b == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::kMergedWithNext;
  if (b == "Contiguous") return Behavior::kContiguous;
  fail("tokenizer.json: unsupported Split behavior '", b,
       "' (supported: Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous)");
}

struct Part {
  size_t begin, end;
  bool is_match;
};

// Cuts `piece` at `matches` with `behavior` and appends the non-empty parts to `out`.
void cut(const Piece& piece, const std::vector<std::pair<size_t, size_t>>& matches, Behavior behavior,
         std::vector<Piece>& out) {
  thread_local std::vector<Part> parts, merged;
  parts.clear();
  size_t pos = 0;
  for (const auto& [b, e] : matches) {
    if (b > pos) parts.push_back({pos, b, false});
    parts.push_back({b, e, true});
    pos = e;
  }
  if (pos < piece.text.size()) parts.push_back({pos, piece.text.size(), false});
  merged.clear();
  bool previous_match = false;
  switch (behavior) {
    case Behavior::kIsolated: merged = parts; break;
    case Behavior::kRemoved:
      for (const Part& p : parts)
        if (!p.is_match) merged.push_back(p);
      break;
    case Behavior::kMergedWithPrevious:
      for (const Part& p : parts) {
        if (p.is_match && !previous_match && !merged.empty()) merged.back().end = p.end;
        else merged.push_back(p);
        previous_match = p.is_match;
      }
      break;
    case Behavior::kMergedWithNext:
      for (size_t k = parts.size(); k-- > 0;) {
        const Part& p = parts[k];
        if (p.is_match && !previous_match && !merged.empty()) merged.back().begin = p.begin;
        else merged.push_back(p);
        previous_match = p.is_match;
      }
      std::reverse(merged.begin(), merged.end());
      break;
    case Behavior::kContiguous:
      for (const Part& p : parts) {
        if (p.is_match && previous_match) merged.back().end = p.end;
        else merged.push_back(p);
        previous_match = p.is_match;
      }
      break;
  }
  for (const Part& p : merged)
    if (p.end > p.begin) out.push_back({piece.text.substr(p.begin, p.end - p.begin), piece.at_origin && p.begin == 0});
}

class RegexSplit : public PreTokenizer {
 public:
  RegexSplit(const std::string& pattern, bool literal, Behavior behavior)
      : regex_(pattern, literal), behavior_(behavior) {}
  void split(std::vector<Piece>& pieces, TextArena&) const override {
    thread_local std::vector<Piece> out;
    thread_local std::vector<std::pair<size_t, size_t>> matches;
    out.clear();
    for (const Piece& piece : pieces) {
      regex_.find_all(piece.text, matches);
      cut(piece, matches, behavior_, out);
    }
    pieces.swap(out);
  }

 private:
  Regex regex_;
  Behavior behavior_;
};

// ByteLevel: an optional leading space on every piece, then the GPT-2 split when use_regex.
class ByteLevelSplit : public PreTokenizer {
 public:
  ByteLevelSplit(bool add_prefix_space, bool use_regex) : add_prefix_space_(add_prefix_space) {
    if (use_regex) regex_ = std::make_unique<RegexSplit>(kGpt2Pattern, false, Behavior::kIsolated);
  }
  void split(std::vector<Piece>& pieces, TextArena& arena) const override {
    if (add_prefix_space_) {
      for (Piece& p : pieces) {
        if (p.text.starts_with(' ')) continue;
        arena.push_back(" ");
        arena.back() += p.text;
        p.text = arena.back();
      }
    }
    if (regex_) regex_->split(pieces, arena);
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<RegexSplit> regex_;
};

// Metaspace: spaces become the replacement, which is prepended as the scheme says; with split,
// the text is cut before each replacement (MergedWithNext).
class Metaspace : public PreTokenizer {
 public:
  Metaspace(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
  void split(std::vector<Piece>& pieces, TextArena& arena) const override {
    thread_local std::vector<Piece> out;
    thread_local std::vector<std::pair<size_t, size_t>> matches;
    out.clear();
    for (const Piece& piece : pieces) {
      std::string& s = arena.emplace_back();
      const bool prepend = !piece.text.starts_with(' ') &&
                           (scheme_ == PrependScheme::kAlways || (scheme_ == PrependScheme::kFirst && piece.at_origin));
      if (prepend) s = replacement_;
      for (char c : piece.text) {
        if (c == ' ') s += replacement_;
        else s += c;
      }
      const Piece replaced{s, piece.at_origin};
      if (!split_) {
        if (!s.empty()) out.push_back(replaced);
        continue;
      }
      matches.clear();
      for (size_t at = s.find(replacement_); at != std::string::npos; at = s.find(replacement_, at + replacement_.size()))
        matches.emplace_back(at, at + replacement_.size());
      cut(replaced, matches, Behavior::kMergedWithNext, out);
    }
    pieces.swap(out);
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

class Sequence : public PreTokenizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<PreTokenizer>> steps) : steps_(std::move(steps)) {}
  void split(std::vector<Piece>& pieces, TextArena& arena) const override {
    for (const auto& step : steps_) step->split(pieces, arena);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

bool flag(const Json& spec, const char* key, bool fallback) {
  const auto it = spec.find(key);
  if (it == spec.end() || it->is_null()) return fallback;
  MT_CHECK(it->is_boolean(), "tokenizer.json: pre_tokenizer field '", key, "' is not a boolean: ", it->dump());
  return it->get<bool>();
}

std::unique_ptr<PreTokenizer> make_step(const Json& spec, bool& byte_level) {
  MT_CHECK(spec.is_object() && spec.contains("type"), "tokenizer.json: pre_tokenizer is not an object with a type: ",
           spec.dump().substr(0, 200));
  const std::string type = spec["type"].is_string() ? spec["type"].get<std::string>() : spec["type"].dump();
  MT_CHECK(!byte_level, "tokenizer.json: unsupported pre_tokenizer: ", type,
           " after ByteLevel (ByteLevel must be the last step)");
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (const Json& s : spec.at("pretokenizers")) steps.push_back(make_step(s, byte_level));
    return std::make_unique<Sequence>(std::move(steps));
  }
  if (type == "Split") {
    const Json& pattern = spec.at("pattern");
    MT_CHECK(!flag(spec, "invert", false), "tokenizer.json: unsupported pre_tokenizer: Split with invert true");
    const bool literal = pattern.contains("String");
    MT_CHECK(literal || pattern.contains("Regex"), "tokenizer.json: Split pattern is neither String nor Regex: ",
             pattern.dump());
    return std::make_unique<RegexSplit>(pattern.at(literal ? "String" : "Regex").get<std::string>(), literal,
                                        parse_behavior(spec.at("behavior")));
  }
  if (type == "ByteLevel") {
    byte_level = true;
    return std::make_unique<ByteLevelSplit>(flag(spec, "add_prefix_space", true), flag(spec, "use_regex", true));
  }
  if (type == "Metaspace") {
    const std::string replacement = spec.value("replacement", std::string("\xE2\x96\x81"));
    return std::make_unique<Metaspace>(replacement, parse_prepend_scheme(spec, "Metaspace pre_tokenizer"),
                                       flag(spec, "split", true));
  }
  fail("tokenizer.json: unsupported pre_tokenizer type '", type,
       "' (supported: Sequence, Split, ByteLevel, Metaspace)");
}

}  // namespace

PrependScheme parse_prepend_scheme(const Json& spec, const char* where) {
  if (spec.contains("prepend_scheme")) {
    const std::string s = spec["prepend_scheme"].is_string() ? spec["prepend_scheme"].get<std::string>()
                                                             : spec["prepend_scheme"].dump();
    if (s == "always") return PrependScheme::kAlways;
    if (s == "first") return PrependScheme::kFirst;
    if (s == "never") return PrependScheme::kNever;
    fail("tokenizer.json: ", where, " has an unknown prepend_scheme '", s, "' (supported: always, first, never)");
  }
  // Files written before prepend_scheme existed say add_prefix_space.
  return flag(spec, "add_prefix_space", true) ? PrependScheme::kAlways : PrependScheme::kNever;
}

PreTokenizerSpec make_pre_tokenizer(const Json& spec) {
  PreTokenizerSpec out;
  if (spec.is_null()) return out;
  out.pre_tokenizer = make_step(spec, out.byte_level);
  return out;
}

}  // namespace meshtrain::data

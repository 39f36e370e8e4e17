// Decoder steps as tokenizers' decoders (byte_level.rs, metaspace.rs, byte_fallback.rs, fuse.rs,
// strip.rs, replace) on whole token strings.
#include "data/token_decoder.h"

#include "data/byte_level.h"
#include "data/pre_tokenizer.h"
#include "data/utf8.h"
#include "util/check.h"

namespace meshtrain::data {

namespace {

using Json = nlohmann::json;
using Tokens = std::vector<std::string>;

// All tokens to bytes through the byte-level table (a token outside it as its own bytes), one string.
class ByteLevelDecoder : public TokenDecoder {
 public:
  void apply(Tokens& tokens, bool exact_bytes) const override {
    std::string bytes;
    for (const auto& t : tokens)
      if (!byte_level_bytes(t, bytes)) bytes += t;
    tokens.assign(1, exact_bytes ? std::move(bytes) : utf8_lossy(bytes));
  }
};

class ReplaceDecoder : public TokenDecoder {
 public:
  ReplaceDecoder(std::string pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void apply(Tokens& tokens, bool) const override {
    for (auto& t : tokens) {
      std::string out;
      size_t pos = 0;
      for (size_t at = t.find(pattern_); at != std::string::npos; at = t.find(pattern_, pos)) {
        out.append(t, pos, at - pos);
        out += content_;
        pos = at + pattern_.size();
      }
      out.append(t, pos, std::string::npos);
      t.swap(out);
    }
  }

 private:
  std::string pattern_, content_;
};

// Runs of <0xNN> tokens become their bytes when those are valid UTF-8, else one U+FFFD per byte.
class ByteFallbackDecoder : public TokenDecoder {
 public:
  void apply(Tokens& tokens, bool exact_bytes) const override {
    Tokens out;
    std::string bytes;
    size_t count = 0;
    const auto flush = [&] {
      if (count == 0) return;
      if (exact_bytes || is_valid_utf8(bytes)) {
        out.push_back(bytes);
      } else {
        for (size_t k = 0; k < count; ++k) out.push_back("\xEF\xBF\xBD");
      }
      bytes.clear();
      count = 0;
    };
    for (auto& t : tokens) {
      int byte = -1;
      if (t.size() == 6 && t.starts_with("<0x") && t.back() == '>') byte = hex_byte(t[3], t[4]);
      if (byte >= 0) {
        bytes.push_back(static_cast<char>(byte));
        ++count;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens.swap(out);
  }

 private:
  static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  static int hex_byte(char hi, char lo) {
    const int h = hex_digit(hi), l = hex_digit(lo);
    return h < 0 || l < 0 ? -1 : h * 16 + l;
  }
};

class FuseDecoder : public TokenDecoder {
 public:
  void apply(Tokens& tokens, bool) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

// Up to `start` leading and `stop` trailing copies of `content` off each token.
class StripDecoder : public TokenDecoder {
 public:
  StripDecoder(std::string content, size_t start, size_t stop) : content_(std::move(content)), start_(start), stop_(stop) {}
  void apply(Tokens& tokens, bool) const override {
    for (auto& t : tokens) {
      size_t begin = 0, end = t.size();
      for (size_t k = 0; k < start_ && t.compare(begin, content_.size(), content_) == 0 && begin < end; ++k)
        begin += content_.size();
      for (size_t k = 0; k < stop_ && end >= begin + content_.size() &&
                         t.compare(end - content_.size(), content_.size(), content_) == 0; ++k)
        end -= content_.size();
      t = t.substr(begin, end - begin);
    }
  }

 private:
  std::string content_;
  size_t start_, stop_;
};

// The replacement becomes a space, except in the first token unless prepend_scheme is never.
class MetaspaceDecoder : public TokenDecoder {
 public:
  MetaspaceDecoder(std::string replacement, PrependScheme scheme) : replacement_(std::move(replacement)), scheme_(scheme) {}
  void apply(Tokens& tokens, bool) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      const std::string with = i == 0 && scheme_ != PrependScheme::kNever ? "" : " ";
      std::string out;
      const std::string& t = tokens[i];
      size_t pos = 0;
      for (size_t at = t.find(replacement_); at != std::string::npos; at = t.find(replacement_, pos)) {
        out.append(t, pos, at - pos);
        out += with;
        pos = at + replacement_.size();
      }
      out.append(t, pos, std::string::npos);
      tokens[i] = std::move(out);
    }
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
};

class SequenceDecoder : public TokenDecoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<TokenDecoder>> steps) : steps_(std::move(steps)) {}
  void apply(Tokens& tokens, bool exact_bytes) const override {
    for (const auto& s : steps_) s->apply(tokens, exact_bytes);
  }

 private:
  std::vector<std::unique_ptr<TokenDecoder>> steps_;
};

// Strip's content is one character in tokenizer.json.
std::string strip_content(const Json& v) {
  MT_CHECK(v.is_string(), "tokenizer.json: Strip decoder content is not a string: ", v.dump());
  return v.get<std::string>();
}

size_t count(const Json& spec, const char* key) {
  const auto& v = spec.at(key);
  MT_CHECK(v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0),
           "tokenizer.json: Strip decoder ", key, " is not a count: ", v.dump());
  return v.get<size_t>();
}

}  // namespace

std::unique_ptr<TokenDecoder> make_decoder(const Json& spec) {
  if (spec.is_null()) return nullptr;
  MT_CHECK(spec.is_object() && spec.contains("type"), "tokenizer.json: decoder is not an object with a type: ",
           spec.dump().substr(0, 200));
  const std::string type = spec["type"].is_string() ? spec["type"].get<std::string>() : spec["type"].dump();
  if (type == "Sequence") {
    std::vector<std::unique_ptr<TokenDecoder>> steps;
    for (const auto& s : spec.at("decoders")) steps.push_back(make_decoder(s));
    return std::make_unique<SequenceDecoder>(std::move(steps));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") return std::make_unique<StripDecoder>(strip_content(spec.at("content")), count(spec, "start"), count(spec, "stop"));
  if (type == "Replace") {
    const auto& pattern = spec.at("pattern");
    MT_CHECK(pattern.contains("String"), "tokenizer.json: unsupported decoder: Replace with a non-String pattern");
    return std::make_unique<ReplaceDecoder>(pattern["String"].get<std::string>(), spec.at("content").get<std::string>());
  }
  if (type == "Metaspace") {
    return std::make_unique<MetaspaceDecoder>(spec.value("replacement", std::string("\xE2\x96\x81")),
                                              parse_prepend_scheme(spec, "Metaspace decoder"));
  }
  fail("tokenizer.json: unsupported decoder type '", type,
       "' (supported: Sequence, ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip)");
}

}  // namespace meshtrain::data

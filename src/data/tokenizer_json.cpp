// Loading tokenizer.json: each component parsed once into its typed form; any component or
// type outside the supported families is an error naming it. Byte-level vocabularies are
// stored as raw bytes so that encoding never maps characters.
#include <fstream>
#include <sstream>

#include "data/byte_level.h"
#include "data/tokenizer.h"
#include "util/check.h"
#include "util/json_int.h"

namespace meshtrain::data {

namespace {

using Json = nlohmann::json;

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  MT_CHECK(in, path, ": cannot read the file");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

bool null_or(const Json& j, const char* key) { return !j.contains(key) || j[key].is_null(); }

std::string type_of(const Json& spec) {
  return spec["type"].is_string() ? spec["type"].get<std::string>() : spec["type"].dump();
}

// The token in model space: raw bytes for byte-level vocabularies (as written when a character
// falls outside the byte table, e.g. in an added token).
std::string model_space(const std::string& token, bool byte_level) {
  if (!byte_level) return token;
  std::string bytes;
  return byte_level_bytes(token, bytes) ? bytes : token;
}

int32_t token_id(const Json& v, const std::string& what) {
  const int64_t id = util::json_int(v, what);
  MT_CHECK(id >= 0 && id < (int64_t{1} << 31), what, " ", id, " is outside [0, 2^31)");
  return static_cast<int32_t>(id);
}

// A tokenizer_config.json token entry: "<s>" or {"content": "<s>", ...}.
std::optional<std::string> config_token(const Json& config, const char* key) {
  if (!config.is_object() || !config.contains(key)) return std::nullopt;
  const Json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return std::nullopt;
}

}  // namespace

Tokenizer Tokenizer::load(const std::filesystem::path& dir_or_file) {
  const bool dir = std::filesystem::is_directory(dir_or_file);
  const auto file = dir ? dir_or_file / "tokenizer.json" : dir_or_file;
  MT_CHECK(std::filesystem::is_regular_file(file), file, ": no such tokenizer file",
           dir ? " (the directory has no tokenizer.json)" : "");
  const auto config = file.parent_path() / "tokenizer_config.json";
  return from_json(read_text(file), std::filesystem::exists(config) ? read_text(config) : "", file.string());
}

Tokenizer Tokenizer::from_json(const std::string& tokenizer_json, const std::string& config_json,
                               const std::string& origin) {
  Tokenizer t;
  try {
    const Json j = Json::parse(tokenizer_json);
    MT_CHECK(j.is_object() && j.contains("model"), "tokenizer.json: not a tokenizer file (no \"model\")");
    MT_CHECK(null_or(j, "truncation"), "tokenizer.json: unsupported truncation (only null is supported)");
    MT_CHECK(null_or(j, "padding"), "tokenizer.json: unsupported padding (only null is supported)");
    t.normalizer_ = make_normalizer(j.value("normalizer", Json()));
    t.pre_tokenizer_ = make_pre_tokenizer(j.value("pre_tokenizer", Json()));
    t.decoder_ = make_decoder(j.value("decoder", Json()));
    t.parse_model(j["model"], t.pre_tokenizer_.byte_level);
    t.parse_added_tokens(j.value("added_tokens", Json::array()));
    t.parse_post_processor(j.value("post_processor", Json()));
    t.find_bos_eos(config_json.empty() ? Json() : Json::parse(config_json));
  } catch (const Json::exception& e) {
    fail(origin, ": invalid tokenizer JSON: ", e.what());
  } catch (const Error& e) {
    std::string message = e.what();
    if (message.starts_with("tokenizer.json: ")) message = message.substr(16);
    throw Error(origin + ": " + message);
  }
  return t;
}

void Tokenizer::parse_model(const Json& model, bool byte_level) {
  MT_CHECK(model.is_object(), "tokenizer.json: model is not an object");
  const std::string type = model.contains("type") ? type_of(model) : (model.contains("merges") ? "BPE" : "?");
  MT_CHECK(type == "BPE", "tokenizer.json: unsupported model type '", type, "' (supported: BPE)");
  MT_CHECK(null_or(model, "dropout") || model["dropout"] == 0, "tokenizer.json: unsupported model: BPE dropout ",
           model["dropout"].dump());
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    MT_CHECK(null_or(model, key) || model[key] == "", "tokenizer.json: unsupported model: BPE ", key, " ",
             model[key].dump());
  StringIdMap vocab;
  const Json& v = model.at("vocab");
  MT_CHECK(v.is_object(), "tokenizer.json: BPE vocab is not an object");
  for (const auto& [token, id_json] : v.items()) {
    const int32_t id = token_id(id_json, "tokenizer.json: vocab id of '" + token + "'");
    if (static_cast<size_t>(id) >= id_to_token_.size()) id_to_token_.resize(id + 1);
    id_to_token_[id] = token;
    token_ids_[token] = id;
    vocab[model_space(token, byte_level)] = id;
  }
  std::vector<std::pair<std::string, std::string>> merges;
  for (const Json& m : model.value("merges", Json::array())) {
    std::string a, b;
    if (m.is_string()) {  // "a b", the format before tokenizers 0.20
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      MT_CHECK(space != std::string::npos && s.find(' ', space + 1) == std::string::npos,
               "tokenizer.json: BPE merge '", s, "' is not two tokens separated by one space");
      a = s.substr(0, space), b = s.substr(space + 1);
    } else {
      MT_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(),
               "tokenizer.json: BPE merge ", m.dump(), " is not a pair of strings");
      a = m[0].get<std::string>(), b = m[1].get<std::string>();
    }
    merges.emplace_back(model_space(a, byte_level), model_space(b, byte_level));
  }
  BpeOptions options;
  options.byte_symbols = byte_level;
  options.byte_fallback = model.value("byte_fallback", false);
  options.fuse_unk = model.value("fuse_unk", false);
  options.ignore_merges = model.value("ignore_merges", false);
  if (!null_or(model, "unk_token")) options.unk_token = model_space(model["unk_token"].get<std::string>(), byte_level);
  model_ = std::make_unique<BpeModel>(std::move(vocab), merges, std::move(options));
}

void Tokenizer::parse_added_tokens(const Json& added) {
  MT_CHECK(added.is_array(), "tokenizer.json: added_tokens is not a list");
  for (const Json& a : added) {
    AddedToken t;
    t.content = a.at("content").get<std::string>();
    t.id = token_id(a.at("id"), "tokenizer.json: added token id of '" + t.content + "'");
    t.special = a.value("special", false);
    t.lstrip = a.value("lstrip", false);
    t.rstrip = a.value("rstrip", false);
    t.normalized = a.value("normalized", !t.special);
    t.single_word = a.value("single_word", false);
    added_.push_back(t);
    if (static_cast<size_t>(t.id) >= id_to_token_.size()) id_to_token_.resize(t.id + 1);
    id_to_token_[t.id] = t.content;
    token_ids_[t.content] = t.id;
  }
  added_index_.assign(id_to_token_.size(), -1);
  for (size_t i = 0; i < added_.size(); ++i) {
    const AddedToken& t = added_[i];
    added_index_[t.id] = static_cast<int32_t>(i);
    if (t.normalized && normalizer_) {
      // Upstream matches a normalized token's normalized content, and decodes it as that.
      std::string pattern;
      normalizer_->normalize(t.content, pattern);
      normalized_matcher_.add(pattern, i);
      id_to_token_[t.id] = pattern;
    } else {
      raw_matcher_.add(t.content, i);
    }
  }
}

void Tokenizer::parse_post_processor(const Json& spec) {
  if (spec.is_null()) return;
  MT_CHECK(spec.is_object() && spec.contains("type"), "tokenizer.json: post_processor is not an object with a type");
  const std::string type = type_of(spec);
  if (type == "Sequence") {
    for (const Json& p : spec.at("processors")) parse_post_processor(p);
    return;
  }
  if (type == "ByteLevel") return;  // changes offsets only
  MT_CHECK(type == "TemplateProcessing", "tokenizer.json: unsupported post_processor type '", type,
           "' (supported: TemplateProcessing, ByteLevel, Sequence)");
  MT_CHECK(template_.empty(), "tokenizer.json: unsupported post_processor: two TemplateProcessing steps");
  const Json& special = spec.value("special_tokens", Json::object());
  for (const Json& item : spec.at("single")) {
    TemplatePart part;
    if (item.contains("Sequence")) {
      part.sequence = true;
    } else {
      MT_CHECK(item.contains("SpecialToken"), "tokenizer.json: TemplateProcessing item ", item.dump(),
               " is neither SpecialToken nor Sequence");
      const std::string name = item["SpecialToken"].at("id").get<std::string>();
      MT_CHECK(special.contains(name), "tokenizer.json: TemplateProcessing names special token '", name,
               "' missing from its special_tokens");
      for (const Json& id : special[name].at("ids"))
        part.ids.push_back(token_id(id, "tokenizer.json: TemplateProcessing id of '" + name + "'"));
    }
    template_.push_back(std::move(part));
  }
}

// bos / eos: tokenizer_config.json when it names them, else the template's tokens around the
// sequence, else the usual names among the special tokens.
void Tokenizer::find_bos_eos(const Json& config) {
  if (auto name = config_token(config, "bos_token")) bos_ = token_to_id(*name);
  if (auto name = config_token(config, "eos_token")) eos_ = token_to_id(*name);
  bool after_sequence = false;
  for (const TemplatePart& part : template_) {
    if (part.sequence) after_sequence = true;
    else if (part.ids.size() == 1 && !after_sequence && !bos_) bos_ = part.ids[0];
    else if (part.ids.size() == 1 && after_sequence && !eos_) eos_ = part.ids[0];
  }
  for (const AddedToken& t : added_) {
    if (!t.special) continue;
    if (!bos_ && (t.content == "<s>" || t.content == "<|begin_of_text|>" || t.content == "<bos>")) bos_ = t.id;
    if (!eos_ && (t.content == "</s>" || t.content == "<|end_of_text|>" || t.content == "<|endoftext|>" ||
                  t.content == "<eos>"))
      eos_ = t.id;
  }
}

}  // namespace meshtrain::data

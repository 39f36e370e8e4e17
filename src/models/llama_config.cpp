#include "models/llama_config.h"

#include "util/check.h"
#include "util/files.h"

namespace meshtrain::models {

namespace {

using nlohmann::json;

template <typename T>
T field(const json& j, const char* name, const std::string& source, std::optional<T> fallback = {}) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) {
    MT_CHECK(fallback.has_value(), source, ": missing required field \"", name, "\"");
    return *fallback;
  }
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    fail(source, ": field \"", name, "\" has the wrong type: ", it->dump());
  }
}

nn::RopeScaling parse_rope(const json& j, const std::string& source) {
  nn::RopeScaling s;
  if (j.is_null()) return s;
  MT_CHECK(j.is_object(), source, ": rope scaling must be an object, got ", j.dump());
  std::string type = j.contains("rope_type") ? field<std::string>(j, "rope_type", source)
                                             : field<std::string>(j, "type", source, "default");
  if (type == "default") return s;
  if (type == "linear") {
    s.type = nn::RopeScaling::Type::Linear;
  } else if (type == "llama3") {
    s.type = nn::RopeScaling::Type::Llama3;
    s.low_freq_factor = field<double>(j, "low_freq_factor", source);
    s.high_freq_factor = field<double>(j, "high_freq_factor", source);
    s.original_max_position_embeddings = field<int64_t>(j, "original_max_position_embeddings", source);
    MT_CHECK(s.high_freq_factor > s.low_freq_factor, source, ": llama3 rope needs high_freq_factor (",
             s.high_freq_factor, ") > low_freq_factor (", s.low_freq_factor, ")");
  } else {
    fail(source, ": unsupported rope_type \"", type, "\" (supported: default, linear, llama3)");
  }
  s.factor = field<double>(j, "factor", source);
  MT_CHECK(s.factor > 0, source, ": rope scaling factor must be > 0, got ", s.factor);
  return s;
}

}  // namespace

LlamaConfig LlamaConfig::from_json(const json& j, const std::string& source) {
  MT_CHECK(j.is_object(), source, ": config must be a JSON object");
  auto model_type = field<std::string>(j, "model_type", source);
  MT_CHECK(model_type == "llama", source, ": unsupported model_type \"", model_type,
           "\" (supported: llama)");
  LlamaConfig c;
  c.raw = j;
  c.vocab_size = field<int64_t>(j, "vocab_size", source);
  c.hidden_size = field<int64_t>(j, "hidden_size", source);
  c.intermediate_size = field<int64_t>(j, "intermediate_size", source);
  c.num_hidden_layers = field<int64_t>(j, "num_hidden_layers", source);
  c.num_attention_heads = field<int64_t>(j, "num_attention_heads", source);
  c.num_key_value_heads = field<int64_t>(j, "num_key_value_heads", source, c.num_attention_heads);
  for (auto [name, value] : {std::pair{"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size},
                             {"intermediate_size", c.intermediate_size},
                             {"num_hidden_layers", c.num_hidden_layers},
                             {"num_attention_heads", c.num_attention_heads},
                             {"num_key_value_heads", c.num_key_value_heads}})
    MT_CHECK(value > 0, source, ": ", name, " must be positive, got ", value);
  MT_CHECK(c.hidden_size % c.num_attention_heads == 0 || j.contains("head_dim"), source,
           ": hidden_size ", c.hidden_size, " is not divisible by num_attention_heads ",
           c.num_attention_heads, " and no head_dim is given");
  c.head_dim = field<int64_t>(j, "head_dim", source, c.hidden_size / c.num_attention_heads);
  MT_CHECK(c.head_dim > 0 && c.head_dim % 2 == 0, source, ": head_dim must be positive and even, got ",
           c.head_dim);
  MT_CHECK(c.num_attention_heads % c.num_key_value_heads == 0, source, ": num_attention_heads ",
           c.num_attention_heads, " is not a multiple of num_key_value_heads ", c.num_key_value_heads);
  c.max_position_embeddings = field<int64_t>(j, "max_position_embeddings", source, 2048);
  c.rms_norm_eps = field<double>(j, "rms_norm_eps", source, 1e-6);
  MT_CHECK(c.rms_norm_eps > 0, source, ": rms_norm_eps must be > 0, got ", c.rms_norm_eps);
  if (j.contains("rope_parameters") && !j["rope_parameters"].is_null()) {
    c.rope_theta = field<double>(j["rope_parameters"], "rope_theta", source, 10000.0);
    c.rope_scaling = parse_rope(j["rope_parameters"], source);
  } else {
    c.rope_theta = field<double>(j, "rope_theta", source, 10000.0);
    c.rope_scaling = parse_rope(j.value("rope_scaling", json()), source);
  }
  c.tie_word_embeddings = field<bool>(j, "tie_word_embeddings", source, false);
  c.attention_bias = field<bool>(j, "attention_bias", source, false);
  c.mlp_bias = field<bool>(j, "mlp_bias", source, false);
  c.initializer_range = field<double>(j, "initializer_range", source, 0.02);
  if (j.contains("pad_token_id") && !j["pad_token_id"].is_null())
    c.pad_token_id = field<int64_t>(j, "pad_token_id", source);
  auto act = field<std::string>(j, "hidden_act", source, "silu");
  MT_CHECK(act == "silu", source, ": unsupported hidden_act \"", act, "\" (supported: silu)");
  return c;
}

LlamaConfig LlamaConfig::load(const std::filesystem::path& file_or_dir) {
  auto path = std::filesystem::is_directory(file_or_dir) ? file_or_dir / "config.json" : file_or_dir;
  json j;
  try {
    j = json::parse(util::read_file(path));
  } catch (const json::exception& e) {
    fail(path.string(), ": not valid JSON: ", e.what());
  }
  return from_json(j, path.string());
}

json LlamaConfig::to_json() const {
  json j = raw;
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  j.erase("torch_dtype");
  j["dtype"] = "float32";
  return j;
}

int64_t LlamaConfig::num_parameters() const {
  const int64_t D = hidden_size, q = num_attention_heads * head_dim, kv = num_key_value_heads * head_dim;
  int64_t attn = D * q * 2 + D * kv * 2 + (attention_bias ? q + 2 * kv + D : 0);
  int64_t mlp = 3 * D * intermediate_size + (mlp_bias ? 2 * intermediate_size + D : 0);
  int64_t layer = attn + mlp + 2 * D;
  return vocab_size * D * (tie_word_embeddings ? 1 : 2) + num_hidden_layers * layer + D;
}

double LlamaConfig::flops_per_token(int64_t seq_len) const {
  const double D = hidden_size, q = num_attention_heads * head_dim, kv = num_key_value_heads * head_dim;
  const double matmul = num_hidden_layers * (2 * D * q + 2 * D * kv + 3 * D * intermediate_size) +
                        vocab_size * D;
  return 6 * matmul + 12.0 * num_hidden_layers * seq_len * num_attention_heads * head_dim;
}

}  // namespace meshtrain::models

#include "models/llama_config.h"

#include <limits>
#include <type_traits>

#include "util/check.h"
#include "util/files.h"
#include "util/json_int.h"

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
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
      const int64_t v = util::json_int(*it, source + ": field \"" + name + "\"");
      MT_CHECK(v >= std::numeric_limits<T>::min() && v <= std::numeric_limits<T>::max(), source, ": field \"", name,
               "\" is out of range: ", v);
      return static_cast<T>(v);
    } else {
      return it->get<T>();
    }
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

// The MoE fields of mixtral and qwen3_moe, with transformers' defaults for absent ones.
void parse_moe(const json& j, const std::string& source, LlamaConfig& c) {
  MoeConfig m;
  const bool mixtral = c.model_type == "mixtral";
  c.mlp_bias = false;  // neither model has MLP biases
  if (mixtral) {
    c.attention_bias = false;
    m.num_experts = field<int64_t>(j, "num_local_experts", source, 8);
    m.num_experts_per_tok = field<int64_t>(j, "num_experts_per_tok", source, 2);
    m.intermediate_size = c.intermediate_size;
    m.norm_topk_prob = true;
    MT_CHECK(m.num_experts > 0, source, ": num_local_experts must be positive, got ", m.num_experts);
    const auto jitter = field<double>(j, "router_jitter_noise", source, 0.0);
    MT_CHECK(jitter == 0.0, source, ": router_jitter_noise ", jitter,
             " is not supported (training parity needs 0: the noise is random per step)");
    MT_CHECK(!j.contains("sliding_window") || j["sliding_window"].is_null(), source, ": sliding_window ",
             j["sliding_window"].dump(), " is not supported (set it to null for full causal attention)");
  } else {
    c.qk_norm = true;
    // transformers 5 writes num_experts as num_local_experts (a config attribute_map).
    const char* experts_key = j.contains("num_experts") ? "num_experts" : "num_local_experts";
    m.num_experts = field<int64_t>(j, experts_key, source, 128);
    m.num_experts_per_tok = field<int64_t>(j, "num_experts_per_tok", source, 8);
    m.intermediate_size = field<int64_t>(j, "moe_intermediate_size", source, 768);
    m.norm_topk_prob = field<bool>(j, "norm_topk_prob", source, false);
    m.decoder_sparse_step = field<int64_t>(j, "decoder_sparse_step", source, 1);
    m.mlp_only_layers = field<std::vector<int64_t>>(j, "mlp_only_layers", source, std::vector<int64_t>{});
    MT_CHECK(m.num_experts >= 0, source, ": ", experts_key, " must be >= 0, got ", m.num_experts);
    MT_CHECK(m.decoder_sparse_step > 0, source, ": decoder_sparse_step must be positive, got ",
             m.decoder_sparse_step);
    MT_CHECK(!field<bool>(j, "use_sliding_window", source, false), source,
             ": use_sliding_window true is not supported");
  }
  m.router_aux_loss_coef = field<double>(j, "router_aux_loss_coef", source, 0.001);
  m.output_router_logits = field<bool>(j, "output_router_logits", source, false);
  m.capacity_factor = field<double>(j, "capacity_factor", source, 0.0);
  MT_CHECK(m.capacity_factor >= 0, source, ": capacity_factor must be >= 0 (0 = dropless), got ",
           m.capacity_factor);
  if (m.num_experts > 0) {
    MT_CHECK(m.num_experts_per_tok > 0 && m.num_experts_per_tok <= m.num_experts, source,
             ": num_experts_per_tok must be in [1, ", m.num_experts, "], got ", m.num_experts_per_tok);
    MT_CHECK(m.intermediate_size > 0, source, ": the expert intermediate size must be positive, got ",
             m.intermediate_size);
  }
  c.moe = m;
}

}  // namespace

LlamaConfig LlamaConfig::from_json(const json& j, const std::string& source) {
  MT_CHECK(j.is_object(), source, ": config must be a JSON object");
  auto model_type = field<std::string>(j, "model_type", source);
  MT_CHECK(model_type == "llama" || model_type == "mixtral" || model_type == "qwen3_moe", source,
           ": unsupported model_type \"", model_type, "\" (supported: llama, mixtral, qwen3_moe)");
  LlamaConfig c;
  c.model_type = model_type;
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
  const bool has_head_dim = j.contains("head_dim") && !j["head_dim"].is_null();
  MT_CHECK(c.hidden_size % c.num_attention_heads == 0 || has_head_dim, source,
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
    c.rope_theta = field<double>(j, "rope_theta", source, model_type == "mixtral" ? 1e6 : 10000.0);
    c.rope_scaling = parse_rope(j.value("rope_scaling", json()), source);
  }
  c.tie_word_embeddings = field<bool>(j, "tie_word_embeddings", source, false);
  c.attention_bias = field<bool>(j, "attention_bias", source, false);
  c.mlp_bias = field<bool>(j, "mlp_bias", source, false);
  c.initializer_range = field<double>(j, "initializer_range", source, 0.02);
  if (j.contains("pad_token_id") && !j["pad_token_id"].is_null())
    c.pad_token_id = field<int64_t>(j, "pad_token_id", source);
  for (const char* key : {"torch_dtype", "dtype"})  // transformers 5 writes dtype
    if (j.contains(key) && j[key].is_string() && j[key].get<std::string>() != "auto") c.dtype = j[key].get<std::string>();
  c.storage_dtype();  // checks the name
  if (j.contains("eos_token_id") && !j["eos_token_id"].is_null()) {
    const auto& eos = j["eos_token_id"];
    MT_CHECK(eos.is_number_integer() || (eos.is_array() && !eos.empty() && eos[0].is_number_integer()), source,
             ": eos_token_id must be an integer or a list of integers, got ", eos.dump());
    c.eos_token_id = eos.is_array() ? eos[0].get<int64_t>() : eos.get<int64_t>();
  }
  auto act = field<std::string>(j, "hidden_act", source, "silu");
  MT_CHECK(act == "silu", source, ": unsupported hidden_act \"", act, "\" (supported: silu)");
  if (model_type != "llama") parse_moe(j, source, c);
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
  const char* architecture = model_type == "mixtral"     ? "MixtralForCausalLM"
                             : model_type == "qwen3_moe" ? "Qwen3MoeForCausalLM"
                                                         : "LlamaForCausalLM";
  j["architectures"] = {architecture};
  j["model_type"] = model_type;
  j.erase("torch_dtype");
  j["dtype"] = dtype;
  return j;
}

at::ScalarType LlamaConfig::storage_dtype() const {
  if (dtype == "float32") return at::kFloat;
  if (dtype == "bfloat16") return at::kBFloat16;
  if (dtype == "float16") return at::kHalf;
  fail("unsupported dtype \"", dtype, "\" (supported: float32, bfloat16, float16)");
}

bool LlamaConfig::is_moe_layer(int64_t layer_index) const {
  if (!moe || moe->num_experts == 0) return false;
  for (auto i : moe->mlp_only_layers)
    if (i == layer_index) return false;
  return (layer_index + 1) % moe->decoder_sparse_step == 0;
}

int64_t LlamaConfig::num_moe_layers() const {
  int64_t n = 0;
  for (int64_t i = 0; i < num_hidden_layers; ++i) n += is_moe_layer(i);
  return n;
}

int64_t LlamaConfig::num_parameters() const {
  const int64_t D = hidden_size, q = num_attention_heads * head_dim, kv = num_key_value_heads * head_dim;
  const int64_t attn = D * q * 2 + D * kv * 2 + (attention_bias ? q + 2 * kv + D : 0) + (qk_norm ? 2 * head_dim : 0);
  const int64_t dense = 3 * D * intermediate_size + (mlp_bias ? 2 * intermediate_size + D : 0);
  int64_t total = vocab_size * D * (tie_word_embeddings ? 1 : 2) + D;
  for (int64_t i = 0; i < num_hidden_layers; ++i)
    total += attn + 2 * D +
             (is_moe_layer(i) ? moe->num_experts * (D + 3 * D * moe->intermediate_size) : dense);
  return total;
}

double LlamaConfig::flops_per_token(int64_t seq_len) const {
  const double D = hidden_size, q = num_attention_heads * head_dim, kv = num_key_value_heads * head_dim;
  double matmul = vocab_size * D;
  for (int64_t i = 0; i < num_hidden_layers; ++i) {
    matmul += 2 * D * q + 2 * D * kv;
    matmul += is_moe_layer(i) ? D * moe->num_experts + moe->num_experts_per_tok * 3 * D * moe->intermediate_size
                              : 3 * D * intermediate_size;
  }
  return 6 * matmul + 12.0 * num_hidden_layers * seq_len * num_attention_heads * head_dim;
}

}  // namespace meshtrain::models

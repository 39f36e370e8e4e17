// LlamaConfig: the fields of a Hugging Face config.json that the model needs, validated once
// when read. Both RoPE spellings load: transformers 4 (rope_theta + rope_scaling) and 5
// (rope_parameters). The original JSON is kept so a save writes back what was read.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "nn/rope.h"

namespace meshtrain::models {

struct LlamaConfig {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  nn::RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;
  bool mlp_bias = false;
  double initializer_range = 0.02;
  std::optional<int64_t> pad_token_id;
  nlohmann::json raw;  // the config.json as read

  static LlamaConfig from_json(const nlohmann::json& json, const std::string& source);
  static LlamaConfig load(const std::filesystem::path& file_or_dir);
  // The JSON to save: the original fields, with architectures and dtype filled in.
  nlohmann::json to_json() const;

  // Parameters as stored (tied embeddings counted once).
  int64_t num_parameters() const;
  // Training FLOPs per token: 6·N_matmul + 12·L·T·H·d (forward + backward, attention scores).
  double flops_per_token(int64_t seq_len) const;
};

}  // namespace meshtrain::models

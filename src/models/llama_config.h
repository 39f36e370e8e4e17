// LlamaConfig: the fields of a Hugging Face config.json that the model needs, validated once
// when read: model_type llama, mixtral or qwen3_moe (the MoE ones fill the moe section). Both RoPE
// spellings load: transformers 4 (rope_theta + rope_scaling) and 5 (rope_parameters). The
// original JSON is kept so a save writes back what was read.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "nn/rope.h"

namespace meshtrain::models {

// How a checkpoint stores the experts: one Linear per expert (what transformers 5 save_pretrained
// writes: Mixtral experts.N.w1/w2/w3, Qwen3-MoE experts.N.gate_proj/up_proj/down_proj) or the
// fused 3-D tensors experts.gate_up_proj [E, 2I, D] and experts.down_proj [E, D, I].
enum class ExpertLayout { PerExpert, Fused };

// The sparse mixture-of-experts part of a Mixtral or Qwen3-MoE config.
struct MoeConfig {
  int64_t num_experts = 0;          // E (mixtral: num_local_experts, qwen3_moe: num_experts)
  int64_t num_experts_per_tok = 0;  // k
  int64_t intermediate_size = 0;    // I of each expert
  bool norm_topk_prob = true;       // renormalise the top-k weights (always for mixtral)
  double router_aux_loss_coef = 0.001;
  bool output_router_logits = false;  // add coef * load-balancing loss to the training loss
  int64_t decoder_sparse_step = 1;
  std::vector<int64_t> mlp_only_layers;
  // meshtrain extension (config.json "capacity_factor", absent upstream): 0 = dropless; else
  // each expert takes at most ceil(capacity_factor * N * k / E) of a forward's N*k assignments.
  double capacity_factor = 0.0;
  // Layout of the checkpoint the weights came from, used again when saving; not in config.json.
  ExpertLayout checkpoint_layout = ExpertLayout::PerExpert;
};

struct LlamaConfig {
  std::string model_type = "llama";
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
  std::optional<int64_t> eos_token_id;  // the first when config.json lists several
  // The weights' dtype on disk (config.json's dtype, or torch_dtype before transformers 5):
  // float32, bfloat16 or float16. Training holds fp32 masters; an export writes this dtype.
  std::string dtype = "float32";
  at::ScalarType storage_dtype() const;
  bool qk_norm = false;  // RMSNorm over head_dim on q and k before RoPE (qwen3_moe)
  std::optional<MoeConfig> moe;
  nlohmann::json raw;  // the config.json as read

  static LlamaConfig from_json(const nlohmann::json& json, const std::string& source);
  static LlamaConfig load(const std::filesystem::path& file_or_dir);
  // The JSON to save: the original fields, with architectures and dtype filled in.
  nlohmann::json to_json() const;

  // Whether decoder layer i has a sparse MoE block instead of the dense MLP (HF's rule: not in
  // mlp_only_layers, num_experts > 0 and (i + 1) % decoder_sparse_step == 0).
  bool is_moe_layer(int64_t layer_index) const;
  int64_t num_moe_layers() const;

  // Parameters as stored (tied embeddings counted once; every expert counted).
  int64_t num_parameters() const;
  // Training FLOPs per token: 6·N_matmul + 12·L·T·H·d (forward + backward, attention scores),
  // where an MoE layer's N_matmul counts the router and the k active experts only.
  double flops_per_token(int64_t seq_len) const;
};

}  // namespace meshtrain::models

// LlamaForCausalLM with Hugging Face's math and parameter names, also running Mixtral and
// Qwen3-MoE (model.layers.N.mlp.gate / mlp.experts.*, as transformers 5 holds them). Written
// serially; parallelism enters only through the nn/ seams and the placement records.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "models/llama_config.h"
#include "nn/attention.h"
#include "nn/layer_runner.h"
#include "nn/linear.h"
#include "nn/mlp.h"
#include "nn/moe.h"
#include "nn/placement.h"
#include "nn/rms_norm.h"

namespace meshtrain::models {

// The router records of a forward's MoE layers, in the order they ran.
using Routing = std::vector<nn::RouterRecord>;

class LlamaDecoderLayer : public torch::nn::Module {
 public:
  LlamaDecoderLayer(const LlamaConfig& c, int64_t layer_index = 0);
  // The hidden states, and a MoE layer's router record. document_ids: see LlamaModel::forward.
  nn::LayerOutput forward(const at::Tensor& hidden, const nn::RopeTables& rope, const at::Tensor& document_ids = {});

  std::shared_ptr<nn::RMSNorm> input_layernorm, post_attention_layernorm;
  std::shared_ptr<nn::Attention> self_attn;
  std::shared_ptr<nn::Mlp> mlp;        // dense layers
  std::shared_ptr<nn::SparseMoe> moe;  // MoE layers (registered as "mlp", HF's name); mlp is null
};

class LlamaModel : public torch::nn::Module {
 public:
  explicit LlamaModel(const LlamaConfig& c);
  // input_ids [B, T], position_ids [B, T] -> final hidden states [B, T, D]. document_ids [B, T_global]
  // (nn::packed_document_ids of the whole sequence's position_ids, before any sequence sharding):
  // attention stays inside each document; undefined: causal over each row.
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& position_ids, Routing* routing = nullptr,
                     const at::Tensor& document_ids = {});
  // The decoder layers [begin, end) this model holds (null entries are skipped), in order; end -1:
  // to the last.
  at::Tensor forward_layers(at::Tensor hidden, const at::Tensor& position_ids, Routing* routing = nullptr,
                            const at::Tensor& document_ids = {}, int64_t begin = 0, int64_t end = -1);

  std::shared_ptr<nn::Embedding> embed_tokens;
  std::vector<std::shared_ptr<LlamaDecoderLayer>> layers;  // by global index; null where not held
  std::shared_ptr<nn::RMSNorm> norm;
  nn::LayerRunnerChain runners;  // how each layer runs (FSDP, activation checkpointing)

 private:
  nn::RotaryEmbedding rotary_;
};

class LlamaForCausalLM : public torch::nn::Module {
 public:
  explicit LlamaForCausalLM(const LlamaConfig& c);

  // input_ids [B, T] -> logits [B, T, V]. position_ids default to 0..T-1 for every row. The MoE
  // layers' router records go to `routing` when given. document_ids: see LlamaModel::forward.
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& position_ids = {}, Routing* routing = nullptr,
                     const at::Tensor& document_ids = {});

  // Keeps the slices of the stack one pipeline rank holds (HF's base_model_pp_plan cuts at the
  // same names): the decoder layers of each [begin, end) range, the embedding when `embedding`,
  // the final norm and the head when `head` (a tied head keeps embed_tokens for its weight). The
  // rest is unregistered, its memory released and its placement dropped, so named_params() and
  // every unit after see the slices alone, under the serial model's names.
  void keep_slice(const std::vector<std::pair<int64_t, int64_t>>& ranges, bool embedding, bool head);
  bool holds_embedding() const { return holds_embedding_; }
  bool holds_head() const { return holds_head_; }
  bool is_slice() const { return is_slice_; }
  // The forward of the held layers [begin, end): input_ids [B, T] when begin is 0 (through the
  // embedding), else hidden [B, T', D]; logits when end is the last layer's (through the norm and
  // the head), else hidden states. position_ids [B, T] always; document_ids as forward takes them.
  at::Tensor forward_slice(int64_t begin, int64_t end, const at::Tensor& input, const at::Tensor& position_ids,
                           Routing* routing = nullptr, const at::Tensor& document_ids = {});

  // Fresh weights as HF initialises them (normal(0, initializer_range) for matrices, ones for
  // norms, zeros for biases, a zero padding row), each drawn from a generator keyed by
  // (seed, parameter name) over its global shape, so any shard gets its slice of the same draw.
  void init_weights(uint64_t seed);

  // Parameters by HF name, in registration order; tied checkpoints have no lm_head.weight.
  std::vector<std::pair<std::string, at::Tensor>> named_params() const;
  // Where each parameter is read during forward, by HF name: the member the module uses. A
  // parallel unit may point it at a different tensor (FSDP: the gathered full weight) while
  // the registered parameter holds this rank's shard.
  std::vector<std::pair<std::string, at::Tensor*>> parameter_slots();
  const nn::ParamPlacement& placement(const std::string& name) const { return placements_.at(name); }
  nn::ParamPlacement& placement(const std::string& name) { return placements_.at(name); }

  // The sparse MoE blocks, in layer order (empty for a dense model).
  std::vector<std::shared_ptr<nn::SparseMoe>> moe_layers() const;
  // HF's load-balancing loss over a forward's router records (without router_aux_loss_coef);
  // undefined for a dense model.
  at::Tensor router_aux_loss(const Routing& routing) const;
  // Its parts (assignments, probability sums, rows), for a loss over several ranks' tokens;
  // undefined tensors for a dense model.
  nn::RouterLoad router_load(const Routing& routing) const;

  const LlamaConfig& config() const { return config_; }
  // The dtype an HF export writes (config.json's dtype): float32, bfloat16 or float16.
  void set_dtype(const std::string& dtype);
  std::shared_ptr<LlamaModel> model;
  std::shared_ptr<nn::Linear> lm_head;  // null when tied
  // How the tied head computes logits from the embedding weight (a vocab-sharded embedding
  // makes it a colwise layer).
  std::shared_ptr<nn::LinearStyle> tied_head_style = nn::identity_style();

 private:
  LlamaConfig config_;
  std::map<std::string, nn::ParamPlacement> placements_;
  bool holds_embedding_ = true, holds_head_ = true, is_slice_ = false;
};

}  // namespace meshtrain::models

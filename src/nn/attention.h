// Self-attention with HF parameter names (q/k/v/o_proj, optional q_norm/k_norm), GQA and RoPE;
// the attention itself is delegated to an AttentionCore (serial by default, ring or Ulysses when
// parallelised).
#pragma once
#include <torch/nn/module.h>

#include <memory>

#include "nn/attention_core.h"
#include "nn/block_style.h"
#include "nn/linear.h"
#include "nn/rms_norm.h"
#include "nn/rope.h"

namespace meshtrain::nn {

struct AttentionShape {
  int64_t hidden_size, num_heads, num_kv_heads, head_dim;
  bool bias;
  bool qk_norm = false;  // Qwen3: RMSNorm over head_dim on each q and k head, before RoPE
  double norm_eps = 1e-6;
};

class Attention : public torch::nn::Module {
 public:
  explicit Attention(const AttentionShape& shape);
  // [B, T, D] -> [B, T, D]; document_ids as AttentionCore takes them (undefined: causal rows).
  at::Tensor forward(const at::Tensor& x, const RopeTables& rope, const at::Tensor& document_ids = {});
  void set_core(std::shared_ptr<AttentionCore> core) { core_ = std::move(core); }
  void set_block_style(std::shared_ptr<BlockStyle> style) { block_ = std::move(style); }

  std::shared_ptr<Linear> q_proj, k_proj, v_proj, o_proj;
  std::shared_ptr<RMSNorm> q_norm, k_norm;  // null unless qk_norm

 private:
  int64_t head_dim_;
  std::shared_ptr<AttentionCore> core_ = std::make_shared<LocalCausalAttention>();
  std::shared_ptr<BlockStyle> block_ = pass_through_block();
};

}  // namespace meshtrain::nn

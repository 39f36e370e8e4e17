#include "nn/attention.h"

#include <ATen/autocast_mode.h>

#include <cmath>

namespace meshtrain::nn {

Attention::Attention(const AttentionShape& s) : head_dim_(s.head_dim) {
  q_proj = register_module("q_proj", std::make_shared<Linear>(s.hidden_size, s.num_heads * s.head_dim, s.bias));
  k_proj = register_module("k_proj", std::make_shared<Linear>(s.hidden_size, s.num_kv_heads * s.head_dim, s.bias));
  v_proj = register_module("v_proj", std::make_shared<Linear>(s.hidden_size, s.num_kv_heads * s.head_dim, s.bias));
  o_proj = register_module("o_proj", std::make_shared<Linear>(s.num_heads * s.head_dim, s.hidden_size, s.bias));
  if (s.qk_norm) {
    q_norm = register_module("q_norm", std::make_shared<RMSNorm>(s.head_dim, s.norm_eps));
    k_norm = register_module("k_norm", std::make_shared<RMSNorm>(s.head_dim, s.norm_eps));
  }
}

at::Tensor Attention::forward(const at::Tensor& input, const RopeTables& rope, const at::Tensor& document_ids) {
  auto x = block_->enter(input);
  const int64_t B = x.size(0), T = x.size(1);
  // Head counts come from the projections' outputs, so a tensor-parallel shard sees H/tp.
  // The optional per-head norm acts on [B, T, h, d], before the transpose, as HF's Qwen3.
  auto heads = [&](const at::Tensor& y, const std::shared_ptr<RMSNorm>& norm = nullptr) {
    auto h = y.view({B, T, -1, head_dim_});
    return (norm ? norm->forward(h) : h).transpose(1, 2);
  };
  auto q = apply_rotary(heads(q_proj->forward(x), q_norm), rope);
  auto k = apply_rotary(heads(k_proj->forward(x), k_norm), rope);
  auto v = heads(v_proj->forward(x));
  // Under autocast attention runs in its lower precision, as sdpa does there (RoPE's fp32 tables
  // promote q and k).
  const auto device = q.device().type();
  if (at::autocast::is_autocast_enabled(device)) {
    const auto dtype = at::autocast::get_autocast_dtype(device);
    q = q.to(dtype), k = k.to(dtype), v = v.to(dtype);
  }
  auto out = core_->forward(q, k, v, 1.0 / std::sqrt(static_cast<double>(head_dim_)), document_ids).out;
  return block_->leave(o_proj->forward(out.transpose(1, 2).reshape({B, T, -1})));
}

}  // namespace meshtrain::nn

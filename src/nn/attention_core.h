// The AttentionCore seam: causal attention of q [B, H, T, d] against k, v [B, Hkv, T, d]
// (GQA: H a multiple of Hkv), returning the output and the log-sum-exp of each query row, which
// ring attention needs to merge partial results. The serial core is blockwise with an online
// softmax (flash attention), so memory grows with T·block, not T².
#pragma once
#include <ATen/ATen.h>

namespace meshtrain::nn {

struct AttentionResult {
  at::Tensor out;  // [B, H, T, d]
  at::Tensor lse;  // [B, H, T], fp32
};

class AttentionCore {
 public:
  virtual ~AttentionCore() = default;
  virtual AttentionResult forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  double scale) = 0;
};

class LocalCausalAttention : public AttentionCore {
 public:
  AttentionResult forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          double scale) override;
};

// k/v [B, Hkv, T, d] -> [B, Hkv * n_rep, T, d], each kv head serving n_rep query heads.
at::Tensor repeat_kv(const at::Tensor& kv, int64_t n_rep);

}  // namespace meshtrain::nn

// The AttentionCore seam: causal attention of q [B, H, T, d] against k, v [B, Hkv, T, d]
// (GQA: H a multiple of Hkv), returning the output and the log-sum-exp of each query row, which
// ring attention needs to merge partial results. The serial core is blockwise with an online
// softmax (flash attention), so memory grows with T·block, not T². Packed rows pass the document
// of every token (nn/document_mask.h) and attention stays inside each document.
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
  // document_ids [B, T_global]: the document of every token of the whole sequence (before any
  // sequence sharding), nondecreasing along each row; undefined: one document per row.
  virtual AttentionResult forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                                  const at::Tensor& document_ids) = 0;
  AttentionResult forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
    return forward(q, k, v, scale, {});
  }
};

class LocalCausalAttention : public AttentionCore {
 public:
  using AttentionCore::forward;
  AttentionResult forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                          const at::Tensor& document_ids) override;
};

// k/v [B, Hkv, T, d] -> [B, Hkv * n_rep, T, d], each kv head serving n_rep query heads.
at::Tensor repeat_kv(const at::Tensor& kv, int64_t n_rep);

}  // namespace meshtrain::nn

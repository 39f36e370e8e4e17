#include "nn/attention_core.h"

#include "util/check.h"

namespace meshtrain::nn {

at::Tensor repeat_kv(const at::Tensor& kv, int64_t n_rep) {
  if (n_rep == 1) return kv;
  auto s = kv.sizes();
  return kv.unsqueeze(2).expand({s[0], s[1], n_rep, s[2], s[3]}).reshape({s[0], s[1] * n_rep, s[2], s[3]});
}

AttentionResult LocalCausalAttention::forward(const at::Tensor& q, const at::Tensor& k,
                                              const at::Tensor& v, double scale) {
  MT_CHECK(q.dim() == 4 && k.dim() == 4 && v.sizes() == k.sizes(),
           "attention expects q [B, H, T, d] and k, v [B, Hkv, T, d]; got q ", q.sizes(), ", k ",
           k.sizes(), ", v ", v.sizes());
  MT_CHECK(q.size(1) % k.size(1) == 0, "attention: ", q.size(1),
           " query heads are not a multiple of ", k.size(1), " kv heads");
  const int64_t n_rep = q.size(1) / k.size(1);
  auto kr = repeat_kv(k, n_rep);
  auto vr = repeat_kv(v, n_rep);
  if (q.is_cpu()) {
    auto [out, lse] = at::_scaled_dot_product_flash_attention_for_cpu(
        q, kr, vr, /*dropout_p=*/0.0, /*is_causal=*/true, /*attn_mask=*/{}, scale);
    return {out, lse};
  }
  // CUDA: the memory-efficient kernel also returns the log-sum-exp.
  auto res = at::_scaled_dot_product_efficient_attention(q, kr, vr, /*attn_bias=*/{},
                                                         /*compute_log_sumexp=*/true,
                                                         /*dropout_p=*/0.0, /*is_causal=*/true, scale);
  return {std::get<0>(res), std::get<1>(res)};
}

}  // namespace meshtrain::nn

#include "nn/attention_core.h"

#include <torch/csrc/autograd/custom_function.h>

#include <limits>

#include "nn/attention_blocks.h"
#include "nn/document_mask.h"
#include "util/check.h"

namespace meshtrain::nn {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::vector<AttentionBlock> whole_row_blocks(const at::Tensor& document_ids) {
  const SequenceRange all{0, 0, document_ids.size(1)};
  std::vector<AttentionBlock> blocks;
  add_document_blocks(document_ids, all, all, blocks);
  return blocks;
}

// Document-causal attention of whole packed rows, block by block (nn/document_mask.h).
struct DocumentAttentionFn : torch::autograd::Function<DocumentAttentionFn> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& document_ids, double scale) {
    auto out = at::zeros(q.sizes(), q.options().dtype(at::kFloat));
    auto lse = at::full({q.size(0), q.size(1), q.size(2)}, -std::numeric_limits<float>::infinity(),
                        q.options().dtype(at::kFloat));
    attend_blocks(whole_row_blocks(document_ids), q, k, v, scale, out, lse);
    out = out.to(q.scalar_type());
    ctx->saved_data["scale"] = scale;
    ctx->save_for_backward({q, k, v, document_ids, out, lse});
    ctx->mark_non_differentiable({lse});
    return {out, lse};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    const auto &q = s[0], &k = s[1], &v = s[2], &out = s[4];
    auto dq = at::zeros(q.sizes(), q.options().dtype(at::kFloat));
    auto dk = at::zeros(k.sizes(), k.options().dtype(at::kFloat));
    auto dv = at::zeros(v.sizes(), v.options().dtype(at::kFloat));
    auto dout = grads[0].defined() ? grads[0] : at::zeros_like(out);
    attend_blocks_backward(whole_row_blocks(s[3]), dout, q, k, v, out, s[5], ctx->saved_data["scale"].toDouble(), dq,
                           dk, dv);
    return {dq.to(q.scalar_type()), dk.to(k.scalar_type()), dv.to(v.scalar_type()), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor repeat_kv(const at::Tensor& kv, int64_t n_rep) {
  if (n_rep == 1) return kv;
  auto s = kv.sizes();
  return kv.unsqueeze(2).expand({s[0], s[1], n_rep, s[2], s[3]}).reshape({s[0], s[1] * n_rep, s[2], s[3]});
}

AttentionResult LocalCausalAttention::forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                              double scale, const at::Tensor& document_ids) {
  MT_CHECK(q.dim() == 4 && k.dim() == 4 && v.sizes() == k.sizes(),
           "attention expects q [B, H, T, d] and k, v [B, Hkv, T, d]; got q ", q.sizes(), ", k ",
           k.sizes(), ", v ", v.sizes());
  MT_CHECK(q.size(1) % k.size(1) == 0, "attention: ", q.size(1),
           " query heads are not a multiple of ", k.size(1), " kv heads");
  if (document_ids.defined()) {
    MT_CHECK(document_ids.dim() == 2 && document_ids.size(0) == q.size(0) && document_ids.size(1) == q.size(2),
             "attention: document_ids ", document_ids.sizes(), " do not match ", q.size(0), " rows of ", q.size(2),
             " tokens");
    auto res = DocumentAttentionFn::apply(q.contiguous(), k.contiguous(), v.contiguous(), document_ids, scale);
    return {res[0], res[1]};
  }
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

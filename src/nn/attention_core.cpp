#include "nn/attention_core.h"

#include "nn/document_mask.h"
#include "util/check.h"

namespace meshtrain::nn {

namespace {

// Document-causal attention of whole packed rows: the diagonal blocks of nn/document_mask.h
// cover each row's queries once, in order, so their outputs are concatenated rather than merged,
// and autograd differentiates each block's kernel.
AttentionResult document_causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                                          const at::Tensor& document_ids) {
  const int64_t n_rep = q.size(1) / k.size(1);
  auto kr = repeat_kv(k, n_rep), vr = repeat_kv(v, n_rep);
  const SequenceRange whole{0, 0, document_ids.size(1)};
  std::vector<AttentionBlock> blocks;
  add_document_blocks(document_ids, whole, whole, blocks);
  std::vector<std::vector<at::Tensor>> outs(q.size(0)), lses(q.size(0));
  for (const auto& b : blocks) {
    auto rows = [&](const at::Tensor& t) { return t.narrow(0, b.row, 1).narrow(2, b.q_begin, b.q_len).contiguous(); };
    auto [o, l] = at::_scaled_dot_product_flash_attention_for_cpu(
        rows(q), rows(kr), rows(vr), /*dropout_p=*/0.0, b.causal,
        b.mask.defined() ? std::optional<at::Tensor>(b.mask) : std::nullopt, scale);
    outs[b.row].push_back(o);
    lses[b.row].push_back(l);
  }
  std::vector<at::Tensor> out_rows, lse_rows;
  for (int64_t r = 0; r < q.size(0); ++r) {
    out_rows.push_back(at::cat(outs[r], 2));
    lse_rows.push_back(at::cat(lses[r], 2));
  }
  return {at::cat(out_rows, 0), at::cat(lse_rows, 0)};
}

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
    MT_CHECK(q.is_cpu(), "attention within packed documents runs on CPU tensors only for now; got ", q.device());
    return document_causal_attention(q, k, v, scale, document_ids);
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

#include "nn/attention_core.h"

#include "nn/attention_blocks.h"
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
    auto [o, l] = block_attention(rows(q), rows(kr), rows(vr), b.causal, b.mask, scale);
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
    return document_causal_attention(q, k, v, scale, document_ids);
  }
  const int64_t n_rep = q.size(1) / k.size(1);
  auto kr = repeat_kv(k, n_rep);
  auto vr = repeat_kv(v, n_rep);
  auto [out, lse] = block_attention(q, kr, vr, /*causal=*/true, /*mask=*/{}, scale);
  return {out, lse};
}

}  // namespace meshtrain::nn

#include "nn/attention_blocks.h"

#include "nn/attention_core.h"
#include "util/check.h"

namespace meshtrain::nn {

namespace {

// The block's slice of a [B, heads, T, ...] tensor: its batch row (or every row), then `len`
// rows of the sequence from `begin`.
at::Tensor slice(const at::Tensor& t, const AttentionBlock& b, int64_t begin, int64_t len) {
  auto rows = b.row < 0 ? t : t.narrow(0, b.row, 1);
  return rows.narrow(2, begin, len);
}

std::optional<at::Tensor> mask_of(const AttentionBlock& b) {
  if (!b.mask.defined()) return std::nullopt;
  return b.mask;
}

// grad [B, Hkv·n_rep, T, d] of the repeated heads -> [B, Hkv, T, d], summed per kv head.
at::Tensor fold_heads(const at::Tensor& grad, int64_t n_rep) {
  if (n_rep == 1) return grad;
  auto s = grad.sizes();
  return grad.reshape({s[0], s[1] / n_rep, n_rep, s[2], s[3]}).sum(2);
}

}  // namespace

void attend_blocks(const std::vector<AttentionBlock>& blocks, const at::Tensor& q, const at::Tensor& k,
                   const at::Tensor& v, double scale, at::Tensor& out, at::Tensor& lse) {
  MT_CHECK(q.is_cpu(), "blockwise attention (ring attention, packed documents) runs on CPU tensors only for now; got ",
           q.device());
  const int64_t n_rep = q.size(1) / k.size(1);
  for (const auto& b : blocks) {
    auto [o, l] = at::_scaled_dot_product_flash_attention_for_cpu(
        slice(q, b, b.q_begin, b.q_len).contiguous(), repeat_kv(slice(k, b, b.k_begin, b.k_len), n_rep).contiguous(),
        repeat_kv(slice(v, b, b.k_begin, b.k_len), n_rep).contiguous(), /*dropout_p=*/0.0, b.causal, mask_of(b), scale);
    // The log-sum-exp merge, in place on the block's rows.
    auto rows_out = slice(out, b, b.q_begin, b.q_len);
    auto rows_lse = (b.row < 0 ? lse : lse.narrow(0, b.row, 1)).narrow(2, b.q_begin, b.q_len);
    auto lf = l.to(at::kFloat);
    auto merged = at::logaddexp(rows_lse, lf);
    auto keep = at::exp(rows_lse - merged).unsqueeze(-1);
    auto take = at::exp(lf - merged).unsqueeze(-1);
    rows_out.mul_(keep).add_(o.to(at::kFloat) * take);
    rows_lse.copy_(merged);
  }
}

void attend_blocks_backward(const std::vector<AttentionBlock>& blocks, const at::Tensor& dout, const at::Tensor& q,
                            const at::Tensor& k, const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                            double scale, at::Tensor& dq, at::Tensor& dk, at::Tensor& dv) {
  const int64_t n_rep = q.size(1) / k.size(1);
  for (const auto& b : blocks) {
    auto q_rows = [&](const at::Tensor& t) { return slice(t, b, b.q_begin, b.q_len); };
    auto k_rows = [&](const at::Tensor& t) { return slice(t, b, b.k_begin, b.k_len); };
    auto lse_rows = (b.row < 0 ? lse : lse.narrow(0, b.row, 1)).narrow(2, b.q_begin, b.q_len);
    auto [dqb, dkb, dvb] = at::_scaled_dot_product_flash_attention_for_cpu_backward(
        q_rows(dout).contiguous(), q_rows(q).contiguous(), repeat_kv(k_rows(k), n_rep).contiguous(),
        repeat_kv(k_rows(v), n_rep).contiguous(), q_rows(out).contiguous(), lse_rows.contiguous(), /*dropout_p=*/0.0,
        b.causal, mask_of(b), scale);
    q_rows(dq).add_(dqb);
    k_rows(dk).add_(fold_heads(dkb, n_rep));
    k_rows(dv).add_(fold_heads(dvb, n_rep));
  }
}

}  // namespace meshtrain::nn

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

// The memory-efficient CUDA kernel pads the log-sum-exp rows to a multiple of this.
constexpr int64_t kLseAlign = 32;

// An additive mask as the CUDA kernel takes it: q's dtype and device, [B, H, Tq, Tk] broadcast,
// its rows 16-element aligned (sdpa pads the same way).
std::optional<at::Tensor> cuda_bias(const at::Tensor& mask, const at::Tensor& q) {
  if (!mask.defined()) return std::nullopt;
  const int64_t tq = mask.size(0), tk = mask.size(1), padded = (tk + 15) / 16 * 16;
  auto m = at::constant_pad_nd(mask.to(q.options()), {0, padded - tk}).narrow(1, 0, tk);
  return m.view({1, 1, tq, tk}).expand({q.size(0), q.size(1), tq, tk});
}

std::optional<at::Tensor> cpu_mask(const at::Tensor& mask) {
  if (!mask.defined()) return std::nullopt;
  return mask;
}

// grad [B, Hkv·n_rep, T, d] of the repeated heads -> [B, Hkv, T, d], summed per kv head.
at::Tensor fold_heads(const at::Tensor& grad, int64_t n_rep) {
  if (n_rep == 1) return grad;
  auto s = grad.sizes();
  return grad.reshape({s[0], s[1] / n_rep, n_rep, s[2], s[3]}).sum(2);
}

}  // namespace

std::pair<at::Tensor, at::Tensor> block_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                  bool causal, const at::Tensor& mask, double scale) {
  if (q.is_cpu()) {
    auto [o, l] = at::_scaled_dot_product_flash_attention_for_cpu(q, k, v, /*dropout_p=*/0.0, causal, cpu_mask(mask), scale);
    return {o, l};
  }
  MT_CHECK(q.is_cuda(), "attention runs on CPU or CUDA tensors, got ", q.device());
  auto res = at::_scaled_dot_product_efficient_attention(q, k, v, cuda_bias(mask, q), /*compute_log_sumexp=*/true,
                                                         /*dropout_p=*/0.0, causal, scale);
  return {std::get<0>(res), std::get<1>(res).narrow(2, 0, q.size(2))};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> block_attention_backward(const at::Tensor& dout, const at::Tensor& q,
                                                                        const at::Tensor& k, const at::Tensor& v,
                                                                        const at::Tensor& out, const at::Tensor& lse,
                                                                        bool causal, const at::Tensor& mask,
                                                                        double scale) {
  if (q.is_cpu())
    return at::_scaled_dot_product_flash_attention_for_cpu_backward(dout, q, k, v, out, lse, /*dropout_p=*/0.0, causal,
                                                                    cpu_mask(mask), scale);
  MT_CHECK(q.is_cuda(), "attention runs on CPU or CUDA tensors, got ", q.device());
  const int64_t rows = (q.size(2) + kLseAlign - 1) / kLseAlign * kLseAlign;
  auto padded_lse = at::constant_pad_nd(lse.to(at::kFloat), {0, rows - q.size(2)});
  auto none = at::empty({}, q.options().dtype(at::kLong));  // no dropout: no random state
  auto [dq, dk, dv, dbias] = at::_scaled_dot_product_efficient_attention_backward(
      dout.to(q.scalar_type()), q, k, v, cuda_bias(mask, q).value_or(at::Tensor()), out.to(q.scalar_type()),
      padded_lse, none, none,
      /*dropout_p=*/0.0, {true, true, true, false}, causal, scale);
  return {dq, dk, dv};
}

void attend_blocks(const std::vector<AttentionBlock>& blocks, const at::Tensor& q, const at::Tensor& k,
                   const at::Tensor& v, double scale, at::Tensor& out, at::Tensor& lse) {
  const int64_t n_rep = q.size(1) / k.size(1);
  for (const auto& b : blocks) {
    auto [o, l] = block_attention(
        slice(q, b, b.q_begin, b.q_len).contiguous(), repeat_kv(slice(k, b, b.k_begin, b.k_len), n_rep).contiguous(),
        repeat_kv(slice(v, b, b.k_begin, b.k_len), n_rep).contiguous(), b.causal, b.mask, scale);
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
    auto [dqb, dkb, dvb] = block_attention_backward(
        q_rows(dout).contiguous(), q_rows(q).contiguous(), repeat_kv(k_rows(k), n_rep).contiguous(),
        repeat_kv(k_rows(v), n_rep).contiguous(), q_rows(out).contiguous(), lse_rows.contiguous(), b.causal, b.mask,
        scale);
    q_rows(dq).add_(dqb);
    k_rows(dk).add_(fold_heads(dkb, n_rep));
    k_rows(dv).add_(fold_heads(dvb, n_rep));
  }
}

}  // namespace meshtrain::nn

// Attention computed block by block, as flash and ring attention do: a block is a range of query
// rows against a range of key rows (causal, masked or dense); its forward is merged into the
// rows' output by log-sum-exp in fp32, and its backward is taken from the merged output and
// log-sum-exp, so every block sees the softmax over all of the row's blocks.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace meshtrain::nn {

struct AttentionBlock {
  int64_t row = -1;                // batch row; -1: every row
  int64_t q_begin = 0, q_len = 0;  // query rows (of the local q)
  int64_t k_begin = 0, k_len = 0;  // key rows (of the k, v given)
  bool causal = false;             // query i sees keys k_begin .. k_begin + i
  at::Tensor mask;                 // else: [q_len, k_len] fp32, 0 seen, -inf hidden; undefined: all seen
};

// One block's kernel: q [B, H, Tq, d] against k, v [B, H, Tk, d] (heads repeated), causal (query
// i sees keys 0..i) and/or an additive mask [Tq, Tk]; returns out [B, H, Tq, d] and its
// log-sum-exp [B, H, Tq] (fp32). CPU: the flash kernel; CUDA: the memory-efficient one. Both are
// differentiable; the backward below takes the merged out and lse of several blocks instead.
std::pair<at::Tensor, at::Tensor> block_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                  bool causal, const at::Tensor& mask, double scale);
// dq, dk, dv of one block from the rows' merged out and lse (shapes as block_attention's).
std::tuple<at::Tensor, at::Tensor, at::Tensor> block_attention_backward(const at::Tensor& dout, const at::Tensor& q,
                                                                        const at::Tensor& k, const at::Tensor& v,
                                                                        const at::Tensor& out, const at::Tensor& lse,
                                                                        bool causal, const at::Tensor& mask,
                                                                        double scale);

// out [B, H, Tq, d] and lse [B, H, Tq] (fp32, starting at 0 and -inf) <- merged with each block of
// q [B, H, Tq, d] against k, v [B, Hkv, Tk, d] (GQA: H a multiple of Hkv).
void attend_blocks(const std::vector<AttentionBlock>& blocks, const at::Tensor& q, const at::Tensor& k,
                   const at::Tensor& v, double scale, at::Tensor& out, at::Tensor& lse);
// dq [B, H, Tq, d], dk, dv [B, Hkv, Tk, d] (fp32) += each block's gradients, from the merged out
// and lse of the rows.
void attend_blocks_backward(const std::vector<AttentionBlock>& blocks, const at::Tensor& dout, const at::Tensor& q,
                            const at::Tensor& k, const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                            double scale, at::Tensor& dq, at::Tensor& dk, at::Tensor& dv);

}  // namespace meshtrain::nn

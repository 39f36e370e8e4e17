// Context parallelism over the cp dim: head-tail load-balanced sequence shards (rank r holds
// chunks r and 2·cp−1−r of 2·cp equal chunks) and RingAttention, the AttentionCore that attends
// this rank's queries to every rank's keys/values and merges the partial results by log-sum-exp
// in fp32. Attention is causal, or document-causal for packed rows; no rank computes a fully
// masked block.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "dist/device_mesh.h"
#include "models/llama.h"
#include "nn/attention_core.h"
#include "parallel/parallel_options.h"

namespace meshtrain::parallel {

// ---- Head-tail load-balanced sharding: for cp > 1, T divisible by 2·cp, else an error naming
// T and cp; cp == 1 is the identity. ----

// The global positions rank `rank` holds, in its local order: chunk r then chunk 2·cp−1−r.
std::vector<int64_t> load_balanced_positions(int64_t seq_len, int64_t cp, int64_t rank);
// The global positions of every shard, rank after rank ("order" in torch: [0,1,6,7 | 2,3,4,5]
// for T = 8, cp = 2).
std::vector<int64_t> load_balanced_order(int64_t seq_len, int64_t cp);
// x with the sequence on `dim` ([B, T], [B, T, ...], or [B, H, T, d] with dim 2) -> this rank's
// shard of T/cp positions.
at::Tensor shard_load_balanced(const at::Tensor& x, int64_t cp, int64_t rank, int64_t dim = 1);
// Inverse: every rank's shard, in rank order -> the full sequence in global order.
at::Tensor unshard_load_balanced(const std::vector<at::Tensor>& shards, int64_t dim = 1);
// The same over the cp group: all-gathers this rank's shard and restores global order.
at::Tensor gather_load_balanced(const at::Tensor& shard, dist::Group& cp_group, int64_t dim = 1);
// This rank's global position_ids [B, T/cp] (int64), for RoPE on the shard.
at::Tensor load_balanced_position_ids(int64_t batch, int64_t seq_len, int64_t cp, int64_t rank);

// Our attention is always causal. The CP path accepts a mask only if it is causal in upstream's
// sense (is_attention_mask_causal: undefined, 2-D padding masks, or a 3-D/4-D mask whose first
// entry has nothing above the diagonal), else it fails with upstream's message.
bool is_attention_mask_causal(const at::Tensor& mask);
void check_context_parallel_mask(const at::Tensor& mask);
// For callers that carry an is_causal flag: false fails with upstream's ring message.
void check_context_parallel_causal(bool is_causal);

// ---- Ring attention ----

// q [B, H, T/cp, d], k, v [B, Hkv, T/cp, d]: this rank's load-balanced shards (two chunks of
// T/(2·cp) each). Returns out [B, H, T/cp, d] and lse [B, H, T/cp] (fp32) for the same rows.
// Backward is the flash/ring backward: each block's gradients from the merged out and lse,
// dQ accumulated here, dK/dV accumulated along the ring (or reduce-scattered) to their owner.
// The group must outlive the core. On a group of size 1 it is LocalCausalAttention.
class RingAttention : public nn::AttentionCore {
 public:
  explicit RingAttention(dist::Group& cp_group, CpCommStrategy strategy = CpCommStrategy::Ring);
  using nn::AttentionCore::forward;
  // document_ids cover the whole sequence [B, T]; each step attends only the documents a pair of
  // chunks shares.
  nn::AttentionResult forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                              const at::Tensor& document_ids) override;
  CpCommStrategy strategy() const { return strategy_; }

 private:
  dist::Group* group_;
  CpCommStrategy strategy_;
};

}  // namespace meshtrain::parallel

// Ulysses sequence parallelism over the sp dim: attention inputs arrive sharded on the sequence
// (contiguous T/sp slices), an all-to-all trades that for a head shard with the whole sequence,
// an inner AttentionCore runs, and an all-to-all trades back. With cp > 1 the inner core is
// RingAttention over cp: Ulysses inside each cp rank, the ring across them.
#pragma once
#include <memory>

#include "dist/device_mesh.h"
#include "models/llama.h"
#include "nn/attention_core.h"
#include "parallel/context_parallel.h"

namespace meshtrain::parallel {

// Upstream's head rules: num_heads % sp == 0, and num_kv_heads % sp == 0 or sp % num_kv_heads
// == 0 (then each kv head is replicated sp / num_kv_heads times). Errors carry upstream's text.
void check_ulysses_heads(int64_t num_heads, int64_t num_kv_heads, int64_t sp);

// q [B, H, T/sp, d], k, v [B, Hkv, T/sp, d] (rank j holds rows [j·T/sp, (j+1)·T/sp) of the
// sequence the inner core sees) -> out [B, H, T/sp, d], lse [B, H, T/sp]. The group must
// outlive the core. On a group of size 1 it is the inner core.
class UlyssesAttention : public nn::AttentionCore {
 public:
  explicit UlyssesAttention(dist::Group& sp_group,
                            std::shared_ptr<nn::AttentionCore> inner = std::make_shared<nn::LocalCausalAttention>());
  using nn::AttentionCore::forward;
  // document_ids cover the whole sequence and go to the inner core unchanged.
  nn::AttentionResult forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                              const at::Tensor& document_ids) override;
  const std::shared_ptr<nn::AttentionCore>& inner() const { return inner_; }

 private:
  dist::Group* group_;
  std::shared_ptr<nn::AttentionCore> inner_;
};

// x with the sequence on `dim` -> the contiguous slice of sp rank `rank`; T must divide by sp
// (upstream's "batch's seqlen={s} isn't divisible by sp-size={P}").
at::Tensor shard_contiguous(const at::Tensor& x, int64_t sp, int64_t rank, int64_t dim = 1);

// The sequence shard this rank of the mesh holds: load-balanced over cp (T divisible by
// 2·cp), then contiguous over sp within the cp shard (T/cp divisible by sp). Apply it to
// input_ids, the labels already shifted on the full sequence, and position_ids.
at::Tensor shard_sequence(const at::Tensor& x, const dist::DeviceMesh& mesh, int64_t dim = 1);
// This rank's global position_ids [B, T/(cp·sp)] (int64).
at::Tensor sequence_position_ids(int64_t batch, int64_t seq_len, const dist::DeviceMesh& mesh);
// Inverse of shard_sequence over the cp and sp groups (all-gathers; for tests and eval).
at::Tensor gather_sequence(const at::Tensor& shard, const dist::DeviceMesh& mesh, int64_t dim = 1);

// The attention core of a sequence sharded over cp and sp, on every layer: Ulysses over sp
// (checking the head counts) around a ring over cp (with `strategy`), either one alone, or
// nothing when both are 1. The inputs are then cut with shard_sequence.
void apply_sequence_sharded_attention(models::LlamaForCausalLM& model, dist::Group& cp, dist::Group& sp,
                                      CpCommStrategy strategy = CpCommStrategy::Ring);

}  // namespace meshtrain::parallel

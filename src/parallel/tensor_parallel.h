// Tensor parallelism over the tp dim from a TpPlan: each Linear / Embedding that a rule names is
// sharded like torch.chunk (uneven and empty tail shards allowed) and given the LinearStyle that
// wraps its local op in the style's forward/backward collectives. Attention heads split over tp
// with their projections: num_attention_heads must divide by tp, and num_key_value_heads too
// unless tp is a multiple of it, in which case each kv head is replicated over tp / kv ranks.
//
// packed_colwise / packed_rowwise shard a fused gate ‖ up projection and its down projection so
// that rank r holds [gate_r | up_r] (each block split evenly). local_colwise / local_rowwise
// leave their one f and g to their block's entry and exit, where upstream's gather parent sums
// them; all_reduce (gather) names that block.
//
// MoE experts named by the plan (gate_up_proj packed_colwise, down_proj rowwise, as
// transformers' Mixtral and Qwen3-MoE plans) are split inside over tp, or over its etp blocks
// under router-masking expert parallelism; their tokens enter by f and their outputs are summed.
//
// Qwen3's q_norm / k_norm, shared by the heads of a sharded attention, get their gradients
// summed over tp (replicated_with_grad_allreduce, which the plan may also name).
//
// Megatron sequence parallelism (TpOptions::sequence_parallel) keeps the residual stream and
// the norms sharded on the sequence between blocks: each attention / MLP block all-gathers its
// input (backward: reduce-scatter), its rowwise output is reduce-scattered instead of
// all-reduced, and the norm weights' gradients, partial per rank, are summed over tp. A MoE
// block gathers the sequence (backward: its own slice), routes and computes it whole, and keeps
// its shard of the output.
#pragma once
#include <string>
#include <vector>

#include "dist/device_mesh.h"
#include "models/llama.h"
#include "parallel/tp_plan.h"

namespace meshtrain::parallel {

struct TpOptions {
  bool sequence_parallel = false;
  // The logits stay sharded on the vocab (lm_head colwise, no gather) for a vocab-parallel loss.
  bool loss_parallel = false;
};

struct TpReport {
  std::vector<std::string> unused_rules;      // rules that matched no module
  std::vector<std::string> unsharded_layers;  // Linear / Embedding modules no rule sharded
  // Replicated parameters whose gradients are per-rank partial sums (sequence-parallel norms).
  std::vector<std::string> partial_grad_params;
  bool logits_vocab_sharded = false;  // loss_parallel: this rank's logits are vocab rows
  int64_t vocab_offset = 0;           //   [vocab_offset, vocab_offset + logits.size(-1))
};

// Shards the model in place (parameters must be whole) and records placements on "tp".
TpReport apply_tensor_parallel(models::LlamaForCausalLM& model, const dist::DeviceMesh& mesh, const TpPlan& plan,
                               const TpOptions& options = {});

// Sequence lengths of the tp ranks' shards under sequence parallelism (T must divide by tp).
std::vector<int64_t> sequence_shards(int64_t seq_len, int64_t tp);

}  // namespace meshtrain::parallel

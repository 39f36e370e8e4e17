// Tensor parallelism over tp from a TpPlan: the model's typed modules sharded by their styles'
// collectives, Megatron sequence parallelism and a vocab-sharded head as options, the experts
// split inside; placement records say what each rank holds (docs/parallelism.md).
#pragma once
#include <string>
#include <vector>

#include "dist/group.h"
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
  bool logits_vocab_sharded = false;  // loss_parallel: this rank's logits are vocab rows
  int64_t vocab_offset = 0;           //   [vocab_offset, vocab_offset + logits.size(-1))
};

// Shards the model in place (parameters must be whole) over the tp group, the experts over
// experts_tp (tp, or its etp blocks under router masking), and records the placements.
TpReport apply_tensor_parallel(models::LlamaForCausalLM& model, dist::Group& tp, dist::Group& experts_tp,
                               const TpPlan& plan, const TpOptions& options = {});

// Sequence lengths of the tp ranks' shards under sequence parallelism (T must divide by tp).
std::vector<int64_t> sequence_shards(int64_t seq_len, int64_t tp);

}  // namespace meshtrain::parallel

// Expert parallelism for MoE layers: experts sharded over ep, the tokens moved by all-to-all
// (token dispatch over dp_shard × cp) or by router masking (over tp); their gradients summed over
// ep_replicate (docs/parallelism.md).
#pragma once
#include <string>

#include "dist/group.h"
#include "models/llama.h"
#include "parallel/parallel_options.h"

namespace meshtrain::parallel {

// Shards the experts of every MoE layer over the ep group (their placement records say so:
// Shard(0) on ep, replicated over ep_replicate) and puts the mode's dispatcher at the core of
// the one installed (inside tensor parallelism of the experts). num_experts must divide by ep
// (upstream's message otherwise).
void apply_expert_parallel(models::LlamaForCausalLM& model, dist::Group& ep, EpMode mode);

}  // namespace meshtrain::parallel

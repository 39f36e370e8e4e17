// Tensor parallelism over the tp dim from a TpPlan: each Linear / Embedding that a rule names is
// sharded like torch.chunk (uneven and empty tail shards allowed) and given the LinearStyle that
// wraps its local op in the style's forward/backward collectives. Attention heads split over tp
// with their projections, so num_attention_heads and num_key_value_heads must divide by tp.
#pragma once
#include <string>
#include <vector>

#include "dist/device_mesh.h"
#include "models/llama.h"
#include "parallel/tp_plan.h"

namespace meshtrain::parallel {

struct TpReport {
  std::vector<std::string> unused_rules;     // rules that matched no module
  std::vector<std::string> unsharded_layers; // Linear / Embedding modules no rule sharded
};

// Shards the model in place (parameters must be whole) and records placements on "tp".
TpReport apply_tensor_parallel(models::LlamaForCausalLM& model, const dist::DeviceMesh& mesh, const TpPlan& plan);

}  // namespace meshtrain::parallel

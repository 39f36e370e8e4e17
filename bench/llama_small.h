// llama-small, and its MoE version (Mixtral layout: 8 experts, top-2, expert intermediate 344,
// about the dense model's active FLOPs), the models the parallelism benchmarks train.
#pragma once
#include <filesystem>

#include "models/llama_config.h"

namespace meshtrain::bench {

inline models::LlamaConfig llama_small(bool moe) {
  auto j = models::LlamaConfig::load(std::filesystem::path(MESHTRAIN_SOURCE_DIR) / "configs/llama-small").raw;
  if (moe) {
    j["model_type"] = "mixtral";
    j["architectures"] = {"MixtralForCausalLM"};
    j["num_local_experts"] = 8;
    j["num_experts_per_tok"] = 2;
    j["intermediate_size"] = 344;
    j["output_router_logits"] = true;
    j["router_aux_loss_coef"] = 0.02;
  }
  return models::LlamaConfig::from_json(j, moe ? "llama-small-moe" : "llama-small");
}

}  // namespace meshtrain::bench

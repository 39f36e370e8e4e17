// llama-tiny with other head counts, for the attention-core tests.
#pragma once
#include <filesystem>

#include "models/llama_config.h"

namespace meshtrain::testing {

inline models::LlamaConfig config_with(int64_t heads, int64_t kv, int64_t head_dim) {
  auto j = models::LlamaConfig::load(std::filesystem::path(MESHTRAIN_SOURCE_DIR) / "configs/llama-tiny").raw;
  j["num_attention_heads"] = heads;
  j["num_key_value_heads"] = kv;
  j["head_dim"] = head_dim;
  j["hidden_size"] = heads * head_dim;
  j["intermediate_size"] = 40;
  return models::LlamaConfig::from_json(j, "test");
}

}  // namespace meshtrain::testing

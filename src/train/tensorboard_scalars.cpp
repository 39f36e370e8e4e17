#include "train/tensorboard_scalars.h"

#include <algorithm>

namespace meshtrain::train {

namespace {

using Scalars = std::vector<std::pair<std::string, double>>;

// Numbers anywhere under v, tagged prefix/<index or key>/...; strings, booleans and nulls are
// not scalars.
void flatten(const std::string& prefix, const nlohmann::json& v, Scalars& out) {
  if (v.is_number()) {
    out.emplace_back(prefix, v.get<double>());
  } else if (v.is_array()) {
    for (size_t i = 0; i < v.size(); ++i) flatten(prefix + "/" + std::to_string(i), v[i], out);
  } else if (v.is_object()) {
    for (const auto& [key, item] : v.items()) flatten(prefix + "/" + key, item, out);
  }
}

bool per_layer_lists(const nlohmann::json& v) {
  return v.is_array() && std::all_of(v.begin(), v.end(), [](const nlohmann::json& l) { return l.is_array(); });
}

// HF's log names where ours differ.
std::string hf_name(const std::string& key) { return key == "lr" ? "learning_rate" : key; }

}  // namespace

Scalars tensorboard_scalars(const nlohmann::json& record) {
  Scalars out;
  for (const auto& [key, value] : record.items()) {
    if (key == "step") continue;
    if (key == "tokens_per_expert" && per_layer_lists(value)) {
      for (size_t l = 0; l < value.size(); ++l)
        for (size_t e = 0; e < value[l].size(); ++e)
          flatten("moe/layer_" + std::to_string(l) + "/expert_" + std::to_string(e), value[l][e], out);
    } else if (key == "bytes_sent_per_step" && value.is_object()) {
      for (const auto& [group, bytes] : value.items()) flatten("comm/" + group + "_bytes_per_step", bytes, out);
    } else if (key.starts_with("eval_") || key.starts_with("test_")) {
      flatten(key.substr(0, 4) + "/" + key.substr(5), value, out);
    } else {
      flatten("train/" + hf_name(key), value, out);
    }
  }
  return out;
}

}  // namespace meshtrain::train

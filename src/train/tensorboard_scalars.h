// The TensorBoard scalars of one metrics.jsonl record, under the tags Hugging Face's
// TensorBoardCallback gives them: eval_<x> -> eval/<x>, test_<x> -> test/<x>, any other number
// train/<key> (lr as train/learning_rate); tokens_per_expert -> moe/layer_<l>/expert_<e>,
// bytes_sent_per_step -> comm/<group>_bytes_per_step; other nested numbers <tag>/<index or key>.
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <utility>
#include <vector>

namespace meshtrain::train {

// Every number of the record but "step" (the x axis), in key order.
std::vector<std::pair<std::string, double>> tensorboard_scalars(const nlohmann::json& record);

}  // namespace meshtrain::train

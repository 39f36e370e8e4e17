// A model's weights to and from a Hugging Face checkpoint directory: each rank reads only its
// blocks; MoE experts load from per-expert or fused tensors and save back in the layout they came
// from (docs/files.md).
#pragma once
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "io/hf_checkpoint.h"
#include "models/llama.h"

namespace meshtrain::models {

// One tensor of a checkpoint layout and where it lives in a model parameter: the whole
// parameter (expert < 0), or param[expert, row_start : row_start + rows] of a fused expert
// tensor (a per-expert Linear weight).
struct HfTensor {
  std::string name;
  std::string param;
  std::vector<int64_t> shape;
  int64_t expert = -1;
  int64_t row_start = 0, rows = 0;
  // This tensor, cut from the full (unsharded) parameter.
  at::Tensor slice_of(const at::Tensor& full_param) const;
};

// The checkpoint tensors of the model in the given expert layout, in save order; the tensors of
// one parameter are consecutive. For a dense model (or the fused layout) these are the
// parameters themselves.
std::vector<HfTensor> hf_tensors(const LlamaForCausalLM& model, ExpertLayout layout);
// The layout to save the model in: the one its weights were loaded from.
std::vector<HfTensor> hf_tensors(const LlamaForCausalLM& model);

// Fused when the checkpoint holds the first MoE layer's experts.gate_up_proj, else per-expert.
ExpertLayout detect_expert_layout(const LlamaConfig& config, const io::CheckpointReader& checkpoint);

// Copies every parameter from the checkpoint (converting dtype), from either expert layout.
// Missing tensors or shapes that disagree with the config are an error naming them.
void load_hf_weights(LlamaForCausalLM& model, const io::CheckpointReader& checkpoint);

// Writes config.json and the weights (sharded when larger than max_shard_bytes, 0 = one file).
void save_hf_checkpoint(const LlamaForCausalLM& model, const std::filesystem::path& dir,
                        uint64_t max_shard_bytes = 0);

// A model built from dir/config.json with the weights of dir, remembering the experts' layout to
// save them back in. `prepare` runs on the fresh model before the weights are read (parallelising
// it, so that each rank reads only its own blocks).
std::shared_ptr<LlamaForCausalLM> load_pretrained(
    const std::filesystem::path& dir, const std::function<void(std::shared_ptr<LlamaForCausalLM>)>& prepare = {});

}  // namespace meshtrain::models

// Moving a model's weights to and from a Hugging Face checkpoint directory (config.json +
// safetensors). Each rank reads only its block of each tensor, as its placement record says;
// a save writes the HF layout, without lm_head.weight when embeddings are tied.
#pragma once
#include <filesystem>

#include "io/hf_checkpoint.h"
#include "models/llama.h"

namespace meshtrain::models {

// Copies every parameter from the checkpoint (converting dtype). Missing tensors or shapes
// that disagree with the config are an error naming them.
void load_hf_weights(LlamaForCausalLM& model, const io::CheckpointReader& checkpoint);

// Writes config.json and the weights (sharded when larger than max_shard_bytes, 0 = one file).
void save_hf_checkpoint(const LlamaForCausalLM& model, const std::filesystem::path& dir,
                        uint64_t max_shard_bytes = 0);

// A model built from dir/config.json with the weights of dir.
std::shared_ptr<LlamaForCausalLM> load_pretrained(const std::filesystem::path& dir);

}  // namespace meshtrain::models

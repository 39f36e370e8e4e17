// Training checkpoints: output_dir/checkpoint-N holds the model in HF layout (config.json +
// model.safetensors), optimizer.safetensors (AdamW state), rng_state.safetensors and
// trainer_state.json (step, data position, arguments). A checkpoint is assembled in a
// temporary directory and renamed into place, so a crash leaves the last good one intact.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>

#include "models/llama.h"
#include "train/adamw.h"
#include "train/training_arguments.h"

namespace meshtrain::train {

struct TrainerState {
  int64_t global_step = 0;     // optimizer steps completed
  int64_t data_position = 0;   // windows of the sample stream consumed
  nlohmann::json args;         // the arguments the run was started with
};

std::filesystem::path save_training_checkpoint(const std::filesystem::path& output_dir,
                                               const models::LlamaForCausalLM& model,
                                               const AdamW& optimizer, const TrainerState& state);

// Restores model, optimizer and the global RNG; returns the trainer state.
TrainerState load_training_checkpoint(const std::filesystem::path& checkpoint_dir,
                                      models::LlamaForCausalLM& model, AdamW& optimizer);

// The checkpoint-N in output_dir with the largest N, if any.
std::optional<std::filesystem::path> latest_checkpoint(const std::filesystem::path& output_dir);

}  // namespace meshtrain::train

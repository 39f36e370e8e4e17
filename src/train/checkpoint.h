// Training checkpoints that move between layouts: checkpoint-N holds each rank's blocks and their
// manifest, the RNG and the trainer state; any layout resumes from any other, and a crash never
// leaves a half-written one (docs/files.md).
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>

#include "parallel/parallelize.h"
#include "train/adamw.h"

namespace meshtrain::train {

struct TrainerState {
  int64_t global_step = 0;    // optimizer steps completed
  int64_t data_position = 0;  // windows of the sample stream consumed
  nlohmann::json args;        // the arguments the run was started with
};

// Collective over the world: every rank calls it.
std::filesystem::path save_training_checkpoint(const std::filesystem::path& output_dir, parallel::ParallelModel& model,
                                               const AdamW& optimizer, const TrainerState& state);

// Restores model, optimizer and (same layout only) the RNG; returns the trainer state.
TrainerState load_training_checkpoint(const std::filesystem::path& checkpoint_dir, parallel::ParallelModel& model,
                                      AdamW& optimizer);

// The model in Hugging Face layout (config.json + safetensors), gathered tensor by tensor and
// written by rank 0, so no rank holds more than one full tensor beyond its shards. Collective.
void export_hf_checkpoint(parallel::ParallelModel& model, const std::filesystem::path& dir, uint64_t max_shard_bytes = 0);

// The complete checkpoint-N in output_dir with the largest N, if any; incomplete ones (a file
// missing, as after a copy cut short) are skipped with a warning naming what is missing.
std::optional<std::filesystem::path> latest_checkpoint(const std::filesystem::path& output_dir);

// Removes all but the newest `keep` checkpoint-N directories of output_dir.
void prune_checkpoints(const std::filesystem::path& output_dir, int64_t keep);

}  // namespace meshtrain::train

// The training loop on a mesh: each data-parallel rank takes its rows of the global step's
// micro-batches, the loss is the token-weighted mean over the global step's targets (local sums
// divided by the all-reduced target count, gradients summed), then global-norm clipping, AdamW
// with HF's schedules, metrics.jsonl, checkpoints and exact resume, and the final HF save.
#pragma once
#include <memory>
#include <vector>

#include "data/token_dataset.h"
#include "parallel/parallelize.h"
#include "train/training_arguments.h"

namespace meshtrain::train {

struct StepRecord {
  int64_t step;  // 1-based optimizer step
  double loss;   // token-weighted mean over the global step's targets
  double grad_norm;
  double lr;
};

struct MicroBatch {
  at::Tensor input_ids;  // [B, T]
  at::Tensor targets;    // [B, T], labels already shifted (nn::shift_labels)
};

// The routing of an MoE model's micro-batches, summed (this rank's until all-reduced).
struct MoeStepStats {
  double aux_loss_sum = 0.0;      // load-balancing losses (of global micro-batches), without the coef
  int64_t micro_batches = 0;
  at::Tensor tokens_per_expert;   // [MoE layers, E] long
  int64_t dropped = 0;            // assignments dropped by the capacity limit
  void add(const MoeStepStats& other);
};

// Forward and backward over this rank's micro-batches of one step, accumulating into .grad:
// each micro-batch's loss sum is divided by step_targets, the target count of the whole global
// step, so the summed gradients are those of the token-weighted mean, never a mean of means.
// An MoE model with output_router_logits adds router_aux_loss_coef times the load-balancing
// loss of each global micro-batch (micro-batch m of every dp rank together: assignment counts,
// probabilities and rows summed over dp) divided by the micro-batch count: the same loss in
// every layout, and HF's loss = ce_mean + coef * aux for one micro-batch on one rank. Returns
// this rank's cross-entropy sum; routing statistics go to moe_stats when given.
double accumulate_gradients(parallel::ParallelModel& model, const std::vector<MicroBatch>& micro_batches,
                            int64_t step_targets, MoeStepStats* moe_stats = nullptr);

class Trainer {
 public:
  Trainer(std::shared_ptr<parallel::ParallelModel> model, const data::TokenDataset& dataset, int64_t seq_len,
          TrainingArguments args);
  // Trains to args.max_steps (resuming first when asked); returns the steps run here.
  std::vector<StepRecord> train();

  // Whether rank 0 prints to stderr (tests turn it off).
  bool verbose = true;
  // fp32 GEMM rate for MFU; measured at the start of train() when not set.
  double peak_flops = 0.0;

 private:
  std::shared_ptr<parallel::ParallelModel> model_;
  const data::TokenDataset& dataset_;
  int64_t seq_len_;
  TrainingArguments args_;
};

}  // namespace meshtrain::train

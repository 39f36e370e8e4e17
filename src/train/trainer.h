// The training loop of one process: micro-batches from the sample stream, the token-weighted
// loss over the whole optimizer step, gradient accumulation, global-norm clipping, AdamW with
// HF's schedules, metrics.jsonl, checkpoints and exact resume, and the final HF-layout save.
#pragma once
#include <memory>
#include <vector>

#include "data/token_dataset.h"
#include "models/llama.h"
#include "train/training_arguments.h"

namespace meshtrain::train {

struct StepRecord {
  int64_t step;  // 1-based optimizer step
  double loss;   // token-weighted mean over the step's targets
  double grad_norm;
  double lr;
};

struct MicroBatch {
  at::Tensor input_ids;  // [B, T]
  at::Tensor targets;    // [B, T], labels already shifted (nn::shift_labels)
};

// Forward and backward over one optimizer step's micro-batches, accumulating into .grad: each
// micro-batch's loss sum is divided by the target count of the whole step, so the gradient is
// that of the token-weighted mean, never a mean of per-micro-batch means. Returns that mean.
double accumulate_gradients(models::LlamaForCausalLM& model, const std::vector<MicroBatch>& micro_batches);

class Trainer {
 public:
  Trainer(std::shared_ptr<models::LlamaForCausalLM> model, const data::TokenDataset& dataset,
          int64_t seq_len, TrainingArguments args);
  // Trains to args.max_steps (resuming first when asked); returns the steps run here.
  std::vector<StepRecord> train();

  // Whether to print to stderr (tests turn it off).
  bool verbose = true;
  // fp32 GEMM rate for MFU; measured at the start of train() when not set.
  double peak_flops = 0.0;

 private:
  std::shared_ptr<models::LlamaForCausalLM> model_;
  const data::TokenDataset& dataset_;
  int64_t seq_len_;
  TrainingArguments args_;
};

}  // namespace meshtrain::train

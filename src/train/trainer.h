// The training loop on a mesh: each data-parallel rank takes its rows of the global step's
// micro-batches, parallel::step_loss runs them (token-weighted loss over the global step), then
// global-norm clipping, AdamW with HF's schedules, evaluation, metrics.jsonl, checkpoints and exact
// resume.
#pragma once
#include <memory>
#include <vector>

#include "data/token_dataset.h"
#include "parallel/parallelize.h"
#include "parallel/step_loss.h"
#include "train/training_arguments.h"

namespace meshtrain::data {
class WindowSampler;
}  // namespace meshtrain::data

namespace meshtrain::train {

struct StepRecord {
  int64_t step;  // 1-based optimizer step
  double loss;   // token-weighted mean over the global step's targets
  double grad_norm;
  double lr;
  std::optional<parallel::MoeStepStats> moe;  // the step's routing, for MoE models
};

class Trainer {
 public:
  Trainer(std::shared_ptr<parallel::ParallelModel> model, const data::TokenDataset& dataset, int64_t seq_len,
          TrainingArguments args);
  // Trains to args.max_steps (resuming first when asked); returns the steps run here. After
  // SIGTERM it saves a checkpoint at the end of the step and returns early (preempted()).
  std::vector<StepRecord> train();
  bool preempted() const { return preempted_; }

  // Whether rank 0 prints to stderr (tests turn it off).
  bool verbose = true;
  // fp32 GEMM rate for MFU; measured at the start of train() when not set.
  double peak_flops = 0.0;
  // A restarted run (launch --max_restarts) continues from output_dir's newest checkpoint, if any.
  bool resume_if_possible = false;
  // Evaluated every eval_steps under eval_strategy steps (must outlive the trainer).
  const data::TokenDataset* eval_data = nullptr;
  // --packing: the documents of the data, each ending with this EOS id, packed into windows
  // (data/document_packing.h) with document-causal attention; unset: plain windows.
  std::optional<int64_t> packing_eos_token_id;

 private:
  // This rank's micro-batches of the global step that starts at stream position `position`.
  std::vector<parallel::MicroBatch> micro_batches(const data::WindowSampler& sampler, int64_t position) const;
  bool evaluates_after(int64_t step) const;

  std::shared_ptr<parallel::ParallelModel> model_;
  const data::TokenDataset& dataset_;
  int64_t seq_len_;
  TrainingArguments args_;
  bool preempted_ = false;
};

}  // namespace meshtrain::train

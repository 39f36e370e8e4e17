// The MoE routing of one pipeline stage over a step. HF's load-balancing loss is over every MoE
// layer's router logits of a micro-batch, and a stage holds only some of the layers: the counts of
// its forward are summed over the ranks holding different tokens, then over the stages by an
// all-reduce that is started there and finished before the micro-batch's backward (every stage
// has run that forward by then, so it never holds the schedule up). Each stage's term carries the
// gradient of its own routers' probabilities, and the terms add up to the single-rank loss.
#pragma once
#include <torch/csrc/distributed/c10d/Work.hpp>

#include <map>
#include <optional>

#include "parallel/router_balance.h"
#include "parallel/step_loss.h"

namespace meshtrain::parallel {

class PipelineRouting {
 public:
  PipelineRouting(ParallelModel& model, int64_t micro_batches);
  // After micro-batch m's forward on this stage, with its router records (none on a stage
  // without MoE layers; nothing happens for a dense model).
  void forward_done(int64_t m, const models::Routing& routing);
  // This stage's share of m's load-balancing loss times aux_loss_scale(), in the graph, for m's
  // backward; undefined when it adds nothing (a dense model, no aux loss, no MoE layer here).
  at::Tensor aux_term(int64_t m);
  // The step's routing on this stage (every micro-batch's aux loss, this stage's rows of tokens
  // per expert [all MoE layers, E], its drops), to be summed over the ranks; none for a dense model.
  std::optional<MoeStepStats> finish();

 private:
  struct Pending {
    RouterBalance balance;
    MoeStepStats stats;
    c10::intrusive_ptr<c10d::Work> work;  // the all-reduce over pp
    bool summed = false;                  // work finished, stats.aux_loss_sum set
  };
  Pending& finished(int64_t m);
  ParallelModel& model_;
  double aux_scale_ = 0.0;
  int64_t first_row_ = 0;  // this stage's first MoE layer among the model's
  std::map<int64_t, Pending> pending_;
};

}  // namespace meshtrain::parallel

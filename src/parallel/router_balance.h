// HF's load-balancing loss of one global micro-batch whose router logits were computed on several
// ranks (different tokens over dp_cp_sp, different MoE layers over pp): its counts are summed over
// those ranks, and each rank's term takes its own routing probabilities (in the graph) with the
// summed counts, so the terms add up to the loss over every layer's logits concatenated.
#pragma once
#include <ATen/core/Tensor.h>

#include "models/llama.h"

namespace meshtrain::parallel {

// router_aux_loss_coef / micro_batches when the model adds the load-balancing loss to its loss
// (output_router_logits), else 0: the weight of each micro-batch's loss in the step's.
double aux_loss_scale(const models::LlamaConfig& config, int64_t micro_batches);

class RouterBalance {
 public:
  // This rank's router records of the micro-batch; none on a pipeline stage without MoE layers.
  RouterBalance(const models::LlamaForCausalLM& model, const models::Routing& routing);
  // [top-k assignments (E) | routing probabilities, detached (E) | rows] fp64: sum it over the
  // ranks in place before term() and loss().
  at::Tensor& totals() { return totals_; }
  // E · Σ_e (A_e / R) · (this rank's P_e / R) with the summed A and R; undefined without records.
  at::Tensor term() const;
  // The micro-batch's whole loss, from the summed totals.
  double loss() const;

 private:
  at::Tensor totals_;
  at::Tensor prob_sum_;  // this rank's, in the graph
  int64_t experts_ = 0;
};

}  // namespace meshtrain::parallel

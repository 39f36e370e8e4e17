// One global step's loss on the mesh, the only place that knows how it is reduced: each rank's
// micro-batches run forward (and backward), and the loss sum, the target count and the MoE
// routing come back summed over every rank holding different tokens.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "nn/router_record.h"

namespace meshtrain::dist {
class DeviceMesh;
class Group;
}  // namespace meshtrain::dist

namespace meshtrain::parallel {

class ParallelModel;

struct MicroBatch {
  at::Tensor input_ids;     // [B, T]
  at::Tensor targets;       // [B, T], labels already shifted (nn::shift_labels)
  at::Tensor position_ids = {};  // [B, T] of packed documents (restarting at each); undefined: 0..T-1
};

// The routing of an MoE model's micro-batches, summed.
struct MoeStepStats {
  double aux_loss_sum = 0.0;     // load-balancing losses of the global micro-batches, without the coef
  int64_t micro_batches = 0;
  at::Tensor tokens_per_expert;  // [MoE layers, E] long
  int64_t dropped = 0;           // assignments dropped by the capacity limit
  void add(const MoeStepStats& other);
  double aux_loss() const { return aux_loss_sum / static_cast<double>(std::max<int64_t>(micro_batches, 1)); }
};

struct StepLoss {
  double loss_sum = 0.0;  // cross entropy summed over the global step's targets
  int64_t targets = 0;    // the global step's target count
  std::optional<MoeStepStats> moe;
  double mean() const { return loss_sum / static_cast<double>(std::max<int64_t>(targets, 1)); }
};

enum class Pass { Forward, ForwardBackward };

// The global step's target count: this rank's micro-batches' targets summed over dp. Collective.
int64_t global_target_count(const dist::DeviceMesh& mesh, const std::vector<MicroBatch>& micro_batches);

// One micro-batch's routing on this rank: the global micro-batch's load-balancing loss, tokens
// per expert [MoE layers it ran, E] (undefined for none) and the assignments dropped.
MoeStepStats routing_stats(const std::vector<nn::RouterRecord>& routing, double aux_loss);

// Sums a step's record (loss sum and MoE routing) over the group. Collective over it.
void sum_step_loss(dist::Group& group, StepLoss& step);

// Runs this rank's micro-batches of one global step. With backward, each micro-batch's loss sum
// is divided by the global target count, so the accumulated gradients are those of the
// token-weighted mean (never a mean of means); an MoE model with output_router_logits adds
// router_aux_loss_coef times the load-balancing loss of each global micro-batch (micro-batch m
// of every rank holding different tokens: assignments, probabilities and rows summed) divided
// by the micro-batch count, HF's loss for one micro-batch on one rank. The gradients are then
// synchronised by the model's sync plan. Collective over the mesh.
StepLoss step_loss(ParallelModel& model, const std::vector<MicroBatch>& micro_batches, Pass pass);

}  // namespace meshtrain::parallel

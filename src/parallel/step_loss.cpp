#include "parallel/step_loss.h"

#include "dist/collectives.h"
#include "dist/device_mesh.h"
#include "nn/causal_lm_loss.h"
#include "parallel/parallelize.h"
#include "parallel/pipeline_runner.h"
#include "parallel/router_balance.h"

namespace meshtrain::parallel {

namespace {

// One micro-batch's MoE record: the global micro-batch's load balance and this rank's routing.
struct MicroBatchRouting {
  at::Tensor aux_term;  // this rank's share of the global load-balancing loss, in the graph
  MoeStepStats stats;
};

MicroBatchRouting route(ParallelModel& model, const models::Routing& routing) {
  // Global-batch load balancing: the micro-batch's counts summed over every rank holding
  // different tokens; this rank's term uses its own probabilities.
  RouterBalance balance(model.model(), routing);
  dist::all_reduce_(model.mesh().group(MeshDim::DpCpSp), balance.totals());
  return {balance.term(), routing_stats(routing, balance.loss())};
}

}  // namespace

int64_t global_target_count(const dist::DeviceMesh& mesh, const std::vector<MicroBatch>& micro_batches) {
  // Every cp / sp rank of a row (and every pipeline stage) counts its targets whole: the count
  // is summed over dp only.
  int64_t local_targets = 0;
  for (auto& mb : micro_batches) local_targets += nn::count_targets(mb.targets);
  auto targets = at::tensor(local_targets, at::kLong);
  dist::all_reduce_(mesh.group(MeshDim::Dp), targets);
  return targets.item<int64_t>();
}

void MoeStepStats::add(const MoeStepStats& o) {
  aux_loss_sum += o.aux_loss_sum;
  micro_batches += o.micro_batches;
  dropped += o.dropped;
  if (o.tokens_per_expert.defined())
    tokens_per_expert = tokens_per_expert.defined() ? tokens_per_expert + o.tokens_per_expert : o.tokens_per_expert.clone();
}

MoeStepStats routing_stats(const std::vector<nn::RouterRecord>& routing, double aux_loss) {
  MoeStepStats stats{aux_loss, 1, {}, 0};
  std::vector<at::Tensor> counts;
  for (auto& record : routing) {
    counts.push_back(record.tokens_per_expert);
    stats.dropped += record.dropped;
  }
  if (!counts.empty()) stats.tokens_per_expert = at::stack(counts);
  return stats;
}

// [loss sum, aux sum, micro-batches, dropped, tokens per expert...] packed in one buffer.
void sum_step_loss(dist::Group& group, StepLoss& step) {
  std::vector<at::Tensor> parts = {at::tensor({step.loss_sum}, at::kDouble)};
  if (step.moe)
    parts.insert(parts.end(), {at::tensor({step.moe->aux_loss_sum, static_cast<double>(step.moe->micro_batches),
                                           static_cast<double>(step.moe->dropped)},
                                          at::kDouble),
                               step.moe->tokens_per_expert.reshape({-1}).to(at::kDouble).cpu()});
  auto packed = at::cat(parts);
  dist::all_reduce_(group, packed);
  step.loss_sum = packed[0].item<double>();
  if (!step.moe) return;
  step.moe->aux_loss_sum = packed[1].item<double>();
  step.moe->micro_batches = packed[2].item<int64_t>();
  step.moe->dropped = packed[3].item<int64_t>();
  step.moe->tokens_per_expert =
      packed.slice(0, 4).round().to(at::kLong).view(step.moe->tokens_per_expert.sizes());
}

StepLoss step_loss(ParallelModel& model, const std::vector<MicroBatch>& micro_batches, Pass pass) {
  const auto& mesh = model.mesh();
  if (mesh.size(MeshDim::Pp) > 1) return pipeline_step_loss(model, micro_batches, pass);
  StepLoss step;
  step.targets = global_target_count(mesh, micro_batches);
  const double denominator = static_cast<double>(std::max<int64_t>(step.targets, 1));
  const double aux_scale = aux_loss_scale(model.model().config(), static_cast<int64_t>(micro_batches.size()));
  const bool backward = pass == Pass::ForwardBackward;
  for (size_t m = 0; m < micro_batches.size(); ++m) {
    models::Routing routing;
    const auto& mb = micro_batches[m];
    auto sum = model.loss_sum(mb.input_ids, mb.targets, &routing, mb.position_ids);
    step.loss_sum += sum.item<double>();
    at::Tensor loss = sum / denominator;
    if (!routing.empty()) {
      auto routed = route(model, routing);
      if (aux_scale != 0.0) loss = loss + routed.aux_term * aux_scale;
      if (!step.moe) step.moe = MoeStepStats{};
      step.moe->add(routed.stats);
    }
    if (!backward) continue;
    model.prepare_backward(m + 1 == micro_batches.size());
    loss.backward();
  }
  if (backward) model.finish_backward();
  // Each rank holding different tokens holds every global micro-batch's aux loss: the sum over
  // them divided by the summed micro-batches is the mean.
  sum_step_loss(mesh.group(MeshDim::DpCpSp), step);
  return step;
}

}  // namespace meshtrain::parallel

#include "parallel/pipeline_routing.h"

#include "dist/collectives.h"
#include "dist/device_mesh.h"
#include "parallel/parallelize.h"
#include "util/check.h"

namespace meshtrain::parallel {

PipelineRouting::PipelineRouting(ParallelModel& model, int64_t micro_batches)
    : model_(model), aux_scale_(aux_loss_scale(model.model().config(), micro_batches)) {
  const auto& config = model.model().config();
  const auto& layers = model.model().model->layers;  // null before this stage's first layer
  for (size_t i = 0; i < layers.size() && !layers[i]; ++i) first_row_ += config.is_moe_layer(static_cast<int64_t>(i));
}

void PipelineRouting::forward_done(int64_t m, const models::Routing& routing) {
  const auto& config = model_.model().config();
  if (!config.moe) return;
  const auto& mesh = model_.mesh();
  RouterBalance balance(model_.model(), routing);
  dist::all_reduce_(mesh.group(MeshDim::DpCpSp), balance.totals());
  auto work = dist::all_reduce_async(mesh.group(MeshDim::Pp), balance.totals());
  auto stats = routing_stats(routing, 0.0);
  auto rows = at::zeros({config.num_moe_layers(), config.moe->num_experts}, at::kLong);
  if (stats.tokens_per_expert.defined())
    rows.narrow(0, first_row_, stats.tokens_per_expert.size(0)).copy_(stats.tokens_per_expert);
  stats.tokens_per_expert = rows;
  pending_.insert_or_assign(m, Pending{std::move(balance), std::move(stats), std::move(work)});
}

PipelineRouting::Pending& PipelineRouting::finished(int64_t m) {
  auto it = pending_.find(m);
  MT_CHECK(it != pending_.end(), "pipeline stage ", model_.mesh().coordinate(MeshDim::Pp),
           ": no routing recorded for micro-batch ", m);
  auto& p = it->second;
  if (!p.summed) {
    dist::wait_work(model_.mesh().group(MeshDim::Pp), p.work, "all_reduce of the pipeline's MoE routing");
    p.stats.aux_loss_sum = p.balance.loss();
    p.summed = true;
  }
  return p;
}

at::Tensor PipelineRouting::aux_term(int64_t m) {
  if (aux_scale_ == 0.0) return {};
  auto term = finished(m).balance.term();
  return term.defined() ? term * aux_scale_ : term;
}

std::optional<MoeStepStats> PipelineRouting::finish() {
  if (!model_.model().config().moe) return std::nullopt;
  MoeStepStats step;
  for (auto& [m, p] : pending_) step.add(finished(m).stats);
  pending_.clear();
  return step;
}

}  // namespace meshtrain::parallel

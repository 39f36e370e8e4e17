#include "parallel/parallelize.h"

#include <algorithm>
#include <map>

#include "dist/collectives.h"
#include "util/check.h"

namespace meshtrain::parallel {

ParallelModel::ParallelModel(std::shared_ptr<models::LlamaForCausalLM> model,
                             std::shared_ptr<const dist::DeviceMesh> mesh, const ParallelOptions& options)
    : model_(std::move(model)), mesh_(std::move(mesh)) {
  const auto& s = mesh_->sizes();
  MT_CHECK(s.cp == 1 && s.sp == 1, "cp_size and sp_size > 1 are not implemented yet (got cp ", s.cp, ", sp ", s.sp, ")");
  MT_CHECK(s.tp == 1 || s.dp_shard == 1, "tp_size ", s.tp, " with dp_shard_size ", s.dp_shard,
           " (FSDP over tensor-parallel shards) is not implemented yet; use dp_replicate_size with tp");
  // q_norm/k_norm see only this rank's heads under tp: their gradients would need a tp sum.
  MT_CHECK(s.tp == 1 || !model_->config().qk_norm, "tp_size ", s.tp, " with q_norm/k_norm (",
           model_->config().model_type, ") is not implemented yet");
  if (s.tp > 1) tp_report_ = apply_tensor_parallel(*model_, *mesh_, options.tp_plan);
  // FSDP shards and reduce-scatters over dp_shard and all-reduces over dp_replicate itself;
  // without sharding, DDP all-reduces over dp_replicate.
  if (s.dp_shard > 1) {
    fsdp_ = std::make_unique<Fsdp>(*model_, *mesh_, options.reshard_after_forward);
  } else if (s.dp_replicate > 1) {
    ddp_ = std::make_unique<DdpReducer>(model_->named_params(), mesh_->group("dp_replicate"), options.ddp_bucket_cap_mb);
  }
}

at::Tensor ParallelModel::forward(const at::Tensor& input_ids, const at::Tensor& position_ids) {
  if (fsdp_) fsdp_->gather_root();
  return model_->forward(input_ids, position_ids);
}

void ParallelModel::prepare_backward(bool last_micro_batch) {
  if (ddp_) ddp_->prepare_backward(last_micro_batch);
}

void ParallelModel::finish_backward() {
  if (ddp_) ddp_->finish();
}

double ParallelModel::clip_grad_norm(double max_norm) {
  at::NoGradGuard no_grad;
  // Sum of squares per set of mesh dims a parameter is sharded on; each set is summed over
  // those dims' groups, so a shard counts once and a replica is not counted twice.
  std::map<std::vector<std::string>, std::vector<at::Tensor>> groups;
  std::vector<at::Tensor> grads;
  for (auto& [name, p] : model_->named_params()) {
    if (!p.grad().defined()) continue;
    grads.push_back(p.grad());
    const auto& place = model_->placement(name);
    std::vector<std::string> dims;
    for (size_t d = 0; d < place.placements.size(); ++d)
      if (place.placements[d].kind == nn::Placement::Kind::Shard) dims.push_back(place.mesh_dims[d]);
    groups[dims].push_back(p.grad());
  }
  double total = 0.0;
  for (auto& [dims, group_grads] : groups) {
    // One fused norm per tensor, squared and summed in fp64: no fp64 copy of the gradients.
    auto sum = at::stack(at::_foreach_norm(group_grads, 2)).to(at::kDouble).pow(2).sum();
    for (auto& dim : dims) dist::all_reduce_(mesh_->group(dim), sum);
    total += sum.item<double>();
  }
  const double norm = std::sqrt(total);
  if (max_norm > 0 && !grads.empty()) {
    const double coef = std::min(1.0, max_norm / (norm + 1e-6));
    if (coef < 1.0) at::_foreach_mul_(grads, coef);
  }
  return norm;
}

}  // namespace meshtrain::parallel

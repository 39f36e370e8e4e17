#include "parallel/parallelize.h"

#include <algorithm>
#include <map>

#include "dist/collectives.h"
#include "models/hf_weights.h"
#include "nn/causal_lm_loss.h"
#include "parallel/loss_parallel.h"
#include "parallel/ulysses.h"
#include "util/check.h"

namespace meshtrain::parallel {

ParallelModel::ParallelModel(std::shared_ptr<models::LlamaForCausalLM> model,
                             std::shared_ptr<const dist::DeviceMesh> mesh, const ParallelOptions& options)
    : model_(std::move(model)), mesh_(std::move(mesh)) {
  const auto& s = mesh_->sizes();
  MT_CHECK(s.tp > 1 || !options.sequence_parallel, "--sequence_parallel needs tp_size > 1");
  MT_CHECK(s.tp > 1 || !options.loss_parallel, "--loss_parallel needs tp_size > 1");
  sequence_parallel_ = options.sequence_parallel;
  if (s.tp > 1)
    tp_report_ = apply_tensor_parallel(*model_, *mesh_,
                                       options.tp_plan.value_or(TpPlan::hf_default(model_->config().model_type)),
                                       {options.sequence_parallel, options.loss_parallel});
  const bool in_tp = options.ep_mode == EpMode::AllReduce;
  MT_CHECK(mesh_->size("ep") == options.ep_size && (options.ep_size == 1 || s.ep_in_tp == in_tp), "--ep_size ",
           options.ep_size, " (", in_tp ? "allreduce" : "alltoall", "): the mesh was built with ep ", mesh_->size("ep"),
           s.ep_in_tp ? " in the tp group" : " in dp_shard x cp");
  if (options.ep_size > 1) {
    MT_CHECK(!model_->moe_layers().empty(), "--ep_size ", options.ep_size, ": the model has no MoE layers");
    apply_expert_parallel(*model_, *mesh_, options.ep_mode);
  }
  // Gradients summed by hand after backward: partial ones over tp; experts dispatched to over ep,
  // which data parallelism leaves alone, over the ranks holding the same experts.
  std::map<std::string, at::Tensor> params;
  for (auto& [name, p] : model_->named_params()) params[name] = p;
  auto& partial = grad_sums_.emplace_back(&mesh_->group("tp"), std::vector<at::Tensor>{});
  for (auto& name : tp_report_.partial_grad_params) partial.second.push_back(params.at(name));
  auto& experts = grad_sums_.emplace_back(&mesh_->group("ep_replicate"), std::vector<at::Tensor>{});
  std::vector<std::pair<std::string, at::Tensor>> data_parallel;
  for (auto& [name, p] : model_->named_params()) {
    if (is_dispatched_expert(model_->placement(name))) experts.second.push_back(p);
    else data_parallel.emplace_back(name, p);
  }
  if (s.cp > 1 || s.sp > 1) apply_ulysses(*model_, *mesh_, options.cp_comm_strategy);
  // FSDP shards and reduce-scatters over dp_shard × cp and all-reduces over dp_replicate × sp
  // itself; without sharding, DDP all-reduces over every rank holding different tokens.
  if (s.dp_shard > 1) {
    fsdp_ = std::make_unique<Fsdp>(*model_, *mesh_, options.reshard_after_forward);
  } else if (mesh_->size("dp_cp_sp") > 1) {
    ddp_ = std::make_unique<DdpReducer>(data_parallel, mesh_->group("dp_cp_sp"), options.ddp_bucket_cap_mb);
  }
}

at::Tensor ParallelModel::forward(const at::Tensor& input_ids, const at::Tensor& position_ids) {
  if (fsdp_) fsdp_->gather_root();
  return model_->forward(input_ids, position_ids);
}

at::Tensor ParallelModel::loss_sum(const at::Tensor& input_ids, const at::Tensor& targets) {
  at::Tensor logits, local_targets = targets;
  if (mesh_->size("cp") > 1 || mesh_->size("sp") > 1) {
    local_targets = shard_sequence(targets, *mesh_);
    logits = forward(shard_sequence(input_ids, *mesh_),
                     sequence_position_ids(input_ids.size(0), input_ids.size(1), *mesh_));
  } else {
    logits = forward(input_ids);
  }
  if (tp_report_.logits_vocab_sharded)
    return vocab_parallel_cross_entropy_sum(logits, local_targets, mesh_->group("tp"), tp_report_.vocab_offset);
  return nn::cross_entropy_sum(logits, local_targets);
}

void ParallelModel::check_sequence_length(int64_t seq_len) const {
  auto local = shard_sequence(at::zeros({1, seq_len}), *mesh_);  // T divisible by 2·cp, then by sp
  if (sequence_parallel_) sequence_shards(local.size(1), mesh_->size("tp"));
}

void ParallelModel::prepare_backward(bool last_micro_batch) {
  if (ddp_) ddp_->prepare_backward(last_micro_batch);
}

void ParallelModel::finish_backward() {
  if (ddp_) ddp_->finish();
  at::NoGradGuard no_grad;
  for (auto& [group, params] : grad_sums_) {
    std::vector<at::Tensor> grads, flat;  // summed as one buffer
    for (auto& p : params)
      if (p.grad().defined()) {
        grads.push_back(p.grad());
        flat.push_back(p.grad().reshape({-1}));
      }
    if (grads.empty() || group->size() == 1) continue;
    auto sum = at::cat(flat);
    dist::all_reduce_(*group, sum);
    int64_t offset = 0;
    for (auto& g : grads) {
      g.copy_(sum.narrow(0, offset, g.numel()).view_as(g));
      offset += g.numel();
    }
  }
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

std::shared_ptr<ParallelModel> load_pretrained_parallel(const std::filesystem::path& dir,
                                                        std::shared_ptr<const dist::DeviceMesh> mesh,
                                                        const ParallelOptions& options) {
  auto model = std::make_shared<models::LlamaForCausalLM>(models::LlamaConfig::load(dir));
  auto parallel = std::make_shared<ParallelModel>(model, std::move(mesh), options);
  models::load_hf_weights(*model, io::CheckpointReader(dir));
  return parallel;
}

}  // namespace meshtrain::parallel

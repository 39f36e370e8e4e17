#include "parallel/parallelize.h"

#include <algorithm>
#include <map>

#include "dist/collectives.h"
#include "dist/device_mesh.h"
#include "models/hf_weights.h"
#include "nn/causal_lm_loss.h"
#include "nn/document_mask.h"
#include "parallel/activation_checkpointing.h"
#include "parallel/ddp.h"
#include "parallel/expert_parallel.h"
#include "parallel/fsdp.h"
#include "parallel/grad_sync_plan.h"
#include "parallel/loss_parallel.h"
#include "parallel/mixed_precision.h"
#include "parallel/pipeline_stage.h"
#include "parallel/tensor_parallel.h"
#include "parallel/ulysses.h"
#include "util/check.h"

namespace meshtrain::parallel {

Parallelized::Parallelized() = default;
Parallelized::Parallelized(Parallelized&&) noexcept = default;
Parallelized::~Parallelized() = default;

Parallelized parallelize(models::LlamaForCausalLM& model, const dist::DeviceMesh& mesh, const ParallelOptions& o) {
  using enum MeshDim;
  const auto& s = mesh.sizes();
  MT_CHECK(s.tp > 1 || !o.sequence_parallel, "--sequence_parallel needs tp_size > 1");
  MT_CHECK(s.tp > 1 || !o.loss_parallel, "--loss_parallel needs tp_size > 1");
  const bool in_tp = o.ep_mode == EpMode::AllReduce;
  MT_CHECK(mesh.size(Ep) == o.ep_size && (o.ep_size == 1 || s.ep_in_tp == in_tp), "--ep_size ", o.ep_size, " (",
           in_tp ? "allreduce" : "alltoall", "): the mesh was built with ep ", mesh.size(Ep),
           s.ep_in_tp ? " in the tp group" : " in dp_shard x cp");
  MT_CHECK(o.ep_size == 1 || !model.moe_layers().empty(), "--ep_size ", o.ep_size, ": the model has no MoE layers");
  // Activation checkpointing accumulates the weight gradients when its backward recomputes,
  // which an input-gradient-only backward would then count twice.
  if (s.pp > 1 && splits_backward(o.pp.schedule) && o.ac_mode != AcMode::None)
    throw UsageError(str_cat("--pipeline_parallel_schedule ", pipeline_schedule_name(o.pp.schedule),
                             " splits each backward in two, which activation checkpointing does not support; "
                             "use Interleaved1F1B or --ac_mode none"));
  Parallelized p;
  p.tp = std::make_unique<TpReport>();
  // 0. Pipeline stages first: a stage is the serial model's slice, and every unit after it
  //    lays out only what the stage holds.
  apply_pipeline_stage(model, mesh, o.pp);
  //    The stage moves to its device before any unit keeps references to its parameters;
  //    initial and loaded values are later copied into them wherever they live.
  model.to(o.device);
  // 1. Tensor (and Megatron sequence) parallelism first: it decides what each rank holds, the
  //    experts split inside included, and every later unit works on its shards.
  if (s.tp > 1)
    *p.tp = apply_tensor_parallel(model, mesh.group(Tp), mesh.group(mesh.expert_tensor_dim()),
                                  o.tp_plan.value_or(TpPlan::hf_default(model.config().model_type)),
                                  {o.sequence_parallel, o.loss_parallel});
  // 2. Expert parallelism next: it shards the experts tp left whole on dim 0, puts its dispatcher
  //    inside tp's, and hands their gradients to their ep replicas, away from data parallelism.
  if (o.ep_size > 1) apply_expert_parallel(model, mesh.group(Ep), o.ep_mode);
  // 3. Context and Ulysses parallelism only change how attention runs, on any shards.
  apply_sequence_sharded_attention(model, mesh.group(Cp), mesh.group(Sp), o.cp_comm_strategy);
  // 4. Activation checkpointing: a runner around each layer, inside FSDP's gather (installed next)
  //    so that recomputation finds the layer's weights gathered again.
  if (o.ac_mode != AcMode::None) apply_activation_checkpointing(model, o.ac_mode == AcMode::Full ? 1 : o.ac_every);
  // 5. FSDP last: it shards, over dp_shard × cp, what every token-holding rank still holds alike.
  //    Pipeline schedules run several forwards before their backwards, so a stage keeps its
  //    gathered weights for the step (torchtitan's default under pp too).
  if (s.dp_shard > 1)
    p.fsdp = std::make_unique<Fsdp>(model, mesh.group(DpShardCp), mesh.group(DpReplicateSp),
                                    o.reshard_after_forward && s.pp == 1, o.bf16 ? at::kBFloat16 : at::kFloat,
                                    o.reduce_dtype);
  // 6. The records are final: the gradient-sync plan, and DDP's buckets for what it assigns them.
  p.sync = std::make_unique<GradSyncPlan>(model, mesh, o.reduce_dtype);
  std::map<std::string, at::Tensor> params;
  for (auto& [name, param] : model.named_params()) params[name] = param;
  std::vector<std::pair<std::string, at::Tensor>> bucketed;
  for (auto& name : p.sync->params(SyncMechanism::DdpBuckets)) bucketed.emplace_back(name, params.at(name));
  if (!bucketed.empty()) p.ddp = std::make_unique<DdpReducer>(bucketed, mesh.group(DpCpSp), o.ddp_bucket_cap_mb, o.reduce_dtype);
  return p;
}

ParallelModel::ParallelModel(std::shared_ptr<models::LlamaForCausalLM> model,
                             std::shared_ptr<const dist::DeviceMesh> mesh, const ParallelOptions& options)
    : model_(std::move(model)),
      mesh_(std::move(mesh)),
      sequence_parallel_(options.sequence_parallel),
      bf16_(options.bf16),
      reduce_dtype_(options.reduce_dtype),
      device_(options.device),
      pipeline_(options.pp),
      parts_(parallelize(*model_, *mesh_, options)) {
  const int64_t pp = mesh_->size(MeshDim::Pp);
  if (pp == 1) stage_layers_.emplace_back(0, model_->config().num_hidden_layers);
  else
    for (auto& st : split_stages(model_->config().num_hidden_layers, pp, pipeline_.layers_per_stage,
                                 pipeline_.virtual_stages))
      stage_layers_.emplace_back(st.begin, st.end);
  std::map<std::string, at::Tensor> params;
  for (auto& [name, p] : model_->named_params()) params[name] = p;
  for (auto& [dim, names] : parts_.sync->after_backward()) {
    auto& sums = after_backward_.emplace_back(&mesh_->group(dim), std::vector<at::Tensor>{});
    for (auto& name : names) sums.second.push_back(params.at(name));
  }
}

ParallelModel::~ParallelModel() = default;

std::vector<int64_t> ParallelModel::held_stages() const {
  const int64_t pp = mesh_->size(MeshDim::Pp);
  return rank_stages(mesh_->coordinate(MeshDim::Pp), pp, pp > 1 ? pipeline_.virtual_stages : 1);
}

at::Tensor ParallelModel::forward(const at::Tensor& input_ids, const at::Tensor& position_ids,
                                  models::Routing* routing, const at::Tensor& document_ids) {
  MT_CHECK(!model_->is_slice(), "a whole-model forward (generate) needs pp_size 1, got pp_size ",
           mesh_->size(MeshDim::Pp), ": a pipeline stage holds only its slice of the layers");
  if (parts_.fsdp) parts_.fsdp->gather_root();
  return model_->forward(input_ids, position_ids, routing, document_ids);
}

ParallelModel::LocalInputs ParallelModel::local_inputs(const at::Tensor& input_ids, const at::Tensor& position_ids) const {
  LocalInputs in;
  // The documents of the whole rows, before sharding: every attention core sees them whole.
  if (position_ids.defined()) in.documents = nn::packed_document_ids(position_ids);
  if (mesh_->size(MeshDim::Cp) > 1 || mesh_->size(MeshDim::Sp) > 1) {
    in.ids = shard_sequence(input_ids, *mesh_);
    in.positions = position_ids.defined() ? shard_sequence(position_ids, *mesh_)
                                          : sequence_position_ids(input_ids.size(0), input_ids.size(1), *mesh_);
  } else {
    in.ids = input_ids;
    in.positions = position_ids.defined() ? position_ids
                                          : at::arange(input_ids.size(1), input_ids.options()).unsqueeze(0).expand_as(input_ids);
  }
  in.ids = in.ids.to(device_);
  in.positions = in.positions.to(device_);
  return in;
}

at::Tensor ParallelModel::loss_sum(const at::Tensor& input_ids, const at::Tensor& targets, models::Routing* routing,
                                   const at::Tensor& position_ids) {
  const auto in = local_inputs(input_ids, position_ids);
  AutocastGuard autocast(bf16_);
  return logits_loss_sum(forward(in.ids, in.positions, routing, in.documents), targets);
}

at::Tensor ParallelModel::stage_forward(int64_t stage, const at::Tensor& input_ids, const at::Tensor& hidden,
                                        const at::Tensor& position_ids, models::Routing* routing) {
  const auto [begin, end] = stage_layers_.at(static_cast<size_t>(stage));
  if (parts_.fsdp) parts_.fsdp->gather_root(begin);
  const auto in = local_inputs(input_ids, position_ids);
  AutocastGuard autocast(bf16_);
  return model_->forward_slice(begin, end, stage == 0 ? in.ids : hidden, in.positions, routing, in.documents);
}

at::Tensor ParallelModel::logits_loss_sum(const at::Tensor& logits, const at::Tensor& targets) {
  const bool sharded = mesh_->size(MeshDim::Cp) > 1 || mesh_->size(MeshDim::Sp) > 1;
  const auto local_targets = (sharded ? shard_sequence(targets, *mesh_) : targets).to(logits.device());
  if (parts_.tp->logits_vocab_sharded)
    return vocab_parallel_cross_entropy_sum(logits, local_targets, mesh_->group(MeshDim::Tp), parts_.tp->vocab_offset);
  return nn::cross_entropy_sum(logits, local_targets);
}

std::vector<int64_t> ParallelModel::stage_activation_shape(const at::Tensor& input_ids) const {
  auto local = shard_sequence(at::zeros({1, input_ids.size(1)}), *mesh_);
  int64_t t = local.size(1);
  if (sequence_parallel_) t = sequence_shards(t, mesh_->size(MeshDim::Tp))[mesh_->coordinate(MeshDim::Tp)];
  return {input_ids.size(0), t, model_->config().hidden_size};
}

void ParallelModel::check_sequence_length(int64_t seq_len) const {
  auto local = shard_sequence(at::zeros({1, seq_len}), *mesh_);  // T divisible by 2·cp, then by sp
  if (sequence_parallel_) sequence_shards(local.size(1), mesh_->size(MeshDim::Tp));
}

void ParallelModel::prepare_backward(bool last_micro_batch) {
  if (parts_.ddp) parts_.ddp->prepare_backward(last_micro_batch);
}

void ParallelModel::finish_backward() {
  if (parts_.ddp) parts_.ddp->finish();
  at::NoGradGuard no_grad;
  for (auto& [group, params] : after_backward_) {
    std::vector<at::Tensor> grads, flat;  // summed as one buffer
    for (auto& p : params)
      if (p.grad().defined()) {
        grads.push_back(p.grad());
        flat.push_back(p.grad().reshape({-1}));
      }
    if (grads.empty() || group->size() == 1) continue;
    auto sum = at::cat(flat).to(reduce_dtype_);
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
  std::map<std::vector<MeshDim>, std::vector<at::Tensor>> groups;
  std::vector<at::Tensor> grads;
  for (auto& [name, p] : model_->named_params()) {
    if (!p.grad().defined()) continue;
    grads.push_back(p.grad());
    const auto& place = model_->placement(name);
    // The tied embedding's copy on the last pipeline stage is counted on the first.
    if (place.is(MeshDim::PpEnds, nn::Placement::Kind::Replicate) && mesh_->group(MeshDim::PpEnds).rank() != 0)
      continue;
    std::vector<MeshDim> dims;
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
  if (mesh_->size(MeshDim::Pp) > 1) {  // each stage holds different parameters
    auto sum = at::tensor({total}, at::kDouble);
    dist::all_reduce_(mesh_->group(MeshDim::Pp), sum);
    total = sum.item<double>();
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
  std::shared_ptr<ParallelModel> parallel;
  models::load_pretrained(dir, [&](std::shared_ptr<models::LlamaForCausalLM> model) {
    parallel = std::make_shared<ParallelModel>(std::move(model), std::move(mesh), options);
  });
  return parallel;
}

}  // namespace meshtrain::parallel

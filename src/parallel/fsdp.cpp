#include "parallel/fsdp.h"

#include <ATen/native/Resize.h>
#ifdef MESHTRAIN_CUDA
#include <ATen/native/cuda/Resize.h>
#endif
#include <torch/csrc/autograd/custom_function.h>

#include <map>
#include <numeric>

#include "dist/comm_autograd.h"
#include "util/check.h"

namespace meshtrain::parallel {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// forward: the unit's full weights from its gathered flat buffer / backward: reduce-scatter
// of the unit's gradients over dp_shard × cp, all-reduce over dp_replicate × sp; the full weights are
// dropped after (nothing reads them once their gradients are done).
struct GatherUnit : torch::autograd::Function<GatherUnit> {
  // local: this rank's shards, flattened and concatenated (autograd splits its gradient back).
  static variable_list forward(AutogradContext* ctx, const at::Tensor& local, const at::Tensor& flat, Fsdp* fsdp,
                               Fsdp::Unit* unit) {
    ctx->saved_data["fsdp"] = reinterpret_cast<int64_t>(fsdp);
    ctx->saved_data["unit"] = reinterpret_cast<int64_t>(unit);
    return fsdp->unflatten(*unit, flat);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto* fsdp = reinterpret_cast<Fsdp*>(ctx->saved_data["fsdp"].toInt());
    auto* unit = reinterpret_cast<Fsdp::Unit*>(ctx->saved_data["unit"].toInt());
    auto full = fsdp->flatten_grads(*unit, grads).to(fsdp->reduce_dtype());
    auto mine = dist::reduce_scatter_uneven(fsdp->shard_group(), full, 0, unit->flat_sizes);
    dist::all_reduce_(fsdp->replicate_group(), mine);
    for (auto& p : unit->params) p.full = at::Tensor();
    return {mine.to(at::kFloat), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// Frees (0) or restores the memory of a gathered weight in place: autograd's saved tensors keep
// referring to the same storage.
void set_storage_bytes(const at::Tensor& t, size_t bytes) {
  auto* storage = t.unsafeGetTensorImpl()->unsafe_storage().unsafeGetStorageImpl();
#ifdef MESHTRAIN_CUDA
  if (t.is_cuda()) return at::native::resize_bytes_cuda(storage, bytes);
#endif
  MT_CHECK(t.is_cpu(), "FSDP frees gathered weights on CPU and CUDA only, not ", t.device());
  at::native::resize_bytes_cpu(storage, bytes);
}

class FsdpLayerRunner : public nn::LayerRunner {
 public:
  explicit FsdpLayerRunner(Fsdp& fsdp) : fsdp_(fsdp) {}
  nn::LayerOutput run(int64_t index, const nn::LayerForward& inner, const at::Tensor& hidden) override {
    fsdp_.gather_layer(index);
    auto out = inner(hidden);
    fsdp_.after_layer_forward(index, out.hidden);
    return out;
  }

 private:
  Fsdp& fsdp_;
};

// Offset of rank k's segment, and of parameter q inside any rank's segment.
int64_t rank_base(const Fsdp::Unit& u, size_t k) {
  return std::accumulate(u.flat_sizes.begin(), u.flat_sizes.begin() + static_cast<int64_t>(k), int64_t{0});
}
int64_t param_base(const Fsdp::Unit& u, size_t k, size_t q) {
  int64_t off = 0;
  for (size_t j = 0; j < q; ++j) off += u.params[j].rows[k] * u.params[j].row_numel;
  return off;
}

}  // namespace

Fsdp::Fsdp(models::LlamaForCausalLM& model, dist::Group& shard_group, dist::Group& replicate_group,
           bool reshard_after_forward, at::ScalarType param_dtype, at::ScalarType reduce_dtype)
    : model_(model),
      shard_group_(shard_group),
      replicate_group_(replicate_group),
      reshard_after_forward_(reshard_after_forward),
      param_dtype_(param_dtype),
      reduce_dtype_(reduce_dtype) {
  const int64_t n = shard_group_.size();
  const int64_t me = shard_group_.rank();
  std::map<std::string, at::Tensor> params;
  for (auto& [name, p] : model.named_params()) params[name] = p;
  units_.resize(model.config().num_hidden_layers + 1);
  at::NoGradGuard no_grad;
  for (auto& [name, slot] : model.parameter_slots()) {
    auto& p = params.at(name);
    auto& place = model.placement(name);
    // What every token-holding rank holds alike; experts left to their ep replicas are not.
    if (!place.is(MeshDim::DpCpSp, nn::Placement::Kind::Replicate)) continue;
    auto rows = dist::chunk_sizes(p.size(0), n);
    const int64_t offset = std::accumulate(rows.begin(), rows.begin() + me, int64_t{0});
    const int64_t row_numel = p.size(0) ? p.numel() / p.size(0) : 0;
    p.set_data(p.narrow(0, offset, rows[me]).clone());
    // Sharded after any tensor-parallel split: the chunk of the tp shard's dim 0.
    place.split(MeshDim::DpCpSp, {{MeshDim::DpReplicateSp, nn::Placement::replicate()},
                                  {MeshDim::DpShardCp, nn::Placement::shard(0)}});
    place.narrow(0, offset, rows[me]);
    // Layer parameters are named model.layers.N.*; everything else belongs to the root unit.
    size_t unit = name.starts_with("model.layers.") ? std::stoul(name.substr(13)) + 1 : 0;
    units_[unit].params.push_back({p, slot, at::Tensor(), rows, row_numel});
  }
  for (auto& u : units_) {
    u.flat_sizes.assign(n, 0);
    for (auto& p : u.params)
      for (int64_t k = 0; k < n; ++k) u.flat_sizes[k] += p.rows[k] * p.row_numel;
  }
  runner_ = std::make_shared<FsdpLayerRunner>(*this);
  model.model->runners.wrap(runner_);
}

Fsdp::~Fsdp() {
  model_.model->runners.remove(runner_.get());
  for (auto& u : units_)
    for (auto& p : u.params) *p.slot = p.shard;
}

std::vector<at::Tensor> Fsdp::unflatten(const Unit& u, const at::Tensor& flat) const {
  std::vector<at::Tensor> fulls;
  for (size_t q = 0; q < u.params.size(); ++q) {
    const auto& p = u.params[q];
    std::vector<at::Tensor> parts;
    for (size_t k = 0; k < p.rows.size(); ++k)
      parts.push_back(flat.narrow(0, rank_base(u, k) + param_base(u, k, q), p.rows[k] * p.row_numel));
    auto shape = p.shard.sizes().vec();
    shape[0] = std::accumulate(p.rows.begin(), p.rows.end(), int64_t{0});
    fulls.push_back(at::cat(parts).view(shape));
  }
  return fulls;
}

at::Tensor Fsdp::flatten_grads(const Unit& u, const std::vector<at::Tensor>& grads) const {
  std::vector<at::Tensor> parts;
  for (size_t k = 0; k < u.flat_sizes.size(); ++k)
    for (size_t q = 0; q < u.params.size(); ++q) {
      const auto& p = u.params[q];
      const int64_t start = std::accumulate(p.rows.begin(), p.rows.begin() + static_cast<int64_t>(k), int64_t{0});
      if (grads[q].defined()) parts.push_back(grads[q].narrow(0, start, p.rows[k]).reshape({-1}).to(at::kFloat));
      else parts.push_back(at::zeros({p.rows[k] * p.row_numel}, p.shard.options()));
    }
  return at::cat(parts);
}

at::Tensor Fsdp::local_flat(const Unit& unit) const {
  std::vector<at::Tensor> flat;
  for (auto& p : unit.params) flat.push_back(p.shard.reshape({-1}));
  return at::cat(flat);
}

void Fsdp::prefetch(Unit& unit) {
  if (unit.pending || unit.params.empty()) return;  // empty: a layer of another pipeline stage
  at::NoGradGuard no_grad;
  unit.pending = dist::all_gather_1d_async(shard_group_, local_flat(unit).to(param_dtype_), unit.flat_sizes);
}

at::Tensor Fsdp::take_gathered(Unit& unit) {
  prefetch(unit);
  auto flat = dist::finish_gather(shard_group_, *unit.pending);
  unit.pending.reset();
  return flat;
}

void Fsdp::gather(Unit& unit) {
  if (unit.params.empty()) return;
  auto flat = take_gathered(unit);
  std::vector<at::Tensor> fulls;
  if (at::GradMode::is_enabled()) {
    fulls = GatherUnit::apply(local_flat(unit), flat, this, &unit);
  } else {
    fulls = unflatten(unit, flat);
  }
  for (size_t q = 0; q < unit.params.size(); ++q) {
    unit.params[q].full = fulls[q];
    *unit.params[q].slot = fulls[q];
  }
}

void Fsdp::gather_root(int64_t first_layer) {
  gather(units_[0]);
  // Only the layer this forward runs first: a prefetch still pending when the step ends would
  // carry the old weights into the next step.
  const auto next = static_cast<size_t>(first_layer) + 1;
  if (next < units_.size()) prefetch(units_[next]);
}

void Fsdp::gather_layer(int64_t index) {
  const size_t u = static_cast<size_t>(index) + 1;
  gather(units_[u]);
  if (u + 1 < units_.size()) prefetch(units_[u + 1]);
}

void Fsdp::after_layer_forward(int64_t index, at::Tensor& out) {
  auto& unit = units_[static_cast<size_t>(index) + 1];
  if (!reshard_after_forward_ || !out.requires_grad()) return;
  free(unit);
  out.register_hook([this, index](const at::Tensor& grad) {
    regather(units_[static_cast<size_t>(index) + 1]);
    if (index > 0) prefetch(units_[static_cast<size_t>(index)]);  // the layer below runs next
    return grad;
  });
}

void Fsdp::free(Unit& unit) {
  for (auto& p : unit.params)
    if (p.full.defined()) set_storage_bytes(p.full, 0);
}

void Fsdp::regather(Unit& unit) {
  at::NoGradGuard no_grad;
  auto flat = take_gathered(unit);
  auto fulls = unflatten(unit, flat);
  for (size_t q = 0; q < unit.params.size(); ++q) {
    auto& p = unit.params[q];
    if (!p.full.defined()) continue;
    const size_t bytes = static_cast<size_t>(fulls[q].numel()) * fulls[q].element_size();
    set_storage_bytes(p.full, bytes);
    // Through an alias of the storage with a version counter of its own: the saved tensors of
    // autograd see the values, and no in-place change of theirs.
    at::empty({0}, p.full.options()).set_(p.full.storage(), p.full.storage_offset(), p.full.sizes(), p.full.strides())
        .copy_(fulls[q]);
  }
}

}  // namespace meshtrain::parallel

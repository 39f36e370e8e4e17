#include "parallel/fsdp.h"

#include <ATen/native/Resize.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstring>
#include <map>
#include <numeric>

#include "dist/collectives.h"
#include "dist/comm_autograd.h"
#include "util/check.h"

namespace meshtrain::parallel {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// forward: all-gather of the dim-0 blocks over dp_shard / backward: reduce-scatter of the
// gradient over dp_shard, then all-reduce over dp_replicate; the full weight is freed after.
struct GatherParam : torch::autograd::Function<GatherParam> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& shard, Fsdp* fsdp, Fsdp::Param* param) {
    ctx->saved_data["fsdp"] = reinterpret_cast<int64_t>(fsdp);
    ctx->saved_data["param"] = reinterpret_cast<int64_t>(param);
    return dist::all_gather_uneven(fsdp->shard_group(), shard, 0, param->sizes);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    auto* fsdp = reinterpret_cast<Fsdp*>(ctx->saved_data["fsdp"].toInt());
    auto* param = reinterpret_cast<Fsdp::Param*>(ctx->saved_data["param"].toInt());
    auto g = dist::reduce_scatter_uneven(fsdp->shard_group(), grad[0].contiguous(), 0, param->sizes);
    dist::all_reduce_(fsdp->replicate_group(), g);
    param->full = at::Tensor();  // nothing reads the full weight after its gradient is done
    return {g, at::Tensor(), at::Tensor()};
  }
};

void set_storage_bytes(const at::Tensor& t, size_t bytes) {
  at::native::resize_bytes_cpu(t.unsafeGetTensorImpl()->unsafe_storage().unsafeGetStorageImpl(), bytes);
}

class FsdpLayerRunner : public nn::LayerRunner {
 public:
  explicit FsdpLayerRunner(Fsdp& fsdp) : fsdp_(fsdp) {}
  at::Tensor run(int64_t index, const nn::LayerForward& layer, const at::Tensor& hidden) override {
    auto& unit = fsdp_.layer_unit(index);
    fsdp_.gather(unit);
    auto out = layer(hidden);
    if (fsdp_.reshard_after_forward() && out.requires_grad()) {
      fsdp_.free(unit);
      out.register_hook([this, &unit](const at::Tensor& grad) {
        fsdp_.regather(unit);
        return grad;
      });
    }
    return out;
  }

 private:
  Fsdp& fsdp_;
};

}  // namespace

Fsdp::Fsdp(models::LlamaForCausalLM& model, const dist::DeviceMesh& mesh, bool reshard_after_forward)
    : model_(model),
      shard_group_(mesh.group("dp_shard")),
      replicate_group_(mesh.group("dp_replicate")),
      reshard_after_forward_(reshard_after_forward) {
  MT_CHECK(model.named_params().front().second.is_cpu(), "FSDP's freeing of gathered weights is implemented for CPU tensors only");
  const int64_t n = shard_group_.size();
  const int64_t me = shard_group_.rank();
  std::map<std::string, at::Tensor> params;
  for (auto& [name, p] : model.named_params()) params[name] = p;
  units_.resize(model.config().num_hidden_layers + 1);
  at::NoGradGuard no_grad;
  for (auto& [name, slot] : model.parameter_slots()) {
    auto& p = params.at(name);
    auto& place = model.placement(name);
    MT_CHECK(place.is_whole(), "FSDP expects unsharded parameters; ", name, " is already sharded");
    auto sizes = dist::chunk_sizes(p.size(0), n);
    const int64_t offset = std::accumulate(sizes.begin(), sizes.begin() + me, int64_t{0});
    p.set_data(p.narrow(0, offset, sizes[me]).clone());
    place.mesh_dims = {"dp_replicate", "dp_shard"};
    place.placements = {nn::Placement::replicate(), nn::Placement::shard(0)};
    place.offset[0] = offset;
    // Layer parameters are named model.layers.N.*; everything else belongs to the root unit.
    size_t unit = 0;
    if (name.starts_with("model.layers.")) unit = std::stoul(name.substr(13)) + 1;
    units_[unit].params.push_back({name, p, slot, at::Tensor(), sizes});
  }
  model.model->runner = std::make_shared<FsdpLayerRunner>(*this);
}

Fsdp::~Fsdp() {
  model_.model->runner = std::make_shared<nn::LayerRunner>();
  for (auto& u : units_)
    for (auto& p : u.params) *p.slot = p.shard;
}

void Fsdp::gather_root() { gather(units_[0]); }

void Fsdp::gather(Unit& unit) {
  for (auto& p : unit.params) {
    auto full = p.shard.requires_grad() && at::GradMode::is_enabled() ? GatherParam::apply(p.shard, this, &p)
                                                                       : dist::all_gather_uneven(shard_group_, p.shard, 0, p.sizes);
    p.full = full;
    *p.slot = full;
  }
}

void Fsdp::free(Unit& unit) {
  for (auto& p : unit.params)
    if (p.full.defined()) set_storage_bytes(p.full, 0);
}

void Fsdp::regather(Unit& unit) {
  at::NoGradGuard no_grad;
  for (auto& p : unit.params) {
    if (!p.full.defined()) continue;
    auto gathered = dist::all_gather_uneven(shard_group_, p.shard.detach(), 0, p.sizes);
    const size_t bytes = static_cast<size_t>(gathered.numel()) * gathered.element_size();
    set_storage_bytes(p.full, bytes);
    // Raw copy: the saved tensors of autograd see the same storage, and no version bump.
    std::memcpy(p.full.data_ptr(), gathered.data_ptr(), bytes);
  }
}

}  // namespace meshtrain::parallel

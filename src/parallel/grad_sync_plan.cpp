#include "parallel/grad_sync_plan.h"

#include <algorithm>
#include <map>

#include "util/check.h"

namespace meshtrain::parallel {

namespace {

// Dims whose ranks hold different tokens: a gradient is summed over them where its data is replicated.
bool holds_different_tokens(MeshDim dim) {
  using enum MeshDim;
  return dim != Tp && dim != Etp && dim != Ep && dim != World;
}

std::string describe(const nn::ParamPlacement& place, const dist::DeviceMesh& mesh) {
  std::string s;
  for (size_t d = 0; d < place.mesh_dims.size(); ++d) {
    const auto& p = place.placements[d];
    s += str_cat(s.empty() ? "" : ", ", name_of(place.mesh_dims[d]), "(", mesh.size(place.mesh_dims[d]), "): ",
                 p.kind == nn::Placement::Kind::Shard     ? str_cat("Shard(", p.dim, ")")
                 : p.kind == nn::Placement::Kind::Partial ? std::string("Partial")
                                                          : std::string("Replicate"));
  }
  return s;
}

}  // namespace

const char* name_of(SyncMechanism mechanism) {
  switch (mechanism) {
    case SyncMechanism::DdpBuckets: return "ddp bucket all-reduce";
    case SyncMechanism::FsdpReduceScatter: return "fsdp reduce-scatter";
    case SyncMechanism::FsdpAllReduce: return "fsdp all-reduce";
    case SyncMechanism::AllReduce: return "all-reduce after backward";
  }
  return "?";
}

GradSyncPlan::GradSyncPlan(const models::LlamaForCausalLM& model, const dist::DeviceMesh& mesh,
                           at::ScalarType reduce_dtype) {
  using enum MeshDim;
  for (auto& [name, param] : model.named_params()) {
    const auto& place = model.placement(name);
    // A record spans the ranks of one pipeline stage (the whole mesh without pp); pp_ends only
    // adds the tied embedding's copy on the other end stage.
    int64_t ranks = 1;
    for (auto dim : place.mesh_dims)
      if (dim != PpEnds) ranks *= mesh.size(dim);
    const int64_t stage_ranks = mesh.world_size() / mesh.size(Pp);
    MT_CHECK(ranks == stage_ranks, "the placement of ", name, " spans ", ranks, " ranks of a ",
             mesh.size(Pp) > 1 ? "pipeline stage" : "mesh", " of ", stage_ranks,
             ", so no gradient-sync rule covers it: ", describe(place, mesh));
    const bool fsdp = place.is(DpShardCp, nn::Placement::Kind::Shard);
    for (size_t d = 0; d < place.mesh_dims.size(); ++d) {
      const auto dim = place.mesh_dims[d];
      const auto kind = place.placements[d].kind;
      if (mesh.size(dim) == 1) continue;
      std::optional<SyncMechanism> how;
      if (kind == nn::Placement::Kind::Partial) how = SyncMechanism::AllReduce;
      if (kind == nn::Placement::Kind::Shard && dim == DpShardCp) how = SyncMechanism::FsdpReduceScatter;
      if (kind == nn::Placement::Kind::Replicate && holds_different_tokens(dim))
        how = fsdp && dim == DpReplicateSp ? SyncMechanism::FsdpAllReduce
              : dim == DpCpSp              ? SyncMechanism::DdpBuckets
                                           : SyncMechanism::AllReduce;
      if (how) syncs_.push_back({name, dim, *how, reduce_dtype, param.numel()});
    }
  }
}

std::vector<std::string> GradSyncPlan::params(SyncMechanism mechanism) const {
  std::vector<std::string> out;
  for (auto& s : syncs_)
    if (s.mechanism == mechanism && (out.empty() || out.back() != s.param)) out.push_back(s.param);
  return out;
}

std::vector<std::pair<MeshDim, std::vector<std::string>>> GradSyncPlan::after_backward() const {
  std::map<MeshDim, std::vector<std::string>> by_dim;  // in MeshDim order on every rank
  for (auto& s : syncs_)
    if (s.mechanism == SyncMechanism::AllReduce) by_dim[s.dim].push_back(s.param);
  return {by_dim.begin(), by_dim.end()};
}

uint64_t GradSyncPlan::bytes_sent(const GradSync& sync, const dist::DeviceMesh& mesh) const {
  const uint64_t n = static_cast<uint64_t>(mesh.size(sync.dim));
  const uint64_t bytes = static_cast<uint64_t>(sync.numel) * at::elementSize(sync.dtype);
  // A reduce-scatter reduces the whole unit gradient, of which this rank's shard is 1/n.
  if (sync.mechanism == SyncMechanism::FsdpReduceScatter) return (n - 1) * bytes;
  return 2 * (n - 1) * bytes / n;
}

}  // namespace meshtrain::parallel

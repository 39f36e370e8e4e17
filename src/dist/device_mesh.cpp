#include "dist/device_mesh.h"

#include <algorithm>

#include "util/check.h"

namespace meshtrain::dist {

MeshSizes resolve_mesh_sizes(MeshSizes s, int64_t world) {
  const std::array<std::pair<const char*, int64_t>, 6> named = {
      std::pair{"pp_size", s.pp}, {"dp_replicate_size", s.dp_replicate}, {"dp_shard_size", s.dp_shard}, {"cp_size", s.cp},
      {"sp_size", s.sp}, {"tp_size", s.tp}};
  for (auto [name, v] : named)
    if (v < 1 && !(v == -1 && std::string(name) == "dp_shard_size"))
      throw UsageError(str_cat(name, " must be at least 1, but got ", v));
  if (s.dp_shard == -1) {
    const int64_t rest = s.pp * s.dp_replicate * s.cp * s.sp * s.tp;
    if (world % rest != 0)
      throw UsageError(str_cat("dp_shard_size -1: world size ", world, " is not divisible by ",
                               s.pp > 1 ? str_cat("pp_size ", s.pp, " x ") : std::string(), "dp_replicate_size ",
                               s.dp_replicate, " x cp_size ", s.cp, " x sp_size ", s.sp, " x tp_size ", s.tp, " = ", rest));
    s.dp_shard = world / rest;
  }
  if (s.ep_in_tp && (s.ep < 1 || s.tp % s.ep != 0))
    throw UsageError(str_cat("ep_size ", s.ep, " must divide tp_size ", s.tp,
                             ": router-masking expert parallelism draws its ranks from the tp group"));
  if (!s.ep_in_tp && (s.ep < 1 || (s.dp_shard * s.cp) % s.ep != 0))
    throw UsageError(str_cat("ep_size ", s.ep, " must divide dp_shard_size ", s.dp_shard, " x cp_size ", s.cp,
                             ": token-dispatch expert parallelism draws its ranks from them"));
  if (s.product() != world)
    throw UsageError(str_cat(s.pp > 1 ? str_cat("pp_size ", s.pp, " x ") : std::string(), "dp_replicate_size ",
                             s.dp_replicate, " x dp_shard_size ", s.dp_shard, " x cp_size ", s.cp,
                             " x sp_size ", s.sp, " x tp_size ", s.tp, " = ", s.product(),
                             " does not match the world size ", world));
  return s;
}

namespace {

size_t index_of(MeshDim dim) {  // of a dim of the mesh in kMeshDims
  return static_cast<size_t>(std::find(kMeshDims.begin(), kMeshDims.end(), dim) - kMeshDims.begin());
}

bool is_expert_dim(MeshDim dim) { return std::find(kExpertDims.begin(), kExpertDims.end(), dim) != kExpertDims.end(); }

}  // namespace

std::vector<MeshDim> DeviceMesh::dims_of(MeshDim dim) {
  using enum MeshDim;
  switch (dim) {
    case Dp: return {DpReplicate, DpShard};
    case DpShardCp: return {DpShard, Cp};
    case DpCp: return {DpReplicate, DpShard, Cp};
    case DpReplicateSp: return {DpReplicate, Sp};
    case DpCpSp: return {DpReplicate, DpShard, Cp, Sp};
    case World: return {kMeshDims.begin(), kMeshDims.end()};
    case Ep:
    case Etp:
    case EpReplicate:
    case PpEnds: fail("mesh group ", name_of(dim), " is not made of whole mesh dims");
    default: return {dim};
  }
}

DeviceMesh::DeviceMesh(MeshSizes sizes, int rank) : sizes_(sizes), rank_(rank) {
  MT_CHECK(rank >= 0 && rank < world_size(), "rank ", rank, " is outside a mesh of ", world_size(), " ranks");
  int64_t r = rank;
  for (size_t d = kMeshDims.size(); d-- > 0;) {  // tp varies fastest
    coords_[d] = r % dim_size(kMeshDims[d]);
    r /= dim_size(kMeshDims[d]);
  }
  for (auto dims : {std::vector<MeshDim>(kMeshDims.begin(), kMeshDims.end()),
                    std::vector<MeshDim>(kFlattenedDims.begin(), kFlattenedDims.end()),
                    std::vector<MeshDim>(kExpertDims.begin(), kExpertDims.end())})
    for (auto dim : dims) groups_[dim] = Group::solo(dim, rank);
  groups_[MeshDim::PpEnds] = Group::solo(MeshDim::PpEnds, rank);
}

int64_t DeviceMesh::dim_size(MeshDim dim) const {
  const std::array<int64_t, kMeshDims.size()> s = {sizes_.pp, sizes_.dp_replicate, sizes_.dp_shard,
                                                   sizes_.cp, sizes_.sp, sizes_.tp};
  return s[index_of(dim)];
}

int64_t DeviceMesh::size(MeshDim dim) const {
  if (dim == MeshDim::Ep) return sizes_.ep;
  if (dim == MeshDim::Etp) return sizes_.ep_in_tp && sizes_.ep > 1 ? sizes_.tp / sizes_.ep : 1;
  // Experts are replicated within a pipeline stage: ep_replicate does not span pp.
  if (dim == MeshDim::EpReplicate)
    return sizes_.product() / sizes_.pp / (sizes_.ep_in_tp ? sizes_.tp : sizes_.tp * sizes_.ep);
  if (dim == MeshDim::PpEnds) return static_cast<int64_t>(group_ranks(dim).size());
  int64_t n = 1;
  for (auto d : dims_of(dim)) n *= dim_size(d);
  return n;
}

int64_t DeviceMesh::coordinate(MeshDim dim) const {
  int64_t c = 0;
  for (auto d : dims_of(dim)) c = c * dim_size(d) + coords_[index_of(d)];
  return c;
}

std::vector<int> DeviceMesh::group_ranks(MeshDim dim) const {
  using enum MeshDim;
  if (dim == PpEnds) {  // the first and the last rank of this rank's pp group, when it is one of them
    auto pp = group_ranks(Pp);
    if (pp.size() == 1 || (rank_ != pp.front() && rank_ != pp.back())) return {rank_};
    return {pp.front(), pp.back()};
  }
  if (is_expert_dim(dim)) {
    // Router masking: ep strided over the tp group, etp its blocks, ep_replicate the same tp
    // coordinate. Token dispatch: ep a block of the dp_shard_cp group, ep_replicate the same
    // place in the other blocks (tp coordinate equal).
    const int64_t ep = sizes_.ep, block = sizes_.tp / ep;
    std::vector<int> ranks;
    for (int r = 0; r < world_size(); ++r) {
      DeviceMesh other(sizes_, r);
      bool same;
      if (sizes_.ep_in_tp) {
        const int64_t t = other.coordinate(Tp), mine = coordinate(Tp);
        const bool same_tp_group = other.group_ranks(Tp) == group_ranks(Tp);
        same = dim == Ep    ? same_tp_group && t % block == mine % block
               : dim == Etp ? same_tp_group && t / block == mine / block
                            : t == mine;
      } else {
        const int64_t index = other.coordinate(DpShardCp), mine = coordinate(DpShardCp);
        same = dim == Ep    ? other.group_ranks(DpShardCp) == group_ranks(DpShardCp) && index / ep == mine / ep
               : dim == Etp ? r == rank_
                            : other.coordinate(Tp) == coordinate(Tp) && index % ep == mine % ep;
      }
      if (same && other.coordinate(Pp) == coordinate(Pp)) ranks.push_back(r);  // experts live within a stage
    }
    return ranks;
  }
  const auto free = dims_of(dim);
  std::vector<int> ranks;
  // Enumerate the free dims in mesh order (outer to inner), the others fixed at this rank's coords.
  const int64_t n = size(dim);
  for (int64_t i = 0; i < n; ++i) {
    auto c = coords_;
    int64_t rest = i;
    for (size_t k = free.size(); k-- > 0;) {
      c[index_of(free[k])] = rest % dim_size(free[k]);
      rest /= dim_size(free[k]);
    }
    int64_t r = 0;
    for (size_t d = 0; d < kMeshDims.size(); ++d) r = r * dim_size(kMeshDims[d]) + c[d];
    ranks.push_back(static_cast<int>(r));
  }
  return ranks;
}

std::vector<MeshDim> DeviceMesh::dims_with_groups() const {
  std::vector<MeshDim> dims(kMeshDims.begin(), kMeshDims.end());
  dims.insert(dims.end(), kFlattenedDims.begin(), kFlattenedDims.end());
  if (sizes_.ep > 1) dims.insert(dims.end(), {MeshDim::Ep, MeshDim::EpReplicate});
  if (sizes_.ep > 1 && sizes_.ep_in_tp) dims.push_back(MeshDim::Etp);
  if (sizes_.pp > 1) dims.push_back(MeshDim::PpEnds);
  return dims;
}

void DeviceMesh::create_groups(const c10::intrusive_ptr<c10d::Store>& store, std::chrono::milliseconds timeout,
                               const std::string& master_addr, Backend backend) {
  for (auto dim : dims_with_groups()) {
    // The pipeline posts receives ahead and matches them by tag; NCCL matches point-to-point by
    // issue order on one stream per pair of ranks, where a receive posted ahead of a send the
    // other way could wait forever. Its messages go over Gloo, through host memory on GPUs.
    const Backend b = dim == MeshDim::Pp ? Backend::Gloo : backend;
    groups_[dim] = std::make_shared<Group>(dim, group_ranks(dim), rank_, store, timeout, master_addr, b);
  }
}

void DeviceMesh::create_layout_groups() {
  for (auto dim : dims_with_groups()) groups_[dim] = Group::layout_only(dim, group_ranks(dim), rank_);
}

Group& DeviceMesh::group(MeshDim dim) const { return *groups_.at(dim); }

void DeviceMesh::set_flight_recorder(std::shared_ptr<FlightRecorder> recorder) {
  flight_ = std::move(recorder);
  for (auto& [dim, group] : groups_) {
    if (group->size() == 1) continue;  // its collectives are no-ops
    group->set_flight_recorder(flight_);
    if (flight_) flight_->add_group(dim, group->ranks());
  }
}

}  // namespace meshtrain::dist

#include "dist/device_mesh.h"

#include <algorithm>

#include "util/check.h"

namespace meshtrain::dist {

MeshSizes resolve_mesh_sizes(MeshSizes s, int64_t world) {
  const std::array<std::pair<const char*, int64_t>, 5> named = {
      std::pair{"dp_replicate_size", s.dp_replicate}, {"dp_shard_size", s.dp_shard}, {"cp_size", s.cp},
      {"sp_size", s.sp}, {"tp_size", s.tp}};
  for (auto [name, v] : named)
    if (v < 1 && !(v == -1 && std::string(name) == "dp_shard_size"))
      throw UsageError(str_cat(name, " must be at least 1, but got ", v));
  if (s.dp_shard == -1) {
    const int64_t rest = s.dp_replicate * s.cp * s.sp * s.tp;
    if (world % rest != 0)
      throw UsageError(str_cat("dp_shard_size -1: world size ", world, " is not divisible by dp_replicate_size ",
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
    throw UsageError(str_cat("dp_replicate_size ", s.dp_replicate, " x dp_shard_size ", s.dp_shard, " x cp_size ", s.cp,
                             " x sp_size ", s.sp, " x tp_size ", s.tp, " = ", s.product(),
                             " does not match the world size ", world));
  return s;
}

const std::map<std::string, std::vector<std::string>>& DeviceMesh::flattened() {
  static const std::map<std::string, std::vector<std::string>> f = {
      {"dp", {"dp_replicate", "dp_shard"}},
      {"dp_shard_cp", {"dp_shard", "cp"}},
      {"dp_cp", {"dp_replicate", "dp_shard", "cp"}},
      {"dp_replicate_sp", {"dp_replicate", "sp"}},
      {"dp_cp_sp", {"dp_replicate", "dp_shard", "cp", "sp"}},
      {"world", {"dp_replicate", "dp_shard", "cp", "sp", "tp"}}};
  return f;
}

DeviceMesh::DeviceMesh(MeshSizes sizes, int rank) : sizes_(sizes), rank_(rank) {
  MT_CHECK(rank >= 0 && rank < world_size(), "rank ", rank, " is outside a mesh of ", world_size(), " ranks");
  int64_t r = rank;
  for (size_t d = kDims.size(); d-- > 0;) {  // tp varies fastest
    coords_[d] = r % dim_size(d);
    r /= dim_size(d);
  }
  for (auto name : kDims) groups_[name] = Group::solo(name, rank);
  for (auto& [name, dims] : flattened()) groups_[name] = Group::solo(name, rank);
  for (auto name : kExpertGroups) groups_[name] = Group::solo(name, rank);
}

int64_t DeviceMesh::dim_size(size_t d) const {
  const std::array<int64_t, 5> s = {sizes_.dp_replicate, sizes_.dp_shard, sizes_.cp, sizes_.sp, sizes_.tp};
  return s[d];
}

std::vector<std::string> DeviceMesh::dims_of(const std::string& name) const {
  if (auto it = flattened().find(name); it != flattened().end()) return it->second;
  MT_CHECK(std::find(kDims.begin(), kDims.end(), name) != kDims.end(), "unknown mesh dim '", name,
           "' (dims: dp_replicate, dp_shard, cp, sp, tp; flattened: dp, dp_shard_cp, dp_cp, dp_replicate_sp, dp_cp_sp)");
  return {name};
}

int64_t DeviceMesh::size(const std::string& name) const {
  if (name == "ep") return sizes_.ep;
  if (name == "etp") return sizes_.ep_in_tp && sizes_.ep > 1 ? sizes_.tp / sizes_.ep : 1;
  if (name == "ep_replicate") return sizes_.product() / (sizes_.ep_in_tp ? sizes_.tp : sizes_.tp * sizes_.ep);
  int64_t n = 1;
  for (auto& dim : dims_of(name))
    n *= dim_size(std::find(kDims.begin(), kDims.end(), dim) - kDims.begin());
  return n;
}

int64_t DeviceMesh::coordinate(const std::string& name) const {
  int64_t c = 0;
  for (auto& dim : dims_of(name)) {
    const size_t d = std::find(kDims.begin(), kDims.end(), dim) - kDims.begin();
    c = c * dim_size(d) + coords_[d];
  }
  return c;
}

std::vector<int> DeviceMesh::group_ranks(const std::string& name) const {
  if (sizes_.ep_in_tp && (name == "ep" || name == "etp" || name == "ep_replicate")) {
    const int64_t block = sizes_.tp / sizes_.ep, mine = coordinate("tp");
    std::vector<int> ranks;
    for (int r = 0; r < world_size(); ++r) {
      DeviceMesh other(sizes_, r);
      const int64_t t = other.coordinate("tp");
      const bool same_tp_group = other.group_ranks("tp") == group_ranks("tp");
      const bool same = name == "ep"    ? same_tp_group && t % block == mine % block
                        : name == "etp" ? same_tp_group && t / block == mine / block
                                        : t == mine;
      if (same) ranks.push_back(r);
    }
    return ranks;
  }
  if (name == "ep" || name == "ep_replicate") {
    const int64_t ep = sizes_.ep, mine = coordinate("dp_shard_cp");
    std::vector<int> ranks;
    for (int r = 0; r < world_size(); ++r) {
      DeviceMesh other(sizes_, r);
      const int64_t index = other.coordinate("dp_shard_cp");
      const bool same = name == "ep" ? other.group_ranks("dp_shard_cp") == group_ranks("dp_shard_cp") &&
                                           index / ep == mine / ep
                                     : other.coordinate("tp") == coordinate("tp") && index % ep == mine % ep;
      if (same) ranks.push_back(r);
    }
    return ranks;
  }
  std::vector<size_t> free;
  for (auto& dim : dims_of(name)) free.push_back(std::find(kDims.begin(), kDims.end(), dim) - kDims.begin());
  std::vector<int> ranks;
  // Enumerate the free dims in mesh order (outer to inner), the others fixed at this rank's coords.
  const int64_t n = size(name);
  for (int64_t i = 0; i < n; ++i) {
    auto c = coords_;
    int64_t rest = i;
    for (size_t k = free.size(); k-- > 0;) {
      c[free[k]] = rest % dim_size(free[k]);
      rest /= dim_size(free[k]);
    }
    int64_t r = 0;
    for (size_t d = 0; d < kDims.size(); ++d) r = r * dim_size(d) + c[d];
    ranks.push_back(static_cast<int>(r));
  }
  return ranks;
}

void DeviceMesh::create_groups(const c10::intrusive_ptr<c10d::Store>& store, std::chrono::milliseconds timeout,
                               const std::string& master_addr) {
  std::vector<std::string> names(kDims.begin(), kDims.end());
  for (auto& [name, dims] : flattened()) names.push_back(name);
  if (sizes_.ep > 1) names.insert(names.end(), {"ep", "ep_replicate"});
  if (sizes_.ep > 1 && sizes_.ep_in_tp) names.push_back("etp");
  for (auto& name : names)
    groups_[name] = std::make_shared<Group>(name, group_ranks(name), rank_, store, timeout, master_addr);
}

Group& DeviceMesh::group(const std::string& name) const {
  if (std::find(kExpertGroups.begin(), kExpertGroups.end(), name) == kExpertGroups.end())
    dims_of(name);  // validates the name
  return *groups_.at(name);
}

}  // namespace meshtrain::dist

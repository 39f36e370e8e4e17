// The device mesh: named dims dp_replicate, dp_shard, cp, sp, tp (tp varies fastest), each
// rank's coordinates, and one process group per dim plus the flattened dims dp
// (dp_replicate × dp_shard), dp_shard_cp, dp_cp, dp_replicate_sp, dp_cp_sp (every rank that
// holds different tokens) and world, created once. With sizes.ep > 1 also "ep" (the ranks that
// share out the experts) and "ep_replicate" (the ranks holding the same experts): for token
// dispatch, ep is a block of ep consecutive ranks of the dp_shard_cp group and ep_replicate the
// ranks, tp coordinate equal, at the same place of the other blocks; for router masking
// (ep_in_tp), ep is strided over the tp group, whose blocks of tp / ep ranks ("etp") split each
// expert inside, and ep_replicate is every rank with the same tp coordinate. A layout-only mesh
// (no groups) serves `meshtrain plan`.
#pragma once
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <array>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dist/group.h"

namespace meshtrain::dist {

struct MeshSizes {
  int64_t dp_replicate = 1, dp_shard = 1, cp = 1, sp = 1, tp = 1;
  // Expert parallelism: not a dim of its own, but blocks of ep consecutive ranks of each
  // dp_shard × cp group (token dispatch), or with ep_in_tp every (tp / ep)-th rank of each tp
  // group (router masking).
  int64_t ep = 1;
  bool ep_in_tp = false;
  int64_t product() const { return dp_replicate * dp_shard * cp * sp * tp; }
};

// Fills dp_shard = -1 with what the world leaves; checks every size >= 1 and that the product
// equals the world size, else an error with the numbers.
MeshSizes resolve_mesh_sizes(MeshSizes sizes, int64_t world_size);

class DeviceMesh {
 public:
  static constexpr std::array<const char*, 5> kDims = {"dp_replicate", "dp_shard", "cp", "sp", "tp"};
  static constexpr std::array<const char*, 3> kExpertGroups = {"ep", "etp", "ep_replicate"};
  static const std::map<std::string, std::vector<std::string>>& flattened();  // name -> dims

  DeviceMesh(MeshSizes sizes, int rank);

  const MeshSizes& sizes() const { return sizes_; }
  int rank() const { return rank_; }
  int world_size() const { return static_cast<int>(sizes_.product()); }
  int64_t size(const std::string& dim_or_flat) const;
  // This rank's coordinate on a dim, or its index within a flattened dim.
  int64_t coordinate(const std::string& dim_or_flat) const;
  // Global ranks of this rank's group on a dim or a flattened dim, in group order.
  std::vector<int> group_ranks(const std::string& dim_or_flat) const;

  // Creates every group this rank belongs to (collective over the world: all ranks call it).
  void create_groups(const c10::intrusive_ptr<c10d::Store>& store, std::chrono::milliseconds timeout,
                     const std::string& master_addr);
  // The group of a dim or flattened dim (solo groups when create_groups was not called).
  Group& group(const std::string& dim_or_flat) const;
  // The dim over which tensor parallelism splits each expert: "etp" under router masking, "tp" otherwise.
  std::string expert_tensor_dim() const { return sizes_.ep_in_tp && sizes_.ep > 1 ? "etp" : "tp"; }

 private:
  std::vector<std::string> dims_of(const std::string& dim_or_flat) const;
  int64_t dim_size(size_t d) const;
  MeshSizes sizes_;
  int rank_;
  std::array<int64_t, 5> coords_{};
  std::map<std::string, std::shared_ptr<Group>> groups_;
};

}  // namespace meshtrain::dist

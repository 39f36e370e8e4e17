// The device mesh: dims pp, dp_replicate, dp_shard, cp, sp, tp (tp varies fastest), each rank's
// coordinates, and one process group per MeshDim (flattened and expert groups included), created
// once; layout-only groups (no backend) serve `meshtrain plan`.
#pragma once
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <array>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dist/group.h"
#include "util/mesh_dim.h"

namespace meshtrain::dist {

struct MeshSizes {
  int64_t dp_replicate = 1, dp_shard = 1, cp = 1, sp = 1, tp = 1;
  // Expert parallelism: not a dim of its own, but blocks of ep consecutive ranks of each
  // dp_shard × cp group (token dispatch), or with ep_in_tp every (tp / ep)-th rank of each tp
  // group (router masking).
  int64_t ep = 1;
  bool ep_in_tp = false;
  int64_t pp = 1;  // pipeline stages: the outermost dim
  int64_t product() const { return pp * dp_replicate * dp_shard * cp * sp * tp; }
};

// Fills dp_shard = -1 with what the world leaves; checks every size >= 1 and that the product
// equals the world size, else an error with the numbers.
MeshSizes resolve_mesh_sizes(MeshSizes sizes, int64_t world_size);

class DeviceMesh {
 public:
  // The dims a flattened dim is made of, outer to inner; a dim of the mesh is made of itself.
  static std::vector<MeshDim> dims_of(MeshDim flattened);

  DeviceMesh(MeshSizes sizes, int rank);

  const MeshSizes& sizes() const { return sizes_; }
  int rank() const { return rank_; }
  int world_size() const { return static_cast<int>(sizes_.product()); }
  int64_t size(MeshDim dim) const;
  // This rank's coordinate on a dim, or its index within a flattened dim (not the expert groups).
  int64_t coordinate(MeshDim dim) const;
  // Global ranks of this rank's group on a dim, in group order.
  std::vector<int> group_ranks(MeshDim dim) const;

  // Creates every group this rank belongs to (collective over the world: all ranks call it).
  void create_groups(const c10::intrusive_ptr<c10d::Store>& store, std::chrono::milliseconds timeout,
                     const std::string& master_addr, Backend backend = Backend::Gloo);
  // The same groups without backends: enough to lay a model out on this rank (meshtrain plan).
  void create_layout_groups();
  // The group of a dim (solo groups when neither was called).
  Group& group(MeshDim dim) const;
  // Records the collectives of every group of more than one rank from now on (after create_groups).
  void set_flight_recorder(std::shared_ptr<FlightRecorder> recorder);
  FlightRecorder* flight_recorder() const { return flight_.get(); }
  // The dim over which tensor parallelism splits each expert: etp under router masking, else tp.
  MeshDim expert_tensor_dim() const { return sizes_.ep_in_tp && sizes_.ep > 1 ? MeshDim::Etp : MeshDim::Tp; }
  std::vector<MeshDim> dims_with_groups() const;  // the dims create_groups makes groups for

 private:
  int64_t dim_size(MeshDim dim) const;
  MeshSizes sizes_;
  int rank_;
  std::array<int64_t, kMeshDims.size()> coords_{};
  std::map<MeshDim, std::shared_ptr<Group>> groups_;
  std::shared_ptr<FlightRecorder> flight_;
};

}  // namespace meshtrain::dist

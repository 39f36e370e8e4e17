// The placement record every parameter carries, the one truth about its layout: per mesh dim
// Shard(d) (packed: one run per block), Replicate or Partial, spanning the mesh; its global shape
// and where this rank's block sits in it (docs/parallelism.md).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "util/mesh_dim.h"

namespace meshtrain::nn {

struct Placement {
  enum class Kind { Replicate, Shard, Partial };
  Kind kind = Kind::Replicate;
  int64_t dim = -1;     // tensor dim, for Shard
  int64_t blocks = 1;   // > 1: a packed shard of that many equal blocks

  static Placement replicate() { return {}; }
  static Placement partial() { return {Kind::Partial}; }
  static Placement shard(int64_t d) { return {Kind::Shard, d}; }
  static Placement packed_shard(int64_t d, int64_t blocks) { return {Kind::Shard, d, blocks}; }
};

// Local rows [local_start, local_start + length) along one dim are global rows from global_start.
struct Run {
  int64_t local_start = 0, global_start = 0, length = 0;
};

// A box of the local tensor (a view) and its offset in the global tensor.
struct Box {
  at::Tensor local;
  std::vector<int64_t> offset;
};

struct ParamPlacement {
  std::vector<MeshDim> mesh_dims;      // the mesh dims the placements refer to, in the order
  std::vector<Placement> placements;   //   applied (an earlier shard is split by a later one)
  std::vector<int64_t> global_shape;
  std::vector<int64_t> offset;         // of this rank's block in the global tensor (but the packed dim)
  int64_t packed_dim = -1;             // the dim a packed shard split, if any,
  std::vector<Run> packed_runs;        //   and this rank's runs of rows on it

  // A parameter held whole by every rank: replicated over the token-holding ranks and over tp.
  static ParamPlacement whole(const std::vector<int64_t>& shape) {
    return {{MeshDim::DpCpSp, MeshDim::Tp},
            {Placement::replicate(), Placement::replicate()},
            shape,
            std::vector<int64_t>(shape.size(), 0),
            -1,
            {}};
  }
  bool is_whole() const;  // sharded on no dim
  // The placement on a mesh dim; null when the record has none.
  const Placement* on(MeshDim dim) const;
  bool is(MeshDim dim, Placement::Kind kind) const { return on(dim) && on(dim)->kind == kind; }
  // The entry of `dim` gives way to `entries`, appended last (a parallel unit refines a dim: FSDP
  // splits dp_cp_sp into dp_replicate_sp and a shard on dp_shard_cp).
  void split(MeshDim dim, const std::vector<std::pair<MeshDim, Placement>>& entries);
  // The rank now keeps local rows [start, start + length) of `dim` (a further shard).
  void narrow(int64_t dim, int64_t start, int64_t length);
  // Dim `dim`, still whole, splits into `blocks` equal blocks, of each of which the rank keeps
  // rows [start, start + length).
  void pack(int64_t dim, int64_t blocks, int64_t start, int64_t length);
  // The boxes of a local tensor (one unless packed; empty runs left out).
  std::vector<Box> boxes(const at::Tensor& local) const;
  // This rank's tensor (of the local shape), cut from the full one.
  at::Tensor local_of(const at::Tensor& full, at::IntArrayRef local_shape) const;
};

}  // namespace meshtrain::nn

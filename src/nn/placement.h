// The placement record every parameter carries: on which mesh dims it is sharded (and along
// which tensor dim), replicated or partial, plus its global shape and where this rank's rows
// sit in it. The DTensor idea reduced to what training needs. A serial model holds only
// replicated records.
//
// A packed shard (packed_colwise / packed_rowwise: a fused gate ‖ up projection) splits each of
// its equal blocks alike, so a rank's rows on that dim are one run per block ([gate_r | up_r]);
// everywhere else a rank's block is one box at `offset`.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace meshtrain::nn {

struct Placement {
  enum class Kind { Replicate, Shard, Partial };
  Kind kind = Kind::Replicate;
  int64_t dim = -1;     // tensor dim, for Shard
  int64_t blocks = 1;   // > 1: a packed shard of that many equal blocks

  static Placement replicate() { return {}; }
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
  std::vector<std::string> mesh_dims;  // names of the mesh dims the placements refer to
  std::vector<Placement> placements;   // one per mesh dim
  std::vector<int64_t> global_shape;
  std::vector<int64_t> offset;         // of this rank's block in the global tensor (but the packed dim)
  int64_t packed_dim = -1;             // the dim a packed shard split, if any,
  std::vector<Run> packed_runs;        //   and this rank's runs of rows on it

  // A parameter held whole by every rank.
  static ParamPlacement whole(const std::vector<int64_t>& shape) {
    return {{}, {}, shape, std::vector<int64_t>(shape.size(), 0), -1, {}};
  }
  bool is_whole() const {
    for (const auto& p : placements)
      if (p.kind != Placement::Kind::Replicate) return false;
    return true;
  }
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
